package authz

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"

	"github.com/flakegate/flakegate/internal/debughttp"
	"github.com/flakegate/flakegate/internal/identity"
	"github.com/flakegate/flakegate/internal/policy"
	"github.com/flakegate/flakegate/internal/revoke"
)

// Config is the authz process configuration (cmd/authz flags).
type Config struct {
	Listen     string // gRPC ext_authz listener
	HTTPListen string // /metrics, /healthz (and the token exchange endpoint)
	Policies   string // policy directory
	Issuers    string // issuers file
	OwnersURL  string // blob server internal listener (owners lookup)
	// OwnersTimeout bounds one owners lookup.
	OwnersTimeout time.Duration
	// OwnersTTL is how long an owners answer is cached, empty or not
	// (alike, so that timing does not tell present from absent objects).
	OwnersTTL time.Duration
	// ShutdownTimeout bounds the graceful stop on SIGTERM; after it,
	// remaining calls are cut.
	ShutdownTimeout time.Duration
	// PolicyDebounce is how long the policy directory must stay quiet
	// after a change before it is reloaded.
	PolicyDebounce time.Duration
	LogLevel       string // debug, info, warn, error
	// Pprof serves Go's runtime profiles under /debug/pprof/ on the HTTP
	// listener (profiling under load; keep that listener private).
	Pprof bool
}

// DefaultConfig is the configuration with every default filled in.
func DefaultConfig() Config {
	return Config{
		Listen:          "127.0.0.1:9001",
		HTTPListen:      "127.0.0.1:9002",
		OwnersURL:       "http://127.0.0.1:8081",
		OwnersTimeout:   2 * time.Second,
		OwnersTTL:       2 * time.Second,
		ShutdownTimeout: 15 * time.Second,
		PolicyDebounce:  100 * time.Millisecond,
		LogLevel:        "info",
	}
}

// Validate reports every problem of a serving configuration at once.
func (c *Config) Validate() error {
	var errs []error
	add := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if socketPath(c.Listen) == "" {
		if err := checkListenAddr(c.Listen); err != nil {
			add("-listen %q: %v (want host:port, or unix:/path for a unix socket)", c.Listen, err)
		}
	}
	if err := checkListenAddr(c.HTTPListen); err != nil {
		add("-http-listen %q: %v", c.HTTPListen, err)
	}
	if c.Listen != "" && c.Listen == c.HTTPListen && !strings.HasSuffix(c.Listen, ":0") {
		add("-listen and -http-listen are both %q: they need different addresses", c.Listen)
	}
	errs = append(errs, c.validateFiles()...)
	if u, err := url.Parse(c.OwnersURL); c.OwnersURL == "" {
		add("-owners-url is required (the blob server's internal listener, e.g. http://127.0.0.1:8081)")
	} else if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		add("-owners-url %q: want http(s)://host:port", c.OwnersURL)
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{
		{"owners timeout", c.OwnersTimeout},
		{"owners TTL", c.OwnersTTL},
		{"shutdown timeout", c.ShutdownTimeout},
		{"-policy-debounce", c.PolicyDebounce},
	} {
		if d.v <= 0 {
			add("%s must be positive, got %s", d.name, d.v)
		}
	}
	if _, err := ParseLogLevel(c.LogLevel); err != nil {
		add("-log-level: %v", err)
	}
	return errors.Join(errs...)
}

// validateFiles checks the policy directory and issuers file exist (their
// content is checked by loading, or by CheckConfig).
func (c *Config) validateFiles() []error {
	var errs []error
	if c.Policies == "" {
		errs = append(errs, errors.New("-policies is required (the Rego policy directory)"))
	} else if fi, err := os.Stat(c.Policies); err != nil {
		errs = append(errs, fmt.Errorf("-policies: %w", err))
	} else if !fi.IsDir() {
		errs = append(errs, fmt.Errorf("-policies %s: not a directory", c.Policies))
	}
	if c.Issuers == "" {
		errs = append(errs, errors.New("-issuers is required (the issuers YAML file)"))
	} else if _, err := os.Stat(c.Issuers); err != nil {
		errs = append(errs, fmt.Errorf("-issuers: %w", err))
	}
	return errs
}

func checkListenAddr(addr string) error {
	if addr == "" {
		return errors.New("empty address")
	}
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	if port == "" {
		return errors.New("no port")
	}
	return nil
}

// ParseLogLevel parses debug, info, warn or error.
func ParseLogLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return 0, fmt.Errorf("unknown log level %q (want debug, info, warn or error)", s)
	}
	return l, nil
}

// CheckConfig is `authz -check`: it validates the issuers file and the
// policy directory (compile, then run its *_test.rego), printing what it
// finds to w. It returns an error when anything is wrong. It makes no
// network calls.
func CheckConfig(ctx context.Context, cfg Config, w io.Writer) error {
	var errs []error
	fail := func(what string, err error) {
		fmt.Fprintf(w, "FAIL %s:\n%s\n", what, indent(err.Error()))
		errs = append(errs, fmt.Errorf("%s: %w", what, err))
	}

	if cfg.Issuers == "" {
		fail("issuers", errors.New("-issuers is required (the issuers YAML file)"))
	} else if issuers, err := identity.LoadIssuersFile(cfg.Issuers); err != nil {
		fail("issuers "+cfg.Issuers, err)
	} else {
		names := make([]string, len(issuers.Issuers))
		for i, ic := range issuers.Issuers {
			names[i] = ic.Name
		}
		fmt.Fprintf(w, "ok   issuers %s: %d issuer(s): %s\n", cfg.Issuers, len(names), strings.Join(names, ", "))
	}

	switch fi, err := os.Stat(cfg.Policies); {
	case cfg.Policies == "":
		fail("policies", errors.New("-policies is required (the Rego policy directory)"))
	case err != nil:
		fail("policies", err)
	case !fi.IsDir():
		fail("policies", fmt.Errorf("%s is not a directory", cfg.Policies))
	default:
		fmt.Fprintf(w, "--- policies %s\n", cfg.Policies)
		if err := policy.Check(ctx, cfg.Policies, w); err != nil {
			fail("policies "+cfg.Policies, err)
		} else {
			fmt.Fprintf(w, "ok   policies %s\n", cfg.Policies)
		}
		if err := revoke.CheckDir(cfg.Policies); err != nil {
			fail("denylist", err)
		}
	}
	return errors.Join(errs...)
}

func indent(s string) string {
	return "  " + strings.ReplaceAll(s, "\n", "\n  ")
}

// Service is the running authz process: verifier, policy engine, owners
// client, gRPC server and HTTP mux. Build it with New, add HTTP routes to
// Mux if needed (the token exchange endpoint), then Serve or Run.
type Service struct {
	cfg      Config
	log      *slog.Logger
	Registry *prometheus.Registry
	Verifier *identity.MultiVerifier
	Policy   *policy.Engine
	Checker  *Checker
	// Mux is the HTTP listener's mux (/metrics, /healthz); other features
	// mount their routes on it before Serve.
	Mux *http.ServeMux

	grpc     *grpc.Server
	health   *health.Server
	mu       sync.Mutex
	serving  bool
	closeOne sync.Once
}

// New loads the issuers file and policies and builds the service. The
// policy directory must load; JWKS are fetched in the background by the
// verifier (tokens of an issuer without keys get 401 until they load).
func New(ctx context.Context, cfg Config, log *slog.Logger) (*Service, error) {
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
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	verifier, err := identity.NewVerifier(ctx, issuers, identity.Options{Logger: log, Registerer: reg})
	if err != nil {
		return nil, fmt.Errorf("start token verifier: %w", err)
	}
	engine, err := policy.NewEngine(cfg.Policies, policy.Options{Logger: log, Registerer: reg, Debounce: cfg.PolicyDebounce})
	if err != nil {
		verifier.Close()
		return nil, err
	}
	metrics := NewMetrics(reg)
	checker := &Checker{
		Verifier: verifier,
		Policy:   engine,
		Owners: NewOwnersClient(cfg.OwnersURL, OwnersOptions{
			Timeout: cfg.OwnersTimeout,
			TTL:     cfg.OwnersTTL,
			Metrics: metrics,
		}),
		Logger:  log.With("log", "decision"),
		Metrics: metrics,
	}
	s := &Service{
		cfg:      cfg,
		log:      log,
		Registry: reg,
		Verifier: verifier,
		Policy:   engine,
		Checker:  checker,
		Mux:      http.NewServeMux(),
	}
	s.grpc, s.health = NewGRPCServer(checker)
	s.Mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	s.Mux.HandleFunc("GET /healthz", s.serveHealthz)
	if cfg.Pprof {
		debughttp.Mount(s.Mux)
	}
	return s, nil
}

// socketPath is the unix socket path of a gRPC listen address
// ("unix:/path" or an absolute path), "" for host:port. A unix socket spares
// the embedded gate (blobserver -ext-authz /path) the loopback TCP stack on
// every request.
func socketPath(addr string) string {
	if p, ok := strings.CutPrefix(addr, "unix:"); ok {
		return p
	}
	if strings.HasPrefix(addr, "/") {
		return addr
	}
	return ""
}

// listenGRPC listens on a host:port or a unix socket. A socket file left by
// a process that did not stop cleanly is replaced; any other file is not.
func listenGRPC(addr string) (net.Listener, error) {
	path := socketPath(addr)
	if path == "" {
		return net.Listen("tcp", addr)
	}
	if fi, err := os.Lstat(path); err == nil && fi.Mode()&os.ModeSocket != 0 {
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("remove stale socket: %w", err)
		}
	}
	return net.Listen("unix", path)
}

// Run listens on the configured addresses and serves until ctx is done,
// then stops gracefully.
func (s *Service) Run(ctx context.Context) error {
	gl, err := listenGRPC(s.cfg.Listen)
	if err != nil {
		s.Close()
		return fmt.Errorf("listen gRPC on %s: %w", s.cfg.Listen, err)
	}
	hl, err := net.Listen("tcp", s.cfg.HTTPListen)
	if err != nil {
		gl.Close()
		s.Close()
		return fmt.Errorf("listen HTTP on %s: %w", s.cfg.HTTPListen, err)
	}
	return s.Serve(ctx, gl, hl)
}

// Serve serves gRPC on gl and HTTP on hl until ctx is done or a server
// fails, then stops gracefully (health NOT_SERVING first, in-flight calls
// finish within ShutdownTimeout) and releases everything.
func (s *Service) Serve(ctx context.Context, gl, hl net.Listener) error {
	defer s.Close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	hs := &http.Server{
		Handler:           s.Mux,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	errc := make(chan error, 3)
	var wg sync.WaitGroup
	wg.Add(3)
	go func() {
		defer wg.Done()
		if err := s.Policy.Run(ctx); err != nil {
			errc <- fmt.Errorf("policy watcher: %w", err)
		}
	}()
	go func() {
		defer wg.Done()
		if err := s.grpc.Serve(gl); err != nil {
			errc <- fmt.Errorf("serve gRPC: %w", err)
		}
	}()
	go func() {
		defer wg.Done()
		if err := hs.Serve(hl); err != nil && !errors.Is(err, http.ErrServerClosed) {
			errc <- fmt.Errorf("serve HTTP: %w", err)
		}
	}()
	s.setServing(true)
	s.log.Info("authz serving", "grpc", gl.Addr().String(), "http", hl.Addr().String(),
		"policy_revision", s.Policy.Revision(), "owners_url", s.cfg.OwnersURL)

	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-errc:
		s.log.Error("authz failing, shutting down", "error", runErr)
	}
	s.setServing(false)
	s.log.Info("authz shutting down", "timeout", s.cfg.ShutdownTimeout.String())

	sctx, scancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.ShutdownTimeout)
	defer scancel()
	stopped := make(chan struct{})
	go func() {
		s.grpc.GracefulStop()
		close(stopped)
	}()
	if err := hs.Shutdown(sctx); err != nil {
		hs.Close()
	}
	select {
	case <-stopped:
	case <-sctx.Done():
		s.log.Warn("graceful stop timed out: closing remaining gRPC calls")
		s.grpc.Stop()
	}
	cancel()
	wg.Wait()
	s.log.Info("authz stopped")
	return runErr
}

// Close releases the verifier (JWKS refresh). Serve calls it.
func (s *Service) Close() {
	s.closeOne.Do(func() {
		s.grpc.Stop()
		s.Verifier.Close()
	})
}

func (s *Service) setServing(v bool) {
	s.mu.Lock()
	s.serving = v
	s.mu.Unlock()
	setServing(s.health, v)
}

type healthAnswer struct {
	Status         string `json:"status"`
	PolicyRevision string `json:"policy_revision"`
	PolicyError    string `json:"policy_error,omitempty"`
}

// serveHealthz answers 200 while serving (the last good policy set serves
// even when a reload failed: the failure is reported, not fatal) and 503
// before start and while shutting down.
func (s *Service) serveHealthz(w http.ResponseWriter, _ *http.Request) {
	s.mu.Lock()
	serving := s.serving
	s.mu.Unlock()
	a := healthAnswer{Status: "serving", PolicyRevision: s.Policy.Revision()}
	if err := s.Policy.LastError(); err != nil {
		a.PolicyError = err.Error()
	}
	code := http.StatusOK
	if !serving {
		a.Status, code = "not serving", http.StatusServiceUnavailable
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(a)
}
