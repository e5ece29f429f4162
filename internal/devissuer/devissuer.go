// Package devissuer is a LOCAL DEVELOPMENT token issuer: it keeps an ES256 key
// in a directory, publishes the public half as a JWKS file (for the issuers
// file's jwks_file), and mints GitHub-Actions-shaped, GitLab-CI-shaped and
// user tokens on demand. It exists so that the quickstart can show the whole
// flow on one machine without a real identity provider. The claim sets are
// internal/identity/claimshape's, the same the tests' issuer
// (identitytest) mints.
//
// NOT FOR PRODUCTION: whoever can read the key directory can mint any identity.
package devissuer

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/lestrrat-go/jwx/v2/jws"

	"github.com/flakegate/flakegate/internal/fsutil"
)

// File names inside the issuer directory.
const (
	KeyFile  = "dev-issuer-key.json" // private JWK, mode 0600
	JWKSFile = "dev-issuer-jwks.json"
)

// Issuer signs tokens with one private key.
type Issuer struct {
	key jwk.Key
}

// LoadOrCreate loads the key from dir, creating a new one (and the JWKS file)
// when there is none.
func LoadOrCreate(dir string) (*Issuer, error) {
	path := filepath.Join(dir, KeyFile)
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return create(dir)
	}
	if err != nil {
		return nil, fmt.Errorf("read dev issuer key: %w", err)
	}
	key, err := jwk.ParseKey(data)
	if err != nil {
		return nil, fmt.Errorf("parse dev issuer key %s: %w", path, err)
	}
	return &Issuer{key: key}, nil
}

func create(dir string) (*Issuer, error) {
	raw, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate dev issuer key: %w", err)
	}
	key, err := jwk.FromRaw(raw)
	if err != nil {
		return nil, fmt.Errorf("wrap dev issuer key: %w", err)
	}
	tp, err := key.Thumbprint(crypto.SHA256)
	if err != nil {
		return nil, fmt.Errorf("thumbprint dev issuer key: %w", err)
	}
	for k, v := range map[string]any{jwk.KeyIDKey: base64.RawURLEncoding.EncodeToString(tp), jwk.AlgorithmKey: jwa.ES256, jwk.KeyUsageKey: "sig"} {
		if err := key.Set(k, v); err != nil {
			return nil, fmt.Errorf("set %s: %w", k, err)
		}
	}
	iss := &Issuer{key: key}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create dev issuer dir: %w", err)
	}
	priv, err := json.MarshalIndent(key, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encode dev issuer key: %w", err)
	}
	jwks, err := iss.JWKS()
	if err != nil {
		return nil, err
	}
	if err := fsutil.WriteFileAtomic(filepath.Join(dir, JWKSFile), jwks, 0o644); err != nil {
		return nil, err
	}
	if err := fsutil.WriteFileAtomic(filepath.Join(dir, KeyFile), priv, 0o600); err != nil {
		return nil, err
	}
	return iss, nil
}

// JWKS returns the public key set document.
func (i *Issuer) JWKS() ([]byte, error) {
	pub, err := i.key.PublicKey()
	if err != nil {
		return nil, fmt.Errorf("derive public key: %w", err)
	}
	set := jwk.NewSet()
	if err := set.AddKey(pub); err != nil {
		return nil, fmt.Errorf("build jwks: %w", err)
	}
	out, err := json.MarshalIndent(set, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encode jwks: %w", err)
	}
	return out, nil
}

// Mint signs claims (iss, aud, iat, nbf, exp and jti are set here).
func (i *Issuer) Mint(issuer, audience string, lifetime time.Duration, claims map[string]any) (string, error) {
	now := time.Now()
	payload := map[string]any{}
	for k, v := range claims {
		payload[k] = v
	}
	jti := make([]byte, 12)
	if _, err := rand.Read(jti); err != nil {
		return "", fmt.Errorf("token id: %w", err)
	}
	payload["iss"] = issuer
	payload["aud"] = audience
	payload["iat"] = now.Unix()
	payload["nbf"] = now.Unix()
	payload["exp"] = now.Add(lifetime).Unix()
	payload["jti"] = base64.RawURLEncoding.EncodeToString(jti)
	body, err := json.Marshal(payload)
	if err != nil {
		return "", fmt.Errorf("encode claims: %w", err)
	}
	hdr := jws.NewHeaders()
	if err := hdr.Set(jws.KeyIDKey, i.key.KeyID()); err != nil {
		return "", err
	}
	if err := hdr.Set(jws.TypeKey, "JWT"); err != nil {
		return "", err
	}
	tok, err := jws.Sign(body, jws.WithKey(jwa.ES256, i.key, jws.WithProtectedHeaders(hdr)))
	if err != nil {
		return "", fmt.Errorf("sign token: %w", err)
	}
	return string(tok), nil
}
