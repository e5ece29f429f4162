package blobserverapp

import (
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/flakegate/flakegate/internal/testutil"

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

// Every public request gets exactly one access line, also those the gate
// answered itself (a denial, a 503 while authz is down, a 400 for an
// escaped slash), with the status the client got; an allowed request's
// line names the gate's subject, a denied one's none.
func TestEmbeddedGateAccessLogsEveryRequest(t *testing.T) {
	gs, addr := startFakeAuthz(t)
	s := start(t, config(func(c *Config) { c.DataDir, c.ExtAuthz = t.TempDir(), addr }))
	do := func(path, token string) int {
		r, _ := http.NewRequest("GET", s.URL+path, nil)
		if token != "" {
			r.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(r)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	type line struct {
		Msg, Path, Subject string
		Status             int
	}
	want := []line{
		{Path: "/omnicorp/a/nix-cache-info", Status: do("/omnicorp/a/nix-cache-info", "")},
		{Path: "/omnicorp/a/nix-cache-info", Status: do("/omnicorp/a/nix-cache-info", "good"), Subject: "test:alice"},
		{Path: "/omnicorp/b/nix-cache-info", Status: do("/omnicorp/b/nix-cache-info", "bad")},
		{Path: "/omnicorp%2Fa/nix-cache-info", Status: do("/omnicorp%2Fa/nix-cache-info", "good")},
	}
	gs.Stop()
	want = append(want, line{Path: "/omnicorp/a/nix-cache-info", Status: do("/omnicorp/a/nix-cache-info", "good")})
	if got := []int{want[0].Status, want[1].Status, want[2].Status, want[3].Status, want[4].Status}; !slices.Equal(got, []int{404, 200, 404, 400, 503}) {
		t.Fatalf("statuses %v", got)
	}
	var got []line
	for _, l := range strings.Split(strings.TrimSpace(s.log.String()), "\n") {
		var e line
		if err := json.Unmarshal([]byte(l), &e); err != nil {
			t.Fatalf("log line %q: %v", l, err)
		}
		if e.Msg == "request" {
			e.Msg = ""
			got = append(got, e)
		}
	}
	if len(got) != len(want) {
		t.Fatalf("%d access lines for %d requests:\n%s", len(got), len(want), s.log)
	}
	for i := range want {
		// The escaped path is logged as the client sent it (the gate refused to canonicalize it).
		if got[i].Status != want[i].Status || got[i].Subject != want[i].Subject || !strings.HasPrefix(got[i].Path, "/omnicorp") {
			t.Errorf("access line %d: %+v, want %+v", i, got[i], want[i])
		}
	}
}

// The public listener in clear on an address other hosts reach is warned
// about when clients send it their tokens (a gate here), not behind Envoy
// (no gate: Envoy removed the tokens).
func TestClearPublicListenerWarning(t *testing.T) {
	_, addr := startFakeAuthz(t)
	for _, c := range []struct {
		name  string
		authz string
		warn  bool
	}{{"gated", addr, true}, {"behind Envoy", "", false}} {
		t.Run(c.name, func(t *testing.T) {
			cfg := config(func(cfg *Config) { cfg.DataDir, cfg.ExtAuthz = t.TempDir(), c.authz })
			cfg.Listen, cfg.InternalListen = "0.0.0.0:0", "127.0.0.1:0"
			ready := make(chan struct{})
			cfg.OnListen = func(string, string) { close(ready) }
			logs := &testutil.LogBuffer{}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- Run(ctx, cfg, slog.New(slog.NewJSONHandler(logs, nil))) }()
			select {
			case <-ready:
			case err := <-done:
				t.Fatalf("Run: %v", err)
			}
			cancel()
			<-done
			if got := strings.Contains(logs.String(), "serving in clear"); got != c.warn {
				t.Errorf("warned %v, want %v:\n%s", got, c.warn, logs)
			}
		})
	}
}
