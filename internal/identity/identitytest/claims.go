package identitytest

import "github.com/flakegate/flakegate/internal/identity/claimshape"

// The claim sets below are internal/identity/claimshape's (the one
// definition of each provider's token shape, shared with the development
// issuer), with the fixed actors, protection and environment the tests
// expect. Each call returns a fresh map: change it freely.

// GitHubActionsClaims is claimshape.GitHubActions for repository
// "owner/name" at ref ("refs/heads/main"), triggered by "octocat". The ref
// is protected when it is refs/heads/main.
func GitHubActionsClaims(repository, ref string) map[string]any {
	return claimshape.GitHubActions(repository, ref, ref == "refs/heads/main", "octocat")
}

// GitLabCIClaims is claimshape.GitLabCI for project "namespace/.../name" on
// branch (plain name, as GitLab's "ref"), triggered by "sample-user", in a
// job deploying to the protected environment "production". The branch is
// protected when it is "main".
func GitLabCIClaims(projectPath, branch string) map[string]any {
	c := claimshape.GitLabCI(projectPath, branch, branch == "main", "sample-user")
	claimshape.GitLabEnvironment(c, "production", true)
	return c
}

// OIDCUserClaims is claimshape.User without an org claim: sub, email,
// preferred_username, name and groups.
func OIDCUserClaims(username string, groups ...string) map[string]any {
	return claimshape.User(username, "", groups...)
}
