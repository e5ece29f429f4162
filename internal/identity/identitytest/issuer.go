// Package identitytest is a fake OIDC token issuer for tests: it generates
// signing keys, serves them as a JWKS on an httptest server, and mints
// tokens — well-formed ones and deliberately broken ones for attack tests.
//
//	iss := identitytest.NewIssuer(t)                      // RS256 by default
//	cfg := iss.Config("github", identity.ClaimsGitHubActions)
//	tok := iss.Mint(identitytest.GitHubActionsClaims("omnicorp/app", "refs/heads/main"))
//
// Every token gets iss, iat, nbf, exp (5 minutes), jti and aud
// (DefaultAudience) unless the claims given set them; a claim set to nil is
// left out.
package identitytest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"hash"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flakegate/flakegate/internal/identity"
)

// DefaultAudience is the aud of minted tokens and the audience of Config.
const DefaultAudience = "https://cache.flakegate.test"

// JWKSPath is where the issuer's server publishes its keys.
const JWKSPath = "/.well-known/jwks"

// Issuer is a fake identity provider. Its methods are safe for concurrent use.
type Issuer struct {
	t   testing.TB
	iss string
	alg string
	now func() time.Time

	noKeyAlg bool
	server   *httptest.Server
	requests atomic.Int64

	mu         sync.Mutex
	keys       []*Key // published, oldest first; the last one signs
	jwksStatus int    // 0: serve normally
	seq        int
}

// Key is one signing key of an Issuer.
type Key struct {
	ID      string
	Alg     string
	Private crypto.Signer
}

// Public is the key's public half.
func (k *Key) Public() crypto.PublicKey { return k.Private.Public() }

// Option configures NewIssuer.
type Option func(*Issuer)

// WithAlg selects the signing algorithm: RS256 (default), RS384, RS512,
// PS256, PS384, PS512, ES256, ES384, ES512 or EdDSA.
func WithAlg(alg string) Option { return func(i *Issuer) { i.alg = alg } }

// WithIssuer sets the "iss" of minted tokens (default: the server's URL).
// The JWKS is still served by the issuer's own httptest server.
func WithIssuer(iss string) Option { return func(i *Issuer) { i.iss = iss } }

// WithClock makes Mint use now for iat/nbf/exp.
func WithClock(now func() time.Time) Option { return func(i *Issuer) { i.now = now } }

// WithoutKeyAlg leaves "alg" out of the published JWKS keys (as some IdPs do).
func WithoutKeyAlg() Option { return func(i *Issuer) { i.noKeyAlg = true } }

// NewIssuer generates a first key and starts the JWKS server; both are torn
// down when the test ends.
func NewIssuer(t testing.TB, opts ...Option) *Issuer {
	t.Helper()
	i := &Issuer{t: t, alg: "RS256", now: time.Now}
	for _, o := range opts {
		o(i)
	}
	i.server = httptest.NewServer(http.HandlerFunc(i.serveJWKS))
	t.Cleanup(i.server.Close)
	if i.iss == "" {
		i.iss = i.server.URL
	}
	i.Rotate()
	return i
}

// Issuer is the "iss" of minted tokens.
func (i *Issuer) Issuer() string { return i.iss }

// URL is the base URL of the issuer's httptest server.
func (i *Issuer) URL() string { return i.server.URL }

// JWKSURL is the URL of the published JWKS.
func (i *Issuer) JWKSURL() string { return i.server.URL + JWKSPath }

// Alg is the signing algorithm.
func (i *Issuer) Alg() string { return i.alg }

// Config is an issuers-file entry for this issuer with its JWKS URL; the
// audience defaults to DefaultAudience.
func (i *Issuer) Config(name, claims string, audience ...string) identity.IssuerConfig {
	if len(audience) == 0 {
		audience = []string{DefaultAudience}
	}
	return identity.IssuerConfig{
		Name: name, Issuer: i.iss, JWKSURL: i.JWKSURL(), Audience: audience, Claims: claims,
	}
}

// WithOrgs returns c bound to orgs (IssuerConfig.Orgs), as every issuer
// whose tokens name their org must be when a file has several issuers.
func WithOrgs(c identity.IssuerConfig, orgs ...string) identity.IssuerConfig {
	c.Orgs = orgs
	return c
}

// FileConfig writes the JWKS to dir and returns an entry using jwks_file.
func (i *Issuer) FileConfig(dir, name, claims string, audience ...string) identity.IssuerConfig {
	c := i.Config(name, claims, audience...)
	c.JWKSURL = ""
	c.JWKSFile = dir + "/" + name + ".jwks.json"
	i.WriteJWKS(c.JWKSFile)
	return c
}

// Current is the key that signs new tokens.
func (i *Issuer) Current() *Key {
	i.mu.Lock()
	defer i.mu.Unlock()
	return i.keys[len(i.keys)-1]
}

// KeyID is the kid of the current signing key.
func (i *Issuer) KeyID() string { return i.Current().ID }

// PublicKeyPEM is the current public key in PKIX PEM form (what an
// "HS256 signed with the public key" attack uses as the HMAC secret).
func (i *Issuer) PublicKeyPEM() []byte {
	der, err := x509.MarshalPKIXPublicKey(i.Current().Public())
	if err != nil {
		i.t.Fatalf("identitytest: marshal public key: %v", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

// Rotate generates a new key, publishes it next to the old ones and makes it
// the signing key. It returns the new kid.
func (i *Issuer) Rotate() string {
	i.t.Helper()
	priv, err := generate(i.alg)
	if err != nil {
		i.t.Fatalf("identitytest: %v", err)
	}
	i.mu.Lock()
	defer i.mu.Unlock()
	i.seq++
	k := &Key{ID: fmt.Sprintf("key-%d-%s", i.seq, randomHex(4)), Alg: i.alg, Private: priv}
	i.keys = append(i.keys, k)
	return k.ID
}

// RetireOldKeys unpublishes every key but the current one.
func (i *Issuer) RetireOldKeys() {
	i.mu.Lock()
	defer i.mu.Unlock()
	i.keys = i.keys[len(i.keys)-1:]
}

// FailJWKS makes the JWKS endpoint answer with status (e.g. 500); 0 restores it.
func (i *Issuer) FailJWKS(status int) {
	i.mu.Lock()
	defer i.mu.Unlock()
	i.jwksStatus = status
}

// JWKSRequests counts requests to the JWKS endpoint so far.
func (i *Issuer) JWKSRequests() int { return int(i.requests.Load()) }

// JWKS is the published key set as JSON.
func (i *Issuer) JWKS() []byte {
	i.mu.Lock()
	defer i.mu.Unlock()
	set := struct {
		Keys []map[string]any `json:"keys"`
	}{Keys: []map[string]any{}}
	for _, k := range i.keys {
		jk, err := PublicJWK(k.Public())
		if err != nil {
			i.t.Fatalf("identitytest: %v", err)
		}
		jk["kid"] = k.ID
		jk["use"] = "sig"
		if !i.noKeyAlg {
			jk["alg"] = k.Alg
		}
		set.Keys = append(set.Keys, jk)
	}
	out, err := json.Marshal(set)
	if err != nil {
		i.t.Fatalf("identitytest: marshal jwks: %v", err)
	}
	return out
}

// WriteJWKS writes the published key set to path (atomically).
func (i *Issuer) WriteJWKS(path string) {
	i.t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, i.JWKS(), 0o644); err != nil {
		i.t.Fatalf("identitytest: write jwks: %v", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		i.t.Fatalf("identitytest: write jwks: %v", err)
	}
}

func (i *Issuer) serveJWKS(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != JWKSPath {
		http.NotFound(w, r)
		return
	}
	i.requests.Add(1)
	i.mu.Lock()
	status := i.jwksStatus
	i.mu.Unlock()
	if status != 0 {
		http.Error(w, "jwks unavailable", status)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(i.JWKS())
}

// MintOption changes how one token is made.
type MintOption func(*mint)

type mint struct {
	header   map[string]any
	lifetime time.Duration
	key      *Key
	hmacKey  []byte
	unsigned bool
	sig      *string
}

// Header sets a protected header parameter; a nil value removes it (e.g.
// Header("kid", nil) for a token without a key id).
func Header(name string, value any) MintOption {
	return func(m *mint) { m.header[name] = value }
}

// Lifetime sets exp to iat + d (default 5 minutes, as GitHub does).
func Lifetime(d time.Duration) MintOption { return func(m *mint) { m.lifetime = d } }

// SignWith signs with k instead of the issuer's current key (kid and alg
// headers follow k unless Header overrides them).
func SignWith(k *Key) MintOption { return func(m *mint) { m.key = k } }

// HMAC signs with HS256 and secret (an attack: symmetric algorithms are refused).
func HMAC(secret []byte) MintOption { return func(m *mint) { m.hmacKey = secret } }

// Unsigned makes an "alg: none" token with an empty signature.
func Unsigned() MintOption { return func(m *mint) { m.unsigned = true } }

// Signature replaces the signature segment with s (already base64url).
func Signature(s string) MintOption { return func(m *mint) { m.sig = &s } }

// Mint returns a compact JWS. The claims map is not modified.
func (i *Issuer) Mint(claims map[string]any, opts ...MintOption) string {
	i.t.Helper()
	m := &mint{header: map[string]any{}, lifetime: 5 * time.Minute}
	for _, o := range opts {
		o(m)
	}
	key := m.key
	if key == nil {
		key = i.Current()
	}
	now := i.now()
	full := map[string]any{
		"iss": i.iss,
		"aud": DefaultAudience,
		"iat": now.Unix(),
		"nbf": now.Unix(),
		"exp": now.Add(m.lifetime).Unix(),
		"jti": randomHex(16),
	}
	for k, v := range claims {
		full[k] = v
	}
	header := map[string]any{"typ": "JWT", "alg": key.Alg, "kid": key.ID}
	switch {
	case m.unsigned:
		header["alg"] = "none"
	case m.hmacKey != nil:
		header["alg"] = "HS256"
	}
	for k, v := range m.header {
		header[k] = v
	}
	for _, mp := range []map[string]any{full, header} {
		for k, v := range mp {
			if v == nil {
				delete(mp, k)
			}
		}
	}
	hb, err := json.Marshal(header)
	if err != nil {
		i.t.Fatalf("identitytest: marshal header: %v", err)
	}
	cb, err := json.Marshal(full)
	if err != nil {
		i.t.Fatalf("identitytest: marshal claims: %v", err)
	}
	input := b64(hb) + "." + b64(cb)
	var sig []byte
	switch {
	case m.unsigned:
	case m.hmacKey != nil:
		mac := hmac.New(sha256.New, m.hmacKey)
		mac.Write([]byte(input))
		sig = mac.Sum(nil)
	default:
		sig, err = Sign(key.Alg, key.Private, []byte(input))
		if err != nil {
			i.t.Fatalf("identitytest: %v", err)
		}
	}
	if m.sig != nil {
		return input + "." + *m.sig
	}
	return input + "." + b64(sig)
}

// NewKey generates a standalone key (e.g. "a key the issuer never published").
func NewKey(t testing.TB, alg string) *Key {
	t.Helper()
	priv, err := generate(alg)
	if err != nil {
		t.Fatalf("identitytest: %v", err)
	}
	return &Key{ID: "stray-" + randomHex(4), Alg: alg, Private: priv}
}

func generate(alg string) (crypto.Signer, error) {
	switch alg {
	case "RS256", "RS384", "RS512", "PS256", "PS384", "PS512":
		return rsa.GenerateKey(rand.Reader, 2048)
	case "ES256":
		return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case "ES384":
		return ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	case "ES512":
		return ecdsa.GenerateKey(elliptic.P521(), rand.Reader)
	case "EdDSA":
		_, priv, err := ed25519.GenerateKey(rand.Reader)
		return priv, err
	}
	return nil, fmt.Errorf("generate key: unsupported alg %q", alg)
}

// Sign makes a JWS signature over input with alg (RS*, PS*, ES*, EdDSA).
func Sign(alg string, key crypto.Signer, input []byte) ([]byte, error) {
	var h crypto.Hash
	switch alg[len(alg)-3:] {
	case "256":
		h = crypto.SHA256
	case "384":
		h = crypto.SHA384
	case "512":
		h = crypto.SHA512
	}
	digest := func() []byte {
		var hh hash.Hash
		switch h {
		case crypto.SHA384:
			hh = sha512.New384()
		case crypto.SHA512:
			hh = sha512.New()
		default:
			hh = sha256.New()
		}
		hh.Write(input)
		return hh.Sum(nil)
	}
	switch k := key.(type) {
	case *rsa.PrivateKey:
		if strings.HasPrefix(alg, "PS") {
			return rsa.SignPSS(rand.Reader, k, h, digest(), &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash})
		}
		return rsa.SignPKCS1v15(rand.Reader, k, h, digest())
	case *ecdsa.PrivateKey:
		r, s, err := ecdsa.Sign(rand.Reader, k, digest())
		if err != nil {
			return nil, fmt.Errorf("sign %s: %w", alg, err)
		}
		size := (k.Curve.Params().BitSize + 7) / 8
		out := make([]byte, 2*size)
		r.FillBytes(out[:size])
		s.FillBytes(out[size:])
		return out, nil
	case ed25519.PrivateKey:
		return ed25519.Sign(k, input), nil
	}
	return nil, fmt.Errorf("sign %s: unsupported key %T", alg, key)
}

// PublicJWK renders a public key as a JWK (without kid/alg/use).
func PublicJWK(pub crypto.PublicKey) (map[string]any, error) {
	switch k := pub.(type) {
	case *rsa.PublicKey:
		return map[string]any{
			"kty": "RSA",
			"n":   b64(k.N.Bytes()),
			"e":   b64(big.NewInt(int64(k.E)).Bytes()),
		}, nil
	case *ecdsa.PublicKey:
		size := (k.Curve.Params().BitSize + 7) / 8
		x, y := make([]byte, size), make([]byte, size)
		k.X.FillBytes(x) //nolint:staticcheck // X/Y are the JWK coordinates
		k.Y.FillBytes(y) //nolint:staticcheck
		return map[string]any{"kty": "EC", "crv": k.Curve.Params().Name, "x": b64(x), "y": b64(y)}, nil
	case ed25519.PublicKey:
		return map[string]any{"kty": "OKP", "crv": "Ed25519", "x": b64(k)}, nil
	}
	return nil, fmt.Errorf("public jwk: unsupported key %T", pub)
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return fmt.Sprintf("%x", b)
}
