// Package revoke is flakegate's token revocation: a denylist of token ids
// and subjects, kept as denylist.yaml in the policy directory (so it is
// hot-reloaded with the policies, as data.denylist) and checked for every
// verified token before the policy is asked.
//
// denylist.yaml:
//
//	# Token ids (jti): cache tokens from the exchange log, or IdP tokens.
//	# Revoking an IdP token's id also ends every cache token exchanged from it.
//	token_ids:
//	  - 9sL3Vx0cQk2m5YH1rGZb7w
//	# Subjects, any token for them (IdP tokens and exchanged cache tokens):
//	subjects:
//	  - github:omnicorp/app           # provider:org/repo — that repository's CI jobs
//	  - github:omnicorp/*             # provider:org/*    — every repository of the org
//	  - oidc:mallory                  # provider:user     — that user (also as a CI actor)
//	  - issuer: https://idp.example.com   # issuer + sub claim of the original token;
//	    sub: "248289761001"               # without sub: every token of that issuer
//
// Names compare case-insensitively. An exchanged cache token is matched by
// its own token id, by the id of the IdP token it was exchanged from (which
// it carries as fg_subject.parent_jti, signed by flakegate: Subject.ParentTokenID)
// and by the subject it carries (the original issuer and sub), so revoking an
// IdP token id or a subject also ends the cache tokens it got. An IdP token
// without a jti can still be exchanged; its cache tokens then have no parent
// id and are revoked by their own id or by subject.
package revoke

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/flakegate/flakegate/internal/identity"
)

// DataKey is the data document's name (denylist.yaml → data.denylist).
const DataKey = "denylist"

// ErrRevoked is matched by every revocation error.
var ErrRevoked = errors.New("token revoked")

// List is a parsed denylist. The zero List revokes nothing.
type List struct {
	tokenIDs map[string]bool
	subjects []subjectRule
}

type subjectRule struct {
	text     string // as written, for the reason
	provider string // provider:name forms
	repo     string // exact org/repo
	org      string // org/* form
	user     string
	issuer   string // issuer(+sub) form
	sub      string
}

// Parse reads the data.denylist document: a map with optional token_ids
// (list of strings) and subjects (list of "provider:name" strings or
// {issuer, sub} maps). Unknown keys and wrong types are errors, so a typo
// cannot silently revoke nothing.
func Parse(doc any) (*List, error) {
	l := &List{tokenIDs: map[string]bool{}}
	if doc == nil {
		return l, nil
	}
	m, ok := doc.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("denylist: want a map with token_ids and subjects, got %s", typeName(doc))
	}
	for k, v := range m {
		switch k {
		case "token_ids":
			items, err := list(k, v)
			if err != nil {
				return nil, err
			}
			for i, it := range items {
				s, ok := it.(string)
				if !ok || strings.TrimSpace(s) == "" {
					return nil, fmt.Errorf("denylist: token_ids[%d]: want a non-empty string, got %s", i, typeName(it))
				}
				l.tokenIDs[strings.TrimSpace(s)] = true
			}
		case "subjects":
			items, err := list(k, v)
			if err != nil {
				return nil, err
			}
			for i, it := range items {
				r, err := parseSubject(it)
				if err != nil {
					return nil, fmt.Errorf("denylist: subjects[%d]: %w", i, err)
				}
				l.subjects = append(l.subjects, r)
			}
		default:
			return nil, fmt.Errorf("denylist: unknown key %q (want token_ids, subjects)", k)
		}
	}
	return l, nil
}

func list(key string, v any) ([]any, error) {
	switch v := v.(type) {
	case nil:
		return nil, nil
	case []any:
		return v, nil
	}
	return nil, fmt.Errorf("denylist: %s: want a list, got %s", key, typeName(v))
}

func parseSubject(it any) (subjectRule, error) {
	switch v := it.(type) {
	case string:
		provider, name, ok := strings.Cut(strings.TrimSpace(v), ":")
		provider, name = strings.ToLower(provider), strings.ToLower(name)
		if !ok || provider == "" || name == "" || strings.Contains(provider, "/") {
			return subjectRule{}, fmt.Errorf("%q: want provider:org/repo, provider:org/* or provider:user (or an {issuer, sub} map)", v)
		}
		r := subjectRule{text: v, provider: provider}
		switch org, repo, isRepo := strings.Cut(name, "/"); {
		case !isRepo:
			r.user = name
		case repo == "*" && org != "" && !strings.Contains(org, "*"):
			r.org = org
		case org != "" && repo != "" && !strings.Contains(name, "*"):
			r.repo = name
		default:
			return subjectRule{}, fmt.Errorf("%q: want provider:org/repo or provider:org/*", v)
		}
		return r, nil
	case map[string]any:
		r := subjectRule{}
		for k, val := range v {
			if k != "issuer" && k != "sub" {
				return subjectRule{}, fmt.Errorf("unknown key %q (want issuer, sub)", k)
			}
			var s string
			switch val := val.(type) {
			case string:
				s = val
			case json.Number: // an unquoted numeric sub, as the policy engine decodes YAML
				s = val.String()
			case float64:
				s = strconv.FormatFloat(val, 'f', -1, 64)
			default:
				return subjectRule{}, fmt.Errorf("%s: want a string, got %s", k, typeName(val))
			}
			if k == "issuer" {
				r.issuer = s
			} else {
				r.sub = s
			}
		}
		if r.issuer == "" {
			return subjectRule{}, errors.New("issuer is required")
		}
		r.text = r.issuer
		if r.sub != "" {
			r.text += " sub " + r.sub
		}
		return r, nil
	}
	return subjectRule{}, fmt.Errorf("want a string or an {issuer, sub} map, got %s", typeName(it))
}

func typeName(v any) string {
	switch v.(type) {
	case nil:
		return "nothing"
	case string:
		return "a string"
	case []any:
		return "a list"
	case map[string]any:
		return "a map"
	case bool:
		return "a boolean"
	}
	return "a number"
}

// Len is the number of token ids and subject rules.
func (l *List) Len() (tokenIDs, subjects int) { return len(l.tokenIDs), len(l.subjects) }

// UnknownIssuers lists the issuers of {issuer, sub} rules that are none of
// known (the issuers file's identity providers): such a rule revokes
// nothing, since a token's subject (a cache token's too) carries the iss of
// the IdP token it came from, compared exactly. The cache's own URL and a
// trailing slash are the usual slips (review r6, 2026-12-05: accepted in
// silence).
func (l *List) UnknownIssuers(known []string) []string {
	var out []string
	for _, r := range l.subjects {
		if r.issuer != "" && !slices.Contains(known, r.issuer) && !slices.Contains(out, r.issuer) {
			out = append(out, r.issuer)
		}
	}
	return out
}

// Revoked reports whether the subject's token is revoked, and why (the
// matching rule; never the token).
func (l *List) Revoked(s *identity.Subject) (string, bool) {
	if l == nil || s == nil || !s.Authenticated {
		return "", false
	}
	if s.TokenID != "" && l.tokenIDs[s.TokenID] {
		return "token id " + s.TokenID + " is revoked", true
	}
	if s.ParentTokenID != "" && l.tokenIDs[s.ParentTokenID] {
		return "token id " + s.ParentTokenID + " (the identity-provider token this cache token was exchanged from) is revoked", true
	}
	for _, r := range l.subjects {
		if r.matches(s) {
			return "subject " + r.text + " is revoked", true
		}
	}
	return "", false
}

func (r *subjectRule) matches(s *identity.Subject) bool {
	if r.issuer != "" {
		if s.Issuer != r.issuer {
			return false
		}
		if r.sub == "" {
			return true
		}
		sub, _ := s.Claims["sub"].(string)
		return sub == r.sub
	}
	if !strings.EqualFold(s.Provider, r.provider) {
		return false
	}
	switch {
	case r.repo != "":
		return strings.EqualFold(s.Repo, r.repo)
	case r.org != "":
		org, _, _ := strings.Cut(strings.ToLower(s.Repo), "/")
		return strings.EqualFold(s.Org, r.org) || (s.Repo != "" && org == r.org)
	}
	return s.User != "" && strings.EqualFold(s.User, r.user)
}
