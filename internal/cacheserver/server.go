package cacheserver

import (
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/flakegate/flakegate/internal/abandon"
	"github.com/flakegate/flakegate/internal/blob"
	"github.com/flakegate/flakegate/internal/index"
	"github.com/flakegate/flakegate/internal/nixcache"
	"github.com/flakegate/flakegate/internal/nixname"
	"github.com/flakegate/flakegate/internal/route"
)

// Config is what a Server needs. It has no defaults of its own: the blob
// server's are blobserverapp.DefaultConfig. A limit that can be switched off
// is off at 0 (as the blobserver flag is); the others must be positive.
type Config struct {
	Blob  blob.Store
	Index index.Index
	Keys  *nixcache.KeySet
	// Logger receives the access log and errors. Default slog.Default().
	Logger *slog.Logger
	// AccessLog enables one log line per request.
	AccessLog bool
	// MaxNarSize limits a NAR upload, compressed and decompressed.
	// Required (> 0).
	MaxNarSize int64
	// MaxLogSize limits a build log upload, as sent and, when it has a
	// Content-Encoding, decoded (413 beyond): logs are text, far smaller
	// than the NARs MaxNarSize allows for. Required (> 0).
	MaxLogSize int64
	// MaxNarInfoSize limits a narinfo upload. Required (> 0).
	MaxNarInfoSize int64
	// Priority is nix-cache-info's Priority. Required (> 0).
	Priority int
	// UploadIdleTimeout ends an upload whose client sends nothing for this
	// long (the server has no overall body timeout: large uploads may take
	// hours). Required (> 0).
	UploadIdleTimeout time.Duration
	// UploadMinRate (bytes/second) refuses (408) a NAR or log upload whose
	// average rate over the last UploadRateWindow falls below it, checked
	// from the end of its first window on. 0: no minimum.
	UploadMinRate int64
	// UploadRateWindow is the window of UploadMinRate (and its grace
	// period); not a setting of the blob server (tests shorten it).
	// 0: UploadRateWindow.
	UploadRateWindow time.Duration
	// UploadMaxDuration bounds the time one NAR or log upload body may
	// take (408 after). 0: no bound.
	UploadMaxDuration time.Duration
	// MaxExpansion refuses (413) a compressed NAR, or a build log uploaded
	// with a Content-Encoding, that decompresses to more than MaxExpansion
	// times the compressed bytes received (plus nixcache.ExpansionFloor).
	// 0: no bound.
	MaxExpansion int64
	// MaxUploadsPerSubject bounds the concurrent uploads (PUT) of one
	// route.SubjectHeader value (429 beyond); requests without the header are not
	// limited. 0: no limit.
	MaxUploadsPerSubject int
	// CacheEntries bounds the in-memory caches of narinfo and NAR lookup
	// hits (each). 0: no cache, every lookup reads the index.
	CacheEntries int
	// MissTTL is how long a narinfo lookup that found nothing is
	// remembered (up to CacheEntries of them): the longest a record added
	// through another server sharing the index stays unseen here (one added
	// through this server is seen at once). 0: misses are not cached.
	MissTTL time.Duration
	// Gated says a gate in this process checks every request (the
	// embedded gate or the single-host process): an allowed union read
	// then always carries route.ReadableHeader, and one without it is
	// answered 503 (a broken authorizer), never from every flake. Behind
	// Envoy, or with no authorization at all, the header's absence means
	// every flake.
	Gated bool
	// NarRedirect, when positive, answers an allowed NAR GET or HEAD with
	// 307 to a URL of the blob store valid this long (Blob must implement
	// blob.Presigner: S3) instead of the bytes; the same lookups decide
	// first, so a NAR the request may not have is the same 404. 0: serve
	// the bytes.
	NarRedirect time.Duration
	// ReadTouchInterval: a flake's path read through this server is
	// recorded as used (retention) at most once per interval. 0: reads are
	// not recorded (only pushes count).
	ReadTouchInterval time.Duration
	// ReadFlushInterval is how often recorded reads are written to the
	// index, in one batch per flake (Maintain). Required (> 0).
	ReadFlushInterval time.Duration
	// GenerationPoll is how often Maintain asks the index whether a
	// garbage collection removed something (then the lookup caches are
	// cleared). Required (> 0).
	GenerationPoll time.Duration
	// Registry receives the metrics; nil makes a private registry
	// (served by InternalHandler either way).
	Registry *prometheus.Registry
}

// Server serves the cache.
type Server struct {
	blob      blob.Store
	idx       index.Index
	keys      *nixcache.KeySet
	log       *slog.Logger
	accessLog bool
	gated     bool
	maxNar    int64
	maxLog    int64
	maxInfo   int64
	cacheInfo []byte
	metrics   *metrics

	hits   *hitCache
	misses *missCache
	reads  *readTracker

	readFlush, genPoll time.Duration

	presign     blob.Presigner // NAR redirects; nil: off
	narRedirect time.Duration

	uploadIdle time.Duration
	limits     uploadLimits

	// pathLocks serialise narinfo uploads of one flake's store hash (striped).
	pathLocks [64]sync.Mutex
}

// New checks cfg and builds a Server.
func New(cfg Config) (*Server, error) {
	if err := cfg.check(); err != nil {
		return nil, err
	}
	s := &Server{
		blob: cfg.Blob, idx: cfg.Index, keys: cfg.Keys, log: cfg.Logger, accessLog: cfg.AccessLog, gated: cfg.Gated,
		maxNar: cfg.MaxNarSize, maxLog: cfg.MaxLogSize, maxInfo: cfg.MaxNarInfoSize, hits: newHitCache(cfg.CacheEntries),
		misses: newMissCache(cfg.CacheEntries, cfg.MissTTL),
		reads:  newReadTracker(cfg.ReadTouchInterval), readFlush: cfg.ReadFlushInterval, genPoll: cfg.GenerationPoll,
		uploadIdle: cfg.UploadIdleTimeout, limits: newUploadLimits(cfg),
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	if cfg.NarRedirect > 0 {
		s.presign, s.narRedirect = cfg.Blob.(blob.Presigner), cfg.NarRedirect
	}
	s.cacheInfo = []byte("StoreDir: " + nixcache.StoreDir + "\nWantMassQuery: 1\nPriority: " + strconv.Itoa(cfg.Priority) + "\n")
	reg := cfg.Registry
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	m, err := newMetrics(reg, s.idx)
	if err != nil {
		return nil, fmt.Errorf("cacheserver metrics: %w", err)
	}
	s.metrics = m
	return s, nil
}

// check reports every problem of cfg at once.
func (cfg *Config) check() error {
	var errs []error
	if cfg.Blob == nil || cfg.Index == nil || cfg.Keys == nil {
		errs = append(errs, errors.New("Blob, Index and Keys are required"))
	}
	if _, ok := cfg.Blob.(blob.Presigner); cfg.NarRedirect > 0 && !ok {
		errs = append(errs, fmt.Errorf("NarRedirect needs a blob store that presigns URLs (S3), not %T", cfg.Blob))
	}
	if cfg.NarRedirect < 0 {
		errs = append(errs, fmt.Errorf("NarRedirect must not be negative, got %s", cfg.NarRedirect))
	}
	for _, v := range []struct {
		name string
		v    int64
	}{
		{"MaxNarSize", cfg.MaxNarSize},
		{"MaxLogSize", cfg.MaxLogSize},
		{"MaxNarInfoSize", cfg.MaxNarInfoSize},
		{"Priority", int64(cfg.Priority)},
		{"UploadIdleTimeout", int64(cfg.UploadIdleTimeout)},
		{"ReadFlushInterval", int64(cfg.ReadFlushInterval)},
		{"GenerationPoll", int64(cfg.GenerationPoll)},
	} {
		if v.v <= 0 {
			errs = append(errs, fmt.Errorf("%s must be positive, got %d", v.name, v.v))
		}
	}
	for _, v := range []struct {
		name string
		v    int64
	}{
		{"UploadMinRate", cfg.UploadMinRate},
		{"UploadRateWindow", int64(cfg.UploadRateWindow)},
		{"UploadMaxDuration", int64(cfg.UploadMaxDuration)},
		{"MaxExpansion", cfg.MaxExpansion},
		{"MaxUploadsPerSubject", int64(cfg.MaxUploadsPerSubject)},
		{"CacheEntries", int64(cfg.CacheEntries)},
		{"MissTTL", int64(cfg.MissTTL)},
		{"ReadTouchInterval", int64(cfg.ReadTouchInterval)},
	} {
		if v.v < 0 {
			errs = append(errs, fmt.Errorf("%s must not be negative (0 switches it off), got %d", v.name, v.v))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("cacheserver: %w", err)
	}
	return nil
}

// Handler is the public cache handler, each request counted and logged
// (Observe).
func (s *Server) Handler() http.Handler { return s.Observe(s.Unobserved()) }

// Unobserved is the public cache handler without Observe, for a process
// that puts more in front of it (the embedded gate, the /_flakegate/ proxy)
// and observes the whole: then a request answered in front of the cache
// (a gate's denial) is logged and counted too, once.
func (s *Server) Unobserved() http.Handler { return http.HandlerFunc(s.serve) }

// Observe counts every request through h in the request metrics and, with
// the access log on, writes its one access line once it is answered (the
// path as the handlers saw it: canonicalized by a gate in front).
func (s *Server) Observe(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rw := newRecorder(w)
		defer func() {
			if !rw.parsed {
				rw.req, _ = route.Parse(r.Method, r.URL.Path)
			}
			s.observe(rw, r, &rw.req)
		}()
		h.ServeHTTP(rw, r)
	})
}

func (s *Server) serve(rw http.ResponseWriter, r *http.Request) {
	req, err := route.Parse(r.Method, r.URL.Path)
	if err != nil {
		abandon.Request(rw, r)
		s.fail(rw, route.StatusOf(err), err.Error())
		return
	}
	if rec, ok := rw.(*recorder); ok { // Observe right in front: it logs this parse
		rec.req, rec.parsed = req, true
	}
	switch req.Action {
	case route.ActionInfo:
		s.serveCacheInfo(rw, r)
	case route.ActionRead:
		if h, ok := readers[req.Kind]; ok {
			h(s, rw, r, req)
		} else {
			s.notFound(rw)
		}
	case route.ActionPin:
		s.servePin(rw, r, req)
	case route.ActionPush:
		h, ok := uploaders[req.Kind]
		if !ok {
			s.fail(rw, http.StatusMethodNotAllowed, "PUT not allowed here")
			return
		}
		r, release, admitted := s.admitUpload(rw, r, req)
		if !admitted {
			return
		}
		defer release()
		h(s, rw, r, req)
	case route.ActionPublic:
		if req.Kind == route.KindPublicKeys {
			s.servePublicKeys(rw)
			return
		}
		s.fail(rw, http.StatusNotFound, "not found: "+r.URL.Path+" is served by the authorization service")
	default:
		// /_flakegate/… is served by the authorization service.
		s.fail(rw, http.StatusNotFound, "not found: "+r.URL.Path+" is served by the authorization service")
	}
}

// kindHandler serves one kind of object of a parsed request.
type kindHandler func(*Server, http.ResponseWriter, *http.Request, route.Request)

// readers and uploaders are the handlers of each object kind for reads
// (GET, HEAD) and uploads (PUT).
var (
	readers = map[route.Kind]kindHandler{
		route.KindNarInfo: (*Server).serveNarInfo,
		route.KindNar:     (*Server).serveNar,
		route.KindLog:     (*Server).serveLog,

		route.KindListing:     (*Server).serveFile,
		route.KindDebugInfo:   (*Server).serveFile,
		route.KindRealisation: (*Server).serveFile,
		route.KindBuildTrace:  (*Server).serveFile,
		route.KindPins:        (*Server).servePins,
	}
	uploaders = map[route.Kind]kindHandler{
		route.KindNarInfo: (*Server).putNarInfo,
		route.KindNar:     (*Server).putNar,
		route.KindLog:     (*Server).putLog,

		route.KindListing:     (*Server).putFile,
		route.KindDebugInfo:   (*Server).putFile,
		route.KindRealisation: (*Server).putFile,
		route.KindBuildTrace:  (*Server).putFile,
	}
)

// fail answers with a one-line plain-text reason.
func (s *Server) fail(w http.ResponseWriter, status int, msg string) {
	msg = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, msg)
	writePlain(w, status, msg+"\n")
}

// notFound answers 404 for an absent object with route.BodyNotFound, the
// body authz's denied read repeats byte for byte.
// It is the answer to most narinfo lookups of a substituter: its header
// values and body are built once (see serveNarInfo).
func (s *Server) notFound(w http.ResponseWriter) {
	plainHeader(w)
	w.WriteHeader(http.StatusNotFound)
	w.Write(bodyNotFound)
}

var (
	bodyNotFound    = []byte(route.BodyNotFound)
	headerPlainType = []string{"text/plain; charset=utf-8"}
	headerNoSniff   = []string{"nosniff"}
)

// writePlain writes a plain-text answer with body.
func writePlain(w http.ResponseWriter, status int, body string) {
	plainHeader(w)
	w.WriteHeader(status)
	io.WriteString(w, body)
}

// plainHeader sets the header of a plain-text answer, dropping every
// header a handler may have set for the answer it gave up (representation
// metadata, validators, caching): a build log whose blob is gone had its
// 404 sent with the log's "Content-Encoding: zstd", which a client then
// failed to decode, and a 404 must be byte-identical to authz's denied
// read, which carries only Content-Type and X-Content-Type-Options.
// Headers about the exchange rather than the body (Retry-After,
// Connection) stay.
func plainHeader(w http.ResponseWriter) {
	h := w.Header()
	for _, k := range representationHeaders {
		delete(h, k)
	}
	h["Content-Type"] = headerPlainType
	h["X-Content-Type-Options"] = headerNoSniff
}

// representationHeaders are the headers (canonical keys) that describe an
// answer's body or how it may be cached (RFC 9110 8, 13.3; RFC 9111 5),
// which plainHeader drops.
var representationHeaders = []string{
	"Content-Length", "Content-Encoding", "Content-Range", "Content-Language",
	"Content-Location", "Content-Disposition", "Accept-Ranges", "Last-Modified",
	"Etag", "Vary", "Cache-Control", "Expires",
}

// internalError logs err with what was being done and answers 500 with a
// generic message.
func (s *Server) internalError(w http.ResponseWriter, r *http.Request, what string, err error) {
	s.log.ErrorContext(r.Context(), "request failed", "method", r.Method, "path", route.LogPath(r.URL.Path), "op", what, "err", err)
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
		// Said as what it is (review r5, 2026-12-05: a full disk was
		// "internal error"); nothing was kept of the request.
		s.fail(w, http.StatusInsufficientStorage, "the cache's storage is full ("+what+"): nothing was stored; try again once an operator has freed space")
		return
	}
	s.fail(w, http.StatusInternalServerError, "internal error while "+what+": see the server log")
}

// lockPath serialises narinfo uploads of one flake's store hash in this
// process.
func (s *Server) lockPath(flake nixname.Flake, hash string) func() {
	h := fnv.New32a()
	h.Write([]byte(flake.String()))
	h.Write([]byte{'/'})
	h.Write([]byte(hash))
	m := &s.pathLocks[h.Sum32()%uint32(len(s.pathLocks))]
	m.Lock()
	return m.Unlock
}

// servePublicKeys answers route.PublicKeysPath: the keys that sign the
// narinfos, for clients to trust (public, like nix-cache-info).
func (s *Server) servePublicKeys(w http.ResponseWriter) {
	b, err := json.Marshal(route.PublicKeysResponse{PublicKeys: s.keys.PublicKeys()})
	if err != nil {
		s.fail(w, http.StatusInternalServerError, "encode public keys: "+err.Error())
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "public, max-age=300")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(append(b, '\n'))
}
