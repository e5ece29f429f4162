package identity_test

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"

	"github.com/flakegate/flakegate/internal/identity"
	"github.com/flakegate/flakegate/internal/identity/identitytest"
)

// FuzzVerify: no input panics the verifier, every refusal is an
// ErrInvalidToken with a reason, and the only token ever accepted is the one
// the issuer really signed (RS256 signatures are not malleable, and every
// byte of header and claims is covered by the signature).
func FuzzVerify(f *testing.F) {
	clock := newClock()
	iss := identitytest.NewIssuer(f, identitytest.WithClock(clock.Now))
	cfg := iss.Config("github", identity.ClaimsGitHubActions)
	v, err := identity.NewVerifier(context.Background(), &identity.Config{Issuers: []identity.IssuerConfig{cfg}},
		identity.Options{Now: clock.Now, Logger: slog.New(slog.DiscardHandler), EarlyRefreshGap: 1 << 62})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(v.Close)
	valid := iss.Mint(ghClaims)
	noKID := iss.Mint(ghClaims, identitytest.Header("kid", nil)) // valid too: the issuer has one key
	for _, seed := range []string{
		valid, noKID, "", "a.b.c", "..",
		iss.Mint(ghClaims, identitytest.Unsigned()),
		iss.Mint(ghClaims, identitytest.Header("jku", "http://127.0.0.1:1/")),
		iss.Mint(map[string]any{"exp": "soon", "aud": []any{1, nil}}),
		craft(`{"alg":"RS256","kid":"`+iss.KeyID()+`"}`, `{"iss":"`+iss.Issuer()+`","exp":1e308}`, "AAAA"),
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, tok string) {
		s, err := v.Verify(context.Background(), tok)
		if err != nil {
			if s != nil {
				t.Fatal("subject returned with an error")
			}
			if !errors.Is(err, identity.ErrInvalidToken) || identity.ReasonOf(err) == "" {
				t.Fatalf("error %v: not an ErrInvalidToken with a reason", err)
			}
			if len(tok) >= 16 && strings.Contains(err.Error(), tok) {
				t.Fatal("error quotes the token")
			}
			return
		}
		if tok != valid && tok != noKID {
			t.Fatalf("accepted a token the issuer did not sign: %q", tok)
		}
		if s.Repo != "omnicorp/app" {
			t.Fatalf("subject %+v", s)
		}
	})
}
