package gate

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
)

// Pool is an ext_authz client over several connections to one service,
// used in turn. One gRPC connection is one HTTP/2 connection: every Check of
// every request goes through its single reader and writer goroutines and
// its flow control, which on 8 cores held the gate at ≈ 34k checks/s
// whatever the service did (docs/benchmarks.md, rows c and e). Several
// connections spread that work over the cores. Safe for concurrent use.
type Pool struct {
	conns   []*grpc.ClientConn
	clients []authv3.AuthorizationClient
	next    atomic.Uint64
}

var _ authv3.AuthorizationClient = (*Pool)(nil)

// DialPool makes n connections (at least 1) to the ext_authz service at
// addr, each as Dial makes it.
func DialPool(ctx context.Context, addr string, n int, extra ...grpc.DialOption) (*Pool, error) {
	n = max(n, 1)
	p := &Pool{}
	for range n {
		c, err := Dial(ctx, addr, extra...)
		if err != nil {
			p.Close()
			return nil, fmt.Errorf("connection %d of %d: %w", len(p.conns)+1, n, err)
		}
		p.conns = append(p.conns, c)
		p.clients = append(p.clients, authv3.NewAuthorizationClient(c))
	}
	return p, nil
}

// Check sends the Check on the next connection in turn.
func (p *Pool) Check(ctx context.Context, in *authv3.CheckRequest, opts ...grpc.CallOption) (*authv3.CheckResponse, error) {
	i := p.next.Add(1) % uint64(len(p.clients))
	return p.clients[i].Check(ctx, in, opts...)
}

// Down is an Options.Unavailable: true while every connection is in
// TRANSIENT_FAILURE (its attempts to connect fail), as ChannelDown is for
// one connection.
func (p *Pool) Down() bool {
	for _, c := range p.conns {
		if c.GetState() != connectivity.TransientFailure {
			return false
		}
	}
	return true
}

// Len is the number of connections.
func (p *Pool) Len() int { return len(p.conns) }

// Close closes every connection.
func (p *Pool) Close() error {
	var errs []error
	for _, c := range p.conns {
		errs = append(errs, c.Close())
	}
	return errors.Join(errs...)
}
