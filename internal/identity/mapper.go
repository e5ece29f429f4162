package identity

import (
	"fmt"
	"strings"
)

// A mapper fills the provider-specific Subject fields from verified claims.
// The verifier has already set Authenticated, Issuer, IssuerName, Via,
// Claims, TokenID and Expiry; a mapper may override them (flakegate does).
type mapper func(claims map[string]any, ic *IssuerConfig, s *Subject) error

var mappers = map[string]mapper{
	ClaimsGitHubActions: mapGitHubActions,
	ClaimsGitLabCI:      mapGitLabCI,
	ClaimsOIDC:          mapOIDC,
	ClaimsFlakegate:     mapFlakegate,
}

// mapGitHubActions: org=repository_owner, repo=repository, user=actor, ref,
// ref_protected, environment. Claim names from GitHub's OIDC docs.
func mapGitHubActions(c map[string]any, _ *IssuerConfig, s *Subject) error {
	owner, err := requiredString(c, "repository_owner")
	if err != nil {
		return err
	}
	repo, err := requiredString(c, "repository")
	if err != nil {
		return err
	}
	org, name, ok := strings.Cut(repo, "/")
	if !ok || name == "" || strings.Contains(name, "/") || !strings.EqualFold(org, owner) {
		return invalid(ReasonClaims, "repository is not repository_owner/name")
	}
	s.Provider, s.Kind = "github", "ci"
	s.Org, s.Repo = strings.ToLower(owner), strings.ToLower(repo)
	if s.User, err = optionalString(c, "actor"); err != nil {
		return err
	}
	if s.Ref, err = optionalString(c, "ref"); err != nil {
		return err
	}
	if s.Environment, err = optionalString(c, "environment"); err != nil {
		return err
	}
	s.RefProtected, err = boolClaim(c, "ref_protected")
	return err
}

// mapGitLabCI: org=namespace_path, repo=project_path, user=user_login,
// ref normalized to refs/heads/X or refs/tags/X, ref_protected, environment.
// Claim names from GitLab's ID token docs.
func mapGitLabCI(c map[string]any, _ *IssuerConfig, s *Subject) error {
	ns, err := requiredString(c, "namespace_path")
	if err != nil {
		return err
	}
	project, err := requiredString(c, "project_path")
	if err != nil {
		return err
	}
	if !strings.HasPrefix(strings.ToLower(project), strings.ToLower(ns)+"/") || len(project) == len(ns)+1 {
		return invalid(ReasonClaims, "project_path is not under namespace_path")
	}
	s.Provider, s.Kind = "gitlab", "ci"
	s.Org, s.Repo = strings.ToLower(ns), strings.ToLower(project)
	if s.User, err = optionalString(c, "user_login"); err != nil {
		return err
	}
	ref, err := optionalString(c, "ref")
	if err != nil {
		return err
	}
	refType, err := optionalString(c, "ref_type")
	if err != nil {
		return err
	}
	refPath, err := optionalString(c, "ref_path")
	if err != nil {
		return err
	}
	switch {
	case ref != "" && refType == "branch":
		s.Ref = "refs/heads/" + ref
	case ref != "" && refType == "tag":
		s.Ref = "refs/tags/" + ref
	case strings.HasPrefix(refPath, "refs/"):
		s.Ref = refPath
	default:
		s.Ref = ref
	}
	if s.Environment, err = optionalString(c, "environment"); err != nil {
		return err
	}
	s.RefProtected, err = boolClaim(c, "ref_protected")
	return err
}

// mapOIDC: the user is the configured user_claim (required when set), else
// preferred_username, else email when email_verified is true, else sub; org
// from the configured org_claim (a string claim; absent means no org), or
// the issuer's fixed org (whatever the token claims). Groups and everything
// else stay in Claims.
func mapOIDC(c map[string]any, ic *IssuerConfig, s *Subject) error {
	sub, err := requiredString(c, "sub")
	if err != nil {
		return err
	}
	s.Provider, s.Kind = "oidc", "user"
	if s.User, err = oidcUser(c, ic, sub); err != nil {
		return err
	}
	if ic != nil && ic.OrgClaim != "" {
		org, err := optionalString(c, ic.OrgClaim)
		if err != nil {
			return err
		}
		s.Org = strings.ToLower(org)
	}
	if ic != nil && ic.Org != "" {
		s.Org = strings.ToLower(ic.Org)
	}
	return nil
}

// oidcUser names the user of an oidc token. An email counts only when the
// IdP says it verified it: an address a user typed in at sign-up, or one an
// IdP without email_verified lets any account set, would let its holder pass
// as whoever the policy names by that address. Such a token falls back to
// sub, which names nobody in a policy: it reads what its org may, no more.
func oidcUser(c map[string]any, ic *IssuerConfig, sub string) (string, error) {
	if ic != nil && ic.UserClaim != "" {
		return requiredString(c, ic.UserClaim)
	}
	name, err := optionalString(c, "preferred_username")
	if err != nil || name != "" {
		return name, err
	}
	email, err := optionalString(c, "email")
	if err != nil {
		return "", err
	}
	if email != "" {
		verified, err := boolClaim(c, "email_verified")
		if err != nil {
			return "", err
		}
		if verified {
			return email, nil
		}
	}
	return sub, nil
}

// mapFlakegate rebuilds the Subject an exchanged cache token was issued for.
func mapFlakegate(c map[string]any, _ *IssuerConfig, s *Subject) error {
	fs, err := SubjectFromCacheClaims(c)
	if err != nil {
		return err
	}
	s.Issuer = fs.Issuer
	s.Provider, s.Kind = fs.Provider, fs.Kind
	s.Org, s.Repo, s.User = fs.Org, fs.Repo, fs.User
	s.Ref, s.RefProtected, s.Environment = fs.Ref, fs.RefProtected, fs.Environment
	s.Via = fs.Via
	s.Claims = fs.Claims
	s.ParentTokenID = fs.ParentTokenID
	scope, err := ScopeFromClaims(c)
	if err != nil {
		return err
	}
	s.Scope = scope
	return nil
}

func requiredString(c map[string]any, name string) (string, error) {
	v, err := optionalString(c, name)
	if err != nil {
		return "", err
	}
	if v == "" {
		return "", invalid(ReasonClaims, name+" missing")
	}
	return v, nil
}

// optionalString: "" when absent or null; an error when another type.
func optionalString(c map[string]any, name string) (string, error) {
	switch v := c[name].(type) {
	case nil:
		return "", nil
	case string:
		return v, nil
	default:
		return "", invalid(ReasonClaims, name+" is not a string")
	}
}

// boolClaim reads a boolean claim given as a JSON bool or as the string
// "true"/"false" (GitHub and GitLab send ref_protected as a string).
// Absent means false; anything else is an error (fail closed).
func boolClaim(c map[string]any, name string) (bool, error) {
	switch v := c[name].(type) {
	case nil:
		return false, nil
	case bool:
		return v, nil
	case string:
		switch v {
		case "true":
			return true, nil
		case "false", "":
			return false, nil
		}
	}
	return false, invalid(ReasonClaims, fmt.Sprintf("%s is not true or false", name))
}
