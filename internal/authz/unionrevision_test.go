package authz

// A union read that spans a policy reload (adversarial review, 2026-12-05).

import (
	"context"
	"sync/atomic"
	"testing"

	"github.com/flakegate/flakegate/internal/nixname"
	"github.com/flakegate/flakegate/internal/policy"
)

// swappingEvaluator is an engine whose policy set is swapped after the first
// evaluation: revision "r-old" allows omnicorp/app, "r-new" allows nothing.
type swappingEvaluator struct{ calls atomic.Int32 }

func (s *swappingEvaluator) Evaluate(_ context.Context, in map[string]any) (policy.Decision, error) {
	if s.calls.Add(1) == 1 {
		f := in["flake"].(map[string]string)
		return policy.Decision{Allow: f["org"] == "omnicorp" && f["name"] == "app", Reason: "old grant", Revision: "r-old"}, nil
	}
	return policy.Decision{Allow: false, Reason: "new: denied", Revision: "r-new"}, nil
}

// A union read evaluates each owner with whatever set is active at that
// moment (one Evaluate call per owner). A reload between two owners yielded
// a grant decided by the old revision but recorded (decision log
// policy_revision, Result.Revision) under the new one, which denies it.
func TestUnionReadNamesTheGrantingRevision(t *testing.T) {
	c := &Checker{
		Verifier: tokenVerifier{token: secretToken, subject: ciSubject},
		Policy:   &swappingEvaluator{},
		Owners:   staticOwners{{Org: "omnicorp", Name: "app"}, {Org: "omnicorp", Name: "other"}},
		Logger:   discardLogger(),
	}
	res := c.Decide(context.Background(), NewRequest("GET", "/"+testHash+".narinfo", "Bearer "+secretToken))
	if !res.Allow || res.UnionOwner != (nixname.Flake{Org: "omnicorp", Name: "app"}) {
		t.Fatalf("allow=%v union_owner=%v: the old revision's grant was lost", res.Allow, res.UnionOwner)
	}
	if res.Revision != "r-old" {
		t.Errorf("the read was granted by revision r-old but is recorded as decided by %q (which denies it)", res.Revision)
	}
}
