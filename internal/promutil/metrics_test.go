package promutil

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func TestRegisterSharesExistingCollector(t *testing.T) {
	reg := prometheus.NewRegistry()
	opts := prometheus.CounterOpts{Name: "flakegate_test_total", Help: "test"}
	first := Register(reg, prometheus.NewCounterVec(opts, []string{"result"}))
	second := Register(reg, prometheus.NewCounterVec(opts, []string{"result"}))
	if first != second {
		t.Fatal("second registration did not return the collector already registered")
	}
	second.WithLabelValues("ok").Inc()
	if got := testCount(t, reg); got != 1 {
		t.Fatalf("counter = %v, want 1 (shared series)", got)
	}

	// Same name, other labels: a conflict; the caller gets its own, unregistered collector.
	other := prometheus.NewCounterVec(opts, []string{"other"})
	if got := Register(reg, other); got != other {
		t.Fatal("conflicting registration did not return the caller's collector")
	}
}

func testCount(t *testing.T, g prometheus.Gatherer) float64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			sum += m.GetCounter().GetValue()
		}
	}
	return sum
}
