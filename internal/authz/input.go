package authz

import (
	"github.com/flakegate/flakegate/internal/identity"
	"github.com/flakegate/flakegate/internal/nixname"
	"github.com/flakegate/flakegate/internal/route"
)

// BuildInput renders the policy input (DESIGN.md "Policy contract") for a
// routed request and subject. It is pure.
//
//   - "flake" is present only when the request names a flake; a union read is
//     evaluated once per owning flake with SetFlake.
//   - "owners" lists the owning flakes ("org/name") of a union read.
//   - "scope" is the scope a token exchange asks for (Request.Scope); its
//     flake is then the input's "flake".
//   - "object" always has "kind" and "hash" ("" when the kind has none); a
//     NAR also has "file" (the file name below nar/), a pin "name".
//
// The objects made of strings only (object, request, flake) are
// map[string]string, which the policy engine reads as it reads
// map[string]any: no string is boxed into an interface, six allocations
// fewer per Check (hand-written for a measured reason, issue 16).
func BuildInput(r Request, subject *identity.Subject, owners []nixname.Flake) map[string]any {
	object := map[string]string{
		"kind": string(r.Route.Kind),
		"hash": r.Route.Hash,
	}
	switch r.Route.Kind {
	case route.KindNar:
		object["file"] = r.Route.File
	case route.KindPin:
		object["name"] = r.Route.Name
	}
	in := map[string]any{
		"action": string(r.Route.Action),
		"object": object,
		"request": map[string]string{
			"method": r.Method,
			"path":   r.Path,
		},
		"subject": subject.Input(),
	}
	if !r.Route.Flake.IsZero() {
		SetFlake(in, r.Route.Flake)
	}
	if owners != nil {
		SetOwners(in, owners)
	}
	if r.Scope != nil {
		in["scope"] = r.Scope.Input()
		SetFlake(in, r.Scope.Flake)
	}
	return in
}

// SetOwners sets the input's "owners" (a union read's owning flakes).
func SetOwners(in map[string]any, owners []nixname.Flake) {
	list := make([]any, len(owners))
	for i, f := range owners {
		list[i] = f.String()
	}
	in["owners"] = list
}

// SetFlake sets the input's "flake" to f.
func SetFlake(in map[string]any, f nixname.Flake) {
	in["flake"] = map[string]string{"org": f.Org, "name": f.Name}
}
