package gate

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"time"

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
	return &inProcess{
		server:     server,
		work:       make(chan *inProcessCall),
		maxWorkers: max(64, 16*runtime.GOMAXPROCS(0)),
		idle:       inProcessIdle,
	}
}

// inProcessIdle is how long a worker waits for the next call before it
// exits: a busy server keeps its workers, an idle one keeps none.
const inProcessIdle = 30 * time.Second

// The server runs on a goroutine other than the caller's so that the
// caller stops waiting at its deadline (a JWKS fetch or a policy
// evaluation may not watch the context). It runs on a pool of long-lived
// workers rather than a new goroutine per call (hand-written for a
// measured reason, as gRPC's NumStreamWorkers that authz's server uses):
// a fresh goroutine starts with a small stack that the Checker's call
// depth grows, copying it (runtime.newstack) on every Check: 16 % of
// BenchmarkGateCheck/in-process and 6 % of the single-host process's CPU
// under wrk (docs/benchmarks.md, issue 16). A call finds an idle worker or,
// when every worker is busy, starts one (up to maxWorkers, then a goroutine
// of its own that exits after the call, as before).
type inProcess struct {
	server     authv3.AuthorizationServer
	work       chan *inProcessCall // unbuffered: a send succeeds only into an idle worker
	maxWorkers int
	idle       time.Duration

	mu      sync.Mutex
	workers int
}

// inProcessCall is one Check handed to a worker. The caller owns it again
// once done has delivered; a call abandoned at its deadline is never
// reused (its worker may still write into it).
type inProcessCall struct {
	ctx  context.Context
	req  *authv3.CheckRequest
	resp *authv3.CheckResponse
	err  error
	done chan struct{} // capacity 1
}

var callPool = sync.Pool{New: func() any { return &inProcessCall{done: make(chan struct{}, 1)} }}

func (c *inProcess) Check(ctx context.Context, req *authv3.CheckRequest, _ ...grpc.CallOption) (*authv3.CheckResponse, error) {
	if err := ctx.Err(); err != nil {
		return nil, status.FromContextError(err).Err()
	}
	call := callPool.Get().(*inProcessCall)
	call.ctx, call.req = ctx, req
	select {
	case c.work <- call:
	default:
		c.start(call)
	}
	// A server still running after a time-out keeps reading req: the gate
	// recycles a CheckRequest only after a Check that returned an answer
	// (Wrap), never after an error.
	select {
	case <-call.done:
		resp, err := call.resp, call.err
		*call = inProcessCall{done: call.done}
		callPool.Put(call)
		return resp, err
	case <-ctx.Done():
		return nil, status.FromContextError(ctx.Err()).Err()
	}
}

// start runs call on a new goroutine, which stays as a worker while there
// are fewer than maxWorkers.
func (c *inProcess) start(call *inProcessCall) {
	c.mu.Lock()
	worker := c.workers < c.maxWorkers
	if worker {
		c.workers++
	}
	c.mu.Unlock()
	go func() {
		c.serve(call)
		if worker {
			c.worker()
		}
	}()
}

// worker serves calls until none came for c.idle.
func (c *inProcess) worker() {
	t := time.NewTimer(c.idle)
	defer t.Stop()
	for {
		select {
		case call := <-c.work:
			c.serve(call)
			t.Reset(c.idle)
		case <-t.C:
			c.mu.Lock()
			c.workers--
			c.mu.Unlock()
			return
		}
	}
}

// serve runs one call and delivers its result; a panic in the server is
// an Internal error (the worker goes on).
func (c *inProcess) serve(call *inProcessCall) {
	defer func() {
		if p := recover(); p != nil {
			call.resp, call.err = nil, status.Error(codes.Internal, fmt.Sprintf("authorization panicked: %v", p))
		}
		call.done <- struct{}{}
	}()
	call.resp, call.err = c.server.Check(call.ctx, call.req)
}
