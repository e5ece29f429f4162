package identity_test

import (
	"context"
	"log/slog"
	"testing"

	"github.com/flakegate/flakegate/internal/identity"
	"github.com/flakegate/flakegate/internal/identity/identitytest"
)

func benchEnv(b *testing.B, alg string, cacheSize int) (*identity.MultiVerifier, string) {
	b.Helper()
	iss := identitytest.NewIssuer(b, identitytest.WithAlg(alg))
	cfg := iss.Config("github", identity.ClaimsGitHubActions)
	v, err := identity.NewVerifier(context.Background(), &identity.Config{Issuers: []identity.IssuerConfig{cfg}},
		identity.Options{CacheSize: cacheSize, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(v.Close)
	return v, iss.Mint(identitytest.GitHubActionsClaims("omnicorp/app", "refs/heads/main"))
}

// BenchmarkVerifyCached is the hot path: a token seen before.
func BenchmarkVerifyCached(b *testing.B) {
	v, tok := benchEnv(b, "RS256", 0)
	ctx := context.Background()
	if _, err := v.Verify(ctx, tok); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.SetBytes(int64(len(tok)))
	for b.Loop() {
		if _, err := v.Verify(ctx, tok); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkVerifyUncached is a full verification (cache disabled).
func BenchmarkVerifyUncached(b *testing.B) {
	for _, alg := range []string{"RS256", "ES256", "EdDSA"} {
		b.Run(alg, func(b *testing.B) {
			v, tok := benchEnv(b, alg, -1)
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				if _, err := v.Verify(ctx, tok); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
