package authz

import (
	"context"
	"net/http"
	"reflect"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/flakegate/flakegate/internal/authz/authztest"
	"github.com/flakegate/flakegate/internal/identity/identitytest"
	"github.com/flakegate/flakegate/internal/policy"
)

// The decision cache and the verified subject's memo never widen access:
// requests that differ in only one input field the policy reads — the
// subject's repository, org or protected ref (each from its own verified
// token), the flake, the action — each get their own decision, asked over
// and over in alternation through one Checker whose caches are warm.
func TestCachedDecisionsDoNotCrossAReadField(t *testing.T) {
	iss, v := githubVerifier(t)
	reg := prometheus.NewRegistry()
	engine, err := policy.NewEngine("testdata/policy", policy.Options{Rescan: -1, Logger: discardLogger(), Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	c := &Checker{Verifier: v, Policy: engine, Owners: staticOwners{}, Logger: discardLogger()}

	main := iss.Mint(identitytest.GitHubActionsClaims("omnicorp/app", "refs/heads/main"))       // protected ref
	feature := iss.Mint(identitytest.GitHubActionsClaims("omnicorp/app", "refs/heads/feature")) // not protected
	tool := iss.Mint(identitytest.GitHubActionsClaims("omnicorp/tool", "refs/heads/main"))      // another repository
	evil := iss.Mint(identitytest.GitHubActionsClaims("evilcorp/app", "refs/heads/main"))       // another org
	push := "/omnicorp/app/nar/" + testFile
	read := "/omnicorp/app/" + testHash + ".narinfo"
	cases := []struct {
		name, method, path, token string
		want                      int
	}{
		{"push, protected ref", "PUT", push, main, http.StatusOK},
		{"push, unprotected ref", "PUT", push, feature, http.StatusForbidden},
		{"push, another repository", "PUT", push, tool, http.StatusForbidden},
		{"read, own org", "GET", read, main, http.StatusOK},
		{"read, another org", "GET", read, evil, http.StatusNotFound},
		{"read, the other org's flake", "GET", "/evilcorp/app/" + testHash + ".narinfo", main, http.StatusNotFound},
		{"read, that org's own token", "GET", "/evilcorp/app/" + testHash + ".narinfo", evil, http.StatusOK},
		{"push by the reader of another flake", "PUT", "/evilcorp/app/nar/" + testFile, main, http.StatusForbidden},
	}
	for round := range 3 {
		for _, tc := range cases {
			res := c.Authorize(context.Background(), ParseCheckRequest(authztest.CheckRequest(tc.method, tc.path, "Bearer "+tc.token)))
			if res.Status != tc.want {
				t.Errorf("round %d, %s: %d (%s), want %d", round, tc.name, res.Status, res.Reason, tc.want)
			}
		}
	}
	// The rounds after the first were answered from the decision cache:
	// the test compared cached decisions, not only fresh evaluations.
	hits := decisionCacheCount(t, reg, "hit")
	if want := float64(2 * len(cases)); hits < want {
		t.Errorf("%v decision cache hits, want at least %v", hits, want)
	}
}

// decisionCacheCount is the policy engine's decision cache counter for
// result, read from reg.
func decisionCacheCount(t *testing.T, reg *prometheus.Registry, result string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "flakegate_policy_decision_cache_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "result" && l.GetValue() == result {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	t.Fatalf("no flakegate_policy_decision_cache_total{result=%q}", result)
	return 0
}

// A verified subject's policy input is rendered once and shared by every
// request with its token (identity seals it): no decision may change it.
func TestChecksLeaveTheSharedSubjectInputAlone(t *testing.T) {
	iss, v := githubVerifier(t)
	tok := iss.Mint(identitytest.GitHubActionsClaims("omnicorp/app", "refs/heads/main"))
	subject, err := v.Verify(context.Background(), tok)
	if err != nil {
		t.Fatal(err)
	}
	shared := subject.Input()
	before := jsonValue(t, shared)
	c := &Checker{Verifier: v, Policy: newTestEngine(t), Owners: staticOwners{{Org: "evilcorp", Name: "tool"}, {Org: "omnicorp", Name: "app"}}, Logger: discardLogger()}
	for _, r := range []struct{ method, path string }{
		{"GET", "/omnicorp/app/" + testHash + ".narinfo"},
		{"GET", "/" + testHash + ".narinfo"}, // union: evaluated once per owner
		{"PUT", "/omnicorp/app/nar/" + testFile},
		{"GET", "/evilcorp/app/" + testHash + ".narinfo"},
		{"GET", "/nix-cache-info"},
	} {
		c.Authorize(context.Background(), NewRequest(r.method, r.path, "Bearer "+tok))
	}
	if again, _ := v.Verify(context.Background(), tok); reflect.ValueOf(again.Input()).UnsafePointer() != reflect.ValueOf(shared).UnsafePointer() {
		t.Fatal("the verified subject's input is not shared between requests: this test checks nothing")
	}
	if after := jsonValue(t, shared); !reflect.DeepEqual(before, after) {
		t.Errorf("the shared subject input changed:\n before %v\n after  %v", before, after)
	}
}
