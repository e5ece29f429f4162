package gate

import (
	"context"
	"fmt"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// InProcess is an ext_authz client that calls server in this process: the
// gate sends the same CheckRequest and applies the same CheckResponse as
// over gRPC, without the encoding, the HTTP/2 connection and the second
// process (the single-host blob server, internal/hostapp). Call options
// are gRPC's and are ignored.
//
// It keeps what a gRPC client guarantees the gate: the call returns when
// its context is done (the gate's per-check timeout, the client gone) with
// the error gRPC would give (DeadlineExceeded, Canceled), and an answer
// arriving later is dropped, never applied; a panic in server is an
// Internal error, as a crashed authz process is an unavailable one. Either
// way the gate answers 503.
//
// server must not keep or change the request after Check returns: the
// gate reuses it for the next request (authz.Server does neither).
func InProcess(server authv3.AuthorizationServer) authv3.AuthorizationClient {
	return inProcess{server}
}

type inProcess struct{ server authv3.AuthorizationServer }

type checkResult struct {
	resp *authv3.CheckResponse
	err  error
}

func (c inProcess) Check(ctx context.Context, req *authv3.CheckRequest, _ ...grpc.CallOption) (*authv3.CheckResponse, error) {
	if err := ctx.Err(); err != nil {
		return nil, status.FromContextError(err).Err()
	}
	// The server runs on its own goroutine so that the caller stops
	// waiting at its deadline (a JWKS fetch or a policy evaluation may not
	// watch the context). A server still running after a time-out keeps
	// reading req: the gate recycles a CheckRequest only after a Check that
	// returned an answer (Wrap), never after an error.
	done := make(chan checkResult, 1)
	go func() {
		defer func() {
			if p := recover(); p != nil {
				done <- checkResult{err: status.Error(codes.Internal, fmt.Sprintf("authorization panicked: %v", p))}
			}
		}()
		resp, err := c.server.Check(ctx, req)
		done <- checkResult{resp, err}
	}()
	select {
	case r := <-done:
		return r.resp, r.err
	case <-ctx.Done():
		return nil, status.FromContextError(ctx.Err()).Err()
	}
}
