// Package blobserverapp runs the blob server process: it loads the signing
// keys, opens storage, builds the cache handlers (wrapped by the embedded
// gate when -ext-authz is set), serves the public and internal listeners,
// and shuts down gracefully, letting running uploads end.
package blobserverapp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/flakegate/flakegate/internal/authzproxy"
	"github.com/flakegate/flakegate/internal/cacheserver"
	"github.com/flakegate/flakegate/internal/debughttp"
	"github.com/flakegate/flakegate/internal/gate"
	"github.com/flakegate/flakegate/internal/nixcache"
	"github.com/flakegate/flakegate/internal/storage"
)

// Config is the blob server's configuration (cmd/blobserver's flags).
type Config struct {
	Listen         string // public cache listener
	InternalListen string // owners lookups, /metrics, /healthz; "" disables
	DataDir        string
	// SigningKeyFiles are Nix secret key files; every key signs. Empty: use
	// (creating on first start) <DataDir>/signing-key.sec.
	SigningKeyFiles []string
	ExtAuthz        string // ext_authz gRPC address for the embedded gate; "" serves ungated
	// AuthzHTTP is authz's HTTP listener (http://host:port); /_flakegate/…
	// (token exchange, JWKS) is forwarded there, as Envoy's route does. "" : not served.
	AuthzHTTP      string
	Storage        string // blob store URL; default file://<DataDir>/blobs
	Index          string // index URL; default sqlite://<DataDir>/index.db
	MaxNarSize     int64
	MaxNarInfoSize int64
	Priority       int
	// LookupCacheEntries bounds the in-memory caches of narinfo and NAR
	// lookups (entries each): 0 means cacheserver.DefaultCacheEntries,
	// negative disables them.
	LookupCacheEntries int
	AccessLog          bool
	// UploadIdleTimeout drops an upload whose client sends nothing for this long.
	UploadIdleTimeout time.Duration
	// Upload limits, as in cacheserver.Config: 0 means the default,
	// negative disables the limit.
	UploadMinRate        int64         // bytes/second over a 30 s window (408 below)
	UploadMaxDuration    time.Duration // per upload body (408 after)
	MaxExpansion         int64         // decompressed/compressed NAR bytes (413 above)
	MaxUploadsPerSubject int           // concurrent uploads per gate subject (429 beyond)
	// RequestBodyTimeout bounds reading the body of any other request than
	// an upload (PUT): such a body (rare: a token exchange's JSON) must
	// arrive whole within it (408 otherwise). Default
	// DefaultRequestBodyTimeout.
	RequestBodyTimeout time.Duration
	// ShutdownTimeout bounds how long running requests (uploads) may take
	// to finish after SIGTERM.
	ShutdownTimeout time.Duration
	// Pprof serves Go's runtime profiles under /debug/pprof/ on the
	// internal listener.
	Pprof bool
	// OnListen, if set, is called with the bound addresses ("" for a
	// disabled internal listener) once both listeners accept connections.
	OnListen func(public, internal string)
}

// DefaultShutdownTimeout lets a large upload finish after SIGTERM.
const DefaultShutdownTimeout = 10 * time.Minute

// Listening is logged with the bound addresses once the server accepts
// connections (tests and scripts read it when listening on port 0).
const Listening = "listening"

// KeyFileName is the key created in the data directory when no key file is configured.
const KeyFileName = "signing-key.sec"

func (c *Config) defaults() error {
	if c.Listen == "" {
		return errors.New("no -listen address")
	}
	needData := c.Storage == "" || c.Index == "" || len(c.SigningKeyFiles) == 0
	if needData && c.DataDir == "" {
		return errors.New("-data-dir is required (or set -storage, -index and -signing-key-file)")
	}
	if c.Storage == "" {
		c.Storage = "file://" + filepath.Join(c.DataDir, "blobs")
	}
	if c.Index == "" {
		c.Index = "sqlite://" + filepath.Join(c.DataDir, "index.db")
	}
	if c.ShutdownTimeout <= 0 {
		c.ShutdownTimeout = DefaultShutdownTimeout
	}
	if c.RequestBodyTimeout <= 0 {
		c.RequestBodyTimeout = DefaultRequestBodyTimeout
	}
	return nil
}

// LoadKeys loads the configured key files, or loads/creates the data
// directory's key. It logs the public keys clients must trust.
func LoadKeys(cfg Config, log *slog.Logger) (*nixcache.KeySet, error) {
	var keys []nixcache.SigningKey
	if len(cfg.SigningKeyFiles) == 0 {
		path := filepath.Join(cfg.DataDir, KeyFileName)
		k, created, err := nixcache.LoadOrCreateKey(path, nixcache.DefaultKeyName())
		if err != nil {
			return nil, err
		}
		if created {
			log.Info("created signing key", "file", path, "public_key", k.PublicKey())
		}
		keys = append(keys, k)
	}
	for _, f := range cfg.SigningKeyFiles {
		k, err := nixcache.LoadKeyFile(f)
		if err != nil {
			return nil, err
		}
		keys = append(keys, k)
	}
	ks, err := nixcache.NewKeySet(keys...)
	if err != nil {
		return nil, err
	}
	log.Info("narinfo signing keys: clients trust these with trusted-public-keys", "public_keys", ks.PublicKeys())
	return ks, nil
}

// Run serves until ctx is done, then shuts down gracefully.
func Run(ctx context.Context, cfg Config, log *slog.Logger) error {
	if err := cfg.defaults(); err != nil {
		return err
	}
	keys, err := LoadKeys(cfg, log)
	if err != nil {
		return fmt.Errorf("signing keys: %w", err)
	}

	blobs, err := storage.OpenBlob(ctx, cfg.Storage)
	if err != nil {
		return fmt.Errorf("open blob store: %w", err)
	}
	defer blobs.Close()
	idx, err := storage.OpenIndex(ctx, cfg.Index)
	if err != nil {
		return fmt.Errorf("open index: %w", err)
	}
	defer idx.Close()

	reg := prometheus.NewRegistry()
	srv, err := cacheserver.New(cacheserver.Config{
		Blob: blobs, Index: idx, Keys: keys, Logger: log, AccessLog: cfg.AccessLog,
		MaxNarSize: cfg.MaxNarSize, MaxNarInfoSize: cfg.MaxNarInfoSize, Priority: cfg.Priority,
		CacheEntries:      cfg.LookupCacheEntries,
		UploadIdleTimeout: cfg.UploadIdleTimeout, Registry: reg,
		UploadMinRate: cfg.UploadMinRate, UploadMaxDuration: cfg.UploadMaxDuration,
		MaxExpansion: cfg.MaxExpansion, MaxUploadsPerSubject: cfg.MaxUploadsPerSubject,
	})
	if err != nil {
		return err
	}

	public := srv.Handler()
	if cfg.AuthzHTTP != "" {
		p, err := authzproxy.New(cfg.AuthzHTTP, authzproxy.Options{Logger: log})
		if err != nil {
			return err
		}
		public = authzproxy.Route(p, public)
		log.Info("forwarding /_flakegate/ (token exchange) to authz", "authz_http", cfg.AuthzHTTP)
	}
	// Uploads bound their own bodies (cacheserver); every other body is
	// read whole, within RequestBodyTimeout, before the handler runs. Inside
	// the gate: a denied request's body is never read.
	public = guardBodies(public, cfg.RequestBodyTimeout)
	// ---- Embedded gate: with -ext-authz every public request is checked by
	// the ext_authz service first, exactly as Envoy would (internal/gate).
	if cfg.ExtAuthz != "" {
		conn, err := gate.Dial(ctx, cfg.ExtAuthz)
		if err != nil {
			return fmt.Errorf("embedded gate: %w", err)
		}
		defer conn.Close()
		g := gate.New(authv3.NewAuthorizationClient(conn), gate.Options{
			Logger: log, Registerer: reg,
			// 503 at once while authz connections fail, not after the timeout.
			Unavailable: gate.ChannelDown(conn),
		})
		public = g.Wrap(public)
		log.Info("embedded gate enabled", "ext_authz", cfg.ExtAuthz)
	} else {
		log.Warn("no -ext-authz: the cache is served without authorization (put Envoy with ext_authz in front)")
	}

	servers := []*http.Server{{
		Handler:           public,
		ReadHeaderTimeout: 30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}}
	addrs := []string{cfg.Listen}
	if cfg.InternalListen != "" {
		internal := srv.InternalHandler()
		if cfg.Pprof {
			mux := http.NewServeMux()
			mux.Handle("/", internal)
			debughttp.Mount(mux)
			internal = mux
		}
		servers = append(servers, &http.Server{
			Handler:           internal,
			ReadHeaderTimeout: 10 * time.Second,
			ReadTimeout:       30 * time.Second,
			WriteTimeout:      30 * time.Second,
			ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		})
		addrs = append(addrs, cfg.InternalListen)
	}
	lns := make([]net.Listener, len(servers))
	for i, a := range addrs {
		ln, err := net.Listen("tcp", a)
		if err != nil {
			for _, l := range lns[:i] {
				l.Close()
			}
			return fmt.Errorf("listen on %s: %w", a, err)
		}
		lns[i] = ln
	}
	pubAddr, intAddr := lns[0].Addr().String(), ""
	if len(lns) > 1 {
		intAddr = lns[1].Addr().String()
	}
	log.Info(Listening, "public", pubAddr, "internal", intAddr)
	if cfg.OnListen != nil {
		cfg.OnListen(pubAddr, intAddr)
	}

	errc := make(chan error, len(servers))
	for i, s := range servers {
		go func() { errc <- s.Serve(lns[i]) }()
	}
	var serveErr error
	select {
	case <-ctx.Done():
	case serveErr = <-errc:
	}
	log.Info("shutting down: waiting for running requests", "timeout", cfg.ShutdownTimeout.String())
	sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	for _, s := range servers {
		if err := s.Shutdown(sctx); err != nil {
			log.Error("shutdown", "err", err)
		}
	}
	if serveErr != nil && !errors.Is(serveErr, http.ErrServerClosed) {
		return fmt.Errorf("serve: %w", serveErr)
	}
	log.Info("stopped")
	return nil
}
