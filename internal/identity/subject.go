// Package identity turns a bearer token into a verified Subject: issuers from
// the issuers file, JWKS (by URL, cached, or by file), JWT verification, and
// claim mappers (github-actions, gitlab-ci, oidc).
package identity

import (
	"context"
	"errors"
	"reflect"
	"slices"
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

	// memo is Input and Summary rendered once, by seal, for a subject the
	// verifier caches and shares; used only while the fields they were
	// rendered from are unchanged (subjectMemo.matches).
	memo *subjectMemo
}

// subjectMemo is a sealed subject's Input and Summary, and the fields
// they were rendered from.
//
// Hand-written for a measured reason (issue 16): a verified token's
// subject is the same for every request it makes, and rendering its input
// map (12 allocations) and summary (2) on every Check was a fifth of the
// Checker's allocations (docs/benchmarks.md). The rendered map is shared
// by all requests, read-only, as the verifier's cached Subject already is.
type subjectMemo struct {
	of      Subject // the fields rendered (of.memo is nil)
	scope   Scope   // *of.Scope as rendered (roots copied)
	input   map[string]any
	summary string
}

// seal renders s's Input and Summary once, for a subject that is about to
// be shared read-only (Verify's cache). A copy of s that changes a field
// renders afresh (matches), so a memo can never show a subject other than
// the one it is asked for.
func (s *Subject) seal() {
	s.memo = nil
	m := &subjectMemo{of: *s, input: s.render(), summary: s.summarize()}
	if s.Scope != nil {
		m.scope = Scope{Flake: s.Scope.Flake, Roots: slices.Clone(s.Scope.Roots)}
	}
	s.memo = m
}

// matches reports whether s still has every field m was rendered from.
func (m *subjectMemo) matches(s *Subject) bool {
	o := &m.of
	if s.Authenticated != o.Authenticated || s.Issuer != o.Issuer || s.Provider != o.Provider ||
		s.Kind != o.Kind || s.Org != o.Org || s.Repo != o.Repo || s.User != o.User || s.Ref != o.Ref ||
		s.RefProtected != o.RefProtected || s.Environment != o.Environment || s.Via != o.Via ||
		reflect.ValueOf(s.Claims).UnsafePointer() != reflect.ValueOf(o.Claims).UnsafePointer() ||
		s.Scope != o.Scope {
		return false
	}
	return s.Scope == nil || s.Scope.Flake == m.scope.Flake && slices.Equal(s.Scope.Roots, m.scope.Roots)
}

// Input renders the subject as the policy input's "subject" value. The
// map of a subject from Verify is shared: callers must not modify it.
func (s *Subject) Input() map[string]any {
	if s != nil && s.memo != nil && s.memo.matches(s) {
		return s.memo.input
	}
	return s.render()
}

func (s *Subject) render() map[string]any {
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
	if s != nil && s.memo != nil && s.memo.matches(s) {
		return s.memo.summary
	}
	return s.summarize()
}

func (s *Subject) summarize() string {
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
