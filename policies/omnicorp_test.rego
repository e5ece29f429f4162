# The omnicorp example, against the flakes.yaml shipped in this directory:
# only the trusted users alice and bob may pull omnicorp/super-duper-secure,
# and anyone in omnicorp may pull omnicorp/dev-environments.
package flakegate.omnicorp_test

import data.flakegate.authz

user(org, name) := {
	"authenticated": true,
	"issuer": "https://login.omnicorp.example",
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

ci(repo, ref, protected) := {
	"authenticated": true,
	"issuer": "https://token.actions.githubusercontent.com",
	"provider": "github",
	"kind": "ci",
	"org": split(repo, "/")[0],
	"repo": repo,
	"user": "alice",
	"ref": ref,
	"ref_protected": protected,
	"environment": "",
	"via": "idp",
	"claims": {},
}

pull(flake, subject) := {
	"action": "read",
	"flake": {"org": split(flake, "/")[0], "name": split(flake, "/")[1]},
	"object": {"kind": "nar", "hash": "1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s"},
	"request": {"method": "GET", "path": sprintf("/%s/nar/1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s.nar.zst", [flake])},
	"subject": subject,
}

push(flake, subject) := object.union(pull(flake, subject), {"action": "push", "request": {"method": "PUT"}})

secure := "omnicorp/super-duper-secure"

devenv := "omnicorp/dev-environments"

cases := [
	{"note": "alice pulls super-duper-secure", "input": pull(secure, user("omnicorp", "alice")), "allow": true},
	{"note": "bob pulls super-duper-secure", "input": pull(secure, user("omnicorp", "bob")), "allow": true},
	{"note": "carol (omnicorp, not trusted) cannot pull super-duper-secure", "input": pull(secure, user("omnicorp", "carol")), "allow": false},
	{"note": "an alice of another org cannot pull super-duper-secure", "input": pull(secure, user("evilcorp", "alice")), "allow": false},
	{"note": "omnicorp CI of another repo cannot pull super-duper-secure", "input": pull(secure, ci("omnicorp/website", "refs/heads/main", true)), "allow": false},
	{"note": "super-duper-secure's own CI pulls it", "input": pull(secure, ci(secure, "refs/heads/feature", false)), "allow": true},
	{"note": "super-duper-secure's own CI pushes from main", "input": push(secure, ci(secure, "refs/heads/main", true)), "allow": true},
	{"note": "alice cannot push super-duper-secure", "input": push(secure, user("omnicorp", "alice")), "allow": false},
	{"note": "anonymous cannot pull super-duper-secure", "input": pull(secure, {"authenticated": false}), "allow": false},
	{"note": "carol pulls dev-environments", "input": pull(devenv, user("omnicorp", "carol")), "allow": true},
	{"note": "alice pulls dev-environments", "input": pull(devenv, user("omnicorp", "alice")), "allow": true},
	{"note": "omnicorp CI of another repo pulls dev-environments", "input": pull(devenv, ci("omnicorp/website", "refs/pull/7/merge", false)), "allow": true},
	{"note": "evilcorp user cannot pull dev-environments", "input": pull(devenv, user("evilcorp", "mallory")), "allow": false},
	{"note": "evilcorp CI cannot pull dev-environments", "input": pull(devenv, ci("evilcorp/dev-environments", "refs/heads/main", true)), "allow": false},
	{"note": "anonymous cannot pull dev-environments", "input": pull(devenv, {"authenticated": false}), "allow": false},
	{"note": "dev-environments' CI cannot push from an unprotected ref", "input": push(devenv, ci(devenv, "refs/heads/wip", false)), "allow": false},
]

test_omnicorp[c.note] if {
	some c in cases
	allow := authz.allow with input as c.input
	reason := authz.reason with input as c.input
	as_expected(c, allow, reason)
}

as_expected(c, allow, reason) if {
	allow == c.allow
} else := false if {
	print(sprintf("got allow=%v (%s); want allow=%v", [allow, reason, c.allow]))
}

# dev-environments' explicit entry behaves exactly like an omnicorp flake
# without an entry.
test_dev_environments_is_the_default[name] if {
	some name, subject in {
		"omnicorp user": user("omnicorp", "carol"),
		"omnicorp CI": ci("omnicorp/website", "refs/heads/main", true),
		"evilcorp user": user("evilcorp", "mallory"),
	}
	explicit := authz.allow with input as pull(devenv, subject)
	unlisted := authz.allow with input as pull("omnicorp/not-in-flakes-yaml", subject)
	explicit == unlisted
}

test_denied_pull_says_why if {
	r := authz.reason with input as pull(secure, user("omnicorp", "carol"))
	r == "omnicorp/super-duper-secure is readable only by the readers listed in flakes.yaml"
}
