package serve

import (
	"context"
	"crypto/tls"
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
// connection: about 270 bytes/s at the blob server's 2 minutes. Only the
// time the server waits for the client counts. It is half a loopback MSS:
// a client reopens its TCP window in steps of at least one MSS, so a
// timeout that saw one step counts as taken.
const StallFloor = 32 << 10

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
// written here: a deadline idle away is set when a write starts and the
// last one is due for renewal (see arm: earned by StallFloor taken, or
// after a pause of the server's; at most every idle/10, so a clock read
// per write and a timer change only then). When it passes, a short probe
// write measures what the client made room for; with StallFloor taken
// since the deadline was set, the write goes on under a new one, otherwise
// it fails and net/http closes the connection. The server's own pauses
// between writes (slow storage, the time between requests) never count.
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

// stallConn is a connection with a write deadline that the client must
// earn.
type stallConn struct {
	net.Conn
	idle    time.Duration
	onStall StallFunc

	mu sync.Mutex
	// next is when a write may start a new deadline (zero: the next write
	// must); external is a deadline set through SetWriteDeadline or
	// SetDeadline (zero: none), which the guard's never passes; moved
	// counts the bytes written since the deadline was set; lastEnd is when
	// a write last ended having written everything; dropped is set once
	// the guard dropped the connection.
	next, external, lastEnd time.Time
	moved                   int64
	dropped                 bool
}

// probeFor is how long a write waits, once the guard's deadline passed
// with under StallFloor written, for room the client made since the writer
// last ran: the kernel wakes a blocked writer only once about a third of
// the send buffer is free, so what a slow client took lately is not seen
// until written.
const probeFor = 5 * time.Millisecond

// arm starts a new deadline, idle away, when the write about to start may:
// at least idle/10 after the last one started, and only once the client
// has taken StallFloor since, or after a pause of the server's own (no
// write for idle/10: between requests, slow storage). A client that takes
// small answers back to back does not renew it by finishing each.
func (c *stallConn) arm() error {
	now := time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.next.IsZero() {
		paused := now.Sub(c.lastEnd) >= c.idle/10
		if now.Before(c.next) || (!paused && c.moved < StallFloor) {
			return nil
		}
	}
	return c.setLocked(now, now.Add(c.idle))
}

// setLocked sets the guard's deadline dl (a nearer external one wins) and
// starts counting anew.
func (c *stallConn) setLocked(now, dl time.Time) error {
	if !c.external.IsZero() && c.external.Before(dl) {
		dl = c.external
	}
	c.next, c.moved = now.Add(c.idle/10), 0
	return c.Conn.SetWriteDeadline(dl)
}

// verdict is what a write that returned does next.
type verdict int

const (
	done  verdict = iota // return the result
	probe                // write again, within probeFor, before judging
	goOn                 // the client earned a new deadline: write on
)

// judge records n bytes written by a write that returned err (after a
// probe when probed) and says what comes next. Only the guard's deadline
// passing is judged: with StallFloor written since it was set (a probe's
// bytes included) the write goes on under a new one; with less, first a
// probe, then the connection is dropped (onStall hears of it once).
func (c *stallConn) judge(n int64, err error, probed bool) verdict {
	now := time.Now()
	c.mu.Lock()
	c.moved += n
	if err == nil {
		c.lastEnd = now
		if probed { // the client had room for all of it: it keeps up
			c.next = time.Time{}
		}
		c.mu.Unlock()
		return done
	}
	ours := errors.Is(err, os.ErrDeadlineExceeded) && (c.external.IsZero() || c.external.After(now))
	switch {
	case !ours:
		c.mu.Unlock()
		return done
	case c.moved >= StallFloor:
		serr := c.setLocked(now, now.Add(c.idle))
		c.mu.Unlock()
		if serr != nil {
			return done
		}
		return goOn
	case !probed:
		serr := c.Conn.SetWriteDeadline(now.Add(probeFor))
		c.mu.Unlock()
		if serr != nil {
			return done
		}
		return probe
	}
	moved, report := c.moved, !c.dropped
	c.dropped = true
	c.mu.Unlock()
	if report && c.onStall != nil {
		c.onStall(c.RemoteAddr().String(), "connection", moved)
	}
	return done
}

func (c *stallConn) Write(p []byte) (int, error) {
	if err := c.arm(); err != nil {
		return 0, err
	}
	var n int
	probed := false
	for {
		k, err := c.Conn.Write(p[n:])
		n += k
		switch c.judge(int64(k), err, probed) {
		case done:
			return n, err
		case probe:
			probed = true
		case goOn:
			probed = false
		}
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
	if err := c.arm(); err != nil {
		return 0, err
	}
	var total int64
	probed := false
	for {
		before, err := f.Seek(0, io.SeekCurrent)
		if err != nil {
			return total, err
		}
		n, err := rf.ReadFrom(src)
		total += n
		v := c.judge(n, err, probed)
		if v == done {
			return total, err
		}
		// Only when the file moved by what was sent (sendfile; not a
		// fallback copy that read more than it wrote) can it go on.
		if after, serr := f.Seek(0, io.SeekCurrent); serr != nil || after != before+n {
			return total, err
		}
		probed = v == probe
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
// for the client counts. The deadline is renewed, as StallGuard's, only
// once the client took StallFloor, kept up (the last piece did not wait),
// or the handler paused idle/10; the flush after the handler returns gets
// one too. A stream reset this way also closes its connection (found
// through the context ConnContext gave it): otherwise the client would
// open new streams at no cost. HTTP/1 requests pass unchanged: their
// writes are the connection's. Costs two deadline changes per piece and
// one more per answer with a body (BenchmarkStreamStallGuard: within the
// noise of a request). onStall, when not nil, hears of each connection
// closed this way (once; not of a stream reset in the flush after its
// handler returned, which net/http does on its own).
func StreamStallGuard(h http.Handler, idle time.Duration, onStall StallFunc) http.Handler {
	if idle <= 0 {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ProtoMajor != 2 {
			h.ServeHTTP(w, r)
			return
		}
		conn, _ := r.Context().Value(stallConnKey{}).(*stallConn)
		sw := &streamStallWriter{ResponseWriter: w, rc: http.NewResponseController(w), idle: idle, onStall: onStall, remote: r.RemoteAddr, conn: conn}
		h.ServeHTTP(sw, r)
		if sw.wrote {
			// What the handler left buffered is sent after it returns.
			_ = sw.rc.SetWriteDeadline(time.Now().Add(idle))
		}
	})
}

// stallConnKey is the context key of a request's *stallConn.
type stallConnKey struct{}

// withStallConn is an http.Server.ConnContext that gives each request of a
// guarded connection its *stallConn (behind TLS or not), for
// StreamStallGuard.
func withStallConn(ctx context.Context, c net.Conn) context.Context {
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	if sc, ok := c.(*stallConn); ok {
		return context.WithValue(ctx, stallConnKey{}, sc)
	}
	return ctx
}

// streamStallWriter arms its stream's write deadline around each write; it
// is used by its handler's goroutine only.
type streamStallWriter struct {
	http.ResponseWriter
	rc      *http.ResponseController
	idle    time.Duration
	onStall StallFunc
	remote  string
	conn    *stallConn // nil when not known
	wrote   bool
	// deadline is the stream's current deadline (zero: none yet), moved
	// the bytes written since it was set, lastEnd when the last piece
	// ended and keptUp whether it was taken without waiting.
	deadline, lastEnd time.Time
	moved             int64
	keptUp            bool
}

func (w *streamStallWriter) Write(p []byte) (int, error) {
	var done int
	for done < len(p) {
		start := time.Now()
		if w.deadline.IsZero() || w.moved >= StallFloor || w.keptUp || start.Sub(w.lastEnd) >= w.idle/10 {
			w.deadline, w.moved = start.Add(w.idle), 0
		}
		if err := w.rc.SetWriteDeadline(w.deadline); err != nil {
			return done, err
		}
		w.wrote = true
		n, err := w.ResponseWriter.Write(p[done:min(len(p), done+StallFloor)])
		done += n
		w.moved += int64(n)
		w.lastEnd = time.Now()
		w.keptUp = w.lastEnd.Sub(start) < probeFor
		if err != nil {
			if !w.lastEnd.Before(w.deadline) {
				w.stalled()
			}
			return done, err
		}
		if err := w.rc.SetWriteDeadline(time.Time{}); err != nil {
			return done, err
		}
	}
	return done, nil
}

// stalled closes the stream's connection and reports it, once per
// connection.
func (w *streamStallWriter) stalled() {
	report := true
	if w.conn != nil {
		w.conn.mu.Lock()
		report, w.conn.dropped = !w.conn.dropped, true
		w.conn.mu.Unlock()
		w.conn.Close()
	}
	if report && w.onStall != nil {
		w.onStall(w.remote, "stream", w.moved)
	}
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
