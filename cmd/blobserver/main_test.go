package main

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nix-community/go-nix/pkg/nixbase32"

	"github.com/flakegate/flakegate/internal/testutil"
)

func TestSizeFlag(t *testing.T) {
	tests := []struct {
		in   string
		want int64
		ok   bool
	}{
		{"1024", 1024, true},
		{"64GiB", 64 << 30, true},
		{"1 MiB", 1 << 20, true},
		{"5M", 5_000_000, true},
		{"2K", 2000, true},
		{"10B", 10, true},
		{"0", 0, false},
		{"-1", 0, false},
		{"lots", 0, false},
		{"9999999TiB", 0, false},
	}
	for _, tt := range tests {
		var s size
		err := s.Set(tt.in)
		if (err == nil) != tt.ok || (tt.ok && int64(s) != tt.want) {
			t.Errorf("Set(%q) = %d, %v; want %d ok=%v", tt.in, s, err, tt.want, tt.ok)
		}
	}
}

func TestFlagsFromEnvAndConfig(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "blobserver.conf")
	if err := os.WriteFile(conf, []byte("listen 127.0.0.1:1\nmax-nar-size nonsense\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	err := run([]string{"-config", conf})
	if err == nil || !strings.Contains(err.Error(), "nonsense") {
		t.Fatalf("config file not read: %v", err)
	}
	t.Setenv("FLAKEGATE_LOG_LEVEL", "loud")
	err = run(nil)
	if err == nil || !strings.Contains(err.Error(), "-log-level") {
		t.Fatalf("env not read: %v", err)
	}
}

// buildBinary builds cmd/blobserver into a temporary directory.
func buildBinary(t *testing.T) string {
	t.Helper()
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go tool not found: cannot build the blobserver binary")
	}
	bin := filepath.Join(t.TempDir(), "blobserver")
	cmd := exec.Command(goTool, "build", "-o", bin, ".")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

type proc struct {
	cmd              *exec.Cmd
	URL, InternalURL string
	stderr           *testutil.LogBuffer
	done             chan struct{} // closed when the process has exited
	err              error         // its exit status, once done
}

// startProc runs the binary on a data dir and waits for its "listening" line.
func startProc(t *testing.T, bin, dataDir string) *proc {
	t.Helper()
	cmd := exec.Command(bin, "-data-dir", dataDir, "-listen", "127.0.0.1:0", "-internal-listen", "127.0.0.1:0")
	pipe, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{cmd: cmd, stderr: &testutil.LogBuffer{}, done: make(chan struct{})}
	ready := make(chan [2]string, 1)
	go func() {
		sc := bufio.NewScanner(pipe)
		for sc.Scan() {
			line := sc.Bytes()
			p.stderr.Write(append(line, '\n'))
			var m struct{ Msg, Public, Internal string }
			if json.Unmarshal(line, &m) == nil && m.Msg == "listening" {
				ready <- [2]string{m.Public, m.Internal}
			}
		}
		p.err = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			cmd.Process.Kill()
			<-p.done
		}
	})
	select {
	case a := <-ready:
		p.URL, p.InternalURL = "http://"+a[0], "http://"+a[1]
	case <-p.done:
		t.Fatalf("blobserver exited: %v\n%s", p.err, p.stderr)
	case <-time.After(30 * time.Second):
		t.Fatal("blobserver did not start within 30s")
	}
	return p
}

// narOf is the NAR of one regular file.
func narOf(contents []byte) []byte {
	var b bytes.Buffer
	str := func(s []byte) {
		var n [8]byte
		binary.LittleEndian.PutUint64(n[:], uint64(len(s)))
		b.Write(n[:])
		b.Write(s)
		b.Write(make([]byte, (8-len(s)%8)%8))
	}
	for _, s := range []string{"nix-archive-1", "(", "type", "regular", "contents"} {
		str([]byte(s))
	}
	str(contents)
	str([]byte(")"))
	return b.Bytes()
}

func narName(nar []byte) string {
	h := sha256.Sum256(nar)
	return nixbase32.EncodeToString(h[:]) + ".nar"
}

func status(t *testing.T, method, url string, body io.Reader) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, url, body)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// SIGKILL in the middle of a large upload leaves no visible path and, after
// a restart, no temporary file; what was complete before stays.
func TestKillDuringUpload(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and kills the blobserver binary: skipped in -short")
	}
	bin := buildBinary(t)
	dataDir := t.TempDir()
	p := startProc(t, bin, dataDir)

	small := narOf([]byte("complete before the crash\n"))
	if st, body := status(t, "PUT", p.URL+"/omnicorp/a/nar/"+narName(small), bytes.NewReader(small)); st != 201 {
		t.Fatalf("small upload: %d %s", st, body)
	}

	large := narOf(bytes.Repeat([]byte("0123456789abcdef"), 2<<20)) // 32 MiB
	largeURL := p.URL + "/omnicorp/a/nar/" + narName(large)
	pr, pw := io.Pipe()
	go func() {
		req, _ := http.NewRequest("PUT", largeURL, pr)
		req.ContentLength = int64(len(large))
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
		}
	}()
	if _, err := pw.Write(large[:len(large)/2]); err != nil {
		t.Fatal(err)
	}
	tmpDir := filepath.Join(dataDir, "blobs", ".tmp")
	deadline := time.Now().Add(30 * time.Second)
	for {
		e, _ := os.ReadDir(tmpDir)
		if len(e) == 1 {
			if fi, err := e[0].Info(); err == nil && fi.Size() > 0 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("the upload never reached the server's temp file")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-p.done
	pw.CloseWithError(fmt.Errorf("server killed"))

	q := startProc(t, bin, dataDir)
	if e, err := os.ReadDir(tmpDir); err != nil || len(e) != 0 {
		t.Fatalf("temp files after restart: %v %v", e, err)
	}
	if _, err := os.Stat(filepath.Join(dataDir, "blobs", "nar", narName(large))); !os.IsNotExist(err) {
		t.Fatalf("the interrupted NAR is in the blob store: %v", err)
	}
	checks := []struct {
		method, url string
		status      int
		body        string
	}{
		{"HEAD", largeURL, 404, ""},
		{"GET", q.URL + "/nar/" + narName(large), 404, "not found\n"},
		{"GET", q.InternalURL + "/owners/nar/" + narName(large), 200, `{"flakes":[]}` + "\n"},
		{"GET", q.URL + "/omnicorp/a/nar/" + narName(small), 200, string(small)},
		{"GET", q.InternalURL + "/owners/nar/" + narName(small), 200, `{"flakes":["omnicorp/a"]}` + "\n"},
	}
	for _, c := range checks {
		st, body := status(t, c.method, strings.Replace(c.url, p.URL, q.URL, 1), nil)
		if st != c.status || body != c.body {
			t.Errorf("%s %s: %d %q, want %d %q", c.method, c.url, st, body, c.status, c.body)
		}
	}

	// The upload can be made again, completely.
	if st, body := status(t, "PUT", q.URL+"/omnicorp/a/nar/"+narName(large), bytes.NewReader(large)); st != 201 {
		t.Fatalf("re-upload: %d %s", st, body)
	}

	// SIGTERM: a clean exit.
	if err := q.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-q.done:
		if q.err != nil {
			t.Fatalf("exit after SIGTERM: %v\n%s", q.err, q.stderr)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no exit within 30s of SIGTERM")
	}
}

func TestPrintPublicKey(t *testing.T) {
	dir := t.TempDir()
	out := captureStdout(t, func() {
		if err := run([]string{"-data-dir", dir, "-print-public-key"}); err != nil {
			t.Fatal(err)
		}
	})
	key, err := os.ReadFile(filepath.Join(dir, "signing-key.sec"))
	if err != nil {
		t.Fatal(err)
	}
	name := strings.SplitN(string(key), ":", 2)[0]
	if !strings.HasPrefix(out, name+":") || strings.Count(out, "\n") != 1 || strings.Contains(out, strings.SplitN(string(key), ":", 2)[1]) {
		t.Fatalf("printed %q", out)
	}
	if again := captureStdout(t, func() { run([]string{"-data-dir", dir, "-print-public-key"}) }); again != out {
		t.Fatalf("second call printed %q, first %q", again, out)
	}
	if err := run([]string{"-print-public-key"}); err == nil {
		t.Fatal("no data dir accepted")
	}
}

func captureStdout(t *testing.T, fn func()) string {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	old := os.Stdout
	os.Stdout = w
	defer func() { os.Stdout = old }()
	fn()
	w.Close()
	b, _ := io.ReadAll(r)
	return string(b)
}

func TestLookupCacheFlagRejectsNegative(t *testing.T) {
	err := run([]string{"-lookup-cache", "-1", "-data-dir", t.TempDir()})
	if err == nil || !strings.Contains(err.Error(), "-lookup-cache -1") {
		t.Fatalf("negative -lookup-cache: %v", err)
	}
}
