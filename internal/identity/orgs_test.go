package identity_test

import (
	"strings"
	"testing"

	"github.com/lestrrat-go/jwx/v2/jwk"

	"github.com/flakegate/flakegate/internal/identity"
	"github.com/flakegate/flakegate/internal/identity/identitytest"
)

// An issuer bound to orgs refuses a token naming another org: whoever
// registers "omnicorp" on gitlab.com must not pass as the GitHub org
// omnicorp, nor a partner IdP's user as one of omnicorp's (adversarial
// review, 2026-12-05; the end-to-end attack is internal/gate
// TestNamespaceOfAnotherProviderIsRefused).
func TestIssuerOrgsBindNamespaces(t *testing.T) {
	clock := newClock()
	gh := identitytest.NewIssuer(t, identitytest.WithClock(clock.Now))
	gl := identitytest.NewIssuer(t, identitytest.WithClock(clock.Now))
	partner := identitytest.NewIssuer(t, identitytest.WithClock(clock.Now))
	pc := identitytest.WithOrgs(partner.Config("partner", identity.ClaimsOIDC), "partner")
	pc.OrgClaim = "org"
	e := newEnv(t, clock, identity.Options{},
		identitytest.WithOrgs(gh.Config("github", identity.ClaimsGitHubActions), "omnicorp"),
		identitytest.WithOrgs(gl.Config("gitlab", identity.ClaimsGitLabCI), "gitlab-corp"),
		pc)

	if s := e.mustVerify(gh.Mint(identitytest.GitHubActionsClaims("omnicorp/app", "refs/heads/main"))); s.Repo != "omnicorp/app" {
		t.Errorf("github job of omnicorp: repo %q", s.Repo)
	}
	// Case does not matter; GitLab subgroups belong to their top-level group.
	if s := e.mustVerify(gl.Mint(identitytest.GitLabCIClaims("GitLab-Corp/app", "main"))); s.Org != "gitlab-corp" {
		t.Errorf("gitlab job of gitlab-corp: org %q", s.Org)
	}
	sub := identitytest.GitLabCIClaims("gitlab-corp/team/app", "main")
	sub["namespace_path"] = "gitlab-corp/team"
	e.mustVerify(gl.Mint(sub))
	e.mustVerify(partner.Mint(map[string]any{"sub": "p1", "preferred_username": "bob", "org": "partner"}))
	// A partner user without an org claim names no org: nothing by org.
	e.mustVerify(partner.Mint(map[string]any{"sub": "p2", "preferred_username": "eve"}))

	for name, tok := range map[string]string{
		"gitlab.com namespace squatting the GitHub org": gl.Mint(identitytest.GitLabCIClaims("omnicorp/super-duper-secure", "main")),
		"github org squatting the GitLab group":         gh.Mint(identitytest.GitHubActionsClaims("gitlab-corp/app", "refs/heads/main")),
		"partner user claiming omnicorp":                partner.Mint(map[string]any{"sub": "p3", "preferred_username": "alice", "org": "omnicorp"}),
	} {
		err := e.mustRefuse(tok, identity.ReasonClaims)
		if !strings.Contains(err.Error(), "is not one of issuer") {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// A cache token (or a 90-day scoped token) follows the org binding of the
// IdP its subject came from, as configured now: one minted for a gitlab.com
// job of the squatted namespace "omnicorp" before the binding, or for an
// issuer since removed, is refused (review of the fixes, 2026-12-05: the
// org was checked against flakegate's own issuer, which lists none).
func TestCacheTokenFollowsTheOrgBinding(t *testing.T) {
	clock := newClock()
	gh := identitytest.NewIssuer(t, identitytest.WithClock(clock.Now))
	gl := identitytest.NewIssuer(t, identitytest.WithClock(clock.Now))
	fg := newCacheIssuer(t, clock)

	// Before the upgrade: gitlab alone, no orgs (valid then).
	before := newEnv(t, clock, identity.Options{}, gl.Config("gitlab", identity.ClaimsGitLabCI))
	squat := fg.exchanged(before.mustVerify(gl.Mint(identitytest.GitLabCIClaims("omnicorp/super-duper-secure", "main"))))
	own := fg.exchanged(before.mustVerify(gl.Mint(identitytest.GitLabCIClaims("gitlab-corp/app", "main"))))

	// After: github speaks for omnicorp, gitlab for gitlab-corp.
	after := newEnv(t, clock, identity.Options{},
		identitytest.WithOrgs(gh.Config("github", identity.ClaimsGitHubActions), "omnicorp"),
		identitytest.WithOrgs(gl.Config("gitlab", identity.ClaimsGitLabCI), "gitlab-corp"))
	after.trust(t, fg)
	if err := after.mustRefuse(squat, identity.ReasonClaims); !strings.Contains(err.Error(), "is not one of issuer gitlab's orgs") {
		t.Errorf("cache token of the squatted namespace: %v", err)
	}
	if s := after.mustVerify(own); s.Org != "gitlab-corp" || s.Via != "exchange" {
		t.Errorf("cache token of a bound org: %+v", s)
	}

	// An issuer removed from the file takes its subjects' cache tokens along.
	gone := newEnv(t, clock, identity.Options{}, identitytest.WithOrgs(gh.Config("github", identity.ClaimsGitHubActions), "omnicorp"))
	gone.trust(t, fg)
	if err := gone.mustRefuse(own, identity.ReasonClaims); !strings.Contains(err.Error(), "not configured") {
		t.Errorf("cache token of a removed issuer: %v", err)
	}
}

// Two issuers listing one org is allowed (a company on GitHub and GitLab
// alike) but said: tokens of either act for that org's flakes.
func TestSharedOrgIsWarned(t *testing.T) {
	cfg, err := identity.ParseIssuers([]byte(`issuers:
  - {name: github, issuer: "https://token.actions.githubusercontent.com", jwks_url: "https://a.example/jwks", audience: [x], claims: github-actions, orgs: [omnicorp, acme]}
  - {name: gitlab, issuer: "https://gitlab.com", jwks_url: "https://b.example/jwks", audience: [x], claims: gitlab-ci, orgs: [OmniCorp]}
`))
	if err != nil {
		t.Fatal(err)
	}
	ws := cfg.Warnings()
	if len(ws) != 1 || !strings.Contains(ws[0], `both list org "omnicorp"`) {
		t.Errorf("warnings %q, want one about omnicorp", ws)
	}
}

// A cache token carries the org its subject was given when exchanged; an
// IdP with a fixed org (or none) changed since must not be outlived by its
// tokens: a partner IdP wrongly set to org: omnicorp, then corrected
// (review of the fixes, 2026-12-05).
func TestCacheTokenFollowsTheFixedOrg(t *testing.T) {
	clock := newClock()
	partner := identitytest.NewIssuer(t, identitytest.WithClock(clock.Now))
	fg := newCacheIssuer(t, clock)
	wrong := partner.Config("partner", identity.ClaimsOIDC)
	wrong.Org = "omnicorp"
	before := newEnv(t, clock, identity.Options{}, wrong)
	tok := fg.exchanged(before.mustVerify(partner.Mint(identitytest.OIDCUserClaims("alice"))))

	for name, fix := range map[string]func(*identity.IssuerConfig){
		"org: partner": func(c *identity.IssuerConfig) { c.Org = "partner" },
		"no org":       func(c *identity.IssuerConfig) { c.Org = "" },
	} {
		cfg := partner.Config("partner", identity.ClaimsOIDC)
		fix(&cfg)
		after := newEnv(t, clock, identity.Options{}, cfg)
		after.trust(t, fg)
		if err := after.mustRefuse(tok, identity.ReasonClaims); !strings.Contains(err.Error(), "is not one of issuer partner's orgs") {
			t.Errorf("%s: cache token of org omnicorp: %v", name, err)
		}
	}
	// Unchanged, it still verifies.
	same := newEnv(t, clock, identity.Options{}, wrong)
	same.trust(t, fg)
	if s := same.mustVerify(tok); s.Org != "omnicorp" {
		t.Errorf("unchanged issuer: org %q", s.Org)
	}
}

// org_ids pins a GitHub org name to the account that owns it: after the
// organization omnicorp is deleted or renamed, whoever registers the freed
// name gets a new repository_owner_id and is refused, by IdP token and by
// cache token alike (repo-jacking; left open by the second review).
func TestOrgIDsPinTheOwner(t *testing.T) {
	clock := newClock()
	gh := identitytest.NewIssuer(t, identitytest.WithClock(clock.Now))
	fg := newCacheIssuer(t, clock)
	ghCfg := identitytest.WithOrgs(gh.Config("github", identity.ClaimsGitHubActions), "omnicorp", "acme")
	ghCfg.OrgIDs = map[string]string{"OmniCorp": "90316721"}
	e := newEnv(t, clock, identity.Options{}, ghCfg)
	e.trust(t, fg)
	job := func(repo, ownerID string) map[string]any {
		c := identitytest.GitHubActionsClaims(repo, "refs/heads/main")
		if ownerID == "" {
			delete(c, "repository_owner_id")
		} else {
			c["repository_owner_id"] = ownerID
		}
		return c
	}

	owner := e.mustVerify(gh.Mint(job("omnicorp/app", "90316721")))
	// An org without a pinned ID is not checked.
	e.mustVerify(gh.Mint(job("acme/app", "5")))

	for name, claims := range map[string]map[string]any{
		"the name's next owner":                   job("omnicorp/super-duper-secure", "171717"),
		"no repository_owner_id":                  job("omnicorp/app", ""),
		"the ID with a leading zero":              job("omnicorp/app", "090316721"),
		"the ID as a number, not GitHub's string": edit(job("omnicorp/app", ""), map[string]any{"repository_owner_id": float64(90316721)}),
	} {
		if err := e.mustRefuse(gh.Mint(claims), identity.ReasonClaims); !strings.Contains(err.Error(), "belongs to GitHub account 90316721") {
			t.Errorf("%s: %v", name, err)
		}
	}

	// A cache token exchanged by the old owner before the pin follows it.
	before := newEnv(t, clock, identity.Options{}, identitytest.WithOrgs(gh.Config("github", identity.ClaimsGitHubActions), "omnicorp"))
	squatter := fg.exchanged(before.mustVerify(gh.Mint(job("omnicorp/app", "171717"))))
	if err := e.mustRefuse(squatter, identity.ReasonClaims); !strings.Contains(err.Error(), "belongs to GitHub account") {
		t.Errorf("cache token of the next owner: %v", err)
	}
	if s := e.mustVerify(fg.exchanged(owner)); s.Org != "omnicorp" || s.Via != "exchange" {
		t.Errorf("cache token of the owner: %+v", s)
	}
}

// A cache token's user is named again from the IdP claims it carries, as
// the IdP's entry names users now: one exchanged when an unverified email
// named its user no longer acts as that address (it would for hours, a
// scoped token for 90 days), and after a user_claim change it acts under
// the new name (review of the fixes, 2026-12-05).
func TestCacheTokenUserFollowsTheIdPNaming(t *testing.T) {
	clock := newClock()
	idp := identitytest.NewIssuer(t, identitytest.WithClock(clock.Now))
	fg := newCacheIssuer(t, clock)
	env := func(userClaim string) *env {
		cfg := idp.Config("idp", identity.ClaimsOIDC)
		cfg.Org, cfg.UserClaim = "omnicorp", userClaim
		e := newEnv(t, clock, identity.Options{}, cfg)
		e.trust(t, fg)
		return e
	}
	e := env("")
	claims := identitytest.OIDCUserClaims("mallory")
	delete(claims, "preferred_username")
	claims["email"], claims["email_verified"], claims["oid"] = "cto@omnicorp.example", false, "0c4f-77"
	s := e.mustVerify(idp.Mint(claims))
	s.User = "cto@omnicorp.example" // what an exchange before the fix wrote
	tok := fg.exchanged(s)
	if got := e.mustVerify(tok); got.User != "user-mallory" {
		t.Errorf("a cache token of an unverified email acts as %q, want its sub", got.User)
	}
	if got := env("oid").mustVerify(tok); got.User != "0c4f-77" {
		t.Errorf("after user_claim: oid, the cache token acts as %q", got.User)
	}
	env("missing").mustRefuse(tok, identity.ReasonClaims)
}

// cacheIssuer is flakegate's own cache-token issuer (claims flakegate), as
// the exchange runs it.
type cacheIssuer struct {
	*identitytest.Issuer
	cfg identity.IssuerConfig
	set jwk.Set
}

func newCacheIssuer(t *testing.T, clock *fakeClock) *cacheIssuer {
	t.Helper()
	fg := identitytest.NewIssuer(t, identitytest.WithAlg("ES256"), identitytest.WithIssuer("https://cache.example.com"), identitytest.WithClock(clock.Now))
	set, err := jwk.Parse(fg.JWKS())
	if err != nil {
		t.Fatal(err)
	}
	return &cacheIssuer{Issuer: fg, set: set, cfg: identity.IssuerConfig{Name: "flakegate", Issuer: fg.Issuer(), Audience: []string{identitytest.DefaultAudience}, Claims: identity.ClaimsFlakegate}}
}

// exchanged is the cache token an exchange mints for s.
func (c *cacheIssuer) exchanged(s *identity.Subject) string {
	claims := s.CacheClaims()
	claims["sub"] = "exchanged"
	return c.Mint(claims)
}

// trust makes e's verifier accept c's cache tokens.
func (e *env) trust(t *testing.T, c *cacheIssuer) {
	t.Helper()
	if err := e.v.AddIssuer(c.cfg, c.set); err != nil {
		t.Fatal(err)
	}
}
