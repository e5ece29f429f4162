// Command authz is flakegate's Envoy ext_authz v3 service: it verifies the
// caller's OIDC token and decides each cache request with the Rego policies.
//
//	authz -policies /etc/flakegate/policies -issuers /etc/flakegate/issuers.yaml \
//	      -owners-url http://127.0.0.1:8081
//	authz -check -policies DIR -issuers FILE    # validate, run policy tests, exit
//
// With -public-url and -token-keys, authz also serves the token exchange
// (POST /_flakegate/token, GET /_flakegate/jwks) on -http-listen and trusts
// the cache tokens it signs. denylist.yaml in the policy directory revokes
// token ids and subjects (see internal/revoke).
//
// Every flag is also read from FLAKEGATE_<FLAG> (e.g. FLAKEGATE_HTTP_LISTEN)
// and from the -config file (one "flag value" per line).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/peterbourgon/ff/v3"

	"github.com/flakegate/flakegate/internal/authz"
	"github.com/flakegate/flakegate/internal/exchange"
	"github.com/flakegate/flakegate/internal/tokens"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run parses args and runs the service or the check; it returns the exit
// code (0 ok, 1 failure, 2 bad usage).
func run(args []string, stdout, stderr io.Writer) int {
	cfg := authz.DefaultConfig()
	fs := flag.NewFlagSet("authz", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&cfg.Listen, "listen", cfg.Listen, "gRPC ext_authz listen address: host:port, or unix:/path (a unix socket, cheapest for a blob server's embedded gate on the same host)")
	fs.StringVar(&cfg.HTTPListen, "http-listen", cfg.HTTPListen, "HTTP listen address for /metrics, /healthz and /_flakegate/")
	fs.StringVar(&cfg.Policies, "policies", "", "Rego policy directory (package flakegate.authz), hot-reloaded")
	fs.StringVar(&cfg.Issuers, "issuers", "", "issuers file (YAML)")
	fs.StringVar(&cfg.OwnersURL, "owners-url", cfg.OwnersURL, "blob server internal listener, for union-read owners lookups")
	fs.DurationVar(&cfg.OwnersTimeout, "owners-timeout", cfg.OwnersTimeout, "timeout of one owners lookup")
	fs.DurationVar(&cfg.OwnersTTL, "owners-ttl", cfg.OwnersTTL, "how long an owners answer is cached (empty or not, alike: a push into another flake shows in the union view within it)")
	fs.DurationVar(&cfg.ShutdownTimeout, "shutdown-timeout", cfg.ShutdownTimeout, "graceful stop limit on SIGTERM")
	fs.DurationVar(&cfg.PolicyDebounce, "policy-debounce", cfg.PolicyDebounce, "reload the policy directory once it has been quiet this long after a change")
	fs.StringVar(&cfg.LogLevel, "log-level", cfg.LogLevel, "log level: debug, info, warn or error")
	fs.BoolVar(&cfg.Pprof, "pprof", false, "serve Go runtime profiles under /debug/pprof/ on -http-listen")
	var xcfg exchange.Config
	fs.StringVar(&xcfg.PublicURL, "public-url", "", "the cache's public base URL; enables the token exchange (POST /_flakegate/token): iss and aud of cache tokens")
	fs.StringVar(&xcfg.KeyDir, "token-keys", "", "directory of the cache-token signing keys (*.pem; one is created when empty; newest signs)")
	fs.DurationVar(&xcfg.Lifetime, "token-lifetime", tokens.DefaultLifetime, "lifetime of an exchanged cache token")
	fs.DurationVar(&xcfg.MaxLifetime, "token-max-lifetime", tokens.DefaultMaxLifetime, "longest cache token lifetime a client may ask for")
	check := fs.Bool("check", false, "validate the issuers file and policies (compile, run *_test.rego), print the result and exit")
	fs.String("config", "", "config file: one `flag value` per line")

	err := ff.Parse(fs, args,
		ff.WithEnvVarPrefix("FLAKEGATE"),
		ff.WithConfigFileFlag("config"),
		ff.WithConfigFileParser(ff.PlainParser),
	)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "authz: %v\n", err)
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "authz: unexpected arguments %q\n", fs.Args())
		return 2
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	if *check {
		if err := authz.CheckConfig(ctx, cfg, stdout); err != nil {
			fmt.Fprintln(stdout, "authz -check: FAILED")
			return 1
		}
		fmt.Fprintln(stdout, "authz -check: OK")
		return 0
	}

	level, err := authz.ParseLogLevel(cfg.LogLevel)
	if err != nil {
		fmt.Fprintf(stderr, "authz: %v\n", err)
		return 2
	}
	log := slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: level}))
	svc, err := authz.New(ctx, cfg, log)
	if err != nil {
		log.Error("authz cannot start", "error", err.Error())
		return 1
	}
	// Token exchange and the revocation list (denylist.yaml in -policies).
	if _, err := exchange.Install(ctx, svc, xcfg, log); err != nil {
		log.Error("authz cannot start: token exchange", "error", err.Error())
		svc.Close()
		return 1
	}
	if err := svc.Run(ctx); err != nil {
		log.Error("authz stopped with an error", "error", err.Error())
		return 1
	}
	return 0
}
