package gc

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/flakegate/flakegate/internal/index"
	"github.com/flakegate/flakegate/internal/promutil"
)

// Metrics are the collector's Prometheus metrics. A nil *Metrics records
// nothing.
type Metrics struct {
	runs         *prometheus.CounterVec
	duration     prometheus.Histogram
	lastSuccess  prometheus.Gauge
	freedPaths   *prometheus.CounterVec
	freedBytes   *prometheus.CounterVec
	narsDeleted  prometheus.Counter
	blobBytes    prometheus.Counter
	freedFiles   *prometheus.CounterVec
	logsDeleted  prometheus.Counter
	storageBytes *prometheus.GaugeVec
	storagePaths *prometheus.GaugeVec
}

// NewMetrics registers the collector's metrics with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	return &Metrics{
		runs: promutil.Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flakegate_gc_runs_total",
			Help: "Garbage collections by result: ok, busy (another collection held the lock), error; dry runs are not counted.",
		}, []string{"result"})),
		duration: promutil.Register(reg, prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "flakegate_gc_duration_seconds",
			Help:    "Time a garbage collection took.",
			Buckets: []float64{.1, .5, 1, 5, 15, 60, 300, 900, 3600},
		})),
		lastSuccess: promutil.Register(reg, prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "flakegate_gc_last_success_timestamp_seconds",
			Help: "When the last successful garbage collection started (Unix time).",
		})),
		freedPaths: promutil.Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flakegate_gc_freed_paths_total",
			Help: "Store paths removed from a flake by garbage collection, by flake and reason (expired, flake_max_size, global_max_size).",
		}, []string{"flake", "reason"})),
		freedBytes: promutil.Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flakegate_gc_freed_bytes_total",
			Help: "NAR bytes of the store paths removed from a flake by garbage collection (the blob goes when no flake owns it).",
		}, []string{"flake"})),
		narsDeleted: promutil.Register(reg, prometheus.NewCounter(prometheus.CounterOpts{
			Name: "flakegate_gc_nars_deleted_total",
			Help: "NAR files deleted from storage (owned by no flake any more).",
		})),
		blobBytes: promutil.Register(reg, prometheus.NewCounter(prometheus.CounterOpts{
			Name: "flakegate_gc_storage_freed_bytes_total",
			Help: "Bytes of NAR files deleted from storage.",
		})),
		freedFiles: promutil.Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flakegate_gc_freed_files_total",
			Help: "Listings, debug info links, realisations and build trace entries removed from a flake with the paths or NAR files they describe.",
		}, []string{"flake"})),
		logsDeleted: promutil.Register(reg, prometheus.NewCounter(prometheus.CounterOpts{
			Name: "flakegate_gc_logs_deleted_total",
			Help: "Build logs deleted (keep_for passed since their last upload).",
		})),
		storageBytes: promutil.Register(reg, prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "flakegate_storage_bytes",
			Help: "Bytes of the NAR files each flake owns (a file several flakes own counts for each), as of the last garbage collection or usage refresh.",
		}, []string{"flake"})),
		storagePaths: promutil.Register(reg, prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "flakegate_storage_paths",
			Help: "Store paths each flake holds, as of the last garbage collection or usage refresh.",
		}, []string{"flake"})),
	}
}

func (m *Metrics) observe(rep Report, err error) {
	if m == nil || rep.DryRun {
		return
	}
	switch {
	case errors.Is(err, index.ErrBusy):
		m.runs.WithLabelValues("busy").Inc()
		return
	case err != nil:
		m.runs.WithLabelValues("error").Inc()
	default:
		m.runs.WithLabelValues("ok").Inc()
		m.lastSuccess.Set(float64(rep.Start.UnixNano()) / 1e9)
	}
	m.duration.Observe(rep.Duration.Seconds())
	for _, f := range rep.Flakes {
		for why, n := range f.Reasons {
			m.freedPaths.WithLabelValues(f.Flake.String(), why).Add(float64(n))
		}
		if f.Bytes > 0 {
			m.freedBytes.WithLabelValues(f.Flake.String()).Add(float64(f.Bytes))
		}
		if n := f.FileCount(); n > 0 {
			m.freedFiles.WithLabelValues(f.Flake.String()).Add(float64(n))
		}
	}
	m.logsDeleted.Add(float64(rep.LogsDeleted))
	m.narsDeleted.Add(float64(rep.NarsDeleted))
	m.blobBytes.Add(float64(rep.BytesFreed))
}

// SetUsage sets the storage gauges (flakes absent from usage are dropped).
func (m *Metrics) SetUsage(usage []index.FlakeUsage) { m.setUsage(usage) }

func (m *Metrics) setUsage(usage []index.FlakeUsage) {
	if m == nil {
		return
	}
	m.storageBytes.Reset()
	m.storagePaths.Reset()
	for _, u := range usage {
		m.storageBytes.WithLabelValues(u.Flake.String()).Set(float64(u.Bytes))
		m.storagePaths.WithLabelValues(u.Flake.String()).Set(float64(u.Paths))
	}
}
