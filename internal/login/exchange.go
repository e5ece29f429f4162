package login

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/flakegate/flakegate/internal/route"
)

// TokenPath is where the cache exchanges identity-provider tokens.
const TokenPath = "/_flakegate/token"

// CacheToken is a flakegate cache token and when it stops working.
type CacheToken struct {
	Token     string    `json:"token"`
	ExpiresAt time.Time `json:"expires_at"`
	TokenID   string    `json:"token_id"` // jti: what an admin revokes (not a secret)
}

// apiError is the JSON error answer of flakegate endpoints.
type apiError struct {
	Error string `json:"error"`
}

// CacheBase checks a cache URL and returns its base (scheme://host[:port]).
// The cache serves from its root, so a path is refused rather than guessed.
func CacheBase(raw string) (*url.URL, error) {
	u, err := url.Parse(strings.TrimSpace(raw))
	if err != nil {
		return nil, fmt.Errorf("cache URL %q: %w", raw, err)
	}
	if u.Scheme != "https" && u.Scheme != "http" {
		return nil, fmt.Errorf("cache URL %q: want https://host (or http:// for a local test cache)", raw)
	}
	if u.Host == "" || u.Hostname() == "" {
		return nil, fmt.Errorf("cache URL %q: no host", raw)
	}

	if u.User != nil || u.RawQuery != "" || u.Fragment != "" || strings.Trim(u.Path, "/") != "" {
		return nil, fmt.Errorf("cache URL %q: give only the cache's base URL, e.g. %s://%s", raw, u.Scheme, u.Host)
	}
	return &url.URL{Scheme: u.Scheme, Host: u.Host}, nil
}

// SecureCacheBase is CacheBase for a cache a token is sent to or written
// for (login, status, ci setup, push, pin): plain http only to this machine. The
// IdP token, the cache token (every Nix request, through the netrc) and
// the cache's public keys would cross the network in clear text (review
// r6, 2026-12-05). Removing a stored token (logout) takes any cache URL.
func SecureCacheBase(raw string) (*url.URL, error) {
	u, err := CacheBase(raw)
	if err != nil {
		return nil, err
	}
	if u.Scheme == "http" && !route.LoopbackHost(u.Hostname()) {
		return nil, fmt.Errorf("cache URL %q: use https (http:// is only for a cache on this machine: localhost, 127.0.0.1, [::1])", raw)
	}
	return u, nil
}

// Exchange trades an identity-provider token for a cache token at the
// cache's exchange endpoint. lifetime > 0 asks for that lifetime (the cache
// caps it at its maximum); 0 takes the cache's default.
func Exchange(ctx context.Context, hc *http.Client, cache *url.URL, idpToken string, lifetime, timeout time.Duration) (*CacheToken, error) {
	return exchange(ctx, hc, cache, idpToken, exchangeRequest{}, lifetime, timeout)
}

// Scope is the scope of a scoped (deploy) token: read-only, for the
// closure of Roots (store paths) within Flake.
type Scope struct {
	Flake string   `json:"flake"`
	Roots []string `json:"roots"`
}

// ExchangeScoped is Exchange for a scoped token (the cache caps its
// lifetime at its -scoped-token-max-lifetime; 0 takes that maximum).
func ExchangeScoped(ctx context.Context, hc *http.Client, cache *url.URL, idpToken string, scope Scope, lifetime, timeout time.Duration) (*CacheToken, error) {
	return exchange(ctx, hc, cache, idpToken, exchangeRequest{Scope: &scope}, lifetime, timeout)
}

// exchangeRequest is the exchange's JSON body.
type exchangeRequest struct {
	LifetimeSeconds int64  `json:"lifetime_seconds,omitempty"`
	Scope           *Scope `json:"scope,omitempty"`
}

func exchange(ctx context.Context, hc *http.Client, cache *url.URL, idpToken string, er exchangeRequest, lifetime, timeout time.Duration) (*CacheToken, error) {
	if hc == nil {
		hc = http.DefaultClient
	}
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	endpoint := cache.JoinPath(TokenPath).String()
	if lifetime > 0 {
		er.LifetimeSeconds = int64((lifetime + time.Second - 1) / time.Second)
	}
	var body io.Reader
	if er != (exchangeRequest{}) {
		b, err := json.Marshal(er)
		if err != nil {
			return nil, fmt.Errorf("exchange token: encode request: %w", err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequest(http.MethodPost, endpoint, body)
	if err != nil {
		return nil, fmt.Errorf("exchange token at %s: %w", cache.Host, err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Authorization", "Bearer "+idpToken)
	req.Header.Set("Accept", "application/json")
	var tok CacheToken
	var errText string // authz's JSON error, or the gate's / Envoy's plain-text denial
	status, err := doJSONOr(ctx, hc, req, timeout, &tok, &errText)
	if err != nil {
		return nil, fmt.Errorf("exchange token at %s: %w", cache.Host, err)
	}
	if status != http.StatusOK {
		msg := errText
		var apiErr apiError
		if json.Unmarshal([]byte(errText), &apiErr) == nil && apiErr.Error != "" {
			msg = apiErr.Error
		}
		if msg == "" {
			msg = http.StatusText(status)
		}
		return nil, &ExchangeError{Host: cache.Host, Status: status, Msg: msg}
	}
	if tok.Token == "" || tok.ExpiresAt.IsZero() {
		return nil, errors.New("exchange token: the cache's answer lacks token or expires_at")
	}
	return &tok, nil
}

// ExchangeError is the cache's refusal of an exchange.
type ExchangeError struct {
	Host   string
	Status int
	Msg    string
}

func (e *ExchangeError) Error() string {
	return fmt.Sprintf("exchange token at %s: the cache answered %d: %s", e.Host, e.Status, e.Msg)
}

// Transient reports whether err is worth retrying: the cache unreachable
// or answering 5xx or 429 (a refusal of the token is not).
func Transient(err error) bool {
	var ee *ExchangeError
	if errors.As(err, &ee) {
		return ee.Status >= 500 || ee.Status == http.StatusTooManyRequests
	}
	var ue *url.Error
	return errors.As(err, &ue)
}
