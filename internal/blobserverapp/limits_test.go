package blobserverapp

import (
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/flakegate/flakegate/internal/testutil"
)

// Red-team finding: the public listener has no ReadTimeout (uploads may
// take hours), so a request announcing a body that then trickles held its
// connection (net/http reads up to 256 KiB of unread body before it
// answers). A body other than an upload's must arrive within
// RequestBodyTimeout: 408 at once after it, and the connection is closed.
// A GET's or HEAD's body is not read at all (as a denied request's is not:
// deniedequalsabsent_test.go in internal/hostapp): answered at once, the
// connection closed.
func TestSlowBodyOnReadRequest(t *testing.T) {
	s := start(t, config(func(c *Config) { c.DataDir, c.RequestBodyTimeout = t.TempDir(), 300*time.Millisecond }))
	addr := strings.TrimPrefix(s.URL, "http://")
	resp, body, took, closed := testutil.RawRequest(t, addr, "POST /nix-cache-info HTTP/1.1\r\nHost: cache\r\nContent-Length: 100000\r\n\r\n", "abc", 3*time.Second)
	if resp.StatusCode != http.StatusRequestTimeout || took > 2*time.Second || !closed {
		t.Fatalf("POST with a slow body: %d %q after %v, closed %v; want 408 at once, closed", resp.StatusCode, body, took, closed)
	}
	for _, head := range []string{
		"GET /nix-cache-info HTTP/1.1\r\nHost: cache\r\nContent-Length: 100000\r\n\r\n",
		"HEAD /omnicorp/a/nix-cache-info HTTP/1.1\r\nHost: cache\r\nTransfer-Encoding: chunked\r\n\r\n10000\r\n",
		"GET /nix-cache-info HTTP/1.1\r\nHost: cache\r\nContent-Length: 3\r\n\r\n",
	} {
		resp, body, took, closed := testutil.RawRequest(t, addr, head, "abc", 3*time.Second)
		if resp.StatusCode != http.StatusOK || !resp.Close {
			t.Fatalf("%q: %d %q (Connection: close %v), want 200 with the body ignored and Connection: close", head, resp.StatusCode, body, resp.Close)
		}
		if took > 2*time.Second || !closed {
			t.Fatalf("%q: answered after %v, closed %v", head, took, closed)
		}
	}
}

// The app wires the embedded gate so that a denied upload is answered at
// once (whatever its body does) and, while authz is down, 503 comes at
// once with Retry-After instead of after the Check timeout.
func TestEmbeddedGateSlowClientsAndAuthzDown(t *testing.T) {
	gs, addr := startFakeAuthz(t)
	s := start(t, config(func(c *Config) { c.DataDir, c.ExtAuthz = t.TempDir(), addr }))

	resp, _, took, closed := testutil.RawRequest(t, strings.TrimPrefix(s.URL, "http://"),
		"PUT /omnicorp/a/log/"+strings.Repeat("0", 32)+"-x.drv HTTP/1.1\r\nHost: cache\r\nContent-Length: 200000\r\n\r\n", "abc", 3*time.Second)
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

// A client that sends requests and never reads the answers used to hold
// its connection and a goroutine for good: the public listener has no
// write timeout (a NAR download may take hours), and TCP keeps a zero
// window open indefinitely. Here a client allowed to read pipelines GETs
// of a 1 MiB build log and reads nothing: once the answers fill the
// buffers the server's write waits, and -download-idle-timeout later it
// drops the connection, which ends the client's blocked write with an
// error. (internal/serve's tests hold the unguarded control.)
func TestClientThatStopsReadingIsDropped(t *testing.T) {
	_, addr := startFakeAuthz(t)
	s := start(t, config(func(c *Config) {
		c.DataDir, c.ExtAuthz, c.DownloadIdleTimeout = t.TempDir(), addr, 500*time.Millisecond
	}))
	logPath := "/omnicorp/a/log/" + strings.Repeat("0", 32) + "-x.drv"
	req, _ := http.NewRequest("PUT", s.URL+logPath, strings.NewReader(strings.Repeat("build output line\n", 1<<16)))
	req.Header.Set("Authorization", "Bearer good")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		t.Fatalf("log upload: %d", resp.StatusCode)
	}
	c, err := net.Dial("tcp", strings.TrimPrefix(s.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.(*net.TCPConn).SetReadBuffer(16 << 10)
	done := make(chan error, 1)
	go func() {
		get := "GET " + logPath + " HTTP/1.1\r\nHost: cache\r\nAuthorization: Bearer good\r\n\r\n"
		for {
			if _, err := io.WriteString(c, strings.Repeat(get, 8)); err != nil {
				done <- err
				return
			}
		}
	}()
	select {
	case err := <-done:
		t.Logf("the client's writes ended: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("a client that reads nothing still holds its connection after 30s (-download-idle-timeout 500ms)")
	}
	// The operator sees why: a log line naming the client, and a counter.
	local := c.LocalAddr().String()
	waitFor(t, func() bool {
		return strings.Contains(s.log.String(), `"msg":"dropped a client that stopped taking its answer (-download-idle-timeout)","remote":"`+local+`","dropped":"connection"`)
	})
	if st, body := get(t, s.InternalURL+"/metrics"); st != 200 || !strings.Contains(body, `flakegate_blobserver_stalled_clients_total{dropped="connection"} 1`) {
		t.Fatalf("metrics: %d, no stalled client counted:\n%s", st, body)
	}
}
