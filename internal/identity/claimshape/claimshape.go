// Package claimshape builds claim sets shaped like the tokens of the
// identity providers flakegate maps (internal/identity: ClaimsGitHubActions,
// ClaimsGitLabCI, ClaimsOIDC): the claim names, and value types, the
// providers send. It is the one definition of those shapes: the test issuer
// (internal/identity/identitytest) and the development issuer
// (internal/devissuer, behind cmd/devissuer) both mint from it. It is an
// ordinary package (it does not import testing), so binaries may use it;
// identitytest, a test helper that does, is not for binaries.
//
// Every function returns a fresh map that callers may change freely.
package claimshape

import (
	"strconv"
	"strings"
)

// GitHubActions is a GitHub Actions OIDC token's claim set (names and types
// as in GitHub's "About security hardening with OpenID Connect":
// numeric-looking values are strings, ref_protected is "true"/"false") for
// repository ("owner/name") at ref ("refs/heads/main", "refs/tags/v1"…), in
// a run actor triggered. The job deploys to no environment.
func GitHubActions(repository, ref string, protected bool, actor string) map[string]any {
	owner, _, _ := strings.Cut(repository, "/")
	refType := "branch"
	if strings.HasPrefix(ref, "refs/tags/") {
		refType = "tag"
	}
	const sha = "7a5d1c1f0f4c9a0bd1e7e1d4fd0c3b3c9f1e2a4b"
	workflow := repository + "/.github/workflows/ci.yml@" + ref
	return map[string]any{
		"sub":                   "repo:" + repository + ":ref:" + ref,
		"ref":                   ref,
		"ref_type":              refType,
		"ref_protected":         strconv.FormatBool(protected),
		"sha":                   sha,
		"repository":            repository,
		"repository_owner":      owner,
		"repository_id":         "681237345",
		"repository_owner_id":   "90316721",
		"repository_visibility": "private",
		"actor":                 actor,
		"actor_id":              "583231",
		"run_id":                "9876543210",
		"run_number":            "42",
		"run_attempt":           "1",
		"runner_environment":    "github-hosted",
		"workflow":              "CI",
		"workflow_ref":          workflow,
		"workflow_sha":          sha,
		"job_workflow_ref":      workflow,
		"job_workflow_sha":      sha,
		"head_ref":              "",
		"base_ref":              "",
		"event_name":            "push",
		"environment":           "",
	}
}

// GitLabCI is a GitLab CI id_token's claim set (names and types as in
// GitLab's "OpenID Connect (OIDC) Authentication Using ID Tokens": ids are
// strings except runner_id, ref_protected is "true"/"false") for project
// ("namespace/.../name") on branch (a plain name, as GitLab's "ref"), in a
// pipeline user triggered. The job deploys to no environment: see
// GitLabEnvironment.
func GitLabCI(project, branch string, protected bool, user string) map[string]any {
	ns := project
	if i := strings.LastIndex(project, "/"); i > 0 {
		ns = project[:i]
	}
	const sha = "714a629c0b401fdce83e847fc9589983fc6f46bc"
	return map[string]any{
		"sub":                "project_path:" + project + ":ref_type:branch:ref:" + branch,
		"namespace_id":       "72",
		"namespace_path":     ns,
		"project_id":         "20",
		"project_path":       project,
		"project_visibility": "private",
		"user_id":            "1",
		"user_login":         user,
		"user_email":         user + "@example.com",
		"user_access_level":  "developer",
		"pipeline_id":        "574",
		"pipeline_source":    "push",
		"job_id":             "302",
		"ref":                branch,
		"ref_type":           "branch",
		"ref_path":           "refs/heads/" + branch,
		"ref_protected":      strconv.FormatBool(protected),
		"groups_direct":      []any{ns},
		"runner_id":          1,
		"runner_environment": "self-hosted",
		"sha":                sha,
		"ci_config_ref_uri":  "gitlab.example.com/" + project + "//.gitlab-ci.yml@refs/heads/" + branch,
		"ci_config_sha":      sha,
	}
}

// GitLabEnvironment adds to a GitLabCI claim set the claims of a job that
// deploys to environment (e.g. "production"), protected or not. Its
// deployment tier is the environment's name when that is a tier GitLab
// knows, else "other".
func GitLabEnvironment(claims map[string]any, environment string, protected bool) {
	tier := "other"
	switch environment {
	case "production", "staging", "testing", "development":
		tier = environment
	}
	claims["environment"] = environment
	claims["environment_protected"] = strconv.FormatBool(protected)
	claims["deployment_tier"] = tier
	claims["environment_action"] = "start"
}

// User is a person's OIDC ID token claim set (sub "user-NAME",
// preferred_username, name, a verified NAME@example.com email, groups) with
// org, when not "", in an "org" claim (name it in the issuers file's
// org_claim).
func User(name, org string, groups ...string) map[string]any {
	gs := make([]any, len(groups))
	for i, g := range groups {
		gs[i] = g
	}
	c := map[string]any{
		"sub":                "user-" + name,
		"email":              name + "@example.com",
		"email_verified":     true,
		"preferred_username": name,
		"name":               name,
		"groups":             gs,
	}
	if org != "" {
		c["org"] = org
	}
	return c
}
