package identity

import (
	"fmt"
	"slices"
	"strings"

	"github.com/flakegate/flakegate/internal/nixname"
)

// ScopeClaim is the claim of a flakegate cache token that restricts it to
// the closure of some store paths within one flake (a deploy token):
//
//	"fg_scope": {"flake": "org/name", "roots": ["/nix/store/<hash>-<name>", …]}
//
// It is read only from tokens signed by flakegate's own keys (the
// flakegate claims mapper): the scope lives in the token solely as signed
// claims, so changing it breaks the signature. A malformed fg_scope makes
// the token invalid (fail closed: never read as an unscoped token).
const ScopeClaim = "fg_scope"

// MaxScopeRoots bounds the roots of one scope (a deploy token names a
// system closure or a few; the list travels in every request's token).
const MaxScopeRoots = 64

// Scope restricts a subject to reading the closure of Roots within Flake.
// authz enforces it on every request before the policy; the policy sees it
// as input.subject.scope.
type Scope struct {
	Flake nixname.Flake
	// Roots are absolute store paths, sorted, without duplicates.
	Roots []string
}

// NewScope validates a scope: a flake and 1 to MaxScopeRoots store paths
// ("/nix/store/<hash>-<name>"). Roots are sorted and deduplicated.
func NewScope(flake string, roots []string) (*Scope, error) {
	f, err := nixname.ParseFlake(flake)
	if err != nil {
		return nil, fmt.Errorf("scope flake: %w", err)
	}
	if len(roots) == 0 {
		return nil, fmt.Errorf("scope: no closure root (want a store path such as %s/<hash>-<name>)", nixname.StoreDir)
	}
	if len(roots) > MaxScopeRoots {
		return nil, fmt.Errorf("scope: %d roots, at most %d", len(roots), MaxScopeRoots)
	}
	out := make([]string, 0, len(roots))
	for _, r := range roots {
		if _, ok := nixname.StorePathBase(r); !ok {
			return nil, fmt.Errorf("scope: %q is not a store path (%s/<32-char hash>-<name>)", ClaimText(r), nixname.StoreDir)
		}
		out = append(out, r)
	}
	slices.Sort(out)
	return &Scope{Flake: f, Roots: slices.Compact(out)}, nil
}

// RootHashes are the store hashes of the roots, sorted.
func (s *Scope) RootHashes() []string {
	out := make([]string, len(s.Roots))
	for i, r := range s.Roots {
		out[i] = strings.TrimPrefix(r, nixname.StoreDir+"/")[:nixname.StoreHashLen]
	}
	slices.Sort(out)
	return out
}

// Input renders the scope as the policy input shows it (subject.scope, and
// the exchange's requested scope): {"flake": "org/name", "roots": […]}.
func (s *Scope) Input() map[string]any {
	roots := make([]any, len(s.Roots))
	for i, r := range s.Roots {
		roots[i] = r
	}
	return map[string]any{"flake": s.Flake.String(), "roots": roots}
}

// Claims renders the scope as a cache token's claims: {ScopeClaim: …}.
func (s *Scope) Claims() map[string]any {
	return map[string]any{ScopeClaim: s.Input()}
}

// ScopeFromClaims reads ScopeClaim from a verified flakegate token's
// claims: nil when absent, an error (invalid token) when malformed.
func ScopeFromClaims(c map[string]any) (*Scope, error) {
	raw, present := c[ScopeClaim]
	if !present {
		return nil, nil
	}
	m, ok := raw.(map[string]any)
	if !ok {
		return nil, invalid(ReasonClaims, ScopeClaim+" is not an object")
	}
	flake, ok := m["flake"].(string)
	if !ok {
		return nil, invalid(ReasonClaims, ScopeClaim+".flake is not a string")
	}
	var roots []string
	switch rs := m["roots"].(type) {
	case []any:
		for _, r := range rs {
			s, ok := r.(string)
			if !ok {
				return nil, invalid(ReasonClaims, ScopeClaim+".roots holds a non-string")
			}
			roots = append(roots, s)
		}
	case []string:
		roots = rs
	default:
		return nil, invalid(ReasonClaims, ScopeClaim+".roots is not a list")
	}
	for k := range m {
		if k != "flake" && k != "roots" {
			return nil, invalid(ReasonClaims, ScopeClaim+" has an unknown key")
		}
	}
	s, err := NewScope(flake, roots)
	if err != nil {
		return nil, invalid(ReasonClaims, err.Error())
	}
	return s, nil
}
