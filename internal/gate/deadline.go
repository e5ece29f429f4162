package gate

import (
	"net/http"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
)

// abandonBody prepares the gate's own answer to a request with a body it
// will never read, so that the answer goes out at once and a client that
// sends its body slowly (or not at all) cannot hold the connection:
//
//   - "Connection: close": net/http's chunkWriter.writeHeader then skips
//     reading up to 256 KiB of unread body before it writes the response
//     (it drains only when the connection is to be kept);
//   - a read deadline of now: after the handler, net/http closes the body
//     (body.Close in finishRequest), which again reads up to 256 KiB of it
//     looking for its end; with the deadline passed that read fails at
//     once, and the connection is closed.
//
// A request without a body is left alone (keep-alive works as usual).
func abandonBody(w http.ResponseWriter, r *http.Request) {
	if r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0 {
		return
	}
	w.Header().Set("Connection", "close")
	// Not every writer supports deadlines (httptest.ResponseRecorder).
	_ = http.NewResponseController(w).SetReadDeadline(time.Now())
}

// ChannelDown returns an Options.Unavailable for a connection made by
// Dial: it reports true while the channel is in TRANSIENT_FAILURE, i.e.
// its connection attempts fail. While the channel is IDLE or CONNECTING
// (first connect, or reconnect after an authz restart) checks still wait
// for it, so a restart does not turn into 503s.
func ChannelDown(conn *grpc.ClientConn) func() bool {
	return func() bool { return conn.GetState() == connectivity.TransientFailure }
}
