package identity

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/flakegate/flakegate/internal/promutil"
)

// metrics of a MultiVerifier. Result counters are resolved once so that the
// cached path does no label lookups.
type metrics struct {
	verifications   *prometheus.CounterVec // {result}
	results         map[Reason]prometheus.Counter
	ok              prometheus.Counter // results[reasonOK]
	cacheHits       prometheus.Counter
	refreshFailures *prometheus.CounterVec // {issuer}
	keys            *prometheus.GaugeVec   // {issuer}
	lastRefresh     *prometheus.GaugeVec   // {issuer}
	keysOK          *prometheus.GaugeVec   // {issuer}
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		verifications: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flakegate_token_verifications_total",
			Help: "Token verifications by result: ok, or the reason the token was refused.",
		}, []string{"result"}),
		cacheHits: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "flakegate_token_cache_hits_total",
			Help: "Verifications answered from the verified-token cache.",
		}),
		refreshFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flakegate_jwks_refresh_failures_total",
			Help: "Failed JWKS fetches or reloads, by issuer name.",
		}, []string{"issuer"}),
		keys: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "flakegate_jwks_keys",
			Help: "Usable verification keys currently loaded, by issuer name.",
		}, []string{"issuer"}),
		lastRefresh: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "flakegate_jwks_last_success_timestamp_seconds",
			Help: "When the issuer's keys were last loaded successfully (unix seconds).",
		}, []string{"issuer"}),
		keysOK: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "flakegate_identity_issuer_keys_ok",
			Help: "1 when the last fetch of the issuer's keys succeeded, 0 while it fails (degraded: tokens whose key is not loaded get 503), by issuer name.",
		}, []string{"issuer"}),
	}
	if reg != nil {
		m.verifications = promutil.Register(reg, m.verifications)
		m.cacheHits = promutil.Register(reg, m.cacheHits)
		m.refreshFailures = promutil.Register(reg, m.refreshFailures)
		m.keys = promutil.Register(reg, m.keys)
		m.lastRefresh = promutil.Register(reg, m.lastRefresh)
		m.keysOK = promutil.Register(reg, m.keysOK)
	}
	m.results = map[Reason]prometheus.Counter{reasonOK: m.verifications.WithLabelValues(string(reasonOK))}
	m.ok = m.results[reasonOK]
	for _, r := range allReasons() {
		m.results[r] = m.verifications.WithLabelValues(string(r))
	}
	return m
}

func (m *metrics) result(r Reason) {
	if c, ok := m.results[r]; ok {
		c.Inc()
	}
}
