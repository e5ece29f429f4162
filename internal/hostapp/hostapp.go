// Package hostapp runs flakegate on one host as one process: the blob
// server (internal/blobserverapp) whose embedded gate asks the
// authorization core (internal/authzapp's Checker) in-process, through
// gate.InProcess, instead of over gRPC to a second process. It is what
// `blobserver -policies DIR -issuers FILE` runs.
//
// The request semantics are the two-process ones, by construction: the
// gate builds the same CheckRequest, authz.Server.Check answers it with the
// same Checker (token verification, revocation, policy, owners lookup,
// decision log), and the gate applies the same CheckResponse
// (internal/hostapp's tests run the gate's fixture table through both paths
// and compare). What changes:
//
//   - the owners lookups of a union read go to the blob server's internal
//     handler in memory (handlerTransport), not over TCP: the same
//     endpoints, answers and cache;
//   - /_flakegate/ (token exchange, JWKS) is served by authz's handler on
//     the public listener, behind the gate, instead of being forwarded;
//   - one Prometheus registry: the internal listener's /metrics has the
//     blob server's, the gate's and authz's metrics; /healthz answers 200
//     only while both parts serve; authz's own /healthz (policy revision,
//     degraded issuers) is at /authz/healthz.
//
// The Envoy deployment and the two-process embedded gate are unchanged.
package hostapp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/flakegate/flakegate/internal/authzapp"
	"github.com/flakegate/flakegate/internal/blobserverapp"
	"github.com/flakegate/flakegate/internal/gate"
)

// OwnersURL is the owners base URL authz is given in this process: its
// host names no network address (handlerTransport ignores it); it shows in
// authz's start log line.
const OwnersURL = "http://blobserver.in-process"

// Config is the single-host process's configuration: the blob server's
// and the authorization core's (cmd/blobserver registers the core's flags
// with authzapp.CoreFlags; authz's listener flags do not apply).
type Config struct {
	Blob  blobserverapp.Config
	Authz authzapp.Config
}

// DefaultConfig is both parts' defaults.
func DefaultConfig() Config {
	return Config{Blob: blobserverapp.DefaultConfig(), Authz: authzapp.DefaultConfig()}
}

// Validate reports every problem of both parts at once.
func (c *Config) Validate() error {
	var errs []error
	b := c.Blob
	b.Authz = &blobserverapp.InProcessAuthz{} // as Run sets it: its rules apply
	if err := b.Validate(); err != nil {
		errs = append(errs, err)
	}
	a := c.authz()
	if err := a.Validate(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// authz is the core's configuration as this process runs it.
func (c *Config) authz() authzapp.Config {
	a := c.Authz
	a.OwnersURL = OwnersURL
	a.LogLevel = c.Blob.LogLevel
	a.ShutdownTimeout = c.Blob.ShutdownTimeout
	return a
}

// Run checks cfg and serves until ctx is done or the policy watcher fails,
// then shuts down as the blob server does.
func Run(ctx context.Context, cfg Config, log *slog.Logger) error {
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("invalid configuration:\n%w", err)
	}
	reg := prometheus.NewRegistry()
	var internal atomic.Pointer[http.Handler]
	acfg := cfg.authz()
	acfg.Registry = reg
	acfg.OwnersTransport = handlerTransport{&internal}
	app, err := authzapp.New(ctx, acfg, log)
	if err != nil {
		return err
	}
	defer app.Close()

	bcfg := cfg.Blob
	bcfg.Authz = &blobserverapp.InProcessAuthz{
		Authorizer: gate.InProcess(app.AuthorizationServer()),
		Public:     app.Handler(),
		Registry:   reg,
		Internal: func(h http.Handler) http.Handler {
			internal.Store(&h)
			return internalHandler(h, app)
		},
		Serving: app.SetServing,
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	background := make(chan error, 1)
	go func() {
		background <- app.Background(ctx)
		cancel() // the policy watcher failed: stop serving
	}()
	err = blobserverapp.Run(ctx, bcfg, log)
	cancel()
	if berr := <-background; err == nil {
		err = berr
	}
	return err
}

// internalHandler is the internal listener's: the blob server's (owners,
// /metrics with every part's metrics), /healthz for both parts, authz's
// own handler under /authz/.
func internalHandler(blob http.Handler, app *authzapp.App) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/", blob)
	mux.Handle("/authz/", http.StripPrefix("/authz", app.Handler()))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		if !app.Serving() {
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			w.Header().Set("Cache-Control", "no-store")
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte("authorization not serving (see /authz/healthz)\n"))
			return
		}
		blob.ServeHTTP(w, r)
	})
	return mux
}

// handlerTransport answers authz's owners lookups with the blob server's
// internal handler, in memory: the same endpoints and JSON as over TCP
// (OwnersClient is unchanged, cache included), without a socket. Until the
// blob server has built its handler a lookup fails, and the union read
// that needed it is answered 503 (fail closed).
//
// httptest.ResponseRecorder is the standard library's in-memory
// ResponseWriter; the answers are a few hundred bytes.
type handlerTransport struct{ h *atomic.Pointer[http.Handler] }

func (t handlerTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	h := t.h.Load()
	if h == nil {
		return nil, errors.New("owners lookup: the blob server is not serving yet")
	}
	rec := httptest.NewRecorder()
	(*h).ServeHTTP(rec, req)
	if req.Body != nil {
		_ = req.Body.Close()
	}
	resp := rec.Result()
	resp.Request = req
	return resp, nil
}
