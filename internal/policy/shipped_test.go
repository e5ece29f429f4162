package policy_test

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/flakegate/flakegate/internal/policy"
)

// TestShippedPolicies runs the Rego tests of policies/ (the default policy and
// the omnicorp example) the way `authz -check` does, so CI runs them.
func TestShippedPolicies(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var out bytes.Buffer
	err := policy.Check(ctx, "../../policies", &out)
	t.Log("\n" + out.String())
	if err != nil {
		t.Fatalf("Check(policies/): %v", err)
	}
}
