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
// and from the -config file (one "flag value" per line); defaults come from
// authzapp.DefaultConfig. What runs is internal/authzapp.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/flakegate/flakegate/internal/authzapp"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// runApp is authzapp.Run (tests replace it to see the configuration).
var runApp = authzapp.Run

// run parses args and runs the service or the check until ctx is done; it
// returns the exit code (0 ok, 1 failure, 2 bad usage).
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cfg := authzapp.DefaultConfig()
	fs := flag.NewFlagSet("authz", flag.ContinueOnError)
	fs.SetOutput(stderr)
	authzapp.CoreFlags(fs, &cfg)
	fs.StringVar(&cfg.Listen, "listen", cfg.Listen, "gRPC ext_authz listen address: host:port, or unix:/path (a unix socket, cheapest for a blob server's embedded gate on the same host)")
	fs.StringVar(&cfg.HTTPListen, "http-listen", cfg.HTTPListen, "HTTP listen address for /metrics, /healthz and /_flakegate/")
	fs.StringVar(&cfg.HTTPTLS.Cert, "tls-cert", cfg.HTTPTLS.Cert, "serve the -http-listen listener over TLS (HTTP/2 on) with this PEM certificate `file` (chain, leaf first); reloaded when it changes")
	fs.StringVar(&cfg.HTTPTLS.Key, "tls-key", cfg.HTTPTLS.Key, "PEM private key `file` of -tls-cert")
	fs.StringVar(&cfg.OwnersURL, "owners-url", cfg.OwnersURL, "blob server internal listener, for union-read owners lookups")
	fs.DurationVar(&cfg.OwnersTimeout, "owners-timeout", cfg.OwnersTimeout, "timeout of one owners lookup")
	fs.DurationVar(&cfg.ShutdownTimeout, "shutdown-timeout", cfg.ShutdownTimeout, "graceful stop limit on SIGTERM")
	fs.StringVar(&cfg.LogLevel, "log-level", cfg.LogLevel, "log level: debug, info, warn or error")
	fs.BoolVar(&cfg.Pprof, "pprof", cfg.Pprof, "serve Go runtime profiles under /debug/pprof/ on -http-listen")
	check := fs.Bool("check", false, "validate the issuers file and policies (compile, run *_test.rego), print the result and exit")

	if code, done := authzapp.ParseFlags(fs, args, stdout, stderr); done {
		return code
	}

	if *check {
		if err := authzapp.CheckConfig(ctx, cfg, stdout); err != nil {
			fmt.Fprintln(stdout, "authz -check: FAILED")
			return 1
		}
		fmt.Fprintln(stdout, "authz -check: OK")
		return 0
	}

	if err := cfg.Validate(); err != nil {
		fmt.Fprintf(stderr, "authz: invalid configuration:\n%v\n", err)
		return 1
	}
	log := cfg.NewLogger(stderr)
	if err := runApp(ctx, cfg, log); err != nil {
		log.Error("authz stopped with an error", "error", err.Error())
		return 1
	}
	return 0
}
