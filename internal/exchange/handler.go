// Package exchange is flakegate's token exchange endpoint, served by authz
// over HTTP (reachable through Envoy and the blob server's embedded gate):
//
//	POST /_flakegate/token   Authorization: Bearer <IdP JWT>   (or Basic, netrc style)
//	     optional JSON body {"lifetime_seconds": N} asks for a shorter token,
//	     and {"scope": {"flake": "org/name", "closure": "/nix/store/…",
//	     "roots": ["/nix/store/…", …]}} for a scoped (deploy) token
//	  → 200 {"token": "<cache JWT>", "expires_at": "<RFC 3339>", "token_id": "<jti>"}
//	GET  /_flakegate/jwks    the public keys of the cache tokens (JWKS)
//
// Whether a token may be exchanged is decided by authz's Checker, the same
// check path as every other request: the request (route action "exchange")
// is authenticated, checked against the revocation list and the policy is
// asked, with the same answers (401, 403, 503), messages, metric labels and
// decision log line as any Check. The exchange keeps only what is its own:
// a cache token can never be exchanged again (its life cannot be extended),
// the lifetime asked for, and minting. The cache token carries the verified
// subject (identity's cache-claims layout); authz trusts its issuer like any
// other, so the policy sees the same subject either way, with
// subject.via = "exchange". Errors are JSON {"error": "…"}; 401 carries
// WWW-Authenticate.
//
// A scoped token (identity.ScopeClaim) is read-only and reads only the
// closure of its roots (closure and roots together, at most
// identity.MaxScopeRoots) within its flake; authz enforces that on every
// request. The policy decides whether one may be minted: the exchange's
// input has "scope" (the requested one) and "flake" (its flake). Its
// lifetime is capped by the minter's ScopedMaxLifetime (default 90 days),
// also its lifetime when none is asked for.
//
// The cache token also records the IdP token's jti (fg_subject.parent_jti,
// logged as idp_token_id), so that revoking that jti in denylist.yaml ends
// the cache tokens exchanged from it too. An IdP token without a jti is still
// exchanged (GitHub and GitLab always send one; some generic OIDC providers
// do not): its cache tokens cannot be revoked through the IdP token's id, only
// by their own token_id or by subject.
package exchange

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"maps"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/flakegate/flakegate/internal/authz"
	"github.com/flakegate/flakegate/internal/identity"
	"github.com/flakegate/flakegate/internal/route"
	"github.com/flakegate/flakegate/internal/tokens"
)

// Paths served.
const (
	TokenPath = "/_flakegate/token"
	JWKSPath  = "/_flakegate/jwks"
)

// maxBody bounds the request body (it holds at most a small JSON object).
const maxBody = 4 << 10

// Handler serves the exchange endpoints. New builds the process's; set the
// fields before use; it is safe for concurrent use.
type Handler struct {
	// Checker decides every exchange (authentication, revocation, policy)
	// and records the decision.
	Checker *authz.Checker
	Minter  *tokens.Minter
	Keys    *tokens.KeyRing
	Logger  *slog.Logger
	Metrics *Metrics // nil: none
	// Timeout bounds the decision (verification and policy); default 10s.
	Timeout time.Duration

	// Set by New: the verifier WatchKeys hands reloaded keys to.
	verifier  *identity.MultiVerifier
	keysEvery time.Duration
}

// Register mounts the endpoints on mux.
func (h *Handler) Register(mux *http.ServeMux) {
	mux.Handle(TokenPath, http.HandlerFunc(h.ServeToken))
	mux.Handle(JWKSPath, http.HandlerFunc(h.ServeJWKS))
}

// Response is the exchange's answer.
type Response struct {
	Token     string    `json:"token"`
	ExpiresAt time.Time `json:"expires_at"`
	TokenID   string    `json:"token_id"`
	// Scope is the scope of a scoped token (absent for an unscoped one).
	Scope map[string]any `json:"scope,omitempty"`
}

type request struct {
	LifetimeSeconds int64         `json:"lifetime_seconds"`
	Scope           *requestScope `json:"scope"`
}

// requestScope is a requested scope: closure and roots are both roots.
type requestScope struct {
	Flake   string   `json:"flake"`
	Closure string   `json:"closure"`
	Roots   []string `json:"roots"`
}

// ServeToken exchanges an identity-provider token for a cache token.
func (h *Handler) ServeToken(w http.ResponseWriter, r *http.Request) {
	log := h.logger()
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		h.fail(w, "bad_request", http.StatusMethodNotAllowed, "use POST with the identity provider's token as Bearer")
		return
	}
	req := authz.NewRequest(r.Method, r.URL.Path, r.Header.Get("Authorization"))
	if req.RouteErr != nil || req.Route.Action != route.ActionExchange {
		h.fail(w, "bad_request", http.StatusNotFound, "no such endpoint")
		return
	}
	var body request
	raw, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	if err != nil {
		h.fail(w, "bad_request", http.StatusRequestEntityTooLarge, "request body too large")
		return
	}
	if len(bytes.TrimSpace(raw)) > 0 {
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&body); err != nil {
			h.fail(w, "bad_request", http.StatusBadRequest, `body: want {"lifetime_seconds": N, "scope": {"flake": "org/name", "closure": "/nix/store/…"}} (each optional) or nothing`)
			return
		}
		if body.LifetimeSeconds < 0 {
			h.fail(w, "bad_request", http.StatusBadRequest, "lifetime_seconds must be positive")
			return
		}
	}

	if body.Scope != nil {
		roots := body.Scope.Roots
		if body.Scope.Closure != "" {
			roots = append([]string{body.Scope.Closure}, roots...)
		}
		scope, err := identity.NewScope(body.Scope.Flake, roots)
		if err != nil {
			h.fail(w, "bad_request", http.StatusBadRequest, err.Error())
			return
		}
		req.Scope = scope
	}
	timeout := h.Timeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	ctx, cancel := context.WithTimeout(r.Context(), timeout)
	defer cancel()
	res := h.Checker.Authorize(ctx, req)
	subject := res.Subject
	switch {
	case !res.Allow && (res.Status == http.StatusUnauthorized || res.Status >= 500):
		// No usable token (missing, invalid, expired, revoked) or authz
		// failing: the Checker's answer.
		h.refuse(w, res)
		return
	case subject != nil && subject.Via == "exchange":
		// Whatever the policy says: a cache token's life cannot be extended.
		log.Info("token exchange refused: cache token presented", "subject", subject.Summary(), "token_id", subject.TokenID)
		h.fail(w, "re_exchange", http.StatusForbidden,
			"a cache token cannot be exchanged again (its life cannot be extended): exchange a fresh identity-provider token")
		return
	case !res.Allow:
		h.refuse(w, res)
		return
	case subject == nil:
		// A policy that lets anonymous callers exchange still gets no
		// token minted without a subject.
		h.unauthorized(w, "unauthenticated", "authentication required: send the identity provider's token as Bearer")
		return
	}

	sub, _ := subject.Claims["sub"].(string)
	if sub == "" {
		sub = subject.Summary()
	}
	claims, mint := subject.CacheClaims(), h.Minter.Mint
	if req.Scope != nil {
		maps.Copy(claims, req.Scope.Claims())
		mint = h.Minter.MintScoped
	}
	// The minter caps the lifetime; the seconds are capped first so that
	// the product cannot wrap (18446744074 s was 0.3 s: review r6).
	life := time.Duration(min(body.LifetimeSeconds, int64(math.MaxInt64/time.Second))) * time.Second
	tok, err := mint(sub, claims, life)
	if err != nil {
		log.Error("token exchange: mint failed", "subject", subject.Summary(), "error", err)
		h.fail(w, "error", http.StatusInternalServerError, "could not issue a cache token")
		return
	}
	var scope map[string]any
	if req.Scope != nil {
		scope = req.Scope.Input()
	}
	log.Info("cache token issued", "subject", subject.Summary(), "provider", subject.Provider, "scope", scope,
		"idp_issuer", subject.Issuer, "idp_token_id", subject.TokenID, "token_id", tok.ID, "kid", tok.KeyID,
		"expires_at", tok.ExpiresAt.UTC().Format(time.RFC3339), "policy_revision", res.Revision)
	h.Metrics.result("issued")
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, Response{Token: tok.Raw, ExpiresAt: tok.ExpiresAt.UTC(), TokenID: tok.ID, Scope: scope})
}

// ServeJWKS publishes the cache tokens' public keys.
func (h *Handler) ServeJWKS(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		writeJSON(w, http.StatusMethodNotAllowed, errorBody{"use GET"})
		return
	}
	doc := h.Keys.JWKS()
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "public, max-age=60")
	w.Header().Set("Content-Length", strconv.Itoa(len(doc)))
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodGet {
		_, _ = w.Write(doc)
	}
}

type errorBody struct {
	Error string `json:"error"`
}

// refuse answers the Checker's denial: its status and message (as the JSON
// error), counted under the decision's metric label.
func (h *Handler) refuse(w http.ResponseWriter, res authz.Result) {
	msg := strings.TrimSpace(res.Message)
	if msg == "" {
		msg = http.StatusText(res.Status)
	}
	if res.Status == http.StatusUnauthorized {
		h.unauthorized(w, authz.ResultLabel(res), msg)
		return
	}
	if ra := res.RetryAfterHeader(); ra != "" {
		w.Header().Set("Retry-After", ra)
	}
	h.fail(w, authz.ResultLabel(res), res.Status, msg)
}

func (h *Handler) unauthorized(w http.ResponseWriter, result, msg string) {
	w.Header().Set("WWW-Authenticate", `Bearer realm="flakegate", error="invalid_token"`)
	h.fail(w, result, http.StatusUnauthorized, msg)
}

func (h *Handler) fail(w http.ResponseWriter, result string, status int, msg string) {
	h.Metrics.result(result)
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, status, errorBody{Error: msg})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status, b = http.StatusInternalServerError, []byte(`{"error":"internal error"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}

func (h *Handler) logger() *slog.Logger {
	if h.Logger == nil {
		return slog.Default()
	}
	return h.Logger
}

// Metrics counts exchanges by result.
type Metrics struct {
	exchanges *prometheus.CounterVec
}

// NewMetrics registers flakegate_token_exchanges_total{result} with reg (nil: unregistered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{exchanges: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "flakegate_token_exchanges_total",
		Help: "Token exchange requests by result: issued, re_exchange, bad_request, or the decision's label as in flakegate_authz_decisions_total (unauthenticated, deny, error).",
	}, []string{"result"})}
	if reg != nil {
		reg.MustRegister(m.exchanges)
	}
	return m
}

func (m *Metrics) result(r string) {
	if m != nil {
		m.exchanges.WithLabelValues(r).Inc()
	}
}
