package blobserverapp

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"path/filepath"
	"strings"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/flakegate/flakegate/internal/blob/s3"
	"github.com/flakegate/flakegate/internal/gc"
	"github.com/flakegate/flakegate/internal/nixcache"
	"github.com/flakegate/flakegate/internal/serve"
)

// Config is the blob server's configuration (cmd/blobserver's flags, which
// take their defaults from DefaultConfig). A limit that can be switched off
// is off at 0, here as at the flag.
type Config struct {
	Listen string // public cache listener
	// TLS serves the public listener over TLS (HTTP/2 on), the certificate
	// reloaded when its files change; zero: in clear (warned about when the
	// address is reachable from other hosts).
	TLS            serve.TLSFiles
	InternalListen string // owners lookups, /metrics, /healthz; "" disables
	DataDir        string
	// SigningKeyFiles are Nix secret key files; every key signs. Empty: use
	// (creating on first start) <DataDir>/signing-key.sec.
	SigningKeyFiles []string
	ExtAuthz        string // ext_authz gRPC address for the embedded gate
	// BehindEnvoy allows serving the public listener without a gate:
	// Envoy's ext_authz in front checks every request and only Envoy can
	// reach this listener. Required to serve ungated: a configuration that
	// names no authorization at all (a misspelt -policies, a lost
	// -ext-authz) is refused instead of serving everything to everyone.
	// With a gate configured as well, the gate checks requests (the safe
	// side of the two) and a warning says the flag is moot.
	BehindEnvoy bool
	// AuthzHTTP is authz's HTTP listener (http://host:port); /_flakegate/…
	// (token exchange, JWKS) is forwarded there, as Envoy's route does. "" : not served.
	AuthzHTTP      string
	Storage        string // blob store URL; "": file://<DataDir>/blobs
	Index          string // index URL; "": sqlite://<DataDir>/index.db
	MaxNarSize     int64  // largest NAR (compressed or not)
	MaxLogSize     int64  // largest build log, as sent and decoded
	MaxNarInfoSize int64
	// MaxDecoderMemory bounds the xz and zstd decoder windows in use at
	// once, process-wide (nixcache.SetDecoderMemory): a stream declares its
	// window (up to 128 MiB) in its first bytes, and one the budget cannot
	// cover now is answered 503.
	MaxDecoderMemory int64
	Priority         int // nix-cache-info Priority
	// LookupCacheEntries bounds the in-memory caches of narinfo and NAR
	// lookups (entries each); 0 disables them: every lookup reads the index.
	LookupCacheEntries int
	// MissCacheTTL is how long a narinfo lookup that found nothing is
	// remembered (up to LookupCacheEntries of them): a path pushed through
	// another server sharing the index is seen here at most this late (one
	// pushed through this server at once). 0 disables it.
	MissCacheTTL time.Duration
	AccessLog    bool
	// RedirectNars answers an allowed NAR GET/HEAD with 307 to a presigned
	// URL of the S3 store, valid RedirectExpiry (needs an s3:// Storage
	// with region=, so that presigning makes no request).
	RedirectNars   bool
	RedirectExpiry time.Duration
	// UploadIdleTimeout drops an upload whose client sends nothing for this long.
	UploadIdleTimeout time.Duration
	// DownloadIdleTimeout closes a public connection (resets an HTTP/2
	// stream) whose client takes under serve.StallFloor (32 KiB) of an
	// answer in this long while the server waits for it, instead of leaving
	// the write blocked for good.
	DownloadIdleTimeout time.Duration
	// Upload limits (cacheserver.Config); 0 disables each.
	UploadMinRate        int64         // bytes/second over a 30 s window (408 below)
	UploadMaxDuration    time.Duration // per upload body (408 after)
	MaxExpansion         int64         // decompressed/compressed NAR bytes (413 above)
	MaxUploadsPerSubject int           // concurrent uploads per gate subject (429 beyond)
	// RequestBodyTimeout bounds reading the body of any other request than
	// an upload (PUT): such a body (rare: a token exchange's JSON) must
	// arrive whole within it (408 otherwise).
	RequestBodyTimeout time.Duration
	// ShutdownTimeout bounds how long running requests (uploads) may take
	// to finish after SIGTERM.
	ShutdownTimeout time.Duration
	LogLevel        string // debug, info, warn, error
	// Pprof serves Go's runtime profiles under /debug/pprof/ on the
	// internal listener.
	Pprof bool
	// RetentionFile is the retention file (internal/gc), read at start
	// (refused if invalid) and anew before each periodic collection.
	RetentionFile string
	// GCInterval runs a garbage collection this often; 0: never (run
	// `blobserver gc` instead).
	GCInterval time.Duration
	// ReadTouchInterval: a read counts as a use for retention at most
	// once per interval per flake path; 0: reads are not recorded.
	ReadTouchInterval time.Duration
	// ReadFlushInterval: recorded reads are written this often, batched.
	ReadFlushInterval time.Duration
	// GenerationPoll: how often the server checks whether a garbage
	// collection (of any process) removed something from the index.
	GenerationPoll time.Duration
	// OnListen, if set, is called with the bound addresses ("" for a
	// disabled internal listener) once both listeners accept connections.
	OnListen func(public, internal string)
	// Authz is the authorization core running in this process: set by the
	// single-host process (internal/hostapp), never by a flag; nil
	// otherwise. Exclusive with ExtAuthz and AuthzHTTP.
	Authz *InProcessAuthz
}

// InProcessAuthz is how the single-host process plugs its authorization
// core into the blob server: the embedded gate asks Authorizer instead of
// a gRPC connection, and /_flakegate/ is served by Public instead of being
// forwarded to authz's HTTP listener. Everything else (the handlers, the
// gate, the listeners, shutdown) is the blob server's as always.
type InProcessAuthz struct {
	Authorizer authv3.AuthorizationClient // gate.InProcess(the Checker's server)
	Public     http.Handler               // /_flakegate/ (token exchange, JWKS)
	// Registry is the process's one registry: the blob server's metrics
	// go there too, and its internal listener's /metrics serves it.
	Registry *prometheus.Registry
	// Internal is given the blob server's internal handler (owners
	// lookups, /healthz, /metrics) and returns the handler the internal
	// listener serves.
	Internal func(http.Handler) http.Handler
	// Serving is called with true once the listeners accept connections
	// and with false when shutdown begins.
	Serving func(bool)
}

// DefaultConfig is the configuration with every default filled in: the
// one place the blob server's defaults live (cmd/blobserver's flags start
// from it; cacheserver has none of its own).
func DefaultConfig() Config {
	return Config{
		Listen:         "127.0.0.1:8080",
		InternalListen: "127.0.0.1:8081",
		MaxNarSize:     64 << 30,
		// Build logs are text: the largest Nix builds (a browser, a
		// kernel with verbose output) log tens of MiB. A bound far below
		// -max-nar-size keeps one log upload from costing GiBs of storage
		// or minutes of decoding.
		MaxLogSize:         256 << 20,
		MaxNarInfoSize:     1 << 20,
		MaxDecoderMemory:   nixcache.DefaultDecoderMemory,
		Priority:           40,
		LookupCacheEntries: 1 << 16,
		// Nix itself remembers a missing narinfo for an hour
		// (narinfo-cache-negative-ttl): a few seconds more for a path
		// pushed elsewhere goes unnoticed, and a fleet asking for the same
		// absent paths is answered from memory.
		MissCacheTTL:      10 * time.Second,
		AccessLog:         true,
		RedirectExpiry:    60 * time.Second,
		UploadIdleTimeout: 2 * time.Minute,
		// Cuts only a client that (nearly) stopped reading: 32 KiB per
		// 2 minutes is about 270 bytes/s.
		DownloadIdleTimeout: 2 * time.Minute,
		// Far below any working CI link: it only catches clients that hold
		// a connection open with a trickle of bytes.
		UploadMinRate: 16 << 10,
		// A 64 GiB NAR at 16 MiB/s takes about 70 minutes.
		UploadMaxDuration: 2 * time.Hour,
		MaxExpansion:      nixcache.DefaultMaxExpansion,
		// Above Nix's default http-connections (25), so one ordinary `nix
		// copy` is never refused.
		MaxUploadsPerSubject: 32,
		// The public listener's ReadHeaderTimeout.
		RequestBodyTimeout: 30 * time.Second,
		// Lets a large upload finish after SIGTERM.
		ShutdownTimeout: 10 * time.Minute,
		LogLevel:        "info",
		// Reads are recorded coarsely (retention counts in days).
		ReadTouchInterval: time.Hour,
		ReadFlushInterval: 30 * time.Second,
		GenerationPoll:    time.Second,
	}
}

// Validate reports every problem of a serving configuration at once.
func (c *Config) Validate() error {
	var errs []error
	add := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if err := serve.CheckHostPort(c.Listen); err != nil {
		add("-listen %q: %v", c.Listen, err)
	}
	if err := c.TLS.Check(); err != nil {
		add("%v", err)
	}
	if c.InternalListen != "" {
		if err := serve.CheckHostPort(c.InternalListen); err != nil {
			add("-internal-listen %q: %v (or empty to disable it)", c.InternalListen, err)
		} else if c.InternalListen == c.Listen && !strings.HasSuffix(c.Listen, ":0") {
			add("-listen and -internal-listen are both %q: they need different addresses", c.Listen)
		}
	}
	if c.needsDataDir() && c.DataDir == "" {
		add("-data-dir is required (or set -storage, -index and -signing-key-file)")
	}
	for _, p := range []struct {
		name string
		v    int64
	}{
		{"-max-nar-size", c.MaxNarSize},
		{"-max-log-size", c.MaxLogSize},
		{"-max-narinfo-size", c.MaxNarInfoSize},
		{"-max-decoder-memory", c.MaxDecoderMemory},
		{"-priority", int64(c.Priority)},
		{"-upload-idle-timeout", int64(c.UploadIdleTimeout)},
		{"-download-idle-timeout", int64(c.DownloadIdleTimeout)},
		{"-shutdown-timeout", int64(c.ShutdownTimeout)},
		{"request body timeout", int64(c.RequestBodyTimeout)},
		{"-read-flush-interval", int64(c.ReadFlushInterval)},
		{"generation poll", int64(c.GenerationPoll)},
	} {
		if p.v <= 0 {
			add("%s must be positive, got %d", p.name, p.v)
		}
	}
	if c.MaxDecoderMemory > 0 && c.MaxDecoderMemory < nixcache.MinDecoderMemory {
		add("-max-decoder-memory must be at least %d MiB (one zstd stream of the largest window), got %d", (nixcache.MinDecoderMemory+1<<20-1)>>20, c.MaxDecoderMemory)
	}
	if c.RedirectNars {
		if !strings.HasPrefix(c.Storage, "s3://") {
			add("-redirect-nars needs S3 storage (-storage s3://…): NARs are redirected to presigned S3 URLs")
		} else if sc, err := s3.ParseURL(c.Storage); err == nil && sc.Region == "" {
			add("-redirect-nars needs region= in the -storage URL: presigning then makes no request to S3")
		}
		if c.RedirectExpiry < time.Second || c.RedirectExpiry > s3.MaxPresignExpiry {
			add("-redirect-expiry %s: want 1s to %s", c.RedirectExpiry, s3.MaxPresignExpiry)
		}
	}
	if c.LookupCacheEntries < 0 {
		add("-lookup-cache %d: want a number of entries, or 0 to disable", c.LookupCacheEntries)
	}
	if c.MissCacheTTL < 0 {
		add("-miss-cache-ttl %v: want a duration, or 0 to disable", c.MissCacheTTL)
	}
	if c.UploadMinRate < 0 {
		add("-upload-min-rate %d: want bytes/second, or 0 to disable", c.UploadMinRate)
	}
	if c.UploadMaxDuration < 0 {
		add("-upload-max-duration %v: want a duration, or 0 to disable", c.UploadMaxDuration)
	}
	if c.MaxExpansion < 0 {
		add("-max-expansion %d: want a ratio, or 0 to disable", c.MaxExpansion)
	}
	if c.MaxUploadsPerSubject < 0 {
		add("-max-uploads-per-subject %d: want a number, or 0 to disable", c.MaxUploadsPerSubject)
	}
	if c.GCInterval < 0 {
		add("-gc-interval %v: want a duration, or 0 to disable", c.GCInterval)
	}
	if c.ReadTouchInterval < 0 {
		add("-read-touch-interval %v: want a duration, or 0 to disable", c.ReadTouchInterval)
	}
	if c.RetentionFile != "" {
		if _, err := gc.LoadRetention(c.RetentionFile); err != nil {
			add("-retention: %v", err)
		}
	}
	if _, err := serve.ParseLogLevel(c.LogLevel); err != nil {
		add("-log-level: %v", err)
	}
	if c.Authz != nil && (c.ExtAuthz != "" || c.AuthzHTTP != "") {
		add("-policies runs authorization in this process: drop -ext-authz and -authz-http (they name a separate authz)")
	}
	if !c.BehindEnvoy && c.Authz == nil && c.ExtAuthz == "" {
		add("no authorization configured, refusing to serve the cache to everyone: give -policies and -issuers " +
			"(authorization in this process), -ext-authz (the embedded gate asks a separate authz), " +
			"or -behind-envoy (Envoy's ext_authz in front checks every request)")
	}
	return errors.Join(errs...)
}

func (c *Config) needsDataDir() bool {
	return c.Storage == "" || c.Index == "" || len(c.SigningKeyFiles) == 0
}

// storageURL is Storage, or the blob store in the data directory.
func (c *Config) storageURL() string {
	if c.Storage != "" {
		return c.Storage
	}
	return "file://" + filepath.Join(c.DataDir, "blobs")
}

// indexURL is Index, or the SQLite index in the data directory.
func (c *Config) indexURL() string {
	if c.Index != "" {
		return c.Index
	}
	return "sqlite://" + filepath.Join(c.DataDir, "index.db")
}

// NewLogger is the process's logger: JSON lines to w at LogLevel.
func (c *Config) NewLogger(w io.Writer) *slog.Logger { return serve.NewLogger(w, c.LogLevel) }

// ParseFlags parses the command's flags as every flakegate service does
// (serve.ParseFlags: flags, FLAKEGATE_<FLAG>, -config file).
func ParseFlags(fs *flag.FlagSet, args []string, stdout, stderr io.Writer) (code int, done bool) {
	return serve.ParseFlags(fs, args, stdout, stderr)
}
