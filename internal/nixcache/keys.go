package nixcache

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/nix-community/go-nix/pkg/narinfo/signature"
)

// SigningKey is an ed25519 key in Nix's secret-key format ("name:base64").
type SigningKey struct {
	sk  signature.SecretKey
	pub signature.PublicKey
}

// Name is the key name that prefixes signatures and the public key.
func (k SigningKey) Name() string { return k.pub.Name }

// PublicKey renders the public key as Nix's trusted-public-keys wants it.
func (k SigningKey) PublicKey() string { return k.pub.String() }

// ParseSecretKey parses a Nix secret key ("name:base64 of 64 bytes").
// Surrounding whitespace is ignored; the error never contains the key.
func ParseSecretKey(s string) (SigningKey, error) {
	s = strings.TrimSpace(s)
	name, _, ok := strings.Cut(s, ":")
	if !ok || name == "" {
		return SigningKey{}, errors.New("secret key: want name:base64")
	}
	sk, err := signature.LoadSecretKey(s)
	if err != nil {
		return SigningKey{}, fmt.Errorf("secret key %q: not a Nix ed25519 secret key (name:base64 of 64 bytes)", name)
	}
	return SigningKey{sk: sk, pub: sk.ToPublicKey()}, nil
}

// LoadKeyFile reads a secret key file as written by
// `nix-store --generate-binary-cache-key`.
func LoadKeyFile(path string) (SigningKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return SigningKey{}, fmt.Errorf("read signing key: %w", err)
	}
	k, err := ParseSecretKey(string(b))
	if err != nil {
		return SigningKey{}, fmt.Errorf("signing key file %s: %w", path, err)
	}
	return k, nil
}

// GenerateKey creates a new key pair and returns both halves in Nix's format.
func GenerateKey(name string) (secret, public string, err error) {
	if name == "" || strings.ContainsAny(name, ": \t\n") {
		return "", "", fmt.Errorf("key name %q: must be non-empty without ':' or spaces", name)
	}
	sk, pk, err := signature.GenerateKeypair(name, rand.Reader)
	if err != nil {
		return "", "", fmt.Errorf("generate ed25519 key: %w", err)
	}
	return sk.String(), pk.String(), nil
}

// DefaultKeyName is the name of a generated key: based on the host name so
// that two caches' keys do not share a name in a client's trusted keys.
func DefaultKeyName() string {
	h, err := os.Hostname()
	if err != nil {
		return "flakegate-1"
	}
	h = strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '.' {
			return r
		}
		return -1
	}, h)
	if h == "" {
		return "flakegate-1"
	}
	return h + "-flakegate-1"
}

// LoadOrCreateKey loads the key at path, or creates it (mode 0600, written
// atomically) with the given name when the file does not exist. created
// reports whether a new key was written.
func LoadOrCreateKey(path, name string) (k SigningKey, created bool, err error) {
	k, err = LoadKeyFile(path)
	if err == nil {
		return k, false, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return SigningKey{}, false, err
	}
	secret, _, err := GenerateKey(name)
	if err != nil {
		return SigningKey{}, false, err
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return SigningKey{}, false, fmt.Errorf("create key directory: %w", err)
	}
	tmp, err := os.CreateTemp(dir, ".signing-key-*")
	if err != nil {
		return SigningKey{}, false, fmt.Errorf("create signing key: %w", err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return SigningKey{}, false, fmt.Errorf("create signing key: %w", err)
	}
	if _, err := tmp.WriteString(secret); err != nil {
		tmp.Close()
		return SigningKey{}, false, fmt.Errorf("write signing key: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return SigningKey{}, false, fmt.Errorf("sync signing key: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return SigningKey{}, false, fmt.Errorf("write signing key: %w", err)
	}
	// Link, not rename: if another process created the key meanwhile, keep theirs.
	if err := os.Link(tmp.Name(), path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			k, err = LoadKeyFile(path)
			return k, false, err
		}
		return SigningKey{}, false, fmt.Errorf("install signing key: %w", err)
	}
	k, err = LoadKeyFile(path)
	return k, err == nil, err
}

// KeySet is the set of keys the server signs with. Every key signs, so that
// during a rotation clients trusting the old or the new key both verify.
type KeySet struct {
	keys []SigningKey
	id   string
}

// NewKeySet builds a key set; it needs at least one key and distinct names
// (Nix looks trusted keys up by name).
func NewKeySet(keys ...SigningKey) (*KeySet, error) {
	if len(keys) == 0 {
		return nil, errors.New("key set: no signing key")
	}
	h := sha256.New()
	seen := map[string]bool{}
	for _, k := range keys {
		if seen[k.Name()] {
			return nil, fmt.Errorf("key set: two keys are named %q", k.Name())
		}
		seen[k.Name()] = true
		h.Write([]byte(k.PublicKey() + "\n"))
	}
	return &KeySet{keys: keys, id: hex.EncodeToString(h.Sum(nil))[:16]}, nil
}

// ID identifies the set of public keys; a narinfo signed under another ID
// must be re-signed before it is served.
func (ks *KeySet) ID() string { return ks.id }

// PublicKeys lists the public keys in Nix's format.
func (ks *KeySet) PublicKeys() []string {
	out := make([]string, len(ks.keys))
	for i, k := range ks.keys {
		out[i] = k.PublicKey()
	}
	return out
}

// Sign returns one signature per key over n's fingerprint.
func (ks *KeySet) Sign(n *NarInfo) []string {
	fp := n.Fingerprint()
	sigs := make([]string, 0, len(ks.keys))
	for _, k := range ks.keys {
		s, err := k.sk.Sign(nil, fp)
		if err != nil {
			// ed25519 signing does not fail with a valid key; LoadSecretKey checked its size.
			continue
		}
		sigs = append(sigs, s.String())
	}
	return sigs
}

// SignedNarInfo renders n with the key set's signatures.
func (ks *KeySet) SignedNarInfo(n *NarInfo) []byte { return n.Render(ks.Sign(n)) }

// Resign parses a narinfo the server rendered before (under another key
// set) and renders it again with this key set's signatures.
func (ks *KeySet) Resign(text []byte) ([]byte, error) {
	n, err := ParseNarInfo(text)
	if err != nil {
		return nil, fmt.Errorf("re-sign stored narinfo: %w", err)
	}
	return ks.SignedNarInfo(n), nil
}

// VerifyNarInfo checks that text carries a valid signature by one of the
// public keys (Nix format). Tests and tools use it the way Nix would.
func VerifyNarInfo(text []byte, publicKeys []string) (bool, error) {
	n, err := ParseNarInfo(text)
	if err != nil {
		return false, err
	}
	var pks []signature.PublicKey
	for _, s := range publicKeys {
		pk, err := signature.ParsePublicKey(s)
		if err != nil {
			return false, fmt.Errorf("public key %q: %w", s, err)
		}
		pks = append(pks, pk)
	}
	fp := n.Fingerprint()
	for _, s := range n.Sigs {
		sig, err := signature.ParseSignature(s)
		if err != nil {
			continue
		}
		for _, pk := range pks {
			if pk.Verify(fp, sig) {
				return true, nil
			}
		}
	}
	return false, nil
}
