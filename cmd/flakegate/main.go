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

Commands:
  login   get a cache token (device sign-in, or the CI job's token with --ci),
          store it in the netrc file and print the nix.conf lines

Run "flakegate login -h" for the flags.
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
	}
	fmt.Fprintf(stderr, "flakegate: unknown command %q\n%s", args[0], usage)
	return 2
}

func runLogin(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var cfg login.Config
	var scopes string
	fs := flag.NewFlagSet("flakegate login", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&cfg.Cache, "cache", "", "the cache's base URL, e.g. https://cache.example.com")
	fs.StringVar(&cfg.Issuer, "issuer", "", "OpenID provider to sign in at (device flow)")
	fs.StringVar(&cfg.ClientID, "client-id", "", "OAuth client id registered for the device flow")
	fs.StringVar(&cfg.ClientSecret, "client-secret", "", "client secret, only for providers that require one for the device flow")
	fs.StringVar(&scopes, "scopes", "openid profile email", "scopes to ask for (space-separated)")
	fs.BoolVar(&cfg.CI, "ci", false, "use the CI job's OIDC token (GitHub Actions or GitLab CI) instead of signing in")
	fs.StringVar(&cfg.TokenEnv, "token-env", "", "with --ci: the variable holding the job's OIDC token (default: GitHub Actions' token service, else $"+login.DefaultTokenEnv+")")
	fs.DurationVar(&cfg.Lifetime, "lifetime", 0, "ask for a cache token of this lifetime, e.g. 3h for a long CI build (the cache caps it; default: the cache's, 1h)")
	fs.StringVar(&cfg.Netrc, "netrc", "", "netrc file to update (default $XDG_CONFIG_HOME/nix/netrc or ~/.config/nix/netrc)")
	fs.StringVar(&cfg.PublicKey, "public-key", "", "the cache's narinfo signing public key (name:base64), for the printed nix.conf lines")
	fs.DurationVar(&cfg.Timeout, "timeout", 30*time.Second, "timeout of each HTTP request")
	err := ff.Parse(fs, args, ff.WithEnvVarPrefix("FLAKEGATE"))
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "flakegate login: unexpected arguments %q\n", fs.Args())
		return 2
	}
	cfg.Scopes = strings.Fields(scopes)
	if err := cfg.Validate(); err != nil {
		fmt.Fprintf(stderr, "flakegate login: %v\n", err)
		return 2
	}
	err = login.Run(ctx, cfg, login.Env{
		HTTPClient: &http.Client{},
		Getenv:     os.Getenv,
		Stdout:     stdout,
		Stderr:     stderr,
	})
	if err != nil {
		fmt.Fprintf(stderr, "flakegate login: %v\n", err)
		return 1
	}
	return 0
}
