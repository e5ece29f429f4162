# The reference policy of bench/run.sh for opa-envoy-plugin: flakegate's
# shipped policy (policies/flakegate.rego) written the way an OPA + Envoy
# deployment would write it, with the token verified in Rego by
# io.jwt.decode_verify against the issuer's JWKS (data.bench.jwks).
#
# Same decision as flakegate's for CI tokens (GitHub Actions claims) on flake
# URLs: info is public; read by a CI job of the flake's own repository or of
# a repository allowed to push, by any identity of the flake's org unless
# flakes.yaml lists readers, or by listed repos/orgs; push by a CI job of the
# flake's repository (or push.repos) on a protected ref. A denied read is
# 404, a missing/invalid token 401, a denied push 403. The subject goes to
# the upstream in x-flakegate-subject, as flakegate's authz does.
package flakegate.authz

import rego.v1

http_request := input.attributes.request.http

# --- the token: Bearer, or the password of Basic (what Nix sends from a netrc)

authorization := http_request.headers.authorization

token := substring(authorization, 7, -1) if startswith(authorization, "Bearer ")

token := password if {
	startswith(authorization, "Basic ")
	decoded := base64.decode(substring(authorization, 6, -1))
	password := substring(decoded, indexof(decoded, ":") + 1, -1)
}

verified := io.jwt.decode_verify(token, {
	"cert": data.bench.jwks,
	"iss": data.bench.issuer,
	"aud": data.bench.audience,
})

authenticated if verified[0] == true

# A token that does not verify is refused, never treated as anonymous.
token_invalid if {
	authorization
	not authenticated
}

claims := verified[2] if authenticated

ci if {
	authenticated
	claims.repository != ""
}

subject_repo := lower(claims.repository)

subject_org := lower(claims.repository_owner)

ref_protected if claims.ref_protected == "true"

# --- the request: /{org}/{flake}/nix-cache-info | {hash}.narinfo | nar/{file}

segments := input.parsed_path

flake_org := segments[0]

flake_id := concat("/", [segments[0], segments[1]])

last := segments[count(segments) - 1]

valid_flake if {
	count(segments) >= 3
	regex.match(`^[a-z0-9][a-z0-9._-]*$`, segments[0])
	regex.match(`^[a-z0-9][a-z0-9._-]*$`, segments[1])
}

object_kind := "cache-info" if {
	count(segments) == 3
	last == "nix-cache-info"
} else := "narinfo" if {
	count(segments) == 3
	regex.match(`^[0-9a-df-np-sv-z]{32}\.narinfo$`, last)
} else := "nar" if {
	count(segments) == 4
	segments[2] == "nar"
	regex.match(`^[0-9a-df-np-sv-z]{52}\.nar(\.xz|\.zst|\.bz2)?$`, last)
}

action := "info" if {
	object_kind == "cache-info"
} else := "read" if {
	http_request.method in {"GET", "HEAD"}
} else := "push" if {
	http_request.method == "PUT"
}

# --- per-flake settings (the same flakes.yaml, as data.flakes)

settings := data.flakes[flake_id]

default settings := {}

has_read_list if settings.read

pusher_repos contains flake_id

pusher_repos contains lower(r) if some r in settings.push.repos

# --- the decision

default allow := false

allow if {
	valid_flake
	action == "info"
	not token_invalid
}

allow if {
	valid_flake
	action == "read"
	read_grant
}

allow if {
	valid_flake
	action == "push"
	ci
	subject_repo in pusher_repos
	ref_protected
}

read_grant if {
	ci
	subject_repo in pusher_repos
}

read_grant if {
	authenticated
	not has_read_list
	subject_org == flake_org
}

read_grant if {
	ci
	some r in settings.read.repos
	lower(r) == subject_repo
}

read_grant if {
	authenticated
	some o in settings.read.orgs
	lower(o) == subject_org
}

status := 401 if {
	not authenticated
} else := 404 if {
	action == "read"
} else := 403

subject := sprintf("github:%s@%s", [subject_repo, claims.ref]) if authenticated

default subject := "anonymous"

result := {"allowed": true, "headers": {"x-flakegate-subject": subject}} if allow

result := {"allowed": false, "http_status": status} if not allow
