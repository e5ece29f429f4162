package gate

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	"github.com/flakegate/flakegate/internal/route"
)

// fakeAuthz is an ext_authz server that records every CheckRequest and
// answers with decide.
type fakeAuthz struct {
	authv3.UnimplementedAuthorizationServer
	mu     sync.Mutex
	seen   []*authv3.CheckRequest
	decide func(context.Context, *authv3.CheckRequest) (*authv3.CheckResponse, error)
}

func (f *fakeAuthz) Check(ctx context.Context, req *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	f.mu.Lock()
	f.seen = append(f.seen, proto.Clone(req).(*authv3.CheckRequest))
	decide := f.decide
	f.mu.Unlock()
	return decide(ctx, req)
}

func (f *fakeAuthz) requests() []*authv3.CheckRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*authv3.CheckRequest(nil), f.seen...)
}

// startAuthz serves f on a loopback port and returns its address.
func startAuthz(t testing.TB, f *fakeAuthz) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	authv3.RegisterAuthorizationServer(srv, f)
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(srv.Stop)
	return ln.Addr().String()
}

// upstream records what reached the handler behind the gate.
type upstream struct {
	mu      sync.Mutex
	calls   int
	header  http.Header
	bodyLen int64
	bodySum [32]byte
	// firstChunk, if set, is closed once the first body bytes have arrived.
	firstChunk chan struct{}
}

func (u *upstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := sha256.New()
	var n int64
	buf := make([]byte, 64<<10)
	first := true
	for {
		k, err := r.Body.Read(buf)
		if k > 0 {
			h.Write(buf[:k])
			n += int64(k)
			if first && u.firstChunk != nil {
				close(u.firstChunk)
			}
			first = false
		}
		if err != nil {
			break
		}
	}
	u.mu.Lock()
	u.calls++
	u.header = r.Header.Clone()
	u.bodyLen = n
	copy(u.bodySum[:], h.Sum(nil))
	u.mu.Unlock()
	w.Header().Set("X-Upstream", "yes")
	_, _ = io.WriteString(w, "served")
}

func newTestGate(t *testing.T, addr string, reg prometheus.Registerer, timeout time.Duration) *Gate {
	t.Helper()
	conn, err := Dial(context.Background(), addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	logger := slog.New(slog.NewJSONHandler(io.Discard, nil))
	return New(authv3.NewAuthorizationClient(conn), Options{Logger: logger, Timeout: timeout, Registerer: reg})
}

func allowWithSubject(subject string) func(context.Context, *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	return func(context.Context, *authv3.CheckRequest) (*authv3.CheckResponse, error) {
		return &authv3.CheckResponse{
			Status: &rpcstatus.Status{Code: int32(codes.OK)},
			HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{
				Headers: []*corev3.HeaderValueOption{{
					Header:       &corev3.HeaderValue{Key: "x-flakegate-subject", Value: subject},
					AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD,
				}},
				HeadersToRemove: []string{"authorization"},
			}},
		}, nil
	}
}

func TestGateOverGRPC(t *testing.T) {
	const narinfo = "/omnicorp/app/0a9g8mz2ck6lw5yyz3bh3nxa0cacp2v1.narinfo"
	deny := func(context.Context, *authv3.CheckRequest) (*authv3.CheckResponse, error) {
		return &authv3.CheckResponse{
			Status: &rpcstatus.Status{Code: int32(codes.Unauthenticated)},
			HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{
				Status:  &typev3.HttpStatus{Code: typev3.StatusCode_Unauthorized},
				Headers: []*corev3.HeaderValueOption{{Header: &corev3.HeaderValue{Key: "www-authenticate", Value: `Bearer realm="flakegate"`}}},
				Body:    "missing token\n",
			}},
		}, nil
	}
	grpcErr := func(context.Context, *authv3.CheckRequest) (*authv3.CheckResponse, error) {
		return nil, errors.New("policy evaluation exploded")
	}
	slow := func(ctx context.Context, _ *authv3.CheckRequest) (*authv3.CheckResponse, error) {
		<-ctx.Done()
		return nil, ctx.Err()
	}

	tests := []struct {
		name       string
		decide     func(context.Context, *authv3.CheckRequest) (*authv3.CheckResponse, error)
		headers    map[string]string
		wantStatus int
		wantBody   string
		wantHeader map[string]string // response headers
		upstream   bool
		upHeader   map[string]string // request headers the upstream must see ("" = absent)
		result     string
	}{
		{
			name:   "allow: subject added, credentials and forged headers removed",
			decide: allowWithSubject("github:omnicorp/app@refs/heads/main"),
			headers: map[string]string{
				"Authorization":       "Basic Zmxha2VnYXRlOnRvaw==",
				"X-Flakegate-Subject": "forged:admin",
				"x-FlakeGate-Other":   "forged",
				"X_flakegate_subject": "forged:underscore",
				"User-Agent":          "curl/8 Nix/2.24",
			},
			wantStatus: 200, wantBody: "served", wantHeader: map[string]string{"X-Upstream": "yes"},
			upstream: true,
			upHeader: map[string]string{
				"X-Flakegate-Subject": "github:omnicorp/app@refs/heads/main",
				"X-Flakegate-Other":   "",
				"X_flakegate_subject": "",
				"Authorization":       "",
				"User-Agent":          "curl/8 Nix/2.24",
			},
			result: "ok",
		},
		{
			name: "deny: status, headers and body from the service", decide: deny,
			wantStatus: 401, wantBody: "missing token\n",
			wantHeader: map[string]string{"Www-Authenticate": `Bearer realm="flakegate"`, "X-Upstream": ""},
			result:     "denied",
		},
		{
			name: "service error: 503", decide: grpcErr,
			wantStatus: 503, wantBody: route.BodyUnavailable, result: "error",
		},
		{
			name: "service too slow: 503 after the timeout", decide: slow,
			wantStatus: 503, wantBody: route.BodyUnavailable, result: "error",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fa := &fakeAuthz{decide: tc.decide}
			reg := prometheus.NewRegistry()
			g := newTestGate(t, startAuthz(t, fa), reg, 300*time.Millisecond)
			up := &upstream{}
			srv := httptest.NewServer(g.Wrap(up))
			defer srv.Close()

			req, _ := http.NewRequest("GET", srv.URL+narinfo, nil)
			for k, v := range tc.headers {
				req.Header[k] = []string{v}
			}
			resp, err := srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()

			if resp.StatusCode != tc.wantStatus || string(body) != tc.wantBody {
				t.Errorf("got %d %q, want %d %q", resp.StatusCode, body, tc.wantStatus, tc.wantBody)
			}
			for k, v := range tc.wantHeader {
				if got := resp.Header.Get(k); got != v {
					t.Errorf("response header %s = %q, want %q", k, got, v)
				}
			}
			up.mu.Lock()
			calls, upHeader := up.calls, up.header
			up.mu.Unlock()
			if (calls == 1) != tc.upstream {
				t.Fatalf("upstream calls = %d, want called=%v", calls, tc.upstream)
			}
			for k, v := range tc.upHeader {
				if got := upHeader.Get(k); got != v {
					t.Errorf("upstream saw %s = %q, want %q", k, got, v)
				}
			}

			// The Check carried the request as Envoy would send it.
			reqs := fa.requests()
			if len(reqs) != 1 {
				t.Fatalf("%d checks, want exactly 1", len(reqs))
			}
			h := reqs[0].GetAttributes().GetRequest().GetHttp()
			if h.GetPath() != narinfo || h.GetMethod() != "GET" || h.GetProtocol() != "HTTP/1.1" {
				t.Errorf("check http = %s %s %s", h.GetMethod(), h.GetPath(), h.GetProtocol())
			}
			if len(h.GetHeaderMap().GetHeaders()) < 5 {
				t.Errorf("check header_map has %d entries, want the pseudo-headers and the client's", len(h.GetHeaderMap().GetHeaders()))
			}
			for _, hv := range h.GetHeaderMap().GetHeaders() {
				k := hv.GetKey()
				if k != strings.ToLower(k) {
					t.Errorf("check header %q not lower-case", k)
				}
				if strings.HasPrefix(k, "x-flakegate-") || strings.Contains(k, "_") {
					t.Errorf("client header %q reached the authorization service", k)
				}
			}
			hv := headerMapValues(t, h.GetHeaderMap())
			if v, ok := tc.headers["Authorization"]; ok && !slices.Equal(hv["authorization"], []string{v}) {
				t.Errorf("check authorization = %q, want %q", hv["authorization"], v)
			}
			if len(hv["x-request-id"]) != 1 || hv["x-request-id"][0] == "" {
				t.Error("no x-request-id in the check")
			}
			if src := reqs[0].GetAttributes().GetSource().GetAddress().GetSocketAddress(); src.GetAddress() != "127.0.0.1" || src.GetPortValue() == 0 {
				t.Errorf("source address %v", src)
			}
			if dst := reqs[0].GetAttributes().GetDestination().GetAddress().GetSocketAddress(); dst.GetAddress() != "127.0.0.1" || dst.GetPortValue() == 0 {
				t.Errorf("destination address %v", dst)
			}

			if got := counterValue(t, g.checks.WithLabelValues(tc.result)); got != 1 {
				t.Errorf("checks_total{result=%q} = %v, want 1", tc.result, got)
			}
			if n := histogramCount(t, reg, "flakegate_gate_check_duration_seconds", tc.result); n != 1 {
				t.Errorf("latency histogram{result=%q} count = %d, want 1", tc.result, n)
			}
		})
	}
}

// TestGateAuthzDown: nothing listens at the authz address → 503, quickly
// enough that a client is not left hanging until the timeout.
func TestGateAuthzDown(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()

	g := newTestGate(t, addr, nil, 300*time.Millisecond)
	up := &upstream{}
	srv := httptest.NewServer(g.Wrap(up))
	defer srv.Close()
	for i := 0; i < 3; i++ {
		resp, err := srv.Client().Get(srv.URL + "/nix-cache-info")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusServiceUnavailable || string(body) != route.BodyUnavailable {
			t.Fatalf("attempt %d: got %d %q, want 503", i, resp.StatusCode, body)
		}
	}
	if up.calls != 0 {
		t.Fatalf("upstream called %d times with authz down", up.calls)
	}
}

// TestGateStreamsLargeUpload proves the body is neither sent to authz nor
// buffered by the gate: the upstream receives the first chunk while the
// client is still holding back the rest, and the bytes arrive intact.
func TestGateStreamsLargeUpload(t *testing.T) {
	fa := &fakeAuthz{decide: allowWithSubject("github:omnicorp/app@refs/heads/main")}
	g := newTestGate(t, startAuthz(t, fa), nil, 2*time.Second)
	up := &upstream{firstChunk: make(chan struct{})}
	srv := httptest.NewServer(g.Wrap(up))
	defer srv.Close()

	size := int64(64 << 20)
	if testing.Short() {
		size = 8 << 20
	}
	chunk := bytes.Repeat([]byte("nar!"), 256<<10) // 1 MiB
	pr, pw := io.Pipe()
	sum := sha256.New()
	writeErr := make(chan error, 1)
	go func() {
		// First chunk, then wait until the upstream has it: a gate that
		// buffered the body would never let it through.
		if _, err := pw.Write(chunk); err != nil {
			writeErr <- err
			return
		}
		sum.Write(chunk)
		select {
		case <-up.firstChunk:
		case <-time.After(20 * time.Second):
			pw.CloseWithError(errors.New("upstream did not get the first chunk while the upload was in progress"))
			writeErr <- errors.New("body was buffered: upstream saw nothing before the upload finished")
			return
		}
		for written := int64(len(chunk)); written < size; written += int64(len(chunk)) {
			if _, err := pw.Write(chunk); err != nil {
				writeErr <- err
				return
			}
			sum.Write(chunk)
		}
		writeErr <- pw.Close()
	}()

	req, _ := http.NewRequest("PUT", srv.URL+"/omnicorp/app/nar/1b9p3gd0wvb7k2wv0ii8ysxakqa7r6jwv1k8r6rpy2a1jr4kqf0k.nar", pr)
	req.Header.Set("Authorization", "Bearer t")
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err := <-writeErr; err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	up.mu.Lock()
	defer up.mu.Unlock()
	if up.bodyLen != size {
		t.Errorf("upstream got %d bytes, want %d", up.bodyLen, size)
	}
	var want [32]byte
	copy(want[:], sum.Sum(nil))
	if up.bodySum != want {
		t.Error("upstream body differs from what the client sent")
	}
	reqs := fa.requests()
	if len(reqs) != 1 {
		t.Fatalf("%d checks", len(reqs))
	}
	h := reqs[0].GetAttributes().GetRequest().GetHttp()
	if h.GetBody() != "" || len(h.GetRawBody()) != 0 {
		t.Error("the body was sent to the authorization service")
	}
	if te := headerMapValues(t, h.GetHeaderMap())["transfer-encoding"]; h.GetSize() != -1 || !slices.Equal(te, []string{"chunked"}) {
		t.Errorf("size %d, transfer-encoding %q: want -1, chunked", h.GetSize(), te)
	}
}

// TestGateCanonicalPath: the path is normalized before the Check, and an
// escaped slash never reaches the authorization service.
func TestGateCanonicalPath(t *testing.T) {
	fa := &fakeAuthz{decide: allowWithSubject("s")}
	g := newTestGate(t, startAuthz(t, fa), nil, 2*time.Second)
	var seenPath string
	srv := httptest.NewServer(g.Wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seenPath = r.URL.Path
	})))
	defer srv.Close()

	resp, err := srv.Client().Get(srv.URL + "/omnicorp/x/..//app/nix-cache-info")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || seenPath != "/omnicorp/app/nix-cache-info" {
		t.Errorf("status %d, upstream path %q", resp.StatusCode, seenPath)
	}
	if got := fa.requests()[0].GetAttributes().GetRequest().GetHttp().GetPath(); got != "/omnicorp/app/nix-cache-info" {
		t.Errorf("checked path %q", got)
	}

	resp, err = srv.Client().Get(srv.URL + "/omnicorp%2Fsecret/x")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("escaped slash: status %d, want 400", resp.StatusCode)
	}
	if n := len(fa.requests()); n != 1 {
		t.Errorf("%d checks, want the escaped-slash request refused before any check", n)
	}
}

func TestDialAddresses(t *testing.T) {
	for _, addr := range []string{"127.0.0.1:9001", ":9001", "authz:9001", "/run/flakegate/authz.sock", "unix:///run/x.sock"} {
		conn, err := Dial(context.Background(), addr)
		if err != nil {
			t.Errorf("Dial(%q): %v", addr, err)
			continue
		}
		conn.Close()
	}
	if _, err := Dial(context.Background(), ""); err == nil {
		t.Error("Dial(\"\") succeeded")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Dial(ctx, "127.0.0.1:1"); err == nil {
		t.Error("Dial with a cancelled context succeeded")
	}
}

func TestMetricsShareRegistry(t *testing.T) {
	reg := prometheus.NewRegistry()
	g1 := New(nil, Options{Registerer: reg})
	g2 := New(nil, Options{Registerer: reg})
	g1.observe(outcomeOK, time.Millisecond)
	g2.observe(outcomeOK, time.Millisecond)
	if got := counterValue(t, g1.checks.WithLabelValues("ok")); got != 2 {
		t.Errorf("shared counter = %v, want 2", got)
	}
}

func counterValue(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

func histogramCount(t *testing.T, reg *prometheus.Registry, name, result string) uint64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "result" && l.GetValue() == result {
					return m.GetHistogram().GetSampleCount()
				}
			}
		}
	}
	return 0
}

// Regression: the gate dialled before authz was listening (as happens when
// both start together, or after an authz restart) must not answer 503 once
// authz serves; gRPC's fail-fast default did so for the whole reconnect backoff.
func TestGateRecoversWhenAuthzStartsLate(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens yet

	up := &upstream{}
	g := newTestGate(t, addr, prometheus.NewRegistry(), 300*time.Millisecond)
	h := g.Wrap(up)
	get := func() int {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/omnicorp/app/nix-cache-info", nil))
		return rec.Code
	}
	if code := get(); code != http.StatusServiceUnavailable {
		t.Fatalf("authz down: status %d, want 503 (fail closed)", code)
	}
	// Let the channel fall into its reconnect backoff.
	time.Sleep(500 * time.Millisecond)

	restartAuthz(t, addr)

	// The first request after authz is back may wait for the reconnect, but
	// within its Check timeout it must get through (bounded retries: the
	// backoff is at most 2 s).
	g.timeout = 3 * time.Second
	if code := get(); code != http.StatusOK {
		t.Fatalf("authz back: first request got %d, want 200", code)
	}
}
