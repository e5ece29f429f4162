package identitytest

import "strings"

// GitHubActionsClaims is a realistic GitHub Actions OIDC claim set (claim
// names and types as in GitHub's "About security hardening with OpenID
// Connect": numeric-looking values are strings; ref_protected is the string
// "true"/"false") for repository "owner/name" at ref ("refs/heads/main").
// The ref is protected when it is refs/heads/main. Change the map freely.
func GitHubActionsClaims(repository, ref string) map[string]any {
	owner, _, _ := strings.Cut(repository, "/")
	refType := "branch"
	if strings.HasPrefix(ref, "refs/tags/") {
		refType = "tag"
	}
	protected := "false"
	if ref == "refs/heads/main" {
		protected = "true"
	}
	workflow := repository + "/.github/workflows/ci.yml@" + ref
	return map[string]any{
		"sub":                   "repo:" + repository + ":ref:" + ref,
		"ref":                   ref,
		"ref_type":              refType,
		"ref_protected":         protected,
		"sha":                   "7a5d1c1f0f4c9a0bd1e7e1d4fd0c3b3c9f1e2a4b",
		"repository":            repository,
		"repository_owner":      owner,
		"repository_id":         "681237345",
		"repository_owner_id":   "90316721",
		"repository_visibility": "private",
		"actor":                 "octocat",
		"actor_id":              "583231",
		"run_id":                "9876543210",
		"run_number":            "42",
		"run_attempt":           "1",
		"runner_environment":    "github-hosted",
		"workflow":              "CI",
		"workflow_ref":          workflow,
		"workflow_sha":          "7a5d1c1f0f4c9a0bd1e7e1d4fd0c3b3c9f1e2a4b",
		"job_workflow_ref":      workflow,
		"job_workflow_sha":      "7a5d1c1f0f4c9a0bd1e7e1d4fd0c3b3c9f1e2a4b",
		"head_ref":              "",
		"base_ref":              "",
		"event_name":            "push",
		"environment":           "",
	}
}

// GitLabCIClaims is a realistic GitLab CI id_tokens claim set (claim names
// and types as in GitLab's "OpenID Connect (OIDC) Authentication Using ID
// Tokens": ids are strings except runner_id, ref_protected is "true"/"false")
// for project "namespace/.../name" on branch (plain name, as GitLab's "ref").
// The branch is protected when it is "main".
func GitLabCIClaims(projectPath, branch string) map[string]any {
	ns := projectPath
	if i := strings.LastIndex(projectPath, "/"); i > 0 {
		ns = projectPath[:i]
	}
	protected := "false"
	if branch == "main" {
		protected = "true"
	}
	return map[string]any{
		"sub":                   "project_path:" + projectPath + ":ref_type:branch:ref:" + branch,
		"namespace_id":          "72",
		"namespace_path":        ns,
		"project_id":            "20",
		"project_path":          projectPath,
		"project_visibility":    "private",
		"user_id":               "1",
		"user_login":            "sample-user",
		"user_email":            "sample-user@example.com",
		"user_access_level":     "developer",
		"pipeline_id":           "574",
		"pipeline_source":       "push",
		"job_id":                "302",
		"ref":                   branch,
		"ref_type":              "branch",
		"ref_path":              "refs/heads/" + branch,
		"ref_protected":         protected,
		"groups_direct":         []any{ns},
		"environment":           "production",
		"environment_protected": "true",
		"deployment_tier":       "production",
		"environment_action":    "start",
		"runner_id":             1,
		"runner_environment":    "self-hosted",
		"sha":                   "714a629c0b401fdce83e847fc9589983fc6f46bc",
		"ci_config_ref_uri":     "gitlab.example.com/" + projectPath + "//.gitlab-ci.yml@refs/heads/" + branch,
		"ci_config_sha":         "714a629c0b401fdce83e847fc9589983fc6f46bc",
	}
}

// OIDCUserClaims is a user's ID token claim set (sub, email,
// preferred_username, groups).
func OIDCUserClaims(username string, groups ...string) map[string]any {
	gs := make([]any, len(groups))
	for i, g := range groups {
		gs[i] = g
	}
	return map[string]any{
		"sub":                "user-" + username,
		"email":              username + "@example.com",
		"email_verified":     true,
		"preferred_username": username,
		"name":               username,
		"groups":             gs,
	}
}
