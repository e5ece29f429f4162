package cacheserver

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nix-community/go-nix/pkg/nixbase32"

	"github.com/flakegate/flakegate/internal/nixname"
	"github.com/flakegate/flakegate/internal/route"
)

// rawPut is an upload over a raw connection, so that the test controls
// exactly when body bytes are sent.
type rawPut struct {
	conn net.Conn
	br   *bufio.Reader
	mu   sync.Mutex // serialises writes
}

// startPut sends the request head of a PUT to ts with the given body
// length and extra headers.
func startPut(t *testing.T, ts *testServer, path string, length int, hdr map[string]string) *rawPut {
	t.Helper()
	u, _ := url.Parse(ts.URL)
	c, err := net.Dial("tcp", u.Host)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	head := fmt.Sprintf("PUT %s HTTP/1.1\r\nHost: cache\r\nContent-Length: %d\r\n", path, length)
	for k, v := range hdr {
		head += k + ": " + v + "\r\n"
	}
	if _, err := io.WriteString(c, head+"\r\n"); err != nil {
		t.Fatal(err)
	}
	return &rawPut{conn: c, br: bufio.NewReader(c)}
}

func (p *rawPut) send(b []byte) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	_, err := p.conn.Write(b)
	return err
}

// trickle sends b in pieces of n bytes every interval until it is all sent,
// a write fails, or stop is closed.
func (p *rawPut) trickle(b []byte, n int, every time.Duration, stop <-chan struct{}) {
	for len(b) > 0 {
		k := min(n, len(b))
		if p.send(b[:k]) != nil {
			return
		}
		b = b[k:]
		select {
		case <-stop:
			return
		case <-time.After(every):
		}
	}
}

// response reads the answer (within wait).
func (p *rawPut) response(t *testing.T, wait time.Duration) (status int, body string, h http.Header) {
	t.Helper()
	_ = p.conn.SetReadDeadline(time.Now().Add(wait))
	resp, err := http.ReadResponse(p.br, nil)
	if err != nil {
		t.Fatalf("no response within %v: %v", wait, err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp.StatusCode, string(b), resp.Header
}

// closed reports whether the server closes the connection (soon) after
// its response.
func (p *rawPut) closed() bool {
	_ = p.conn.SetReadDeadline(time.Now().Add(3 * time.Second))
	_, err := p.br.ReadByte()
	// A server closing while the client still sends makes the kernel
	// answer with a reset instead of a FIN: both are a closed connection,
	// only the deadline is not.
	var ne net.Error
	return err != nil && !(errors.As(err, &ne) && ne.Timeout())
}

// bigPath is a path with an uncompressed NAR of about n bytes of
// incompressible contents: an upload that takes a while when trickled.
func bigPath(t *testing.T, name string, n int) testPath {
	t.Helper()
	p := testPath{Hash: storeHash(name), Compression: nixname.CompressionNone}
	p.Base = p.Hash + "-" + name
	contents := make([]byte, n)
	for i := range contents {
		contents[i] = byte(i*7919>>3) ^ byte(i>>11)
	}
	p.NAR = narOf(string(contents))
	p.File = p.NAR
	fh := sha256.Sum256(p.File)
	p.FileName = nixname.NarFileName(nixbase32.EncodeToString(fh[:]), p.Compression)
	return p
}

// uploadLeftNothing waits until no temporary blob remains and checks that
// the NAR was not stored.
func uploadLeftNothing(t *testing.T, ts *testServer, narFile string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		e, err := os.ReadDir(filepath.Join(ts.Dir, "blobs", ".tmp"))
		if err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
		if len(e) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("temporary blobs left: %d", len(e))
		}
		time.Sleep(20 * time.Millisecond)
	}
	if narFile != "" {
		if st, _, _ := do(t, "HEAD", ts.URL+"/omnicorp/a/nar/"+narFile, nil); st != 404 {
			t.Fatalf("refused NAR is served: HEAD %d", st)
		}
	}
}

// tmpBlobs counts uploads in progress (temporary blobs).
func tmpBlobs(ts *testServer) int {
	e, _ := os.ReadDir(filepath.Join(ts.Dir, "blobs", ".tmp"))
	return len(e)
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// Red-team finding: an upload that trickles (a few bytes often enough to
// beat the idle timeout) held its connection for as long as it liked. Below
// the minimum rate, averaged over the window after the first, it is
// refused with 408 and nothing of it is kept.
func TestUploadBelowMinimumRateIsRefused(t *testing.T) {
	ts := rateLimitedServer(t)
	for _, kind := range []string{"nar", "log"} {
		t.Run(kind, func(t *testing.T) {
			path, file, narFile := uploadOf(t, kind, "slow")
			up := startPut(t, ts, path, len(file), nil)
			stop := make(chan struct{})
			defer close(stop)
			start := time.Now()
			go up.trickle(file, 20, 20*time.Millisecond, stop) // 1000 bytes/s
			st, body, _ := up.response(t, 8*time.Second)
			if st != http.StatusRequestTimeout || !strings.Contains(body, "too slow") || strings.Count(body, "\n") != 1 {
				t.Fatalf("slow upload: %d %q, want 408 too slow", st, body)
			}
			if took := time.Since(start); took > 5*time.Second {
				t.Errorf("refused only after %v", took)
			}
			if !up.closed() {
				t.Error("connection kept after the refusal")
			}
			uploadLeftNothing(t, ts, narFile)
		})
	}
	// A fast upload under the same limits is fine.
	p := makePath(t, "fast", nixname.CompressionXZ)
	ts.push(t, "omnicorp/a", p)
}

// Red-team finding: only an idle timeout bounded an upload. An upload
// body that takes longer than UploadMaxDuration is refused with 408,
// whether the client keeps sending or stalls.
func TestUploadMaxDuration(t *testing.T) {
	ts := newTestServer(t, "", nil, func(c *Config) {
		c.UploadMaxDuration = 500 * time.Millisecond
		c.UploadMinRate = 0
		c.UploadIdleTimeout = 20 * time.Second
	})
	for _, tc := range []struct {
		name  string
		every time.Duration // 0: send half, then stall
	}{{"sending", 10 * time.Millisecond}, {"stalled", 0}} {
		t.Run(tc.name, func(t *testing.T) {
			p := bigPath(t, "long-"+tc.name, 20000)
			up := startPut(t, ts, "/omnicorp/a/nar/"+p.FileName, len(p.File), nil)
			stop := make(chan struct{})
			defer close(stop)
			start := time.Now()
			if tc.every == 0 {
				if err := up.send(p.File[:len(p.File)/2]); err != nil {
					t.Fatal(err)
				}
			} else {
				go up.trickle(p.File, 100, tc.every, stop) // 10000 bytes/s
			}
			st, body, _ := up.response(t, 8*time.Second)
			if st != http.StatusRequestTimeout || !strings.Contains(body, "within the limit of 500ms") {
				t.Fatalf("long upload: %d %q, want 408", st, body)
			}
			if took := time.Since(start); took < 400*time.Millisecond || took > 5*time.Second {
				t.Errorf("refused after %v, want about 500ms", took)
			}
			if !up.closed() {
				t.Error("connection kept after the refusal")
			}
			uploadLeftNothing(t, ts, p.FileName)
		})
	}
	ts.push(t, "omnicorp/a", bigPath(t, "long-fast", 1<<20)) // at full speed it fits
}

// A narinfo upload's body must arrive within the idle timeout: before,
// io.ReadAll waited on a stalled client for ever.
func TestStalledNarInfoUploadIsDropped(t *testing.T) {
	ts := newTestServer(t, "", nil, func(c *Config) { c.UploadIdleTimeout = 300 * time.Millisecond })
	p := makePath(t, "ni", nixname.CompressionXZ)
	ts.push(t, "omnicorp/a", p)
	info := []byte(p.NarInfo())
	up := startPut(t, ts, "/omnicorp/a/"+p.Hash+".narinfo", len(info), nil)
	if err := up.send(info[:len(info)/2]); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	st, body, _ := up.response(t, 8*time.Second)
	if st/100 != 4 {
		t.Fatalf("stalled narinfo: %d %q", st, body)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("answered after %v", took)
	}
}

// Red-team finding: one subject could run any number of uploads at once.
// Beyond MaxUploadsPerSubject it gets 429 with Retry-After at once (its
// body unread, the connection closed); other subjects and requests
// without a subject are not affected, and a slot frees when an upload
// ends.
func TestUploadsPerSubjectLimit(t *testing.T) {
	ts := newTestServer(t, "", nil, func(c *Config) {
		c.MaxUploadsPerSubject = 2
		c.UploadMinRate = 0
	})
	logPath := func(i int) string { return fmt.Sprintf("/omnicorp/a/log/%s-%d.drv", storeHash(fmt.Sprint(i)), i) }
	alice := map[string]string{route.SubjectHeader: "github:omnicorp/a@refs/heads/main"}
	bob := map[string]string{route.SubjectHeader: "github:omnicorp/b@refs/heads/main"}
	body := []byte("a build log\n")

	var running []*rawPut
	for i := 0; i < 2; i++ {
		up := startPut(t, ts, logPath(i), len(body), alice)
		if err := up.send(body[:3]); err != nil {
			t.Fatal(err)
		}
		running = append(running, up)
	}
	waitUntil(t, "two uploads in progress", func() bool { return tmpBlobs(ts) == 2 })

	// The third by the same subject: 429 at once, although its body is
	// still to come.
	third := startPut(t, ts, logPath(2), 200000, alice)
	if err := third.send([]byte("abc")); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	st, msg, h := third.response(t, 5*time.Second)
	if st != http.StatusTooManyRequests || h.Get("Retry-After") != "1" || !strings.Contains(msg, "too many concurrent uploads") || strings.Count(msg, "\n") != 1 {
		t.Fatalf("third upload: %d %q %v, want 429 with Retry-After", st, msg, h)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Fatalf("429 after %v: want it at once", took)
	}
	if !third.closed() {
		t.Fatal("connection kept after the 429: the server waits for the body")
	}

	// Another subject, and a request without one, are not limited.
	for _, hdr := range []map[string]string{bob, nil} {
		up := startPut(t, ts, logPath(3), len(body), hdr)
		if err := up.send(body); err != nil {
			t.Fatal(err)
		}
		if st, msg, _ := up.response(t, 5*time.Second); st != http.StatusCreated {
			t.Fatalf("upload with %v: %d %q", hdr, st, msg)
		}
	}

	// One of alice's uploads ends: she may start another.
	if err := running[0].send(body[3:]); err != nil {
		t.Fatal(err)
	}
	if st, msg, _ := running[0].response(t, 5*time.Second); st != http.StatusCreated {
		t.Fatalf("first upload: %d %q", st, msg)
	}
	up := startPut(t, ts, logPath(4), len(body), alice)
	if err := up.send(body); err != nil {
		t.Fatal(err)
	}
	if st, msg, _ := up.response(t, 5*time.Second); st != http.StatusCreated {
		t.Fatalf("upload after a slot freed: %d %q", st, msg)
	}
	if err := running[1].send(body[3:]); err != nil {
		t.Fatal(err)
	}
	if st, _, _ := running[1].response(t, 5*time.Second); st != http.StatusCreated {
		t.Fatalf("second upload: %d", st)
	}
}

// Red-team finding: a 131 KB zstd upload expanding to 4 GiB was
// decompressed in full (half a minute of CPU) and accepted. A NAR that
// expands more than MaxExpansion times is refused with 413 as soon as it
// does, and nothing is kept.
func TestDecompressionBombIsRefused(t *testing.T) {
	nar := narOf(string(make([]byte, 64<<20)))
	for _, c := range []nixname.Compression{nixname.CompressionZstd, nixname.CompressionXZ} {
		t.Run(string(c), func(t *testing.T) {
			file := compress(t, c, nar)
			fh := sha256.Sum256(file)
			name := nixname.NarFileName(nixbase32.EncodeToString(fh[:]), c)

			ts := newTestServer(t, "", nil, nil) // default ratio 1000
			start := time.Now()
			st, body, _ := do(t, "PUT", ts.URL+"/omnicorp/a/nar/"+name, file)
			if st != http.StatusRequestEntityTooLarge || !strings.Contains(body, "times its compressed size") {
				t.Fatalf("bomb (%d bytes): %d %q, want 413", len(file), st, body)
			}
			t.Logf("%d bytes of %s refused in %v: %s", len(file), c, time.Since(start), strings.TrimSpace(body))
			uploadLeftNothing(t, ts, name)

			// A normal NAR passes.
			ts.push(t, "omnicorp/a", makePath(t, "normal-"+string(c), c))

			// With the check off the same upload is a valid NAR.
			off := newTestServer(t, "", nil, func(c *Config) { c.MaxExpansion = 0 })
			if st, body, _ := do(t, "PUT", off.URL+"/omnicorp/a/nar/"+name, file); st != http.StatusCreated {
				t.Fatalf("bomb with MaxExpansion off: %d %q", st, body)
			}
		})
	}
}

// chunky returns at most n bytes per Read.
type chunky struct {
	r io.Reader
	n int
}

func (c chunky) Read(p []byte) (int, error) { return c.r.Read(p[:min(len(p), c.n)]) }

// slowWriter is storage that takes a while for every write.
type slowWriter struct{ d time.Duration }

func (w slowWriter) Write(p []byte) (int, error) { time.Sleep(w.d); return len(p), nil }

// The minimum rate is the client's: time the server spends writing to
// storage (or verifying) does not count against it.
func TestUploadRateCountsOnlyClientTime(t *testing.T) {
	newDeadline := func() *idleDeadline {
		rec := httptest.NewRecorder()
		return &idleDeadline{rc: http.NewResponseController(rec), w: rec, r: httptest.NewRequest("PUT", "/", nil), idle: time.Minute,
			rate: rateMeter{min: 1 << 30, window: 30 * time.Millisecond}}
	}
	body := chunky{bytes.NewReader(make([]byte, 20<<10)), 1 << 10}
	start := time.Now()
	if n, err := stream(body, slowWriter{20 * time.Millisecond}, nil, 1<<20, "build log", newDeadline()); err != nil || n != 20<<10 {
		t.Fatalf("fast client, slow storage: %d %v", n, err)
	}
	if took := time.Since(start); took < 300*time.Millisecond {
		t.Fatalf("the storage was not slow (%v): the test proves nothing", took)
	}

	// A slow client is still refused.
	pr, pw := io.Pipe()
	go func() {
		defer pw.Close()
		for i := 0; i < 20; i++ {
			if _, err := pw.Write([]byte("x")); err != nil {
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	_, err := stream(pr, io.Discard, nil, 1<<20, "build log", newDeadline())
	pr.Close()
	var ue *uploadError
	if !errors.As(err, &ue) || ue.status != http.StatusRequestTimeout {
		t.Fatalf("slow client: %v, want 408", err)
	}
}

// Red-team finding: a narinfo over the size limit was answered 413 only
// after net/http had read up to 256 KiB more of its body (or the idle
// timeout passed on a stalled client); the answer must go out at once and
// close the connection.
func TestOversizedNarInfoIsRefusedAtOnce(t *testing.T) {
	ts := newTestServer(t, "", nil, func(c *Config) {
		c.MaxNarInfoSize = 1 << 10
		c.UploadIdleTimeout = 20 * time.Second
	})
	for _, length := range []int{2 << 10, 200 << 10} { // over the limit, below and near the 256 KiB drain
		up := startPut(t, ts, "/omnicorp/a/"+storeHash("big")+".narinfo", length, nil)
		if err := up.send(bytes.Repeat([]byte("x"), 1500)); err != nil { // past the limit, then stall
			t.Fatal(err)
		}
		start := time.Now()
		st, body, _ := up.response(t, 8*time.Second)
		if st != http.StatusRequestEntityTooLarge {
			t.Fatalf("Content-Length %d: %d %q, want 413", length, st, body)
		}
		if took := time.Since(start); took > 3*time.Second {
			t.Errorf("Content-Length %d: 413 after %v, want it at once", length, took)
		}
		if !up.closed() {
			t.Errorf("Content-Length %d: connection kept after the refusal", length)
		}
	}
}

// rateLimitedServer is a test server that refuses uploads below 10 kB/s
// (averaged over 300 ms), with a long idle timeout.
func rateLimitedServer(t *testing.T) *testServer {
	return newTestServer(t, "", nil, func(c *Config) {
		c.UploadMinRate = 10_000
		c.UploadRateWindow = 300 * time.Millisecond
		c.UploadIdleTimeout = 10 * time.Second
	})
}

// uploadOf returns what a rate test uploads for kind ("nar" or "log"):
// the URL path, the body and the NAR file name (none for a log).
func uploadOf(t *testing.T, kind, name string) (path string, file []byte, narFile string) {
	p := bigPath(t, name+"-"+kind, 20000)
	if kind == "log" {
		return "/omnicorp/a/log/" + p.Hash + "-" + name + ".drv", []byte(strings.Repeat("log line\n", 2000)), ""
	}
	return "/omnicorp/a/nar/" + p.FileName, p.File, p.FileName
}

// bzip2Bomb is `head -c 256M /dev/zero | bzip2 -9`: 208 bytes that decode
// to 256 MiB (Go has no bzip2 writer; bzip2's run-length stage makes zeros
// the worst case, about 1.3 s of decoding here).
const bzip2Bomb = "QlpoOTFBWSZTWQ4J4t8BX45AAMAAAAggADCATUZCoCWpCoCXMUFZJlNZDgni3wFfjkAAwAAACCAAMIBNRkKgJakKgJcxQVkmU1kOCeLfAV+OQADAAAAIIAAwgE1GQqAlqQqAlzFBWSZTWQ4J4t8BX45AAMAAAAggADCATUZCoCWpCoCXMUFZJlNZDgni3wFfjkAAwAAACCAAMIBNRkKgJakKgJcxQVkmU1kezuTbASo/wADABAAIIAAwzAUppqqoSRsAIkjxdyRThQkGsXyvAA=="

const bzip2BombSize = 256 << 20

func bzip2BombBytes(t testing.TB) []byte {
	t.Helper()
	b, err := base64.StdEncoding.DecodeString(bzip2Bomb)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Adversarial review (2026-12-05, r4 F2): a build log uploaded with a
// Content-Encoding was decoded to the end, up to MaxNarSize (64 GiB),
// with no expansion bound: 208 bytes of bzip2 made the server decode 256
// MiB and were accepted. A log is held to the NARs' ratio rule
// (MaxExpansion × encoded bytes + ExpansionFloor: 413 as soon as it
// breaks it) and stored nowhere.
func TestLogDecompressionBombIsRefused(t *testing.T) {
	zeros := make([]byte, 64<<20)
	for _, c := range []struct {
		enc  string
		body []byte
		size int
	}{
		{"zstd", compress(t, nixname.CompressionZstd, zeros), len(zeros)},
		{"bzip2", bzip2BombBytes(t), bzip2BombSize},
	} {
		t.Run(c.enc, func(t *testing.T) {
			ts := newTestServer(t, "", nil, nil) // ratio 1000, MaxLogSize 256 MiB
			drv := storeHash("bomb-"+c.enc) + "-bomb.drv"
			start := time.Now()
			a := fileExchange(t, "PUT", ts.URL+"/omnicorp/a/log/"+drv, c.body, hdr("Content-Encoding", c.enc))
			t.Logf("%d bytes of %s (%d MiB decoded): %d %q in %v", len(c.body), c.enc, c.size>>20, a.Status, a.Body, time.Since(start))
			if a.Status != http.StatusRequestEntityTooLarge || !strings.Contains(a.Body, "build log decodes to more than 1000 times its encoded size") {
				t.Fatalf("a %s log expanding %d times: %d %q, want 413 naming the ratio", c.enc, c.size/len(c.body), a.Status, a.Body)
			}
			uploadLeftNothing(t, ts, "")
			if st, _, _ := do(t, "GET", ts.URL+"/omnicorp/a/log/"+drv, nil); st != 404 {
				t.Fatalf("the refused log is served: %d", st)
			}
			// Switched off, the ratio lets it through (within MaxLogSize).
			off := newTestServer(t, "", nil, func(c *Config) { c.MaxExpansion = 0 })
			if a := fileExchange(t, "PUT", off.URL+"/omnicorp/a/log/"+drv, c.body, hdr("Content-Encoding", c.enc)); a.Status != http.StatusCreated {
				t.Fatalf("with MaxExpansion 0: %d %q", a.Status, a.Body)
			}
		})
	}
	// An ordinary compressed log passes (a build's output compresses some
	// ten times, far below 1000).
	ts := newTestServer(t, "", nil, nil)
	var b strings.Builder
	for i := range 50000 {
		fmt.Fprintf(&b, "[%d/50000] Building CXX object src/CMakeFiles/hello.dir/part%d.cpp.o\n", i+1, i*7919%10007)
	}
	text := []byte(b.String())
	if a := fileExchange(t, "PUT", ts.URL+"/omnicorp/a/log/"+storeHash("ok")+"-ok.drv", encode(t, "zstd", text), hdr("Content-Encoding", "zstd")); a.Status != http.StatusCreated {
		t.Fatalf("an ordinary zstd log: %d %q", a.Status, a.Body)
	}
}

// A build log is bounded by MaxLogSize, not MaxNarSize: as sent (413 at
// once when Content-Length says so, as soon as the body passes it
// otherwise) and, with a Content-Encoding, decoded.
func TestLogSizeLimit(t *testing.T) {
	const limit = 1 << 20
	ts := newTestServer(t, "", nil, func(c *Config) { c.MaxLogSize = limit; c.MaxExpansion = 0 })
	drv := storeHash("big-log") + "-big.drv"
	url := ts.URL + "/omnicorp/a/log/" + drv
	big := bytes.Repeat([]byte("x"), limit+1)
	for _, c := range []struct {
		name string
		body []byte
		hdr  http.Header
		want string
	}{
		{"plain", big, nil, "build log exceeds the limit of 1048576 bytes"},
		{"decoded", encode(t, "zstd", big), hdr("Content-Encoding", "zstd"), "build log decodes to more than 1048576 bytes, the limit"},
	} {
		a := fileExchange(t, "PUT", url, c.body, c.hdr)
		if a.Status != http.StatusRequestEntityTooLarge || strings.TrimSpace(a.Body) != c.want {
			t.Errorf("%s log of %d bytes (%d sent): %d %q, want 413 %q", c.name, len(big), len(c.body), a.Status, a.Body, c.want)
		}
	}
	// Without Content-Length (chunked): refused once the body passes it.
	req, _ := http.NewRequest("PUT", url, io.MultiReader(bytes.NewReader(big)))
	req.ContentLength = -1
	if resp, err := http.DefaultClient.Do(req); err == nil {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusRequestEntityTooLarge || !strings.Contains(string(b), "exceeds the limit of 1048576 bytes") {
			t.Errorf("chunked log over the limit: %d %q", resp.StatusCode, b)
		}
	}
	uploadLeftNothing(t, ts, "")
	if st, _, _ := do(t, "GET", url, nil); st != 404 {
		t.Fatalf("a refused log is served: %d", st)
	}
	if a := fileExchange(t, "PUT", url, big[:limit], nil); a.Status != http.StatusCreated {
		t.Fatalf("a log of exactly the limit: %d %q", a.Status, a.Body)
	}
}

// A decodeChecker whose upload failed (stop) gives up at its next read
// instead of decoding what it had been sent to the end: a bomb's bytes,
// all received, would otherwise keep a core busy after the client left.
func TestDecodeCheckerStops(t *testing.T) {
	c := newDecodeChecker("bzip2", 64<<30, 0, "build log", "") // no ratio: only stop ends it early
	if _, err := c.Write(bzip2BombBytes(t)); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	c.stop()
	err := c.finish()
	t.Logf("stopped after %d of %d decoded bytes, %v: %v", c.decoded, bzip2BombSize, time.Since(start), err)
	if !errors.Is(err, errDecodeStopped) {
		t.Errorf("finish after stop: %v, want errDecodeStopped", err)
	}
	if c.decoded >= bzip2BombSize/2 {
		t.Errorf("the decoder went on after stop: %d of %d bytes decoded", c.decoded, bzip2BombSize)
	}
}
