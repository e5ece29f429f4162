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
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/flakegate/flakegate/internal/abandon"
	"github.com/flakegate/flakegate/internal/testutil"
)

// stallFixture is a public listener served by Run whose handler answers
// GET /file with a file (http.ServeContent: sendfile), GET /write with
// size bytes written through Write and GET /small with 1 KiB, and reports
// when each handler returns and when each connection closes.
type stallFixture struct {
	addr     string
	file     []byte
	tls      *tls.Config // client side; nil in clear
	returned chan error  // a handler's last write error (nil: all written)
	closed   chan struct{}
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
	f := &stallFixture{returned: make(chan error, 64), closed: make(chan struct{}, 64)}
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
		case "/write":
			var werr error
			for off := 0; off < len(f.file) && werr == nil; off += 256 << 10 {
				_, werr = w.Write(f.file[off:min(off+256<<10, len(f.file))])
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
	l := Listener{Name: "public", Ln: smallBuffers{ln}, Server: hs, WriteStall: idle}
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
				case <-time.After(5 * idle):
					if guarded {
						t.Fatalf("a client that reads nothing still holds its connection %v after asking (stall timeout %v)", 5*idle, idle)
					}
				}
			})
		}
	}
}

// get sends n pipelined GETs of path and reads nothing.
func get(path string, n int) func(t *testing.T, c net.Conn) {
	return func(t *testing.T, c net.Conn) {
		req := "GET " + path + " HTTP/1.1\r\nHost: cache\r\n\r\n"
		_, _ = io.WriteString(c, strings.Repeat(req, n)) // fails once the server closes
	}
}

// A client that reads slowly and pauses for less than the stall time keeps
// its connection and gets every byte, through sendfile (whole and a range)
// and through Write.
func TestSlowReaderWithPausesIsServedWhole(t *testing.T) {
	const idle = 3 * time.Second
	f := newStallFixture(t, idle, false, 3<<20+12345)
	want := sha256.Sum256(f.file)
	for _, path := range []string{"/file", "/write"} {
		t.Run(path, func(t *testing.T) {
			t.Parallel()
			c := f.dial(t)
			_ = c.(*net.TCPConn).SetReadBuffer(1 << 20) // the pace is the reader's, not the buffer's
			if _, err := io.WriteString(c, "GET "+path+" HTTP/1.1\r\nHost: cache\r\n\r\n"); err != nil {
				t.Fatal(err)
			}
			slow := &pacedReader{r: c, piece: 64 << 10, every: 20 * time.Millisecond, pauseAt: 1 << 20, pause: time.Second}
			body := readAnswer(t, slow, path)
			if sha256.Sum256(body) != want {
				t.Fatalf("%d bytes read slowly, not the %d served", len(body), len(f.file))
			}
			if !slow.paused {
				t.Fatal("the reader never paused")
			}
		})
	}
	// A range through the chunked ReadFrom: exactly the bytes asked for.
	t.Run("range", func(t *testing.T) {
		t.Parallel()
		c := f.dial(t)
		if _, err := io.WriteString(c, "GET /file HTTP/1.1\r\nHost: cache\r\nRange: bytes=1000-2099999\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		if body := readAnswer(t, c, "/file range"); !bytes.Equal(body, f.file[1000:2100000]) {
			t.Fatalf("range: %d bytes, not bytes 1000-2099999 of the file", len(body))
		}
	})
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
				c := f.dial(t, "h2")
				if p := c.(*tls.Conn).ConnectionState().NegotiatedProtocol; p != "h2" {
					t.Fatalf("negotiated %q, want h2", p)
				}
				fr := http2.NewFramer(c, c)
				if _, err := io.WriteString(c, http2.ClientPreface); err != nil {
					t.Fatal(err)
				}
				if err := fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 0}); err != nil {
					t.Fatal(err)
				}
				var hb bytes.Buffer
				enc := hpack.NewEncoder(&hb)
				for _, hf := range []hpack.HeaderField{{Name: ":method", Value: "GET"}, {Name: ":scheme", Value: "https"},
					{Name: ":authority", Value: f.addr}, {Name: ":path", Value: path}} {
					_ = enc.WriteField(hf)
				}
				if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hb.Bytes(), EndStream: true, EndHeaders: true}); err != nil {
					t.Fatal(err)
				}
				// Read every frame (the connection stays readable) and
				// acknowledge settings and pings, but grant no window.
				reset := make(chan struct{})
				go func() {
					for {
						fm, err := fr.ReadFrame()
						if err != nil {
							return
						}
						switch fm := fm.(type) {
						case *http2.SettingsFrame:
							if !fm.IsAck() {
								_ = fr.WriteSettingsAck()
							}
						case *http2.PingFrame:
							if !fm.IsAck() {
								_ = fr.WritePing(true, fm.Data)
							}
						case *http2.RSTStreamFrame:
							if fm.StreamID == 1 {
								close(reset)
								return
							}
						}
					}
				}()
				select {
				case <-reset:
					if !guarded {
						t.Fatal("the stream was reset without the guard: the control does not show the hole")
					}
				case <-time.After(5 * idle):
					if guarded {
						t.Fatalf("a stream granted no window is still open %v later (stall timeout %v)", 5*idle, idle)
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
