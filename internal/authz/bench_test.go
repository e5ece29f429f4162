package authz

import (
	"context"
	"io"
	"log/slog"
	"testing"

	"github.com/flakegate/flakegate/internal/identity"
	"github.com/flakegate/flakegate/internal/identity/identitytest"
	"github.com/flakegate/flakegate/internal/route"
)

// BenchmarkCheck measures one decision on the hot path: a token already in
// the verifier's cache, a prepared policy, the decision log line written
// (JSON, discarded) and metrics updated.
func BenchmarkCheck(b *testing.B) {
	iss := identitytest.NewIssuer(b)
	cfg := &identity.Config{Issuers: []identity.IssuerConfig{iss.Config("github", identity.ClaimsGitHubActions)}}
	v, err := identity.NewVerifier(context.Background(), cfg, identity.Options{Logger: discardLogger()})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(v.Close)
	tok := iss.Mint(identitytest.GitHubActionsClaims("omnicorp/app", "refs/heads/main"))
	c := &Checker{
		Verifier: v,
		Policy:   newTestEngine(b),
		Owners:   staticOwners{{Org: "evilcorp", Name: "tool"}, {Org: "omnicorp", Name: "app"}},
		Logger:   slog.New(slog.NewJSONHandler(io.Discard, nil)),
		Metrics:  NewMetrics(nil),
	}
	cases := []struct {
		name, method, path, auth string
	}{
		{"read_cached_token", "GET", "/omnicorp/app/" + testHash + ".narinfo", "Bearer " + tok},
		{"push_cached_token", "PUT", "/omnicorp/app/nar/" + testFile, "Bearer " + tok},
		{"union_two_owners", "GET", "/" + testHash + ".narinfo", "Bearer " + tok},
		{"anonymous_denied", "GET", "/omnicorp/app/" + testHash + ".narinfo", ""},
	}
	for _, cs := range cases {
		req := checkRequest(cs.method, cs.path, cs.auth)
		if resp := c.Check(context.Background(), req); resp.GetStatus() == nil {
			b.Fatal("no status")
		}
		b.Run(cs.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				c.Check(context.Background(), req)
			}
		})
		b.Run(cs.name+"_parallel", func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					c.Check(context.Background(), req)
				}
			})
		})
	}
}

var _ OwnersLookup = staticOwners(nil)
var _ = route.Flake{}
