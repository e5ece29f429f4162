package serve

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

func discard() *slog.Logger { return slog.New(slog.DiscardHandler) }

// run starts Run in a goroutine and waits for Ready.
func run(t *testing.T, ls []Listener, o Options) (addrs []string, stop context.CancelFunc, done <-chan error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan []string, 1)
	o.Ready = func(a []string) { ready <- a }
	if o.Logger == nil {
		o.Logger = discard()
	}
	errc := make(chan error, 1)
	go func() { errc <- Run(ctx, ls, o) }()
	select {
	case addrs = <-ready:
	case err := <-errc:
		cancel()
		t.Fatalf("Run returned before Ready: %v", err)
	case <-time.After(10 * time.Second):
		cancel()
		t.Fatal("not ready within 10s")
	}
	t.Cleanup(cancel)
	return addrs, cancel, errc
}

// A stop lets the request in flight finish, with its full answer; the
// listeners are closed and Run returns nil.
func TestRunGracefulShutdownLetsRequestFinish(t *testing.T) {
	entered, release := make(chan struct{}), make(chan struct{})
	slow := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(entered)
		<-release
		io.WriteString(w, "finished")
	})}
	other := &http.Server{Handler: http.NotFoundHandler()}
	stopping := make(chan struct{})
	addrs, stop, done := run(t, []Listener{
		{Name: "public", Addr: "127.0.0.1:0", Server: slow},
		{Name: "internal", Addr: "127.0.0.1:0", Server: other},
	}, Options{ShutdownTimeout: 10 * time.Second, Stopping: func() { close(stopping) }})
	if len(addrs) != 2 || addrs[0] == addrs[1] || strings.HasSuffix(addrs[0], ":0") {
		t.Fatalf("bound addresses %v", addrs)
	}

	type answer struct {
		body string
		err  error
	}
	got := make(chan answer, 1)
	go func() {
		resp, err := http.Get("http://" + addrs[0] + "/")
		if err != nil {
			got <- answer{err: err}
			return
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		got <- answer{string(b), err}
	}()
	<-entered
	stop()
	<-stopping
	time.Sleep(100 * time.Millisecond) // shutdown has begun
	select {
	case err := <-done:
		t.Fatalf("Run returned while a request was in flight: %v", err)
	default:
	}
	if c, err := net.DialTimeout("tcp", addrs[1], time.Second); err == nil {
		c.Close()
		t.Error("a listener still accepts connections during shutdown")
	}
	close(release)
	if a := <-got; a.err != nil || a.body != "finished" {
		t.Fatalf("in-flight request: %q %v", a.body, a.err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run after a clean stop: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return")
	}
}

// A request that outlives ShutdownTimeout is cut and Run returns.
func TestRunShutdownTimeout(t *testing.T) {
	entered := make(chan struct{})
	hang := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(entered)
		<-r.Context().Done()
	})}
	addrs, stop, done := run(t, []Listener{{Name: "public", Addr: "127.0.0.1:0", Server: hang}},
		Options{ShutdownTimeout: 200 * time.Millisecond})
	go func() {
		if resp, err := http.Get("http://" + addrs[0] + "/"); err == nil {
			resp.Body.Close()
		}
	}()
	<-entered
	stop()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after the shutdown timeout")
	}
}

// A listener that cannot be bound is reported by name and address, and
// nothing is served: the listeners bound before it are closed.
func TestRunBindError(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	pre, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	err = Run(context.Background(), []Listener{
		{Name: "public", Ln: pre, Server: &http.Server{}},
		{Name: "internal", Addr: taken.Addr().String(), Server: &http.Server{}},
	}, Options{Logger: discard(), Ready: func([]string) { t.Error("Ready called") }})
	if err == nil || !strings.Contains(err.Error(), "internal listener: listen on "+taken.Addr().String()) {
		t.Fatalf("bind error: %v", err)
	}
	if c, err := net.DialTimeout("tcp", pre.Addr().String(), time.Second); err == nil {
		c.Close()
		t.Error("the listener bound first is still open")
	}
}

// A server that fails stops the others, and its error is returned.
func TestRunServeError(t *testing.T) {
	broken := failingServer{errors.New("accept: too many open files")}
	other := &http.Server{Handler: http.NotFoundHandler()}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	err := Run(ctx, []Listener{
		{Name: "internal", Addr: "127.0.0.1:0", Server: other},
		{Name: "public", Addr: "127.0.0.1:0", Server: broken},
	}, Options{Logger: discard()})
	if err == nil || !strings.Contains(err.Error(), "serve public on 127.0.0.1:") || !strings.Contains(err.Error(), "too many open files") {
		t.Fatalf("Run: %v", err)
	}
}

type failingServer struct{ err error }

func (f failingServer) Serve(net.Listener) error       { return f.err }
func (f failingServer) Shutdown(context.Context) error { return nil }
func (f failingServer) Close() error                   { return nil }

// A gRPC server on a unix socket is served and stopped alike.
func TestRunGRPC(t *testing.T) {
	gs := grpc.NewServer()
	hs := health.NewServer()
	healthpb.RegisterHealthServer(gs, hs)
	sock := "unix:" + t.TempDir() + "/grpc.sock"
	addrs, stop, done := run(t, []Listener{{Name: "gRPC", Addr: sock, Server: GRPC(gs)}}, Options{})
	conn, err := grpc.NewClient("unix:"+addrs[0], grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health over the socket: %v %v", resp, err)
	}
	stop()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
}
