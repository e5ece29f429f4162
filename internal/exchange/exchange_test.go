package exchange_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/flakegate/flakegate/internal/exchange"

	"github.com/flakegate/flakegate/internal/identity/identitytest"
	"github.com/flakegate/flakegate/internal/login"
)

func TestExchangeEndpoint(t *testing.T) {
	st := startStack(t, stackOptions{lifetime: time.Hour, maxLifetime: 2 * time.Hour})
	ci := st.ghToken("omnicorp/app", "refs/heads/main")
	cacheTok := st.mustExchange(t, ci).Token
	expired := st.ghToken("omnicorp/app", "refs/heads/main", identitytest.Lifetime(-10*time.Minute))

	tests := []struct {
		name       string
		method     string
		auth, body string
		wantStatus int
		wantError  string        // substring of the JSON error
		wantLife   time.Duration // for 200: expires_at - now, ±5s
	}{
		{name: "CI token, default lifetime", auth: bearer(ci), wantStatus: 200, wantLife: time.Hour},
		{name: "CI token as netrc Basic password", auth: netrcAuth(ci), wantStatus: 200, wantLife: time.Hour},
		{name: "shorter lifetime asked", auth: bearer(ci), body: `{"lifetime_seconds": 600}`, wantStatus: 200, wantLife: 10 * time.Minute},
		{name: "longer than the maximum is capped", auth: bearer(ci), body: `{"lifetime_seconds": 86400}`, wantStatus: 200, wantLife: 2 * time.Hour},
		// The Checker's answer to an anonymous caller, as for any request
		// (before issue 15 the exchange said "missing token").
		{name: "no token", wantStatus: 401, wantError: "authentication required"},
		{name: "garbage token", auth: "Bearer not.a.jwt", wantStatus: 401, wantError: "invalid token"},
		{name: "expired IdP token", auth: bearer(expired), wantStatus: 401, wantError: "expired"},
		{name: "cache token cannot be exchanged again", auth: bearer(cacheTok), wantStatus: 403, wantError: "cannot be exchanged again"},
		{name: "cache token via netrc cannot be exchanged again", auth: netrcAuth(cacheTok), wantStatus: 403, wantError: "cannot be exchanged again"},
		{name: "unknown body field", auth: bearer(ci), body: `{"lifetime": "1h"}`, wantStatus: 400, wantError: "lifetime_seconds"},
		{name: "negative lifetime", auth: bearer(ci), body: `{"lifetime_seconds": -1}`, wantStatus: 400, wantError: "positive"},
		{name: "GET", method: "GET", auth: bearer(ci), wantStatus: 405, wantError: "use POST"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.method != "" {
				req, _ := http.NewRequest(tt.method, st.httpURL+exchange.TokenPath, nil)
				req.Header.Set("Authorization", tt.auth)
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				if resp.StatusCode != tt.wantStatus {
					t.Fatalf("status %d, want %d", resp.StatusCode, tt.wantStatus)
				}
				return
			}
			r := st.exchange(t, tt.auth, tt.body)
			if r.status != tt.wantStatus {
				t.Fatalf("status %d (%v), want %d", r.status, r.body, tt.wantStatus)
			}
			if ct := r.header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type %q", ct)
			}
			if r.header.Get("Cache-Control") != "no-store" {
				t.Errorf("Cache-Control %q, want no-store", r.header.Get("Cache-Control"))
			}
			if tt.wantStatus != 200 {
				msg, _ := r.body["error"].(string)
				if !strings.Contains(msg, tt.wantError) {
					t.Errorf("error %q, want it to contain %q", msg, tt.wantError)
				}
				if tt.wantStatus == 401 && !strings.Contains(r.header.Get("WWW-Authenticate"), "Bearer") {
					t.Errorf("401 without WWW-Authenticate")
				}
				return
			}
			life := time.Until(r.resp.ExpiresAt)
			if life < tt.wantLife-5*time.Second || life > tt.wantLife+5*time.Second {
				t.Errorf("token lives %s, want %s", life.Round(time.Second), tt.wantLife)
			}
			if r.resp.Token == "" || r.resp.TokenID == "" {
				t.Errorf("answer lacks token or token_id: %v", r.body)
			}
		})
	}
	if strings.Contains(st.logs.String(), ci) || strings.Contains(st.logs.String(), cacheTok) {
		t.Error("a token appears in the logs")
	}
}

func TestCacheTokenCarriesTheSameSubject(t *testing.T) {
	st := startStack(t, stackOptions{})
	ctx := context.Background()
	ci := st.ghToken("omnicorp/app", "refs/heads/main")
	cache := st.mustExchange(t, ci)

	direct, err := st.app.Verifier().Verify(ctx, ci)
	if err != nil {
		t.Fatal(err)
	}
	via, err := st.app.Verifier().Verify(ctx, cache.Token)
	if err != nil {
		t.Fatalf("cache token does not verify: %v", err)
	}
	if via.Via != "exchange" || direct.Via != "idp" {
		t.Errorf("via = %q / %q, want exchange / idp", via.Via, direct.Via)
	}
	if via.TokenID != cache.TokenID {
		t.Errorf("cache token id %q, answer said %q", via.TokenID, cache.TokenID)
	}
	// The policy input differs only in "via".
	a, b := direct.Input(), via.Input()
	delete(a, "via")
	delete(b, "via")
	for k := range a {
		if k == "claims" {
			continue
		}
		if a[k] != b[k] {
			t.Errorf("subject.%s: IdP %v, exchanged %v", k, a[k], b[k])
		}
	}
	if via.Claims["repository"] != "omnicorp/app" {
		t.Errorf("claims not carried: %v", via.Claims)
	}
	// And authz decides alike: the flake's CI reads its flake, other orgs' reads are 404.
	for _, tok := range []string{ci, cache.Token} {
		if got := st.check(t, "GET", "/omnicorp/app/"+testHash+".narinfo", netrcAuth(tok)); got != 200 {
			t.Errorf("read own flake: %d", got)
		}
		if got := st.check(t, "GET", "/evilcorp/tool/"+testHash+".narinfo", netrcAuth(tok)); got != 404 {
			t.Errorf("read other org's flake: %d, want 404", got)
		}
	}
}

// A GitHub Actions token lives 5 minutes; the cache token it is exchanged
// for keeps working after the IdP token is dead.
func TestCacheTokenOutlivesIdPToken(t *testing.T) {
	st := startStack(t, stackOptions{lifetime: time.Hour})
	// A 5-minute token near the end of its life: verifiers allow 60s of
	// clock skew, so it is refused from about 3s from now.
	now := time.Now()
	exp := now.Add(-identityDefaultSkew + 3*time.Second)
	claims := identitytest.GitHubActionsClaims("omnicorp/app", "refs/heads/main")
	claims["iat"], claims["nbf"], claims["exp"] = exp.Add(-5*time.Minute).Unix(), exp.Add(-5*time.Minute).Unix(), exp.Unix()
	idpTok := st.github.Mint(claims)

	method, path := readFlake("omnicorp/app")
	if got := st.check(t, method, path, netrcAuth(idpTok)); got != 200 {
		t.Fatalf("IdP token before expiry: %d", got)
	}
	cache := st.mustExchange(t, idpTok)
	if life := time.Until(cache.ExpiresAt); life < 59*time.Minute {
		t.Fatalf("cache token lives only %s: it must not be capped at the IdP token's life", life)
	}

	st.pollStatus(t, 10*time.Second, 401, method, path, netrcAuth(idpTok))
	if got := st.check(t, method, path, netrcAuth(cache.Token)); got != 200 {
		t.Errorf("cache token after the IdP token expired: %d, want 200", got)
	}
	if r := st.exchange(t, bearer(idpTok), ""); r.status != 401 {
		t.Errorf("exchange of the expired IdP token: %d, want 401", r.status)
	}
	// The cache token cannot renew itself either.
	if r := st.exchange(t, bearer(cache.Token), ""); r.status != 403 {
		t.Errorf("re-exchange of the cache token: %d, want 403", r.status)
	}
}

const identityDefaultSkew = 60 * time.Second

func TestRevocation(t *testing.T) {
	st := startStack(t, stackOptions{})
	method, path := readFlake("omnicorp/app")
	ci := st.ghToken("omnicorp/app", "refs/heads/main")
	first := st.mustExchange(t, ci)
	second := st.mustExchange(t, ci)
	other := st.mustExchange(t, st.ghToken("omnicorp/web", "refs/heads/main"))
	for _, tok := range []string{first.Token, second.Token} {
		if got := st.check(t, method, path, netrcAuth(tok)); got != 200 {
			t.Fatalf("before revocation: %d", got)
		}
	}

	t.Run("token id revoked within 1s", func(t *testing.T) {
		st.writePolicyFile(t, "denylist.yaml", "token_ids:\n  - "+first.TokenID+"\n")
		took := st.pollStatus(t, time.Second, 401, method, path, netrcAuth(first.Token))
		t.Logf("revoked after %s", took)
		if got := st.check(t, method, path, netrcAuth(second.Token)); got != 200 {
			t.Errorf("another token of the same subject: %d, want 200", got)
		}
	})
	t.Run("subject revoked within 1s: IdP and cache tokens, no new exchange", func(t *testing.T) {
		st.writePolicyFile(t, "denylist.yaml", "subjects:\n  - github:omnicorp/app\n")
		st.pollStatus(t, time.Second, 401, method, path, netrcAuth(second.Token))
		if got := st.check(t, method, path, netrcAuth(ci)); got != 401 {
			t.Errorf("IdP token of the revoked subject: %d, want 401", got)
		}
		if r := st.exchange(t, bearer(ci), ""); r.status != 401 || !strings.Contains(r.body["error"].(string), "revoked") {
			t.Errorf("exchange by a revoked subject: %d %v", r.status, r.body)
		}
		if got := st.check(t, "GET", "/omnicorp/web/"+testHash+".narinfo", netrcAuth(other.Token)); got != 200 {
			t.Errorf("unrelated subject: %d, want 200", got)
		}
	})
	t.Run("a broken denylist keeps the last good one", func(t *testing.T) {
		st.writePolicyFile(t, "denylist.yaml", "subjects: github:omnicorp/app\n")
		time.Sleep(500 * time.Millisecond) // give the reload a chance to (wrongly) lift it
		if got := st.check(t, method, path, netrcAuth(second.Token)); got != 401 {
			t.Errorf("after a broken edit: %d, want still 401", got)
		}
	})
	t.Run("lifted", func(t *testing.T) {
		st.writePolicyFile(t, "denylist.yaml", "token_ids: []\n")
		st.pollStatus(t, time.Second, 200, method, path, netrcAuth(second.Token))
	})
}

func TestLoginWithDeviceFlow(t *testing.T) {
	st := startStack(t, stackOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	netrc := t.TempDir() + "/nix/netrc"
	var out, errOut strings.Builder
	err := login.Run(ctx, login.Config{
		Cache: st.httpURL, Issuer: st.idp.Issuer, ClientID: st.idp.ClientID, Netrc: netrc,
		PublicKey: "cache.example.com-1:AAAA",
	}, login.Env{
		Getenv: func(string) string { return "" }, Stdout: &out, Stderr: &errOut,
		Prompt: func(p login.DevicePrompt) error { return st.idp.Visit(ctx, p.VerificationURIComplete) },
	})
	if err != nil {
		t.Fatalf("login: %v\n%s", err, errOut.String())
	}
	tok := readNetrcPassword(t, netrc, "127.0.0.1")
	// alice is in org omnicorp: she reads dev-environments and the trusted-only flake.
	for _, flake := range []string{"omnicorp/dev-environments", "omnicorp/super-duper-secure"} {
		m, p := readFlake(flake)
		if got := st.check(t, m, p, netrcAuth(tok)); got != 200 {
			t.Errorf("alice reads %s: %d", flake, got)
		}
	}
	m, p := pushFlake("omnicorp/dev-environments")
	if got := st.check(t, m, p, netrcAuth(tok)); got != 403 {
		t.Errorf("alice pushes: %d, want 403", got)
	}
	for _, want := range []string{"extra-substituters = " + st.httpURL + "/", "extra-trusted-public-keys = cache.example.com-1:AAAA", "netrc-file = " + netrc} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("printed nix.conf lines lack %q:\n%s", want, out.String())
		}
	}
	if strings.Contains(out.String()+errOut.String(), tok) {
		t.Error("login printed the token")
	}
}

// A lifetime_seconds beyond what a time.Duration holds gets the cap, like
// any long lifetime: × 1e9 wrapped, to the default lifetime or to a
// token already expired (review r6, 2026-12-05).
func TestHugeLifetimeGetsTheCap(t *testing.T) {
	st := startStack(t, stackOptions{})
	ci := st.ghToken("omnicorp/app", "refs/heads/main")
	for _, secs := range []string{"9223372037", "18446744074", "9223372036854775807"} {
		r := st.exchange(t, bearer(ci), `{"lifetime_seconds": `+secs+`}`)
		if r.status != 200 {
			t.Errorf("lifetime_seconds %s: %d %v", secs, r.status, r.body)
			continue
		}
		if life := time.Until(r.resp.ExpiresAt).Round(time.Minute); life != 12*time.Hour {
			t.Errorf("lifetime_seconds %s gave a token of %s, want the cap (12h)", secs, life)
		}
	}
}
