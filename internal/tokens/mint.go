package tokens

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jws"
	"github.com/lestrrat-go/jwx/v2/jwt"
)

// Lifetime defaults.
const (
	DefaultLifetime    = time.Hour
	DefaultMaxLifetime = 12 * time.Hour
	// DefaultScopedMaxLifetime caps a scoped (deploy) token: a deployed
	// machine pulls its closure for as long as it runs.
	DefaultScopedMaxLifetime = 90 * 24 * time.Hour
)

// Config configures a Minter.
type Config struct {
	// Issuer is the cache's public URL (e.g. https://cache.example.com); it
	// is both the "iss" and the "aud" of every token.
	Issuer string
	// Lifetime of a token when the caller asks for none; default 1h.
	Lifetime time.Duration
	// MaxLifetime caps every token, whatever is asked or configured; default 12h.
	MaxLifetime time.Duration
	// ScopedMaxLifetime caps a scoped token (MintScoped), which is also its
	// lifetime when the caller asks for none; default 90 days. It may exceed
	// MaxLifetime: a scoped token can only read one closure.
	ScopedMaxLifetime time.Duration
	// ActivationDelay is how old a key must be before it signs (see
	// KeyRing.SignerAt); set it above the key reload interval when several
	// authz replicas share the key directory. Default 0: the newest signs.
	ActivationDelay time.Duration
	// Now is the clock (tests); default time.Now.
	Now func() time.Time
}

// Minter signs cache tokens with the newest key of a KeyRing.
//
// A token's life is min(requested or Lifetime, MaxLifetime), counted from
// now. It is deliberately NOT capped at the identity-provider token's
// remaining life: a GitHub Actions token lives 5 minutes, and the point of
// the exchange is a token that outlives it for a long `nix copy`. Revocation
// (denylist of token ids and subjects) is the way to end one early.
type Minter struct {
	keys *KeyRing
	cfg  Config
}

// NewMinter checks cfg and applies defaults.
func NewMinter(keys *KeyRing, cfg Config) (*Minter, error) {
	if keys == nil {
		return nil, errors.New("token minter: no key ring")
	}
	if cfg.Issuer == "" {
		return nil, errors.New("token minter: issuer (the cache's public URL) is required")
	}
	if cfg.Lifetime == 0 {
		cfg.Lifetime = DefaultLifetime
	}
	if cfg.MaxLifetime == 0 {
		cfg.MaxLifetime = DefaultMaxLifetime
	}
	if cfg.ScopedMaxLifetime == 0 {
		cfg.ScopedMaxLifetime = DefaultScopedMaxLifetime
	}
	if cfg.Lifetime < 0 || cfg.MaxLifetime < 0 || cfg.ScopedMaxLifetime < 0 || cfg.ActivationDelay < 0 {
		return nil, errors.New("token minter: lifetimes and the activation delay must be positive")
	}
	if cfg.Lifetime > cfg.MaxLifetime {
		return nil, fmt.Errorf("token minter: lifetime %s exceeds the maximum %s", cfg.Lifetime, cfg.MaxLifetime)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Minter{keys: keys, cfg: cfg}, nil
}

// Lifetime is the default token lifetime.
func (m *Minter) Lifetime() time.Duration { return m.cfg.Lifetime }

// MaxLifetime is the cap on every token's lifetime.
func (m *Minter) MaxLifetime() time.Duration { return m.cfg.MaxLifetime }

// ScopedMaxLifetime is the cap on a scoped token's lifetime.
func (m *Minter) ScopedMaxLifetime() time.Duration { return m.cfg.ScopedMaxLifetime }

// Issuer is the iss (and aud) of minted tokens.
func (m *Minter) Issuer() string { return m.cfg.Issuer }

// Signer is the key that signs now.
func (m *Minter) Signer() *Key { return m.keys.SignerAt(m.cfg.Now(), m.cfg.ActivationDelay) }

// Token is a minted cache token.
type Token struct {
	Raw       string
	ID        string // jti
	KeyID     string // kid
	IssuedAt  time.Time
	ExpiresAt time.Time
}

// reserved claims are set by Mint and may not come from the caller.
var reserved = map[string]bool{"iss": true, "aud": true, "sub": true, "jti": true, "iat": true, "nbf": true, "exp": true}

// Mint signs a token for subject with the extra claims (the subject's
// cache-claims layout). requested ≤ 0 means the configured Lifetime; the
// result never outlives MaxLifetime.
func (m *Minter) Mint(subject string, claims map[string]any, requested time.Duration) (Token, error) {
	return m.mint(subject, claims, requested, m.cfg.Lifetime, m.cfg.MaxLifetime)
}

// MintScoped is Mint for a scoped token (claims hold the scope):
// requested ≤ 0 means ScopedMaxLifetime, which caps the result.
func (m *Minter) MintScoped(subject string, claims map[string]any, requested time.Duration) (Token, error) {
	return m.mint(subject, claims, requested, m.cfg.ScopedMaxLifetime, m.cfg.ScopedMaxLifetime)
}

func (m *Minter) mint(subject string, claims map[string]any, requested, life, maxLife time.Duration) (Token, error) {
	if subject == "" {
		return Token{}, errors.New("mint token: empty subject")
	}
	if requested > 0 {
		life = requested
	}
	life = min(life, maxLife)

	now := m.cfg.Now().Truncate(time.Second)
	exp := now.Add(life)
	jti, err := randomID()
	if err != nil {
		return Token{}, err
	}
	tok := jwt.New()
	for k, v := range claims {
		if reserved[k] {
			return Token{}, fmt.Errorf("mint token: claim %q is reserved", k)
		}
		if err := tok.Set(k, v); err != nil {
			return Token{}, fmt.Errorf("mint token: claim %q: %w", k, err)
		}
	}
	if err := errors.Join(
		tok.Set(jwt.IssuerKey, m.cfg.Issuer),
		tok.Set(jwt.AudienceKey, []string{m.cfg.Issuer}),
		tok.Set(jwt.SubjectKey, subject),
		tok.Set(jwt.JwtIDKey, jti),
		tok.Set(jwt.IssuedAtKey, now),
		tok.Set(jwt.NotBeforeKey, now),
		tok.Set(jwt.ExpirationKey, exp),
	); err != nil {
		return Token{}, fmt.Errorf("mint token: %w", err)
	}
	key := m.Signer()
	hdr := jws.NewHeaders()
	if err := hdr.Set(jws.TypeKey, "JWT"); err != nil {
		return Token{}, fmt.Errorf("mint token: %w", err)
	}
	signed, err := jwt.Sign(tok, jwt.WithKey(jwa.SignatureAlgorithm(key.Alg), key.private, jws.WithProtectedHeaders(hdr)))
	if err != nil {
		return Token{}, fmt.Errorf("sign token with key %s: %w", key.ID, err)
	}
	return Token{Raw: string(signed), ID: jti, KeyID: key.ID, IssuedAt: now, ExpiresAt: exp}, nil
}

func randomID() (string, error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("token id: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}
