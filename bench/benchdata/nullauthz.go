package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"syscall"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	statuspb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
)

// nullAuthz is an ext_authz service that decides nothing: every Check is
// allowed with the answer flakegate's authz gives an allowed request (a
// subject header added, Authorization removed), so the gate in front of it
// does the same work as in front of the real one. It decodes each request
// with the standard protobuf codec, as any Go ext_authz service would. The
// embedded gate's throughput in front of it is what the ext_authz round
// trip alone leaves: the bound for any authorization service.
type nullAuthz struct {
	authv3.UnimplementedAuthorizationServer
}

var nullAllow = &authv3.CheckResponse{
	Status: &statuspb.Status{},
	HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{
		Headers: []*corev3.HeaderValueOption{{
			Header:       &corev3.HeaderValue{Key: "x-flakegate-subject", Value: "null:allow"},
			AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD,
		}},
		HeadersToRemove: []string{"authorization"},
	}},
}

func (nullAuthz) Check(context.Context, *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	return nullAllow, nil
}

func runNullAuthz(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("nullauthz", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:18098", "address to serve gRPC on: host:port or unix:/path")
	if err := fs.Parse(args); err != nil {
		return err
	}
	network, addr := "tcp", *listen
	if path, ok := strings.CutPrefix(addr, "unix:"); ok {
		network, addr = "unix", path
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("remove the old socket %s: %w", path, err)
		}
	}
	ln, err := net.Listen(network, addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", *listen, err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	fmt.Fprintf(stdout, "null ext_authz on %s\n", *listen)
	return serveNullAuthz(ctx, ln)
}

// serveNullAuthz serves nullAuthz on ln until ctx ends.
func serveNullAuthz(ctx context.Context, ln net.Listener) error {
	// Long-lived workers, as flakegate's authz serves (a bound must not be
	// slower than what it bounds).
	gs := grpc.NewServer(grpc.NumStreamWorkers(uint32(max(64, 16*runtime.GOMAXPROCS(0)))))
	authv3.RegisterAuthorizationServer(gs, nullAuthz{})
	go func() {
		<-ctx.Done()
		gs.GracefulStop()
	}()
	if err := gs.Serve(ln); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
		return fmt.Errorf("serve: %w", err)
	}
	return nil
}
