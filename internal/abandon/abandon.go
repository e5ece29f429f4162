// Package abandon is how every flakegate handler answers a request whose
// body it will not read, or will not read to its end: a denied or refused
// upload, a body over its limit, a client that stalls. The answer must go
// out at once, the connection must not be kept, and a client still sending
// its body must still get the answer.
//
// Body does two things before the response is written:
//
//   - over HTTP/1, "Connection: close": net/http's chunkWriter.writeHeader then skips
//     reading up to 256 KiB of the unread body before it writes the
//     response (it drains only a connection it will keep), so a slow
//     client gets its answer at once;
//   - a read deadline Grace from now: after the handler, net/http closes
//     the body (body.Close in finishRequest), reading up to 256 KiB more
//     of it looking for its end. A client that sends that rest within
//     Grace has its whole body read and the connection ends cleanly; one
//     with more than 256 KiB left makes net/http close only its sending
//     side and wait (closeWriteAndWait, 500 ms) before it closes; a client
//     that stalls is cut off at the deadline.
//
// Over HTTP/2 the connection is kept: the body is a stream of its own,
// which the server resets (RST_STREAM NO_ERROR) after the answer, and the
// client's other streams go on. "Connection: close" there would make Go's
// HTTP/2 server send a GOAWAY: one refused upload (a 413, a 429 for too
// many uploads at once) would end the connection a client such as Nix's
// curl multiplexes all its uploads over (TestHTTP2RefusalKeepsTheConnection).
// The read deadline only ends reads of that stream's body.
//
// Why not a deadline of now (what this package replaced): net/http's read
// of the rest then fails at once, it closes the connection with the
// client's bytes unread, and the kernel answers them with a reset. A
// client still writing its body (curl, Go's transport) then fails with
// "connection reset by peer" instead of reading the 413 or 401 and its
// reason: a CI flake of a 64 KiB upload over its limit, reproduced by
// internal/cacheserver's TestRefusedUploadAnswerSurvivesUnreadBody.
package abandon

import (
	"net/http"
	"time"
)

// Grace bounds how long net/http may go on reading an abandoned body after
// the handler has answered: at most 256 KiB within it.
const Grace = time.Second

// HasBody reports whether r comes with a request body (possibly unread).
func HasBody(r *http.Request) bool {
	return r.Body != nil && r.Body != http.NoBody && r.ContentLength != 0
}

// Body prepares the answer to r, whose body will not be read to its end
// (see the package comment). Call it before writing the response.
func Body(w http.ResponseWriter, r *http.Request) {
	if r.ProtoMajor < 2 {
		w.Header().Set("Connection", "close")
	}
	// Not every writer supports deadlines (httptest.ResponseRecorder).
	_ = http.NewResponseController(w).SetReadDeadline(time.Now().Add(Grace))
}

// Request is Body for a request with a body; a request without one is left
// alone, and its connection is kept as usual.
func Request(w http.ResponseWriter, r *http.Request) {
	if HasBody(r) {
		Body(w, r)
	}
}
