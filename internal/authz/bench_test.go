package authz

import (
	"context"
	"io"
	"log/slog"
	"path/filepath"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/flakegate/flakegate/internal/authz/authztest"
	"github.com/flakegate/flakegate/internal/identity"
	"github.com/flakegate/flakegate/internal/identity/identitytest"
	"github.com/flakegate/flakegate/internal/serve"
	"github.com/flakegate/flakegate/internal/testutil"
)

// githubVerifier is a real verifier trusting one GitHub Actions issuer,
// whose tokens iss mints.
func githubVerifier(t testing.TB) (iss *identitytest.Issuer, v *identity.MultiVerifier) {
	t.Helper()
	iss = identitytest.NewIssuer(t)
	cfg := &identity.Config{Issuers: []identity.IssuerConfig{iss.Config("github", identity.ClaimsGitHubActions)}}
	v, err := identity.NewVerifier(context.Background(), cfg, identity.Options{Logger: discardLogger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(v.Close)
	return iss, v
}

// benchChecker is a Checker with a real verifier (one GitHub Actions
// issuer), the test policy and owners, the decision log written (JSON,
// discarded), and a token of omnicorp/app's CI on main.
func benchChecker(b *testing.B, owners staticOwners) (*Checker, string) {
	iss, v := githubVerifier(b)
	tok := iss.Mint(identitytest.GitHubActionsClaims("omnicorp/app", "refs/heads/main"))
	return &Checker{
		Verifier: v,
		Policy:   newTestEngine(b),
		Owners:   owners,
		Logger:   slog.New(slog.NewJSONHandler(io.Discard, nil)),
		Metrics:  NewMetrics(nil),
	}, tok
}

// BenchmarkCheck measures one decision on the hot path: a token already in
// the verifier's cache, a prepared policy, the decision log line written
// (JSON, discarded) and metrics updated.
func BenchmarkCheck(b *testing.B) {
	c, tok := benchChecker(b, staticOwners{{Org: "evilcorp", Name: "tool"}, {Org: "omnicorp", Name: "app"}})
	cases := []struct {
		name, method, path, auth string
	}{
		{"read_cached_token", "GET", "/omnicorp/app/" + testHash + ".narinfo", "Bearer " + tok},
		{"push_cached_token", "PUT", "/omnicorp/app/nar/" + testFile, "Bearer " + tok},
		{"union_two_owners", "GET", "/" + testHash + ".narinfo", "Bearer " + tok},
		{"anonymous_denied", "GET", "/omnicorp/app/" + testHash + ".narinfo", ""},
	}
	for _, cs := range cases {
		req := authztest.CheckRequest(cs.method, cs.path, cs.auth)
		if resp := c.Check(context.Background(), req); resp.GetStatus() == nil {
			b.Fatal("no status")
		}
		b.Run(cs.name, func(b *testing.B) {
			b.ReportAllocs()
			stop := testutil.ReportCPU(b)
			for b.Loop() {
				c.Check(context.Background(), req)
			}
			stop()
		})
		b.Run(cs.name+"_parallel", func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					c.Check(context.Background(), req)
				}
			})
		})
	}
}

// envoyCheckRequest is a CheckRequest as Envoy sends it for a Nix client's
// GET: every attribute set, the headers as the headers map (Envoy's
// default) or as header_map raw values (encode_raw_headers: true, what
// envoy/envoy.yaml and the embedded gate send).
func envoyCheckRequest(method, path, authorization string, raw bool) *authv3.CheckRequest {
	headers := [][2]string{
		{":authority", "cache.example.com"}, {":method", method}, {":path", path}, {":scheme", "https"},
		{"authorization", authorization}, {"user-agent", "curl/8.5.0 Nix/2.24.10"}, {"accept", "*/*"},
		{"x-request-id", "5b2c7a3e-0f7d-4a57-9d6a-0c7f6c3d2e11"},
	}
	h := &authv3.AttributeContext_HttpRequest{
		Id: "8841934459310581338", Method: method, Path: path, Host: "cache.example.com",
		Scheme: "https", Protocol: "HTTP/1.1",
	}
	if raw {
		h.HeaderMap = &corev3.HeaderMap{}
		for _, kv := range headers {
			h.HeaderMap.Headers = append(h.HeaderMap.Headers, &corev3.HeaderValue{Key: kv[0], RawValue: []byte(kv[1])})
		}
	} else {
		h.Headers = map[string]string{}
		for _, kv := range headers {
			h.Headers[kv[0]] = kv[1]
		}
	}
	sock := func(ip string, port uint32) *corev3.Address {
		return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
			Address: ip, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port}}}}
	}
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source:      &authv3.AttributeContext_Peer{Address: sock("10.0.0.7", 51234)},
		Destination: &authv3.AttributeContext_Peer{Address: sock("10.0.0.2", 8080)},
		Request:     &authv3.AttributeContext_Request{Time: timestamppb.Now(), Http: h},
	}}
}

var _ OwnersLookup = staticOwners(nil)

// BenchmarkCheckGRPC is one decision as the gate or Envoy sees it: a
// CheckRequest over a real gRPC connection (loopback TCP or a unix socket)
// to the server NewGRPCServer builds, the decision log written (discarded).
// Client and server share the machine, so ns/op is the cost of both sides.
func BenchmarkCheckGRPC(b *testing.B) {
	c, tok := benchChecker(b, staticOwners{{Org: "omnicorp", Name: "app"}})
	for _, bc := range []struct{ network, shape string }{
		{"tcp", "headers"}, {"unix", "headers"}, {"unix", "header_map"},
	} {
		network := bc.network
		req := envoyCheckRequest("GET", "/omnicorp/app/"+testHash+".narinfo", "Bearer "+tok, bc.shape == "header_map")
		b.Run(network+"/"+bc.shape, func(b *testing.B) {
			addr := "127.0.0.1:0"
			if network == "unix" {
				addr = "unix:" + filepath.Join(b.TempDir(), "authz.sock")
			}
			ln, err := serve.Listen(addr)
			if err != nil {
				b.Fatal(err)
			}
			gs, _ := NewGRPCServer(c)
			go gs.Serve(ln)
			defer gs.Stop()
			target := ln.Addr().String()
			if network == "unix" {
				target = "unix:" + target
			}
			conn, err := grpc.NewClient(target, grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				b.Fatal(err)
			}
			defer conn.Close()
			client := authv3.NewAuthorizationClient(conn)
			if resp, err := client.Check(context.Background(), req); err != nil || resp.GetOkResponse() == nil {
				b.Fatalf("Check = %v, %v; want allowed", resp, err)
			}
			b.ReportAllocs()
			b.SetParallelism(8) // requests in flight, as from a busy gate
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := client.Check(context.Background(), req); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}
