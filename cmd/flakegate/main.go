// Command flakegate is the flakegate client. `flakegate login` gets a cache
// token and writes it to the netrc file Nix reads:
//
//	flakegate login --cache https://cache.example.com \
//	    --issuer https://idp.example.com --client-id flakegate-cli
//	    # a user: OAuth 2.0 device authorization (RFC 8628) when the provider
//	    # offers it, else authorization code + PKCE in the browser (loopback
//	    # redirect); then token exchange
//	flakegate login --cache https://cache.example.com --token-file id.jwt
//	    # a person who already has an ID token
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
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/mattn/go-isatty"
	"github.com/peterbourgon/ff/v3"

	"github.com/flakegate/flakegate/internal/bytesize"
	"github.com/flakegate/flakegate/internal/ciaction"
	"github.com/flakegate/flakegate/internal/login"
	"github.com/flakegate/flakegate/internal/nixname"
	"github.com/flakegate/flakegate/internal/push"
	"github.com/flakegate/flakegate/internal/version"
)

const usage = `usage: flakegate <command> [flags]

Commands:
  login          get a cache token (device or browser sign-in, --token-file, or the
                 CI job's token with --ci), store it in the netrc file and print the
                 nix.conf lines
  logout         remove the cache's token from the netrc file
  status         who the cache thinks you are, and when your token expires
  token create   mint a scoped (deploy) token: read-only, for the closure of PATH
                 within one flake; prints a netrc line for the deployed machine
  push           push the closures of store paths (or ./result links) to a flake
  ci             in a CI job: push every path the job builds (setup, hook, pusher,
                 flush; what the GitHub Action and the GitLab component run)
  version        print the client's version
  pin            keep a store path's closure in a flake whatever the retention (a CI
                 job that may push the flake may pin; uses the netrc token):
                 flakegate pin --cache URL --flake ORG/NAME NAME STORE-PATH
  unpin          remove a pin: flakegate unpin --cache URL --flake ORG/NAME NAME

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
	case "logout", "status":
		return runSession(ctx, args[0], args[1:], stdout, stderr)
	case "push":
		return runPush(ctx, args[1:], stdout, stderr)
	case "ci":
		return runCI(ctx, args[1:], stdout, stderr)
	case "version", "-version", "--version":
		fmt.Fprintln(stdout, version.String())
		return 0
	case "pin", "unpin":
		return runPin(ctx, args[0] == "unpin", args[1:], stdout, stderr)
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
	fs.StringVar(&cfg.Flow, "flow", login.FlowAuto, "sign-in flow: auto (device when the provider offers it, else browser), device or browser")
	fs.IntVar(&cfg.RedirectPort, "redirect-port", 0, "browser flow: port of the loopback redirect http://127.0.0.1:PORT/callback (default: any free port)")
	fs.StringVar(&cfg.TokenFile, "token-file", "", "exchange this ID token (a file, or - for stdin) instead of signing in")
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

func runPush(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cfg := push.DefaultConfig()
	var netrc, compression string
	var interval time.Duration
	var verbose bool
	fs := flag.NewFlagSet("flakegate push", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: flakegate push --cache URL --flake ORG/NAME [flags] PATH...\n\nPushes the closures of the store paths (or ./result links) to the flake.\nThe cache token is the netrc entry of the cache's host (flakegate login).")
		fs.PrintDefaults()
	}
	fs.StringVar(&cfg.Cache, "cache", "", "the cache's base URL, e.g. https://cache.example.com")
	fs.StringVar(&cfg.Flake, "flake", "", "the flake to push to: org/name")
	fs.StringVar(&cfg.Store, "store", "", "the Nix store to read from (nix --store; default: the default store)")
	fs.IntVar(&cfg.Jobs, "jobs", cfg.Jobs, "paths uploaded in parallel")
	fs.StringVar(&compression, "compression", string(cfg.Compression), "NAR compression: zstd or none")
	fs.IntVar(&cfg.Retries, "retries", cfg.Retries, "retries of a request after a transient failure (with exponential backoff)")
	fs.DurationVar(&cfg.Timeout, "timeout", cfg.Timeout, "timeout of one request")
	fs.StringVar(&netrc, "netrc", "", "netrc file holding the cache token (default $XDG_CONFIG_HOME/nix/netrc or ~/.config/nix/netrc)")
	fs.DurationVar(&interval, "progress-interval", 10*time.Second, "when stderr is not a terminal: how often a progress line is printed")
	fs.BoolVar(&verbose, "v", false, "log every retry and failure")
	err := ff.Parse(fs, args, ff.WithEnvVarPrefix("FLAKEGATE"))
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		return 2
	}
	cfg.Paths = fs.Args()
	cfg.Compression = nixname.Compression(compression)
	if err := cfg.Validate(); err != nil {
		fmt.Fprintf(stderr, "flakegate push: %v\n", err)
		return 2
	}
	cache, err := login.SecureCacheBase(cfg.Cache)
	if err != nil {
		fmt.Fprintf(stderr, "flakegate push: %v\n", err)
		return 2
	}
	if netrc == "" {
		if netrc, err = login.DefaultNetrcPath(os.Getenv); err != nil {
			fmt.Fprintf(stderr, "flakegate push: %v\n", err)
			return 1
		}
	}
	level := slog.LevelError
	if verbose {
		level = slog.LevelDebug
	}
	env := push.Env{
		HTTPClient: &http.Client{},
		// Read at every request: a login or a CI token refresh during a
		// long push takes effect at once.
		Token:    func(context.Context) (string, error) { return login.ReadNetrcToken(netrc, cache.Hostname()) },
		Progress: push.NewProgress(stderr, isTerminal(stderr), interval),
		Log:      slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level})),
	}
	res, err := push.Run(ctx, cfg, env)
	if err != nil {
		fmt.Fprintf(stderr, "flakegate push: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "pushed %d paths (%s), %d already in %s, %d failed\n", res.Pushed, bytesize.Format(res.Bytes), res.Skipped, cfg.Flake, len(res.Failed))
	if err := res.Err(); err != nil {
		for _, f := range res.Failed {
			fmt.Fprintf(stderr, "flakegate push: %v\n", f)
		}
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
	fs.StringVar(&cfg.Issuer, "issuer", "", "OpenID provider to sign in at")
	fs.StringVar(&cfg.ClientID, "client-id", "", "OAuth client id of the flakegate client at the provider (a public client)")
	fs.StringVar(&cfg.ClientSecret, "client-secret", "", "client secret, only for providers that require one")
	fs.StringVar(scopes, "scopes", "openid profile email", "scopes to ask for (space-separated)")
	fs.BoolVar(&cfg.CI, "ci", false, "use the CI job's OIDC token (GitHub Actions or GitLab CI) instead of signing in")
	fs.StringVar(&cfg.TokenEnv, "token-env", "", "with --ci: the variable holding the job's OIDC token (default: GitHub Actions' token service, else $"+login.DefaultTokenEnv+")")
	fs.DurationVar(&cfg.Timeout, "timeout", 30*time.Second, "timeout of each HTTP request")
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && isatty.IsTerminal(f.Fd())
}

const ciUsage = `usage: flakegate ci <setup|hook|pusher|flush> [flags]

  setup   log in with the job's OIDC token, configure Nix (substituter, the
          cache's public key, netrc, post-build hook) and start the pusher
  hook    Nix's post-build-hook: queue $OUT_PATHS (installed by setup)
  pusher  push queued paths in the background (started by setup)
  flush   wait for the queue, report what was pushed (job summary)

None of them fails the job because of the cache: problems are warnings.
`

func runCI(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" {
		fmt.Fprint(stderr, ciUsage)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	env := ciaction.Env{HTTPClient: &http.Client{}, Getenv: os.Getenv, Stdout: stdout, Stderr: stderr}
	fs := flag.NewFlagSet("flakegate ci "+args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	stateDir := fs.String("state-dir", ciaction.DefaultStateDir(os.Getenv), "the state directory shared by setup, hook, pusher and flush")
	parse := func() int {
		err := ff.Parse(fs, args[1:], ff.WithEnvVarPrefix("FLAKEGATE"))
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		if err != nil {
			return 2
		}
		if fs.NArg() > 0 {
			fmt.Fprintf(stderr, "%s: unexpected arguments %q\n", fs.Name(), fs.Args())
			return 2
		}
		return -1
	}
	switch args[0] {
	case "setup":
		cfg := ciaction.DefaultSetupConfig()
		fs.StringVar(&cfg.Cache, "cache", "", "the cache's base URL, e.g. https://cache.example.com")
		fs.StringVar(&cfg.Flake, "flake", "", "the flake to push to (default: the job's repository, $GITHUB_REPOSITORY or $CI_PROJECT_PATH)")
		fs.StringVar(&cfg.TokenEnv, "token-env", "", "the variable holding the job's OIDC token (default: GitHub Actions' token service, else $"+login.DefaultTokenEnv+")")
		fs.DurationVar(&cfg.Lifetime, "lifetime", 0, "cache token lifetime to ask for (refreshed before it ends on GitHub; on GitLab ask for the job's length)")
		fs.StringVar(&cfg.NixConf, "nix-conf", cfg.NixConf, "how Nix is configured: auto, env (NIX_CONFIG), system (/etc/nix/nix.conf + daemon restart) or none")
		fs.StringVar(&cfg.Store, "store", "", "nix --store of the built paths (default: the default store)")
		fs.BoolVar(&cfg.Push, "push", cfg.Push, "push what the job builds (false: only use the cache)")
		fs.IntVar(&cfg.Retries, "retries", cfg.Retries, "retries of a failed request by the pusher")
		fs.DurationVar(&cfg.Timeout, "timeout", cfg.Timeout, "timeout of the login requests")
		if code := parse(); code >= 0 {
			return code
		}
		cfg.StateDir = *stateDir
		if err := ciaction.Setup(ctx, cfg, env); err != nil {
			fmt.Fprintf(stderr, "flakegate ci setup: %v\n", err)
			return 2
		}
		return 0
	case "hook":
		if code := parse(); code >= 0 {
			return code
		}
		ciaction.Hook(ciaction.Dir(*stateDir), env)
		return 0
	case "pusher":
		if code := parse(); code >= 0 {
			return code
		}
		if err := ciaction.Pusher(ctx, ciaction.Dir(*stateDir), env); err != nil {
			fmt.Fprintf(stderr, "flakegate ci pusher: %v\n", err)
		}
		return 0
	case "flush":
		timeout := fs.Duration("timeout", 15*time.Minute, "how long to wait for the queue to be pushed")
		if code := parse(); code >= 0 {
			return code
		}
		ciaction.Flush(ctx, ciaction.Dir(*stateDir), *timeout, env)
		return 0
	}
	fmt.Fprintf(stderr, "flakegate ci: unknown command %q\n%s", args[0], ciUsage)
	return 2
}

func runSession(ctx context.Context, cmd string, args []string, stdout, stderr io.Writer) int {
	var cache, netrc string
	var timeout time.Duration
	fs := flag.NewFlagSet("flakegate "+cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&cache, "cache", "", "the cache's base URL, e.g. https://cache.example.com")
	fs.StringVar(&netrc, "netrc", "", "netrc file (default $XDG_CONFIG_HOME/nix/netrc or ~/.config/nix/netrc)")
	fs.DurationVar(&timeout, "timeout", 30*time.Second, "timeout of the request")
	err := ff.Parse(fs, args, ff.WithEnvVarPrefix("FLAKEGATE"))
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		return 2
	}
	if _, err := login.CacheBase(cache); err != nil || fs.NArg() > 0 {
		fmt.Fprintf(stderr, "flakegate %s: --cache is required (the cache's base URL), and no arguments: %v\n", cmd, err)
		return 2
	}
	if netrc == "" {
		if netrc, err = login.DefaultNetrcPath(os.Getenv); err != nil {
			fmt.Fprintf(stderr, "flakegate %s: %v\n", cmd, err)
			return 1
		}
	}
	if cmd == "logout" {
		removed, err := login.Logout(netrc, cache)
		if err != nil {
			fmt.Fprintf(stderr, "flakegate logout: %v\n", err)
			return 1
		}
		if removed {
			fmt.Fprintf(stdout, "removed the token for %s from %s (it stays valid until it expires; an administrator revokes it by its token id)\n", cache, netrc)
		} else {
			fmt.Fprintf(stdout, "no token for %s in %s\n", cache, netrc)
		}
		return 0
	}
	who, err := login.Status(ctx, &http.Client{}, cache, netrc, timeout)
	if err != nil {
		fmt.Fprintf(stderr, "flakegate status: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "signed in to %s as %s\n", cache, who.Subject)
	fmt.Fprintf(stdout, "  provider %s (%s), token from %s, issuer %s\n", who.Provider, who.Kind, who.Via, who.Issuer)
	left := time.Until(who.ExpiresAt).Round(time.Second)
	fmt.Fprintf(stdout, "  token expires %s (in %s)", who.ExpiresAt.Local().Format(time.RFC3339), left)
	if who.TokenID != "" {
		fmt.Fprintf(stdout, ", token id %s", who.TokenID)
	}
	fmt.Fprintln(stdout)
	return 0
}

func runPin(ctx context.Context, unpin bool, args []string, stdout, stderr io.Writer) int {
	cmd := "flakegate pin"
	if unpin {
		cmd = "flakegate unpin"
	}
	cfg := login.PinConfig{Unpin: unpin}
	fs := flag.NewFlagSet(cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&cfg.Cache, "cache", "", "the cache's base URL, e.g. https://cache.example.com")
	fs.StringVar(&cfg.Flake, "flake", "", "the flake (org/name) the store path was pushed to")
	fs.StringVar(&cfg.Netrc, "netrc", "", "netrc file holding the cache token (default $XDG_CONFIG_HOME/nix/netrc or ~/.config/nix/netrc)")
	fs.DurationVar(&cfg.Timeout, "timeout", 30*time.Second, "timeout of the HTTP request")
	err := ff.Parse(fs, args, ff.WithEnvVarPrefix("FLAKEGATE"))
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		return 2
	}
	want := 2
	if unpin {
		want = 1
	}
	if fs.NArg() != want {
		fmt.Fprintf(stderr, "%s: want %d arguments (NAME%s), got %q\n", cmd, want, map[bool]string{false: " STORE-PATH", true: ""}[unpin], fs.Args())
		return 2
	}
	cfg.Name = fs.Arg(0)
	if !unpin {
		cfg.StorePath = fs.Arg(1)
	}
	if err := cfg.Validate(); err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", cmd, err)
		return 2
	}
	if err := login.Pin(ctx, cfg, env(stdout, stderr)); err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", cmd, err)
		return 1
	}
	return 0
}
