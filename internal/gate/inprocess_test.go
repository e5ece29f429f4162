package gate

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// echoServer answers each request with its own id in the status message,
// after block returns (nil: at once); it panics for the id "panic".
type echoServer struct {
	authv3.UnimplementedAuthorizationServer
	block func(id string)
}

func (s echoServer) Check(_ context.Context, req *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	id := req.GetAttributes().GetRequest().GetHttp().GetId()
	if id == "panic" {
		panic("bug in the server")
	}
	if s.block != nil {
		s.block(id)
	}
	return &authv3.CheckResponse{Status: &rpcstatus.Status{Message: id}}, nil
}

func checkRequestWithID(id string) *authv3.CheckRequest {
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{
		Http: &authv3.AttributeContext_HttpRequest{Id: id}}}}
}

// Every call gets its own answer, with more calls in flight than the pool
// has workers (the rest run on goroutines of their own), and the pool
// shrinks to nothing once idle.
func TestInProcessConcurrentCallsGetTheirOwnAnswers(t *testing.T) {
	release := make(chan struct{})
	c := InProcess(echoServer{block: func(string) { <-release }}).(*inProcess)
	c.maxWorkers, c.idle = 4, 50*time.Millisecond
	const n = 40
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id := fmt.Sprint(i)
			resp, err := c.Check(context.Background(), checkRequestWithID(id))
			if err != nil || resp.GetStatus().GetMessage() != id {
				errs <- fmt.Errorf("call %s answered %v, %v", id, resp, err)
			}
		}()
	}
	time.Sleep(20 * time.Millisecond) // let the calls pile up behind release
	close(release)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	// Sequential calls reuse the (now idle) workers and their calls.
	for i := range 100 {
		id := fmt.Sprint("seq", i)
		if resp, err := c.Check(context.Background(), checkRequestWithID(id)); err != nil || resp.GetStatus().GetMessage() != id {
			t.Fatalf("call %s answered %v, %v", id, resp, err)
		}
	}
	c.mu.Lock()
	workers := c.workers
	c.mu.Unlock()
	if workers < 1 || workers > 4 {
		t.Errorf("%d workers, want 1..4 (maxWorkers)", workers)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		c.mu.Lock()
		workers = c.workers
		c.mu.Unlock()
		if workers == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d workers still running long after the idle time", workers)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A call returns at its deadline with gRPC's error, its late answer is
// never delivered to a later call, and a panic is an Internal error that
// leaves the worker serving.
func TestInProcessDeadlineAndPanic(t *testing.T) {
	slow := make(chan struct{})
	c := InProcess(echoServer{block: func(id string) {
		if id == "slow" {
			<-slow
		}
	}}).(*inProcess)
	c.maxWorkers = 1

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	start := time.Now()
	resp, err := c.Check(ctx, checkRequestWithID("slow"))
	if status.Code(err) != codes.DeadlineExceeded || resp != nil {
		t.Fatalf("slow call: %v, %v; want DeadlineExceeded", resp, err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("slow call returned after %v, want at its 30ms deadline", d)
	}
	canceled, cancelNow := context.WithCancel(context.Background())
	cancelNow()
	if _, err := c.Check(canceled, checkRequestWithID("x")); status.Code(err) != codes.Canceled {
		t.Errorf("call with a canceled context: %v, want Canceled", err)
	}

	// The only worker is still busy with "slow": these run beside it.
	for i := range 20 {
		id := fmt.Sprint("next", i)
		if resp, err := c.Check(context.Background(), checkRequestWithID(id)); err != nil || resp.GetStatus().GetMessage() != id {
			t.Fatalf("call %s answered %v, %v", id, resp, err)
		}
	}
	close(slow) // the abandoned call finishes now; nobody may see its answer
	for i := range 20 {
		id := fmt.Sprint("after", i)
		if resp, err := c.Check(context.Background(), checkRequestWithID(id)); err != nil || resp.GetStatus().GetMessage() != id {
			t.Fatalf("call %s answered %v, %v (the abandoned answer leaked?)", id, resp, err)
		}
	}

	for range 3 {
		resp, err := c.Check(context.Background(), checkRequestWithID("panic"))
		if status.Code(err) != codes.Internal || resp != nil {
			t.Fatalf("panicking server: %v, %v; want Internal", resp, err)
		}
		if resp, err := c.Check(context.Background(), checkRequestWithID("ok")); err != nil || resp.GetStatus().GetMessage() != "ok" {
			t.Fatalf("call after a panic answered %v, %v", resp, err)
		}
	}
	var se interface{ GRPCStatus() *status.Status }
	_, err = c.Check(context.Background(), checkRequestWithID("panic"))
	if !errors.As(err, &se) {
		t.Errorf("panic error %T is not a gRPC status", err)
	}
}
