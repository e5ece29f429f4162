package gate

import (
	"context"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
)

// InProcess is an ext_authz client that calls server in this process: the
// gate sends the same CheckRequest and applies the same CheckResponse as
// over gRPC, without the encoding, the HTTP/2 connection and the second
// process (the single-host blob server, internal/hostapp). The gate's
// per-check timeout reaches server as the context's deadline, as gRPC
// would send it. Call options are gRPC's and are ignored.
//
// server must not keep or change the request after Check returns: the
// gate reuses it for the next request (authz.Server does neither).
func InProcess(server authv3.AuthorizationServer) authv3.AuthorizationClient {
	return inProcess{server}
}

type inProcess struct{ server authv3.AuthorizationServer }

func (c inProcess) Check(ctx context.Context, req *authv3.CheckRequest, _ ...grpc.CallOption) (*authv3.CheckResponse, error) {
	return c.server.Check(ctx, req)
}
