package claimshape_test

import (
	"context"
	"testing"

	"github.com/flakegate/flakegate/internal/identity"
	"github.com/flakegate/flakegate/internal/identity/claimshape"
	"github.com/flakegate/flakegate/internal/identity/identitytest"
)

// Each shape, with the parameters the development issuer passes, maps to
// the Subject it describes.
func TestShapesMap(t *testing.T) {
	gh, gl, oidc := identitytest.NewIssuer(t), identitytest.NewIssuer(t), identitytest.NewIssuer(t)
	userCfg := identitytest.WithOrgs(oidc.Config("oidc", identity.ClaimsOIDC), "omnicorp")
	userCfg.OrgClaim = "org"
	v, err := identity.NewVerifier(context.Background(), &identity.Config{Issuers: []identity.IssuerConfig{
		identitytest.WithOrgs(gh.Config("github", identity.ClaimsGitHubActions), "omnicorp"),
		identitytest.WithOrgs(gl.Config("gitlab", identity.ClaimsGitLabCI), "platform"),
		userCfg,
	}}, identity.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(v.Close)

	deploy := claimshape.GitLabCI("platform/nix/app", "release", true, "bob")
	claimshape.GitLabEnvironment(deploy, "staging", false)
	cases := []struct {
		name string
		tok  string
		want identity.Subject
	}{
		{"github, unprotected", gh.Mint(claimshape.GitHubActions("OmniCorp/App", "refs/heads/feature", false, "alice")),
			identity.Subject{Provider: "github", Kind: "ci", Org: "omnicorp", Repo: "omnicorp/app", User: "alice", Ref: "refs/heads/feature"}},
		{"github tag, protected", gh.Mint(claimshape.GitHubActions("omnicorp/app", "refs/tags/v1", true, "alice")),
			identity.Subject{Provider: "github", Kind: "ci", Org: "omnicorp", Repo: "omnicorp/app", User: "alice", Ref: "refs/tags/v1", RefProtected: true}},
		{"gitlab", gl.Mint(claimshape.GitLabCI("platform/nix/app", "main", true, "bob")),
			identity.Subject{Provider: "gitlab", Kind: "ci", Org: "platform/nix", Repo: "platform/nix/app", User: "bob", Ref: "refs/heads/main", RefProtected: true}},
		{"gitlab deploying", gl.Mint(deploy),
			identity.Subject{Provider: "gitlab", Kind: "ci", Org: "platform/nix", Repo: "platform/nix/app", User: "bob", Ref: "refs/heads/release", RefProtected: true, Environment: "staging"}},
		{"user with org", oidc.Mint(claimshape.User("carol", "OmniCorp", "eng")),
			identity.Subject{Provider: "oidc", Kind: "user", Org: "omnicorp", User: "carol"}},
		{"user without org", oidc.Mint(claimshape.User("dave", "")),
			identity.Subject{Provider: "oidc", Kind: "user", User: "dave"}},
	}
	for _, c := range cases {
		s, err := v.Verify(context.Background(), c.tok)
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		got := identity.Subject{Provider: s.Provider, Kind: s.Kind, Org: s.Org, Repo: s.Repo, User: s.User, Ref: s.Ref, RefProtected: s.RefProtected, Environment: s.Environment}
		if got.Provider != c.want.Provider || got.Kind != c.want.Kind || got.Org != c.want.Org || got.Repo != c.want.Repo ||
			got.User != c.want.User || got.Ref != c.want.Ref || got.RefProtected != c.want.RefProtected || got.Environment != c.want.Environment {
			t.Errorf("%s: mapped to %+v, want %+v", c.name, got, c.want)
		}
	}
}

func TestGitLabEnvironmentTier(t *testing.T) {
	for env, tier := range map[string]string{"production": "production", "staging": "staging", "review/x": "other"} {
		c := claimshape.GitLabCI("g/p", "main", true, "u")
		claimshape.GitLabEnvironment(c, env, true)
		if c["deployment_tier"] != tier || c["environment"] != env || c["environment_protected"] != "true" {
			t.Errorf("%s: %v %v %v", env, c["environment"], c["deployment_tier"], c["environment_protected"])
		}
	}
}
