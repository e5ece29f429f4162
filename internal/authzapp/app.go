// Package authzapp runs the authz process, the twin of internal/blobserverapp:
// it loads the issuers file and the policy directory, builds the one
// authz.Checker every decision goes through (token verification, the
// revocation list, the Rego policy, the owners lookup), serves it over gRPC
// (Envoy's ext_authz, the blob server's embedded gate) and serves the HTTP
// listener (/metrics, /healthz, and the token exchange under /_flakegate/
// when -public-url is set), and shuts down gracefully (internal/serve).
//
// Revocation is always on: denylist.yaml in the policy directory is the
// Checker's subject check from the moment the Checker is built, for every
// request and for the token exchange alike.
package authzapp

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"

	"github.com/flakegate/flakegate/internal/authz"
	"github.com/flakegate/flakegate/internal/debughttp"
	"github.com/flakegate/flakegate/internal/exchange"
	"github.com/flakegate/flakegate/internal/identity"
	"github.com/flakegate/flakegate/internal/policy"
	"github.com/flakegate/flakegate/internal/revoke"
	"github.com/flakegate/flakegate/internal/route"
	"github.com/flakegate/flakegate/internal/serve"
)

// App is the authz process, built by New and run by Run or Serve.
type App struct {
	cfg      Config
	log      *slog.Logger
	verifier *identity.MultiVerifier
	policy   *policy.Engine
	checker  *authz.Checker
	exchange *exchange.Handler // nil: the token exchange is off
	grpc     *grpc.Server
	health   *health.Server
	mux      *http.ServeMux

	serving   atomic.Bool
	closeOnce sync.Once
}

// Run builds the process for cfg and serves it until ctx is done.
func Run(ctx context.Context, cfg Config, log *slog.Logger) error {
	a, err := New(ctx, cfg, log)
	if err != nil {
		return err
	}
	return a.Run(ctx)
}

// New checks cfg, loads the issuers file and the policies and builds the
// process. The policy directory must load; JWKS are fetched in the
// background by the verifier (tokens of an issuer without keys get 503
// with Retry-After until they load, and /healthz lists it as degraded).
// With cfg.Exchange.PublicURL set it also loads (or creates) the
// cache-token signing keys and trusts its own issuer.
func New(ctx context.Context, cfg Config, log *slog.Logger) (*App, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("invalid configuration:\n%w", err)
	}
	if log == nil {
		log = slog.Default()
	}
	issuers, err := identity.LoadIssuersFile(cfg.Issuers)
	if err != nil {
		return nil, err
	}
	for _, w := range issuers.Warnings() {
		log.Warn("issuers file: "+w, "file", cfg.Issuers)
	}
	reg := cfg.Registry
	if reg == nil {
		reg = prometheus.NewRegistry()
		reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	}
	var ownersHTTP *http.Client
	if cfg.OwnersTransport != nil {
		ownersHTTP = &http.Client{
			Transport:     cfg.OwnersTransport,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
	}

	verifier, err := identity.NewVerifier(ctx, issuers, identity.Options{Logger: log, Registerer: reg})
	if err != nil {
		return nil, fmt.Errorf("start token verifier: %w", err)
	}
	engine, err := policy.NewEngine(cfg.Policies, policy.Options{Logger: log, Registerer: reg, Debounce: cfg.PolicyDebounce, CheckData: revoke.CheckData})
	if err != nil {
		verifier.Close()
		return nil, err
	}
	metrics := authz.NewMetrics(reg)
	checker := &authz.Checker{
		Verifier: verifier,
		Policy:   engine,
		Owners: authz.NewOwnersClient(cfg.OwnersURL, authz.OwnersOptions{
			HTTPClient: ownersHTTP,
			Timeout:    cfg.OwnersTimeout,
			TTL:        cfg.OwnersTTL,
			Metrics:    metrics,
		}),
		Closures: authz.NewClosureClient(cfg.OwnersURL, authz.ClosureOptions{
			HTTPClient: ownersHTTP,
			Timeout:    cfg.ClosureTimeout,
			TTL:        cfg.ClosureTTL,
			Metrics:    metrics,
		}),
		// The denylist (data.denylist of the policy directory, reloaded
		// with it) is checked for every verified subject.
		SubjectCheck: revoke.NewChecker(engine, log, issuers.IssuerURLs()...).Check,
		Logger:       log.With("log", "decision"),
		Metrics:      metrics,
	}
	a := &App{
		cfg:      cfg,
		log:      log,
		verifier: verifier,
		policy:   engine,
		checker:  checker,
		mux:      http.NewServeMux(),
	}
	a.grpc, a.health = authz.NewGRPCServer(checker)
	a.mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	a.mux.HandleFunc("GET /healthz", a.serveHealthz)
	if cfg.Pprof {
		debughttp.Mount(a.mux)
	}
	a.mux.Handle(route.WhoamiPath, exchange.Whoami(checker, log))

	if cfg.Exchange.PublicURL == "" {
		exchange.RegisterDisabled(a.mux)
		log.Info("token exchange disabled (no -public-url); revocation list active")
		return a, nil
	}
	a.exchange, err = exchange.New(cfg.Exchange, checker, verifier, reg, log)
	if err != nil {
		a.Close()
		return nil, fmt.Errorf("token exchange: %w", err)
	}
	a.exchange.Register(a.mux)
	return a, nil
}

// Verifier is the process's token verifier (IdP issuers and, with the
// exchange on, flakegate's own).
func (a *App) Verifier() identity.Verifier { return a.verifier }

// PolicyRevision is the revision of the policy set in force.
func (a *App) PolicyRevision() string { return a.policy.Revision() }

// Run listens on the configured addresses and serves until ctx is done,
// then stops gracefully.
func (a *App) Run(ctx context.Context) error { return a.Serve(ctx, nil, nil) }

// Serve serves gRPC on gl and HTTP on hl (nil: listen on cfg.Listen and
// cfg.HTTPListen) until ctx is done or a server or the policy watcher
// fails, then stops gracefully (health NOT_SERVING first, in-flight calls
// finish within ShutdownTimeout) and releases everything.
func (a *App) Serve(ctx context.Context, gl, hl net.Listener) error {
	defer a.Close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	failed := make(chan error, 1)
	go func() {
		failed <- a.Background(ctx)
		cancel()
	}()

	hs := &http.Server{
		Handler:           a.mux,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(a.log.Handler(), slog.LevelWarn),
	}
	err := serve.Run(ctx, []serve.Listener{
		{Name: "gRPC", Addr: a.cfg.Listen, Ln: gl, Server: serve.GRPC(a.grpc)},
		{Name: "HTTP", Addr: a.cfg.HTTPListen, Ln: hl, Server: hs, TLS: a.cfg.HTTPTLS, Public: true},
	}, serve.Options{
		ShutdownTimeout: a.cfg.ShutdownTimeout,
		Logger:          a.log,
		Ready: func(addrs []string) {
			a.SetServing(true)
			a.log.Info("authz serving", "grpc", addrs[0], "http", addrs[1],
				"policy_revision", a.policy.Revision(), "owners_url", a.cfg.OwnersURL,
				"token_exchange", a.exchange != nil)
		},
		Stopping: func() { a.SetServing(false) },
	})
	cancel()
	if werr := <-failed; err == nil {
		err = werr
	}
	a.log.Info("authz stopped")
	return err
}

// Close releases the verifier (JWKS refresh) and stops the gRPC server.
// Serve calls it; call it for an App that is never served.
func (a *App) Close() {
	a.closeOnce.Do(func() {
		a.grpc.Stop()
		a.verifier.Close()
	})
}

// Background runs what the process does besides answering requests until
// ctx is done: the policy directory's watcher and, with the exchange on,
// the token keys' watcher. It returns nil when ctx ends, or the policy
// watcher's failure, after which the process must stop (Serve does; the
// single-host process, internal/hostapp, too).
func (a *App) Background(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var keys sync.WaitGroup
	if a.exchange != nil {
		keys.Go(func() { a.exchange.WatchKeys(ctx) })
	}
	err := a.policy.Run(ctx)
	if err != nil && ctx.Err() == nil {
		a.log.Error("authz failing, shutting down", "error", "policy watcher: "+err.Error())
		err = fmt.Errorf("policy watcher: %w", err)
	} else {
		err = nil
	}
	cancel()
	keys.Wait()
	return err
}

// AuthorizationServer is the ext_authz service over the process's one
// Checker: what the gRPC listener serves, for a caller in the same process
// (the single-host blob server's gate, through gate.InProcess).
func (a *App) AuthorizationServer() authv3.AuthorizationServer {
	return &authz.Server{Checker: a.checker}
}

// Handler is the HTTP listener's handler: /_flakegate/ (token exchange,
// JWKS), /healthz, /metrics and, with -pprof, /debug/pprof/.
func (a *App) Handler() http.Handler { return a.mux }

// Serving reports whether the process is serving (what /healthz tells).
func (a *App) Serving() bool { return a.serving.Load() }

// SetServing sets what /healthz and the gRPC health service report. Serve
// sets it when its listeners are up and clears it when stopping; the
// single-host process does the same with the blob server's listeners.
func (a *App) SetServing(v bool) {
	a.serving.Store(v)
	authz.SetServing(a.health, v)
}

type healthAnswer struct {
	Status         string `json:"status"`
	PolicyRevision string `json:"policy_revision"`
	PolicyError    string `json:"policy_error,omitempty"`
	// DegradedIssuers lists the issuers whose keys cannot be fetched
	// (absent when none): their tokens get 503 unless their key is
	// already loaded. authz keeps serving the other issuers.
	DegradedIssuers []identity.IssuerStatus `json:"degraded_issuers,omitempty"`
}

// serveHealthz answers 200 while serving (the last good policy set serves
// even when a reload failed, and the other issuers' tokens verify while an
// identity provider is down: such failures are reported, not fatal) and
// 503 before start and while shutting down.
func (a *App) serveHealthz(w http.ResponseWriter, _ *http.Request) {
	h := healthAnswer{Status: "serving", PolicyRevision: a.policy.Revision(), DegradedIssuers: a.verifier.DegradedIssuers()}
	if err := a.policy.LastError(); err != nil {
		h.PolicyError = err.Error()
	}
	code := http.StatusOK
	if !a.serving.Load() {
		h.Status, code = "not serving", http.StatusServiceUnavailable
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(h)
}
