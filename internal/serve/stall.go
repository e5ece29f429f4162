package serve

import (
	"io"
	"net"
	"net/http"
	"sync"
	"time"
)

// WriteStallChunk is the most a connection guarded by StallGuard writes
// under one deadline: a client must take this much of an answer within
// 0.9 × the stall timeout (about 9 KB/s for 2 minutes) to keep the
// connection.
const WriteStallChunk = 1 << 20

// StallGuard wraps a listener so that a connection whose client stops
// taking what the server writes is closed after idle instead of holding a
// goroutine and a file descriptor for as long as the client likes.
//
// net/http has no such bound short of Server.WriteTimeout, which limits a
// whole response (a NAR download may take hours) and so cannot be used on
// the public listener; without any bound, a client that pipelines requests
// and never reads the answers, or starts a download and stops reading,
// blocks the server's write forever (TCP keeps a zero window open
// indefinitely). No maintained library does this for net/http, so it is
// written here: each write of up to WriteStallChunk bytes gets a write
// deadline at least 0.9 × idle away, pushed forward at most every idle/10
// (a clock read per write, a timer change only then).
//
// The wrapped connections keep what net/http looks for on a connection:
// ReadFrom (sendfile for file bodies, in chunks of WriteStallChunk) and
// CloseWrite (the half-close before dropping a connection with an unread
// body). A deadline net/http sets itself (the TLS handshake's) is kept
// when nearer; its reset to none restores the rolling one.
func StallGuard(l net.Listener, idle time.Duration) net.Listener {
	if idle <= 0 {
		return l
	}
	return &stallListener{Listener: l, idle: idle}
}

type stallListener struct {
	net.Listener
	idle time.Duration
}

func (l *stallListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &stallConn{Conn: c, idle: l.idle}, nil
}

// stallConn is a connection with a rolling write deadline.
type stallConn struct {
	net.Conn
	idle time.Duration

	mu sync.Mutex
	// next is when the deadline must be pushed again (zero: at the next
	// write); external is a deadline set through SetWriteDeadline or
	// SetDeadline (zero: none), which the rolling one never passes.
	next, external time.Time
}

// arm pushes the write deadline forward when it is due.
func (c *stallConn) arm() error {
	now := time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	if now.Before(c.next) {
		return nil
	}
	dl := now.Add(c.idle)
	if !c.external.IsZero() && c.external.Before(dl) {
		dl = c.external
	}
	c.next = now.Add(c.idle / 10)
	return c.Conn.SetWriteDeadline(dl)
}

func (c *stallConn) Write(p []byte) (int, error) {
	var done int
	for len(p) > 0 {
		if err := c.arm(); err != nil {
			return done, err
		}
		k := min(len(p), WriteStallChunk)
		n, err := c.Conn.Write(p[:k])
		done += n
		if err != nil {
			return done, err
		}
		p = p[k:]
	}
	return done, nil
}

// ReadFrom copies src in chunks of WriteStallChunk, each with its deadline,
// through the connection's own ReadFrom when it has one (sendfile for an
// *os.File, alone or in the *io.LimitedReader http.ServeContent passes).
func (c *stallConn) ReadFrom(src io.Reader) (int64, error) {
	rf, ok := c.Conn.(io.ReaderFrom)
	if !ok {
		return io.Copy(writerOnly{c}, src)
	}
	remain := int64(-1) // no limit
	lr, limited := src.(*io.LimitedReader)
	if limited {
		src, remain = lr.R, lr.N
	}
	var total int64
	for remain != 0 {
		if err := c.arm(); err != nil {
			return total, err
		}
		want := int64(WriteStallChunk)
		if remain > 0 {
			want = min(want, remain)
		}
		n, err := rf.ReadFrom(&io.LimitedReader{R: src, N: want})
		total += n
		if limited {
			lr.N -= n
		}
		if remain > 0 {
			remain -= n
		}
		if err != nil || n < want { // an error, or src ended
			return total, err
		}
	}
	return total, nil
}

// writerOnly hides ReadFrom so that io.Copy uses Write.
type writerOnly struct{ io.Writer }

// CloseWrite half-closes the connection when it can (TCP, unix sockets).
func (c *stallConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

func (c *stallConn) SetWriteDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.setWriteDeadlineLocked(t)
}

func (c *stallConn) setWriteDeadlineLocked(t time.Time) error {
	if t.IsZero() {
		if c.external.IsZero() {
			return nil // the rolling deadline stays (net/http resets after every request)
		}
		c.external, c.next = time.Time{}, time.Time{} // re-armed at the next write
		return c.Conn.SetWriteDeadline(t)
	}
	c.external, c.next = t, time.Time{}
	return c.Conn.SetWriteDeadline(t)
}

func (c *stallConn) SetDeadline(t time.Time) error {
	if err := c.Conn.SetReadDeadline(t); err != nil {
		return err
	}
	return c.SetWriteDeadline(t)
}

// StreamStallGuard bounds what StallGuard cannot see over HTTP/2: a
// client that stops granting flow-control window leaves a stream's handler
// waiting for it while the connection itself stays writable, so each of
// up to MaxConcurrentStreams handlers per connection would wait forever.
// The answer's writes get the stream's write deadline (net/http resets the
// stream when it passes), pushed forward like StallGuard's, per
// WriteStallChunk bytes. HTTP/1 requests pass unchanged: their writes are
// the connection's. Costs one deadline change per HTTP/2 answer with a
// body.
func StreamStallGuard(h http.Handler, idle time.Duration) http.Handler {
	if idle <= 0 {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ProtoMajor != 2 {
			h.ServeHTTP(w, r)
			return
		}
		h.ServeHTTP(&streamStallWriter{ResponseWriter: w, rc: http.NewResponseController(w), idle: idle}, r)
	})
}

// streamStallWriter arms its stream's write deadline as stallConn arms a
// connection's; it is used by its handler's goroutine only.
type streamStallWriter struct {
	http.ResponseWriter
	rc   *http.ResponseController
	idle time.Duration
	next time.Time
}

func (w *streamStallWriter) Write(p []byte) (int, error) {
	var done int
	for len(p) > 0 {
		if now := time.Now(); !now.Before(w.next) {
			if err := w.rc.SetWriteDeadline(now.Add(w.idle)); err != nil {
				return done, err
			}
			w.next = now.Add(w.idle / 10)
		}
		k := min(len(p), WriteStallChunk)
		n, err := w.ResponseWriter.Write(p[:k])
		done += n
		if err != nil {
			return done, err
		}
		p = p[k:]
	}
	return done, nil
}

// Flush passes a flush on (http.Flusher, for the handlers that look for it).
func (w *streamStallWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap lets http.ResponseController reach the stream's writer.
func (w *streamStallWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
