package exchange_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/flakegate/flakegate/internal/authz"
	"github.com/flakegate/flakegate/internal/exchange"
	"github.com/flakegate/flakegate/internal/identity"
	"github.com/flakegate/flakegate/internal/policy"
	"github.com/flakegate/flakegate/internal/revoke"
	"github.com/flakegate/flakegate/internal/testutil"
	"github.com/flakegate/flakegate/internal/tokens"
)

// users is the verifier of these tests: a token is a user's name; "outage"
// is an identity provider whose keys cannot be fetched.
type users map[string]*identity.Subject

func (u users) Verify(_ context.Context, raw string) (*identity.Subject, error) {
	if raw == "outage" {
		return nil, errors.New("fetch JWKS of https://idp.example.com: connection refused")
	}
	if raw == "jwks-down" {
		return nil, &identity.TokenError{Reason: identity.ReasonNoKeys, Issuer: "idp"}
	}
	if s, ok := u[raw]; ok {
		return s, nil
	}
	return nil, &identity.TokenError{Reason: identity.ReasonMalformed, Detail: "unknown test token"}
}

func user(name, via string) *identity.Subject {
	return &identity.Subject{Authenticated: true, Issuer: "https://idp.example.com", Provider: "oidc",
		Kind: "user", Org: "omnicorp", User: name, Via: via, TokenID: "jti-" + name,
		Claims: map[string]any{"sub": name}, Expiry: time.Now().Add(5 * time.Minute)}
}

// exchangePolicy allows every exchange but mallory's (and never looks at
// via: the exchange refuses re-exchanges itself).
type exchangePolicy struct{}

func (exchangePolicy) Evaluate(_ context.Context, in map[string]any) (policy.Decision, error) {
	subject, _ := in["subject"].(map[string]any)
	if in["action"] != "exchange" || subject["authenticated"] != true {
		return policy.Decision{Reason: "exchange requires a valid token", Revision: "rev-1"}, nil
	}
	if subject["user"] == "mallory" {
		return policy.Decision{Reason: "mallory may not hold cache tokens", Revision: "rev-1"}, nil
	}
	return policy.Decision{Allow: true, Reason: "authenticated identity-provider token", Revision: "rev-1"}, nil
}

// denylist is a policy revision whose data.denylist revokes eve.
type denylist struct{}

func (denylist) Revision() string { return "rev-1" }
func (denylist) Data() map[string]any {
	return map[string]any{revoke.DataKey: map[string]any{"subjects": []any{"oidc:eve"}}}
}

// The token endpoint asks the process's Checker: a revoked token, a
// policy denial and an identity-provider outage are answered with the
// Checker's status and message (as JSON), logged as a decision like any
// Check and counted under the same metric labels.
func TestExchangeDecidedByChecker(t *testing.T) {
	logs := &testutil.LogBuffer{}
	log := slog.New(slog.NewJSONHandler(logs, nil))
	reg := prometheus.NewRegistry()
	checker := &authz.Checker{
		Verifier: users{
			"alice": user("alice", "idp"), "mallory": user("mallory", "idp"), "eve": user("eve", "idp"),
			"cache-token": user("alice", "exchange"),
		},
		Policy:       exchangePolicy{},
		SubjectCheck: revoke.NewChecker(denylist{}, log).Check,
		Logger:       log.With("log", "decision"),
		Metrics:      authz.NewMetrics(reg),
	}
	keyDir := t.TempDir()
	if _, err := tokens.EnsureKey(keyDir, tokens.AlgEdDSA, time.Now().Add(-time.Hour)); err != nil {
		t.Fatal(err)
	}
	keys, err := tokens.LoadKeyRing(keyDir)
	if err != nil {
		t.Fatal(err)
	}
	minter, err := tokens.NewMinter(keys, tokens.Config{Issuer: "https://cache.example.com"})
	if err != nil {
		t.Fatal(err)
	}
	h := &exchange.Handler{Checker: checker, Minter: minter, Keys: keys, Logger: log, Metrics: exchange.NewMetrics(reg)}

	tests := []struct {
		name       string
		token      string
		wantStatus int
		wantError  string // the JSON error, exactly
		wantReason string // substring of the decision line's reason
		wantResult string // the metric label
	}{
		{"allowed", "alice", 200, "", "authenticated identity-provider token", "issued"},
		{"revoked", "eve", 401, "invalid token: token revoked: subject oidc:eve is revoked: do not retry with this token; ask the cache's administrators", "token revoked", "unauthenticated"},
		{"denied by policy", "mallory", 403, "forbidden: mallory may not hold cache tokens", "mallory may not hold", "deny"},
		{"identity provider down", "outage", 503, "authorization service unavailable, try again later", "internal error", "error"},
		{"identity provider keys unavailable", "jwks-down", 503,
			"identity provider keys unavailable (issuer idp): the token cannot be verified right now, try again later",
			"identity provider keys unavailable", "error"},
		{"cache token, although the policy allows", "cache-token", 403,
			"a cache token cannot be exchanged again (its life cannot be extended): exchange a fresh identity-provider token",
			"authenticated identity-provider token", "re_exchange"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := len(logs.String())
			req := httptest.NewRequest(http.MethodPost, exchange.TokenPath, nil)
			req.Header.Set("Authorization", "Bearer "+tt.token)
			w := httptest.NewRecorder()
			h.ServeToken(w, req)
			if w.Code != tt.wantStatus {
				t.Fatalf("status %d, want %d: %s", w.Code, tt.wantStatus, w.Body)
			}
			var body map[string]string
			if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil {
				t.Fatalf("answer is not JSON: %q", w.Body)
			}
			if tt.wantStatus == 200 {
				if body["token"] == "" || body["token_id"] == "" {
					t.Errorf("answer %v", body)
				}
			} else if body["error"] != tt.wantError {
				t.Errorf("error %q, want %q", body["error"], tt.wantError)
			}
			if got := w.Header().Get("WWW-Authenticate"); (got != "") != (tt.wantStatus == 401) {
				t.Errorf("WWW-Authenticate %q on a %d", got, tt.wantStatus)
			}
			if got := w.Header().Get("Retry-After"); (got != "") != (tt.wantStatus == 503) {
				t.Errorf("Retry-After %q on a %d", got, tt.wantStatus)
			}

			// One decision line, as every Check writes.
			var decisions []map[string]any
			lines := logs.String()[before:]
			sc := bufio.NewScanner(strings.NewReader(lines))
			for sc.Scan() {
				var m map[string]any
				if json.Unmarshal(sc.Bytes(), &m) == nil && m["msg"] == "decision" {
					decisions = append(decisions, m)
				}
			}
			if len(decisions) != 1 {
				t.Fatalf("%d decision lines:\n%s", len(decisions), lines)
			}
			d := decisions[0]
			wantDecision := tt.wantStatus
			if tt.wantResult == "re_exchange" {
				wantDecision = 200 // the policy allowed; the exchange refused on its own
			}
			if d["action"] != "exchange" || d["path"] != exchange.TokenPath || d["status"] != float64(wantDecision) ||
				!strings.Contains(d["reason"].(string), tt.wantReason) {
				t.Errorf("decision line %v", d)
			}
			if tt.wantStatus == 503 && (d["level"] != "ERROR" || !strings.Contains(d["error"].(string), "connection refused") && !strings.Contains(d["error"].(string), "keys unavailable")) {
				t.Errorf("the outage is not logged with its cause: %v", d)
			}
			if strings.Contains(logs.String(), "Bearer") {
				t.Error("the log holds an Authorization header")
			}
		})
	}

	// The metrics: the Checker's decisions by its labels, and the
	// exchange's answers by the same labels (its own: issued, re_exchange).
	want := map[string]float64{
		`flakegate_authz_decisions_total{action="exchange",result="allow"}`:           2,
		`flakegate_authz_decisions_total{action="exchange",result="unauthenticated"}`: 1,
		`flakegate_authz_decisions_total{action="exchange",result="deny"}`:            1,
		`flakegate_authz_decisions_total{action="exchange",result="error"}`:           2,
		`flakegate_token_exchanges_total{result="issued"}`:                            1,
		`flakegate_token_exchanges_total{result="unauthenticated"}`:                   1,
		`flakegate_token_exchanges_total{result="deny"}`:                              1,
		`flakegate_token_exchanges_total{result="error"}`:                             2,
		`flakegate_token_exchanges_total{result="re_exchange"}`:                       1,
	}
	got := counters(t, reg)
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %v, want %v", k, got[k], v)
		}
	}
}

// counters renders every counter of reg as `name{label="value",…}` → value.
func counters(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			if m.GetCounter() == nil {
				continue
			}
			var labels []string
			for _, lp := range m.GetLabel() {
				labels = append(labels, lp.GetName()+`="`+lp.GetValue()+`"`)
			}
			out[mf.GetName()+"{"+strings.Join(labels, ",")+"}"] = m.GetCounter().GetValue()
		}
	}
	return out
}
