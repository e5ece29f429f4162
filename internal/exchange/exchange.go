package exchange

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/flakegate/flakegate/internal/authz"
	"github.com/flakegate/flakegate/internal/identity"
	"github.com/flakegate/flakegate/internal/tokens"
)

// IssuerName is the issuers-file style name of flakegate's own issuer (logs, metrics).
const IssuerName = "flakegate"

// Config is the token exchange part of authz's configuration.
type Config struct {
	// PublicURL is the cache's public base URL (https://cache.example.com):
	// iss and aud of cache tokens, and the audience CI jobs ask their IdP
	// for. Empty disables the exchange (authzapp; revocation still applies).
	PublicURL string
	// KeyDir holds the signing keys (*.pem); a key is generated on first
	// start when it holds none.
	KeyDir string
	// Lifetime of a cache token (default 1h) and the cap on any request (default 12h).
	Lifetime    time.Duration
	MaxLifetime time.Duration
	// ScopedMaxLifetime caps a scoped (deploy) token and is its lifetime
	// when none is asked for (default 90 days).
	ScopedMaxLifetime time.Duration
	// KeyCheckInterval is how often KeyDir is re-read for rotation (default 10s).
	KeyCheckInterval time.Duration
	// KeyActivationDelay is how old a new key must be before it signs, so
	// that every authz replica sharing KeyDir trusts it first (default
	// twice KeyCheckInterval).
	KeyActivationDelay time.Duration
}

// Validate reports every problem at once.
func (c *Config) Validate() error {
	if c.PublicURL == "" && c.KeyDir == "" {
		return nil
	}
	var errs []error
	if c.PublicURL == "" {
		errs = append(errs, errors.New("-public-url is required with -token-keys (the cache's public base URL)"))
	} else if _, err := normalizeURL(c.PublicURL); err != nil {
		errs = append(errs, err)
	}
	if c.KeyDir == "" {
		errs = append(errs, errors.New("-token-keys is required with -public-url (the signing key directory)"))
	}
	if c.ScopedMaxLifetime < 0 {
		errs = append(errs, fmt.Errorf("-scoped-token-max-lifetime must be positive, got %s", c.ScopedMaxLifetime))
	}
	if c.Lifetime < 0 || c.MaxLifetime < 0 {
		errs = append(errs, errors.New("token lifetimes must be positive"))
	}
	maxLife := c.MaxLifetime
	if maxLife == 0 {
		maxLife = tokens.DefaultMaxLifetime
	}
	if c.Lifetime > maxLife {
		errs = append(errs, fmt.Errorf("-token-lifetime %s exceeds -token-max-lifetime %s", c.Lifetime, maxLife))
	}
	return errors.Join(errs...)
}

func normalizeURL(raw string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" ||
		strings.Trim(u.Path, "/") != "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return "", fmt.Errorf("-public-url %q: want the cache's base URL, e.g. https://cache.example.com", raw)
	}
	return u.Scheme + "://" + u.Host, nil
}

// New builds the token exchange for cfg (PublicURL set): the signing keys
// in KeyDir (one is created on first start), the minter, and flakegate's
// own issuer, added to verifier so that cache tokens verify like any other
// token. Every exchange is decided by checker, the process's one Checker
// (authentication, revocation, policy). reg receives the exchange's
// metrics. Run WatchKeys while serving, for key rotation.
func New(cfg Config, checker *authz.Checker, verifier *identity.MultiVerifier, reg prometheus.Registerer, log *slog.Logger) (*Handler, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.PublicURL == "" {
		return nil, errors.New("-public-url is required for the token exchange")
	}
	if log == nil {
		log = slog.Default()
	}
	publicURL, _ := normalizeURL(cfg.PublicURL) // validated above

	created, err := tokens.EnsureKey(cfg.KeyDir, tokens.AlgEdDSA, time.Now())
	if err != nil {
		return nil, fmt.Errorf("token signing keys: %w", err)
	}
	keys, err := tokens.LoadKeyRing(cfg.KeyDir)
	if err != nil {
		return nil, fmt.Errorf("token signing keys: %w", err)
	}
	if created {
		log.Info("created a token signing key", "dir", cfg.KeyDir, "kid", keys.Signer().ID)
	}
	if cfg.KeyCheckInterval <= 0 {
		cfg.KeyCheckInterval = 10 * time.Second
	}
	if cfg.KeyActivationDelay <= 0 {
		cfg.KeyActivationDelay = 2 * cfg.KeyCheckInterval
	}
	minter, err := tokens.NewMinter(keys, tokens.Config{
		Issuer: publicURL, Lifetime: cfg.Lifetime, MaxLifetime: cfg.MaxLifetime, ScopedMaxLifetime: cfg.ScopedMaxLifetime, ActivationDelay: cfg.KeyActivationDelay,
	})
	if err != nil {
		return nil, err
	}
	if err := verifier.AddIssuer(identity.IssuerConfig{
		Name:     IssuerName,
		Issuer:   publicURL,
		Audience: []string{publicURL},
		Claims:   identity.ClaimsFlakegate,
	}, keys.PublicSet()); err != nil {
		return nil, fmt.Errorf("trust own token issuer: %w", err)
	}

	h := &Handler{
		Checker:   checker,
		Minter:    minter,
		Keys:      keys,
		Logger:    log.With("component", "exchange"),
		Metrics:   NewMetrics(reg),
		verifier:  verifier,
		keysEvery: cfg.KeyCheckInterval,
	}
	log.Info("token exchange enabled", "issuer", publicURL, "signing_kid", minter.Signer().ID,
		"keys", len(keys.Keys()), "lifetime", minter.Lifetime().String(), "max_lifetime", minter.MaxLifetime().String(),
		"scoped_max_lifetime", minter.ScopedMaxLifetime().String())
	return h, nil
}

// RegisterDisabled mounts the exchange's paths on mux answering 404 (JSON):
// what a cache without -public-url serves there.
func RegisterDisabled(mux *http.ServeMux) {
	disabled := func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusNotFound, errorBody{"token exchange is not enabled on this cache"})
	}
	mux.HandleFunc(TokenPath, disabled)
	mux.HandleFunc(JWKSPath, disabled)
}

// WatchKeys reloads the key directory every KeyCheckInterval and hands
// changed keys to the verifier, until ctx is done. It does nothing for a
// Handler not built by New.
func (h *Handler) WatchKeys(ctx context.Context) {
	if h.verifier == nil || h.keysEvery <= 0 {
		return
	}
	watchKeys(ctx, h.Keys, h.Minter, h.verifier, h.keysEvery, h.logger())
}

// watchKeys reloads the key directory and hands changed keys to the verifier.
func watchKeys(ctx context.Context, keys *tokens.KeyRing, minter *tokens.Minter, v *identity.MultiVerifier, every time.Duration, log *slog.Logger) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		changed, err := keys.Reload()
		if err != nil {
			log.Error("reload token signing keys: keeping the current ones", "dir", keys.Dir(), "error", err)
			continue
		}
		if !changed {
			continue
		}
		if err := v.SetIssuerKeys(IssuerName, keys.PublicSet()); err != nil {
			log.Error("hand new token keys to the verifier", "error", err)
			continue
		}
		log.Info("token signing keys reloaded", "dir", keys.Dir(), "keys", len(keys.Keys()),
			"newest_kid", keys.Signer().ID, "signing_kid", minter.Signer().ID)
	}
}
