package policy_test

import (
	"context"
	"testing"

	"github.com/flakegate/flakegate/internal/policy"
)

// TestScopedReadFollowsTheMintersCurrentRights (review r6, 2026-12-05):
// the shipped policy's first read grant was "scoped token of <flake>",
// checking nothing about the token's subject (its minter). An unscoped
// cache token follows the policy as it is now; a scoped token read on for
// its whole life (90 days by default) after its minter was removed from
// every list. Here carol, in neither super-duper-secure's read.users nor
// any scoped_tokens.users, read it through a scoped token while her
// unscoped token was denied.
func TestScopedReadFollowsTheMintersCurrentRights(t *testing.T) {
	e, err := policy.NewEngine(policiesDir, policy.Options{Rescan: -1})
	if err != nil {
		t.Fatal(err)
	}
	in := pull("omnicorp/super-duper-secure", "omnicorp", "carol")
	sub := in["subject"].(map[string]any)
	sub["via"] = "exchange"
	d, err := e.Evaluate(context.Background(), in)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("carol's unscoped cache token: allow=%v (%s)", d.Allow, d.Reason)
	sub["scope"] = map[string]any{"flake": "omnicorp/super-duper-secure", "roots": []any{"/nix/store/0c6kzph7l0dcbfmjap64f0czdafn3b7x-system"}}
	d, err = e.Evaluate(context.Background(), in)
	if err != nil {
		t.Fatal(err)
	}
	if d.Allow {
		t.Errorf("carol's scoped token of omnicorp/super-duper-secure: allow=%v (%s) although carol may neither read the flake nor mint its tokens now", d.Allow, d.Reason)
	}
}
