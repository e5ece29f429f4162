package authzapp

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/flakegate/flakegate/internal/authz"
	"github.com/flakegate/flakegate/internal/exchange"
	"github.com/flakegate/flakegate/internal/identity"
	"github.com/flakegate/flakegate/internal/policy"
	"github.com/flakegate/flakegate/internal/revoke"
	"github.com/flakegate/flakegate/internal/serve"
	"github.com/flakegate/flakegate/internal/tokens"
)

// Config is the authz process configuration (cmd/authz's flags, which take
// their defaults from DefaultConfig).
type Config struct {
	Listen     string // gRPC ext_authz listener: host:port or unix:/path
	HTTPListen string // /metrics, /healthz and /_flakegate/ (token exchange)
	// HTTPTLS serves the HTTP listener over TLS (HTTP/2 on), the
	// certificate reloaded when its files change; zero: in clear.
	HTTPTLS   serve.TLSFiles
	Policies  string // policy directory
	Issuers   string // issuers file
	OwnersURL string // blob server internal listener (owners lookup)
	// OwnersTimeout bounds one owners lookup.
	OwnersTimeout time.Duration
	// OwnersTTL is how long an owners answer is cached, empty or not
	// (alike, so that timing does not tell present from absent objects).
	OwnersTTL time.Duration
	// ClosureTTL is how long the closure of a scoped token's roots is
	// cached (per flake and roots); ClosureTimeout bounds one lookup.
	ClosureTTL     time.Duration
	ClosureTimeout time.Duration
	// ShutdownTimeout bounds the graceful stop on SIGTERM; after it,
	// remaining calls are cut.
	ShutdownTimeout time.Duration
	// PolicyDebounce is how long the policy directory must stay quiet
	// after a change before it is reloaded.
	PolicyDebounce time.Duration
	LogLevel       string // debug, info, warn, error
	// Pprof serves Go's runtime profiles under /debug/pprof/ on the HTTP
	// listener (profiling under load; keep that listener private).
	Pprof bool
	// Exchange is the token exchange (POST /_flakegate/token): on when
	// Exchange.PublicURL is set. Revocation (denylist.yaml in Policies)
	// applies either way.
	Exchange exchange.Config

	// Set by the single-host process (internal/hostapp), never by a flag:

	// Registry receives the metrics; nil: a registry of the process's own,
	// with the Go runtime and process collectors.
	Registry *prometheus.Registry
	// OwnersTransport carries the owners and closure lookups; nil: the
	// network, to OwnersURL.
	OwnersTransport http.RoundTripper
}

// CoreFlags registers on fs the flags of the authorization core: what
// decides (policies, issuers, owners cache) and the token exchange. cmd/authz
// adds its listeners to them; the single-host blob server
// (cmd/blobserver -policies) takes exactly these, so both spell them alike.
func CoreFlags(fs *flag.FlagSet, c *Config) {
	fs.StringVar(&c.Policies, "policies", c.Policies, "Rego policy `directory` (package flakegate.authz), hot-reloaded")
	fs.StringVar(&c.Issuers, "issuers", c.Issuers, "issuers `file` (YAML)")
	fs.DurationVar(&c.OwnersTTL, "owners-ttl", c.OwnersTTL, "how long an owners answer is cached (empty or not, alike: a push into another flake shows in the union view within it)")
	fs.DurationVar(&c.PolicyDebounce, "policy-debounce", c.PolicyDebounce, "reload the policy directory once it has been quiet this long after a change")
	fs.StringVar(&c.Exchange.PublicURL, "public-url", c.Exchange.PublicURL, "the cache's public base `URL`; enables the token exchange (POST /_flakegate/token): iss and aud of cache tokens")
	fs.StringVar(&c.Exchange.KeyDir, "token-keys", c.Exchange.KeyDir, "`directory` of the cache-token signing keys (*.pem; one is created when empty; newest signs)")
	fs.DurationVar(&c.Exchange.Lifetime, "token-lifetime", c.Exchange.Lifetime, "lifetime of an exchanged cache token")
	fs.DurationVar(&c.Exchange.MaxLifetime, "token-max-lifetime", c.Exchange.MaxLifetime, "longest cache token lifetime a client may ask for")
	fs.DurationVar(&c.Exchange.ScopedMaxLifetime, "scoped-token-max-lifetime", c.Exchange.ScopedMaxLifetime, "longest lifetime of a scoped (deploy) token, read-only for one closure; also its lifetime when none is asked for")
	fs.DurationVar(&c.ClosureTTL, "closure-ttl", c.ClosureTTL, "how long the closure of a scoped token's roots is cached before it is refreshed (paths pushed later show within it)")
	fs.DurationVar(&c.ClosureTimeout, "closure-timeout", c.ClosureTimeout, "timeout of one closure lookup (one index query per level of the closure)")
}

// DefaultConfig is the configuration with every default filled in.
func DefaultConfig() Config {
	return Config{
		Listen:          "127.0.0.1:9001",
		HTTPListen:      "127.0.0.1:9002",
		OwnersURL:       "http://127.0.0.1:8081",
		OwnersTimeout:   2 * time.Second,
		OwnersTTL:       2 * time.Second,
		ClosureTTL:      authz.DefaultClosureTTL,
		ClosureTimeout:  authz.DefaultClosureTimeout,
		ShutdownTimeout: 15 * time.Second,
		PolicyDebounce:  100 * time.Millisecond,
		LogLevel:        "info",
		Exchange: exchange.Config{
			Lifetime:          tokens.DefaultLifetime,
			MaxLifetime:       tokens.DefaultMaxLifetime,
			ScopedMaxLifetime: tokens.DefaultScopedMaxLifetime,
		},
	}
}

// Validate reports every problem of a serving configuration at once.
func (c *Config) Validate() error {
	var errs []error
	add := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if serve.SocketPath(c.Listen) == "" {
		if err := serve.CheckHostPort(c.Listen); err != nil {
			add("-listen %q: %v (want host:port, or unix:/path for a unix socket)", c.Listen, err)
		}
	}
	if err := serve.CheckHostPort(c.HTTPListen); err != nil {
		add("-http-listen %q: %v", c.HTTPListen, err)
	}
	if err := c.HTTPTLS.Check(); err != nil {
		add("%v", err)
	}
	if c.Listen != "" && c.Listen == c.HTTPListen && !strings.HasSuffix(c.Listen, ":0") {
		add("-listen and -http-listen are both %q: they need different addresses", c.Listen)
	}
	errs = append(errs, c.validateFiles()...)
	if u, err := url.Parse(c.OwnersURL); c.OwnersURL == "" {
		add("-owners-url is required (the blob server's internal listener, e.g. http://127.0.0.1:8081)")
	} else if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		add("-owners-url %q: want http(s)://host:port", c.OwnersURL)
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{
		{"owners timeout", c.OwnersTimeout},
		{"owners TTL", c.OwnersTTL},
		{"-closure-ttl", c.ClosureTTL},
		{"-closure-timeout", c.ClosureTimeout},
		{"shutdown timeout", c.ShutdownTimeout},
		{"-policy-debounce", c.PolicyDebounce},
	} {
		if d.v <= 0 {
			add("%s must be positive, got %s", d.name, d.v)
		}
	}
	if _, err := serve.ParseLogLevel(c.LogLevel); err != nil {
		add("-log-level: %v", err)
	}
	if err := c.Exchange.Validate(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// validateFiles checks the policy directory and issuers file exist (their
// content is checked by loading, or by CheckConfig).
func (c *Config) validateFiles() []error {
	var errs []error
	if c.Policies == "" {
		errs = append(errs, errors.New("-policies is required (the Rego policy directory)"))
	} else if fi, err := os.Stat(c.Policies); err != nil {
		errs = append(errs, fmt.Errorf("-policies: %w", err))
	} else if !fi.IsDir() {
		errs = append(errs, fmt.Errorf("-policies %s: not a directory", c.Policies))
	}
	if c.Issuers == "" {
		errs = append(errs, errors.New("-issuers is required (the issuers YAML file)"))
	} else if _, err := os.Stat(c.Issuers); err != nil {
		errs = append(errs, fmt.Errorf("-issuers: %w", err))
	}
	return errs
}

// NewLogger is the process's logger: JSON lines to w at LogLevel.
func (c *Config) NewLogger(w io.Writer) *slog.Logger { return serve.NewLogger(w, c.LogLevel) }

// CheckConfig is `authz -check`: it validates the issuers file and the
// policy directory (compile, then run its *_test.rego, then the denylist),
// printing what it finds to w. It returns an error when anything is wrong;
// doubts (identity.Config.Warnings: an issuer with a trailing slash) are
// printed as WARN lines and do not fail it. It makes no network calls.
func CheckConfig(ctx context.Context, cfg Config, w io.Writer) error {
	var errs []error
	var issuerURLs []string // nil (no warnings about them) when the file failed
	fail := func(what string, err error) {
		fmt.Fprintf(w, "FAIL %s:\n%s\n", what, indent(err.Error()))
		errs = append(errs, fmt.Errorf("%s: %w", what, err))
	}

	if cfg.Issuers == "" {
		fail("issuers", errors.New("-issuers is required (the issuers YAML file)"))
	} else if issuers, err := identity.LoadIssuersFile(cfg.Issuers); err != nil {
		fail("issuers "+cfg.Issuers, err)
	} else {
		names := make([]string, len(issuers.Issuers))
		for i, ic := range issuers.Issuers {
			names[i] = ic.Name
		}
		issuerURLs = issuers.IssuerURLs()
		fmt.Fprintf(w, "ok   issuers %s: %d issuer(s): %s\n", cfg.Issuers, len(names), strings.Join(names, ", "))
		for _, warning := range issuers.Warnings() {
			fmt.Fprintf(w, "WARN issuers %s: %s\n", cfg.Issuers, warning)
		}
	}

	switch fi, err := os.Stat(cfg.Policies); {
	case cfg.Policies == "":
		fail("policies", errors.New("-policies is required (the Rego policy directory)"))
	case err != nil:
		fail("policies", err)
	case !fi.IsDir():
		fail("policies", fmt.Errorf("%s is not a directory", cfg.Policies))
	default:
		fmt.Fprintf(w, "--- policies %s\n", cfg.Policies)
		if err := policy.Check(ctx, cfg.Policies, w); err != nil {
			fail("policies "+cfg.Policies, err)
		} else {
			fmt.Fprintf(w, "ok   policies %s\n", cfg.Policies)
		}
		warnings, err := revoke.CheckDir(cfg.Policies, issuerURLs)
		if err != nil {
			fail("denylist", err)
		}
		for _, warning := range warnings {
			fmt.Fprintf(w, "WARN denylist %s\n", warning)
		}
	}
	return errors.Join(errs...)
}

func indent(s string) string {
	return "  " + strings.ReplaceAll(s, "\n", "\n  ")
}

// ParseFlags parses the command's flags as every flakegate service does
// (serve.ParseFlags: flags, FLAKEGATE_<FLAG>, -config file).
func ParseFlags(fs *flag.FlagSet, args []string, stdout, stderr io.Writer) (code int, done bool) {
	return serve.ParseFlags(fs, args, stdout, stderr)
}
