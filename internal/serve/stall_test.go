package serve

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/flakegate/flakegate/internal/abandon"
	"github.com/flakegate/flakegate/internal/testutil"
)

// stallFixture is a public listener served by Run whose handler answers
// GET /file with a file (http.ServeContent: sendfile), GET /write with
// size bytes written through Write (in 256 KiB pieces; /write-4k in 4 KiB
// ones) and GET /small with 1 KiB, and reports
// when each handler returns and when each connection closes.
type stallFixture struct {
	addr     string
	file     []byte
	tls      *tls.Config // client side; nil in clear
	returned chan error  // a handler's last write error (nil: all written)
	closed   chan struct{}
	stalls   chan string // "what took" of each client the guard dropped
}

// stalled checks that the guard reported dropping a client's connection
// or stream (what) that took less than StallFloor.
func (f *stallFixture) stalled(t *testing.T, what string) {
	t.Helper()
	select {
	case got := <-f.stalls:
		var w string
		var took int64
		if _, err := fmt.Sscanf(got, "%s %d", &w, &took); err != nil || w != what || took >= StallFloor {
			t.Fatalf("stall reported as %q, want %s with under %d bytes taken", got, what, StallFloor)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("the guard dropped a client's %s without reporting it", what)
	}
}

// report notes a handler's end without ever blocking it.
func (f *stallFixture) report(err error) {
	select {
	case f.returned <- err:
	default:
	}
}

// smallBuffers shrinks the accepted connections' send buffers, so that a
// client that stops reading blocks the server's writes after little data.
type smallBuffers struct{ net.Listener }

func (l smallBuffers) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetWriteBuffer(64 << 10)
	}
	return c, err
}

func newStallFixture(t *testing.T, idle time.Duration, withTLS bool, size int) *stallFixture {
	t.Helper()
	return newStallFixtureBuffers(t, idle, withTLS, size, true)
}

// newStallFixtureBuffers is newStallFixture with the kernel's own send
// buffers when small is false.
func newStallFixtureBuffers(t *testing.T, idle time.Duration, withTLS bool, size int, small bool) *stallFixture {
	t.Helper()
	f := &stallFixture{returned: make(chan error, 64), closed: make(chan struct{}, 64), stalls: make(chan string, 64)}
	f.file = make([]byte, size)
	_, _ = rand.Read(f.file)
	path := filepath.Join(t.TempDir(), "blob")
	if err := os.WriteFile(path, f.file, 0o600); err != nil {
		t.Fatal(err)
	}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/file":
			fh, err := os.Open(path)
			if err != nil {
				t.Error(err)
				return
			}
			defer fh.Close()
			http.ServeContent(w, r, "", time.Time{}, fh)
			f.report(nil) // ServeContent reports no error
		case "/write", "/write-4k":
			piece := 256 << 10
			if r.URL.Path == "/write-4k" {
				piece = 4 << 10
			}
			var werr error
			for off := 0; off < len(f.file) && werr == nil; off += piece {
				_, werr = w.Write(f.file[off:min(off+piece, len(f.file))])
			}
			f.report(werr)
		case "/small":
			_, err := w.Write(bytes.Repeat([]byte("x"), 1024))
			f.report(err)
		case "/upload":
			abandon.Body(w, r)
			http.Error(w, "refused without reading the body", http.StatusRequestEntityTooLarge)
		}
	})
	hs := &http.Server{Handler: h, ConnState: func(_ net.Conn, s http.ConnState) {
		if s == http.StateClosed || s == http.StateHijacked {
			f.closed <- struct{}{}
		}
	}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var lln net.Listener = ln
	if small {
		lln = smallBuffers{ln}
	}
	l := Listener{Name: "public", Ln: lln, Server: hs, WriteStall: idle, OnStall: func(remote, what string, took int64) {
		if remote == "" {
			t.Error("a stall reported without the client's address")
		}
		select {
		case f.stalls <- fmt.Sprintf("%s %d", what, took):
		default:
		}
	}}
	if withTLS {
		dir := t.TempDir()
		l.TLS = TLSFiles{Cert: filepath.Join(dir, "tls.crt"), Key: filepath.Join(dir, "tls.key")}
		ca := testutil.NewCA(t, "stall ca")
		ca.Issue(t, l.TLS.Cert, l.TLS.Key, "127.0.0.1")
		f.tls = &tls.Config{RootCAs: ca.Pool(), ServerName: "127.0.0.1", NextProtos: []string{"http/1.1"}}
	}
	addrs, _, _ := run(t, []Listener{l}, Options{ShutdownTimeout: time.Second})
	f.addr = addrs[0]
	return f
}

// dial opens a connection (TLS when the fixture has it) whose receive
// buffer is small.
func (f *stallFixture) dial(t *testing.T, protos ...string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", f.addr)
	if err != nil {
		t.Fatal(err)
	}
	_ = c.(*net.TCPConn).SetReadBuffer(16 << 10)
	t.Cleanup(func() { c.Close() })
	if f.tls == nil {
		return c
	}
	cfg := f.tls.Clone()
	if len(protos) > 0 {
		cfg.NextProtos = protos
	}
	tc := tls.Client(c, cfg)
	if err := tc.Handshake(); err != nil {
		t.Fatal(err)
	}
	return tc
}

// A client that asks and then takes nothing of the answers holds the
// server's write. With the guard the connection is closed about the stall
// time later; without it (the control) it is still held after several
// times that, which is the hole the guard closes.
func TestStalledReaderIsCutOff(t *testing.T) {
	const idle = 400 * time.Millisecond
	cases := []struct {
		name string
		tls  bool
		ask  func(t *testing.T, c net.Conn)
	}{
		{"file download (sendfile)", false, get("/file", 1)},
		{"handler writes", false, get("/write", 1)},
		{"pipelined small answers, never read", false, get("/small", 20000)},
		{"file download over TLS", true, get("/file", 1)},
	}
	for _, tc := range cases {
		for _, guarded := range []bool{true, false} {
			t.Run(fmt.Sprintf("%s/guarded=%v", tc.name, guarded), func(t *testing.T) {
				t.Parallel()
				stall := time.Duration(0)
				if guarded {
					stall = idle
				}
				f := newStallFixture(t, stall, tc.tls, 32<<20)
				c := f.dial(t)
				go tc.ask(t, c)
				select {
				case <-f.closed:
					if !guarded {
						t.Fatal("the server closed an unread connection without the guard: the control does not show the hole")
					}
					f.stalled(t, "connection")
				case <-time.After(wait(guarded, idle)):
					if guarded {
						t.Fatalf("a client that reads nothing still holds its connection %v after asking (stall timeout %v)", wait(guarded, idle), idle)
					}
				}
			})
		}
	}
}

// wait is how long a test waits for the guard to act: generously when it
// must (a loaded machine is slow; the wait ends as soon as it acts), and
// several stall times for the unguarded control, which must not.
func wait(guarded bool, idle time.Duration) time.Duration {
	if guarded {
		return 25 * idle
	}
	return 5 * idle
}

// get sends n pipelined GETs of path and reads nothing.
func get(path string, n int) func(t *testing.T, c net.Conn) {
	return func(t *testing.T, c net.Conn) {
		req := "GET " + path + " HTTP/1.1\r\nHost: cache\r\n\r\n"
		_, _ = io.WriteString(c, strings.Repeat(req, n)) // fails once the server closes
	}
}

// A client that reads slowly but steadily keeps its connection however
// long the answer takes (here about 6 × the stall time), and one that
// pauses for less than the stall time too; each gets every byte, through
// sendfile (whole and a range) and through Write. A client that takes
// less than StallFloor per stall time is cut.
func TestSlowReadersAreServedTricklersCut(t *testing.T) {
	const idle = time.Second // well above a loaded machine's pauses of the reading goroutine
	f := newStallFixture(t, idle, false, 3<<19)
	want := sha256.Sum256(f.file)
	steady := pacedReader{piece: 16 << 10, every: 20 * time.Millisecond, pauseAt: 1 << 40}  // about 800 KB/s, StallFloor every 40 ms
	trickle := pacedReader{piece: 2 << 10, every: 100 * time.Millisecond, pauseAt: 1 << 40} // 20 KiB per stall time, under StallFloor
	cases := []struct {
		name, path string
		pace       pacedReader
		cut        bool
	}{
		{"steady, sendfile", "/file", steady, false},
		{"steady, writes", "/write", steady, false},
		// Fast, then one pause of 0.6 × the stall time.
		{"pause, sendfile", "/file", pacedReader{piece: 64 << 10, every: time.Millisecond, pauseAt: 512 << 10, pause: 600 * time.Millisecond}, false},
		{"trickle, sendfile", "/file", trickle, true},
		{"trickle, writes", "/write", trickle, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := f
			if tc.cut { // its own server, to see its connection close
				f = newStallFixture(t, idle, false, 3<<19)
			}
			c := f.dial(t)
			if _, err := io.WriteString(c, "GET "+tc.path+" HTTP/1.1\r\nHost: cache\r\n\r\n"); err != nil {
				t.Fatal(err)
			}
			type result struct {
				body []byte
				err  error
			}
			got := make(chan result, 1)
			start := time.Now()
			go func() {
				pace := tc.pace
				pace.r = c
				resp, err := http.ReadResponse(bufio.NewReader(&pace), nil)
				if err != nil {
					got <- result{nil, err}
					return
				}
				body, err := io.ReadAll(resp.Body)
				got <- result{body, err}
			}()
			if tc.cut {
				select {
				case <-f.closed:
					t.Logf("cut after %v", time.Since(start))
					f.stalled(t, "connection")
				case r := <-got:
					t.Fatalf("a client taking under %d bytes per %v: %d bytes, %v, and the server kept the connection", StallFloor, idle, len(r.body), r.err)
				case <-time.After(20 * idle):
					t.Fatalf("a client taking under %d bytes per %v still holds its connection after %v", StallFloor, idle, 20*idle)
				}
				return
			}
			r := <-got
			if r.err != nil || sha256.Sum256(r.body) != want {
				t.Fatalf("%d of %d bytes in %v: %v", len(r.body), len(f.file), time.Since(start), r.err)
			}
			t.Logf("served whole in %v", time.Since(start))
		})
	}
	// A range through the connection's ReadFrom: exactly the bytes asked for.
	t.Run("range", func(t *testing.T) {
		t.Parallel()
		c := f.dial(t)
		if _, err := io.WriteString(c, "GET /file HTTP/1.1\r\nHost: cache\r\nRange: bytes=1000-1199999\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		if body := readAnswer(t, c, "/file range"); !bytes.Equal(body, f.file[1000:1200000]) {
			t.Fatalf("range: %d bytes, not bytes 1000-1199999 of the file", len(body))
		}
	})
}

// slowSource is a file-like source whose reads take a while (slow storage).
type slowSource struct {
	*bytes.Reader
	delay time.Duration
}

func (s *slowSource) Read(p []byte) (int, error) {
	time.Sleep(s.delay)
	return s.Reader.Read(p[:min(len(p), 32<<10)])
}

// The server's own pauses never count against a client that takes
// everything at once: a slow source (32 KiB per 100 ms, an answer taking
// 5 × the stall time) is served whole over HTTP/1 and HTTP/2, and so is a
// handler that pauses twice the stall time between two writes (with a
// flush before the pause or without).
func TestServerPausesDoNotCount(t *testing.T) {
	const idle = 300 * time.Millisecond
	data := bytes.Repeat([]byte("0123456789abcdef"), (512<<10)/16)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/slow-source":
			http.ServeContent(w, r, "", time.Time{}, &slowSource{bytes.NewReader(data), 100 * time.Millisecond})
		case "/pause", "/pause-flush":
			w.Write(data[:1000])
			if r.URL.Path == "/pause-flush" {
				http.NewResponseController(w).Flush()
			}
			time.Sleep(2 * idle)
			w.Write(data[1000:2000])
		}
	})
	srv := httptest.NewUnstartedServer(StreamStallGuard(h, idle, nil))
	srv.Listener = StallGuard(srv.Listener, idle, nil)
	srv.EnableHTTP2 = true
	srv.StartTLS()
	t.Cleanup(srv.Close)
	for _, h2 := range []bool{false, true} {
		c := srv.Client()
		if !h2 {
			tr := c.Transport.(*http.Transport).Clone()
			tr.ForceAttemptHTTP2 = false
			tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
			tr.TLSClientConfig = tr.TLSClientConfig.Clone()
			tr.TLSClientConfig.NextProtos = []string{"http/1.1"}
			c = &http.Client{Transport: tr}
		}
		for path, want := range map[string][]byte{"/slow-source": data, "/pause": data[:2000], "/pause-flush": data[:2000]} {
			resp, err := c.Get(srv.URL + path)
			if err != nil {
				t.Fatal(err)
			}
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.ProtoMajor != map[bool]int{false: 1, true: 2}[h2] {
				t.Fatalf("%s: HTTP/%d", path, resp.ProtoMajor)
			}
			if err != nil || !bytes.Equal(body, want) {
				t.Errorf("HTTP/%d %s: %d of %d bytes, %v", resp.ProtoMajor, path, len(body), len(want), err)
			}
		}
	}
}

// recordingConn is a connection whose ReadFrom notes its source.
type recordingConn struct {
	net.Conn
	src io.Reader
}

func (c *recordingConn) ReadFrom(r io.Reader) (int64, error) {
	c.src = r
	return io.Copy(io.Discard, r)
}
func (c *recordingConn) Write(p []byte) (int, error)      { return len(p), nil }
func (c *recordingConn) SetWriteDeadline(time.Time) error { return nil }

// A file (as http.ServeContent passes it, within a LimitedReader) reaches
// the connection's own ReadFrom: net.TCPConn sends it with sendfile (seen
// with strace: sendfile(…, 1048576) calls). Any other source is copied
// through Write, and an exhausted limit copies nothing, as io.Copy.
func TestReadFromKeepsSendfile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(path, []byte("nar bytes"), 0o600); err != nil {
		t.Fatal(err)
	}
	fh, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	inner := &recordingConn{}
	c := &stallConn{Conn: inner, idle: time.Minute}
	lr := &io.LimitedReader{R: fh, N: 4}
	if n, err := c.ReadFrom(lr); n != 4 || err != nil || inner.src != io.Reader(lr) {
		t.Fatalf("file in a LimitedReader: %d %v, reached ReadFrom as %T", n, err, inner.src)
	}
	inner.src = nil
	if n, err := c.ReadFrom(strings.NewReader("abc")); n != 3 || err != nil || inner.src != nil {
		t.Fatalf("a reader: %d %v, reached ReadFrom as %T (want Write)", n, err, inner.src)
	}
	if n, err := c.ReadFrom(&io.LimitedReader{R: fh, N: -1}); n != 0 || err != nil || inner.src != nil {
		t.Fatalf("an exhausted limit: %d %v, reached ReadFrom as %T", n, err, inner.src)
	}
}

func readAnswer(t *testing.T, r io.Reader, what string) []byte {
	t.Helper()
	resp, err := http.ReadResponse(bufio.NewReader(r), nil)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s: read after %d bytes: %v (cut off?)", what, len(body), err)
	}
	return body
}

// pacedReader reads piece bytes every interval, once pausing for pause
// after pauseAt bytes.
type pacedReader struct {
	r            io.Reader
	piece        int
	every, pause time.Duration
	pauseAt, n   int
	paused       bool
}

func (p *pacedReader) Read(b []byte) (int, error) {
	if !p.paused && p.n >= p.pauseAt {
		p.paused = true
		time.Sleep(p.pause)
	} else {
		time.Sleep(p.every)
	}
	n, err := p.r.Read(b[:min(len(b), p.piece)])
	p.n += n
	return n, err
}

// A refused upload still gets its answer through a guarded connection:
// the half-close net/http makes before dropping an unread body
// (internal/abandon) reaches the TCP connection under the guard.
func TestGuardKeepsTheRefusalOfAnUnreadUpload(t *testing.T) {
	f := newStallFixture(t, time.Minute, false, 1)
	head := "PUT /upload HTTP/1.1\r\nHost: cache\r\nContent-Length: 4194304\r\n\r\n"
	resp, body, err, _ := testutil.Upload(t, f.addr, head, strings.Repeat("n", 4<<20))
	if err != nil || resp.StatusCode != http.StatusRequestEntityTooLarge || !strings.Contains(body, "refused") {
		t.Fatalf("refused upload through the guard: %v %v %q", resp, err, body)
	}
}

// h2Client is a raw HTTP/2 client on a fixture's TLS listener: it reads
// every frame (the connection stays readable), acknowledges settings and
// pings, and grants window only when told.
type h2Client struct {
	t      *testing.T
	addr   string
	mu     sync.Mutex // frame writes
	fr     *http2.Framer
	hb     bytes.Buffer
	enc    *hpack.Encoder
	resets chan uint32   // streams reset by the server
	data   chan int      // DATA bytes received
	closed chan struct{} // the server closed the connection
}

// newH2Client connects with SETTINGS_INITIAL_WINDOW_SIZE window.
func newH2Client(t *testing.T, f *stallFixture, window uint32) *h2Client {
	c := f.dial(t, "h2")
	if p := c.(*tls.Conn).ConnectionState().NegotiatedProtocol; p != "h2" {
		t.Fatalf("negotiated %q, want h2", p)
	}
	h := &h2Client{t: t, addr: f.addr, fr: http2.NewFramer(c, c), resets: make(chan uint32, 1024), data: make(chan int, 4096), closed: make(chan struct{})}
	h.enc = hpack.NewEncoder(&h.hb)
	if _, err := io.WriteString(c, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	h.write(func() error {
		return h.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: window})
	})
	go func() {
		defer close(h.closed)
		for {
			fm, err := h.fr.ReadFrame()
			if err != nil {
				return
			}
			switch fm := fm.(type) {
			case *http2.SettingsFrame:
				if !fm.IsAck() {
					h.write(h.fr.WriteSettingsAck)
				}
			case *http2.PingFrame:
				if !fm.IsAck() {
					h.write(func() error { return h.fr.WritePing(true, fm.Data) })
				}
			case *http2.DataFrame:
				select {
				case h.data <- len(fm.Data()):
				default:
				}
			case *http2.RSTStreamFrame:
				select {
				case h.resets <- fm.StreamID:
				default:
				}
			}
		}
	}()
	return h
}

func (h *h2Client) write(f func() error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	_ = f() // fails once the server closed the connection
}

// get opens stream id with a GET of path.
func (h *h2Client) get(id uint32, path string) {
	h.write(func() error {
		h.hb.Reset()
		for _, hf := range []hpack.HeaderField{{Name: ":method", Value: "GET"}, {Name: ":scheme", Value: "https"},
			{Name: ":authority", Value: h.addr}, {Name: ":path", Value: path}} {
			_ = h.enc.WriteField(hf)
		}
		return h.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: h.hb.Bytes(), EndStream: true, EndHeaders: true})
	})
}

// grant adds n bytes of window to stream id (0: the connection).
func (h *h2Client) grant(id, n uint32) {
	h.write(func() error { return h.fr.WriteWindowUpdate(id, n) })
}

// Over HTTP/2 a client can keep the connection busy and readable while
// granting a stream no flow-control window: the stream's handler waits
// for window, not for the socket. With the guard the stream is reset about
// the stall time later, releasing a handler blocked in Write (/write) or
// the flush after a handler that returned (/small); without it (the
// control) the stream is never reset.
func TestHTTP2StreamWithoutWindowIsReset(t *testing.T) {
	const idle = 400 * time.Millisecond
	for _, path := range []string{"/write", "/small"} {
		for _, guarded := range []bool{true, false} {
			t.Run(fmt.Sprintf("%s/guarded=%v", path, guarded), func(t *testing.T) {
				t.Parallel()
				stall := time.Duration(0)
				if guarded {
					stall = idle
				}
				f := newStallFixture(t, stall, true, 64<<10)
				h := newH2Client(t, f, 0)
				h.get(1, path)
				select {
				case <-h.resets:
					if !guarded {
						t.Fatal("the stream was reset without the guard: the control does not show the hole")
					}
					if path == "/write" { // the flush after a handler is net/http's own, unreported
						f.stalled(t, "stream")
					}
				case <-h.closed:
					if !guarded {
						t.Fatal("the connection was closed without the guard: the control does not show the hole")
					}
					if path == "/write" { // the flush after a handler is net/http's own, unreported
						f.stalled(t, "stream")
					}
				case <-time.After(wait(guarded, idle)):
					if guarded {
						t.Fatalf("a stream granted no window is still open %v later (stall timeout %v)", wait(guarded, idle), idle)
					}
					return
				}
				if path != "/write" {
					return
				}
				select {
				case err := <-f.returned:
					if err == nil {
						t.Fatal("the handler wrote its whole answer although the client granted no window")
					}
				case <-time.After(5 * time.Second):
					t.Fatal("the stream was reset but its handler is still blocked in Write")
				}
			})
		}
	}
}

// A stalled stream costs its client the connection: otherwise a client
// granting no window would open a new stream for each one reset, at the
// cost of a HEADERS frame, and hold up to MaxConcurrentStreams handlers
// (open files included) for good. A hundred such streams: the connection
// is closed within a few stall times and reported once.
func TestHTTP2StalledStreamsCloseTheConnection(t *testing.T) {
	const idle = 300 * time.Millisecond
	f := newStallFixture(t, idle, true, 256<<10)
	h := newH2Client(t, f, 0)
	for id := uint32(1); id < 200; id += 2 {
		h.get(id, "/file")
	}
	select {
	case <-h.closed:
	case <-time.After(25 * idle):
		t.Fatalf("a client granting 100 streams no window keeps its connection after %v (stall timeout %v)", 25*idle, idle)
	}
	f.stalled(t, "stream")
	time.Sleep(2 * idle)
	if n := len(f.stalls); n != 0 {
		t.Fatalf("one connection reported %d more times", n)
	}
}

// Per stream, the client must take StallFloor per stall time, not one
// piece of what the handler writes: granting 4 KiB of window per 0.9 ×
// the stall time to an answer written in 4 KiB pieces (each piece taken
// before its time) gets the stream reset and the connection closed.
func TestHTTP2TrickledStreamIsReset(t *testing.T) {
	const idle = 300 * time.Millisecond
	f := newStallFixture(t, idle, true, 4<<20)
	h := newH2Client(t, f, 0)
	h.grant(0, 1<<30) // the connection's window is not the point
	h.get(1, "/write-4k")
	start := time.Now()
	for {
		h.grant(1, 4<<10)
		select {
		case <-h.resets:
		case <-h.closed:
		case <-time.After(idle * 9 / 10):
			if time.Since(start) > 25*idle {
				t.Fatalf("a stream granted 4 KiB per %v is still served after %v", idle*9/10, time.Since(start))
			}
			continue
		}
		t.Logf("dropped after %v", time.Since(start))
		f.stalled(t, "stream")
		return
	}
}

// A client taking a big answer's pieces one at a time, each just before
// the stall time (16 KiB, a TLS record, per 0.9 × it: under StallFloor),
// is cut: finishing a write does not renew the deadline. net.Pipe stands
// for a socket without buffers, which makes the accounting plain.
func TestPiecesTakenOneByOneAreCut(t *testing.T) {
	const idle = 200 * time.Millisecond
	const piece = 16 << 10
	srv, cli := net.Pipe()
	defer cli.Close()
	reported := make(chan int64, 1)
	c := &stallConn{Conn: srv, idle: idle, onStall: func(_, _ string, took int64) { reported <- took }}
	go func() {
		p := make([]byte, piece)
		for range 1000 {
			if _, err := c.Write(p); err != nil {
				srv.Close() // as net/http does
				return
			}
		}
	}()
	buf := make([]byte, piece)
	start := time.Now()
	for time.Since(start) < 25*idle {
		time.Sleep(idle * 9 / 10)
		if _, err := io.ReadFull(cli, buf); err != nil {
			if took := <-reported; took >= StallFloor {
				t.Fatalf("cut, but reported as having taken %d bytes", took)
			}
			return
		}
	}
	t.Fatalf("a client taking %d bytes per %v still holds its connection after %v", piece, idle*9/10, time.Since(start))
}

// A client whose pace drops after a fast start (the kernel's send buffer
// autotuned large, so the writer wakes only every few stall times) keeps
// its connection while it takes many times StallFloor per stall time,
// through sendfile and through Write. (Well above the floor: on loopback
// TCP reopens the window in 64 KiB steps, and a loaded machine may pause
// the reading goroutine.)
func TestFastThenSlowReaderIsNotCut(t *testing.T) {
	const idle = 2 * time.Second
	f := newStallFixtureBuffers(t, idle, false, 48<<20, false)
	for _, path := range []string{"/file", "/write"} {
		t.Run(path, func(t *testing.T) {
			t.Parallel()
			c := f.dial(t)
			_ = c.(*net.TCPConn).SetReadBuffer(1 << 20)
			if _, err := io.WriteString(c, "GET "+path+" HTTP/1.1\r\nHost: cache\r\n\r\n"); err != nil {
				t.Fatal(err)
			}
			resp, err := http.ReadResponse(bufio.NewReaderSize(c, 64<<10), nil)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := io.ReadFull(resp.Body, make([]byte, 16<<20)); err != nil {
				t.Fatal(err)
			}
			// 32 KiB per 120 ms: about 16 × StallFloor per stall time.
			buf := make([]byte, 32<<10)
			start := time.Now()
			for time.Since(start) < 3*idle {
				time.Sleep(120 * time.Millisecond)
				if _, err := io.ReadFull(resp.Body, buf); err != nil {
					t.Fatalf("cut after %v: %v", time.Since(start), err)
				}
			}
			select {
			case got := <-f.stalls:
				t.Fatalf("a client taking 16 × StallFloor per stall time was reported stalled: %s", got)
			default:
			}
		})
	}
}

// wakeLateConn stands for a socket whose kernel wakes a blocked writer
// late (once a third of the send buffer is free): the first write blocks
// and returns nothing by its deadline although the client made room
// meanwhile; any later write takes what that room allows.
type wakeLateConn struct {
	net.Conn // unused: only what stallConn calls is implemented
	deadline time.Time
	room     int
	woken    bool
}

func (c *wakeLateConn) SetWriteDeadline(t time.Time) error { c.deadline = t; return nil }
func (c *wakeLateConn) RemoteAddr() net.Addr {
	return &net.TCPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 1}
}
func (c *wakeLateConn) Write(p []byte) (int, error) {
	n := 0
	if c.woken {
		n = min(len(p), c.room)
		c.room -= n
	}
	c.woken = true
	if n == len(p) {
		return n, nil
	}
	time.Sleep(time.Until(c.deadline))
	return n, os.ErrDeadlineExceeded
}

// When the deadline passes with nothing seen written, a short probe write
// measures the room the client made before the connection is judged: with
// StallFloor of room the answer goes on, with none the client is dropped
// (and reported as having taken nothing).
func TestDeadlineProbesBeforeJudging(t *testing.T) {
	const idle = 100 * time.Millisecond
	for _, tc := range []struct {
		room int
		cut  bool
	}{{1 << 20, false}, {0, true}} {
		var reported []int64
		c := &stallConn{Conn: &wakeLateConn{room: tc.room}, idle: idle, onStall: func(_, _ string, took int64) { reported = append(reported, took) }}
		n, err := c.Write(make([]byte, 512<<10))
		if tc.cut {
			if err == nil || len(reported) != 1 || reported[0] != 0 {
				t.Fatalf("no room made: wrote %d, %v, reported %v; want dropped, reported once with 0 taken", n, err, reported)
			}
			continue
		}
		if err != nil || n != 512<<10 || len(reported) != 0 {
			t.Fatalf("room for it all made while the writer slept: wrote %d, %v, reported %v", n, err, reported)
		}
	}
}
