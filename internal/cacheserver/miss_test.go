package cacheserver

import (
	"context"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flakegate/flakegate/internal/index"
	"github.com/flakegate/flakegate/internal/nixname"
	"github.com/flakegate/flakegate/internal/route"
)

// missServer is a test server whose index counts lookups, with the miss
// cache's clock under the test's control.
func missServer(t *testing.T, dir string, mod func(*Config)) (*testServer, *countingIndex, *fakeClock) {
	t.Helper()
	var ci *countingIndex
	ts := newTestServer(t, dir, nil, func(c *Config) {
		ci = &countingIndex{Index: c.Index}
		c.Index = ci
		if mod != nil {
			mod(c)
		}
	})
	clk := &fakeClock{t: time.Unix(1_700_000_000, 0)}
	ts.misses.now = clk.now
	return ts, ci, clk
}

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// lookups is the narinfo lookups that reached the index so far.
func (c *countingIndex) lookups() int64 { return c.getPath.Load() + c.pathsOf.Load() }

// A narinfo found absent is answered from memory the next times (flake
// URL, ungated union URL, gated union URL), byte for byte as the first
// answer; with MissTTL 0 every miss reads the index.
func TestMissesAnsweredFromMemory(t *testing.T) {
	absent := storeHash("never-pushed")
	readable := http.Header{route.ReadableHeader: {"omnicorp/app omnicorp/lib"}}
	for _, tc := range []struct {
		name   string
		ttl    time.Duration
		repeat int64 // index lookups for each GET after the first
	}{{"on", 10 * time.Second, 0}, {"off", 0, 1}} {
		t.Run(tc.name, func(t *testing.T) {
			ts, ci, _ := missServer(t, "", func(c *Config) { c.MissTTL = tc.ttl })
			for _, u := range []struct {
				url    string
				header http.Header
			}{
				{ts.URL + "/omnicorp/app/" + absent + ".narinfo", nil},
				{ts.URL + "/" + absent + ".narinfo", nil},
				{ts.URL + "/" + absent + ".narinfo", readable},
			} {
				before := ci.lookups()
				first := exchange(t, "GET", u.url, nil, u.header)
				if first.Status != http.StatusNotFound || first.Body != route.BodyNotFound {
					t.Fatalf("GET %s: %+v", u.url, first)
				}
				if n := ci.lookups() - before; n != 1 {
					t.Fatalf("first GET %s: %d index lookups, want 1", u.url, n)
				}
				for _, method := range []string{"GET", "HEAD", "GET"} {
					before := ci.lookups()
					a := exchange(t, method, u.url, nil, u.header)
					if method == "GET" && a != first {
						t.Errorf("repeated miss %s differs:\n%+v\nfirst:\n%+v", u.url, a, first)
					}
					if a.Status != http.StatusNotFound {
						t.Errorf("%s %s: %d", method, u.url, a.Status)
					}
					if n := ci.lookups() - before; n != tc.repeat {
						t.Errorf("repeated %s %s: %d index lookups, want %d", method, u.url, n, tc.repeat)
					}
				}
			}
		})
	}
}

// A path pushed through this server is served at once after a cached
// miss, through every URL that cached the miss.
func TestPushedPathServedAfterCachedMiss(t *testing.T) {
	ts, _, _ := missServer(t, "", nil)
	p := makePath(t, "late", nixname.CompressionZstd)
	urls := []struct {
		url    string
		header http.Header
	}{
		{ts.URL + "/omnicorp/app/" + p.Hash + ".narinfo", nil},
		{ts.URL + "/" + p.Hash + ".narinfo", nil},
		{ts.URL + "/" + p.Hash + ".narinfo", http.Header{route.ReadableHeader: {"omnicorp/app"}}},
	}
	for _, u := range urls {
		for range 2 {
			if a := exchange(t, "GET", u.url, nil, u.header); a.Status != http.StatusNotFound {
				t.Fatalf("before the push, GET %s: %d", u.url, a.Status)
			}
		}
	}
	ts.push(t, "omnicorp/app", p)
	for _, u := range urls {
		if a := exchange(t, "GET", u.url, nil, u.header); a.Status != http.StatusOK {
			t.Errorf("after the push, GET %s: %d %s", u.url, a.Status, a.Body)
		}
	}
}

// stallingIndex holds the first lookup of one hash after it read the
// index (found nothing) until released: a GET in flight while the path is
// pushed.
type stallingIndex struct {
	index.Index
	hash             string
	stalled          atomic.Bool
	looked, released chan struct{}
}

func (x *stallingIndex) GetPath(ctx context.Context, f nixname.Flake, hash string) (index.Path, error) {
	p, err := x.Index.GetPath(ctx, f, hash)
	// Only the first lookup stalls (sync.Once would make the push's own
	// lookups wait for it too).
	if hash == x.hash && x.stalled.CompareAndSwap(false, true) {
		close(x.looked)
		<-x.released
	}
	return p, err
}

// A GET that read "absent" before a push and answers after it must not
// leave that stale "absent" in the cache: the next GET serves the path.
func TestMissInFlightDuringPushIsNotCached(t *testing.T) {
	p := makePath(t, "racing", nixname.CompressionZstd)
	si := &stallingIndex{hash: p.Hash, looked: make(chan struct{}), released: make(chan struct{})}
	ts := newTestServer(t, "", nil, func(c *Config) {
		si.Index = c.Index
		c.Index = si
	})
	url := ts.URL + "/omnicorp/app/" + p.Hash + ".narinfo"
	first := make(chan int)
	go func() {
		st, _, _, err := send("GET", url, nil)
		if err != nil {
			t.Error(err)
		}
		first <- st
	}()
	<-si.looked
	ts.push(t, "omnicorp/app", p)
	close(si.released)
	if st := <-first; st != http.StatusNotFound {
		t.Fatalf("the GET in flight: %d, want 404 (it read the index before the push)", st)
	}
	if st, body, _ := do(t, "GET", url, nil); st != http.StatusOK {
		t.Fatalf("GET after the push: %d %s: a stale miss was cached", st, body)
	}
}

// Isolation: a miss in flake A for a path only flake B holds is the same
// answer, through the same work (one index lookup the first time, none
// after), as a miss for a path nobody holds; and A's cached miss does not
// hide B's path from B's readers.
func TestMissIndependentOfOtherFlakes(t *testing.T) {
	ts, ci, _ := missServer(t, "", nil)
	secret := makePath(t, "secret", nixname.CompressionXZ)
	ts.push(t, "othercorp/secret", secret)
	nobody := storeHash("held-by-nobody")
	type url struct {
		hash   string
		flake  string // "" union view
		header http.Header
	}
	ask := func(u url) (answer, int64) {
		t.Helper()
		path := "/" + u.hash + ".narinfo"
		if u.flake != "" {
			path = "/" + u.flake + path
		}
		before := ci.lookups()
		a := exchange(t, "GET", ts.URL+path, nil, u.header)
		return a, ci.lookups() - before
	}
	readA := http.Header{route.ReadableHeader: {"omnicorp/app"}}
	for round := range 3 {
		for _, shape := range []struct {
			flake  string
			header http.Header
		}{{"omnicorp/app", nil}, {"", readA}} {
			held, nHeld := ask(url{secret.Hash, shape.flake, shape.header})
			none, nNone := ask(url{nobody, shape.flake, shape.header})
			if held.Status != http.StatusNotFound || held != none {
				t.Errorf("round %d %q: held elsewhere %+v, held by nobody %+v", round, shape.flake, held, none)
			}
			if nHeld != nNone {
				t.Errorf("round %d %q: %d index lookups for a path another flake holds, %d for one nobody holds", round, shape.flake, nHeld, nNone)
			}
		}
	}
	// B's readers still get B's path (A's misses are A's).
	if a := exchange(t, "GET", ts.URL+"/othercorp/secret/"+secret.Hash+".narinfo", nil, nil); a.Status != http.StatusOK {
		t.Errorf("the holder's own URL after others' misses: %d", a.Status)
	}
	both := http.Header{route.ReadableHeader: {"omnicorp/app othercorp/secret"}}
	if a := exchange(t, "GET", ts.URL+"/"+secret.Hash+".narinfo", nil, both); a.Status != http.StatusOK {
		t.Errorf("union view of a reader of both after A's cached miss: %d", a.Status)
	}
}

// Two servers sharing one index: a path pushed through the other server
// is seen here once MissTTL has passed since the miss was cached (the
// documented bound), not later.
func TestMissSeenAcrossServersAfterTTL(t *testing.T) {
	dir := t.TempDir()
	ttl := 5 * time.Second
	a, _, clk := missServer(t, dir, func(c *Config) { c.MissTTL = ttl })
	b := newTestServer(t, dir, nil, nil)
	p := makePath(t, "elsewhere", nixname.CompressionZstd)
	url := a.URL + "/omnicorp/app/" + p.Hash + ".narinfo"
	if st, _, _ := do(t, "GET", url, nil); st != http.StatusNotFound {
		t.Fatalf("before: %d", st)
	}
	b.push(t, "omnicorp/app", p)
	if st, _, _ := do(t, "GET", b.URL+"/omnicorp/app/"+p.Hash+".narinfo", nil); st != http.StatusOK {
		t.Fatalf("the pushing server: %d", st)
	}
	clk.advance(ttl - time.Millisecond)
	if st, _, _ := do(t, "GET", url, nil); st != http.StatusNotFound {
		// Not a promise, but it shows the miss was cached at all.
		t.Fatalf("within the TTL: %d, want the cached 404", st)
	}
	clk.advance(time.Millisecond)
	if st, body, _ := do(t, "GET", url, nil); st != http.StatusOK {
		t.Fatalf("once MissTTL passed: %d %s", st, body)
	}
}

// The miss cache is bounded by CacheEntries whatever the number of
// distinct misses.
func TestMissCacheBounded(t *testing.T) {
	const n = 4 * cacheShards
	c := newMissCache(n, time.Minute)
	f := nixname.Flake{Org: "omnicorp", Name: "app"}
	for i := range 100 * n {
		c.add(f, storeHash(strconv.Itoa(i)), c.seq())
	}
	if got := c.miss.Len(); got > n || got < n/2 {
		t.Fatalf("%d entries after %d misses, want at most %d (and most shards full)", got, 100*n, n)
	}
}

// Two servers sharing one index: a path pushed through the other server
// and then pushed again through this one (Nix re-uploads what this server
// said it lacks: answered 200, already recorded) is served here at once,
// not after MissTTL.
func TestRepushOfPathRecordedElsewhereForgetsMiss(t *testing.T) {
	dir := t.TempDir()
	a, _, _ := missServer(t, dir, nil)
	b := newTestServer(t, dir, nil, nil)
	p := makePath(t, "both", nixname.CompressionZstd)
	url := a.URL + "/omnicorp/app/" + p.Hash + ".narinfo"
	if st, _, _ := do(t, "GET", url, nil); st != http.StatusNotFound {
		t.Fatalf("before: %d", st)
	}
	b.push(t, "omnicorp/app", p)
	a.push(t, "omnicorp/app", p)
	if st, body, _ := do(t, "GET", url, nil); st != http.StatusOK {
		t.Fatalf("after the re-push through this server: %d %s", st, body)
	}
}

// The request series are looked up once per kind, method and status and
// then reused; what the counters say is unchanged, and clients sending
// many methods do not grow the known set past its bound.
func TestRequestSeriesCached(t *testing.T) {
	ts := newTestServer(t, "", nil, nil)
	absent := ts.URL + "/omnicorp/app/" + storeHash("nobody") + ".narinfo"
	for range 3 {
		do(t, "GET", absent, nil)
	}
	for i := range maxKnownSeries + 10 {
		do(t, "M"+strconv.Itoa(i), absent, nil)
	}
	if n := len(ts.metrics.known); n > maxKnownSeries {
		t.Fatalf("%d known series, bound %d", n, maxKnownSeries)
	}
	_, body, _ := do(t, "GET", ts.InternalURL+"/metrics", nil)
	want := `flakegate_blobserver_requests_total{code="404",kind="narinfo",method="GET"} 3`
	if !strings.Contains(body, want) {
		t.Fatalf("metrics lack %q", want)
	}
	// Client-chosen methods are counted, all as one series (methodLabel).
	if strings.Contains(body, `method="M`) {
		t.Fatal("a client-chosen method became a label value")
	}
	if !regexp.MustCompile(`flakegate_blobserver_requests_total\{code="\d+",kind="none",method="other"\} ` + strconv.Itoa(maxKnownSeries+10) + `\n`).MatchString(body) {
		t.Fatalf("client-chosen methods not counted as method=\"other\":\n%s", body)
	}
}
