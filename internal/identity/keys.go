package identity

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
	"math/big"
	"slices"
	"sort"
	"strings"

	"github.com/lestrrat-go/jwx/v2/jwk"
)

// minRSABits is the smallest RSA modulus accepted for a verification key.
const minRSABits = 2048

// algSpec describes one allowed JWS algorithm. Only asymmetric algorithms
// exist here: "none" and HS* are never accepted.
type algSpec struct {
	kty   string // RSA, EC or OKP
	hash  crypto.Hash
	pss   bool
	curve elliptic.Curve // EC only
}

var allowedAlgs = map[string]algSpec{
	"RS256": {kty: "RSA", hash: crypto.SHA256},
	"RS384": {kty: "RSA", hash: crypto.SHA384},
	"RS512": {kty: "RSA", hash: crypto.SHA512},
	"PS256": {kty: "RSA", hash: crypto.SHA256, pss: true},
	"PS384": {kty: "RSA", hash: crypto.SHA384, pss: true},
	"PS512": {kty: "RSA", hash: crypto.SHA512, pss: true},
	"ES256": {kty: "EC", hash: crypto.SHA256, curve: elliptic.P256()},
	"ES384": {kty: "EC", hash: crypto.SHA384, curve: elliptic.P384()},
	"ES512": {kty: "EC", hash: crypto.SHA512, curve: elliptic.P521()},
	"EdDSA": {kty: "OKP"},
}

// verifyKey is one usable public key of an issuer.
type verifyKey struct {
	kid string
	alg string // the JWK's "alg"; "" when the JWK does not restrict it
	kty string
	pub crypto.PublicKey // *rsa.PublicKey, *ecdsa.PublicKey or ed25519.PublicKey
}

// fits says why k cannot verify a token signed with alg ("" if it can).
func (k *verifyKey) fits(alg string, spec algSpec) string {
	if k.alg != "" && k.alg != alg {
		return "key is for " + k.alg
	}
	if k.kty != spec.kty {
		return "key type " + k.kty + " cannot verify " + alg
	}
	if spec.curve != nil && k.pub.(*ecdsa.PublicKey).Curve != spec.curve {
		return "key curve does not match " + alg
	}
	return ""
}

// verify checks sig over input. It never panics on malformed signatures.
func (k *verifyKey) verify(spec algSpec, input string, sig []byte) bool {
	var digest []byte
	if spec.hash != 0 {
		h := spec.hash.New()
		h.Write([]byte(input))
		digest = h.Sum(nil)
	}
	switch pub := k.pub.(type) {
	case *rsa.PublicKey:
		if spec.pss {
			return rsa.VerifyPSS(pub, spec.hash, digest, sig, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash}) == nil
		}
		return rsa.VerifyPKCS1v15(pub, spec.hash, digest, sig) == nil
	case *ecdsa.PublicKey:
		size := (pub.Curve.Params().BitSize + 7) / 8
		if len(sig) != 2*size {
			return false
		}
		r := new(big.Int).SetBytes(sig[:size])
		s := new(big.Int).SetBytes(sig[size:])
		return ecdsa.Verify(pub, digest, r, s)
	case ed25519.PublicKey:
		return len(sig) == ed25519.SignatureSize && ed25519.Verify(pub, []byte(input), sig)
	}
	return false
}

// keySet is an issuer's usable keys at one moment. It is immutable; a
// refresh that changes the keys replaces it (and so invalidates the cached
// tokens verified with the old one).
type keySet struct {
	byKID  map[string]*verifyKey // a kid listed twice maps to nil (refused)
	all    []*verifyKey
	digest [32]byte // identity of the content, to detect "unchanged"
}

// kids lists the key ids, for logs.
func (ks *keySet) kids() []string {
	out := make([]string, 0, len(ks.all))
	for _, k := range ks.all {
		out = append(out, k.kid)
	}
	return out
}

// errNoUsableKeys: a JWKS without a single key we could verify with.
var errNoUsableKeys = errors.New("no usable signing keys")

// parseKeySet turns JWKS JSON into a keySet.
func parseKeySet(data []byte) (*keySet, []string, error) {
	// Keys jwx cannot parse (an unknown kty, say) are skipped rather than
	// failing the whole set; a set left with no usable key is an error below.
	set, err := jwk.Parse(data, jwk.WithIgnoreParseError(true))
	if err != nil {
		return nil, nil, fmt.Errorf("parse jwks: %w", err)
	}
	return newKeySet(set)
}

// newKeySet keeps the keys of set that can verify an allowed algorithm.
// Skipped keys are described in the returned notes (for a warning log);
// private keys contribute only their public half. A set with no usable key
// is an error.
func newKeySet(set jwk.Set) (*keySet, []string, error) {
	ks := &keySet{byKID: map[string]*verifyKey{}}
	var notes []string
	dupes := map[string]bool{}
	for i := 0; i < set.Len(); i++ {
		jk, _ := set.Key(i)
		k, why := usableKey(jk)
		if k == nil {
			notes = append(notes, fmt.Sprintf("key %d (kid %q) skipped: %s", i, jk.KeyID(), why))
			continue
		}
		if k.kid != "" {
			if _, seen := ks.byKID[k.kid]; seen {
				dupes[k.kid] = true
			}
			ks.byKID[k.kid] = k
		}
		ks.all = append(ks.all, k)
	}
	for kid := range dupes {
		notes = append(notes, fmt.Sprintf("kid %q appears more than once: refused", kid))
		ks.byKID[kid] = nil
	}
	if len(ks.all) == 0 {
		return nil, notes, errNoUsableKeys
	}
	d, err := digestKeys(ks.all)
	if err != nil {
		return nil, notes, err
	}
	ks.digest = d
	return ks, notes, nil
}

func usableKey(jk jwk.Key) (*verifyKey, string) {
	if u := jk.KeyUsage(); u != "" && u != "sig" {
		return nil, "use is " + u
	}
	if ops := jk.KeyOps(); len(ops) > 0 && !slices.Contains(ops, jwk.KeyOpVerify) {
		return nil, "key_ops does not allow verify"
	}
	alg := ""
	if a := jk.Algorithm(); a != nil {
		alg = a.String()
	}
	if _, ok := allowedAlgs[alg]; alg != "" && !ok {
		return nil, "alg " + alg + " is not allowed"
	}
	raw, err := jwk.PublicRawKeyOf(jk)
	if err != nil {
		return nil, "no public key: " + err.Error()
	}
	k := &verifyKey{kid: jk.KeyID(), alg: alg, pub: raw}
	switch pub := raw.(type) {
	case *rsa.PublicKey:
		if pub.N.BitLen() < minRSABits {
			return nil, fmt.Sprintf("RSA key of %d bits (minimum %d)", pub.N.BitLen(), minRSABits)
		}
		k.kty = "RSA"
	case *ecdsa.PublicKey:
		switch pub.Curve {
		case elliptic.P256(), elliptic.P384(), elliptic.P521():
		default:
			return nil, "unsupported curve"
		}
		if _, err := pub.ECDH(); err != nil { // rejects points off the curve
			return nil, "invalid EC point"
		}
		k.kty = "EC"
	case ed25519.PublicKey:
		if len(pub) != ed25519.PublicKeySize {
			return nil, "invalid Ed25519 key"
		}
		k.kty = "OKP"
	default:
		return nil, fmt.Sprintf("unsupported key type %s", jk.KeyType())
	}
	if alg != "" && allowedAlgs[alg].kty != k.kty {
		return nil, "alg " + alg + " does not match key type " + k.kty
	}
	return k, ""
}

func digestKeys(keys []*verifyKey) ([32]byte, error) {
	lines := make([]string, 0, len(keys))
	for _, k := range keys {
		der, err := x509.MarshalPKIXPublicKey(k.pub)
		if err != nil {
			return [32]byte{}, fmt.Errorf("encode key %q: %w", k.kid, err)
		}
		lines = append(lines, fmt.Sprintf("%q %q %x", k.kid, k.alg, der))
	}
	sort.Strings(lines)
	return sha256.Sum256([]byte(strings.Join(lines, "\n"))), nil
}
