// Package policy loads the Rego policy directory (package flakegate.authz),
// compiles it into a prepared query, hot-reloads it, and evaluates decisions.
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
