package gate

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	"github.com/flakegate/flakegate/internal/testutil"
)

func denyWith(code typev3.StatusCode) func(context.Context, *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	return func(context.Context, *authv3.CheckRequest) (*authv3.CheckResponse, error) {
		return &authv3.CheckResponse{
			Status: &rpcstatus.Status{Code: int32(codes.PermissionDenied)},
			HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{
				Status:  &typev3.HttpStatus{Code: code},
				Headers: []*corev3.HeaderValueOption{{Header: &corev3.HeaderValue{Key: "www-authenticate", Value: `Bearer realm="flakegate"`}}},
				Body:    "denied\n",
			}},
		}, nil
	}
}

// Red-team finding: a request the gate denies, with a body that trickles
// in (under net/http's 256 KiB post-handler drain), got its 401 only after
// the whole body had arrived, so 100 connections could be held for
// minutes by an unauthenticated client. The answer must come at once and
// the server must drop the connection.
func TestDeniedSlowBodyIsAnsweredAtOnce(t *testing.T) {
	for _, tc := range []struct {
		name   string
		decide func(context.Context, *authv3.CheckRequest) (*authv3.CheckResponse, error)
		head   string
		want   string
	}{
		{"401 PUT content-length", denyWith(typev3.StatusCode_Unauthorized),
			"PUT /omnicorp/app/nar/1bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb.nar.xz HTTP/1.1\r\nHost: cache\r\nContent-Length: 200000\r\n\r\n", "401"},
		{"403 PUT chunked", denyWith(typev3.StatusCode_Forbidden),
			"PUT /omnicorp/app/log/x.drv HTTP/1.1\r\nHost: cache\r\nTransfer-Encoding: chunked\r\n\r\n", "403"},
		{"404 GET with a body", denyWith(typev3.StatusCode_NotFound),
			"GET /omnicorp/app/nix-cache-info HTTP/1.1\r\nHost: cache\r\nContent-Length: 100000\r\n\r\n", "404"},
		{"503 authz failing", func(context.Context, *authv3.CheckRequest) (*authv3.CheckResponse, error) {
			return nil, errors.New("down")
		}, "PUT /omnicorp/app/x.narinfo HTTP/1.1\r\nHost: cache\r\nContent-Length: 200000\r\n\r\n", "503"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fa := &fakeAuthz{decide: tc.decide}
			g := newTestGate(t, startAuthz(t, fa), nil, 2*time.Second)
			up := &upstream{}
			srv := httptest.NewServer(g.Wrap(up))
			defer srv.Close()
			first := "abc"
			if strings.Contains(tc.head, "chunked") {
				first = "186a0\r\nabc" // a 100000-byte chunk, barely begun
			}
			resp, _, took, closed := testutil.RawRequest(t, srv.Listener.Addr().String(), tc.head, first, 3*time.Second)
			if !strings.HasPrefix(resp.Status, tc.want) {
				t.Fatalf("status %q, want %s", resp.Status, tc.want)
			}
			if took > 2*time.Second {
				t.Errorf("answer took %v with the body pending, want it at once", took)
			}
			if !closed {
				t.Errorf("connection still open after the answer; the server waits on the body")
			}
			if up.calls != 0 {
				t.Errorf("upstream called")
			}
		})
	}
}

// A client still sending its body when the gate denies it (Nix pushing
// with an expired token) reads the 401 and its WWW-Authenticate, and its
// writes of the body do not fail: the gate takes the rest of a body under
// 256 KiB instead of resetting the connection (internal/abandon).
func TestDeniedUploadStillSendingGetsTheAnswer(t *testing.T) {
	fa := &fakeAuthz{decide: denyWith(typev3.StatusCode_Unauthorized)}
	g := newTestGate(t, startAuthz(t, fa), nil, 2*time.Second)
	up := &upstream{}
	srv := httptest.NewServer(g.Wrap(up))
	defer srv.Close()
	const size = 200 << 10
	head := "PUT /omnicorp/app/nar/1bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb.nar.xz HTTP/1.1\r\nHost: cache\r\nContent-Length: 204800\r\n\r\n"
	resp, _, err, writeErr := testutil.Upload(t, srv.Listener.Addr().String(), head, strings.Repeat("A", size))
	if err != nil {
		t.Fatalf("no answer: %v", err)
	}
	if resp.StatusCode != 401 || resp.Header.Get("Www-Authenticate") == "" || !resp.Close {
		t.Fatalf("%d %v close=%v", resp.StatusCode, resp.Header, resp.Close)
	}
	if writeErr != nil {
		t.Errorf("writing the body failed after the 401: %v", writeErr)
	}
	if up.calls != 0 {
		t.Errorf("upstream called")
	}
}

// An allowed request's body is still streamed to the handler, and a
// denial without a body keeps the connection.
func TestDeniedWithoutBodyKeepsConnection(t *testing.T) {
	fa := &fakeAuthz{decide: denyWith(typev3.StatusCode_Unauthorized)}
	g := newTestGate(t, startAuthz(t, fa), nil, 2*time.Second)
	srv := httptest.NewServer(g.Wrap(&upstream{}))
	defer srv.Close()
	for i := 0; i < 2; i++ {
		resp, err := srv.Client().Get(srv.URL + "/omnicorp/app/nix-cache-info")
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 401 || resp.Close {
			t.Fatalf("GET without a body: %d close=%v", resp.StatusCode, resp.Close)
		}
	}
}

// Red-team finding: with authz down every request waited the whole Check
// timeout for its 503. With ChannelDown, once the channel has failed to
// connect the gate answers 503 (with Retry-After) at once; when an authz
// comes up at the address, requests are served again.
func TestGateFailsFastWhileAuthzDown(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens

	conn, err := Dial(context.Background(), addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	const timeout = 2 * time.Second
	g := New(authv3.NewAuthorizationClient(conn), Options{
		Logger: slog.New(slog.DiscardHandler), Timeout: timeout, Unavailable: ChannelDown(conn),
	})
	h := g.Wrap(&upstream{})
	get := func() (*httptest.ResponseRecorder, time.Duration) {
		rec := httptest.NewRecorder()
		start := time.Now()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/omnicorp/app/nix-cache-info", nil))
		return rec, time.Since(start)
	}

	// Once the channel has failed, answers come at once.
	fast := 0
	for deadline := time.Now().Add(15 * time.Second); fast < 3; {
		if time.Now().After(deadline) {
			t.Fatalf("no fast 503 within 15s (channel state %v)", conn.GetState())
		}
		rec, took := get()
		if rec.Code != http.StatusServiceUnavailable {
			t.Fatalf("authz down: %d, want 503", rec.Code)
		}
		if rec.Header().Get("Retry-After") != "1" {
			t.Fatalf("503 without Retry-After: %v", rec.Header())
		}
		if took < timeout/4 {
			fast++
		} else {
			fast = 0
		}
	}

	// authz comes up at that address: served again (the reconnect
	// backoff is at most 2 s).
	restartAuthz(t, addr)
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		rec, _ := get()
		if rec.Code == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("authz back for 15s: still %d (channel state %v)", rec.Code, conn.GetState())
		}
	}
}

// restartAuthz brings an allowing fakeAuthz up at addr, where an earlier
// one was stopped (skipping the test if another process took the port).
func restartAuthz(t *testing.T, addr string) {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Skipf("port %s taken again before the test could reuse it: %v", addr, err)
	}
	gs := grpc.NewServer()
	authv3.RegisterAuthorizationServer(gs, &fakeAuthz{decide: allowWithSubject("github:omnicorp/app")})
	go func() { _ = gs.Serve(ln) }()
	t.Cleanup(gs.Stop)
}

// Now that net/http reads up to 256 KiB of a denied body after the answer
// (internal/abandon's grace), what it reads must stay unread: neither the
// body nor a request pipelined after it on the same connection reaches the
// handler, whatever the body holds (here itself a request the gate would
// allow). The connection ends after the one denial.
func TestDeniedBodyAndPipelinedRequestNeverReachHandler(t *testing.T) {
	allowGET := func(ctx context.Context, req *authv3.CheckRequest) (*authv3.CheckResponse, error) {
		if req.GetAttributes().GetRequest().GetHttp().GetMethod() == http.MethodGet {
			return allowWithSubject("ci")(ctx, req)
		}
		return denyWith(typev3.StatusCode_Unauthorized)(ctx, req)
	}
	const get = "GET /omnicorp/app/nix-cache-info HTTP/1.1\r\nHost: cache\r\n\r\n"
	const put = "PUT /omnicorp/app/log/x.drv HTTP/1.1\r\nHost: cache\r\n"
	for _, tc := range []struct{ name, raw string }{
		{"content-length, request in the body", put + "Content-Length: " + strconv.Itoa(len(get)) + "\r\n\r\n" + get},
		{"content-length, request after the body", put + "Content-Length: 3\r\n\r\nabc" + get},
		{"chunked, request after the body", put + "Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n" + get},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fa := &fakeAuthz{decide: allowGET}
			g := newTestGate(t, startAuthz(t, fa), nil, 2*time.Second)
			up := &upstream{}
			srv := httptest.NewServer(g.Wrap(up))
			defer srv.Close()
			// The gate does allow the GET on its own connection.
			if st, _ := testutil.Get(t, srv.URL+"/omnicorp/app/nix-cache-info", 5*time.Second); st != 200 || up.calls != 1 {
				t.Fatalf("GET alone: %d, upstream calls %d", st, up.calls)
			}
			c, err := net.Dial("tcp", srv.Listener.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if _, err := io.WriteString(c, tc.raw); err != nil {
				t.Fatal(err)
			}
			_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
			br := bufio.NewReader(c)
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 401 {
				t.Fatalf("PUT: %d, want 401", resp.StatusCode)
			}
			if rest, err := io.ReadAll(br); len(rest) > 0 {
				t.Errorf("more after the denial: %q (%v)", rest, err)
			}
			if up.calls != 1 {
				t.Errorf("upstream called %d times after the denial", up.calls-1)
			}
		})
	}
}
