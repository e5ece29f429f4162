// Package exchange is flakegate's token exchange endpoint, served by authz
// over HTTP (reachable through Envoy and the blob server's embedded gate):
//
//	POST /_flakegate/token   Authorization: Bearer <IdP JWT>   (or Basic, netrc style)
//	     optional JSON body {"lifetime_seconds": N} asks for a shorter token
//	  → 200 {"token": "<cache JWT>", "expires_at": "<RFC 3339>", "token_id": "<jti>"}
//	GET  /_flakegate/jwks    the public keys of the cache tokens (JWKS)
//
// The identity-provider token is verified as usual, checked against the
// denylist, and the policy is asked (action "exchange"). The cache token
// carries the verified subject (identity's cache-claims layout); authz
// trusts its issuer like any other, so the policy sees the same subject
// either way, with subject.via = "exchange". A cache token can never be
// exchanged again: its life cannot be extended. Errors are JSON
// {"error": "…"}; 401 carries WWW-Authenticate.
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
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/flakegate/flakegate/internal/authz"
	"github.com/flakegate/flakegate/internal/identity"
	"github.com/flakegate/flakegate/internal/policy"
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

// Handler serves the exchange endpoints. Set the fields before use; it is
// safe for concurrent use.
type Handler struct {
	Verifier identity.Verifier
	Policy   policy.Evaluator
	// SubjectCheck rejects revoked subjects (revoke.Checker.Check); nil: none.
	SubjectCheck func(ctx context.Context, s *identity.Subject) error
	Minter       *tokens.Minter
	Keys         *tokens.KeyRing
	Logger       *slog.Logger
	Metrics      *Metrics // nil: none
	// Timeout bounds verification and policy evaluation; default 10s.
	Timeout time.Duration
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
}

type request struct {
	LifetimeSeconds int64 `json:"lifetime_seconds"`
}

// ServeToken exchanges an identity-provider token for a cache token.
func (h *Handler) ServeToken(w http.ResponseWriter, r *http.Request) {
	log := h.logger()
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		h.fail(w, "bad_request", http.StatusMethodNotAllowed, "use POST with the identity provider's token as Bearer")
		return
	}
	rt, err := route.Parse(r.Method, r.URL.Path)
	if err != nil || rt.Action != route.ActionExchange {
		h.fail(w, "bad_request", http.StatusNotFound, "no such endpoint")
		return
	}
	var req request
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	if err != nil {
		h.fail(w, "bad_request", http.StatusRequestEntityTooLarge, "request body too large")
		return
	}
	if len(bytes.TrimSpace(body)) > 0 {
		dec := json.NewDecoder(bytes.NewReader(body))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&req); err != nil {
			h.fail(w, "bad_request", http.StatusBadRequest, `body: want {"lifetime_seconds": N} or nothing`)
			return
		}
		if req.LifetimeSeconds < 0 {
			h.fail(w, "bad_request", http.StatusBadRequest, "lifetime_seconds must be positive")
			return
		}
	}

	timeout := h.Timeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	ctx, cancel := context.WithTimeout(r.Context(), timeout)
	defer cancel()

	raw, err := identity.TokenFromAuthorization(r.Header.Get("Authorization"))
	if errors.Is(err, identity.ErrNoToken) {
		h.unauthorized(w, "unauthenticated", "missing token: send the identity provider's token as Authorization: Bearer")
		return
	}
	if err != nil {
		h.unauthorized(w, "unauthenticated", err.Error())
		return
	}
	subject, err := h.Verifier.Verify(ctx, raw)
	if err != nil {
		if errors.Is(err, identity.ErrInvalidToken) {
			h.unauthorized(w, "unauthenticated", err.Error())
			return
		}
		log.Error("token exchange: verifier failed", "error", err)
		h.fail(w, "error", http.StatusServiceUnavailable, "token verification unavailable, try again later")
		return
	}
	if subject == nil || !subject.Authenticated {
		log.Error("token exchange: verifier returned no authenticated subject")
		h.fail(w, "error", http.StatusServiceUnavailable, "token verification unavailable, try again later")
		return
	}
	if h.SubjectCheck != nil {
		if err := h.SubjectCheck(ctx, subject); err != nil {
			log.Info("token exchange refused: revoked", "subject", subject.Summary(), "reason", err.Error())
			h.unauthorized(w, "revoked", err.Error())
			return
		}
	}
	if subject.Via == "exchange" {
		log.Info("token exchange refused: cache token presented", "subject", subject.Summary(), "token_id", subject.TokenID)
		h.fail(w, "re_exchange", http.StatusForbidden,
			"a cache token cannot be exchanged again (its life cannot be extended): exchange a fresh identity-provider token")
		return
	}

	in := authz.BuildInput(authz.Request{Method: r.Method, Path: r.URL.Path, Route: rt}, subject, nil)
	d, err := h.Policy.Evaluate(ctx, in)
	if err != nil {
		log.Error("token exchange: policy evaluation failed", "subject", subject.Summary(), "error", err)
		h.fail(w, "error", http.StatusServiceUnavailable, "authorization unavailable, try again later")
		return
	}
	if !d.Allow {
		log.Info("token exchange denied by policy", "subject", subject.Summary(), "reason", d.Reason, "policy_revision", d.Revision)
		msg := "token exchange not allowed for " + subject.Summary()
		if d.Reason != "" {
			msg += ": " + d.Reason
		}
		h.fail(w, "denied", http.StatusForbidden, msg)
		return
	}

	sub, _ := subject.Claims["sub"].(string)
	if sub == "" {
		sub = subject.Summary()
	}
	tok, err := h.Minter.Mint(sub, subject.CacheClaims(), time.Duration(req.LifetimeSeconds)*time.Second)
	if err != nil {
		log.Error("token exchange: mint failed", "subject", subject.Summary(), "error", err)
		h.fail(w, "error", http.StatusInternalServerError, "could not issue a cache token")
		return
	}
	log.Info("cache token issued", "subject", subject.Summary(), "provider", subject.Provider,
		"idp_issuer", subject.Issuer, "idp_token_id", subject.TokenID, "token_id", tok.ID, "kid", tok.KeyID,
		"expires_at", tok.ExpiresAt.UTC().Format(time.RFC3339), "policy_revision", d.Revision)
	h.Metrics.result("issued")
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, Response{Token: tok.Raw, ExpiresAt: tok.ExpiresAt.UTC(), TokenID: tok.ID})
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
		Help: "Token exchange requests by result (issued, unauthenticated, revoked, re_exchange, denied, bad_request, error).",
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
