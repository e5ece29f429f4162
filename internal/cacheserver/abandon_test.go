package cacheserver

import (
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/flakegate/flakegate/internal/abandon"
	"github.com/flakegate/flakegate/internal/testutil"
)

// CI flake of TestFilesAdversarial/oversize_body: an upload refused before
// its body was read (413) closed the connection at once with the client's
// bytes unread. The kernel then resets the connection, the client's next
// write of its body fails, and Go's transport (curl too: "Send failure")
// reports "connection reset by peer" instead of the 413 and its reason.
// The server must let a client that is still sending finish (up to net/http's
// 256 KiB drain) or, past that, close only its own side first.
func TestRefusedUploadAnswerSurvivesUnreadBody(t *testing.T) {
	ts := newTestServer(t, "", nil, nil)
	addr := strings.TrimPrefix(ts.URL, "http://")
	path := "/omnicorp/a/debuginfo/" + strings.Repeat("0", 40)
	for _, size := range []int{200 << 10, 4 << 20} {
		head := "PUT " + path + " HTTP/1.1\r\nHost: cache\r\nContent-Length: " + strconv.Itoa(size) + "\r\n\r\n"
		resp, body, err, writeErr := testutil.Upload(t, addr, head, strings.Repeat("A", size))
		if err != nil {
			t.Fatalf("%d-byte body: no answer: %v", size, err)
		}
		if resp.StatusCode != 413 || !strings.Contains(body, "exceeds the limit") {
			t.Fatalf("%d-byte body: %d %q", size, resp.StatusCode, body)
		}
		if size < 256<<10 && writeErr != nil {
			t.Errorf("%d-byte body: the client's write failed after the 413: %v", size, writeErr)
		}
	}
}

// Since internal/abandon lets net/http read up to 256 KiB of an abandoned
// body for a second after the answer, a client refused mid-upload (here
// below the minimum rate) can still send the whole rest of its body in
// that second, and it is read off the connection. That read goes to
// net/http's discard, never to storage: the refused upload is not
// completed by it, no second answer comes, and the connection ends.
func TestRefusedUploadCompletedWithinGraceIsNotStored(t *testing.T) {
	ts := rateLimitedServer(t)
	for _, kind := range []string{"nar", "log"} {
		t.Run(kind, func(t *testing.T) {
			path, file, narFile := uploadOf(t, kind, "grace")
			up := startPut(t, ts, path, len(file), nil)
			stop := make(chan struct{})
			sent := make(chan int, 1)
			go func() { // 1000 bytes/s until the answer
				n := 0
				for n < len(file) {
					select {
					case <-stop:
						sent <- n
						return
					case <-time.After(20 * time.Millisecond):
					}
					if up.send(file[n:min(n+20, len(file))]) != nil {
						break
					}
					n = min(n+20, len(file))
				}
				sent <- n
			}()
			st, body, _ := up.response(t, 8*time.Second)
			close(stop)
			n := <-sent
			if st != http.StatusRequestTimeout || !strings.Contains(body, "too slow") {
				t.Fatalf("slow upload: %d %q, want 408 too slow", st, body)
			}
			if n >= len(file) {
				t.Fatal("the whole body went out before the refusal: the test proves nothing")
			}
			// The rest of the body, at once: within the grace.
			if err := up.send(file[n:]); err != nil {
				t.Logf("sending the rest: %v", err)
			}
			_ = up.conn.SetReadDeadline(time.Now().Add(abandon.Grace + 3*time.Second))
			if rest, err := io.ReadAll(up.br); len(rest) > 0 {
				t.Errorf("more after the refusal: %q (%v)", rest, err)
			} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
				t.Errorf("connection still open after the grace")
			}
			uploadLeftNothing(t, ts, narFile)
			if kind == "log" {
				if st, _, _ := do(t, "GET", ts.URL+path, nil); st != 404 {
					t.Errorf("refused log is served: GET %d", st)
				}
			}
		})
	}
}
