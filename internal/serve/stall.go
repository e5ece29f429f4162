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
// written here. A connection's writes may wait for the client idle in all
// (the time they block; a write the client has room for takes next to
// nothing, and the server's own pauses between writes never count) before
// the client must have taken StallFloor: then a short probe write fills
// the room the client made, and with StallFloor written since the last
// such check the writes go on for another idle, otherwise the write fails
// and net/http closes the connection. One write deadline per connection
// carries it: set to the time left when none is set, moved when it passes
// early (it was set before a pause of the server's), so a write costs two
// clock reads and a lock.
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

// stallConn is a connection whose writes may wait for the client idle in
// all before the client must have taken StallFloor.
type stallConn struct {
	net.Conn
	idle    time.Duration
	onStall StallFunc

	mu sync.Mutex
	// A window is the writes since the client last proved it takes
	// answers: blocked is the time they took (the server waiting for the
	// client; a write the client had room for takes next to nothing),
	// moved the bytes they wrote. dl is the deadline set on the
	// connection (zero: none yet), at most idle - blocked after the write
	// that set it; external is one set through SetWriteDeadline or
	// SetDeadline (zero: none), which dl never passes. reported is set
	// once either guard reported dropping the connection.
	blocked      time.Duration
	moved        int64
	dl, external time.Time
	reported     bool
}

// probeFor is how long a write may take, once a window's time is spent
// with under StallFloor written, to fill the room the client made since
// the writer last ran: the kernel wakes a blocked writer only once about a
// third of the send buffer is free, so what a slow client took lately is
// not seen until written. Not too short: a deadline that passes before
// the write starts (the goroutine descheduled on a loaded machine) fails
// it without a try.
func probeFor(idle time.Duration) time.Duration { return min(250*time.Millisecond, idle/4) }

// keptUpWithin is how quickly an HTTP/2 piece must be taken for its client
// to count as keeping up (its window was open), which renews the stream's
// deadline.
const keptUpWithin = 10 * time.Millisecond

// arm sets the deadline when none is set: the window's time left.
func (c *stallConn) arm() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.dl.IsZero() {
		return nil
	}
	return c.setLocked(time.Now().Add(c.idle - c.blocked))
}

// setLocked sets the guard's deadline dl (a nearer external one wins).
func (c *stallConn) setLocked(dl time.Time) error {
	if !c.external.IsZero() && c.external.Before(dl) {
		dl = c.external
	}
	c.dl = dl
	return c.Conn.SetWriteDeadline(dl)
}

// verdict is what a write that returned does next.
type verdict int

const (
	done  verdict = iota // return the result
	probe                // write again, within probeFor, before judging
	goOn                 // write on under a new deadline
)

// judge records a write that started at start, wrote n bytes and returned
// err (a probe when probed), and says what comes next. Only the guard's
// deadline is judged. Passed before the window's time is spent (set
// before the server paused), it is moved to the time left. Spent with
// StallFloor written (a probe's bytes included), a new window starts;
// with less, first a probe, then the connection is dropped (onStall hears
// of it once).
func (c *stallConn) judge(start time.Time, n int64, err error, probed bool) verdict {
	now := time.Now()
	c.mu.Lock()
	v, dropped := c.judgeLocked(now, start, n, err, probed)
	report, moved := dropped && !c.reported, c.moved
	if dropped {
		c.reported = true
	}
	c.mu.Unlock()
	if report && c.onStall != nil {
		c.onStall(c.RemoteAddr().String(), "connection", moved)
	}
	return v
}

// judgeLocked is judge's decision; dropped reports a drop.
func (c *stallConn) judgeLocked(now, start time.Time, n int64, err error, probed bool) (v verdict, dropped bool) {
	c.moved += n
	c.blocked += now.Sub(start)
	if err == nil || !errors.Is(err, os.ErrDeadlineExceeded) || (!c.external.IsZero() && !c.external.After(now)) {
		return done, false
	}
	switch {
	case !probed && c.blocked < c.idle:
		if c.setLocked(now.Add(c.idle-c.blocked)) != nil {
			return done, false
		}
		return goOn, false
	case c.moved >= StallFloor:
		c.blocked, c.moved = 0, 0
		if c.setLocked(now.Add(c.idle)) != nil {
			return done, false
		}
		return goOn, false
	case !probed:
		if c.setLocked(now.Add(probeFor(c.idle))) != nil {
			return done, false
		}
		return probe, false
	}
	return done, true
}

func (c *stallConn) Write(p []byte) (int, error) {
	if err := c.arm(); err != nil {
		return 0, err
	}
	var n int
	probed := false
	for {
		start := time.Now()
		k, err := c.Conn.Write(p[n:])
		n += k
		switch c.judge(start, int64(k), err, probed) {
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
	pos, err := f.Seek(0, io.SeekCurrent)
	if err != nil {
		return 0, err
	}
	var total int64
	probed := false
	for {
		start := time.Now()
		n, err := rf.ReadFrom(src)
		total += n
		v := c.judge(start, n, err, probed)
		if v == done {
			return total, err
		}
		// Only when the file moved by what was sent (sendfile; not a
		// fallback copy that read more than it wrote) can it go on.
		after, serr := f.Seek(0, io.SeekCurrent)
		if serr != nil || after != pos+n {
			return total, err
		}
		pos, probed = after, v == probe
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
			return nil // the guard's deadline stays (net/http resets after every request)
		}
		c.external, c.dl = time.Time{}, time.Time{} // set again at the next write
		return c.Conn.SetWriteDeadline(t)
	}
	c.external, c.dl = t, time.Time{}
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
		w.keptUp = w.lastEnd.Sub(start) < keptUpWithin
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
		report, w.conn.reported = !w.conn.reported, true
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
