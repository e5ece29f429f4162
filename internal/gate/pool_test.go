package gate

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc/peer"
)

// A pool spreads Checks over its connections in turn (each its own TCP
// connection, seen by the service as its own peer), and is down only when
// every connection fails.
func TestPoolSpreadsChecks(t *testing.T) {
	var mu sync.Mutex
	peers := map[string]int{}
	fa := &fakeAuthz{decide: func(ctx context.Context, _ *authv3.CheckRequest) (*authv3.CheckResponse, error) {
		if p, ok := peer.FromContext(ctx); ok {
			mu.Lock()
			peers[p.Addr.String()]++
			mu.Unlock()
		}
		return allowWithSubject("github:omnicorp/app")(ctx, nil)
	}}
	addr := startAuthz(t, fa)
	const n = 4
	p, err := DialPool(context.Background(), addr, n)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if p.Len() != n {
		t.Fatalf("Len = %d, want %d", p.Len(), n)
	}
	for range 10 * n {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := p.Check(ctx, &authv3.CheckRequest{})
		cancel()
		if err != nil {
			t.Fatal(err)
		}
	}
	if len(peers) != n {
		t.Fatalf("Checks came over %d connections, want %d: %v", len(peers), n, peers)
	}
	for a, k := range peers {
		if k != 10 {
			t.Errorf("connection %s carried %d Checks, want 10 (in turn)", a, k)
		}
	}
	if p.Down() {
		t.Error("Down with the service up")
	}

	// A pool to a port nobody listens on is down once its connections failed.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()
	dp, err := DialPool(context.Background(), dead, 3)
	if err != nil {
		t.Fatal(err)
	}
	defer dp.Close()
	for range 3 { // kick every connection into trying
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		_, _ = dp.Check(ctx, &authv3.CheckRequest{})
		cancel()
	}
	deadline := time.Now().Add(10 * time.Second)
	for !dp.Down() {
		if time.Now().After(deadline) {
			t.Fatal("a pool to a closed port never reported Down")
		}
		time.Sleep(20 * time.Millisecond)
	}
}
