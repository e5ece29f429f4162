package identity_test

import (
	"context"
	"testing"
	"time"

	"github.com/flakegate/flakegate/internal/identity"
	"github.com/flakegate/flakegate/internal/identity/identitytest"
)

func TestCacheHit(t *testing.T) {
	clock := newClock()
	iss := identitytest.NewIssuer(t, identitytest.WithClock(clock.Now))
	e := newEnv(t, clock, identity.Options{}, iss.Config("github", identity.ClaimsGitHubActions))
	tok := iss.Mint(ghClaims)
	first := e.mustVerify(tok)
	second := e.mustVerify(tok)
	if first != second {
		t.Error("second Verify did not come from the cache")
	}
	if got := e.metric("flakegate_token_cache_hits_total"); got != 1 {
		t.Errorf("cache hits = %v, want 1", got)
	}
	if got := e.metric("flakegate_token_verifications_total", "result", "ok"); got != 2 {
		t.Errorf("ok verifications = %v, want 2", got)
	}
	// A different token (even of the same subject) is its own entry.
	e.mustVerify(iss.Mint(ghClaims))
	if got := e.metric("flakegate_token_cache_hits_total"); got != 1 {
		t.Errorf("cache hits = %v after a new token, want 1", got)
	}
	// A failed token is not cached: a second try fails the same way, uncached.
	bad := iss.Mint(map[string]any{"aud": "elsewhere"})
	e.mustRefuse(bad, identity.ReasonAudience)
	e.mustRefuse(bad, identity.ReasonAudience)
	if got := e.metric("flakegate_token_verifications_total", "result", string(identity.ReasonAudience)); got != 2 {
		t.Errorf("audience refusals = %v, want 2", got)
	}
}

func TestCacheHonoursExpiry(t *testing.T) {
	cases := []struct {
		name     string
		lifetime time.Duration
		cacheTTL time.Duration
		advance  time.Duration
		// wantHit: the second Verify is answered from the cache.
		wantHit bool
		// wantReason: "" when the second Verify succeeds.
		wantReason identity.Reason
	}{
		{"well before exp", 5 * time.Minute, 0, 4 * time.Minute, true, ""},
		{"past exp within skew: re-verified, still valid", 5 * time.Minute, 0, 5*time.Minute + 30*time.Second, false, ""},
		{"past exp beyond skew: refused", 5 * time.Minute, 0, 5*time.Minute + 61*time.Second, false, identity.ReasonExpired},
		{"cache TTL shorter than token: re-verified", time.Hour, time.Minute, 2 * time.Minute, false, ""},
		{"cache TTL shorter than token, within TTL", time.Hour, time.Minute, 30 * time.Second, true, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			clock := newClock()
			iss := identitytest.NewIssuer(t, identitytest.WithAlg("ES256"), identitytest.WithClock(clock.Now))
			e := newEnv(t, clock, identity.Options{CacheTTL: tc.cacheTTL}, iss.Config("github", identity.ClaimsGitHubActions))
			tok := iss.Mint(ghClaims, identitytest.Lifetime(tc.lifetime))
			e.mustVerify(tok)
			clock.Advance(tc.advance)
			_, err := e.v.Verify(context.Background(), tok)
			if tc.wantReason == "" && err != nil {
				t.Fatalf("second Verify: %v", err)
			}
			if tc.wantReason != "" {
				assertRefusal(t, err, tok, tc.wantReason)
			}
			hits := e.metric("flakegate_token_cache_hits_total")
			if (hits == 1) != tc.wantHit {
				t.Fatalf("cache hits = %v, want hit=%v", hits, tc.wantHit)
			}
		})
	}
}

func TestCacheBounded(t *testing.T) {
	clock := newClock()
	iss := identitytest.NewIssuer(t, identitytest.WithAlg("ES256"), identitytest.WithClock(clock.Now))
	e := newEnv(t, clock, identity.Options{CacheSize: 5}, iss.Config("github", identity.ClaimsGitHubActions))
	var toks []string
	for range 20 {
		tok := iss.Mint(ghClaims)
		toks = append(toks, tok)
		e.mustVerify(tok)
		if n := e.v.CacheLen(); n > 5 {
			t.Fatalf("cache holds %d entries, bound is 5", n)
		}
	}
	if n := e.v.CacheLen(); n != 5 {
		t.Fatalf("cache holds %d entries, want 5", n)
	}
	// Evicted or not, every token still verifies.
	for _, tok := range toks {
		e.mustVerify(tok)
	}

	// Disabled cache: nothing is kept, everything still verifies.
	d := newEnv(t, clock, identity.Options{CacheSize: -1}, iss.Config("github", identity.ClaimsGitHubActions))
	d.mustVerify(toks[0])
	d.mustVerify(toks[0])
	if n := d.v.CacheLen(); n != 0 || d.metric("flakegate_token_cache_hits_total") != 0 {
		t.Fatalf("disabled cache holds %d entries", n)
	}
}

func TestCacheDroppedWhenKeysChange(t *testing.T) {
	clock := newClock()
	iss := identitytest.NewIssuer(t, identitytest.WithClock(clock.Now))
	e := newEnv(t, clock, identity.Options{}, iss.Config("github", identity.ClaimsGitHubActions))
	tok := iss.Mint(ghClaims)
	e.mustVerify(tok)
	if e.v.CacheLen() != 1 {
		t.Fatal("token not cached")
	}
	// Keys change (a key is added): entries verified with the old set go;
	// the token is re-verified (and still valid: its key is still there).
	iss.Rotate()
	if err := e.v.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := e.v.CacheLen(); n != 0 {
		t.Fatalf("cache holds %d entries after a key change", n)
	}
	e.mustVerify(tok)
	if hits := e.metric("flakegate_token_cache_hits_total"); hits != 0 {
		t.Fatalf("cache hits = %v, want 0", hits)
	}
	// An unchanged refresh keeps the cache.
	if err := e.v.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	e.mustVerify(tok)
	if hits := e.metric("flakegate_token_cache_hits_total"); hits != 1 {
		t.Fatalf("cache hits = %v after an unchanged refresh, want 1", hits)
	}
}
