// Package login is the client side of flakegate's token exchange: it gets
// an identity-provider token (a user's, by the OAuth 2.0 device
// authorization grant of RFC 8628 when the provider offers it, else by the
// authorization code grant with PKCE through the browser and a loopback
// redirect; a token file; or a CI job's OIDC token), trades it at the cache
// for a longer-lived cache token, and stores that token in a netrc file for
// Nix (registered with Determinate Nix's daemon when that is installed).
// Logout removes the netrc entry; Status asks the cache who the token is.
package login

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"github.com/flakegate/flakegate/internal/netrc"
)

// NetrcLogin is the login written to netrc (flakegate ignores it).
const NetrcLogin = "flakegate"

// Config is what `flakegate login` was asked to do.
type Config struct {
	Cache string // cache base URL

	// Interactive sign-in.
	Issuer       string
	ClientID     string
	ClientSecret string
	Scopes       []string
	// Flow is FlowAuto (device when offered, else browser), FlowDevice or
	// FlowBrowser.
	Flow string
	// RedirectPort is the browser flow's loopback port (0: any free one).
	RedirectPort int

	// TokenFile holds an ID token the user already has ("-": stdin).
	TokenFile string

	// CI sign-in.
	CI       bool
	TokenEnv string

	// Lifetime asks the cache for a cache token of this lifetime (capped by
	// the cache's maximum); 0: the cache's default (1h unless configured).
	Lifetime time.Duration

	Netrc     string // netrc path; default ~/.config/nix/netrc
	PublicKey string // the cache's narinfo signing key, for the printed nix.conf lines

	Timeout time.Duration // per HTTP call; default 30s
}

// Sign-in flows.
const (
	FlowAuto    = "auto"
	FlowDevice  = "device"
	FlowBrowser = "browser"
)

// Env is the outside world of a login run.
type Env struct {
	HTTPClient *http.Client
	Getenv     func(string) string
	Stdout     io.Writer // nix.conf lines
	Stderr     io.Writer // progress and the device prompt
	// Prompt overrides how the device prompt is shown (tests visit the URL).
	Prompt func(DevicePrompt) error
	// OpenBrowser overrides how the browser flow's URL is shown (tests
	// drive it with an HTTP client).
	OpenBrowser func(url string) error
	// Stdin is read for --token-file -.
	Stdin io.Reader
	// DeterminateConfig is Determinate Nix's config.json path; default
	// DeterminateConfig.
	DeterminateConfig string
}

func (env Env) withDefaults() Env {
	if env.Getenv == nil {
		env.Getenv = os.Getenv
	}
	if env.Stdout == nil {
		env.Stdout = io.Discard
	}
	if env.Stderr == nil {
		env.Stderr = io.Discard
	}
	if env.HTTPClient == nil {
		env.HTTPClient = http.DefaultClient
	}
	return env
}

// DefaultNetrcPath is where Nix users usually keep their netrc.
func DefaultNetrcPath(getenv func(string) string) (string, error) {
	if x := getenv("XDG_CONFIG_HOME"); x != "" {
		return filepath.Join(x, "nix", "netrc"), nil
	}
	home := getenv("HOME")
	if home == "" {
		h, err := os.UserHomeDir()
		if err != nil {
			return "", fmt.Errorf("find home directory for the netrc (use --netrc): %w", err)
		}
		home = h
	}
	return filepath.Join(home, ".config", "nix", "netrc"), nil
}

// Validate reports every problem of the config at once.
func (c *Config) Validate() error {
	var errs []error
	if c.Cache == "" {
		errs = append(errs, errors.New("--cache is required (the cache's base URL)"))
	} else if _, err := SecureCacheBase(c.Cache); err != nil {
		errs = append(errs, err)
	}
	if c.Lifetime < 0 {
		errs = append(errs, errors.New("--lifetime must be positive"))
	}
	switch c.Flow {
	case "", FlowAuto, FlowDevice, FlowBrowser:
	default:
		errs = append(errs, fmt.Errorf("--flow %q: want auto, device or browser", c.Flow))
	}
	if c.TokenFile != "" && c.CI {
		errs = append(errs, errors.New("--token-file and --ci exclude each other"))
	}
	if !c.CI && c.TokenFile == "" {
		if c.Issuer == "" {
			errs = append(errs, errors.New("--issuer is required for an interactive login (or use --ci in a CI job)"))
		}
		if c.ClientID == "" {
			errs = append(errs, errors.New("--client-id is required for an interactive login"))
		}
		if c.TokenEnv != "" {
			errs = append(errs, errors.New("--token-env only applies with --ci"))
		}
	}
	return errors.Join(errs...)
}

// Run signs in, exchanges the token, writes the netrc and prints the
// nix.conf lines. It never prints a token.
func Run(ctx context.Context, cfg Config, env Env) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	env = env.withDefaults()
	if cfg.Timeout <= 0 {
		cfg.Timeout = 30 * time.Second
	}
	cache, _ := CacheBase(cfg.Cache) // validated above
	netrcPath := cfg.Netrc
	if netrcPath == "" {
		p, err := DefaultNetrcPath(env.Getenv)
		if err != nil {
			return err
		}
		netrcPath = p
	}

	idpToken, err := cfg.idpToken(ctx, env, cache)
	if err != nil {
		return err
	}
	tok, err := Exchange(ctx, env.HTTPClient, cache, idpToken, cfg.Lifetime, cfg.Timeout)
	if err != nil {
		return err
	}
	if err := netrc.WriteEntry(netrcPath, cache.Hostname(), NetrcLogin, tok.Token); err != nil {
		return err
	}
	fmt.Fprintf(env.Stderr, "flakegate: cache token for %s stored in %s (valid until %s; token id %s)\n",
		cache.Host, netrcPath, tok.ExpiresAt.Local().Format(time.RFC3339), tok.TokenID)
	registerDeterminate(env, netrcPath)
	_, err = io.WriteString(env.Stdout, NixConfLines(cache.String(), netrcPath, cfg.PublicKey))
	return err
}

// idpToken gets the identity-provider token: the CI job's (--ci) or by the
// device flow.
func (cfg *Config) idpToken(ctx context.Context, env Env, cache *url.URL) (string, error) {
	var idpToken string
	if cfg.TokenFile != "" {
		t, err := readTokenFile(cfg.TokenFile, env.Stdin)
		if err != nil {
			return "", err
		}
		idpToken = t
	} else if cfg.CI {
		src := CISource{TokenEnv: cfg.TokenEnv, Audience: cache.String(), Getenv: env.Getenv, HTTPClient: env.HTTPClient, Timeout: cfg.Timeout}
		t, from, err := src.Token(ctx)
		if err != nil {
			return "", err
		}
		fmt.Fprintf(env.Stderr, "flakegate: using the CI job's OIDC token (%s)\n", from)
		idpToken = t
	} else {
		t, err := signIn(ctx, *cfg, env)
		if err != nil {
			return "", fmt.Errorf("sign in at %s: %w", cfg.Issuer, err)
		}
		idpToken = t
	}
	return idpToken, nil
}

// signIn gets the user's ID token from the provider: the device flow
// when asked or offered, else the browser flow.
func signIn(ctx context.Context, cfg Config, env Env) (string, error) {
	flow := cfg.Flow
	if flow == "" || flow == FlowAuto {
		d, err := DiscoverProvider(ctx, env.HTTPClient, cfg.Issuer, cfg.Timeout)
		if err != nil {
			return "", err
		}
		flow = FlowBrowser
		if d.DeviceAuthorizationEndpoint != "" {
			flow = FlowDevice
		}
	}
	if flow == FlowBrowser {
		fmt.Fprintf(env.Stderr, "flakegate: signing in through the browser (authorization code with PKCE)\n")
		bf := BrowserFlow{
			Issuer: cfg.Issuer, ClientID: cfg.ClientID, ClientSecret: cfg.ClientSecret, Scopes: cfg.Scopes,
			HTTPClient: env.HTTPClient, Open: env.OpenBrowser, Stderr: env.Stderr, Port: cfg.RedirectPort,
			RequestTimeout: cfg.Timeout,
		}
		return bf.Run(ctx)
	}
	{
		prompt := env.Prompt
		if prompt == nil {
			prompt = func(p DevicePrompt) error {
				if p.VerificationURIComplete != "" {
					_, err := fmt.Fprintf(env.Stderr, "To sign in, open %s\n(or open %s and enter the code %s)\n", p.VerificationURIComplete, p.VerificationURI, p.UserCode)
					return err
				}
				_, err := fmt.Fprintf(env.Stderr, "To sign in, open %s and enter the code %s\n", p.VerificationURI, p.UserCode)
				return err
			}
		}
		df := DeviceFlow{
			Issuer: cfg.Issuer, ClientID: cfg.ClientID, ClientSecret: cfg.ClientSecret, Scopes: cfg.Scopes,
			HTTPClient: env.HTTPClient, Prompt: prompt, RequestTimeout: cfg.Timeout,
		}
		return df.Run(ctx)
	}
}

// NixConfLines are the nix.conf settings that make Nix use the cache with
// the netrc. Without the public key a placeholder says where to get it.
func NixConfLines(cache, netrcPath, publicKey string) string {
	key := publicKey
	keyNote := ""
	if key == "" {
		key = "<cache-public-key>"
		keyNote = "# Replace <cache-public-key> with the cache's narinfo signing key (name:base64),\n" +
			"# as logged by the blob server on first start; or rerun with --public-key.\n"
	}
	keyNote += "# With the Nix daemon, a user who is not in trusted-users needs the cache in\n" +
		"# the daemon's trusted-substituters too.\n"
	return "# Add to nix.conf (~/.config/nix/nix.conf, or /etc/nix/nix.conf for the daemon):\n" +
		keyNote +
		"extra-substituters = " + cache + "/\n" +
		"extra-trusted-public-keys = " + key + "\n" +
		"netrc-file = " + netrcPath + "\n"
}

// NetrcPassword returns the password of the first entry for machine in
// netrc content, if any (internal/netrc).
func NetrcPassword(content, machine string) (string, bool) { return netrc.Password(content, machine) }

// ReadNetrcToken is the cache token stored for machine in the netrc at path
// (internal/netrc).
func ReadNetrcToken(path, machine string) (string, error) { return netrc.ReadToken(path, machine) }
