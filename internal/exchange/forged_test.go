package exchange_test

import (
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/flakegate/flakegate/internal/exchange"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/lestrrat-go/jwx/v2/jws"

	"github.com/flakegate/flakegate/internal/identity"
	"github.com/flakegate/flakegate/internal/tokens"
)

// cacheClaims is a well-formed cache token payload for the flake's CI job
// of the IdP subjectIss (a configured issuer: a cache token's subject is
// bound to it).
func cacheClaims(subjectIss, iss, aud string, iat, exp time.Time) map[string]any {
	s := &identity.Subject{Issuer: subjectIss, Provider: "github", Kind: "ci",
		Org: "omnicorp", Repo: "omnicorp/app", Ref: "refs/heads/main", RefProtected: true,
		Claims: map[string]any{"sub": "repo:omnicorp/app:ref:refs/heads/main"}}
	c := s.CacheClaims()
	c["iss"], c["aud"], c["sub"], c["jti"] = iss, aud, "repo:omnicorp/app:ref:refs/heads/main", "forged-1"
	c["iat"], c["nbf"], c["exp"] = iat.Unix(), iat.Unix(), exp.Unix()
	return c
}

// signJWT signs claims with key (a jwk private key) and the given header fields.
func signJWT(t *testing.T, claims map[string]any, alg jwa.SignatureAlgorithm, key jwk.Key, kid string) string {
	t.Helper()
	payload, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	hdr := jws.NewHeaders()
	_ = hdr.Set(jws.KeyIDKey, kid)
	_ = hdr.Set(jws.TypeKey, "JWT")
	signed, err := jws.Sign(payload, jws.WithKey(alg, key, jws.WithProtectedHeaders(hdr)))
	if err != nil {
		t.Fatal(err)
	}
	return string(signed)
}

// ourKey loads the stack's signing key from its key directory.
func ourKey(t *testing.T, st *stack) (jwk.Key, ed25519.PublicKey, string) {
	t.Helper()
	ring, err := tokens.LoadKeyRing(st.keyDir)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(ring.Signer().File)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(b)
	raw, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	k, err := jwk.FromRaw(raw)
	if err != nil {
		t.Fatal(err)
	}
	return k, raw.(ed25519.PrivateKey).Public().(ed25519.PublicKey), ring.Signer().ID
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

func TestForgedCacheTokensAreRefused(t *testing.T) {
	st := startStack(t, stackOptions{})
	real := st.mustExchange(t, st.ghToken("omnicorp/app", "refs/heads/main"))
	key, pub, kid := ourKey(t, st)
	now := time.Now()
	good := cacheClaims(st.github.Issuer(), publicURL, publicURL, now, now.Add(time.Hour))

	// Another flakegate's key (its own key directory), same issuer URL.
	foreignDir := t.TempDir()
	if _, _, err := tokens.GenerateKey(foreignDir, tokens.AlgEdDSA, now); err != nil {
		t.Fatal(err)
	}
	foreignRing, err := tokens.LoadKeyRing(foreignDir)
	if err != nil {
		t.Fatal(err)
	}
	foreignMinter, err := tokens.NewMinter(foreignRing, tokens.Config{Issuer: publicURL})
	if err != nil {
		t.Fatal(err)
	}
	foreignTok, err := foreignMinter.Mint("repo:omnicorp/app:ref:refs/heads/main", good["fg_subject"].(map[string]any), 0)
	if err != nil {
		t.Fatal(err)
	}
	foreignPEM, _ := os.ReadFile(foreignRing.Signer().File)
	block, _ := pem.Decode(foreignPEM)
	foreignRaw, _ := x509.ParsePKCS8PrivateKey(block.Bytes)
	foreignKey, _ := jwk.FromRaw(foreignRaw)

	// Tamper with a real token's payload: another flake, longer life.
	parts := strings.Split(real.Token, ".")
	var payload map[string]any
	pb, _ := base64.RawURLEncoding.DecodeString(parts[1])
	_ = json.Unmarshal(pb, &payload)
	payload["fg_subject"].(map[string]any)["repo"] = "omnicorp/super-duper-secure"
	payload["exp"] = float64(now.Add(1000 * time.Hour).Unix())
	tamperedPayload, _ := json.Marshal(payload)
	tampered := parts[0] + "." + b64(tamperedPayload) + "." + parts[2]

	goodPayload, _ := json.Marshal(good)
	noneTok := b64([]byte(`{"alg":"none","typ":"JWT","kid":"`+kid+`"}`)) + "." + b64(goodPayload) + "."
	hsInput := b64([]byte(`{"alg":"HS256","typ":"JWT","kid":"`+kid+`"}`)) + "." + b64(goodPayload)
	mac := hmac.New(sha256.New, pub)
	mac.Write([]byte(hsInput))
	hsTok := hsInput + "." + b64(mac.Sum(nil))

	withClaim := func(k string, v any) map[string]any {
		c := cacheClaims(st.github.Issuer(), publicURL, publicURL, now, now.Add(time.Hour))
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
		return c
	}

	tests := []struct{ name, token, reason string }{
		{"signed by another flakegate's key", foreignTok.Raw, "unknown key id"},
		{"another key claiming our kid", signJWT(t, good, jwa.EdDSA, foreignKey, kid), "signature invalid"},
		{"real token, payload tampered", tampered, "signature invalid"},
		{"alg none", noneTok, "algorithm"},
		{"HS256 keyed with our public key", hsTok, "algorithm"},
		{"our key, wrong audience", signJWT(t, withClaim("aud", "https://other-cache.example.com"), jwa.EdDSA, key, kid), "audience"},
		{"our key, unknown issuer", signJWT(t, cacheClaims(st.github.Issuer(), "https://other-cache.example.com", publicURL, now, now.Add(time.Hour)), jwa.EdDSA, key, kid), "unknown issuer"},
		{"our key, expired", signJWT(t, cacheClaims(st.github.Issuer(), publicURL, publicURL, now.Add(-3*time.Hour), now.Add(-2*time.Hour)), jwa.EdDSA, key, kid), "expired"},
		{"our key, no subject claims", signJWT(t, withClaim("fg_subject", nil), jwa.EdDSA, key, kid), "claims"},
		{"IdP key claiming to be the cache", func() string {
			c := cacheClaims(st.github.Issuer(), publicURL, publicURL, now, now.Add(time.Hour))
			return st.github.Mint(c)
		}(), "unknown key id"},
	}
	m, p := readFlake("omnicorp/app")
	if got := st.check(t, m, p, netrcAuth(real.Token)); got != 200 {
		t.Fatalf("real cache token: %d", got)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := st.check(t, m, p, netrcAuth(tt.token)); got != 401 {
				t.Errorf("read: %d, want 401", got)
			}
			if got := st.check(t, "PUT", p, bearer(tt.token)); got != 401 {
				t.Errorf("push: %d, want 401", got)
			}
			r := st.exchange(t, bearer(tt.token), "")
			if r.status != 401 {
				t.Errorf("exchange: %d %v, want 401", r.status, r.body)
			}
			if msg, _ := r.body["error"].(string); !strings.Contains(msg, tt.reason) {
				t.Errorf("exchange error %q, want the reason %q", msg, tt.reason)
			}
		})
	}
	// Sanity: the hand-made signing path yields accepted tokens with the right inputs.
	if got := st.check(t, m, p, netrcAuth(signJWT(t, good, jwa.EdDSA, key, kid))); got != 200 {
		t.Errorf("well-formed token signed by our key: %d, want 200", got)
	}
}

func TestKeyRotationThroughTheService(t *testing.T) {
	st := startStack(t, stackOptions{keyCheck: 50 * time.Millisecond})
	m, p := readFlake("omnicorp/app")
	ci := st.ghToken("omnicorp/app", "refs/heads/main")
	old := st.mustExchange(t, ci)
	oldRing, err := tokens.LoadKeyRing(st.keyDir)
	if err != nil {
		t.Fatal(err)
	}
	oldKey := oldRing.Signer()

	// The new key is trusted at the next reload (50ms) but signs only once
	// it is KeyActivationDelay (2 × 50ms) old.
	_, newKID, err := tokens.GenerateKey(st.keyDir, tokens.AlgES256, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	var fresh exchange.Response
	deadline := time.Now().Add(5 * time.Second)
	for {
		fresh = st.mustExchange(t, ci)
		if kidOf(t, fresh.Token) == newKID {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the new key never started signing")
		}
		time.Sleep(20 * time.Millisecond)
	}
	for name, tok := range map[string]string{"old": old.Token, "new": fresh.Token} {
		if got := st.check(t, m, p, netrcAuth(tok)); got != 200 {
			t.Errorf("%s-key token during rotation: %d", name, got)
		}
	}
	if jwks := st.jwks(t); !strings.Contains(jwks, oldKey.ID) || !strings.Contains(jwks, newKID) {
		t.Errorf("JWKS during rotation lacks a key: %s", jwks)
	}

	if err := os.Remove(oldKey.File); err != nil {
		t.Fatal(err)
	}
	st.pollStatus(t, 5*time.Second, 401, m, p, netrcAuth(old.Token))
	if got := st.check(t, m, p, netrcAuth(fresh.Token)); got != 200 {
		t.Errorf("new-key token after the old key was removed: %d", got)
	}
	if jwks := st.jwks(t); strings.Contains(jwks, oldKey.ID) {
		t.Errorf("JWKS still publishes the removed key: %s", jwks)
	}
	if entries, _ := filepath.Glob(filepath.Join(st.keyDir, "*.pem")); len(entries) != 1 {
		t.Errorf("key dir: %v", entries)
	}
}

func kidOf(t *testing.T, tok string) string {
	t.Helper()
	msg, err := jws.ParseString(tok)
	if err != nil {
		t.Fatal(err)
	}
	return msg.Signatures()[0].ProtectedHeaders().KeyID()
}

func (st *stack) jwks(t *testing.T) string {
	t.Helper()
	resp, err := http.Get(st.httpURL + exchange.JWKSPath)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var doc struct {
		Keys []map[string]any `json:"keys"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&doc); err != nil || resp.StatusCode != 200 {
		t.Fatalf("JWKS: %d %v", resp.StatusCode, err)
	}
	if _, err := jwk.ParseKey(mustJSON(doc.Keys[0])); err != nil {
		t.Errorf("JWKS key does not parse: %v", err)
	}
	b, _ := json.Marshal(doc)
	return string(b)
}

func mustJSON(v any) []byte { b, _ := json.Marshal(v); return b }
