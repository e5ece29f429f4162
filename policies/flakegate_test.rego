# Tests of the default policy (flakegate.rego) with settings of their own, so
# that they do not depend on what flakes.yaml holds; the last test checks the
# flakes.yaml of this directory. Run with `authz -check -policies DIR`.
package flakegate.authz_test

import data.flakegate.authz

# --- subjects -----------------------------------------------------------------

github_ci(repo, ref, protected) := {
	"authenticated": true,
	"issuer": "https://token.actions.githubusercontent.com",
	"provider": "github",
	"kind": "ci",
	"org": split(repo, "/")[0],
	"repo": repo,
	"user": "octocat",
	"ref": ref,
	"ref_protected": protected,
	"environment": "",
	"via": "idp",
	"claims": {},
}

gitlab_ci(repo, ref, protected) := object.union(github_ci(repo, ref, protected), {
	"issuer": "https://gitlab.com",
	"provider": "gitlab",
})

person(org, name) := {
	"authenticated": true,
	"issuer": "https://idp.example.com",
	"provider": "oidc",
	"kind": "user",
	"org": org,
	"repo": "",
	"user": name,
	"ref": "",
	"ref_protected": false,
	"environment": "",
	"via": "idp",
	"claims": {},
}

anonymous := {"authenticated": false}

exchanged(subject) := object.union(subject, {"via": "exchange"})

# scoped(subject, flake): the subject of a scoped (deploy) token of flake.
scoped(subject, flake) := object.union(exchanged(subject), {"scope": {"flake": flake, "roots": ["/nix/store/0c6kzph7l0dcbfmjap64f0czdafn3b7x-system"]}})

# mint(flake, subject): an exchange asking for a scoped token of flake
# (authz sets the input's flake to the scope's).
mint(flake, subject) := object.union(req("exchange", flake, subject), {"scope": {"flake": flake, "roots": ["/nix/store/0c6kzph7l0dcbfmjap64f0czdafn3b7x-system"]}})

with_env(subject, env) := object.union(subject, {"environment": env})

# gitlab_env(subject, env, protected): a GitLab job in environment env, whose
# token says whether it is protected (a string claim, as GitLab sends it).
gitlab_env(subject, env, protected) := object.union(with_env(subject, env), {"claims": {"environment_protected": protected}})

# --- requests -----------------------------------------------------------------

req(action, flake, subject) := {
	"action": action,
	"flake": {"org": split(flake, "/")[0], "name": split(flake, "/")[1]},
	"object": {"kind": "narinfo", "hash": "0c6kzph7l0dcbfmjap64f0czdafn3b7x"},
	"request": {"method": "GET", "path": sprintf("/%s/0c6kzph7l0dcbfmjap64f0czdafn3b7x.narinfo", [flake])},
	"subject": subject,
}

# object_req is req about another kind of object (no hash).
object_req(action, flake, kind, subject) := {
	"action": action,
	"flake": {"org": split(flake, "/")[0], "name": split(flake, "/")[1]},
	"object": {"kind": kind, "hash": ""},
	"request": {"method": "GET", "path": sprintf("/%s/_pins", [flake])},
	"subject": subject,
}

# --- settings used by the cases -------------------------------------------------

settings := {
	"acme/app": {},
	"acme/secret": {"read": {
		"users": ["alice"],
		"groups": ["ops"],
		"repos": ["acme/deployer"],
		"orgs": ["partner"],
	}},
	"acme/lib": {"push": {
		"repos": ["acme/monorepo"],
		"refs": ["refs/tags/**"],
		"environments": ["release"],
	}},
	"acme/fleet": {"scoped_tokens": {"users": ["Olivia"]}},
}

groups := {"ops": ["Dave"]}

# Each case: the input, the expected allow, and a substring of the reason.
# info: public
info_cases := [
	{"note": "info/anonymous", "input": req("info", "acme/app", anonymous), "allow": true, "reason": "cache info is public"},
	{"note": "info/no flake", "input": {"action": "info", "subject": anonymous}, "allow": true, "reason": "public"},
]

# read: org-wide default
read_cases := [
	{"note": "read/org user", "input": req("read", "acme/app", person("acme", "carol")), "allow": true, "reason": "identity of org acme"},
	{"note": "read/org CI of another repo, unprotected", "input": req("read", "acme/app", github_ci("acme/other", "refs/pull/1/merge", false)), "allow": true, "reason": "identity of org acme"},
	{"note": "read/flake without entry", "input": req("read", "acme/unlisted", person("acme", "carol")), "allow": true, "reason": "identity of org acme"},
	{"note": "read/other org user", "input": req("read", "acme/app", person("evil", "mallory")), "allow": false, "reason": "read of acme/app requires an identity of org acme"},
	{"note": "read/other org CI", "input": req("read", "acme/app", github_ci("evil/app", "refs/heads/main", true)), "allow": false, "reason": "requires an identity of org acme"},
	{"note": "read/anonymous", "input": req("read", "acme/app", anonymous), "allow": false, "reason": "read requires a valid token"},
	{"note": "read/no subject at all", "input": {"action": "read", "flake": {"org": "acme", "name": "app"}}, "allow": false, "reason": "read requires a valid token"},
	{"note": "read/exchanged token", "input": req("read", "acme/app", exchanged(person("acme", "carol"))), "allow": true, "reason": "identity of org acme"},
	{"note": "read/empty org never matches", "input": req("read", "acme/app", person("", "carol")), "allow": false, "reason": "requires an identity of org acme"},
]

# read: a read list replaces the org-wide default
read_list_cases := [
	{"note": "read list/listed user", "input": req("read", "acme/secret", person("acme", "alice")), "allow": true, "reason": "listed in read.users"},
	{"note": "read list/listed user, other case", "input": req("read", "acme/secret", person("acme", "Alice")), "allow": true, "reason": "listed in read.users"},
	{"note": "read list/unlisted org user", "input": req("read", "acme/secret", person("acme", "carol")), "allow": false, "reason": "acme/secret is readable only by the readers listed"},
	{"note": "read list/listed name from another org", "input": req("read", "acme/secret", person("evil", "alice")), "allow": false, "reason": "readable only by the readers listed"},
	{"note": "read list/CI job whose actor is a listed user", "input": req("read", "acme/secret", github_ci("acme/other", "refs/heads/main", true)), "allow": false, "reason": "readable only by the readers listed"},
	{"note": "read list/own CI on unprotected ref", "input": req("read", "acme/secret", github_ci("acme/secret", "refs/heads/feature", false)), "allow": true, "reason": "own repository"},
	{"note": "read list/listed repo", "input": req("read", "acme/secret", github_ci("acme/deployer", "refs/heads/main", true)), "allow": true, "reason": "listed in read.repos"},
	{"note": "read list/group member", "input": req("read", "acme/secret", person("acme", "dave")), "allow": true, "reason": "in read.groups ops"},
	{"note": "read list/listed org", "input": req("read", "acme/secret", person("partner", "erin")), "allow": true, "reason": "listed in read.orgs"},
	{"note": "read list/pusher repo reads", "input": req("read", "acme/lib", github_ci("acme/monorepo", "refs/heads/dev", false)), "allow": true, "reason": "which may push to acme/lib"},
]

# push
push_cases := [
	{"note": "push/own CI, protected ref", "input": req("push", "acme/app", github_ci("acme/app", "refs/heads/main", true)), "allow": true, "reason": "CI job of acme/app on refs/heads/main"},
	{"note": "push/GitLab CI, protected ref", "input": req("push", "acme/app", gitlab_ci("acme/app", "refs/heads/main", true)), "allow": true, "reason": "CI job of acme/app"},
	{"note": "push/own CI, unprotected ref", "input": req("push", "acme/app", github_ci("acme/app", "refs/heads/feature", false)), "allow": false, "reason": "push requires a protected ref"},
	{"note": "push/ref_protected as a string", "input": req("push", "acme/app", github_ci("acme/app", "refs/heads/main", "true")), "allow": false, "reason": "push requires a protected ref"},
	{"note": "push/user", "input": req("push", "acme/app", person("acme", "alice")), "allow": false, "reason": "users cannot push"},
	{"note": "push/CI of another repo", "input": req("push", "acme/app", github_ci("acme/other", "refs/heads/main", true)), "allow": false, "reason": "not of \"acme/other\""},
	{"note": "push/anonymous", "input": req("push", "acme/app", anonymous), "allow": false, "reason": "push requires a valid token"},
	{"note": "push/exchanged CI token", "input": req("push", "acme/app", exchanged(github_ci("acme/app", "refs/heads/main", true))), "allow": true, "reason": "CI job of acme/app on refs/heads/main"},
	{"note": "push/exchanged CI token, unprotected ref", "input": req("push", "acme/app", exchanged(github_ci("acme/app", "refs/heads/feature", false))), "allow": false, "reason": "push requires a protected ref"},
	{"note": "push/exchanged user token", "input": req("push", "acme/app", exchanged(person("acme", "alice"))), "allow": false, "reason": "users cannot push"},
	{"note": "push/extra pusher repo", "input": req("push", "acme/lib", github_ci("acme/monorepo", "refs/heads/main", true)), "allow": true, "reason": "CI job of acme/monorepo"},
	{"note": "push/extra pusher repo, unprotected", "input": req("push", "acme/lib", github_ci("acme/monorepo", "refs/heads/dev", false)), "allow": false, "reason": "protected ref"},
	{"note": "push/ref glob", "input": req("push", "acme/lib", github_ci("acme/lib", "refs/tags/v1.2/rc1", false)), "allow": true, "reason": "on refs/tags/v1.2/rc1"},
	{"note": "push/ref outside glob", "input": req("push", "acme/lib", github_ci("acme/lib", "refs/heads/tags", false)), "allow": false, "reason": "protected ref"},
	{"note": "push/listed environment", "input": req("push", "acme/lib", with_env(github_ci("acme/lib", "refs/heads/feature", false), "release")), "allow": true, "reason": "CI job of acme/lib"},
	{"note": "push/unlisted environment", "input": req("push", "acme/lib", with_env(github_ci("acme/lib", "refs/heads/feature", false), "staging")), "allow": false, "reason": "protected ref"},
	{"note": "push/gitlab, listed protected environment", "input": req("push", "acme/lib", gitlab_env(gitlab_ci("acme/lib", "refs/heads/feature", false), "release", "true")), "allow": true, "reason": "CI job of acme/lib"},
	{"note": "push/gitlab, listed unprotected environment", "input": req("push", "acme/lib", gitlab_env(gitlab_ci("acme/lib", "refs/heads/feature", false), "release", "false")), "allow": false, "reason": "protected ref"},
	{"note": "push/gitlab, listed environment, no claim", "input": req("push", "acme/lib", with_env(gitlab_ci("acme/lib", "refs/heads/feature", false), "release")), "allow": false, "reason": "protected ref"},
	{"note": "push/gitlab exchanged, listed protected environment", "input": req("push", "acme/lib", exchanged(gitlab_env(gitlab_ci("acme/lib", "refs/heads/feature", false), "release", "true"))), "allow": true, "reason": "CI job of acme/lib"},
]

# pin: whoever may push may pin
pin_cases := [
	{"note": "pin/own CI, protected ref", "input": req("pin", "acme/app", github_ci("acme/app", "refs/heads/main", true)), "allow": true, "reason": "CI job of acme/app on refs/heads/main"},
	{"note": "pin/own CI, unprotected ref", "input": req("pin", "acme/app", github_ci("acme/app", "refs/heads/feature", false)), "allow": false, "reason": "push requires a protected ref"},
	{"note": "pin/org user who may read", "input": req("pin", "acme/app", person("acme", "carol")), "allow": false, "reason": "users cannot push"},
	{"note": "pin/CI of another repo", "input": req("pin", "acme/app", github_ci("acme/other", "refs/heads/main", true)), "allow": false, "reason": "not of \"acme/other\""},
	{"note": "pin/anonymous", "input": req("pin", "acme/app", anonymous), "allow": false, "reason": "pin requires a valid token"},
	{"note": "pin/extra pusher repo", "input": req("pin", "acme/lib", github_ci("acme/monorepo", "refs/heads/main", true)), "allow": true, "reason": "CI job of acme/monorepo"},
	{"note": "pin/no flake", "input": {"action": "pin", "subject": github_ci("acme/app", "refs/heads/main", true)}, "allow": false, "reason": "pin needs a flake"},
	{"note": "pins list is a read/org user", "input": object_req("read", "acme/app", "pins", person("acme", "carol")), "allow": true, "reason": "identity of org acme"},
	{"note": "pins list is a read/other org", "input": object_req("read", "acme/app", "pins", person("evil", "mallory")), "allow": false, "reason": "requires an identity of org acme"},
]

# exchange
exchange_cases := [
	{"note": "exchange/user", "input": req("exchange", "acme/app", person("acme", "carol")), "allow": true, "reason": "authenticated"},
	{"note": "exchange/CI", "input": {"action": "exchange", "subject": github_ci("acme/app", "refs/heads/x", false)}, "allow": true, "reason": "authenticated"},
	{"note": "exchange/anonymous", "input": req("exchange", "acme/app", anonymous), "allow": false, "reason": "exchange requires a valid token"},
	{"note": "exchange/already exchanged", "input": req("exchange", "acme/app", exchanged(person("acme", "carol"))), "allow": false, "reason": "cannot be exchanged again"},
]

# scoped (deploy) tokens: minting, and what the policy still decides
# after authz checked the closure
scoped_cases := [
	{"note": "scoped/mint by CI that may push", "input": mint("acme/app", github_ci("acme/app", "refs/heads/main", true)), "allow": true, "reason": "scoped token for acme/app: acme/app may push acme/app"},
	{"note": "scoped/mint by extra pusher repo", "input": mint("acme/lib", github_ci("acme/monorepo", "refs/heads/main", true)), "allow": true, "reason": "acme/monorepo may push acme/lib"},
	{"note": "scoped/mint by CI on unprotected ref", "input": mint("acme/app", github_ci("acme/app", "refs/heads/feature", false)), "allow": false, "reason": "may be minted by CI jobs that may push it"},
	{"note": "scoped/mint by CI of another repo", "input": mint("acme/app", github_ci("acme/other", "refs/heads/main", true)), "allow": false, "reason": "may be minted by"},
	{"note": "scoped/mint by listed user", "input": mint("acme/fleet", person("acme", "olivia")), "allow": true, "reason": "listed in scoped_tokens.users"},
	{"note": "scoped/mint by listed name of another org", "input": mint("acme/fleet", person("evil", "olivia")), "allow": false, "reason": "may be minted by"},
	{"note": "scoped/mint by org user who may read", "input": mint("acme/app", person("acme", "carol")), "allow": false, "reason": "may be minted by"},
	{"note": "scoped/mint by a listed user of another flake", "input": mint("acme/app", person("acme", "olivia")), "allow": false, "reason": "may be minted by"},
	{"note": "scoped/mint with an exchanged token", "input": mint("acme/app", exchanged(github_ci("acme/app", "refs/heads/main", true))), "allow": false, "reason": "cannot be exchanged again"},
	{"note": "scoped/mint with a scoped token", "input": mint("acme/app", scoped(github_ci("acme/app", "refs/heads/main", true), "acme/app")), "allow": false, "reason": "cannot be exchanged again"},
	{"note": "scoped/mint anonymous", "input": mint("acme/app", anonymous), "allow": false, "reason": "requires a valid token"},
	{"note": "scoped/read its flake", "input": req("read", "acme/fleet", scoped(person("acme", "olivia"), "acme/fleet")), "allow": true, "reason": "scoped token of acme/fleet"},
	{"note": "scoped/read its restricted flake, minted by its CI", "input": req("read", "acme/secret", scoped(github_ci("acme/secret", "refs/heads/main", true), "acme/secret")), "allow": true, "reason": "scoped token of acme/secret"},
	{"note": "scoped/read after its minter left scoped_tokens.users", "input": req("read", "acme/secret", scoped(person("acme", "carol"), "acme/secret")), "allow": false, "reason": "may no longer mint its tokens"},
	{"note": "scoped/read by a former minter who may read the flake herself", "input": req("read", "acme/fleet", scoped(person("acme", "carol"), "acme/fleet")), "allow": true, "reason": "identity of org acme"},
	{"note": "scoped/read after its minter's repository lost push", "input": req("read", "acme/secret", scoped(github_ci("acme/other", "refs/heads/main", true), "acme/secret")), "allow": false, "reason": "may no longer mint its tokens"},
	{"note": "scoped/read minted on a ref that may no longer push reads as its repository's jobs do", "input": req("read", "acme/app", scoped(github_ci("acme/app", "refs/heads/feature", false), "acme/app")), "allow": true, "reason": "CI job of the flake's own repository"},
	{"note": "scoped/read by a minter of another org", "input": req("read", "acme/fleet", scoped(person("evil", "olivia"), "acme/fleet")), "allow": false, "reason": "may no longer mint its tokens"},
	{"note": "scoped/read another flake its minter may read", "input": req("read", "acme/app", scoped(person("acme", "olivia"), "acme/fleet")), "allow": false, "reason": "a scoped token of acme/fleet reads only that flake"},
	{"note": "scoped/push its own flake", "input": req("push", "acme/app", scoped(github_ci("acme/app", "refs/heads/main", true), "acme/app")), "allow": false, "reason": "push"},
	{"note": "scoped/info", "input": req("info", "acme/app", scoped(person("acme", "olivia"), "acme/fleet")), "allow": true, "reason": "public"},
]

# malformed requests
malformed_cases := [
	{"note": "unknown action", "input": req("delete", "acme/app", person("acme", "carol")), "allow": false, "reason": "unknown action \"delete\""},
	{"note": "no action", "input": {"subject": person("acme", "carol")}, "allow": false, "reason": "unknown action \"\""},
	{"note": "read without flake", "input": {"action": "read", "subject": person("acme", "carol")}, "allow": false, "reason": "read needs a flake"},
]

test_info[c.note] if {
	some c in info_cases
	decided_as_expected(c)
}

test_read[c.note] if {
	some c in read_cases
	decided_as_expected(c)
}

test_read_list[c.note] if {
	some c in read_list_cases
	decided_as_expected(c)
}

test_push[c.note] if {
	some c in push_cases
	decided_as_expected(c)
}

test_pin[c.note] if {
	some c in pin_cases
	decided_as_expected(c)
}

test_exchange[c.note] if {
	some c in exchange_cases
	decided_as_expected(c)
}

test_scoped[c.note] if {
	some c in scoped_cases
	decided_as_expected(c)
}

test_malformed[c.note] if {
	some c in malformed_cases
	decided_as_expected(c)
}

all_cases := array.flatten([info_cases, read_cases, read_list_cases, push_cases, pin_cases, exchange_cases, scoped_cases, malformed_cases])

decided_as_expected(c) if {
	allow := authz.allow with input as c.input with data.flakes as settings with data.groups as groups
	reason := authz.reason with input as c.input with data.flakes as settings with data.groups as groups
	as_expected(c, allow, reason)
}

# as_expected holds when a decision matches a case; otherwise it prints what
# was decided (shown by `authz -check` under the failed case) and is false.
as_expected(c, allow, reason) if {
	allow == c.allow
	contains(reason, c.reason)
} else := false if {
	print(sprintf("got allow=%v reason=%q; want allow=%v and a reason containing %q", [allow, reason, c.allow, c.reason]))
}

# --- validation of the data files ---------------------------------------------

# The settings the cases above use are themselves valid.
test_case_settings_are_valid if {
	errors := authz.config_errors with data.flakes as settings with data.groups as groups
	no_errors("test settings", errors)
}

# Each case: flakes and groups data, and a substring of the one expected error.
config_error_cases := [
	{"note": "unknown key", "flakes": {"acme/typo": {"reader": {"users": ["alice"]}}}, "error": "flakes.yaml: acme/typo: unknown key \"reader\""},
	{"note": "unknown read key", "flakes": {"acme/x": {"read": {"user": ["alice"]}}}, "error": "unknown key \"user\" under read"},
	{"note": "unknown push key", "flakes": {"acme/x": {"push": {"branches": ["main"]}}}, "error": "unknown key \"branches\" under push"},
	{"note": "list is a string", "flakes": {"acme/x": {"read": {"users": "alice"}}}, "error": "read.users must be a list of non-empty strings"},
	{"note": "empty name in a list", "flakes": {"acme/x": {"push": {"repos": [""]}}}, "error": "push.repos must be a list"},
	{"note": "section is a list", "flakes": {"acme/x": {"read": ["alice"]}}, "error": "acme/x: read must be a mapping"},
	{"note": "section is null", "flakes": {"acme/x": {"read": null}}, "error": "acme/x: read must be a mapping"},
	{"note": "settings are a string", "flakes": {"acme/x": "public"}, "error": "acme/x: settings must be a mapping"},
	{"note": "upper-case key", "flakes": {"Acme/X": {}}, "error": "\"Acme/X\" is not a lower-case \"org/name\""},
	{"note": "key without org", "flakes": {"x": {}}, "error": "\"x\" is not a lower-case"},
	{"note": "unknown group", "flakes": {"acme/x": {"read": {"groups": ["ghosts"]}}}, "error": "read.groups names \"ghosts\", which groups.yaml does not define"},
	{"note": "flakes is a list", "flakes": ["acme/x"], "error": "flakes.yaml must map \"org/name\" keys to settings, not be array"},
	{"note": "flakes is a string", "flakes": "acme/x", "error": "flakes.yaml must map \"org/name\" keys to settings, not be string"},
	{"note": "flakes is a number", "flakes": 1, "error": "not be number"},
	{"note": "flakes is false", "flakes": false, "error": "not be boolean"},
	{"note": "flakes is null (an empty, blank or comment-only flakes.yaml)", "flakes": null, "error": "flakes.yaml is empty"},
	{"note": "group is not a list", "flakes": {}, "groups": {"ops": "dave"}, "error": "groups.yaml: ops must be a list"},
	{"note": "groups is a list", "flakes": {}, "groups": ["dave"], "error": "groups.yaml must map"},
]

test_config_errors[c.note] if {
	some c in config_error_cases
	errors := authz.config_errors with data.flakes as c.flakes with data.groups as object.get(c, "groups", {})
	one_error_like(errors, c.error)
}

one_error_like(errors, want) if {
	count(errors) == 1
	some e in errors
	contains(e, want)
} else := false if {
	print(sprintf("got %v; want one error containing %q", [errors, want]))
}

# An empty mapping is how a deployment says "no per-flake settings"; groups.yaml
# may be absent (see test_groups_yaml_is_optional).
test_empty_flakes_is_valid if {
	count(authz.config_errors) == 0 with data.flakes as {} with data.groups as {}
}

# A missing flakes.yaml is refused: without it, every flake whose read list
# restricts it would fall back to the org-wide read default. `with` cannot
# make data.flakes undefined, so this checks the function config_errors
# applies to {f | f := data.flakes}, which is the empty set without the
# file; internal/policy's Go tests delete the file for real.
test_flakes_absent if {
	errors := authz.flakes_file_errors(set())
	one_error_like(errors, "flakes.yaml is missing")
}

test_flakes_present_checks[note] if {
	some note, c in {
		"mapping": {"files": {{"acme/x": {}}}, "errors": set()},
		"empty mapping": {"files": {{}}, "errors": set()},
		"null": {"files": {null}, "errors": {"flakes.yaml is empty (blank or only comments): write `{}` for no per-flake settings"}},
		"list": {"files": {["acme/x"]}, "errors": {"flakes.yaml must map \"org/name\" keys to settings, not be array"}},
		"string": {"files": {"acme/x"}, "errors": {"flakes.yaml must map \"org/name\" keys to settings, not be string"}},
	}
	errors := authz.flakes_file_errors(c.files)
	same_errors(errors, c.errors)
}

same_errors(got, want) if {
	got == want
} else := false if {
	print(sprintf("got %v; want %v", [got, want]))
}

# groups.yaml only grants, so it is optional: without it (data.groups
# undefined) the shipped settings load as long as no read.groups names a group.
test_groups_yaml_is_optional if {
	count(authz.config_errors) == 0 with data.flakes as {"acme/x": {"read": {"users": ["alice"]}}}
}

# ... but a flake that names a group needs it.
test_groups_yaml_needed_by_read_groups if {
	errors := authz.config_errors with data.flakes as {"acme/x": {"read": {"groups": ["ops"]}}}
	one_error_like(errors, "read.groups names \"ops\", which groups.yaml does not define")
}

# An empty groups.yaml (null) is refused like an empty flakes.yaml.
test_groups_yaml_empty if {
	errors := authz.config_errors with data.flakes as {} with data.groups as null
	one_error_like(errors, "groups.yaml must map group names")
}

test_case_notes_are_unique if {
	count({c.note | some c in all_cases}) == count(all_cases)
	count({c.note | some c in config_error_cases}) == count(config_error_cases)
}

# The data files of this directory are valid (the engine would refuse them
# otherwise; this test says why).
test_this_directorys_data_is_valid if no_errors("this directory", authz.config_errors)

no_errors(what, errors) if {
	count(errors) == 0
} else := false if {
	print(sprintf("%s: %v", [what, errors]))
}
