package identity_test

import (
	"strings"
	"testing"

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
