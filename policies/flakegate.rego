# flakegate default policy: who may read, push and exchange tokens for which flake.
#
# The authz service evaluates data.flakegate.authz once per request and flake
# with the input documented in DESIGN.md ("Policy contract"), reading `allow`
# (boolean) and `reason` (a string explaining the decision, for logs).
#
# Defaults (policies/README.md explains the choices):
#   info      anyone, even without a token: nix-cache-info holds no secret and
#             Nix fetches it before it uses a substituter at all.
#   push      only CI jobs (GitHub Actions, GitLab CI) of the flake's own
#             repository, on a protected ref. The job's token may be the CI
#             identity provider's or the cache token it was exchanged for
#             (same subject, re-signed by flakegate, lifetime capped, revocable
#             with denylist.yaml): a job exchanges once and pushes for as long
#             as its build runs. To require the IdP token, add `not exchanged`
#             to the push rule.
#   read      every authenticated identity (CI job or user) of the flake's org.
#             CI jobs of the flake's own repository can always read it (also
#             from unprotected refs), and so can repositories allowed to push.
#   exchange  every authenticated identity with an identity-provider token;
#             an exchanged token cannot be exchanged again (no endless renewal).
#
# Per-flake settings come from flakes.yaml (data.flakes), keyed "org/name":
#   read:  {users, groups, repos, orgs}   REPLACES the org-wide read default
#   push:  {repos, refs, environments}    ADDS pushers, refs, environments
# A malformed entry (unknown key, wrong type, unknown group) denies read and
# push of that flake with a reason naming the mistake: a typo must never fall
# back to the wider org-wide default.
package flakegate.authz

default allow := false

allow if action == "info"

allow if {
	action == "read"
	flake_ok
	count(read_grants) > 0
}

allow if {
	action == "push"
	flake_ok
	ci
	input.subject.repo in pusher_repos
	push_ref_allowed
}

allow if {
	action == "exchange"
	authenticated
	not exchanged
}

# reason explains the decision: what granted it, or why it was denied.
reason := concat("; ", sort(grants)) if allow

reason := denial if not allow

# --- the request -----------------------------------------------------------

actions := {"info", "read", "push", "exchange"}

action := object.get(input, "action", "")

flake_org := input.flake.org

flake_id := concat("/", [input.flake.org, input.flake.name])

valid_flake if {
	is_string(input.flake.org)
	input.flake.org != ""
	is_string(input.flake.name)
	input.flake.name != ""
}

# flake_ok: a read or push can be considered at all.
flake_ok if {
	valid_flake
	authenticated
	count(config_problems) == 0
}

# --- the subject -----------------------------------------------------------

authenticated if input.subject.authenticated == true

ci if {
	authenticated
	input.subject.kind == "ci"
}

user if {
	authenticated
	input.subject.kind == "user"
}

exchanged if input.subject.via == "exchange"

same_org if {
	is_string(input.subject.org)
	input.subject.org != ""
	input.subject.org == flake_org
}

# --- per-flake settings (flakes.yaml) ----------------------------------------

flakes := data.flakes

default flakes := {}

settings := flakes[flake_id]

default settings := {}

groups := data.groups

default groups := {}

known_keys := {
	"description": set(),
	"read": {"users", "groups", "repos", "orgs"},
	"push": {"repos", "refs", "environments"},
}

# setting(section, key) is a list from the flake's settings, [] when absent.
setting(section, key) := l if {
	l := settings[section][key]
	is_array(l)
} else := []

has_read_list if "read" in object.keys(settings)

string_list(l) if {
	is_array(l)
	every x in l {
		is_string(x)
		x != ""
	}
}

config_problems contains "flakes.yaml must map \"org/name\" keys to settings" if not is_object(flakes)

config_problems contains sprintf("flakes.yaml: %s: settings must be a mapping", [flake_id]) if {
	is_object(flakes)
	not is_object(settings)
}

config_problems contains sprintf("flakes.yaml: %s: unknown key %q", [flake_id, k]) if {
	is_object(settings)
	some k, _ in settings
	not k in object.keys(known_keys)
}

config_problems contains sprintf("flakes.yaml: %s: %s must be a mapping", [flake_id, section]) if {
	some section in {"read", "push"}
	value := settings[section]
	not is_object(value)
}

config_problems contains sprintf("flakes.yaml: %s: unknown key %q under %s", [flake_id, k, section]) if {
	some section in {"read", "push"}
	is_object(settings[section])
	some k, _ in settings[section]
	not k in known_keys[section]
}

config_problems contains sprintf("flakes.yaml: %s: %s.%s must be a list of non-empty strings", [flake_id, section, k]) if {
	some section in {"read", "push"}
	some k, value in settings[section]
	k in known_keys[section]
	not string_list(value)
}

config_problems contains sprintf("flakes.yaml: %s: read.groups names %q, which groups.yaml does not define as a list of users", [flake_id, g]) if {
	some g in setting("read", "groups")
	not string_list(object.get(groups, g, null))
}

# --- read --------------------------------------------------------------------

read_grants contains "CI job of the flake's own repository" if {
	ci
	input.subject.repo == flake_id
}

read_grants contains sprintf("CI job of %s, which may push to %s", [input.subject.repo, flake_id]) if {
	ci
	input.subject.repo != flake_id
	input.subject.repo in pusher_repos
}

read_grants contains sprintf("identity of org %s", [flake_org]) if {
	not has_read_list
	same_org
}

read_grants contains sprintf("user %s of org %s, listed in read.users", [input.subject.user, flake_org]) if {
	user
	same_org
	lower(input.subject.user) in {lower(u) | some u in setting("read", "users")}
}

read_grants contains sprintf("user %s of org %s, in group %s listed in read.groups", [input.subject.user, flake_org, g]) if {
	user
	same_org
	some g in setting("read", "groups")
	lower(input.subject.user) in {lower(u) | some u in groups[g]}
}

read_grants contains sprintf("CI job of %s, listed in read.repos", [input.subject.repo]) if {
	ci
	input.subject.repo in {lower(r) | some r in setting("read", "repos")}
}

read_grants contains sprintf("identity of org %s, listed in read.orgs", [input.subject.org]) if {
	authenticated
	input.subject.org != ""
	input.subject.org in {lower(o) | some o in setting("read", "orgs")}
}

# --- push --------------------------------------------------------------------

pusher_repos := {flake_id} | {lower(r) | some r in setting("push", "repos")}

push_ref_allowed if input.subject.ref_protected == true

push_ref_allowed if {
	some pattern in setting("push", "refs")
	glob.match(pattern, ["/"], input.subject.ref)
}

push_ref_allowed if {
	input.subject.environment != ""
	input.subject.environment in setting("push", "environments")
}

# --- reasons -----------------------------------------------------------------

grants contains "cache info is public" if action == "info"

grants contains g if {
	action == "read"
	some g in read_grants
}

grants contains sprintf("CI job of %s on %s", [input.subject.repo, input.subject.ref]) if action == "push"

grants contains "authenticated identity-provider token" if action == "exchange"

subject_repo := object.get(input.subject, "repo", "")

subject_ref := object.get(input.subject, "ref", "")

denial := sprintf("unknown action %q", [action]) if {
	not action in actions
} else := sprintf("%s needs a flake (org/name)", [action]) if {
	action in {"read", "push"}
	not valid_flake
} else := sprintf("%s requires a valid token", [action]) if {
	not authenticated
} else := sprintf("policy settings for %s are invalid: %s", [flake_id, concat("; ", sort(config_problems))]) if {
	action in {"read", "push"}
	count(config_problems) > 0
} else := push_denial if {
	action == "push"
} else := read_denial if {
	action == "read"
} else := "an exchanged token cannot be exchanged again" if {
	action == "exchange"
	exchanged
} else := "denied by policy"

push_denial := "push requires a CI job token (GitHub Actions or GitLab CI); users cannot push" if {
	not ci
} else := sprintf("push to %s requires a CI job of that repository or of one listed in push.repos, not of %q", [flake_id, subject_repo]) if {
	not input.subject.repo in pusher_repos
} else := sprintf("push requires a protected ref (or one allowed by push.refs / push.environments); %q is not", [subject_ref]) if {
	not push_ref_allowed
} else := "push denied"

read_denial := sprintf("%s is readable only by the readers listed in flakes.yaml", [flake_id]) if {
	has_read_list
} else := sprintf("read of %s requires an identity of org %s", [flake_id, flake_org])
