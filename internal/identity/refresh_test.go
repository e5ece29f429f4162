package identity_test

import (
	"context"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwk"

	"github.com/flakegate/flakegate/internal/identity"
	"github.com/flakegate/flakegate/internal/identity/identitytest"
)

var ghClaims = identitytest.GitHubActionsClaims("omnicorp/app", "refs/heads/main")

// waitFor polls cond every 10ms for up to 5s (a generous deadline for a
// background refresh, not a performance assertion).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestKeyRotationAtIdP(t *testing.T) {
	clock := newClock()
	iss := identitytest.NewIssuer(t, identitytest.WithAlg("ES256"), identitytest.WithClock(clock.Now))
	e := newEnv(t, clock, identity.Options{}, iss.Config("github", identity.ClaimsGitHubActions))
	if n := iss.JWKSRequests(); n != 1 {
		t.Fatalf("JWKS fetched %d times at start, want 1", n)
	}
	oldTok := iss.Mint(ghClaims)
	e.mustVerify(oldTok)

	// The IdP rotates: a token with the new kid triggers an early refresh
	// and verifies; the old key is still published, so old tokens still work.
	oldKey := iss.Current()
	iss.Rotate()
	newTok := iss.Mint(ghClaims)
	s := e.mustVerify(newTok)
	if s.Repo != "omnicorp/app" {
		t.Fatalf("subject %+v", s)
	}
	if n := iss.JWKSRequests(); n != 2 {
		t.Fatalf("JWKS fetched %d times, want 2 (one early refresh)", n)
	}
	e.mustVerify(iss.Mint(ghClaims, identitytest.SignWith(oldKey)))

	// A second new kid within 30 s: no second early refresh, 401.
	iss.Rotate()
	third := iss.Mint(ghClaims)
	e.mustRefuse(third, identity.ReasonUnknownKeyID)
	if n := iss.JWKSRequests(); n != 2 {
		t.Fatalf("JWKS fetched %d times, want still 2 (rate limit)", n)
	}
	// After the gap it may refresh again.
	clock.Advance(31 * time.Second)
	e.mustVerify(third)
	if n := iss.JWKSRequests(); n != 3 {
		t.Fatalf("JWKS fetched %d times, want 3", n)
	}

	// The IdP retires old keys; after a refresh even the cached old token is refused.
	iss.RetireOldKeys()
	if err := e.v.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	e.mustRefuse(oldTok, identity.ReasonUnknownKeyID)
	e.mustRefuse(newTok, identity.ReasonUnknownKeyID)
	if got := e.metric("flakegate_jwks_keys", "issuer", "github"); got != 1 {
		t.Errorf("flakegate_jwks_keys = %v, want 1", got)
	}
}

func TestRefreshFailureKeepsOldKeys(t *testing.T) {
	clock := newClock()
	iss := identitytest.NewIssuer(t, identitytest.WithClock(clock.Now))
	e := newEnv(t, clock, identity.Options{}, iss.Config("github", identity.ClaimsGitHubActions))
	e.mustVerify(iss.Mint(ghClaims))

	for i, status := range []int{http.StatusInternalServerError, http.StatusNotFound} {
		iss.FailJWKS(status)
		err := e.v.Refresh(context.Background())
		if err == nil || !strings.Contains(err.Error(), "github") {
			t.Fatalf("Refresh with JWKS %d: err = %v", status, err)
		}
		// Old keys stay: a fresh (uncached) token still verifies.
		e.mustVerify(iss.Mint(ghClaims))
		if got := e.metric("flakegate_jwks_refresh_failures_total", "issuer", "github"); got != float64(i+1) {
			t.Fatalf("refresh failures = %v, want %d", got, i+1)
		}
	}
	if !strings.Contains(e.logs.String(), `"msg":"jwks refresh failed"`) || !strings.Contains(e.logs.String(), `"issuer":"github"`) {
		t.Errorf("refresh failure not logged with the issuer name:\n%s", e.logs)
	}

	// A JWKS that parses but has no usable key (an empty set, only an
	// encryption key) is a failure too, not "no keys from now on".
	iss.FailJWKS(0)
	for _, body := range []string{`{"keys":[]}`, `{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}`, `not json`} {
		srv := jwksServer(t, body)
		e2 := newEnv(t, clock, identity.Options{}, identity.IssuerConfig{
			Name: "bad", Issuer: "https://bad.example", JWKSURL: srv, Audience: []string{"x"}, Claims: identity.ClaimsOIDC})
		if got := e2.metric("flakegate_jwks_refresh_failures_total", "issuer", "bad"); got != 1 {
			t.Errorf("jwks %s: refresh failures = %v, want 1", body, got)
		}
	}
}

func jwksServer(t *testing.T, body string) string {
	t.Helper()
	srv := newStaticServer(t, body)
	return srv + "/jwks"
}

func TestIdPDownAtStartFailsClosedThenRecovers(t *testing.T) {
	clock := newClock()
	iss := identitytest.NewIssuer(t, identitytest.WithClock(clock.Now))
	iss.FailJWKS(http.StatusServiceUnavailable)
	e := newEnv(t, clock, identity.Options{}, iss.Config("github", identity.ClaimsGitHubActions))
	if got := e.metric("flakegate_jwks_refresh_failures_total", "issuer", "github"); got != 1 {
		t.Fatalf("refresh failures = %v, want 1", got)
	}
	tok := iss.Mint(ghClaims)
	// A valid token of an issuer whose keys cannot be fetched: an outage
	// (503 in authz), not an invalid token (401).
	e.mustBeUnavailable(tok)
	e.wantDegraded("github", true)

	// The IdP comes back: the background retry (1 s backoff) loads the keys
	// without any token having to ask for it.
	iss.FailJWKS(0)
	waitFor(t, "background JWKS retry", func() bool { return e.metric("flakegate_jwks_keys", "issuer", "github") == 1 })
	e.mustVerify(tok)
	e.wantDegraded("github", false)
}

// TestJWKSDownAfterRotation: the IdP rotates its key and its JWKS endpoint
// goes down. A token with the new kid cannot be verified: 503-class
// (ErrKeysUnavailable), the issuer is degraded, tokens with the loaded key
// still verify. Once the endpoint answers, the same token verifies; a kid
// missing from a freshly fetched set is an invalid token again.
func TestJWKSDownAfterRotation(t *testing.T) {
	clock := newClock()
	iss := identitytest.NewIssuer(t, identitytest.WithClock(clock.Now))
	e := newEnv(t, clock, identity.Options{}, iss.Config("github", identity.ClaimsGitHubActions))
	e.wantDegraded("github", false)
	oldKey := iss.Current()

	iss.Rotate()
	iss.FailJWKS(http.StatusBadGateway)
	newTok := iss.Mint(ghClaims)
	e.mustBeUnavailable(newTok) // the early refresh fails
	e.wantDegraded("github", true)
	e.mustBeUnavailable(newTok) // early refresh rate-limited: the issuer is still degraded
	e.mustVerify(iss.Mint(ghClaims, identitytest.SignWith(oldKey)))
	if !strings.Contains(e.logs.String(), `"msg":"issuer degraded`) {
		t.Errorf("degradation not logged:\n%s", e.logs)
	}

	iss.FailJWKS(0)
	clock.Advance(31 * time.Second)
	e.mustVerify(newTok)
	e.wantDegraded("github", false)

	// A kid nobody published, after a successful fetch: 401.
	clock.Advance(31 * time.Second)
	e.mustRefuse(iss.Mint(ghClaims, identitytest.Header("kid", "no-such-key")), identity.ReasonUnknownKeyID)
}

func TestNoKeysYetTriggersEarlyRefresh(t *testing.T) {
	clock := newClock()
	iss := identitytest.NewIssuer(t, identitytest.WithClock(clock.Now))
	iss.FailJWKS(http.StatusBadGateway)
	e := newEnv(t, clock, identity.Options{}, iss.Config("github", identity.ClaimsGitHubActions))
	iss.FailJWKS(0)
	e.mustVerify(iss.Mint(ghClaims)) // keys fetched on demand
}

func TestPeriodicRefresh(t *testing.T) {
	clock := newClock()
	iss := identitytest.NewIssuer(t, identitytest.WithClock(clock.Now))
	e := newEnv(t, clock, identity.Options{RefreshInterval: 20 * time.Millisecond}, iss.Config("github", identity.ClaimsGitHubActions))
	tok := iss.Mint(ghClaims)
	e.mustVerify(tok) // cached now
	iss.Rotate()
	iss.RetireOldKeys()
	// Without any request, the periodic refresh installs the new keys and
	// drops the cached token verified with the retired one.
	waitFor(t, "periodic refresh", func() bool {
		_, err := e.v.Verify(context.Background(), tok)
		return identity.ReasonOf(err) == identity.ReasonUnknownKeyID
	})
	e.mustVerify(iss.Mint(ghClaims))
}

func TestJWKSFile(t *testing.T) {
	clock := newClock()
	dir := t.TempDir()
	iss := identitytest.NewIssuer(t, identitytest.WithAlg("EdDSA"), identitytest.WithClock(clock.Now))
	cfg := iss.FileConfig(dir, "internal", identity.ClaimsOIDC)
	e := newEnv(t, clock, identity.Options{FileCheckInterval: 20 * time.Millisecond}, cfg)
	user := identitytest.OIDCUserClaims("alice")
	old := iss.Mint(user)
	e.mustVerify(old)

	// Rotate and rewrite the file: picked up by the mtime check.
	iss.Rotate()
	iss.RetireOldKeys()
	writeWithNewMtime(t, cfg.JWKSFile, iss.JWKS())
	waitFor(t, "jwks_file reload", func() bool {
		_, err := e.v.Verify(context.Background(), old)
		return identity.ReasonOf(err) == identity.ReasonUnknownKeyID
	})
	e.mustVerify(iss.Mint(user))

	// A broken file: old keys kept, failure counted once (not every check).
	writeWithNewMtime(t, cfg.JWKSFile, []byte("{broken"))
	waitFor(t, "failure counted", func() bool { return e.metric("flakegate_jwks_refresh_failures_total", "issuer", "internal") == 1 })
	time.Sleep(100 * time.Millisecond)
	if got := e.metric("flakegate_jwks_refresh_failures_total", "issuer", "internal"); got != 1 {
		t.Errorf("unchanged broken file counted %v times, want 1", got)
	}
	e.mustVerify(iss.Mint(user))

	// A missing file at start is a configuration error.
	missing := cfg
	missing.JWKSFile = filepath.Join(dir, "nope.json")
	_, err := identity.NewVerifier(context.Background(), &identity.Config{Issuers: []identity.IssuerConfig{missing}}, identity.Options{})
	if err == nil || !strings.Contains(err.Error(), "internal") {
		t.Fatalf("missing jwks_file: err = %v", err)
	}
}

func writeWithNewMtime(t *testing.T, path string, data []byte) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	// One change, seen at once: written and dated aside, then renamed over
	// the file. Written in place, a check between the write and Chtimes saw
	// two states (two mtimes) and counted one broken file twice (under -race
	// on a loaded machine).
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		t.Fatal(err)
	}
	// Coarse-mtime file systems: make sure the change is visible.
	mt := fi.ModTime().Add(time.Second)
	if err := os.Chtimes(tmp, mt, mt); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// Static issuers: the token exchange registers flakegate's own keys.
func TestAddIssuerStaticKeys(t *testing.T) {
	clock := newClock()
	gh := identitytest.NewIssuer(t, identitytest.WithClock(clock.Now))
	fg := identitytest.NewIssuer(t, identitytest.WithAlg("ES256"), identitytest.WithIssuer("https://cache.example.com"), identitytest.WithClock(clock.Now))
	e := newEnv(t, clock, identity.Options{}, gh.Config("github", identity.ClaimsGitHubActions))

	set, err := jwk.Parse(fg.JWKS())
	if err != nil {
		t.Fatal(err)
	}
	fgCfg := identity.IssuerConfig{Name: "flakegate", Issuer: fg.Issuer(), Audience: []string{identitytest.DefaultAudience}, Claims: identity.ClaimsFlakegate}
	if err := e.v.AddIssuer(fgCfg, set); err != nil {
		t.Fatalf("AddIssuer: %v", err)
	}
	if err := e.v.AddIssuer(fgCfg, set); err == nil {
		t.Fatal("AddIssuer accepted a duplicate")
	}
	withURL := fgCfg
	withURL.Name, withURL.Issuer, withURL.JWKSURL = "x", "https://x.example", "https://x.example/jwks"
	if err := e.v.AddIssuer(withURL, set); err == nil {
		t.Fatal("AddIssuer accepted static keys together with jwks_url")
	}

	idp := e.mustVerify(gh.Mint(ghClaims))
	claims := idp.CacheClaims()
	claims["sub"] = "exchanged"
	tok := fg.Mint(claims)
	s := e.mustVerify(tok)
	if s.Via != "exchange" || s.Issuer != gh.Issuer() || s.IssuerName != "flakegate" || s.Repo != "omnicorp/app" ||
		!s.RefProtected || s.Kind != "ci" || s.Provider != "github" || s.Claims["repository_id"] != "681237345" {
		t.Fatalf("exchanged subject = %+v", s)
	}
	if idp.TokenID == "" || s.ParentTokenID != idp.TokenID || s.TokenID == idp.TokenID {
		t.Fatalf("exchanged token: id %q, parent id %q; IdP token id %q", s.TokenID, s.ParentTokenID, idp.TokenID)
	}
	// The parent id is read only from flakegate's tokens: an IdP token with
	// the same fg_subject (and a parent_jti) of its own has none.
	forged := maps.Clone(ghClaims)
	forged[identity.CacheSubjectClaim] = claims[identity.CacheSubjectClaim]
	forged["parent_jti"] = idp.TokenID
	if f := e.mustVerify(gh.Mint(forged)); f.ParentTokenID != "" || f.Via != "idp" {
		t.Fatalf("IdP token with fg_subject: via %q, parent id %q; want idp and none", f.Via, f.ParentTokenID)
	}

	// Rotation of flakegate's keys through SetIssuerKeys drops cached tokens.
	fg.Rotate()
	fg.RetireOldKeys()
	set2, err := jwk.Parse(fg.JWKS())
	if err != nil {
		t.Fatal(err)
	}
	if err := e.v.SetIssuerKeys("flakegate", set2); err != nil {
		t.Fatal(err)
	}
	e.mustRefuse(tok, identity.ReasonUnknownKeyID)
	e.mustVerify(fg.Mint(claims))
	if err := e.v.SetIssuerKeys("github", set2); err == nil {
		t.Fatal("SetIssuerKeys replaced the keys of a jwks_url issuer")
	}
}
