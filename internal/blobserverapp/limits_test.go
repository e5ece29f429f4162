package blobserverapp

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
)

// rawRequest sends head and the first bytes of a body announced in it,
// then nothing; it returns the response, how long it took, and whether the
// server then closed the connection.
func rawRequest(t *testing.T, baseURL, head, first string) (resp *http.Response, body string, took time.Duration, closed bool) {
	t.Helper()
	c, err := net.Dial("tcp", strings.TrimPrefix(baseURL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	if _, err := io.WriteString(c, head+first); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	resp, err = http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("no response after %v: %v", time.Since(start), err)
	}
	took = time.Since(start)
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
	_, err = br.ReadByte()
	// A reset (unread bytes at the server's close) is a close too; only
	// the deadline is not.
	var ne net.Error
	return resp, string(b), took, err != nil && !(errors.As(err, &ne) && ne.Timeout())
}

// Red-team finding: the public listener has no ReadTimeout (uploads may
// take hours), so a GET announcing a body that then trickles held its
// connection (net/http reads up to 256 KiB of unread body before it
// answers). Such a body must arrive within RequestBodyTimeout: 408 at
// once after it, and the connection is closed.
func TestSlowBodyOnReadRequest(t *testing.T) {
	s := start(t, config(func(c *Config) { c.DataDir, c.RequestBodyTimeout = t.TempDir(), 300*time.Millisecond }))
	for _, head := range []string{
		"GET /nix-cache-info HTTP/1.1\r\nHost: cache\r\nContent-Length: 100000\r\n\r\n",
		"HEAD /omnicorp/a/nix-cache-info HTTP/1.1\r\nHost: cache\r\nTransfer-Encoding: chunked\r\n\r\n10000\r\n",
	} {
		resp, body, took, closed := rawRequest(t, s.URL, head, "abc")
		if resp.StatusCode != http.StatusRequestTimeout {
			t.Fatalf("%q: %d %q, want 408", head, resp.StatusCode, body)
		}
		if took > 5*time.Second || !closed {
			t.Fatalf("%q: answered after %v, closed %v", head, took, closed)
		}
	}
	// A request whose small body comes at once is served.
	resp, _, _, _ := rawRequest(t, s.URL, "GET /nix-cache-info HTTP/1.1\r\nHost: cache\r\nContent-Length: 3\r\nConnection: close\r\n\r\n", "abc")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET with a small body: %d", resp.StatusCode)
	}
}

// The app wires the embedded gate so that a denied upload is answered at
// once (whatever its body does) and, while authz is down, 503 comes at
// once with Retry-After instead of after the Check timeout.
func TestEmbeddedGateSlowClientsAndAuthzDown(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	authv3.RegisterAuthorizationServer(gs, fakeAuthz{})
	go gs.Serve(ln)
	defer gs.Stop()
	s := start(t, config(func(c *Config) { c.DataDir, c.ExtAuthz = t.TempDir(), ln.Addr().String() }))

	resp, _, took, closed := rawRequest(t, s.URL,
		"PUT /omnicorp/a/log/"+strings.Repeat("0", 32)+"-x.drv HTTP/1.1\r\nHost: cache\r\nContent-Length: 200000\r\n\r\n", "abc")
	if resp.StatusCode != http.StatusNotFound || took > 2*time.Second || !closed {
		t.Fatalf("denied slow upload: %d after %v, closed %v; want the denial at once", resp.StatusCode, took, closed)
	}

	gs.Stop()
	fast := 0
	for deadline := time.Now().Add(15 * time.Second); fast < 3; {
		if time.Now().After(deadline) {
			t.Fatal("no fast 503 within 15s of authz going down")
		}
		start := time.Now()
		r, err := http.Get(s.URL + "/nix-cache-info")
		if err != nil {
			t.Fatal(err)
		}
		r.Body.Close()
		if r.StatusCode != http.StatusServiceUnavailable || r.Header.Get("Retry-After") != "1" {
			t.Fatalf("authz down: %d Retry-After %q, want 503 with Retry-After 1", r.StatusCode, r.Header.Get("Retry-After"))
		}
		if time.Since(start) < 500*time.Millisecond {
			fast++
		} else {
			fast = 0
		}
	}
}
