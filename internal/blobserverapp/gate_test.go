package blobserverapp

import (
	"context"
	"net"
	"net/http"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	statuspb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
)

// fakeAuthz allows requests bearing "Bearer good" and names their subject;
// it denies the rest with 404.
type fakeAuthz struct {
	authv3.UnimplementedAuthorizationServer
}

func (fakeAuthz) Check(ctx context.Context, req *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	auth := ""
	for _, hv := range req.GetAttributes().GetRequest().GetHttp().GetHeaderMap().GetHeaders() {
		if hv.GetKey() == "authorization" {
			auth = string(hv.GetRawValue())
		}
	}
	if auth == "Bearer good" {
		return &authv3.CheckResponse{
			Status: &statuspb.Status{Code: int32(codes.OK)},
			HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{
				Headers: []*corev3.HeaderValueOption{{Header: &corev3.HeaderValue{Key: "x-flakegate-subject", Value: "test:alice"}}},
			}},
		}, nil
	}
	return &authv3.CheckResponse{
		Status: &statuspb.Status{Code: int32(codes.PermissionDenied)},
		HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{
			Status: &typev3.HttpStatus{Code: typev3.StatusCode_NotFound},
			Body:   "not found\n",
		}},
	}, nil
}

// startFakeAuthz serves fakeAuthz over gRPC on a loopback port until the
// test ends (or gs.Stop).
func startFakeAuthz(t *testing.T) (gs *grpc.Server, addr string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs = grpc.NewServer()
	authv3.RegisterAuthorizationServer(gs, fakeAuthz{})
	go gs.Serve(ln)
	t.Cleanup(gs.Stop)
	return gs, ln.Addr().String()
}

// With -ext-authz every public request is checked first; the internal
// listener is not gated.
func TestEmbeddedGate(t *testing.T) {
	gs, addr := startFakeAuthz(t)

	s := start(t, config(func(c *Config) { c.DataDir, c.ExtAuthz = t.TempDir(), addr }))
	req := func(token, forgedSubject string) int {
		r, _ := http.NewRequest("GET", s.URL+"/omnicorp/a/nix-cache-info", nil)
		if token != "" {
			r.Header.Set("Authorization", "Bearer "+token)
		}
		if forgedSubject != "" {
			r.Header.Set("X-Flakegate-Subject", forgedSubject)
		}
		resp, err := http.DefaultClient.Do(r)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if st := req("", ""); st != 404 {
		t.Fatalf("no token: %d, want the policy's 404", st)
	}
	if st := req("bad", ""); st != 404 {
		t.Fatalf("bad token: %d", st)
	}
	if st := req("good", "forged:mallory"); st != 200 {
		t.Fatalf("good token: %d", st)
	}
	logs := s.log.String()
	if !strings.Contains(logs, `"subject":"test:alice"`) || strings.Contains(logs, "forged:mallory") {
		t.Fatalf("access log subject wrong (forged header must be stripped):\n%s", logs)
	}
	if strings.Contains(logs, "Bearer good") {
		t.Fatal("token in the log")
	}
	if st, _ := get(t, s.InternalURL+"/healthz"); st != 200 {
		t.Fatalf("internal listener: %d", st)
	}

	gs.Stop() // authz down: fail closed
	if st := req("good", ""); st != http.StatusServiceUnavailable {
		t.Fatalf("authz down: %d, want 503", st)
	}
}
