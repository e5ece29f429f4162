package authz

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"testing"

	"github.com/flakegate/flakegate/internal/authz/authztest"
	"github.com/flakegate/flakegate/internal/identity"
	"github.com/flakegate/flakegate/internal/identity/identitytest"
	"github.com/flakegate/flakegate/internal/nixname"
	"github.com/flakegate/flakegate/internal/route"
	"github.com/flakegate/flakegate/internal/testutil"
)

// fakeClosures answers every scope with one closure (or an error) and
// counts the lookups.
type fakeClosures struct {
	closure *Closure
	err     error
	calls   int
}

func (f *fakeClosures) Closure(context.Context, *identity.Scope) (*Closure, error) {
	f.calls++
	return f.closure, f.err
}

// closureOf is a closure of n paths (store hashes), with their NAR files.
func closureOf(n int) (*Closure, []string) {
	hashes := make([]string, n)
	c := &Closure{Paths: map[string]struct{}{}, Nars: map[string]struct{}{}, Derivers: map[string]struct{}{}}
	for i := range hashes {
		h := fmt.Sprintf("%032d", i)
		h = "a" + h[1:] // nixbase32 digits and letters; 'a' keeps it valid
		hashes[i] = h
		c.Paths[h] = struct{}{}
	}
	c.Nars[closureNar] = struct{}{}
	return c, hashes
}

// scopedChecker is a Checker whose verifier trusts a "flakegate" issuer
// (the cache-token claims mapper) and a GitHub issuer, with the test
// policy, and a scoped token of omnicorp/app's CI plus a plain one.
func scopedChecker(t testing.TB, closures ClosureLookup) (c *Checker, scoped, plain string) {
	t.Helper()
	fg := identitytest.NewIssuer(t, identitytest.WithIssuer("https://cache.example.com"))
	gh := identitytest.NewIssuer(t)
	cfg := &identity.Config{Issuers: []identity.IssuerConfig{
		fg.Config("flakegate", identity.ClaimsFlakegate), gh.Config("github", identity.ClaimsGitHubActions),
	}}
	v, err := identity.NewVerifier(context.Background(), cfg, identity.Options{Logger: discardLogger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(v.Close)
	scope, err := identity.NewScope("omnicorp/app", []string{"/nix/store/" + testHash + "-system"})
	if err != nil {
		t.Fatal(err)
	}
	minter := *ciSubject
	minter.Issuer = gh.Issuer() // a configured IdP: a cache token's subject is bound to it
	claims := minter.CacheClaims()
	for k, val := range scope.Claims() {
		claims[k] = val
	}
	claims["sub"] = "repo:omnicorp/app:ref:refs/heads/main"
	plainClaims := minter.CacheClaims()
	plainClaims["sub"] = claims["sub"]
	return &Checker{
		Verifier: v, Policy: newTestEngine(t), Owners: staticOwners{{Org: "omnicorp", Name: "app"}, {Org: "omnicorp", Name: "other"}},
		Closures: closures, Logger: slog.New(slog.NewJSONHandler(io.Discard, nil)), Metrics: NewMetrics(nil),
	}, fg.Mint(claims), fg.Mint(plainClaims)
}

// The scope is enforced before the policy: in the closure the policy
// decides (a union read names only the scope's flake), outside it and in
// other flakes the 404 of an absent object, pushes and exchanges 403,
// closure failures 503; a plain token of the same subject is unaffected.
func TestCheckerScopedToken(t *testing.T) {
	closure, _ := closureOf(3)
	closure.Paths[testHash] = struct{}{}
	closure.Derivers[testHash] = struct{}{}
	fc := &fakeClosures{closure: closure}
	c, scoped, plain := scopedChecker(t, fc)
	ctx := context.Background()
	for _, tc := range []struct {
		method, path string
		want         int
		readable     []nixname.Flake
	}{
		{"GET", "/omnicorp/app/" + testHash + ".narinfo", 200, nil},
		{"HEAD", "/" + testHash + ".narinfo", 200, []nixname.Flake{{Org: "omnicorp", Name: "app"}}},
		{"GET", "/nar/" + closureNar, 200, []nixname.Flake{{Org: "omnicorp", Name: "app"}}},
		{"GET", "/omnicorp/app/log/" + testHash + "-app.drv", 200, nil},
		{"GET", "/omnicorp/app/" + otherHash + ".narinfo", 404, nil},
		{"GET", "/" + otherHash + ".narinfo", 404, nil},
		{"GET", "/omnicorp/other/" + testHash + ".narinfo", 404, nil},
		{"PUT", "/omnicorp/app/" + testHash + ".narinfo", 403, nil},
		{"POST", "/_flakegate/token", 403, nil},
		{"GET", "/nix-cache-info", 200, nil},
	} {
		res := c.Authorize(ctx, NewRequest(tc.method, tc.path, "Bearer "+scoped))
		if res.Status != tc.want || fmt.Sprint(res.Readable) != fmt.Sprint(tc.readable) {
			t.Errorf("%s %s: %d readable %v (%s), want %d readable %v", tc.method, tc.path, res.Status, res.Readable, res.Reason, tc.want, tc.readable)
		}
		if tc.want == 404 && res.Message != route.BodyNotFound {
			t.Errorf("%s %s: body %q, want the absent object's", tc.method, tc.path, res.Message)
		}
	}
	// The same subject unscoped reads the other flake (the 404 above is the scope's).
	if res := c.Authorize(ctx, NewRequest("GET", "/omnicorp/other/"+testHash+".narinfo", "Bearer "+plain)); res.Status != 200 {
		t.Errorf("plain token on the other flake: %d (%s)", res.Status, res.Reason)
	}
	// Fail closed when the closure cannot be had.
	fc.err = errors.New("blob server down")
	if res := c.Authorize(ctx, NewRequest("GET", "/omnicorp/app/"+testHash+".narinfo", "Bearer "+scoped)); res.Status != http.StatusServiceUnavailable {
		t.Errorf("closure lookup failing: %d, want 503", res.Status)
	}
	c.Closures = nil
	if res := c.Authorize(ctx, NewRequest("GET", "/omnicorp/app/"+testHash+".narinfo", "Bearer "+scoped)); res.Status != http.StatusServiceUnavailable {
		t.Errorf("no closure lookup configured: %d, want 503", res.Status)
	}
}

// BenchmarkCheckScoped is one narinfo decision with a plain cache token
// and with a scoped one whose cached closure holds 10,000 paths: the
// scope's cost is the set lookup and one more map in the policy input.
func BenchmarkCheckScoped(b *testing.B) {
	closure, hashes := closureOf(10000)
	c, scoped, plain := scopedChecker(b, &fakeClosures{closure: closure})
	for _, bc := range []struct{ name, prefix, tok string }{
		{"plain/flake", "/omnicorp/app/", plain},
		{"scoped-10k/flake", "/omnicorp/app/", scoped},
		{"plain/union", "/", plain},
		{"scoped-10k/union", "/", scoped},
	} {
		reqs := make([]Request, 64)
		for i := range reqs {
			reqs[i] = ParseCheckRequest(authztest.CheckRequest("GET", bc.prefix+hashes[i*149]+".narinfo", "Bearer "+bc.tok))
		}
		if res := c.Authorize(context.Background(), reqs[0]); res.Status != 200 {
			b.Fatalf("%s: %d %s", bc.name, res.Status, res.Reason)
		}
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			stop := testutil.ReportCPU(b)
			i := 0
			for b.Loop() {
				c.CheckRequest(context.Background(), reqs[i%len(reqs)])
				i++
			}
			stop()
		})
	}
}
