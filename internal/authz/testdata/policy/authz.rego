# A small policy for the authz tests (the shipped one lives in policies/).
#   info:     anyone
#   read:     the flake's org, or only the users listed as its readers in
#             data.flakes; anyone for a flake marked public
#   push:     CI jobs of the flake's own repository on a protected ref
#   exchange: subjects authenticated with an identity-provider token
package flakegate.authz

default allow := false

flake := sprintf("%s/%s", [input.flake.org, input.flake.name])

allow if input.action == "info"

allow if {
	input.action == "read"
	input.subject.authenticated
	not data.flakes[flake].readers
	input.subject.org == input.flake.org
}

allow if {
	input.action == "read"
	input.subject.authenticated
	input.subject.user in data.flakes[flake].readers
}

allow if {
	input.action == "read"
	data.flakes[flake].public
}

allow if {
	input.action == "push"
	input.subject.kind == "ci"
	input.subject.repo == flake
	input.subject.ref_protected
}

allow if {
	input.action == "exchange"
	input.subject.authenticated
	input.subject.via == "idp"
}

reason := "push requires a protected ref" if {
	input.action == "push"
	input.subject.repo == flake
	not input.subject.ref_protected
} else := "push requires a CI job of the flake's own repository" if {
	input.action == "push"
	not allow
} else := sprintf("%s is readable only by its listed readers", [flake]) if {
	input.action == "read"
	data.flakes[flake].readers
	not allow
} else := "a cache token cannot be exchanged again" if {
	input.action == "exchange"
	input.subject.via == "exchange"
}
