package abandon

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// A client that keeps trickling its refused body just fast enough never to
// stall (a byte or a small chunk every 100 ms) cannot stretch the grace:
// the deadline is fixed when the answer is prepared, so the server closes
// the connection within Grace plus net/http's 500 ms wait, whatever the
// client sends (Content-Length under and over 256 KiB, chunked).
func TestTricklingClientIsCutOffAfterGrace(t *testing.T) {
	srv := httptest.NewServer(refuse)
	defer srv.Close()
	for _, tc := range []struct{ name, head, piece string }{
		{"content-length under 256 KiB", put(200 << 10), "A"},
		{"content-length over 256 KiB", put(10 << 20), strings.Repeat("A", 1000)},
		{"chunked", "PUT /x HTTP/1.1\r\nHost: cache\r\nTransfer-Encoding: chunked\r\n\r\n", "1\r\nA\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := net.Dial("tcp", srv.Listener.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if _, err := io.WriteString(c, tc.head+tc.piece); err != nil {
				t.Fatal(err)
			}
			stop := make(chan struct{})
			defer close(stop)
			go func() {
				for {
					select {
					case <-stop:
						return
					case <-time.After(100 * time.Millisecond):
					}
					if _, err := io.WriteString(c, tc.piece); err != nil {
						return
					}
				}
			}()
			_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
			br := bufio.NewReader(c)
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatalf("no answer: %v", err)
			}
			answered := time.Now()
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 413 {
				t.Fatalf("%d, want 413", resp.StatusCode)
			}
			// Generous slack for a loaded 2-core machine; the client would
			// keep it open for ever.
			limit := Grace + 500*time.Millisecond + 3*time.Second
			_ = c.SetReadDeadline(answered.Add(limit))
			_, err = br.ReadByte()
			var ne net.Error
			if err == nil || errors.As(err, &ne) && ne.Timeout() {
				t.Fatalf("connection still open %v after the answer (err %v)", time.Since(answered), err)
			}
			t.Logf("closed %v after the answer", time.Since(answered).Round(time.Millisecond))
		})
	}
}
