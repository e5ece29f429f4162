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
#             to push_ok.
#   read      every authenticated identity (CI job or user) of the flake's org.
#             CI jobs of the flake's own repository can always read it (also
#             from unprotected refs), and so can repositories allowed to push.
#   pin       whoever may push may pin (PUT/DELETE /{org}/{flake}/_pins/{name});
#             listing the pins (GET …/_pins) is a read.
#   exchange  every authenticated identity with an identity-provider token;
#             an exchanged token cannot be exchanged again (no endless renewal).
#             A scoped (deploy) token (input.scope: one flake, closure roots)
#             may be minted by whoever may push that flake (its CI job) and
#             by the users listed under scoped_tokens.users in flakes.yaml.
#   scoped    a scoped token (input.subject.scope) reads its flake only; authz
#             already refused everything outside the closure of its roots
#             (404) and every push (403) before asking this policy.
#
# Per-flake settings come from flakes.yaml (data.flakes), keyed "org/name":
#   read:  {users, groups, repos, orgs}   REPLACES the org-wide read default
#   push:  {repos, refs, environments}    ADDS pushers, refs, environments
# flakes.yaml is required: a missing, empty or non-mapping flakes.yaml is a
# config error, since without its read lists restricted flakes would fall
# back to the org-wide default. groups.yaml is optional (groups only grant).
# `config_errors` (bottom of this file) validates flakes.yaml and groups.yaml.
# The policy engine evaluates it once whenever it loads the directory and
# refuses a set with errors, exactly like a Rego syntax error: the previous
# set keeps serving and the error is logged. So a typo such as `reader:` can
# never silently fall back to the wider org-wide default.
#
# Every rule below runs on each cache request: keep them cheap (no
# iteration over all flakes, reasons built only for the branch taken). The
# engine caches decisions by the input fields the rules read; reading
# `input` as a whole (object.get(input, …), walk(input)) or calling
# time.now_ns turns that cache off, so read fields by name.
package flakegate.authz

default allow := false

allow if input.action == "info"

allow if {
	input.action == "read"
	read_grant
	not scope_elsewhere
}

allow if {
	input.action == "push"
	push_ok
}

# Pins keep closures from garbage collection: whoever may push may pin.
allow if {
	input.action == "pin"
	push_ok
}

allow if {
	input.action == "exchange"
	authenticated
	not exchanged
	not input.scope.flake
}

allow if {
	input.action == "exchange"
	authenticated
	not exchanged
	input.scope.flake == flake_id
	scoped_mint_grant
}

# reason explains the decision: what granted it, or why it was denied.
reason := grant if allow

reason := denial if not allow

# --- the request -------------------------------------------------------------

action := input.action

default action := ""

flake_org := input.flake.org

flake_id := concat("/", [input.flake.org, input.flake.name])

valid_flake if {
	input.flake.org != ""
	input.flake.name != ""
}

# --- the subject -------------------------------------------------------------

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

# scoped: the subject's token is a scoped (deploy) token.
scoped if input.subject.scope.flake

scope_elsewhere if {
	scoped
	input.subject.scope.flake != flake_id
}

same_org if {
	input.subject.org != ""
	input.subject.org == flake_org
}

subject_repo := input.subject.repo

default subject_repo := ""

subject_ref := input.subject.ref

default subject_ref := ""

subject_user := lower(input.subject.user)

# --- this flake's settings (flakes.yaml) -----------------------------------------

settings := data.flakes[flake_id]

default settings := {}

has_read_list if settings.read

read_users contains lower(u) if some u in settings.read.users

read_repos contains lower(r) if some r in settings.read.repos

read_orgs contains lower(o) if some o in settings.read.orgs

in_read_group contains g if {
	some g in settings.read.groups
	some u in data.groups[g]
	lower(u) == subject_user
}

scoped_token_users contains lower(u) if some u in settings.scoped_tokens.users

pusher_repos contains flake_id

pusher_repos contains lower(r) if some r in settings.push.repos

# --- read --------------------------------------------------------------------

# read_grant is what lets the subject read this flake (first match wins).
read_grant := sprintf("scoped token of %s (authz checked the closure)", [flake_id]) if {
	valid_flake
	scoped
	input.subject.scope.flake == flake_id
	may_mint
} else := "CI job of the flake's own repository" if {
	valid_flake
	ci
	input.subject.repo == flake_id
} else := sprintf("CI job of %s, which may push to %s", [input.subject.repo, flake_id]) if {
	valid_flake
	ci
	input.subject.repo in pusher_repos
} else := sprintf("identity of org %s", [flake_org]) if {
	valid_flake
	authenticated
	not has_read_list
	same_org
} else := sprintf("user %s of org %s, listed in read.users", [input.subject.user, flake_org]) if {
	valid_flake
	user
	same_org
	subject_user in read_users
} else := sprintf("user %s of org %s, in read.groups %s", [input.subject.user, flake_org, concat(", ", in_read_group)]) if {
	valid_flake
	user
	same_org
	count(in_read_group) > 0
} else := sprintf("CI job of %s, listed in read.repos", [input.subject.repo]) if {
	valid_flake
	ci
	input.subject.repo in read_repos
} else := sprintf("identity of org %s, listed in read.orgs", [input.subject.org]) if {
	valid_flake
	authenticated
	input.subject.org != ""
	input.subject.org in read_orgs
}

# --- push --------------------------------------------------------------------

push_ok if {
	not scoped
	ci_pusher
}

# ci_pusher: a CI job of a repository that may push this flake, on a ref
# that may push.
ci_pusher if {
	valid_flake
	ci
	input.subject.repo in pusher_repos
	push_ref_allowed
}

push_ref_allowed if input.subject.ref_protected == true

push_ref_allowed if {
	some pattern in settings.push.refs
	glob.match(pattern, ["/"], input.subject.ref)
}

push_ref_allowed if {
	input.subject.environment != ""
	input.subject.environment in settings.push.environments
	environment_protected
}

# A GitLab job names any environment it likes (an environment that does not
# exist is created), and only a protected one limits who may deploy to it:
# the token says which (environment_protected). GitHub's token cannot say;
# an environment listed for GitHub must have protection rules.
environment_protected if input.subject.provider != "gitlab"

environment_protected if input.subject.claims.environment_protected == "true"

# --- scoped (deploy) tokens ----------------------------------------------------

scoped_mint_grant := sprintf("%s may push %s", [input.subject.repo, flake_id]) if {
	ci_pusher
} else := sprintf("user %s of org %s, listed in scoped_tokens.users", [input.subject.user, flake_org]) if {
	valid_flake
	user
	same_org
	subject_user in scoped_token_users
}

# may_mint: the subject may mint scoped tokens of this flake as the policy
# stands now. A scoped token carries its minter as its subject, and reads
# only while the minter still may: a user removed from scoped_tokens.users,
# or a repository from push.repos, ends the deploy tokens they minted at
# the next reload, as an unscoped token would end (review r6, 2026-12-05:
# they read on for up to 90 days).
may_mint if scoped_mint_grant

# --- reasons -----------------------------------------------------------------

grant := "cache info is public" if {
	input.action == "info"
} else := read_grant if {
	input.action == "read"
} else := sprintf("CI job of %s on %s", [input.subject.repo, input.subject.ref]) if {
	input.action in {"push", "pin"}
} else := sprintf("scoped token for %s: %s", [flake_id, scoped_mint_grant]) if {
	input.action == "exchange"
	input.scope.flake
} else := "authenticated identity-provider token" if {
	input.action == "exchange"
}

denial := sprintf("unknown action %q", [action]) if {
	not action in {"info", "read", "push", "pin", "exchange"}
} else := sprintf("%s needs a flake (org/name)", [action]) if {
	action in {"read", "push", "pin"}
	not valid_flake
} else := sprintf("%s requires a valid token", [action]) if {
	not authenticated
} else := sprintf("a scoped token of %s reads only that flake", [input.subject.scope.flake]) if {
	action == "read"
	scope_elsewhere
} else := sprintf("the minter of this scoped token of %s may no longer mint its tokens (not a CI job that may push it, nor listed in its scoped_tokens.users)", [flake_id]) if {
	action == "read"
	scoped
	input.subject.scope.flake == flake_id
	not may_mint
} else := push_denial if {
	action in {"push", "pin"}
} else := read_denial if {
	action == "read"
} else := "an exchanged token cannot be exchanged again" if {
	action == "exchange"
	exchanged
} else := sprintf("a scoped token for %s may be minted by CI jobs that may push it or by users listed in its scoped_tokens.users", [flake_id]) if {
	action == "exchange"
	input.scope.flake
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

# --- validation of the data files (evaluated at load, not per request) --------

# config_errors lists what is wrong with flakes.yaml / groups.yaml. It must
# not depend on input: the engine evaluates it once per load and refuses a
# policy set for which it is not empty.
#
# flakes.yaml is REQUIRED. A read list replaces the org-wide default, mostly
# to narrow it, so a set loaded without them would let every identity of
# omnicorp read omnicorp/super-duper-secure. A deleted file
# (data.flakes undefined), an empty, blank or comment-only one (YAML null)
# and anything but a mapping are therefore errors, never "no settings": a
# deployment without per-flake settings ships `{}`. So `flakes` has no
# default here; the per-request `settings` default above is only reached in
# a set that passed this check.
flakes := data.flakes

# flakes_file_errors checks what flakes.yaml loaded as: files is the set of
# the values of data.flakes, empty when there is no such file.
flakes_file_errors(files) := {"flakes.yaml is missing: it must exist (`{}` for no per-flake settings); without its read lists every restricted flake would fall back to the org-wide read default"} if {
	count(files) == 0
} else := {"flakes.yaml is empty (blank or only comments): write `{}` for no per-flake settings"} if {
	files == {null}
} else := {sprintf("flakes.yaml must map \"org/name\" keys to settings, not be %s", [type_name(f)]) |
	some f in files
	not is_object(f)
}

# groups.yaml is optional (not shipped): groups only grant (read.groups adds
# readers to a flake's read list), so a set without it can only deny more.
# A read.groups entry naming a group that groups.yaml does not define is an
# error below, so deleting groups.yaml while flakes.yaml uses it is refused
# too. A groups.yaml that exists must be a mapping (an empty one is refused).
groups := data.groups

default groups := {}

known_keys := {
	"description": set(),
	"read": {"users", "groups", "repos", "orgs"},
	"push": {"repos", "refs", "environments"},
	"scoped_tokens": {"users"},
}

string_list(l) if {
	is_array(l)
	every x in l {
		is_string(x)
		x != ""
	}
}

config_errors contains e if some e in flakes_file_errors({f | f := data.flakes})

config_errors contains "groups.yaml must map group names to lists of user names" if not is_object(groups)

config_errors contains sprintf("flakes.yaml: %q is not a lower-case \"org/name\"", [flake]) if {
	is_object(flakes)
	some flake, _ in flakes
	not regex.match(`^[a-z0-9][a-z0-9._-]*/[a-z0-9][a-z0-9._-]*$`, flake)
}

config_errors contains sprintf("flakes.yaml: %s: settings must be a mapping", [flake]) if {
	is_object(flakes)
	some flake, s in flakes
	not is_object(s)
}

config_errors contains sprintf("flakes.yaml: %s: unknown key %q", [flake, k]) if {
	is_object(flakes)
	some flake, s in flakes
	is_object(s)
	some k, _ in s
	not k in object.keys(known_keys)
}

config_errors contains sprintf("flakes.yaml: %s: %s must be a mapping", [flake, section]) if {
	is_object(flakes)
	some flake, s in flakes
	some section in {"read", "push", "scoped_tokens"}
	value := s[section]
	not is_object(value)
}

config_errors contains sprintf("flakes.yaml: %s: unknown key %q under %s", [flake, k, section]) if {
	is_object(flakes)
	some flake, s in flakes
	some section in {"read", "push", "scoped_tokens"}
	is_object(s[section])
	some k, _ in s[section]
	not k in known_keys[section]
}

config_errors contains sprintf("flakes.yaml: %s: %s.%s must be a list of non-empty strings", [flake, section, k]) if {
	is_object(flakes)
	some flake, s in flakes
	some section in {"read", "push", "scoped_tokens"}
	is_object(s[section])
	some k, value in s[section]
	k in known_keys[section]
	not string_list(value)
}

# Every push.refs pattern is compiled once, at load: the set is evaluated
# with strict builtin errors, so a malformed glob (an unclosed "[") refuses
# the set here, with glob.match's message, instead of making every push from
# an unprotected ref of that flake an evaluation error (503). The body never
# holds (no ref is empty); it exists for the compilation.
config_errors contains sprintf("flakes.yaml: %s: push.refs %q", [flake, p]) if {
	is_object(flakes)
	some flake, s in flakes
	is_object(s.push)
	some p in s.push.refs
	is_string(p)
	glob.match(p, ["/"], "")
	p == ""
}

config_errors contains sprintf("flakes.yaml: %s: read.groups names %q, which groups.yaml does not define as a list of users", [flake, g]) if {
	is_object(flakes)
	some flake, s in flakes
	some g in s.read.groups
	not string_list(object.get(groups, g, null))
}

config_errors contains sprintf("groups.yaml: %s must be a list of non-empty user names", [g]) if {
	is_object(groups)
	some g, members in groups
	not string_list(members)
}
