package scaleout

import (
	"bufio"
	"crypto/rand"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/flakegate/flakegate/internal/nixtest"
)

// noRedirects is a client that shows the 307 instead of following it.
var noRedirects = &http.Client{
	Timeout:       30 * time.Second,
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
}

// narURL reads a path's NAR URL from the server's narinfo.
func narURL(t testing.TB, base, path string) string {
	t.Helper()
	st, body := getNoFollow(t, base+"/"+nixtest.HashPart(path)+".narinfo")
	if st != 200 {
		t.Fatalf("narinfo of %s: %d", path, st)
	}
	for line := range strings.Lines(body) {
		if u, ok := strings.CutPrefix(strings.TrimSpace(line), "URL: "); ok {
			return base + "/" + u
		}
	}
	t.Fatalf("narinfo of %s has no URL:\n%s", path, body)
	return ""
}

func getNoFollow(t testing.TB, u string) (int, string) {
	t.Helper()
	resp, err := noRedirects.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// With -redirect-nars, real Nix pulls a closure through the blob server
// while every NAR comes from MinIO: the access log shows a 307 for each
// NAR, the narinfos stay 200, the closure verifies; a presigned URL is
// refused by MinIO once expired; uploads still go through the server.
func TestNixPullThroughNarRedirects(t *testing.T) {
	e := setup(t)
	secret, public := nixtest.GenerateKey(t, "flakegate-scaleout-1")
	plain := start(t, e, secret)
	redir := start(t, e, secret, "-redirect-nars", "-redirect-expiry", "2s", "-access-log=true")

	src := nixtest.NewStore(t)
	top := src.MakeClosure(7, "scaleout-redirect-"+time.Now().Format("150405.000000000"))
	want := src.Closure(top)
	// Uploads go through the blob server (verified) even with redirects on.
	if err := src.CopyTo(nixtest.Options{}, redir.URL+"/omnicorp/app?compression=zstd", top); err != nil {
		t.Fatalf("push through the redirecting server: %v", err)
	}
	for _, from := range []string{redir.URL + "/omnicorp/app", redir.URL} {
		dst := nixtest.NewStore(t)
		if err := dst.CopyFrom(nixtest.Options{TrustedKeys: []string{public}}, from, top); err != nil {
			t.Fatalf("pull through redirects (%s): %v\n%s", from, err, redir.Log.String())
		}
		if got := dst.Closure(top); !slices.Equal(nixtest.Comparable(got), nixtest.Comparable(want)) {
			t.Fatalf("closure pulled through redirects differs:\n got %v\nwant %v", nixtest.Comparable(got), nixtest.Comparable(want))
		}
		if err := dst.Verify([]string{public}, top); err != nil {
			t.Fatal(err)
		}
	}
	// The access log: each NAR GET answered 307, no NAR bytes served.
	var nar307, nar200 int
	sc := bufio.NewScanner(strings.NewReader(redir.Log.String()))
	for sc.Scan() {
		l := sc.Text()
		if !strings.Contains(l, "/nar/") || !strings.Contains(l, `"GET"`) {
			continue
		}
		switch {
		case strings.Contains(l, `"status":307`):
			nar307++
		case strings.Contains(l, `"status":200`):
			nar200++
		}
	}
	if nar307 < 2*len(want) || nar200 != 0 {
		t.Errorf("access log: %d NAR GETs answered 307 and %d 200, want %d 307s (two pulls) and no 200\n%s", nar307, nar200, 2*len(want), redir.Log.String())
	}
	// The non-redirecting server serves the same NAR's bytes itself.
	nar := narURL(t, plain.URL+"/omnicorp/app", top)
	if st, _ := getNoFollow(t, nar); st != 200 {
		t.Fatalf("NAR without redirects: %d", st)
	}
	// A presigned URL works at once and is refused once it has expired.
	resp, err := noRedirects.Get(strings.Replace(nar, plain.URL, redir.URL, 1))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc := resp.Header.Get("Location")
	if resp.StatusCode != http.StatusTemporaryRedirect || loc == "" {
		t.Fatalf("NAR with redirects: %d %q", resp.StatusCode, loc)
	}
	if st, _ := getNoFollow(t, loc); st != 200 {
		t.Fatalf("fresh presigned URL: %d", st)
	}
	time.Sleep(3 * time.Second)
	if st, body := getNoFollow(t, loc); st != http.StatusForbidden || !strings.Contains(body, "expired") {
		t.Errorf("expired presigned URL: %d %q, want 403 (expired)", st, body)
	}
	// Absent NARs are the same 404 with and without redirects.
	absent := "/omnicorp/app/nar/" + strings.Repeat("0", 52) + ".nar.zst"
	sa, ba := getNoFollow(t, plain.URL+absent)
	sr, br := getNoFollow(t, redir.URL+absent)
	if sa != 404 || sr != sa || br != ba {
		t.Errorf("absent NAR: %d %q with redirects, %d %q without", sr, br, sa, ba)
	}
}

// NAR GET throughput of one 64 MiB NAR through the blob server (bytes
// served by it from S3) against a 307 to MinIO followed by the client.
func BenchmarkNarGet(b *testing.B) {
	e := setup(b)
	secret, _ := nixtest.GenerateKey(b, "flakegate-scaleout-1")
	plain := start(b, e, secret)
	redir := start(b, e, secret, "-redirect-nars", "-redirect-expiry", "60s")
	src := nixtest.NewStore(b)
	big := filepath.Join(b.TempDir(), "big.bin")
	data := make([]byte, 64<<20)
	_, _ = rand.Read(data)
	if err := os.WriteFile(big, data, 0o644); err != nil {
		b.Fatal(err)
	}
	path := strings.TrimSpace(src.Nix(nixtest.Options{}, "store", "add-file", big))
	if err := src.CopyTo(nixtest.Options{}, plain.URL+"/omnicorp/app?compression=none", path); err != nil {
		b.Fatal(err)
	}
	nar := narURL(b, plain.URL+"/omnicorp/app", path)
	follow := &http.Client{Timeout: 60 * time.Second}
	for _, c := range []struct {
		name, url string
		server    *server
	}{{"through-blobserver", nar, plain}, {"redirect-to-s3", strings.Replace(nar, plain.URL, redir.URL, 1), redir}} {
		b.Run(c.name, func(b *testing.B) {
			b.SetBytes(int64(len(data))) // NAR of one file ≈ its size
			cpu0 := cpuTime(b, c.server.Pid)
			for b.Loop() {
				resp, err := follow.Get(c.url)
				if err != nil {
					b.Fatal(err)
				}
				n, err := io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if err != nil || resp.StatusCode != 200 || n < int64(len(data)) {
					b.Fatalf("GET %s: %d, %d bytes, %v", c.url, resp.StatusCode, n, err)
				}
			}
			b.ReportMetric(float64((cpuTime(b, c.server.Pid)-cpu0).Milliseconds())/float64(b.N), "blobserver-cpu-ms/op")
		})
	}
}

// cpuTime is the user+system CPU time a process has used (Linux /proc).
func cpuTime(t testing.TB, pid int) time.Duration {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Skipf("process CPU time: %v", err)
	}
	// Fields after the command name (which may hold spaces): state is 3rd,
	// utime 14th, stime 15th, in clock ticks (100 per second on Linux).
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * 10 * time.Millisecond
}
