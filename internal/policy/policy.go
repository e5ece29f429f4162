// Package policy loads the Rego policy directory (package flakegate.authz),
// compiles it into a prepared query, hot-reloads it, and evaluates decisions.
//
// The directory holds policy modules (*.rego), their tests (*_test.rego,
// run only by Check) and data files (*.json, *.yaml, *.yml, mounted at
// data.<base name>). Engine serves one compiled set at a time and swaps in a
// new one when the directory's content changes (fsnotify, debounced, plus a
// periodic rescan for what fsnotify misses, such as Kubernetes ConfigMap
// symlink swaps). Whatever notices the change, a set is activated only once
// its files and the directory have been unchanged for the debounce period
// and did not change while they were read (settle.go): a half-written data
// file is never judged. A set that does not load is refused and the previous
// one keeps serving. The optional rule config_errors (a set of strings that must
// not depend on input) validates the data files once per load. Check is the
// same loading plus OPA's test runner, for `authz -check` and CI.
//
// See policies/README.md for the policy contract and the shipped policy.
package policy

import "context"

// Decision is the policy's answer for one input.
type Decision struct {
	Allow    bool
	Reason   string
	Revision string // content hash of the policy set that decided
}

// Evaluator decides one input (see DESIGN.md "Policy contract").
type Evaluator interface {
	Evaluate(ctx context.Context, input map[string]any) (Decision, error)
}
