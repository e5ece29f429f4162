package cacheserver

import (
	"fmt"
	"net/http"
	"testing"

	promtest "github.com/prometheus/client_golang/prometheus/testutil"
)

// TestRequestMetricsBoundedAgainstClientMethods: a client (no token
// needed: every public request is observed, the gate's answers too)
// choosing a new HTTP method per request must not add a metrics series per
// request, which the registry keeps for the life of the process.
func TestRequestMetricsBoundedAgainstClientMethods(t *testing.T) {
	ts := newTestServer(t, "", nil, nil)
	const n = 200
	for i := range n {
		st, _, _ := do(t, fmt.Sprintf("X%d", i), ts.URL+"/nix-cache-info", nil)
		if st < 400 {
			t.Fatalf("method X%d answered %d", i, st)
		}
	}
	do(t, http.MethodGet, ts.URL+"/nix-cache-info", nil)
	// kinds × statuses × methods: a handful, whatever n is.
	if got := promtest.CollectAndCount(ts.metrics.requests); got > 10 {
		t.Errorf("%d request counter series after %d client-chosen methods, want a handful", got, n)
	}
	if got := promtest.CollectAndCount(ts.metrics.duration); got > 10 {
		t.Errorf("%d request duration series after %d client-chosen methods, want a handful", got, n)
	}
	st, _, _ := do(t, "X", ts.URL+"/nix-cache-info", nil)
	if got := promtest.ToFloat64(ts.metrics.requests.WithLabelValues("none", "other", fmt.Sprint(st))); got != n+1 {
		t.Errorf("requests{kind=none,method=other,code=%d} = %v, want %d", st, got, n+1)
	}
}
