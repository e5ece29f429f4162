// Command flakegate is the flakegate client. `flakegate login` gets a cache
// token and writes it to the netrc file Nix reads:
//
//	flakegate login --cache https://cache.example.com \
//	    --issuer https://idp.example.com --client-id flakegate-cli
//	    # a user: OAuth 2.0 device authorization (RFC 8628), then token exchange
//	flakegate login --ci --cache https://cache.example.com
//	    # a CI job: GitHub Actions OIDC token (permissions: id-token: write) or
//	    # GitLab id_tokens in $FLAKEGATE_ID_TOKEN (or --token-env NAME)
//
//	flakegate token create --ci --cache https://cache.example.com \
//	    --flake omnicorp/fleet --closure ./result --lifetime 90d
//	    # a scoped (deploy) token: read-only, the closure of ./result within
//	    # omnicorp/fleet; prints one netrc line for the deployed machine
//
// The netrc entry for the cache host is written or replaced (0600, other
// entries kept) and the nix.conf lines to add are printed. Every flag is
// also read from FLAKEGATE_<FLAG> (e.g. FLAKEGATE_CACHE).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/peterbourgon/ff/v3"

	"github.com/flakegate/flakegate/internal/login"
)

const usage = `usage: flakegate login [flags]
       flakegate token create --flake ORG/NAME --closure PATH [flags]

Commands:
  login          get a cache token (device sign-in, or the CI job's token with --ci),
                 store it in the netrc file and print the nix.conf lines
  token create   mint a scoped (deploy) token: read-only, for the closure of PATH
                 within one flake; prints a netrc line for the deployed machine

Run "flakegate login -h" or "flakegate token create -h" for the flags.
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run returns the exit code: 0 ok, 1 failure, 2 bad usage.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stderr, usage)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	switch args[0] {
	case "login":
		return runLogin(ctx, args[1:], stdout, stderr)
	case "token":
		if len(args) > 1 && args[1] == "create" {
			return runTokenCreate(ctx, args[2:], stdout, stderr)
		}
		fmt.Fprintf(stderr, "flakegate token: want \"token create\"\n%s", usage)
		return 2
	}
	fmt.Fprintf(stderr, "flakegate: unknown command %q\n%s", args[0], usage)
	return 2
}

func runLogin(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var cfg login.Config
	var scopes string
	fs := flag.NewFlagSet("flakegate login", flag.ContinueOnError)
	fs.SetOutput(stderr)
	signInFlags(fs, &cfg, &scopes)
	fs.DurationVar(&cfg.Lifetime, "lifetime", 0, "ask for a cache token of this lifetime, e.g. 3h for a long CI build (the cache caps it; default: the cache's, 1h)")
	fs.StringVar(&cfg.Netrc, "netrc", "", "netrc file to update (default $XDG_CONFIG_HOME/nix/netrc or ~/.config/nix/netrc)")
	fs.StringVar(&cfg.PublicKey, "public-key", "", "the cache's narinfo signing public key (name:base64), for the printed nix.conf lines")
	if code, done := parse(fs, args, stderr); done {
		return code
	}
	cfg.Scopes = strings.Fields(scopes)
	if err := cfg.Validate(); err != nil {
		fmt.Fprintf(stderr, "flakegate login: %v\n", err)
		return 2
	}
	if err := login.Run(ctx, cfg, env(stdout, stderr)); err != nil {
		fmt.Fprintf(stderr, "flakegate login: %v\n", err)
		return 1
	}
	return 0
}

func runTokenCreate(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var cfg login.TokenConfig
	var scopes string
	var closures stringList
	lifetime := "90d"
	fs := flag.NewFlagSet("flakegate token create", flag.ContinueOnError)
	fs.SetOutput(stderr)
	signInFlags(fs, &cfg.Login, &scopes)
	fs.StringVar(&cfg.Flake, "flake", "", "the flake (org/name) whose closure the token reads")
	fs.Var(&closures, "closure", "store path (or a link to one, e.g. ./result) whose closure the token reads; repeatable")
	fs.StringVar(&lifetime, "lifetime", lifetime, "token lifetime, in days (90d) or as a duration (36h); the cache caps it at its -scoped-token-max-lifetime")
	if code, done := parse(fs, args, stderr); done {
		return code
	}
	cfg.Login.Scopes, cfg.Closures = strings.Fields(scopes), closures
	life, err := login.ParseLifetime(lifetime)
	if err == nil {
		cfg.Login.Lifetime = life
		err = cfg.Validate()
	}
	if err != nil {
		fmt.Fprintf(stderr, "flakegate token create: %v\n", err)
		return 2
	}
	if err := login.CreateToken(ctx, cfg, env(stdout, stderr)); err != nil {
		fmt.Fprintf(stderr, "flakegate token create: %v\n", err)
		return 1
	}
	return 0
}

// stringList is a repeatable string flag.
type stringList []string

func (l *stringList) String() string     { return strings.Join(*l, ",") }
func (l *stringList) Set(v string) error { *l = append(*l, v); return nil }

func env(stdout, stderr io.Writer) login.Env {
	return login.Env{HTTPClient: &http.Client{}, Getenv: os.Getenv, Stdout: stdout, Stderr: stderr}
}

// parse reads flags (and FLAKEGATE_<FLAG>); done means exit with code.
func parse(fs *flag.FlagSet, args []string, stderr io.Writer) (code int, done bool) {
	err := ff.Parse(fs, args, ff.WithEnvVarPrefix("FLAKEGATE"))
	if errors.Is(err, flag.ErrHelp) {
		return 0, true
	}
	if err != nil {
		return 2, true
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "%s: unexpected arguments %q\n", fs.Name(), fs.Args())
		return 2, true
	}
	return 0, false
}

// signInFlags are the flags of how the caller signs in (login and token create).
func signInFlags(fs *flag.FlagSet, cfg *login.Config, scopes *string) {
	fs.StringVar(&cfg.Cache, "cache", "", "the cache's base URL, e.g. https://cache.example.com")
	fs.StringVar(&cfg.Issuer, "issuer", "", "OpenID provider to sign in at (device flow)")
	fs.StringVar(&cfg.ClientID, "client-id", "", "OAuth client id registered for the device flow")
	fs.StringVar(&cfg.ClientSecret, "client-secret", "", "client secret, only for providers that require one for the device flow")
	fs.StringVar(scopes, "scopes", "openid profile email", "scopes to ask for (space-separated)")
	fs.BoolVar(&cfg.CI, "ci", false, "use the CI job's OIDC token (GitHub Actions or GitLab CI) instead of signing in")
	fs.StringVar(&cfg.TokenEnv, "token-env", "", "with --ci: the variable holding the job's OIDC token (default: GitHub Actions' token service, else $"+login.DefaultTokenEnv+")")
	fs.DurationVar(&cfg.Timeout, "timeout", 30*time.Second, "timeout of each HTTP request")
}
