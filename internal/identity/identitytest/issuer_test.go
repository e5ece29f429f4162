package identitytest_test

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/lestrrat-go/jwx/v2/jws"

	"github.com/flakegate/flakegate/internal/identity/identitytest"
)

// The helper's tokens must verify with an independent JOSE library against
// the JWKS it serves, for every algorithm it offers.
func TestMintVerifiesWithPublishedJWKS(t *testing.T) {
	for _, alg := range []string{"RS256", "RS512", "PS256", "PS384", "ES256", "ES384", "ES512", "EdDSA"} {
		t.Run(alg, func(t *testing.T) {
			iss := identitytest.NewIssuer(t, identitytest.WithAlg(alg))
			resp, err := http.Get(iss.JWKSURL())
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			set, err := jwk.Parse(body)
			if err != nil {
				t.Fatalf("parse served jwks: %v", err)
			}
			tok := iss.Mint(map[string]any{"sub": "x"})
			payload, err := jws.Verify([]byte(tok), jws.WithKeySet(set))
			if err != nil {
				t.Fatalf("verify minted token: %v", err)
			}
			var claims map[string]any
			if err := json.Unmarshal(payload, &claims); err != nil {
				t.Fatal(err)
			}
			if claims["iss"] != iss.Issuer() || claims["aud"] != identitytest.DefaultAudience || claims["sub"] != "x" {
				t.Fatalf("claims = %v", claims)
			}
		})
	}
}

func TestMintOptions(t *testing.T) {
	iss := identitytest.NewIssuer(t, identitytest.WithAlg("ES256"))
	tok := iss.Mint(map[string]any{"exp": nil}, identitytest.Header("kid", nil), identitytest.Unsigned())
	parts := strings.Split(tok, ".")
	if len(parts) != 3 || parts[2] != "" {
		t.Fatalf("unsigned token = %q", tok)
	}
	msg, err := jws.Parse([]byte(tok))
	if err != nil {
		t.Fatal(err)
	}
	h := msg.Signatures()[0].ProtectedHeaders()
	if h.Algorithm().String() != "none" || h.KeyID() != "" {
		t.Fatalf("header alg=%v kid=%q", h.Algorithm(), h.KeyID())
	}
	if strings.Contains(string(msg.Payload()), `"exp"`) {
		t.Fatalf("exp not removed: %s", msg.Payload())
	}

	old := iss.KeyID()
	if nk := iss.Rotate(); nk == old || iss.KeyID() != nk {
		t.Fatalf("rotate: old %s new %s current %s", old, nk, iss.KeyID())
	}
	if !strings.Contains(string(iss.JWKS()), old) {
		t.Fatal("old key unpublished by Rotate")
	}
	iss.RetireOldKeys()
	if strings.Contains(string(iss.JWKS()), old) {
		t.Fatal("old key still published after RetireOldKeys")
	}
	iss.FailJWKS(http.StatusBadGateway)
	resp, err := http.Get(iss.JWKSURL())
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadGateway || iss.JWKSRequests() != 1 {
		t.Fatalf("status %d requests %d", resp.StatusCode, iss.JWKSRequests())
	}
}
