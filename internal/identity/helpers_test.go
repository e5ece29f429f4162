package identity_test

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/flakegate/flakegate/internal/identity"

	"github.com/flakegate/flakegate/internal/testutil"
)

// fakeClock is a settable clock shared by the verifier and the test issuers.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *fakeClock {
	return &fakeClock{t: time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

type env struct {
	t     *testing.T
	clock *fakeClock
	reg   *prometheus.Registry
	logs  *testutil.LogBuffer
	v     *identity.MultiVerifier
}

// newEnv starts a verifier for cfgs with a fake clock, a private metrics
// registry and captured JSON logs. opts may preset any field.
func newEnv(t *testing.T, clock *fakeClock, opts identity.Options, cfgs ...identity.IssuerConfig) *env {
	t.Helper()
	e := &env{t: t, clock: clock, reg: prometheus.NewRegistry(), logs: &testutil.LogBuffer{}}
	if opts.Now == nil {
		opts.Now = clock.Now
	}
	opts.Registerer = e.reg
	opts.Logger = slog.New(slog.NewJSONHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	v, err := identity.NewVerifier(context.Background(), &identity.Config{Issuers: cfgs}, opts)
	if err != nil {
		t.Fatalf("NewVerifier: %v", err)
	}
	t.Cleanup(v.Close)
	e.v = v
	return e
}

// metric returns the value of a counter or gauge series (0 if absent).
func (e *env) metric(name string, labels ...string) float64 {
	e.t.Helper()
	mfs, err := e.reg.Gather()
	if err != nil {
		e.t.Fatalf("gather: %v", err)
	}
	want := map[string]string{}
	for i := 0; i+1 < len(labels); i += 2 {
		want[labels[i]] = labels[i+1]
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	series:
		for _, m := range mf.GetMetric() {
			got := map[string]string{}
			for _, lp := range m.GetLabel() {
				got[lp.GetName()] = lp.GetValue()
			}
			for k, v := range want {
				if got[k] != v {
					continue series
				}
			}
			if m.Counter != nil {
				return m.GetCounter().GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	return 0
}

// mustVerify verifies tok and fails the test on error.
func (e *env) mustVerify(tok string) *identity.Subject {
	e.t.Helper()
	s, err := e.v.Verify(context.Background(), tok)
	if err != nil {
		e.t.Fatalf("Verify: %v", err)
	}
	return s
}

// mustRefuse verifies tok, expects refusal with reason, and checks the
// error never quotes the token.
func (e *env) mustRefuse(tok string, reason identity.Reason) error {
	e.t.Helper()
	s, err := e.v.Verify(context.Background(), tok)
	if err == nil {
		e.t.Fatalf("Verify accepted the token (subject %s); want refusal %q", s.Summary(), reason)
	}
	assertRefusal(e.t, err, tok, reason)
	return err
}

// mustBeUnavailable verifies tok and expects ErrKeysUnavailable (the
// issuer's keys cannot be fetched: 503, not 401).
func (e *env) mustBeUnavailable(tok string) {
	e.t.Helper()
	s, err := e.v.Verify(context.Background(), tok)
	if err == nil {
		e.t.Fatalf("Verify accepted the token (subject %s); want ErrKeysUnavailable", s.Summary())
	}
	if !errors.Is(err, identity.ErrKeysUnavailable) || errors.Is(err, identity.ErrInvalidToken) {
		e.t.Fatalf("error %v: want ErrKeysUnavailable and not ErrInvalidToken", err)
	}
	if got := identity.ReasonOf(err); got != identity.ReasonNoKeys {
		e.t.Errorf("reason = %q, want %q", got, identity.ReasonNoKeys)
	}
	assertNoSecret(e.t, "error text", err.Error(), tok)
}

// wantDegraded checks IssuerStatus and flakegate_identity_issuer_keys_ok of
// the issuer name.
func (e *env) wantDegraded(name string, degraded bool) {
	e.t.Helper()
	var st *identity.IssuerStatus
	for _, s := range e.v.Issuers() {
		if s.Name == name {
			st = &s
		}
	}
	if st == nil {
		e.t.Fatalf("issuer %s not in Issuers()", name)
	}
	if st.KeysOK == degraded || (st.Error != "") != degraded || st.Since.IsZero() {
		e.t.Errorf("issuer %s status %+v, want degraded=%v", name, *st, degraded)
	}
	inDegraded := false
	for _, s := range e.v.DegradedIssuers() {
		inDegraded = inDegraded || s.Name == name
	}
	if inDegraded != degraded {
		e.t.Errorf("issuer %s in DegradedIssuers() = %v, want %v", name, inDegraded, degraded)
	}
	want := 1.0
	if degraded {
		want = 0
	}
	if got := e.metric("flakegate_identity_issuer_keys_ok", "issuer", name); got != want {
		e.t.Errorf("flakegate_identity_issuer_keys_ok{issuer=%q} = %v, want %v", name, got, want)
	}
}

func assertRefusal(t *testing.T, err error, tok string, reason identity.Reason) {
	t.Helper()
	if !errors.Is(err, identity.ErrInvalidToken) {
		t.Errorf("error %v does not match ErrInvalidToken", err)
	}
	if got := identity.ReasonOf(err); got != reason {
		t.Errorf("reason = %q (%v), want %q", got, err, reason)
	}
	assertNoSecret(t, "error text", err.Error(), tok)
}

// assertNoSecret fails if text contains the token or any of its long parts.
func assertNoSecret(t *testing.T, what, text, tok string) {
	t.Helper()
	if tok == "" {
		return
	}
	if strings.Contains(text, tok) {
		t.Fatalf("%s contains the token", what)
	}
	for _, part := range strings.Split(tok, ".") {
		if len(part) >= 16 && strings.Contains(text, part) {
			t.Fatalf("%s contains a token segment", what)
		}
	}
}

// newStaticServer serves body at every path; it returns the base URL.
func newStaticServer(t *testing.T, body string) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(body))
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}
