package abandon

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/flakegate/flakegate/internal/testutil"
)

// refuse answers 413 without reading the body, as a handler refusing an
// upload by its declared size does.
var refuse = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	Request(w, r)
	http.Error(w, "too large", http.StatusRequestEntityTooLarge)
})

func put(size int) string {
	return "PUT /x HTTP/1.1\r\nHost: cache\r\nContent-Length: " + strconv.Itoa(size) + "\r\n\r\n"
}

// A client still sending its body gets the answer: with up to 256 KiB left
// its whole body is taken and no write of it fails; with more, it reads
// the answer while it sends (as curl and Go's transport do).
func TestClientStillSendingGetsTheAnswer(t *testing.T) {
	srv := httptest.NewServer(refuse)
	defer srv.Close()
	addr := srv.Listener.Addr().String()
	for _, size := range []int{64 << 10, 200 << 10, 4 << 20} {
		resp, body, err, writeErr := testutil.Upload(t, addr, put(size), strings.Repeat("A", size))
		if err != nil {
			t.Fatalf("%d bytes: no answer: %v", size, err)
		}
		if resp.StatusCode != 413 || body != "too large\n" || !resp.Close {
			t.Fatalf("%d bytes: %d %q close=%v", size, resp.StatusCode, body, resp.Close)
		}
		if size <= 256<<10 && writeErr != nil {
			t.Errorf("%d bytes: writing the body failed after the answer: %v", size, writeErr)
		}
	}
}

// A client that stalls gets the answer at once, and the connection is
// closed within Grace (plus net/http's 500 ms wait): it cannot hold it.
func TestStalledClientIsAnsweredAndCutOff(t *testing.T) {
	srv := httptest.NewServer(refuse)
	defer srv.Close()
	for _, tc := range []struct{ head, first string }{
		{put(200000), "abc"},
		{put(200000), strings.Repeat("A", 64<<10)},
		{put(10 << 20), "abc"},
		{"PUT /x HTTP/1.1\r\nHost: cache\r\nTransfer-Encoding: chunked\r\n\r\n", "186a0\r\nabc"},
	} {
		start := time.Now()
		resp, _, took, closed := testutil.RawRequest(t, srv.Listener.Addr().String(), tc.head, tc.first, Grace+2*time.Second)
		if resp.StatusCode != 413 || took > Grace/2 {
			t.Errorf("%q: %d after %v, want 413 at once", tc.head, resp.StatusCode, took)
		}
		if !closed {
			t.Errorf("%q: connection still open %v after the answer", tc.head, time.Since(start))
		}
	}
}

// A request without a body keeps its connection.
func TestNoBodyKeepsConnection(t *testing.T) {
	srv := httptest.NewServer(refuse)
	defer srv.Close()
	for i := 0; i < 2; i++ {
		resp, err := srv.Client().Get(srv.URL)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 413 || resp.Close {
			t.Fatalf("GET: %d close=%v", resp.StatusCode, resp.Close)
		}
	}
}
