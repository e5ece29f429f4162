package cacheserver

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/flakegate/flakegate/internal/index"
	"github.com/flakegate/flakegate/internal/route"
)

type metrics struct {
	reg         *prometheus.Registry
	requests    *prometheus.CounterVec
	duration    *prometheus.HistogramVec
	uploadBytes *prometheus.CounterVec
	rejected    *prometheus.CounterVec
	// unionConflicts counts union-view narinfo reads answered 404 because
	// flakes the caller may read hold different contents for the path.
	unionConflicts prometheus.Counter
	// narRedirects counts NAR reads answered 307 to a presigned URL.
	narRedirects prometheus.Counter

	// known are the request series already looked up (requests,
	// duration), by kind, method and status: WithLabelValues formats the
	// status and hashes the labels on every request otherwise.
	knownMu sync.RWMutex
	known   map[seriesKey]requestSeries
}

type seriesKey struct {
	kind, method string
	status       int
}

type requestSeries struct {
	count    prometheus.Counter
	duration prometheus.Observer
}

// maxKnownSeries bounds known (kinds × methodLabel's methods × statuses
// stay far below it; past it a series is looked up each time).
const maxKnownSeries = 1024

// series returns the request counter and duration histogram of a request.
func (m *metrics) series(kind, method string, status int) (prometheus.Counter, prometheus.Observer) {
	k := seriesKey{kind, method, status}
	m.knownMu.RLock()
	v, ok := m.known[k]
	m.knownMu.RUnlock()
	if ok {
		return v.count, v.duration
	}
	v = requestSeries{
		count:    m.requests.WithLabelValues(kind, method, strconv.Itoa(status)),
		duration: m.duration.WithLabelValues(kind, method),
	}
	m.knownMu.Lock()
	if len(m.known) < maxKnownSeries {
		if m.known == nil {
			m.known = map[seriesKey]requestSeries{}
		}
		m.known[k] = v
	}
	m.knownMu.Unlock()
	return v.count, v.duration
}

func newMetrics(reg *prometheus.Registry, idx index.Index) (*metrics, error) {
	m := &metrics{
		reg: reg,
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flakegate_blobserver_requests_total",
			Help: "Requests to the public cache listener by object kind, method and status code.",
		}, []string{"kind", "method", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "flakegate_blobserver_request_duration_seconds",
			Help:    "Time to answer a public cache request, by object kind and method.",
			Buckets: []float64{.0001, .0005, .001, .005, .01, .05, .1, .5, 1, 5, 30, 120},
		}, []string{"kind", "method"}),
		uploadBytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flakegate_blobserver_upload_bytes_total",
			Help: "Bytes received in uploads, by kind (nar, log, listing, debuginfo, realisation, build-trace).",
		}, []string{"kind"}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flakegate_blobserver_uploads_rejected_total",
			Help: "Uploads refused with a 4xx answer, by kind (NAR, narinfo, log, listing, debuginfo, realisation, build-trace).",
		}, []string{"kind"}),
		narRedirects: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "flakegate_blobserver_nar_redirects_total",
			Help: "NAR reads answered 307 to a presigned object-storage URL (-redirect-nars).",
		}),
		unionConflicts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "flakegate_blobserver_union_conflicts_total",
			Help: "Union-view reads (narinfos, listings, debug info, realisations) answered as absent because flakes the caller may read hold different contents.",
		}),
	}
	cs := []prometheus.Collector{m.requests, m.duration, m.uploadBytes, m.rejected, m.unionConflicts, m.narRedirects, &indexCollector{idx: idx}}
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	// The process and Go collectors may already be registered by the caller.
	for _, c := range []prometheus.Collector{collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})} {
		if err := reg.Register(c); err != nil {
			if _, ok := err.(prometheus.AlreadyRegisteredError); !ok {
				return nil, err
			}
		}
	}
	return m, nil
}

var (
	descPaths  = prometheus.NewDesc("flakegate_blobserver_index_paths", "Store paths in the index.", nil, nil)
	descNars   = prometheus.NewDesc("flakegate_blobserver_index_nars", "NAR files in the index.", nil, nil)
	descFlakes = prometheus.NewDesc("flakegate_blobserver_index_flakes", "Flakes owning anything.", nil, nil)
	descUp     = prometheus.NewDesc("flakegate_blobserver_index_up", "1 when the index answered the last scrape.", nil, nil)
)

// indexCollector reads index counts at scrape time.
type indexCollector struct{ idx index.Index }

func (c *indexCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descPaths
	ch <- descNars
	ch <- descFlakes
	ch <- descUp
}

func (c *indexCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := c.idx.Stats(ctx)
	if err != nil {
		ch <- prometheus.MustNewConstMetric(descUp, prometheus.GaugeValue, 0)
		return
	}
	ch <- prometheus.MustNewConstMetric(descUp, prometheus.GaugeValue, 1)
	ch <- prometheus.MustNewConstMetric(descPaths, prometheus.GaugeValue, float64(st.Paths))
	ch <- prometheus.MustNewConstMetric(descNars, prometheus.GaugeValue, float64(st.Nars))
	ch <- prometheus.MustNewConstMetric(descFlakes, prometheus.GaugeValue, float64(st.Flakes))
}

// recorder notes the status and size of a response. It keeps ReadFrom so
// that http.ServeContent on an *os.File still uses sendfile.
type recorder struct {
	http.ResponseWriter
	status int
	bytes  int64
	start  time.Time
	// req is the cache handler's parse of the request (parsed: it got
	// that far), so that observing it does not parse the path again.
	req    route.Request
	parsed bool
}

func newRecorder(w http.ResponseWriter) *recorder {
	return &recorder{ResponseWriter: w, start: time.Now()}
}

func (r *recorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(p []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	n, err := r.ResponseWriter.Write(p)
	r.bytes += int64(n)
	return n, err
}

func (r *recorder) ReadFrom(src io.Reader) (int64, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	var n int64
	var err error
	if rf, ok := r.ResponseWriter.(io.ReaderFrom); ok {
		n, err = rf.ReadFrom(src)
	} else {
		n, err = io.Copy(r.ResponseWriter, src)
	}
	r.bytes += n
	return n, err
}

func (r *recorder) Flush() {
	if f, ok := r.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// methodLabel is the method label of a request's series: HTTP's standard
// methods as they are, any other "other". A client chooses the method
// (net/http accepts any token), and every label value is a series kept
// for the life of the process: a method per request would otherwise grow
// the registry without bound (the access log keeps the real method).
func methodLabel(m string) string {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPut, http.MethodPost, http.MethodDelete,
		http.MethodPatch, http.MethodOptions, http.MethodConnect, http.MethodTrace:
		return m
	}
	return "other"
}

// observe records metrics and the access log line of a finished request.
func (s *Server) observe(rw *recorder, r *http.Request, req *route.Request) {
	status := rw.status
	if status == 0 {
		status = http.StatusOK
	}
	kind := string(req.Kind)
	if kind == "" {
		kind = "none"
	}
	d := time.Since(rw.start)
	c, h := s.metrics.series(kind, methodLabel(r.Method), status)
	c.Inc()
	h.Observe(d.Seconds())
	if !s.accessLog {
		return
	}
	s.log.LogAttrs(r.Context(), slog.LevelInfo, "request",
		slog.String("method", r.Method),
		slog.String("path", route.LogPath(r.URL.Path)),
		slog.Int("status", status),
		slog.Int64("bytes", rw.bytes),
		slog.Int64("request_bytes", r.ContentLength),
		slog.Float64("duration_ms", float64(d.Microseconds())/1000),
		slog.String("flake", req.Flake.String()),
		slog.String("kind", string(req.Kind)),
		slog.String("subject", r.Header.Get(route.SubjectHeader)),
		slog.String("remote", r.RemoteAddr),
		slog.String("proto", r.Proto),
	)
}
