package cacheserver

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/flakegate/flakegate/internal/index"
	"github.com/flakegate/flakegate/internal/nixcache"
	"github.com/flakegate/flakegate/internal/nixname"
)

func TestNamespaceIsolationAndUnion(t *testing.T) {
	ts := newTestServer(t, "", nil, nil)
	p := makePath(t, "secret-app", nixname.CompressionXZ)
	ts.push(t, "omnicorp/a", p)

	tests := []struct {
		method, path string
		status       int
	}{
		{"GET", "/omnicorp/a/" + p.Hash + ".narinfo", 200},
		{"HEAD", "/omnicorp/a/" + p.Hash + ".narinfo", 200},
		{"GET", "/omnicorp/a/nar/" + p.FileName, 200},
		{"HEAD", "/omnicorp/a/nar/" + p.FileName, 200},
		{"GET", "/omnicorp/b/" + p.Hash + ".narinfo", 404},
		{"HEAD", "/omnicorp/b/" + p.Hash + ".narinfo", 404},
		{"GET", "/omnicorp/b/nar/" + p.FileName, 404},
		{"HEAD", "/omnicorp/b/nar/" + p.FileName, 404},
		{"GET", "/" + p.Hash + ".narinfo", 200},
		{"GET", "/nar/" + p.FileName, 200},
		{"HEAD", "/nar/" + p.FileName, 200},
		{"GET", "/" + storeHash("absent") + ".narinfo", 404},
		{"GET", "/nar/" + fileNameOf([]byte("absent"), nixname.CompressionXZ), 404},
		{"GET", "/nix-cache-info", 200},
		{"GET", "/omnicorp/b/nix-cache-info", 200},
		{"GET", "/_flakegate/jwks", 404},
		{"GET", "/omnicorp/a/something/else", 404},
		{"DELETE", "/omnicorp/a/" + p.Hash + ".narinfo", 405},
		{"GET", "/omnicorp/a/not-a-hash.narinfo", 400},
	}
	for pass := range 2 { // the second pass is answered from the hit cache
		for _, tt := range tests {
			st, body, _ := do(t, tt.method, ts.URL+tt.path, nil)
			if st != tt.status {
				t.Errorf("pass %d: %s %s: %d, want %d (%s)", pass, tt.method, tt.path, st, tt.status, body)
			}
		}
	}

	// Once b uploads the same bytes it owns them too; they are stored once.
	ts.push(t, "omnicorp/b", p)
	for _, path := range []string{"/omnicorp/b/nar/" + p.FileName, "/omnicorp/b/" + p.Hash + ".narinfo"} {
		if st, _, _ := do(t, "HEAD", ts.URL+path, nil); st != 200 {
			t.Fatalf("%s after b's push: %d (a 404 was cached?)", path, st)
		}
	}
	if n := ts.countBlobs(t); n != 1 {
		t.Fatalf("%d NAR blobs, want 1", n)
	}
}

func TestResponseHeaders(t *testing.T) {
	ts := newTestServer(t, "", nil, func(c *Config) { c.Priority = 30 })
	p := makePath(t, "hello", nixname.CompressionZstd)
	ts.push(t, "omnicorp/a", p)

	st, body, h := do(t, "GET", ts.URL+"/nix-cache-info", nil)
	if st != 200 || body != "StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 30\n" || h.Get("Content-Type") != "text/x-nix-cache-info" {
		t.Fatalf("nix-cache-info: %d %q %v", st, body, h)
	}

	st, info, h := do(t, "GET", ts.URL+"/omnicorp/a/"+p.Hash+".narinfo", nil)
	if st != 200 || h.Get("Content-Type") != "text/x-nix-narinfo" || h.Get("Content-Length") != fmt.Sprint(len(info)) || h.Get("Cache-Control") != "private, max-age=60" {
		t.Fatalf("narinfo headers: %d %v", st, h)
	}
	if strings.Contains(info, "client-1:") {
		t.Fatalf("client signature served:\n%s", info)
	}
	if ok, err := nixcache.VerifyNarInfo([]byte(info), []string{testKeyPublic}); !ok || err != nil {
		t.Fatalf("served narinfo does not verify with the server key (%v):\n%s", err, info)
	}
	if !strings.Contains(info, "URL: nar/"+p.FileName+"\n") {
		t.Fatalf("URL is not relative nar/<file>:\n%s", info)
	}
	st, headBody, hh := do(t, "HEAD", ts.URL+"/omnicorp/a/"+p.Hash+".narinfo", nil)
	if st != 200 || headBody != "" || hh.Get("Content-Length") != fmt.Sprint(len(info)) {
		t.Fatalf("HEAD narinfo: %d %q %v", st, headBody, hh)
	}

	narURL := ts.URL + "/omnicorp/a/nar/" + p.FileName
	st, nar, h := do(t, "GET", narURL, nil)
	if st != 200 || nar != string(p.File) {
		t.Fatalf("GET nar: %d, %d bytes", st, len(nar))
	}
	want := map[string]string{
		"Content-Type":   "application/x-nix-nar",
		"Cache-Control":  "private, max-age=31536000, immutable",
		"Content-Length": fmt.Sprint(len(p.File)),
		"Accept-Ranges":  "bytes",
		"Etag":           `"` + strings.TrimSuffix(p.FileName, ".nar.zst") + `"`,
	}
	for k, v := range want {
		if h.Get(k) != v {
			t.Errorf("NAR header %s = %q, want %q", k, h.Get(k), v)
		}
	}
	st, headBody, hh = do(t, "HEAD", narURL, nil)
	if st != 200 || headBody != "" || hh.Get("Content-Length") != fmt.Sprint(len(p.File)) {
		t.Fatalf("HEAD nar: %d %q %v", st, headBody, hh)
	}

	req, _ := http.NewRequest("GET", narURL, nil)
	req.Header.Set("Range", "bytes=5-14")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 206 || resp.Header.Get("Content-Range") != fmt.Sprintf("bytes 5-14/%d", len(p.File)) || resp.ContentLength != 10 {
		t.Fatalf("Range: %d %v", resp.StatusCode, resp.Header)
	}
	req, _ = http.NewRequest("GET", narURL, nil)
	req.Header.Set("If-None-Match", want["Etag"])
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 304 {
		t.Fatalf("If-None-Match: %d", resp.StatusCode)
	}

	st, msg, h := do(t, "GET", ts.URL+"/omnicorp/b/"+p.Hash+".narinfo", nil)
	if st != 404 || h.Get("Content-Type") != "text/plain; charset=utf-8" || msg != "not found\n" {
		t.Fatalf("404: %d %q %v", st, msg, h)
	}
}

// After a key rotation every served narinfo carries the new and old
// signatures; the re-signed text is stored once.
func TestKeyRotation(t *testing.T) {
	dir := t.TempDir()
	old := newTestServer(t, dir, keySet(t, testKeySecret), nil)
	p := makePath(t, "rotated", nixname.CompressionXZ)
	old.push(t, "omnicorp/a", p)
	old.close()

	newSecret, newPublic := mustKey("test-cache-2")
	ts := newTestServer(t, dir, keySet(t, newSecret, testKeySecret), nil)
	for _, path := range []string{"/omnicorp/a/" + p.Hash + ".narinfo", "/" + p.Hash + ".narinfo"} {
		st, info, _ := do(t, "GET", ts.URL+path, nil)
		if st != 200 {
			t.Fatalf("%s: %d", path, st)
		}
		for _, pub := range []string{newPublic, testKeyPublic} {
			if ok, _ := nixcache.VerifyNarInfo([]byte(info), []string{pub}); !ok {
				t.Fatalf("%s does not verify with %s:\n%s", path, pub, info)
			}
		}
	}
	stored, err := ts.idx.GetPath(context.Background(), nixname.Flake{Org: "omnicorp", Name: "a"}, p.Hash)
	if err != nil || stored.SignedBy != ts.Keys.ID() {
		t.Fatalf("re-signed narinfo not stored: %+v %v", stored.SignedBy, err)
	}
}

func TestAccessLogHasSubject(t *testing.T) {
	ts := newTestServer(t, "", nil, nil)
	req, _ := http.NewRequest("GET", ts.URL+"/omnicorp/a/nix-cache-info", nil)
	req.Header.Set("X-Flakegate-Subject", "github:omnicorp/a@refs/heads/main")
	req.Header.Set("Authorization", "Bearer secret-token-value")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	log := ts.Log.String()
	if !strings.Contains(log, `"subject":"github:omnicorp/a@refs/heads/main"`) || !strings.Contains(log, `"flake":"omnicorp/a"`) {
		t.Fatalf("access log lacks subject/flake:\n%s", log)
	}
	if strings.Contains(log, "secret-token-value") {
		t.Fatal("access log contains the token")
	}
}

// 20 concurrent pushers of overlapping closures into 2 flakes: all paths
// land, each NAR is stored once, ownership is exact, and a restart keeps it.
func TestConcurrentPushers(t *testing.T) {
	dir := t.TempDir()
	ts := newTestServer(t, dir, nil, nil)

	// A shared base chain, a part shared per flake, and a tail per pusher.
	var base []testPath
	for i := range 8 {
		var refs []testPath
		if i > 0 {
			refs = append(refs, base[i-1])
		}
		base = append(base, makePath(t, fmt.Sprintf("base-%d", i), nixname.CompressionZstd, refs...))
	}
	flakes := []string{"omnicorp/a", "omnicorp/b"}
	perFlake := map[string][]testPath{}
	for _, f := range flakes {
		for i := range 4 {
			perFlake[f] = append(perFlake[f], makePath(t, fmt.Sprintf("%s-shared-%d", strings.ReplaceAll(f, "/", "-"), i), nixname.CompressionZstd, base[len(base)-1]))
		}
	}
	closures := make([][]testPath, 20)
	for k := range closures {
		f := flakes[k%2]
		own := makePath(t, fmt.Sprintf("pusher-%d", k), nixname.CompressionZstd, perFlake[f]...)
		closures[k] = append(append(append([]testPath{}, base...), perFlake[f]...), own)
	}

	var wg sync.WaitGroup
	for k := range closures {
		wg.Go(func() {
			for _, p := range closures[k] {
				if err := ts.tryPush(flakes[k%2], p); err != nil {
					t.Errorf("pusher %d: %v", k, err)
					return
				}
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}

	check := func(ts *testServer) {
		t.Helper()
		distinct := map[string]bool{}
		for k, c := range closures {
			for _, p := range c {
				distinct[p.FileName] = true
				st, _, _ := do(t, "GET", ts.URL+"/"+flakes[k%2]+"/"+p.Hash+".narinfo", nil)
				if st != 200 {
					t.Fatalf("%s missing from %s after restart: %d", p.Base, flakes[k%2], st)
				}
			}
		}
		if n := ts.countBlobs(t); n != len(distinct) {
			t.Fatalf("%d NAR blobs, want %d (each stored once)", n, len(distinct))
		}
		for k, c := range closures {
			own := c[len(c)-1]
			_, body, _ := do(t, "GET", ts.InternalURL+"/owners/narinfo/"+own.Hash, nil)
			if want := fmt.Sprintf(`{"flakes":["%s"]}`+"\n", flakes[k%2]); body != want {
				t.Fatalf("owners of %s: %s, want %s", own.Base, body, want)
			}
		}
		for _, f := range flakes {
			for _, p := range perFlake[f] {
				_, body, _ := do(t, "GET", ts.InternalURL+"/owners/narinfo/"+p.Hash, nil)
				if want := fmt.Sprintf(`{"flakes":["%s"]}`+"\n", f); body != want {
					t.Fatalf("owners of %s: %s, want %s", p.Base, body, want)
				}
			}
		}
		for _, p := range base {
			owners, err := ts.idx.Owners(context.Background(), nixname.KindNarInfo, p.Hash)
			if err != nil || !slices.Equal(owners, []nixname.Flake{{Org: "omnicorp", Name: "a"}, {Org: "omnicorp", Name: "b"}}) {
				t.Fatalf("owners of base %s: %v %v", p.Base, owners, err)
			}
		}
	}
	check(ts)
	ts.close()
	check(newTestServer(t, dir, nil, nil))
}

// countingIndex counts narinfo lookups that reach the index.
type countingIndex struct {
	index.Index
	getPath, pathsOf atomic.Int64
}

func (c *countingIndex) PathsOf(ctx context.Context, hash string, flakes []nixname.Flake) ([]index.Path, error) {
	c.pathsOf.Add(1)
	return c.Index.PathsOf(ctx, hash, flakes)
}

func (c *countingIndex) GetPath(ctx context.Context, f nixname.Flake, hash string) (index.Path, error) {
	c.getPath.Add(1)
	return c.Index.GetPath(ctx, f, hash)
}

// Hits are served from memory unless the lookup cache is off
// (blobserver -lookup-cache 0), when every GET reads the index.
func TestLookupCacheEntries(t *testing.T) {
	for _, tc := range []struct {
		name    string
		entries int
		want    int64 // index lookups for 3 GETs of one narinfo
	}{
		{"default", testConfig().CacheEntries, 1},
		{"disabled", 0, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var ci *countingIndex
			ts := newTestServer(t, "", nil, func(c *Config) {
				ci = &countingIndex{Index: c.Index}
				c.Index, c.CacheEntries = ci, tc.entries
			})
			p := makePath(t, "cached", nixname.CompressionZstd)
			ts.push(t, "omnicorp/a", p)
			before := ci.getPath.Load()
			for range 3 {
				if st, body, _ := do(t, "GET", ts.URL+"/omnicorp/a/"+p.Hash+".narinfo", nil); st != 200 {
					t.Fatalf("GET narinfo: %d %s", st, body)
				}
			}
			if got := ci.getPath.Load() - before; got != tc.want {
				t.Fatalf("%d index lookups for 3 GETs, want %d", got, tc.want)
			}
		})
	}
}

// Config has no defaults of its own: a limit that can be switched off is
// off at 0 (TestLookupCacheEntries), the others must be set, and every
// problem is reported at once.
func TestNewChecksConfig(t *testing.T) {
	ts := newTestServer(t, "", nil, nil)
	cfg := Config{Blob: ts.blob, Index: ts.idx, Keys: ts.Keys, CacheEntries: -1, MaxExpansion: -5, MissTTL: -1}
	_, err := New(cfg)
	if err == nil {
		t.Fatal("New accepted a configuration without sizes")
	}
	for _, want := range []string{"MaxNarSize must be positive", "MaxLogSize must be positive", "MaxNarInfoSize", "Priority", "UploadIdleTimeout",
		"CacheEntries must not be negative", "MaxExpansion must not be negative", "MissTTL must not be negative", "ReadFlushInterval", "GenerationPoll"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q: %v", want, err)
		}
	}
}
