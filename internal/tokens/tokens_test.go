package tokens

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/lestrrat-go/jwx/v2/jws"
	"github.com/lestrrat-go/jwx/v2/jwt"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func TestLoadKeyRing(t *testing.T) {
	tests := []struct {
		name    string
		setup   func(t *testing.T, dir string)
		wantErr string
		wantAlg string
	}{
		{name: "empty dir", setup: func(*testing.T, string) {}, wantErr: "holds no *.pem key"},
		{
			name: "ed25519 generated", wantAlg: "EdDSA",
			setup: func(t *testing.T, dir string) { mustGenerate(t, dir, AlgEdDSA, t0) },
		},
		{
			name: "es256 generated", wantAlg: "ES256",
			setup: func(t *testing.T, dir string) { mustGenerate(t, dir, AlgES256, t0) },
		},
		{
			name: "openssl-style EC PRIVATE KEY", wantAlg: "ES256",
			setup: func(t *testing.T, dir string) {
				k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
				der, _ := x509.MarshalECPrivateKey(k)
				writeFile(t, filepath.Join(dir, "k.pem"), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}))
			},
		},
		{
			name: "P-384 refused", wantErr: "want P-256",
			setup: func(t *testing.T, dir string) {
				k, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
				der, _ := x509.MarshalPKCS8PrivateKey(k)
				writeFile(t, filepath.Join(dir, "k.pem"), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
			},
		},
		{
			name: "public key file refused", wantErr: "not a private key",
			setup: func(t *testing.T, dir string) {
				writeFile(t, filepath.Join(dir, "k.pem"), pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: []byte{1}}))
			},
		},
		{
			name: "garbage next to a good key refused", wantErr: "no PEM block",
			setup: func(t *testing.T, dir string) {
				mustGenerate(t, dir, AlgEdDSA, t0)
				writeFile(t, filepath.Join(dir, "zz.pem"), []byte("not a key"))
			},
		},
		{
			name: "same key twice refused", wantErr: "hold the same key",
			setup: func(t *testing.T, dir string) {
				p := mustGenerate(t, dir, AlgEdDSA, t0)
				b, _ := os.ReadFile(p)
				writeFile(t, filepath.Join(dir, "copy.pem"), b)
			},
		},
		{
			name: "dotfiles and other extensions ignored", wantAlg: "EdDSA",
			setup: func(t *testing.T, dir string) {
				mustGenerate(t, dir, AlgEdDSA, t0)
				writeFile(t, filepath.Join(dir, ".tmp.pem"), []byte("junk"))
				writeFile(t, filepath.Join(dir, "README"), []byte("junk"))
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			tt.setup(t, dir)
			r, err := LoadKeyRing(dir)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := r.Signer().Alg; got != tt.wantAlg {
				t.Errorf("alg = %s, want %s", got, tt.wantAlg)
			}
		})
	}
}

func TestGenerateKeyFile(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "keys")
	p, kid := mustGenerateKID(t, dir, AlgEdDSA, t0)
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %o, want 600", fi.Mode().Perm())
	}
	r, err := LoadKeyRing(dir)
	if err != nil {
		t.Fatal(err)
	}
	if r.Signer().ID != kid || !r.Signer().Created.Equal(t0) {
		t.Errorf("loaded %s created %s, want %s created %s", r.Signer().ID, r.Signer().Created, kid, t0)
	}
	if created, err := EnsureKey(dir, AlgEdDSA, t0); err != nil || created {
		t.Errorf("EnsureKey on a dir with a key: created=%v err=%v", created, err)
	}
	empty := filepath.Join(t.TempDir(), "new")
	if created, err := EnsureKey(empty, AlgEdDSA, t0); err != nil || !created {
		t.Errorf("EnsureKey on a missing dir: created=%v err=%v", created, err)
	}
}

func TestJWKSPublishesEveryKeyWithoutPrivateParts(t *testing.T) {
	dir := t.TempDir()
	_, k1 := mustGenerateKID(t, dir, AlgEdDSA, t0)
	_, k2 := mustGenerateKID(t, dir, AlgES256, t0.Add(time.Hour))
	r, err := LoadKeyRing(dir)
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Keys []map[string]any `json:"keys"`
	}
	if err := json.Unmarshal(r.JWKS(), &doc); err != nil {
		t.Fatal(err)
	}
	kids := map[string]bool{}
	for _, k := range doc.Keys {
		kids[k["kid"].(string)] = true
		if _, ok := k["d"]; ok {
			t.Errorf("JWKS key %v carries a private part", k["kid"])
		}
		if k["use"] != "sig" || k["alg"] == nil {
			t.Errorf("JWKS key %v: use=%v alg=%v", k["kid"], k["use"], k["alg"])
		}
	}
	if len(doc.Keys) != 2 || !kids[k1] || !kids[k2] {
		t.Errorf("JWKS kids = %v, want %s and %s", kids, k1, k2)
	}
	if _, err := jwk.Parse(r.JWKS()); err != nil {
		t.Errorf("JWKS does not parse: %v", err)
	}
}

func TestMintLifetimes(t *testing.T) {
	dir := t.TempDir()
	mustGenerate(t, dir, AlgEdDSA, t0)
	r, err := LoadKeyRing(dir)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name          string
		life, max     time.Duration
		requested     time.Duration
		want          time.Duration
		wantConfigErr bool
	}{
		{name: "defaults: 1h", want: time.Hour},
		{name: "configured lifetime", life: 30 * time.Minute, want: 30 * time.Minute},
		{name: "shorter requested", requested: 10 * time.Minute, want: 10 * time.Minute},
		{name: "longer requested capped at max", life: time.Hour, max: 2 * time.Hour, requested: 48 * time.Hour, want: 2 * time.Hour},
		{name: "default max caps requests", requested: 1000 * time.Hour, want: DefaultMaxLifetime},
		{name: "lifetime above max refused", life: 3 * time.Hour, max: time.Hour, wantConfigErr: true},
		{name: "negative refused", life: -time.Second, wantConfigErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := NewMinter(r, Config{Issuer: "https://cache.example.com", Lifetime: tt.life, MaxLifetime: tt.max, Now: func() time.Time { return t0 }})
			if tt.wantConfigErr {
				if err == nil {
					t.Fatal("config accepted")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tok, err := m.Mint("repo:omnicorp/app", map[string]any{"fg": map[string]any{"provider": "github"}}, tt.requested)
			if err != nil {
				t.Fatal(err)
			}
			if got := tok.ExpiresAt.Sub(tok.IssuedAt); got != tt.want {
				t.Errorf("lifetime = %s, want %s", got, tt.want)
			}
			parsed, err := jwt.ParseString(tok.Raw, jwt.WithVerify(false), jwt.WithValidate(false))
			if err != nil {
				t.Fatal(err)
			}
			if !parsed.Expiration().Equal(tok.ExpiresAt) {
				t.Errorf("exp claim %s, want %s", parsed.Expiration(), tok.ExpiresAt)
			}
		})
	}
}

func TestMintedTokenVerifiesWithPublishedKeys(t *testing.T) {
	dir := t.TempDir()
	mustGenerate(t, dir, AlgEdDSA, t0)
	r, err := LoadKeyRing(dir)
	if err != nil {
		t.Fatal(err)
	}
	const iss = "https://cache.example.com"
	m, err := NewMinter(r, Config{Issuer: iss})
	if err != nil {
		t.Fatal(err)
	}
	tok, err := m.Mint("alice", map[string]any{"fg": map[string]any{"user": "alice"}}, 0)
	if err != nil {
		t.Fatal(err)
	}
	parsed, err := jwt.ParseString(tok.Raw, jwt.WithKeySet(r.PublicSet()), jwt.WithIssuer(iss), jwt.WithAudience(iss))
	if err != nil {
		t.Fatalf("minted token does not verify: %v", err)
	}
	if parsed.Subject() != "alice" || parsed.JwtID() != tok.ID || tok.ID == "" {
		t.Errorf("sub=%q jti=%q (token id %q)", parsed.Subject(), parsed.JwtID(), tok.ID)
	}
	msg, err := jws.ParseString(tok.Raw)
	if err != nil {
		t.Fatal(err)
	}
	h := msg.Signatures()[0].ProtectedHeaders()
	if h.KeyID() != r.Signer().ID || h.Type() != "JWT" || h.Algorithm().String() != "EdDSA" {
		t.Errorf("header kid=%q typ=%q alg=%q", h.KeyID(), h.Type(), h.Algorithm())
	}
	// Two tokens never share an id.
	tok2, _ := m.Mint("alice", nil, 0)
	if tok2.ID == tok.ID {
		t.Error("two tokens share a jti")
	}
	if _, err := m.Mint("alice", map[string]any{"exp": 1}, 0); err == nil {
		t.Error("reserved claim accepted")
	}
	if _, err := m.Mint("", nil, 0); err == nil {
		t.Error("empty subject accepted")
	}
}

func TestRotation(t *testing.T) {
	dir := t.TempDir()
	oldPath, oldKID := mustGenerateKID(t, dir, AlgEdDSA, t0)
	r, err := LoadKeyRing(dir)
	if err != nil {
		t.Fatal(err)
	}
	m, err := NewMinter(r, Config{Issuer: "https://c"})
	if err != nil {
		t.Fatal(err)
	}
	oldTok, err := m.Mint("s", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	if changed, err := r.Reload(); err != nil || changed {
		t.Fatalf("reload of an unchanged dir: changed=%v err=%v", changed, err)
	}

	// A new key is added: it signs; the old one still verifies.
	_, newKID := mustGenerateKID(t, dir, AlgEdDSA, t0.Add(24*time.Hour))
	if changed, err := r.Reload(); err != nil || !changed {
		t.Fatalf("reload after adding a key: changed=%v err=%v", changed, err)
	}
	newTok, err := m.Mint("s", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	if newTok.KeyID != newKID || oldTok.KeyID != oldKID {
		t.Fatalf("signing kids old=%s new=%s, want %s then %s", oldTok.KeyID, newTok.KeyID, oldKID, newKID)
	}
	for _, raw := range []string{oldTok.Raw, newTok.Raw} {
		if _, err := jwt.ParseString(raw, jwt.WithKeySet(r.PublicSet())); err != nil {
			t.Errorf("token does not verify during rotation: %v", err)
		}
	}

	// A broken file keeps the previous keys in service.
	writeFile(t, filepath.Join(dir, "broken.pem"), []byte("junk"))
	if _, err := r.Reload(); err == nil {
		t.Fatal("broken key file accepted")
	}
	if r.Signer().ID != newKID || len(r.Keys()) != 2 {
		t.Fatal("failed reload changed the keys")
	}
	os.Remove(filepath.Join(dir, "broken.pem"))

	// The old key is removed: its tokens stop verifying.
	if err := os.Remove(oldPath); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Reload(); err != nil {
		t.Fatal(err)
	}
	if _, err := jwt.ParseString(oldTok.Raw, jwt.WithKeySet(r.PublicSet())); err == nil {
		t.Error("token of a removed key still verifies")
	}
	if _, err := jwt.ParseString(newTok.Raw, jwt.WithKeySet(r.PublicSet())); err != nil {
		t.Errorf("token of the current key no longer verifies: %v", err)
	}
}

func mustGenerate(t *testing.T, dir, alg string, at time.Time) string {
	p, _ := mustGenerateKID(t, dir, alg, at)
	return p
}

func mustGenerateKID(t *testing.T, dir, alg string, at time.Time) (string, string) {
	t.Helper()
	p, kid, err := GenerateKey(dir, alg, at)
	if err != nil {
		t.Fatal(err)
	}
	return p, kid
}

func writeFile(t *testing.T, p string, b []byte) {
	t.Helper()
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestActivationDelay(t *testing.T) {
	dir := t.TempDir()
	_, oldKID := mustGenerateKID(t, dir, AlgEdDSA, t0)
	_, newKID := mustGenerateKID(t, dir, AlgEdDSA, t0.Add(time.Hour))
	r, err := LoadKeyRing(dir)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		now   time.Time
		delay time.Duration
		want  string
	}{
		{"no delay: newest", t0.Add(time.Hour), 0, newKID},
		{"new key too young", t0.Add(time.Hour + 10*time.Second), time.Minute, oldKID},
		{"new key old enough", t0.Add(time.Hour + time.Minute), time.Minute, newKID},
		{"no key old enough: newest", t0, 24 * time.Hour, newKID},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := NewMinter(r, Config{Issuer: "https://c", ActivationDelay: tt.delay, Now: func() time.Time { return tt.now }})
			if err != nil {
				t.Fatal(err)
			}
			tok, err := m.Mint("s", nil, 0)
			if err != nil {
				t.Fatal(err)
			}
			if tok.KeyID != tt.want {
				t.Errorf("signed with %s, want %s", tok.KeyID, tt.want)
			}
		})
	}
}

func TestKeysMadeInOneSecondKeepTheirOrder(t *testing.T) {
	dir := t.TempDir()
	for i := 0; i < 5; i++ {
		_, kid := mustGenerateKID(t, dir, AlgEdDSA, t0.Add(time.Duration(i)*time.Millisecond))
		r, err := LoadKeyRing(dir)
		if err != nil {
			t.Fatal(err)
		}
		if r.Signer().ID != kid {
			t.Fatalf("key %d: newest is %s, want the one just made (%s)", i, r.Signer().ID, kid)
		}
	}
}

// A key file replaced in place by a key of the same size with its time
// kept (cp -p, rsync -t; Ed25519 PEM files are all one size) was never
// reloaded: the replaced, perhaps compromised, key kept signing and
// verifying until a restart (review r6, 2026-12-05).
func TestKeyReplacedWithSameSizeAndTimeIsReloaded(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "key.pem")
	write := func() {
		_, priv, _ := ed25519.GenerateKey(rand.Reader)
		der, _ := x509.MarshalPKCS8PrivateKey(priv)
		if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write()
	mtime := time.Now().Add(-time.Hour).Truncate(time.Second)
	if err := os.Chtimes(path, mtime, mtime); err != nil {
		t.Fatal(err)
	}
	ring, err := LoadKeyRing(dir)
	if err != nil {
		t.Fatal(err)
	}
	oldKID := ring.Signer().ID
	write() // the admin replaces the compromised key
	if err := os.Chtimes(path, mtime, mtime); err != nil {
		t.Fatal(err)
	}
	changed, err := ring.Reload()
	if err != nil {
		t.Fatal(err)
	}
	if !changed || ring.Signer().ID == oldKID {
		t.Errorf("key file replaced (same size, mtime kept): Reload changed=%v, still signing and verifying with the old key %s", changed, oldKID)
	}
}
