package cacheserver

import (
	"strconv"
	"strings"
	"testing"

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
