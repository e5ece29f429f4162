// Package tokens issues flakegate cache tokens: JWTs signed by keys kept in
// a key directory, with the subject an identity provider vouched for, handed
// out by the token exchange and verified by authz like any other issuer's.
//
// Keys: every "*.pem" file of the key directory holds one private key
// (PKCS#8 Ed25519 or ECDSA P-256; "EC PRIVATE KEY" also read). The key id
// is the key's RFC 7638 JWK thumbprint. The newest key (by its PEM
// "Created" header, else the file's modification time) signs; every key in
// the directory verifies and is published in the JWKS. Rotation: add a new
// key (GenerateKey), wait at least the longest token lifetime, then delete
// the old file; tokens it signed stop verifying once it is gone. A key file
// made elsewhere works too (openssl genpkey -algorithm ed25519 -out
// keys/2026-05.pem; its mtime then says when it was created). With several
// authz replicas sharing the directory, a new key signs only after an
// activation delay (Config.ActivationDelay) so that every replica has loaded
// it by then.
package tokens

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"

	"github.com/flakegate/flakegate/internal/fsutil"
)

// Algorithms for new keys.
const (
	AlgEdDSA = "EdDSA" // Ed25519 (default)
	AlgES256 = "ES256" // ECDSA P-256
)

// createdHeader is the PEM header that records when a key was made.
const createdHeader = "Created"

// Key is one signing key of a KeyRing.
type Key struct {
	ID      string    // RFC 7638 thumbprint (base64url SHA-256)
	Alg     string    // EdDSA or ES256
	Created time.Time // PEM Created header, else file mtime
	File    string

	private jwk.Key
	public  jwk.Key
}

// KeyRing holds the keys of a key directory. It is safe for concurrent use;
// Reload picks up added and removed key files.
type KeyRing struct {
	dir string

	mu    sync.RWMutex
	keys  []*Key // newest first
	set   jwk.Set
	jwks  []byte
	state string // file names + sizes + mtimes, to skip unchanged reloads
}

// LoadKeyRing reads the key directory. It fails when the directory holds no
// usable key or any key file is broken (a half-rotated directory is refused
// rather than silently dropping a key).
func LoadKeyRing(dir string) (*KeyRing, error) {
	r := &KeyRing{dir: dir}
	if _, err := r.Reload(); err != nil {
		return nil, err
	}
	return r, nil
}

// Dir is the key directory.
func (r *KeyRing) Dir() string { return r.dir }

// Reload re-reads the key directory when its files changed. On error the
// old keys stay in use. It reports whether the key set changed.
func (r *KeyRing) Reload() (bool, error) {
	files, state, err := keyFiles(r.dir)
	if err != nil {
		return false, err
	}
	r.mu.RLock()
	same := r.keys != nil && state == r.state
	r.mu.RUnlock()
	if same {
		return false, nil
	}
	var keys []*Key
	seen := map[string]string{}
	for _, f := range files {
		k, err := readKeyFile(f)
		if err != nil {
			return false, err
		}
		if other, dup := seen[k.ID]; dup {
			return false, fmt.Errorf("key files %s and %s hold the same key", other, f)
		}
		seen[k.ID] = f
		keys = append(keys, k)
	}
	if len(keys) == 0 {
		return false, fmt.Errorf("key directory %s holds no *.pem key (create one with GenerateKey)", r.dir)
	}
	// Newest first; ties by file name (descending) so the choice is stable.
	slices.SortFunc(keys, func(a, b *Key) int {
		if c := b.Created.Compare(a.Created); c != 0 {
			return c
		}
		return strings.Compare(b.File, a.File)
	})
	set := jwk.NewSet()
	for _, k := range keys {
		if err := set.AddKey(k.public); err != nil {
			return false, fmt.Errorf("build JWKS: %w", err)
		}
	}
	doc, err := json.Marshal(set)
	if err != nil {
		return false, fmt.Errorf("encode JWKS: %w", err)
	}
	r.mu.Lock()
	r.keys, r.set, r.jwks, r.state = keys, set, doc, state
	r.mu.Unlock()
	return true, nil
}

// keyFiles lists *.pem files (dotfiles excluded) and a fingerprint of their state.
func keyFiles(dir string) ([]string, string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, "", fmt.Errorf("read key directory: %w", err)
	}
	var files []string
	var state strings.Builder
	for _, e := range entries {
		name := e.Name()
		if strings.HasPrefix(name, ".") || !strings.HasSuffix(name, ".pem") {
			continue
		}
		p := filepath.Join(dir, name)
		fi, err := os.Stat(p) // follows symlinks (Kubernetes secrets)
		if err != nil {
			return nil, "", fmt.Errorf("stat key file: %w", err)
		}
		if !fi.Mode().IsRegular() {
			continue
		}
		// The fingerprint is the content, not size and time: a key replaced
		// in place by one of the same size with its time kept (cp -p,
		// rsync -t; Ed25519 PEM files are all one size) was never reloaded,
		// so a compromised key kept signing (review r6, 2026-12-05). Key
		// files are a few hundred bytes.
		data, err := os.ReadFile(p)
		if err != nil {
			return nil, "", fmt.Errorf("read key file: %w", err)
		}
		files = append(files, p)
		fmt.Fprintf(&state, "%s %x\n", name, sha256.Sum256(data))
	}
	return files, state.String(), nil
}

func readKeyFile(path string) (*Key, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read key file: %w", err)
	}
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, fmt.Errorf("key file %s: no PEM block", path)
	}
	var raw any
	switch block.Type {
	case "PRIVATE KEY":
		raw, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case "EC PRIVATE KEY":
		raw, err = x509.ParseECPrivateKey(block.Bytes)
	default:
		return nil, fmt.Errorf("key file %s: PEM type %q is not a private key (want PRIVATE KEY)", path, block.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("key file %s: %w", path, err)
	}
	k, err := newKey(raw)
	if err != nil {
		return nil, fmt.Errorf("key file %s: %w", path, err)
	}
	k.File = path
	if c := block.Headers[createdHeader]; c != "" {
		t, err := time.Parse(time.RFC3339, c)
		if err != nil {
			return nil, fmt.Errorf("key file %s: %s header: %w", path, createdHeader, err)
		}
		k.Created = t
	} else {
		fi, err := os.Stat(path)
		if err != nil {
			return nil, fmt.Errorf("stat key file: %w", err)
		}
		k.Created = fi.ModTime()
	}
	return k, nil
}

// newKey wraps a private key (ed25519.PrivateKey or P-256 *ecdsa.PrivateKey).
func newKey(raw any) (*Key, error) {
	var alg jwa.SignatureAlgorithm
	switch k := raw.(type) {
	case ed25519.PrivateKey:
		alg = jwa.EdDSA
	case *ecdsa.PrivateKey:
		if k.Curve != elliptic.P256() {
			return nil, fmt.Errorf("ECDSA curve %s is not supported (want P-256)", k.Curve.Params().Name)
		}
		alg = jwa.ES256
	default:
		return nil, fmt.Errorf("key type %T is not supported (want Ed25519 or ECDSA P-256)", raw)
	}
	priv, err := jwk.FromRaw(raw)
	if err != nil {
		return nil, fmt.Errorf("wrap key: %w", err)
	}
	pub, err := priv.PublicKey()
	if err != nil {
		return nil, fmt.Errorf("public key: %w", err)
	}
	tp, err := pub.Thumbprint(crypto.SHA256)
	if err != nil {
		return nil, fmt.Errorf("key thumbprint: %w", err)
	}
	kid := base64.RawURLEncoding.EncodeToString(tp)
	for _, k := range []jwk.Key{priv, pub} {
		if err := errors.Join(
			k.Set(jwk.KeyIDKey, kid),
			k.Set(jwk.AlgorithmKey, alg),
			k.Set(jwk.KeyUsageKey, jwk.ForSignature),
		); err != nil {
			return nil, fmt.Errorf("set key attributes: %w", err)
		}
	}
	return &Key{ID: kid, Alg: alg.String(), private: priv, public: pub}, nil
}

// Signer is the newest key: the one that signs new tokens when keys
// activate at once (SignerAt with no delay).
func (r *KeyRing) Signer() *Key {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.keys[0]
}

// SignerAt is the key that signs at time now when a new key may sign only
// once it is delay old: the newest key created at or before now-delay, or
// the newest key when none is that old (a fresh key directory). The delay
// gives every authz replica sharing the directory time to load — and so to
// accept — a new key before any replica signs with it.
func (r *KeyRing) SignerAt(now time.Time, delay time.Duration) *Key {
	r.mu.RLock()
	defer r.mu.RUnlock()
	cutoff := now.Add(-delay)
	for _, k := range r.keys {
		if !k.Created.After(cutoff) {
			return k
		}
	}
	return r.keys[0]
}

// Keys lists the keys, newest first.
func (r *KeyRing) Keys() []*Key {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return slices.Clone(r.keys)
}

// PublicSet is the public key set (every key verifies). Do not modify it.
func (r *KeyRing) PublicSet() jwk.Set {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.set
}

// JWKS is the public key set as a JWKS document.
func (r *KeyRing) JWKS() []byte {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.jwks
}

// GenerateKey creates a new key file in dir (created 0700 if missing),
// written 0600 and atomically, and returns its path and key id. It becomes
// the signing key at the next Reload.
func GenerateKey(dir, alg string, now time.Time) (path, kid string, err error) {
	var raw any
	switch alg {
	case AlgEdDSA, "":
		_, priv, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return "", "", fmt.Errorf("generate Ed25519 key: %w", err)
		}
		raw = priv
	case AlgES256:
		priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return "", "", fmt.Errorf("generate P-256 key: %w", err)
		}
		raw = priv
	default:
		return "", "", fmt.Errorf("key algorithm %q: want %s or %s", alg, AlgEdDSA, AlgES256)
	}
	k, err := newKey(raw)
	if err != nil {
		return "", "", err
	}
	der, err := x509.MarshalPKCS8PrivateKey(raw)
	if err != nil {
		return "", "", fmt.Errorf("encode key: %w", err)
	}
	created := now.UTC() // full precision: two keys made in one second still have an order
	var buf bytes.Buffer
	if err := pem.Encode(&buf, &pem.Block{
		Type:    "PRIVATE KEY",
		Headers: map[string]string{createdHeader: created.Format(time.RFC3339Nano)},
		Bytes:   der,
	}); err != nil {
		return "", "", fmt.Errorf("encode key: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", "", fmt.Errorf("create key directory: %w", err)
	}
	name := created.Format("20060102T150405Z") + "-" + k.ID[:12] + ".pem"
	path = filepath.Join(dir, name)
	if err := fsutil.WriteFileAtomic(path, buf.Bytes(), 0o600); err != nil {
		return "", "", fmt.Errorf("write key file: %w", err)
	}
	return path, k.ID, nil
}

// EnsureKey generates a key in dir unless it already holds a *.pem file.
func EnsureKey(dir, alg string, now time.Time) (created bool, err error) {
	files, _, err := keyFiles(dir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return false, err
	}
	if len(files) > 0 {
		return false, nil
	}
	if _, _, err := GenerateKey(dir, alg, now); err != nil {
		return false, err
	}
	return true, nil
}
