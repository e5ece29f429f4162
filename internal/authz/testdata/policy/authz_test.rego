package flakegate.authz_test

import data.flakegate.authz

ci(repo, protected) := {
	"authenticated": true, "kind": "ci", "provider": "github",
	"org": split(repo, "/")[0], "repo": repo, "ref_protected": protected,
}

test_push_protected_ref if {
	authz.allow with input as {"action": "push", "flake": {"org": "omnicorp", "name": "app"}, "subject": ci("omnicorp/app", true)}
}

test_push_unprotected_ref_denied if {
	not authz.allow with input as {"action": "push", "flake": {"org": "omnicorp", "name": "app"}, "subject": ci("omnicorp/app", false)}
	authz.reason == "push requires a protected ref" with input as {"action": "push", "flake": {"org": "omnicorp", "name": "app"}, "subject": ci("omnicorp/app", false)}
}

test_read_secure_only_listed if {
	not authz.allow with input as {"action": "read", "flake": {"org": "omnicorp", "name": "super-duper-secure"}, "subject": ci("omnicorp/app", true)}
}
