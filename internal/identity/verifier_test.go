package identity_test

import (
	"context"
	"testing"

	"github.com/flakegate/flakegate/internal/identity"
	"github.com/flakegate/flakegate/internal/identity/identitytest"
)

func TestEveryAllowedAlgorithm(t *testing.T) {
	for _, alg := range []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"} {
		for _, keyAlg := range []bool{true, false} {
			name := alg
			opts := []identitytest.Option{identitytest.WithAlg(alg)}
			if !keyAlg {
				name += "/jwk-without-alg"
				opts = append(opts, identitytest.WithoutKeyAlg())
			}
			t.Run(name, func(t *testing.T) {
				clock := newClock()
				iss := identitytest.NewIssuer(t, append(opts, identitytest.WithClock(clock.Now))...)
				e := newEnv(t, clock, identity.Options{}, iss.Config("github", identity.ClaimsGitHubActions))
				s := e.mustVerify(iss.Mint(ghClaims))
				if s.Repo != "omnicorp/app" {
					t.Fatalf("subject %+v", s)
				}
				// The same key, a broken signature.
				tok := iss.Mint(ghClaims)
				e.mustRefuse(tok[:len(tok)-4]+flip(tok[len(tok)-4:]), identity.ReasonBadSignature)
			})
		}
	}
}

// flip changes a base64url tail so that it still decodes (4 chars = 3 bytes).
func flip(s string) string {
	if s == "AAAA" {
		return "BBBB"
	}
	return "AAAA"
}

func TestTokenWithoutKID(t *testing.T) {
	clock := newClock()
	iss := identitytest.NewIssuer(t, identitytest.WithAlg("ES256"), identitytest.WithClock(clock.Now))
	e := newEnv(t, clock, identity.Options{}, iss.Config("github", identity.ClaimsGitHubActions))
	noKID := identitytest.Header("kid", nil)

	// Exactly one key fits: accepted.
	e.mustVerify(iss.Mint(ghClaims, noKID))
	// An alg the only key does not fit: no candidate.
	e.mustRefuse(iss.Mint(ghClaims, noKID, identitytest.Header("alg", "ES384")), identity.ReasonAmbiguousKey)

	// Two keys after a rotation: ambiguous, never "try each".
	iss.Rotate()
	if err := e.v.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	e.mustRefuse(iss.Mint(ghClaims, noKID), identity.ReasonAmbiguousKey)
	// With its kid the same token is fine.
	e.mustVerify(iss.Mint(ghClaims))
}

func TestNewVerifierRejectsInvalidConfig(t *testing.T) {
	_, err := identity.NewVerifier(context.Background(), &identity.Config{Issuers: []identity.IssuerConfig{{Name: "x"}}}, identity.Options{})
	if err == nil {
		t.Fatal("NewVerifier accepted an invalid config")
	}
}

func TestVerifyAfterClose(t *testing.T) {
	clock := newClock()
	iss := identitytest.NewIssuer(t, identitytest.WithClock(clock.Now))
	e := newEnv(t, clock, identity.Options{}, iss.Config("github", identity.ClaimsGitHubActions))
	e.v.Close()
	e.v.Close() // idempotent
	e.mustVerify(iss.Mint(ghClaims))
}
