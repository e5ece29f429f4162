package identity

import (
	"errors"
	"fmt"
	"maps"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	"sigs.k8s.io/yaml"

	"github.com/flakegate/flakegate/internal/nixname"
	"github.com/flakegate/flakegate/internal/route"
)

// Claim mapper names: how an issuer's claims become a Subject.
const (
	ClaimsGitHubActions = "github-actions" // GitHub Actions OIDC tokens (kind ci)
	ClaimsGitLabCI      = "gitlab-ci"      // GitLab CI id_tokens (kind ci)
	ClaimsOIDC          = "oidc"           // a user's OIDC ID token (kind user)
	ClaimsFlakegate     = "flakegate"      // flakegate's own exchanged cache tokens
)

// IssuerConfig is one entry of the issuers file (DESIGN.md "Issuers file").
type IssuerConfig struct {
	// Name identifies the entry in logs and metrics (letters, digits, . _ -).
	Name string `json:"name"`
	// Issuer is the exact "iss" value of the tokens.
	Issuer string `json:"issuer"`
	// JWKSURL is where the issuer publishes its public keys (https; http only
	// for loopback hosts). Exactly one of JWKSURL and JWKSFile is set.
	JWKSURL string `json:"jwks_url,omitempty"`
	// JWKSFile is a local JWKS document, reloaded when it changes. A relative
	// path is relative to the issuers file.
	JWKSFile string `json:"jwks_file,omitempty"`
	// Audience lists the accepted "aud" values; a token must name at least one.
	Audience []string `json:"audience"`
	// Claims is the claim mapper: github-actions, gitlab-ci, oidc or flakegate.
	Claims string `json:"claims"`
	// OrgClaim (oidc only, optional) names the claim that gives the user's org.
	OrgClaim string `json:"org_claim,omitempty"`
	// Org (oidc only, optional; not with OrgClaim) is the org of every user
	// of this issuer: a single-company IdP whose tokens carry no org claim.
	// Without an org a user reads nothing under the default policy.
	Org string `json:"org,omitempty"`
	// UserClaim (oidc only, optional) names the claim that gives the user's
	// name. Without it: preferred_username, else email when email_verified
	// is true, else sub. Set it to an immutable claim (sub, oid) when the
	// IdP lets users choose their preferred_username.
	UserClaim string `json:"user_claim,omitempty"`
	// Orgs (github-actions, gitlab-ci, oidc with org_claim) lists the orgs
	// this issuer is authoritative for: a token naming another org (for
	// GitLab, another top-level group) is refused. Required when the file
	// has more than one issuer (Validate): a namespace is registered on
	// each provider separately, so without it whoever registers "omnicorp"
	// on gitlab.com would pass as the GitHub org omnicorp.
	Orgs []string `json:"orgs,omitempty"`
	// OrgIDs (github-actions only, optional) pins an org name to the
	// numeric ID of the GitHub account that owns it: a token naming the org
	// must carry that repository_owner_id. A deleted or renamed GitHub
	// organization frees its name for anyone to register; the ID stays
	// with the account, so the name's next owner is refused.
	OrgIDs map[string]string `json:"org_ids,omitempty"`
}

// pinnedOrgs are the orgs org_ids pins (github-actions only).
func (ic *IssuerConfig) pinnedOrgs() []string {
	if ic.Claims != ClaimsGitHubActions {
		return nil
	}
	return slices.Sorted(maps.Keys(ic.OrgIDs))
}

// orgID is the account ID org_ids pins org to (names are
// case-insensitive); ok is false when it pins none.
func (ic *IssuerConfig) orgID(org string) (id string, ok bool) {
	for name, id := range ic.OrgIDs {
		if strings.EqualFold(name, org) {
			return id, true
		}
	}
	return "", false
}

// ownerMatches reports whether a subject mapped from claims (an IdP token's,
// or the IdP claims a cache token carries) may speak for org under
// org_ids; "" when it may, else why not.
func (ic *IssuerConfig) ownerMatches(org string, claims map[string]any) string {
	if ic.Claims != ClaimsGitHubActions || org == "" {
		return ""
	}
	id, pinned := ic.orgID(org)
	if got, _ := claims["repository_owner_id"].(string); pinned && got != id {
		return fmt.Sprintf("org %s belongs to GitHub account %s (org_ids), the token's repository_owner_id is %s: the name has changed hands, or the token is not GitHub's", ClaimText(org), id, ClaimText(got))
	}
	return ""
}

// orgFromToken reports whether the issuer's tokens name their own org (CI
// tokens, or an org_claim), as opposed to a fixed org or none.
func (ic *IssuerConfig) orgFromToken() bool {
	switch ic.Claims {
	case ClaimsGitHubActions, ClaimsGitLabCI:
		return true
	case ClaimsOIDC:
		return ic.OrgClaim != ""
	}
	return false
}

// allowsOrg reports whether a token of this issuer may name org: any org
// without an orgs list; otherwise org's first segment (GitLab subgroups
// belong to their top-level group) must be listed. No org is always fine
// (it grants nothing by org).
func (ic *IssuerConfig) allowsOrg(org string) bool {
	if len(ic.Orgs) == 0 || org == "" {
		return true
	}
	top, _, _ := strings.Cut(org, "/")
	for _, o := range ic.Orgs {
		if strings.EqualFold(o, top) {
			return true
		}
	}
	return false
}

// admitsMappedOrg reports whether org is one this issuer's mapper can give
// a subject as configured now: its fixed org when it has one, none for an
// oidc issuer without org or org_claim. A cache token carries the org its
// subject was given when exchanged; an issuer's org changed since must
// not be outlived by its tokens (review of the fixes, 2026-12-05).
func (ic *IssuerConfig) admitsMappedOrg(org string) bool {
	switch {
	case ic.Org != "":
		return strings.EqualFold(org, ic.Org)
	case ic.Claims == ClaimsOIDC && ic.OrgClaim == "":
		return org == ""
	}
	return true
}

// Config is the issuers file.
type Config struct {
	Issuers []IssuerConfig `json:"issuers"`
}

// LoadIssuersFile reads, parses (strictly: unknown fields are errors) and
// validates an issuers file. Relative jwks_file paths are resolved against
// the file's directory.
func LoadIssuersFile(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read issuers file: %w", err)
	}
	cfg, err := ParseIssuers(data)
	if err != nil {
		return nil, fmt.Errorf("issuers file %s: %w", path, err)
	}
	dir := filepath.Dir(path)
	for i := range cfg.Issuers {
		if f := cfg.Issuers[i].JWKSFile; f != "" && !filepath.IsAbs(f) {
			cfg.Issuers[i].JWKSFile = filepath.Join(dir, f)
		}
	}
	return cfg, nil
}

// ParseIssuers parses and validates issuers-file YAML (or JSON).
func ParseIssuers(data []byte) (*Config, error) {
	var cfg Config
	if err := yaml.UnmarshalStrict(data, &cfg); err != nil {
		return nil, fmt.Errorf("parse: %w", err)
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &cfg, nil
}

var issuerNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)

// Validate checks every entry and reports all problems at once, each naming
// the entry and the field: unique names and issuers, exactly one of
// jwks_url/jwks_file, https jwks_url (http only for loopback hosts), a
// non-empty audience and a known claims mapper.
func (c *Config) Validate() error {
	if c == nil || len(c.Issuers) == 0 {
		return errors.New("issuers: at least one issuer is required")
	}
	var errs []error
	names := map[string]int{}
	issuers := map[string]int{}
	for i, ic := range c.Issuers {
		where := fmt.Sprintf("issuers[%d]", i)
		if ic.Name != "" {
			where = fmt.Sprintf("issuers[%d] (%s)", i, ic.Name)
		}
		fail := func(field, format string, args ...any) {
			errs = append(errs, fmt.Errorf("%s: %s: %s", where, field, fmt.Sprintf(format, args...)))
		}
		if j, dup := names[ic.Name]; dup && ic.Name != "" {
			fail("name", "duplicate of issuers[%d]", j)
		}
		names[ic.Name] = i
		if j, dup := issuers[ic.Issuer]; dup && ic.Issuer != "" {
			fail("issuer", "duplicate of issuers[%d]", j)
		}
		issuers[ic.Issuer] = i
		for _, p := range ic.problems(false) {
			fail(p.field, "%s", p.msg)
		}
		for _, j := range c.Issuers {
			for _, o := range j.pinnedOrgs() {
				if _, pinned := ic.orgID(o); ic.Claims == ClaimsGitHubActions && ic.allowsOrg(o) && len(ic.Orgs) > 0 && !pinned {
					fail("org_ids", "org %q is pinned to its GitHub account by issuer %s but not here: the name's next owner would pass through this issuer; pin it here too (each GitHub instance has its own account IDs)", o, j.Name)
				}
			}
		}
		if c.external() > 1 && ic.orgFromToken() && len(ic.Orgs) == 0 {
			fail("orgs", "required when more than one issuer is configured: list the orgs this issuer speaks for (its tokens name their own org, and a name registered on this provider, say omnicorp on gitlab.com, would otherwise pass as another issuer's org)")
		}
	}
	return errors.Join(errs...)
}

// IssuerURLs are the iss values of the identity providers (flakegate's
// own cache-token issuer left out: a cache token's subject carries the iss
// of the IdP token it was exchanged for).
func (c *Config) IssuerURLs() []string {
	var out []string
	for _, ic := range c.Issuers {
		if ic.Claims != ClaimsFlakegate {
			out = append(out, ic.Issuer)
		}
	}
	return out
}

// external counts the issuers other than flakegate's own (claims
// flakegate, whose tokens carry a subject another issuer verified).
func (c *Config) external() int { return len(c.IssuerURLs()) }

// Warnings are doubts about a valid configuration that do not stop it
// (authz -check prints them, authz logs them at start): an issuer that
// ends with a slash (tokens usually spell it without: IdPs publish
// "https://idp.example.com", and a token's iss must match the issuers file
// exactly, so "https://idp.example.com/" would refuse every token of that
// IdP as an unknown issuer), and two issuers that differ only by a
// trailing slash.
func (c *Config) Warnings() []string {
	var ws []string
	where := func(i int) string { return fmt.Sprintf("issuers[%d] (%s)", i, c.Issuers[i].Name) }
	for i, ic := range c.Issuers {
		iss := ic.Issuer
		if strings.HasSuffix(iss, "/") && strings.Contains(iss, "://") {
			ws = append(ws, fmt.Sprintf("%s: issuer %q ends with a slash; tokens usually say %q, and the spelling must match a token's iss exactly (a token with %q is refused as an unknown issuer): check the iss of a real token",
				where(i), iss, strings.TrimSuffix(iss, "/"), strings.TrimSuffix(iss, "/")))
		}
		for j := i + 1; j < len(c.Issuers); j++ {
			for _, o := range ic.Orgs {
				if slices.ContainsFunc(c.Issuers[j].Orgs, func(p string) bool { return strings.EqualFold(p, o) }) {
					ws = append(ws, fmt.Sprintf("%s and %s: both list org %q: tokens of either act for its flakes; make sure you hold that name on both providers",
						where(i), where(j), o))
				}
			}
			other := c.Issuers[j].Issuer
			if iss != other && strings.TrimSuffix(iss, "/") == strings.TrimSuffix(other, "/") {
				ws = append(ws, fmt.Sprintf("%s and %s: issuers %q and %q differ only by a trailing slash: probably one IdP configured twice; keep the spelling its tokens use",
					where(i), where(j), iss, other))
			}
		}
	}
	return ws
}

type problem struct{ field, msg string }

// problems checks one entry on its own (no cross-entry rules). With
// staticKeys (AddIssuer with a key set) neither jwks_url nor jwks_file may
// be set.
func (ic *IssuerConfig) problems(staticKeys bool) []problem {
	var ps []problem
	add := func(field, msg string) { ps = append(ps, problem{field, msg}) }
	switch {
	case ic.Name == "":
		add("name", "required")
	case !issuerNameRE.MatchString(ic.Name):
		add("name", "must be 1-63 letters, digits, '.', '_' or '-'")
	}
	// The issuer is compared, never fetched: any printable string will do
	// (IdPs use https URLs; flakegate's own issuer may be an http URL).
	switch {
	case ic.Issuer == "":
		add("issuer", "required")
	case len(ic.Issuer) > 1024 || strings.IndexFunc(ic.Issuer, func(r rune) bool { return r <= ' ' || r == 0x7f }) >= 0:
		add("issuer", "must be a printable string without spaces")
	}
	switch {
	case staticKeys:
		if ic.JWKSURL != "" || ic.JWKSFile != "" {
			add("jwks_url", "must be empty when static keys are given")
		}
	case ic.JWKSURL == "" && ic.JWKSFile == "":
		add("jwks_url", "one of jwks_url or jwks_file is required")
	case ic.JWKSURL != "" && ic.JWKSFile != "":
		add("jwks_file", "set only one of jwks_url and jwks_file")
	case ic.JWKSURL != "":
		if msg := checkURL(ic.JWKSURL); msg != "" {
			add("jwks_url", msg)
		}
	}
	if len(ic.Audience) == 0 {
		add("audience", "at least one audience is required")
	}
	for _, a := range ic.Audience {
		if strings.TrimSpace(a) == "" {
			add("audience", "empty audience value")
			break
		}
	}
	switch ic.Claims {
	case ClaimsGitHubActions, ClaimsGitLabCI, ClaimsOIDC, ClaimsFlakegate:
	case "":
		add("claims", "required (github-actions, gitlab-ci, oidc or flakegate)")
	default:
		add("claims", fmt.Sprintf("unknown mapper %q (want github-actions, gitlab-ci, oidc or flakegate)", ic.Claims))
	}
	if len(ic.Orgs) > 0 && !ic.orgFromToken() {
		add("orgs", "only valid with claims github-actions, gitlab-ci, or oidc with org_claim (an issuer whose tokens name their org)")
	}
	for _, o := range ic.Orgs {
		if _, err := nixname.ParseFlake(o + "/x"); err != nil {
			add("orgs", fmt.Sprintf("%q is not a flake org (letters, digits, '.', '_', '-')", o))
		}
	}
	if ic.OrgClaim != "" && ic.Claims != ClaimsOIDC {
		add("org_claim", "only valid with claims: oidc")
	}
	if len(ic.OrgIDs) > 0 && ic.Claims != ClaimsGitHubActions {
		add("org_ids", "only valid with claims: github-actions (GitLab tokens carry no ID of the top-level group)")
	}
	seen := map[string]bool{}
	for _, name := range slices.Sorted(maps.Keys(ic.OrgIDs)) {
		id := ic.OrgIDs[name]
		switch {
		case seen[strings.ToLower(name)]:
			add("org_ids", fmt.Sprintf("%q is listed twice (names are case-insensitive)", name))
		case len(ic.Orgs) > 0 && !ic.allowsOrg(name):
			add("org_ids", fmt.Sprintf("%q is not one of this issuer's orgs", name))
		case strings.Contains(name, "/"):
			add("org_ids", fmt.Sprintf("%q is not an org name", name))
		}
		seen[strings.ToLower(name)] = true
		if id == "" || len(id) > 20 || strings.Trim(id, "0123456789") != "" || id[0] == '0' {
			add("org_ids", fmt.Sprintf("%s: %q is not a GitHub account ID (digits: `gh api orgs/%s --jq .id`)", name, id, name))
		}
	}
	switch ic.UserClaim {
	case "":
	case "email":
		add("user_claim", "email would name users by an address the IdP may not have verified: leave user_claim out (a verified email is used when there is no preferred_username) or name an immutable claim (sub, oid)")
	case "iss", "aud", "exp", "nbf", "iat", "jti", "azp", "nonce":
		add("user_claim", fmt.Sprintf("%q is a token claim, not a user name", ic.UserClaim))
	default:
		if ic.Claims != ClaimsOIDC {
			add("user_claim", "only valid with claims: oidc (CI tokens name their actor themselves)")
		}
	}
	switch {
	case ic.Org == "":
	case ic.Claims != ClaimsOIDC:
		add("org", "only valid with claims: oidc (CI tokens name their org themselves)")
	case ic.OrgClaim != "":
		add("org", "set org (one org for every user of the issuer) or org_claim (the claim naming it), not both")
	default:
		// An org is the first part of a flake name: the one syntax check.
		if _, err := nixname.ParseFlake(ic.Org + "/x"); err != nil {
			add("org", fmt.Sprintf("%q is not a flake org (letters, digits, '.', '_', '-')", ic.Org))
		}
	}
	return ps
}

// checkURL returns "" for an absolute https URL, or an http URL whose host is
// a loopback address; otherwise what is wrong with it.
func checkURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "not a valid URL"
	}
	if u.Host == "" || u.User != nil {
		return "must be an absolute https URL without credentials"
	}
	switch u.Scheme {
	case "https":
		return ""
	case "http":
		if route.LoopbackHost(u.Hostname()) {
			return ""
		}
		return "must use https (http is allowed only for loopback hosts)"
	default:
		return "must use https"
	}
}
