// Package identity turns a bearer token into a verified Subject: issuers from
// the issuers file, JWKS (by URL, cached, or by file), JWT verification, and
// claim mappers (github-actions, gitlab-ci, oidc).
package identity

import (
	"context"
	"errors"
	"time"
)

// Subject is who made a request, as the policy sees it (DESIGN.md
// "Policy contract"). The zero Subject is the unauthenticated one.
type Subject struct {
	Authenticated bool
	Issuer        string // iss of the verified token
	IssuerName    string // the issuers-file entry's name (logs, metrics)
	Provider      string // github | gitlab | oidc | flakegate
	Kind          string // ci | user
	Org           string // lower-case
	Repo          string // org/name, lower-case ("" for users)
	User          string
	Ref           string
	RefProtected  bool
	Environment   string
	// Via says how the token was obtained: "idp" for a token straight from an
	// identity provider, "exchange" for a flakegate cache token.
	Via    string
	Claims map[string]any // every verified claim, raw
	// Scope, when set, restricts a flakegate cache token to reading the
	// closure of its roots within one flake (a deploy token; ScopeClaim).
	// authz enforces it before the policy; the policy sees it as
	// subject.scope.
	Scope *Scope

	// Not part of the policy input:
	TokenID string // jti, if any (revocation)
	// ParentTokenID is, for a flakegate cache token, the jti of the
	// identity-provider token it was exchanged from ("" when that token had
	// none). It is read only from the fg_subject claim of a token signed by
	// flakegate's own keys (the flakegate mapper), never from an IdP token,
	// so revoking an IdP token's jti also ends the cache tokens made from it.
	ParentTokenID string
	Expiry        time.Time // exp
}

// Input renders the subject as the policy input's "subject" value.
func (s *Subject) Input() map[string]any {
	if s == nil || !s.Authenticated {
		return map[string]any{"authenticated": false}
	}
	m := s.fields()
	m["authenticated"], m["via"] = true, s.Via
	if s.Scope != nil {
		m["scope"] = s.Scope.Input()
	}
	return m
}

// fields are the subject's identity as both the policy input and a cache
// token's fg_subject carry it (each adds its own keys); the Claims map is
// shared, not copied.
func (s *Subject) fields() map[string]any {
	claims := s.Claims
	if claims == nil {
		claims = map[string]any{}
	}
	return map[string]any{
		"issuer":        s.Issuer,
		"provider":      s.Provider,
		"kind":          s.Kind,
		"org":           s.Org,
		"repo":          s.Repo,
		"user":          s.User,
		"ref":           s.Ref,
		"ref_protected": s.RefProtected,
		"environment":   s.Environment,
		"claims":        claims,
	}
}

// Summary is a short, secret-free description for logs ("github:omnicorp/app@refs/heads/main").
func (s *Subject) Summary() string {
	if s == nil || !s.Authenticated {
		return "anonymous"
	}
	who := s.Repo
	if who == "" {
		who = s.User
	}
	if s.Ref != "" {
		who += "@" + s.Ref
	}
	if s.Scope != nil {
		who += " (scoped to " + s.Scope.Flake.String() + ")"
	}
	return s.Provider + ":" + who
}

// ErrNoToken means the request carried no token.
var ErrNoToken = errors.New("no token")

// Verifier verifies raw tokens. Errors mean 401; their text names the reason
// and never contains the token.
type Verifier interface {
	Verify(ctx context.Context, rawToken string) (*Subject, error)
}
