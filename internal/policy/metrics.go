package policy

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/flakegate/flakegate/internal/promutil"
)

// metrics of the policy engine. With a nil Registerer they are created but
// not exported.
type metrics struct {
	reloads  *prometheus.CounterVec // result=success|error
	revision *prometheus.GaugeVec   // revision=<hash>, 1 for the active set
	duration prometheus.Histogram
	healthy  prometheus.Gauge // 1 when the last reload attempt succeeded

	cacheHits, cacheMisses prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flakegate_policy_reloads_total",
			Help: "Policy set loads by result (success: a new revision is active; error: the previous one keeps serving).",
		}, []string{"result"}),
		revision: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "flakegate_policy_revision_info",
			Help: "The active policy revision (content hash of the policy directory); always 1.",
		}, []string{"revision"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "flakegate_policy_reload_duration_seconds",
			Help:    "Time to read, compile and prepare a policy set.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}),
		healthy: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "flakegate_policy_last_reload_success",
			Help: "1 if the last policy load succeeded, 0 if the directory holds a set that does not compile.",
		}),
	}
	cache := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "flakegate_policy_decision_cache_total",
		Help: "Decisions answered from the active set's decision cache (hit) or evaluated and cached (miss).",
	}, []string{"result"})
	if reg != nil {
		cache = promutil.Register(reg, cache)
		m.reloads = promutil.Register(reg, m.reloads)
		m.revision = promutil.Register(reg, m.revision)
		m.duration = promutil.Register(reg, m.duration)
		m.healthy = promutil.Register(reg, m.healthy)
	}
	m.cacheHits, m.cacheMisses = cache.WithLabelValues("hit"), cache.WithLabelValues("miss")
	// Both results exist from the start, so that rate() and alerts work
	// before the first failure.
	m.reloads.WithLabelValues("success")
	m.reloads.WithLabelValues("error")
	return m
}

func (m *metrics) succeeded(revision string, seconds float64) {
	m.reloads.WithLabelValues("success").Inc()
	m.duration.Observe(seconds)
	m.revision.Reset()
	m.revision.WithLabelValues(revision).Set(1)
	m.healthy.Set(1)
}

func (m *metrics) failed(seconds float64) {
	m.reloads.WithLabelValues("error").Inc()
	m.duration.Observe(seconds)
	m.healthy.Set(0)
}
