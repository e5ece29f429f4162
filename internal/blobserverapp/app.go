// Package blobserverapp runs the blob server process: its configuration
// (Config, DefaultConfig — the one place its defaults live — and Validate),
// the flag values cmd/blobserver needs, then Run: it loads the signing keys,
// opens storage, builds the cache handlers (wrapped by the embedded gate
// when -ext-authz is set), serves the public and internal listeners and
// shuts down gracefully (internal/serve), letting running uploads end.
package blobserverapp

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"path/filepath"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/flakegate/flakegate/internal/authzproxy"
	"github.com/flakegate/flakegate/internal/blob"
	"github.com/flakegate/flakegate/internal/cacheserver"
	"github.com/flakegate/flakegate/internal/debughttp"
	"github.com/flakegate/flakegate/internal/gate"
	"github.com/flakegate/flakegate/internal/gc"
	"github.com/flakegate/flakegate/internal/index"
	"github.com/flakegate/flakegate/internal/nixcache"
	"github.com/flakegate/flakegate/internal/promutil"
	"github.com/flakegate/flakegate/internal/serve"
	"github.com/flakegate/flakegate/internal/storage"
)

// Listening is logged with the bound addresses once the server accepts
// connections (tests and scripts read it when listening on port 0).
const Listening = "listening"

// KeyFileName is the key created in the data directory when no key file is configured.
const KeyFileName = "signing-key.sec"

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

// Run checks cfg and serves until ctx is done, then shuts down
// gracefully, letting running uploads finish within ShutdownTimeout.
func Run(ctx context.Context, cfg Config, log *slog.Logger) error {
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("invalid configuration:\n%w", err)
	}
	keys, err := LoadKeys(cfg, log)
	if err != nil {
		return fmt.Errorf("signing keys: %w", err)
	}
	nixcache.SetDecoderMemory(cfg.MaxDecoderMemory)

	blobs, err := storage.OpenBlob(ctx, cfg.storageURL())
	if err != nil {
		return fmt.Errorf("open blob store: %w", err)
	}
	defer blobs.Close()
	idx, err := storage.OpenIndex(ctx, cfg.indexURL())
	if err != nil {
		return fmt.Errorf("open index: %w", err)
	}
	defer idx.Close()

	reg := prometheus.NewRegistry()
	if cfg.Authz != nil && cfg.Authz.Registry != nil {
		reg = cfg.Authz.Registry
	}
	srv, err := cacheserver.New(cacheConfig(cfg, blobs, idx, keys, log, reg))
	if err != nil {
		return err
	}

	// Observed as a whole below: every request gets its access line, also
	// one the gate denied or the proxy answered.
	public := srv.Unobserved()
	if cfg.Authz != nil {
		public = authzproxy.Route(cfg.Authz.Public, public)
	} else if cfg.AuthzHTTP != "" {
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
	if cfg.BehindEnvoy && (cfg.Authz != nil || cfg.ExtAuthz != "") {
		log.Warn("-behind-envoy is moot: this process has a gate, which checks every request")
	}
	switch {
	case cfg.Authz != nil:
		g := gate.New(cfg.Authz.Authorizer, gate.Options{Logger: log, Registerer: reg})
		public = g.Wrap(public)
		log.Info("embedded gate enabled, authorization in this process (single host)")
	case cfg.ExtAuthz != "":
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
	default: // BehindEnvoy (Validate refuses a configuration with no authorization)
		log.Info("no gate: -behind-envoy, Envoy's ext_authz in front checks every request; only Envoy may reach the public listener")
	}
	public = srv.Observe(public)

	// Public (warned about in clear off loopback) when clients reach it with
	// their tokens: with a gate here. Behind Envoy, Envoy has removed them.
	gated := cfg.Authz != nil || cfg.ExtAuthz != ""
	publicServer := &http.Server{
		Handler:           public,
		ReadHeaderTimeout: 30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	listeners := []serve.Listener{{Name: "public", Addr: cfg.Listen, TLS: cfg.TLS, Public: gated, Server: publicServer,
		WriteStall: cfg.DownloadIdleTimeout, OnStall: stallReporter(reg, log, cfg.DownloadIdleTimeout)}}
	internal := srv.InternalHandler()
	if cfg.Authz != nil {
		// Always: in-process authorization looks owners up through it,
		// listened on or not.
		internal = cfg.Authz.Internal(internal)
	}
	if cfg.InternalListen != "" {
		if cfg.Pprof {
			mux := http.NewServeMux()
			mux.Handle("/", internal)
			debughttp.Mount(mux)
			internal = mux
		}
		listeners = append(listeners, serve.Listener{Name: "internal", Addr: cfg.InternalListen, Server: &http.Server{
			Handler:           internal,
			ReadHeaderTimeout: 10 * time.Second,
			ReadTimeout:       30 * time.Second,
			WriteTimeout:      30 * time.Second,
			ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		}})
	}
	stopping := func() {}
	if cfg.Authz != nil {
		stopping = func() { cfg.Authz.Serving(false) }
	}
	bg, stopBackground := context.WithCancel(ctx)
	waitBackground := background(bg, cfg, srv, idx, blobs, gc.NewMetrics(reg), log)
	defer func() { stopBackground(); waitBackground() }()
	err = serve.Run(ctx, listeners, serve.Options{
		ShutdownTimeout: cfg.ShutdownTimeout,
		Logger:          log,
		Stopping:        stopping,
		Ready: func(addrs []string) {
			pubAddr, intAddr := addrs[0], ""
			if len(addrs) > 1 {
				intAddr = addrs[1]
			}
			if cfg.Authz != nil {
				cfg.Authz.Serving(true)
			}
			log.Info(Listening, "public", pubAddr, "internal", intAddr)
			if cfg.OnListen != nil {
				cfg.OnListen(pubAddr, intAddr)
			}
		},
	})
	if err != nil {
		return err
	}
	log.Info("stopped")
	return nil
}

// narRedirect is cacheserver.Config.NarRedirect: the expiry when NAR
// redirects are on, else 0.
func narRedirect(cfg Config) time.Duration {
	if !cfg.RedirectNars {
		return 0
	}
	return cfg.RedirectExpiry
}

// cacheConfig is the cache handlers' configuration: the limits as they
// are (0 is off in both), the storage opened.
func cacheConfig(cfg Config, blobs blob.Store, idx index.Index, keys *nixcache.KeySet, log *slog.Logger, reg *prometheus.Registry) cacheserver.Config {
	return cacheserver.Config{
		Blob: blobs, Index: idx, Keys: keys, Logger: log, AccessLog: cfg.AccessLog, Registry: reg,
		Gated: cfg.Authz != nil || cfg.ExtAuthz != "",
		// A build log is never allowed more than a NAR: an operator who
		// lowered -max-nar-size meant uploads to stay below it.
		MaxNarSize: cfg.MaxNarSize, MaxLogSize: min(cfg.MaxLogSize, cfg.MaxNarSize), MaxNarInfoSize: cfg.MaxNarInfoSize, Priority: cfg.Priority,
		CacheEntries: cfg.LookupCacheEntries, MissTTL: cfg.MissCacheTTL,
		NarRedirect:       narRedirect(cfg),
		UploadIdleTimeout: cfg.UploadIdleTimeout,
		UploadMinRate:     cfg.UploadMinRate, UploadMaxDuration: cfg.UploadMaxDuration,
		MaxExpansion: cfg.MaxExpansion, MaxUploadsPerSubject: cfg.MaxUploadsPerSubject,
		ReadTouchInterval: cfg.ReadTouchInterval, ReadFlushInterval: cfg.ReadFlushInterval, GenerationPoll: cfg.GenerationPoll,
	}
}

// stallReporter counts and logs each client the public listener's stall
// guard drops (-download-idle-timeout).
func stallReporter(reg prometheus.Registerer, log *slog.Logger, idle time.Duration) serve.StallFunc {
	dropped := promutil.Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "flakegate_blobserver_stalled_clients_total",
		Help: "Clients dropped for taking under 32 KiB of an answer within -download-idle-timeout, once per connection, by what was found stalled (connection, or stream: an HTTP/2 stream, whose connection is closed too).",
	}, []string{"dropped"}))
	return func(remote, what string, took int64) {
		dropped.WithLabelValues(what).Inc()
		log.Info("dropped a client that stopped taking its answer (-download-idle-timeout)",
			"remote", remote, "dropped", what, "took_bytes", took, "within", idle.String())
	}
}
