package identity

import (
	"fmt"
	"strings"
)

// CacheSubjectClaim is the claim of a flakegate cache token that carries
// the Subject the token was exchanged for. Layout (version 1):
//
//	"fg_subject": {
//	  "v": 1,
//	  "issuer": "https://token.actions.githubusercontent.com",  // the IdP's iss
//	  "provider": "github", "kind": "ci",
//	  "org": "omnicorp", "repo": "omnicorp/app", "user": "alice",
//	  "ref": "refs/heads/main", "ref_protected": true, "environment": "",
//	  "parent_jti": "…",   // the IdP token's jti; absent when it had none
//	  "claims": { ...the IdP token's verified claims... }
//	}
//
// The exchange adds the token's own iss/aud/exp/iat/jti/sub beside it.
// parent_jti becomes Subject.ParentTokenID, which revocation matches against
// token_ids as it does the token's own jti. A token minted before parent_jti
// existed falls back to claims.jti (the same value, also signed by flakegate).
const CacheSubjectClaim = "fg_subject"

const cacheClaimsVersion = 1

// CacheClaims renders the subject for a flakegate cache token: a map with
// the single key CacheSubjectClaim (see its layout). SubjectFromCacheClaims
// reverses it. The Claims map is shared, not copied. s is the IdP token's
// subject: its TokenID becomes parent_jti.
func (s *Subject) CacheClaims() map[string]any {
	fg := s.fields()
	fg["v"] = cacheClaimsVersion
	if s.TokenID != "" {
		fg["parent_jti"] = s.TokenID
	}
	return map[string]any{CacheSubjectClaim: fg}
}

// SubjectFromCacheClaims rebuilds a Subject from a cache token's claims (as
// decoded from JSON, or as CacheClaims made them). The result has
// Authenticated=true and Via="exchange"; Issuer is the original IdP's, so
// policies treat an exchanged token like the token it was exchanged for.
// ParentTokenID is the IdP token's jti. IssuerName, TokenID and Expiry are
// the verifier's to set.
func SubjectFromCacheClaims(claims map[string]any) (*Subject, error) {
	fg, ok := claims[CacheSubjectClaim].(map[string]any)
	if !ok {
		return nil, invalid(ReasonClaims, CacheSubjectClaim+" missing or not an object")
	}
	switch v := fg["v"].(type) {
	case float64:
		if v != cacheClaimsVersion {
			return nil, invalid(ReasonClaims, fmt.Sprintf("%s version %v not supported", CacheSubjectClaim, v))
		}
	case int:
		if v != cacheClaimsVersion {
			return nil, invalid(ReasonClaims, fmt.Sprintf("%s version %d not supported", CacheSubjectClaim, v))
		}
	default:
		return nil, invalid(ReasonClaims, CacheSubjectClaim+".v missing")
	}
	s := &Subject{Authenticated: true, Via: "exchange"}
	fields := []struct {
		name     string
		dst      *string
		required bool
	}{
		{"issuer", &s.Issuer, true},
		{"provider", &s.Provider, true},
		{"kind", &s.Kind, true},
		{"org", &s.Org, false},
		{"repo", &s.Repo, false},
		{"user", &s.User, false},
		{"ref", &s.Ref, false},
		{"environment", &s.Environment, false},
		{"parent_jti", &s.ParentTokenID, false},
	}
	for _, f := range fields {
		v, err := optionalString(fg, f.name)
		if err != nil {
			return nil, invalid(ReasonClaims, CacheSubjectClaim+"."+f.name+" is not a string")
		}
		if f.required && v == "" {
			return nil, invalid(ReasonClaims, CacheSubjectClaim+"."+f.name+" missing")
		}
		*f.dst = v
	}
	if s.Kind != "ci" && s.Kind != "user" {
		return nil, invalid(ReasonClaims, CacheSubjectClaim+".kind must be ci or user")
	}
	s.Org, s.Repo = strings.ToLower(s.Org), strings.ToLower(s.Repo)
	rp, ok := fg["ref_protected"].(bool)
	if _, present := fg["ref_protected"]; present && !ok {
		return nil, invalid(ReasonClaims, CacheSubjectClaim+".ref_protected is not a boolean")
	}
	s.RefProtected = rp
	switch c := fg["claims"].(type) {
	case nil:
		s.Claims = map[string]any{}
	case map[string]any:
		s.Claims = c
	default:
		return nil, invalid(ReasonClaims, CacheSubjectClaim+".claims is not an object")
	}
	if _, present := fg["parent_jti"]; !present {
		// Minted before parent_jti: the IdP token's own claims name it.
		s.ParentTokenID, _ = s.Claims["jti"].(string)
	}
	return s, nil
}
