package authz

import (
	"context"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/flakegate/flakegate/internal/route"
)

// Metrics are the service's Prometheus metrics.
type Metrics struct {
	decisions *prometheus.CounterVec
	latency   *prometheus.HistogramVec
	owners    *prometheus.CounterVec
	closures  *prometheus.CounterVec
	// bySeries holds the decision series resolved per (action, result):
	// WithLabelValues hashes the labels and locks the vector on every call
	// (1.2 % of the single-host process's CPU, issue 16). Both labels come
	// from small fixed sets, so the map stays small.
	bySeries sync.Map // decisionLabels → decisionSeries
}

type decisionLabels struct{ action, result string }

type decisionSeries struct {
	decisions prometheus.Counter
	latency   prometheus.Observer
}

func (m *Metrics) series(action, result string) decisionSeries {
	k := decisionLabels{action, result}
	if s, ok := m.bySeries.Load(k); ok {
		return s.(decisionSeries)
	}
	s := decisionSeries{m.decisions.WithLabelValues(action, result), m.latency.WithLabelValues(action)}
	m.bySeries.Store(k, s)
	return s
}

// NewMetrics registers the authz metrics with reg (nil: not registered,
// still usable).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flakegate_authz_decisions_total",
			Help: "Authorization decisions by action and result (allow, deny, unauthenticated, invalid, error).",
		}, []string{"action", "result"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "flakegate_authz_check_duration_seconds",
			Help:    "Time to decide one Check request, by action.",
			Buckets: []float64{0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1},
		}, []string{"action"}),
		owners: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flakegate_authz_owners_lookups_total",
			Help: "Union-read owners lookups by result (hit = cache, miss = fetched, error).",
		}, []string{"result"}),
		closures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flakegate_authz_closure_lookups_total",
			Help: "Scoped-token closure lookups by result (hit = cache, miss = fetched, error).",
		}, []string{"result"}),
	}
	if reg != nil {
		reg.MustRegister(m.decisions, m.latency, m.owners, m.closures)
	}
	return m
}

func (m *Metrics) ownersLookup(result string) {
	if m != nil {
		m.owners.WithLabelValues(result).Inc()
	}
}

func (m *Metrics) closureLookup(result string) {
	if m != nil {
		m.closures.WithLabelValues(result).Inc()
	}
}

// ResultLabel classifies a decision for the metrics: allow, invalid (not a
// path the cache serves), unauthenticated (401), error (5xx) or deny.
func ResultLabel(res Result) string {
	switch {
	case res.Allow:
		return "allow"
	case res.Request.RouteErr != nil:
		return "invalid"
	case res.Status == http.StatusUnauthorized:
		return "unauthenticated"
	case res.Status >= 500:
		return "error"
	}
	return "deny"
}

// record writes the decision log line and updates the metrics. The log
// line never holds a token: only the subject's summary and provider.
func (c *Checker) record(ctx context.Context, res Result, latency time.Duration) {
	action := string(res.Request.Route.Action)
	if res.Request.RouteErr != nil {
		action = "none"
	}
	if c.Metrics != nil {
		s := c.Metrics.series(action, ResultLabel(res))
		s.decisions.Inc()
		s.latency.Observe(latency.Seconds())
	}
	log := c.Logger
	if log == nil {
		log = slog.Default()
	}
	level := slog.LevelInfo
	if res.Err != nil {
		level = slog.LevelError
	}
	if !log.Enabled(ctx, level) {
		return
	}
	provider := ""
	if res.Subject != nil {
		provider = res.Subject.Provider
	}
	attrs := make([]slog.Attr, 0, 16)
	attrs = append(attrs,
		slog.String("subject", res.SubjectSummary),
		slog.String("provider", provider),
		slog.String("method", res.Request.Method),
		slog.String("path", route.LogPath(res.Request.Path)),
		slog.String("action", action),
		slog.String("flake", res.Request.Route.Flake.String()),
		slog.String("kind", string(res.Request.Route.Kind)),
		slog.Bool("allow", res.Allow),
		slog.Int("status", res.Status),
		slog.String("reason", res.Reason),
		slog.String("policy_revision", res.Revision),
		slog.Int64("latency_us", latency.Microseconds()),
		slog.String("union_owner", res.UnionOwner.String()),
	)
	if res.Err != nil {
		attrs = append(attrs, slog.String("error", res.Err.Error()))
	}
	log.LogAttrs(ctx, level, "decision", attrs...)
}
