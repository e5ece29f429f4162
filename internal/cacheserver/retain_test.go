package cacheserver

import (
	"bufio"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"unsafe"

	"github.com/flakegate/flakegate/internal/nixname"
)

// within tells whether s's bytes lie inside buf's.
func within(s, buf string) bool {
	if len(s) == 0 || len(buf) == 0 {
		return false
	}
	p, b := uintptr(unsafe.Pointer(unsafe.StringData(s))), uintptr(unsafe.Pointer(unsafe.StringData(buf)))
	return p >= b && p < b+uintptr(len(buf))
}

// keysPin reports the first cached key whose strings point into line.
func keysPin[V any](c *shardedLRU[V], line string) (cacheKey, bool) {
	for _, s := range c.shards {
		for _, k := range s.Keys() {
			if within(k.flake.Org, line) || within(k.flake.Name, line) || within(k.key, line) {
				return k, true
			}
		}
	}
	return cacheKey{}, false
}

// readRequest parses a request as net/http's server does: the path (and
// the flake and hash route.Parse slices from it) shares the memory of the
// whole request line, query included, which may be about MaxHeaderBytes
// (1 MiB by default) long.
func readRequest(t *testing.T, target string) *http.Request {
	t.Helper()
	r, err := http.ReadRequest(bufio.NewReader(strings.NewReader("GET " + target + " HTTP/1.1\r\nHost: cache\r\n\r\n")))
	if err != nil {
		t.Fatal(err)
	}
	if !within(r.URL.Path, r.RequestURI) {
		t.Fatal("the parsed path does not share the request line's memory: this test shows nothing")
	}
	return r
}

// The lookup caches outlive the request: an entry keyed by strings sliced
// from the request path keeps the whole request line alive, query and
// all. A reader asking for absent paths (any hash: every miss is a new
// entry) with ~1 MiB of query each would pin up to CacheEntries MiB
// (64 GiB by default) through the miss cache alone; hits and the read
// tracker and the NAR hit cache likewise per path or NAR file held. Cached keys must own their strings.
func TestCachedKeysDoNotPinTheRequest(t *testing.T) {
	ts := newTestServer(t, "", nil, nil)
	p := makePath(t, "held", nixname.CompressionNone)
	ts.push(t, "omnicorp/app", p)
	query := "?" + strings.Repeat("q", 64<<10)
	h := ts.Handler()
	for _, c := range []struct {
		target string
		status int
	}{
		{"/omnicorp/app/" + storeHash("never-pushed") + ".narinfo" + query, http.StatusNotFound},
		{"/" + storeHash("never-pushed-either") + ".narinfo" + query, http.StatusNotFound}, // the union view: the zero flake
		{"/omnicorp/app/" + p.Hash + ".narinfo" + query, http.StatusOK},
		{"/omnicorp/app/nar/" + p.FileName + query, http.StatusOK},
	} {
		r := readRequest(t, c.target)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != c.status {
			t.Fatalf("GET %.80s…: %d, want %d", c.target, w.Code, c.status)
		}
		if k, ok := keysPin(ts.misses.miss, r.RequestURI); ok {
			t.Errorf("the miss cache's key %+v points into the request line (%d bytes)", k, len(r.RequestURI))
		}
		if k, ok := keysPin(ts.hits.nar, r.RequestURI); ok {
			t.Errorf("the NAR hit cache's key %+v points into the request line", k)
		}
		if k, ok := keysPin(ts.reads.recent, r.RequestURI); ok {
			t.Errorf("the read tracker's key %+v points into the request line", k)
		}
		for f, hashes := range ts.reads.pending {
			if within(f.Org, r.RequestURI) || within(f.Name, r.RequestURI) {
				t.Errorf("the read tracker's pending flake %s points into the request line", f)
			}
			for _, hash := range hashes {
				if within(hash, r.RequestURI) {
					t.Errorf("the read tracker's pending hash %s points into the request line", hash)
				}
			}
		}
	}
	if ts.misses.miss.Len() == 0 || ts.hits.nar.Len() == 0 || ts.reads.recent.Len() == 0 {
		t.Fatalf("nothing cached (misses %d, NARs %d, reads %d): this test shows nothing", ts.misses.miss.Len(), ts.hits.nar.Len(), ts.reads.recent.Len())
	}
}
