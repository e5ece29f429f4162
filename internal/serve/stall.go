package serve

import (
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"time"
)

// StallFloor is the least a client must take of an answer per stall
// timeout (or the rest of the answer, when less is left) to keep its
// connection (HTTP/1) or stream (HTTP/2): about 550 bytes/s at the blob
// server's 2 minutes. Only the time the server waits for the client counts.
const StallFloor = 64 << 10

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
// written here: a write waits at most idle for the client; when that
// deadline passes and the client took StallFloor bytes or more meanwhile,
// the write goes on under a new one, otherwise it fails and net/http
// closes the connection. The deadline is set when a write starts, at most
// every idle/10 (a clock read per write; a timer change only then), so
// the server's own pauses between writes (slow storage) never count.
//
// The wrapped connections keep what net/http looks for on a connection:
// ReadFrom (sendfile for file bodies, in one call however slow the client)
// and CloseWrite (the half-close before dropping a connection with an
// unread body). A deadline net/http sets itself (the TLS handshake's) is
// kept when nearer; its reset to none restores the rolling one.
//
// onStall, when not nil, is told of each connection dropped this way.
func StallGuard(l net.Listener, idle time.Duration, onStall StallFunc) net.Listener {
	if idle <= 0 {
		return l
	}
	return &stallListener{Listener: l, idle: idle, onStall: onStall}
}

// StallFunc is told of a client a stall guard dropped: its address, what
// was dropped ("connection", or "stream" for one HTTP/2 stream) and the
// bytes it took in its last stall timeout.
type StallFunc func(remote, what string, took int64)

type stallListener struct {
	net.Listener
	idle    time.Duration
	onStall StallFunc
}

func (l *stallListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &stallConn{Conn: c, idle: l.idle, onStall: l.onStall}, nil
}

// stallConn is a connection with a rolling write deadline.
type stallConn struct {
	net.Conn
	idle    time.Duration
	onStall StallFunc

	mu sync.Mutex
	// next is when the deadline must be pushed again (zero: at the next
	// write); external is a deadline set through SetWriteDeadline or
	// SetDeadline (zero: none), which the rolling one never passes; moved
	// counts the bytes written since the deadline was last pushed.
	next, external time.Time
	moved          int64
}

// arm pushes the write deadline forward when it is due (force: now).
func (c *stallConn) arm(force bool) error {
	now := time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	if !force && now.Before(c.next) {
		return nil
	}
	dl := now.Add(c.idle)
	if !c.external.IsZero() && c.external.Before(dl) {
		dl = c.external
	}
	c.next, c.moved = now.Add(c.idle/10), 0
	return c.Conn.SetWriteDeadline(dl)
}

// goOn records n bytes written and reports whether a write that ended
// with err may continue: the rolling deadline (not one net/http set)
// passed while the client still took StallFloor bytes or more. When the
// rolling deadline passed with less, onStall hears of it.
func (c *stallConn) goOn(n int64, err error) bool {
	c.mu.Lock()
	c.moved += n
	moved := c.moved
	ours := err != nil && errors.Is(err, os.ErrDeadlineExceeded) && (c.external.IsZero() || c.external.After(time.Now()))
	c.mu.Unlock()
	if !ours {
		return false
	}
	if moved >= StallFloor {
		return true
	}
	if c.onStall != nil {
		c.onStall(c.RemoteAddr().String(), "connection", moved)
	}
	return false
}

func (c *stallConn) Write(p []byte) (int, error) {
	var done int
	force := false
	for {
		if err := c.arm(force); err != nil {
			return done, err
		}
		n, err := c.Conn.Write(p[done:])
		done += n
		if !c.goOn(int64(n), err) {
			return done, err
		}
		force = true
	}
}

// ReadFrom sends a file through the connection's own ReadFrom (sendfile),
// going on after a passed deadline as Write does; sendfile moves the
// file's position and the limit by exactly what it sent. Any other source
// is copied through Write: bytes read from it but not yet written when a
// deadline passes could not be sent again.
func (c *stallConn) ReadFrom(src io.Reader) (int64, error) {
	rf, ok := c.Conn.(io.ReaderFrom)
	f := fileBehind(src)
	if !ok || f == nil {
		return io.Copy(writerOnly{c}, src)
	}
	var total int64
	force := false
	for {
		if err := c.arm(force); err != nil {
			return total, err
		}
		before, err := f.Seek(0, io.SeekCurrent)
		if err != nil {
			return io.Copy(writerOnly{c}, src)
		}
		n, err := rf.ReadFrom(src)
		total += n
		if !c.goOn(n, err) {
			return total, err
		}
		// Only when the file moved by what was sent (sendfile; not a
		// fallback copy that read more than it wrote) can it go on.
		if after, serr := f.Seek(0, io.SeekCurrent); serr != nil || after != before+n {
			return total, err
		}
		force = true
	}
}

// fileBehind is the *os.File src reads, alone or within an
// *io.LimitedReader with bytes left (what http.ServeContent passes), or nil.
func fileBehind(src io.Reader) *os.File {
	if lr, ok := src.(*io.LimitedReader); ok {
		if lr.N <= 0 {
			return nil
		}
		src = lr.R
	}
	f, _ := src.(*os.File)
	return f
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
// Each write of the answer, in pieces of StallFloor bytes, gets the
// stream's write deadline (net/http resets the stream when it passes),
// cleared when the piece is taken, so that only the time spent waiting
// for the client counts; the flush after the handler returns gets one
// too. HTTP/1 requests pass unchanged: their writes are the connection's.
// Costs two deadline changes per piece and one more per answer with a
// body (BenchmarkStreamStallGuard: within the noise of a request).
// onStall, when not nil, is told of each stream reset during a write of the
// handler's (not of one in the flush after it returns, which net/http does
// on its own).
func StreamStallGuard(h http.Handler, idle time.Duration, onStall StallFunc) http.Handler {
	if idle <= 0 {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ProtoMajor != 2 {
			h.ServeHTTP(w, r)
			return
		}
		sw := &streamStallWriter{ResponseWriter: w, rc: http.NewResponseController(w), idle: idle, onStall: onStall, remote: r.RemoteAddr}
		h.ServeHTTP(sw, r)
		if sw.wrote {
			// What the handler left buffered is sent after it returns.
			_ = sw.rc.SetWriteDeadline(time.Now().Add(idle))
		}
	})
}

// streamStallWriter arms its stream's write deadline around each write; it
// is used by its handler's goroutine only.
type streamStallWriter struct {
	http.ResponseWriter
	rc      *http.ResponseController
	idle    time.Duration
	wrote   bool
	onStall StallFunc
	remote  string
}

func (w *streamStallWriter) Write(p []byte) (int, error) {
	var done int
	for done < len(p) {
		dl := time.Now().Add(w.idle)
		if err := w.rc.SetWriteDeadline(dl); err != nil {
			return done, err
		}
		w.wrote = true
		n, err := w.ResponseWriter.Write(p[done:min(len(p), done+StallFloor)])
		done += n
		if err != nil {
			if w.onStall != nil && !time.Now().Before(dl) {
				w.onStall(w.remote, "stream", int64(n))
			}
			return done, err
		}
		if err := w.rc.SetWriteDeadline(time.Time{}); err != nil {
			return done, err
		}
	}
	return done, nil
}

// Flush passes a flush on (http.Flusher, for the handlers that look for
// it), under the deadline as a write.
func (w *streamStallWriter) Flush() {
	if err := w.rc.SetWriteDeadline(time.Now().Add(w.idle)); err == nil {
		w.wrote = true
		if f, ok := w.ResponseWriter.(http.Flusher); ok {
			f.Flush()
		}
		_ = w.rc.SetWriteDeadline(time.Time{})
	}
}

// Unwrap lets http.ResponseController reach the stream's writer.
func (w *streamStallWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
