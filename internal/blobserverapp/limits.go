package blobserverapp

import (
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/flakegate/flakegate/internal/abandon"
)

// maxRequestBody bounds the body of a request other than an upload (the
// token exchange's JSON is a few dozen bytes).
const maxRequestBody = 64 << 10

// guardBodies bounds the bodies of requests other than uploads. The public
// server has no ReadTimeout (uploads may take hours; the cache server
// bounds those itself), so without this a GET announcing a body and
// sending it a byte a second would hold its connection: net/http reads up
// to 256 KiB of unread body before it writes a response. Such a body is
// read here, whole, within timeout (and at most maxRequestBody), and the
// handler gets it from memory; a body too slow or too large is answered
// 408 or 413 at once and the connection closed. The read deadline is
// cleared after the body: once a body is read net/http watches the
// connection with a background read, which a passing deadline would turn
// into a cancelled request context in the middle of a long download.
// Requests without a body and PUTs pass untouched.
//
// A GET or HEAD never needs its body: it is not read at all (abandon.Body,
// then the handler sees none). Reading it made an allowed read differ from
// a denied one, whose body the gate never reads: "Connection: close" and
// the connection's fate, and "100 Continue" sent only for an object the
// caller may read (TestReadWithBodyAnswersAsDenied).
func guardBodies(next http.Handler, timeout time.Duration) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPut || r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0 {
			next.ServeHTTP(w, r)
			return
		}
		if r.Method == http.MethodGet || r.Method == http.MethodHead {
			abandon.Body(w, r)
			r2 := r.WithContext(r.Context())
			r2.Body, r2.ContentLength, r2.TransferEncoding = http.NoBody, 0, nil
			next.ServeHTTP(w, r2)
			return
		}
		rc := http.NewResponseController(w)
		_ = rc.SetReadDeadline(time.Now().Add(timeout))
		data, err := io.ReadAll(http.MaxBytesReader(nil, r.Body, maxRequestBody))
		if err != nil {
			abandon.Body(w, r)
			status, msg := http.StatusBadRequest, "reading the request body failed"
			var mbe *http.MaxBytesError
			var ne net.Error
			switch {
			case errors.As(err, &mbe):
				status, msg = http.StatusRequestEntityTooLarge, "request body too large"
			case errors.As(err, &ne) && ne.Timeout():
				status, msg = http.StatusRequestTimeout, "request body not received within "+timeout.String()
			}
			http.Error(w, msg, status)
			return
		}
		_ = rc.SetReadDeadline(time.Time{})
		r2 := r.WithContext(r.Context())
		r2.Body = io.NopCloser(bytes.NewReader(data))
		r2.ContentLength = int64(len(data))
		r2.TransferEncoding = nil
		next.ServeHTTP(w, r2)
	})
}
