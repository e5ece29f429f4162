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

with_env(subject, env) := object.union(subject, {"environment": env})

# --- requests -----------------------------------------------------------------

req(action, flake, subject) := {
	"action": action,
	"flake": {"org": split(flake, "/")[0], "name": split(flake, "/")[1]},
	"object": {"kind": "narinfo", "hash": "0c6kzph7l0dcbfmjap64f0czdafn3b7x"},
	"request": {"method": "GET", "path": sprintf("/%s/0c6kzph7l0dcbfmjap64f0czdafn3b7x.narinfo", [flake])},
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
	"acme/typo": {"reader": {"users": ["alice"]}},
	"acme/badlist": {"read": {"users": "alice"}},
	"acme/nogroup": {"read": {"groups": ["ghosts"]}},
	"acme/badpush": {"push": {"branches": ["main"]}},
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
	{"note": "read list/group member", "input": req("read", "acme/secret", person("acme", "dave")), "allow": true, "reason": "in group ops"},
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
]

# broken settings deny instead of falling back to the default
settings_cases := [
	{"note": "settings/unknown key", "input": req("read", "acme/typo", person("acme", "carol")), "allow": false, "reason": "unknown key \"reader\""},
	{"note": "settings/unknown key blocks push", "input": req("push", "acme/typo", github_ci("acme/typo", "refs/heads/main", true)), "allow": false, "reason": "unknown key \"reader\""},
	{"note": "settings/list is a string", "input": req("read", "acme/badlist", person("acme", "alice")), "allow": false, "reason": "read.users must be a list"},
	{"note": "settings/unknown group", "input": req("read", "acme/nogroup", person("acme", "alice")), "allow": false, "reason": "does not define"},
	{"note": "settings/unknown push key", "input": req("push", "acme/badpush", github_ci("acme/badpush", "refs/heads/main", true)), "allow": false, "reason": "unknown key \"branches\" under push"},
]

# exchange
exchange_cases := [
	{"note": "exchange/user", "input": req("exchange", "acme/app", person("acme", "carol")), "allow": true, "reason": "authenticated"},
	{"note": "exchange/CI", "input": {"action": "exchange", "subject": github_ci("acme/app", "refs/heads/x", false)}, "allow": true, "reason": "authenticated"},
	{"note": "exchange/anonymous", "input": req("exchange", "acme/app", anonymous), "allow": false, "reason": "exchange requires a valid token"},
	{"note": "exchange/already exchanged", "input": req("exchange", "acme/app", exchanged(person("acme", "carol"))), "allow": false, "reason": "cannot be exchanged again"},
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

test_settings[c.note] if {
	some c in settings_cases
	decided_as_expected(c)
}

test_exchange[c.note] if {
	some c in exchange_cases
	decided_as_expected(c)
}

test_malformed[c.note] if {
	some c in malformed_cases
	decided_as_expected(c)
}

all_cases := array.concat(info_cases, array.concat(read_cases, array.concat(read_list_cases, array.concat(push_cases, array.concat(settings_cases, array.concat(exchange_cases, malformed_cases))))))

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

test_flakes_data_must_be_a_mapping if {
	inp := req("read", "acme/app", person("acme", "carol"))
	not authz.allow with input as inp with data.flakes as ["acme/app"]
	contains(authz.reason, "must map") with input as inp with data.flakes as ["acme/app"]
}

test_case_notes_are_unique if {
	count({c.note | some c in all_cases}) == count(all_cases)
}

# Every entry of this directory's flakes.yaml is well formed and lower case.
test_flakes_yaml_entries_are_valid[flake] if {
	some flake, _ in data.flakes
	flake == lower(flake)
	[org, name] := split(flake, "/")
	name != ""
	problems := authz.config_problems with input as req("read", flake, person(org, "nobody"))
	no_problems(flake, problems)
}

no_problems(flake, problems) if {
	count(problems) == 0
} else := false if {
	print(sprintf("flakes.yaml entry %s: %v", [flake, problems]))
}
