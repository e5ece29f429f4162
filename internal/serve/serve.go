// Package serve is how both flakegate processes (internal/blobserverapp,
// internal/authzapp) run their listeners: Run binds every listener, serves
// each with its server until the context ends or one server fails, then
// shuts them all down gracefully within a timeout. It also holds what else
// the two share: listen addresses (TCP or a unix socket), the log level,
// the garbage collector's target (DefaultGCPercent) and the guard that drops
// a client that stops reading its answers (StallGuard, Listener.WriteStall).
package serve

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"google.golang.org/grpc"
)

// Server is what Run serves on a listener. *http.Server is one; GRPC adapts
// a *grpc.Server.
type Server interface {
	// Serve accepts connections on l until Shutdown or Close.
	Serve(l net.Listener) error
	// Shutdown stops accepting and waits for in-flight requests to end, or
	// for ctx to be done (then it returns ctx's error).
	Shutdown(ctx context.Context) error
	// Close ends every connection at once.
	Close() error
}

// Listener is one listener of a process and the server that serves it.
type Listener struct {
	// Name says which listener this is in logs and errors ("public",
	// "internal", "gRPC", "HTTP").
	Name string
	// Addr is where to listen: host:port, or unix:/path (see Listen).
	// Ignored when Ln is set.
	Addr string
	// Ln is a listener bound beforehand (tests that need an address before
	// the process starts); nil: Run listens on Addr.
	Ln     net.Listener
	Server Server
	// TLS, when enabled, serves Server (an *http.Server) over TLS with
	// HTTP/2, its certificate reloaded when the files change (Certs).
	TLS TLSFiles
	// Public marks a listener clients send their tokens to: served in
	// clear on an address other hosts can reach (Exposed), it logs a
	// warning at start.
	Public bool
	// WriteStall, when positive, drops a connection (an HTTP/2 stream)
	// whose client takes under StallFloor of what the server writes in this
	// long (StallGuard, StreamStallGuard); zero: no bound but the server's
	// own timeouts. OnStall, when set, hears of each client dropped.
	WriteStall time.Duration
	OnStall    StallFunc
}

// Options tune Run.
type Options struct {
	// ShutdownTimeout bounds the graceful stop: in-flight requests that
	// have not ended by then are cut. Zero: DefaultShutdownTimeout.
	ShutdownTimeout time.Duration
	// Logger receives the shutdown lines; nil: slog.Default().
	Logger *slog.Logger
	// Ready, if set, is called with the bound addresses, in the order of
	// the listeners, once every listener is bound and being served.
	Ready func(addrs []string)
	// Stopping, if set, is called once the servers are about to be shut
	// down (the context ended or a server failed), before Shutdown.
	Stopping func()
}

// DefaultShutdownTimeout is Options.ShutdownTimeout's default.
const DefaultShutdownTimeout = 15 * time.Second

// Run binds every listener (when one cannot be bound, none is served and
// the error names it), serves each with its server until ctx is done or a
// server fails, then shuts every server down at once: each gets
// ShutdownTimeout to let its in-flight requests end, after which it is
// closed. Run owns the listeners (also those passed in Ln): they are closed
// when it returns. It returns the first serve error, nil after a stop
// because ctx ended. It sets the garbage collector's target to
// DefaultGCPercent unless GOGC is set.
func Run(ctx context.Context, ls []Listener, o Options) error {
	log := o.Logger
	if log == nil {
		log = slog.Default()
	}
	timeout := o.ShutdownTimeout
	if timeout <= 0 {
		timeout = DefaultShutdownTimeout
	}
	tuneGC(log)

	servers := make([]Server, len(ls))
	for i, l := range ls {
		servers[i] = l.Server
		if !l.TLS.Enabled() {
			continue
		}
		hs, ok := l.Server.(*http.Server)
		if !ok {
			closeListeners(ls, nil)
			return fmt.Errorf("%s listener: TLS needs an HTTP server, not %T", l.Name, l.Server)
		}
		certs, err := LoadCerts(l.TLS, l.Name, log)
		if err != nil {
			closeListeners(ls, nil)
			return err
		}
		hs.TLSConfig = certs.TLSConfig()
		if l.WriteStall > 0 { // HTTP/2 comes with TLS only
			hs.Handler = StreamStallGuard(hs.Handler, l.WriteStall, l.OnStall)
			if prev := hs.ConnContext; prev != nil {
				hs.ConnContext = func(ctx context.Context, c net.Conn) context.Context { return withStallConn(prev(ctx, c), c) }
			} else {
				hs.ConnContext = withStallConn
			}
		}
		servers[i] = httpsServer{hs}
	}

	lns := make([]net.Listener, len(ls))
	closeAll := func() { closeListeners(ls, lns) }
	for i, l := range ls {
		if l.Ln != nil {
			lns[i] = l.Ln
			continue
		}
		ln, err := Listen(l.Addr)
		if err != nil {
			closeAll()
			return fmt.Errorf("%s listener: listen on %s: %w", l.Name, l.Addr, err)
		}
		lns[i] = ln
	}
	for i, l := range ls {
		lns[i] = StallGuard(lns[i], l.WriteStall, l.OnStall)
	}
	for i, l := range ls {
		if l.Public && !l.TLS.Enabled() && Exposed(lns[i].Addr()) {
			log.Warn("serving in clear on an address other hosts can reach: tokens and cache traffic cross the network unencrypted; set -tls-cert and -tls-key, or listen on loopback behind a TLS proxy",
				"listener", l.Name, "addr", lns[i].Addr().String())
		}
	}

	errc := make(chan error, len(ls))
	var serving sync.WaitGroup
	for i, l := range ls {
		serving.Add(1)
		go func() {
			defer serving.Done()
			if err := servers[i].Serve(lns[i]); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("serve %s on %s: %w", l.Name, lns[i].Addr(), err)
			}
		}()
	}
	if o.Ready != nil {
		addrs := make([]string, len(lns))
		for i, ln := range lns {
			addrs[i] = ln.Addr().String()
		}
		o.Ready(addrs)
	}

	var serveErr error
	select {
	case <-ctx.Done():
	case serveErr = <-errc:
		log.Error("a listener failed: shutting down", "error", serveErr.Error())
	}
	if o.Stopping != nil {
		o.Stopping()
	}
	log.Info("shutting down: waiting for running requests", "timeout", timeout.String())
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
	defer cancel()
	var stopping sync.WaitGroup
	for _, l := range ls {
		stopping.Add(1)
		go func() {
			defer stopping.Done()
			if err := l.Server.Shutdown(sctx); err != nil {
				log.Warn("graceful stop timed out: closing the remaining connections", "listener", l.Name, "error", err.Error())
				l.Server.Close()
			}
		}()
	}
	stopping.Wait()
	serving.Wait()
	closeAll() // a server that failed may have left its listener open
	return serveErr
}

// closeListeners closes the bound listeners lns (nil: none bound yet) and
// the ones passed in Ln.
func closeListeners(ls []Listener, lns []net.Listener) {
	for i, l := range ls {
		switch {
		case lns != nil && lns[i] != nil:
			lns[i].Close()
		case l.Ln != nil:
			l.Ln.Close()
		}
	}
}

// GRPC adapts a gRPC server to Server: Shutdown is GracefulStop (Stop once
// ctx is done), Close is Stop.
func GRPC(s *grpc.Server) Server { return grpcServer{s} }

type grpcServer struct{ s *grpc.Server }

func (g grpcServer) Serve(l net.Listener) error { return g.s.Serve(l) }

func (g grpcServer) Shutdown(ctx context.Context) error {
	done := make(chan struct{})
	go func() {
		g.s.GracefulStop()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		g.s.Stop()
		<-done
		return ctx.Err()
	}
}

func (g grpcServer) Close() error {
	g.s.Stop()
	return nil
}
