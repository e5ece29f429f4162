package cacheserver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/flakegate/flakegate/internal/index"
	"github.com/flakegate/flakegate/internal/nixcache"
	"github.com/flakegate/flakegate/internal/nixname"
	"github.com/flakegate/flakegate/internal/route"
)

// state is what a rejected upload must leave unchanged.
type state struct {
	Stats       index.Stats
	Blobs, Temp int
	Owners      string
}

func (ts *testServer) state(t *testing.T, hash string) state {
	t.Helper()
	st, err := ts.idx.Stats(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	tmp, err := os.ReadDir(filepath.Join(ts.Dir, "blobs", ".tmp"))
	if err != nil {
		t.Fatal(err)
	}
	_, owners, _ := do(t, "GET", ts.InternalURL+"/owners/narinfo/"+hash, nil)
	return state{Stats: st, Blobs: ts.countBlobs(t), Temp: len(tmp), Owners: owners}
}

// flakeState is a flake's record of a path as the index holds it ("" when
// absent), for checks that another flake's push changed nothing.
func (ts *testServer) flakeState(t *testing.T, flake, hash string) string {
	t.Helper()
	f, err := nixname.ParseFlake(flake)
	if err != nil {
		t.Fatal(err)
	}
	p, err := ts.idx.GetPath(context.Background(), f, hash)
	if errors.Is(err, index.ErrNotFound) {
		return ""
	}
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%s %s %s %q %q", p.NarFile, p.NarHash, p.SignedBy, p.References, p.NarInfo)
}

func TestRejectedUploads(t *testing.T) {
	dep := makePath(t, "dep", nixname.CompressionXZ)
	other := makePath(t, "other-flakes-dep", nixname.CompressionXZ)
	p := makePath(t, "app", nixname.CompressionXZ, dep)
	withOther := makePath(t, "app2", nixname.CompressionZstd, dep, other)
	plain := makePath(t, "plain", nixname.CompressionNone)

	// replace edits one narinfo line.
	replace := func(text, key, line string) string {
		var out []string
		for _, l := range strings.Split(text, "\n") {
			if strings.HasPrefix(l, key+": ") {
				l = line
			}
			out = append(out, l)
		}
		return strings.Join(out, "\n")
	}
	truncated := makePath(t, "truncated", nixname.CompressionNone)
	truncated.File = truncated.File[:len(truncated.File)-16]
	truncatedName := func() string { // the URL names the truncated bytes' hash, as a client would
		tp := truncated
		return fileNameOf(tp.File, nixname.CompressionNone)
	}()
	truncatedXZ := makePath(t, "truncated-xz", nixname.CompressionXZ)
	truncatedXZ.File = truncatedXZ.File[:len(truncatedXZ.File)/2]
	truncatedXZName := fileNameOf(truncatedXZ.File, nixname.CompressionXZ)

	const fa = "omnicorp/a"
	tests := []struct {
		name   string
		setup  func(t *testing.T, ts *testServer)
		method string
		path   string // below the server URL
		body   string
		status int
		want   string
	}{
		{
			name:   "wrong NarHash",
			setup:  func(t *testing.T, ts *testServer) { ts.push(t, fa, dep); putNar(t, ts, fa, p) },
			method: "PUT", path: "/" + fa + "/" + p.Hash + ".narinfo",
			body:   replace(p.NarInfo(), "NarHash", "NarHash: sha256:1b4sb93wp679q4zx9k1ignby1yna3z7c4c2ri3wphylbc2dwsys0"),
			status: 400, want: "narinfo NarHash sha256:1b4sb93wp679q4zx9k1ignby1yna3z7c4c2ri3wphylbc2dwsys0 does not match the uploaded NAR",
		},
		{
			name:   "wrong FileSize",
			setup:  func(t *testing.T, ts *testServer) { ts.push(t, fa, dep); putNar(t, ts, fa, p) },
			method: "PUT", path: "/" + fa + "/" + p.Hash + ".narinfo",
			body:   replace(p.NarInfo(), "FileSize", "FileSize: 12345"),
			status: 400, want: "narinfo FileSize 12345 does not match the uploaded NAR",
		},
		{
			name:   "wrong NarSize",
			setup:  func(t *testing.T, ts *testServer) { ts.push(t, fa, dep); putNar(t, ts, fa, p) },
			method: "PUT", path: "/" + fa + "/" + p.Hash + ".narinfo",
			body:   replace(p.NarInfo(), "NarSize", "NarSize: 99"),
			status: 400, want: "narinfo NarSize 99 does not match",
		},
		{
			name:   "truncated NAR",
			method: "PUT", path: "/" + fa + "/nar/" + truncatedName, body: string(truncated.File),
			status: 400, want: "invalid NAR: NAR is truncated",
		},
		{
			name:   "truncated xz NAR",
			method: "PUT", path: "/" + fa + "/nar/" + truncatedXZName, body: string(truncatedXZ.File),
			status: 400, want: "invalid NAR",
		},
		{
			name:   "NAR bytes do not match the URL's file hash",
			method: "PUT", path: "/" + fa + "/nar/" + p.FileName, body: string(dep.File),
			status: 400, want: "NAR file hash mismatch: the URL names " + p.FileName,
		},
		{
			name:   "NAR compression does not match the extension",
			method: "PUT", path: "/" + fa + "/nar/" + fileNameOf(plain.File, nixname.CompressionXZ), body: string(plain.File),
			status: 400, want: "invalid NAR: decompress xz",
		},
		{
			name: "reference not owned by the flake",
			setup: func(t *testing.T, ts *testServer) {
				ts.push(t, fa, dep)
				ts.push(t, "omnicorp/b", other)
				putNar(t, ts, fa, withOther)
			},
			method: "PUT", path: "/" + fa + "/" + withOther.Hash + ".narinfo", body: withOther.NarInfo(),
			status: 400, want: "reference /nix/store/" + other.Base + " of " + withOther.StorePath() + " is not in omnicorp/a: push references first",
		},
		{
			name:   "reference absent everywhere",
			setup:  func(t *testing.T, ts *testServer) { putNar(t, ts, fa, p) },
			method: "PUT", path: "/" + fa + "/" + p.Hash + ".narinfo", body: p.NarInfo(),
			status: 400, want: "reference /nix/store/" + dep.Base,
		},
		{
			name:   "store path does not match the URL",
			setup:  func(t *testing.T, ts *testServer) { ts.push(t, fa, dep); putNar(t, ts, fa, p) },
			method: "PUT", path: "/" + fa + "/" + dep.Hash + ".narinfo", body: p.NarInfo(),
			status: 400, want: "narinfo StorePath " + p.StorePath() + " does not match the URL's hash " + dep.Hash,
		},
		{
			name:   "malformed narinfo",
			method: "PUT", path: "/" + fa + "/" + p.Hash + ".narinfo", body: "StorePath /nix/store/x\n",
			status: 400, want: "invalid narinfo: narinfo line 1: want \"Key: value\"",
		},
		{
			name:   "narinfo without NarHash",
			method: "PUT", path: "/" + fa + "/" + p.Hash + ".narinfo", body: replace(p.NarInfo(), "NarHash", ""),
			status: 400, want: "invalid narinfo: narinfo has no NarHash field",
		},
		{
			name:   "narinfo before its NAR",
			setup:  func(t *testing.T, ts *testServer) { ts.push(t, fa, dep) },
			method: "PUT", path: "/" + fa + "/" + p.Hash + ".narinfo", body: p.NarInfo(),
			status: 400, want: "NAR nar/" + p.FileName + " was not uploaded to omnicorp/a",
		},
		{
			name:   "NAR uploaded to another flake only",
			setup:  func(t *testing.T, ts *testServer) { ts.push(t, fa, dep); putNar(t, ts, "omnicorp/b", p) },
			method: "PUT", path: "/" + fa + "/" + p.Hash + ".narinfo", body: p.NarInfo(),
			status: 400, want: "was not uploaded to omnicorp/a",
		},
		{
			name:   "narinfo too large",
			method: "PUT", path: "/" + fa + "/" + p.Hash + ".narinfo", body: p.NarInfo() + strings.Repeat("x", 5000),
			status: 413, want: "narinfo exceeds the limit of 4096 bytes",
		},
		{
			name:   "NAR too large",
			method: "PUT", path: "/" + fa + "/nar/" + plain.FileName, body: string(plain.File) + strings.Repeat("\x00", 70000),
			status: 413, want: "exceeds the limit of 65536 bytes",
		},
		{
			name:   "PUT into the union view",
			method: "PUT", path: "/nar/" + plain.FileName, body: string(plain.File),
			status: 405, want: "PUT is not allowed on the union view",
		},
		{
			name:   "bad flake name",
			method: "PUT", path: "/Omni_corp!/a/nar/" + plain.FileName, body: string(plain.File),
			status: 400, want: "org and name may hold only",
		},
		{
			name:   "POST",
			method: "POST", path: "/" + fa + "/nar/" + plain.FileName, body: string(plain.File),
			status: 405, want: "POST not allowed",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts := newTestServer(t, "", nil, func(c *Config) { c.MaxNarInfoSize = 4096; c.MaxNarSize = 65536 })
			if tt.setup != nil {
				tt.setup(t, ts)
			}
			before := ts.state(t, p.Hash)
			status, body, _ := do(t, tt.method, ts.URL+tt.path, []byte(tt.body))
			if status != tt.status {
				t.Fatalf("status %d, want %d: %s", status, tt.status, body)
			}
			if !strings.Contains(body, tt.want) {
				t.Fatalf("message %q does not say %q", body, tt.want)
			}
			if strings.Count(body, "\n") != 1 {
				t.Fatalf("message is not one line: %q", body)
			}
			if after := ts.state(t, p.Hash); after != before {
				t.Fatalf("rejected upload changed the cache:\nbefore %+v\nafter  %+v", before, after)
			}
		})
	}
}

func fileNameOf(file []byte, c nixname.Compression) string {
	return nixname.NarFileName(strings.TrimPrefix(nixcache.FormatHash(sha256Of(file)), "sha256:"), c)
}

func putNar(t *testing.T, ts *testServer, flake string, p testPath) {
	t.Helper()
	if st, body, _ := do(t, "PUT", ts.URL+"/"+flake+"/nar/"+p.FileName, p.File); st/100 != 2 {
		t.Fatalf("PUT nar %s: %d %s", p.Base, st, body)
	}
}

// Each flake has its own narinfo of a store path: b's push of a path a
// pushed with another compression is b's own record (its own NAR file), and
// c's push of other contents for the same path is accepted into c without
// changing a's or b's (issue 12: no pre-empting, no poisoning).
func TestSamePathOtherCompression(t *testing.T) {
	ts := newTestServer(t, "", nil, nil)
	xzP := makePath(t, "shared", nixname.CompressionXZ)
	zstdP := xzP.compressedAs(t, nixname.CompressionZstd)

	ts.push(t, "omnicorp/a", xzP)
	ts.push(t, "omnicorp/b", zstdP)
	st, body, _ := do(t, "GET", ts.URL+"/omnicorp/b/"+xzP.Hash+".narinfo", nil)
	if st != 200 || !strings.Contains(body, "URL: nar/"+zstdP.FileName) {
		t.Fatalf("b's narinfo is not b's own: %d\n%s", st, body)
	}
	if st, _, _ := do(t, "GET", ts.URL+"/omnicorp/b/nar/"+zstdP.FileName, nil); st != 200 {
		t.Fatalf("b cannot fetch the NAR its narinfo names: %d", st)
	}
	// a and b agree (same NarHash, references): the union view serves the
	// earliest record (a's).
	st, body, _ = do(t, "GET", ts.URL+"/"+xzP.Hash+".narinfo", nil)
	if st != 200 || !strings.Contains(body, "URL: nar/"+xzP.FileName) {
		t.Fatalf("union narinfo: %d\n%s", st, body)
	}

	// A non-reproducible rebuild (or a pre-emption) in c: same store path,
	// different contents. c gets its own record; a and b keep theirs.
	diff := makePath(t, "shared-rebuilt", nixname.CompressionXZ)
	diff.Hash, diff.Base = xzP.Hash, xzP.Base
	beforeA, beforeB := ts.flakeState(t, "omnicorp/a", xzP.Hash), ts.flakeState(t, "omnicorp/b", xzP.Hash)
	putNar(t, ts, "omnicorp/c", diff)
	st, body, _ = do(t, "PUT", ts.URL+"/omnicorp/c/"+diff.Hash+".narinfo", []byte(diff.NarInfo()))
	if st != http.StatusCreated {
		t.Fatalf("c's narinfo: %d %s", st, body)
	}
	if a, b := ts.flakeState(t, "omnicorp/a", xzP.Hash), ts.flakeState(t, "omnicorp/b", xzP.Hash); a != beforeA || b != beforeB {
		t.Fatalf("c's push changed other flakes: a %q → %q, b %q → %q", beforeA, a, beforeB, b)
	}
	st, body, _ = do(t, "GET", ts.URL+"/omnicorp/c/"+diff.Hash+".narinfo", nil)
	if st != 200 || !strings.Contains(body, "NarHash: "+nixcache.FormatHash(sha256Of(diff.NAR))) {
		t.Fatalf("c does not serve its own contents: %d\n%s", st, body)
	}
	// Within c, other contents for the path are a conflict that names only
	// c's own record.
	again := makePath(t, "shared-third", nixname.CompressionXZ)
	again.Hash, again.Base = xzP.Hash, xzP.Base
	putNar(t, ts, "omnicorp/c", again)
	before := ts.flakeState(t, "omnicorp/c", xzP.Hash)
	st, body, _ = do(t, "PUT", ts.URL+"/omnicorp/c/"+again.Hash+".narinfo", []byte(again.NarInfo()))
	if st != http.StatusConflict || !strings.Contains(body, "already in omnicorp/c with different contents") ||
		!strings.Contains(body, nixcache.FormatHash(sha256Of(diff.NAR))) || strings.Contains(body, nixcache.FormatHash(sha256Of(xzP.NAR))) {
		t.Fatalf("conflicting narinfo in c: %d %s", st, body)
	}
	if after := ts.flakeState(t, "omnicorp/c", xzP.Hash); after != before {
		t.Fatalf("conflict changed c: %q → %q", before, after)
	}
}

func TestIdempotentRepush(t *testing.T) {
	ts := newTestServer(t, "", nil, nil)
	dep := makePath(t, "dep", nixname.CompressionZstd)
	p := makePath(t, "app", nixname.CompressionZstd, dep)
	ts.push(t, "omnicorp/a", dep)
	ts.push(t, "omnicorp/a", p)
	before := ts.state(t, p.Hash)
	for range 2 {
		if st, body, _ := do(t, "PUT", ts.URL+"/omnicorp/a/nar/"+p.FileName, p.File); st != 200 {
			t.Fatalf("re-PUT nar: %d %s", st, body)
		}
		if st, body, _ := do(t, "PUT", ts.URL+"/omnicorp/a/"+p.Hash+".narinfo", []byte(p.NarInfo())); st != 200 {
			t.Fatalf("re-PUT narinfo: %d %s", st, body)
		}
	}
	if after := ts.state(t, p.Hash); after != before {
		t.Fatalf("re-push changed the cache: %+v → %+v", before, after)
	}
}

func TestOwnersEndpoint(t *testing.T) {
	ts := newTestServer(t, "", nil, nil)
	p := makePath(t, "p", nixname.CompressionXZ)
	ts.push(t, "omnicorp/b", p)
	ts.push(t, "omnicorp/a", p)
	tests := []struct {
		path   string
		status int
		flakes []string
	}{
		{"/owners/narinfo/" + p.Hash, 200, []string{"omnicorp/a", "omnicorp/b"}},
		{"/owners/nar/" + p.FileName, 200, []string{"omnicorp/a", "omnicorp/b"}},
		{"/owners/narinfo/" + storeHash("absent"), 200, []string{}},
		{"/owners/nar/" + fileNameOf([]byte("absent"), nixname.CompressionNone), 200, []string{}},
		{"/owners/narinfo/not-a-hash", 400, nil},
		{"/owners/nar/x.nar", 400, nil},
		{"/owners/other/x", 404, nil},
	}
	for _, tt := range tests {
		st, body, h := do(t, "GET", ts.InternalURL+tt.path, nil)
		if st != tt.status {
			t.Errorf("%s: status %d, want %d (%s)", tt.path, st, tt.status, body)
			continue
		}
		if tt.flakes == nil {
			continue
		}
		if h.Get("Content-Type") != "application/json" {
			t.Errorf("%s: content type %q", tt.path, h.Get("Content-Type"))
		}
		var resp route.OwnersResponse
		if err := json.Unmarshal([]byte(body), &resp); err != nil || resp.Flakes == nil {
			t.Errorf("%s: body %q: %v", tt.path, body, err)
			continue
		}
		if strings.Join(resp.Flakes, ",") != strings.Join(tt.flakes, ",") {
			t.Errorf("%s: flakes %v, want %v", tt.path, resp.Flakes, tt.flakes)
		}
	}
	if st, body, _ := do(t, "GET", ts.InternalURL+"/healthz", nil); st != 200 || body != "ok\n" {
		t.Errorf("healthz: %d %q", st, body)
	}
	st, body, _ := do(t, "GET", ts.InternalURL+"/metrics", nil)
	// Each flake's first upload of the NAR is a 201: the answer does not
	// tell b that a stored the same bytes.
	for _, m := range []string{"flakegate_blobserver_index_paths 1", "flakegate_blobserver_index_flakes 2", `flakegate_blobserver_requests_total{code="201",kind="nar",method="PUT"} 2`} {
		if st != 200 || !strings.Contains(body, m) {
			t.Errorf("metrics lack %q", m)
		}
	}
}

func TestLogs(t *testing.T) {
	ts := newTestServer(t, "", nil, nil)
	drv := storeHash("drv") + "-hello.drv"
	if st, body, _ := do(t, "PUT", ts.URL+"/omnicorp/a/log/"+drv, []byte("building hello\n")); st != 201 {
		t.Fatalf("PUT log: %d %s", st, body)
	}
	st, body, h := do(t, "GET", ts.URL+"/omnicorp/a/log/"+drv, nil)
	if st != 200 || body != "building hello\n" || h.Get("Content-Type") != "text/plain; charset=utf-8" {
		t.Fatalf("GET log: %d %q %v", st, body, h)
	}
	if st, _, _ := do(t, "GET", ts.URL+"/omnicorp/b/log/"+drv, nil); st != 404 {
		t.Fatalf("other flake's log: %d", st)
	}
	if st, _, _ := do(t, "PUT", ts.URL+"/omnicorp/a/log/../../x", []byte("x")); st/100 != 4 {
		t.Fatalf("log path escape: %d", st)
	}
}

// A client that stops sending in the middle of an upload is dropped after
// the idle timeout; nothing of its upload remains.
func TestStalledUploadIsDropped(t *testing.T) {
	ts := newTestServer(t, "", nil, func(c *Config) { c.UploadIdleTimeout = 300 * time.Millisecond })
	p := makePath(t, "stalled", nixname.CompressionXZ)
	before := ts.state(t, p.Hash)
	pr, pw := io.Pipe()
	defer pw.Close()
	req, _ := http.NewRequest("PUT", ts.URL+"/omnicorp/a/nar/"+p.FileName, pr)
	req.ContentLength = int64(len(p.File))
	type result struct {
		status int
		body   string
		err    error
	}
	done := make(chan result, 1)
	go func() {
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			done <- result{err: err}
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		done <- result{status: resp.StatusCode, body: string(b)}
	}()
	if _, err := pw.Write(p.File[:len(p.File)/2]); err != nil {
		t.Fatal(err)
	}
	// ... and nothing more.
	select {
	case r := <-done:
		if r.err == nil && (r.status != 400 || !strings.Contains(r.body, "reading the NAR upload failed")) {
			t.Fatalf("stalled upload answered %d %q", r.status, r.body)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("stalled upload still open after 30s")
	}
	deadline := time.Now().Add(10 * time.Second)
	for ts.state(t, p.Hash) != before {
		if time.Now().After(deadline) {
			t.Fatalf("stalled upload left state: %+v → %+v", before, ts.state(t, p.Hash))
		}
		time.Sleep(20 * time.Millisecond)
	}
}
