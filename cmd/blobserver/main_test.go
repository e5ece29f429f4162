package main

import (
	"bufio"
	"bytes"
	"context"
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

func TestFlagsFromEnvAndConfig(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "blobserver.conf")
	if err := os.WriteFile(conf, []byte("listen 127.0.0.1:1\nmax-nar-size nonsense\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, stderr := runArgs(t, "-config", conf); code != 2 || !strings.Contains(stderr, "nonsense") {
		t.Fatalf("config file not read: %d %s", code, stderr)
	}
	t.Setenv("FLAKEGATE_LOG_LEVEL", "loud")
	if code, stderr := runArgs(t); code != 1 || !strings.Contains(stderr, "-log-level") {
		t.Fatalf("env not read: %d %s", code, stderr)
	}
}

// The single-host flags: -check validates the policies and issuers as authz
// -check does; a half-given or contradictory single-host configuration is
// refused with every problem named.
func TestSingleHostFlags(t *testing.T) {
	var stdout, stderr strings.Builder
	code := run(context.Background(), []string{"-check", "-policies", "../../policies", "-issuers", "../../examples/issuers.yaml"}, &stdout, &stderr)
	if code != 0 || !strings.Contains(stdout.String(), "blobserver -check: OK") || !strings.Contains(stdout.String(), "ok   policies") {
		t.Fatalf("-check of the shipped policies: %d\n%s%s", code, stdout.String(), stderr.String())
	}
	stdout.Reset()
	if code := run(context.Background(), []string{"-check", "-policies", t.TempDir() + "/none", "-issuers", "../../examples/issuers.yaml"}, &stdout, &stderr); code != 1 || !strings.Contains(stdout.String(), "FAILED") {
		t.Fatalf("-check of a missing policy directory: %d\n%s", code, stdout.String())
	}

	dir := t.TempDir()
	for _, tc := range []struct {
		args []string
		want []string
	}{
		// -issuers alone means single host: -policies is missing.
		{[]string{"-issuers", "../../examples/issuers.yaml"}, []string{"-policies is required"}},
		{[]string{"-public-url", "https://cache.example.com"}, []string{"-policies is required", "-issuers is required"}},
		{[]string{"-policies", "../../policies", "-issuers", "../../examples/issuers.yaml", "-ext-authz", "127.0.0.1:9001"},
			[]string{"drop -ext-authz and -authz-http"}},
		{[]string{"-policies", "../../policies", "-issuers", "../../examples/issuers.yaml", "-max-uploads-per-subject", "-1"},
			[]string{"-max-uploads-per-subject"}},
		// No way to authorize at all: refused, not served to everyone
		// (a misspelt FLAKEGATE_POLICIES ends here).
		{nil, []string{"no authorization configured", "-behind-envoy"}},
	} {
		code, stderr := runArgs(t, append([]string{"-data-dir", dir}, tc.args...)...)
		if code != 1 {
			t.Errorf("%v: exit %d, want 1\n%s", tc.args, code, stderr)
		}
		for _, w := range tc.want {
			if !strings.Contains(stderr, w) {
				t.Errorf("%v: %q not in\n%s", tc.args, w, stderr)
			}
		}
	}
}

// runArgs runs run with args and returns its exit code and stderr.
func runArgs(t *testing.T, args ...string) (int, string) {
	t.Helper()
	var stdout, stderr strings.Builder
	code := run(context.Background(), args, &stdout, &stderr)
	return code, stderr.String()
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

// startProc runs the binary on a data dir (and any other flags) and waits
// for its "listening" line.
func startProc(t *testing.T, bin, dataDir string, flags ...string) *proc {
	t.Helper()
	cmd := exec.Command(bin, append([]string{"-data-dir", dataDir, "-listen", "127.0.0.1:0", "-internal-listen", "127.0.0.1:0", "-behind-envoy"}, flags...)...)
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
	printKey := func(args ...string) (int, string) {
		var stdout, stderr strings.Builder
		code := run(context.Background(), append(args, "-print-public-key"), &stdout, &stderr)
		return code, stdout.String()
	}
	code, out := printKey("-data-dir", dir)
	if code != 0 {
		t.Fatalf("exit %d", code)
	}
	key, err := os.ReadFile(filepath.Join(dir, "signing-key.sec"))
	if err != nil {
		t.Fatal(err)
	}
	name := strings.SplitN(string(key), ":", 2)[0]
	if !strings.HasPrefix(out, name+":") || strings.Count(out, "\n") != 1 || strings.Contains(out, strings.SplitN(string(key), ":", 2)[1]) {
		t.Fatalf("printed %q", out)
	}
	if _, again := printKey("-data-dir", dir); again != out {
		t.Fatalf("second call printed %q, first %q", again, out)
	}
	if code, _ := printKey(); code == 0 {
		t.Fatal("no data dir accepted")
	}
}

func TestLookupCacheFlagRejectsNegative(t *testing.T) {
	code, stderr := runArgs(t, "-lookup-cache", "-1", "-data-dir", t.TempDir())
	if code == 0 || !strings.Contains(stderr, "-lookup-cache -1") {
		t.Fatalf("negative -lookup-cache: %d %s", code, stderr)
	}
}
