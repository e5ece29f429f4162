package authz

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flakegate/flakegate/internal/identity"
)

const (
	closureNar = "1b2m2y4m3wkkqbmy6fzf7zbyibnbg2wklw7i1xpy4xx3bbxdapgm.nar.xz"
	otherHash  = "1c6kzph7l0dcbfmjap64f0czdafn3b7x"
	drvHash    = "2c6kzph7l0dcbfmjap64f0czdafn3b7x"
)

func mustScope(t testing.TB, flake string, roots ...string) *identity.Scope {
	t.Helper()
	s, err := identity.NewScope(flake, roots)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// Closure.Allows decides by the object's store hash: narinfo (and every
// kind keyed by a store hash) by the closure's paths, a NAR by its file
// name, a build log by its derivation's hash; nothing else.
func TestClosureAllows(t *testing.T) {
	c := &Closure{Paths: set([]string{testHash}), Nars: set([]string{closureNar}), Derivers: set([]string{drvHash})}
	for _, tc := range []struct {
		path string
		want bool
	}{
		{"/" + testHash + ".narinfo", true},
		{"/omnicorp/app/" + testHash + ".narinfo", true},
		{"/" + otherHash + ".narinfo", false},
		{"/nar/" + closureNar, true},
		{"/omnicorp/app/nar/" + closureNar, true},
		// The same file hash with another compression is another file.
		{"/nar/1b2m2y4m3wkkqbmy6fzf7zbyibnbg2wklw7i1xpy4xx3bbxdapgm.nar.zst", false},
		{"/omnicorp/app/log/" + drvHash + "-app.drv", true},
		{"/omnicorp/app/log/" + testHash + "-app.drv", false}, // a path's hash is not its deriver's
		// Kinds keyed by the store hash (the listing) follow the paths.
		{"/" + testHash + ".ls", true},
		{"/omnicorp/app/" + testHash + ".ls", true},
		{"/" + otherHash + ".ls", false},
		// Kinds keyed otherwise are not covered (fail closed), even when the
		// key names a closure path or deriver.
		{"/omnicorp/app/debuginfo/0123456789abcdef0123456789abcdef01234567", false},
		{"/omnicorp/app/realisations/sha256:" + strings.Repeat("ab", 32) + "!out.doi", false},
		{"/omnicorp/app/build-trace-v2/" + drvHash + "-hello.drv/out.doi", false},
		{"/build-trace-v2/" + testHash + "-hello.drv/out.doi", false},
	} {
		if got := c.Allows(mustRoute(t, "GET", tc.path)); got != tc.want {
			t.Errorf("Allows(%s) = %v, want %v", tc.path, got, tc.want)
		}
	}
	if (*Closure)(nil).Allows(mustRoute(t, "GET", "/"+testHash+".narinfo")) {
		t.Error("a nil closure allows")
	}
}

// The client asks the blob server once per (flake, roots) and TTL, shares
// concurrent lookups, keys by the sorted roots (not their order), and fails
// closed on a bad answer.
func TestClosureClient(t *testing.T) {
	var hits atomic.Int64
	var answer atomic.Value
	answer.Store(`{"paths":["` + testHash + `"],"nars":["` + closureNar + `"],"derivers":[]}`)
	var gotQuery atomic.Value
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		gotQuery.Store(r.URL.Path + "?" + r.URL.RawQuery)
		time.Sleep(20 * time.Millisecond) // let concurrent lookups pile up
		_, _ = w.Write([]byte(answer.Load().(string)))
	}))
	defer srv.Close()
	now := time.Unix(1_700_000_000, 0)
	var mu sync.Mutex
	c := NewClosureClient(srv.URL, ClosureOptions{TTL: time.Minute, Stale: -1})
	c.cache.now = func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	ab := mustScope(t, "omnicorp/app", "/nix/store/"+testHash+"-a", "/nix/store/"+otherHash+"-b")
	ba := mustScope(t, "omnicorp/app", "/nix/store/"+otherHash+"-b", "/nix/store/"+testHash+"-a")

	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			cl, err := c.Closure(context.Background(), ab)
			if err != nil || !cl.Allows(mustRoute(t, "GET", "/"+testHash+".narinfo")) {
				t.Errorf("closure: %v %v", cl, err)
			}
		})
	}
	wg.Wait()
	if _, err := c.Closure(context.Background(), ba); err != nil {
		t.Fatal(err)
	}
	if n := hits.Load(); n != 1 {
		t.Errorf("20 concurrent lookups and one with the roots reordered: %d requests, want 1", n)
	}
	if q := gotQuery.Load().(string); q != "/closure/omnicorp/app?root="+testHash+"&root="+otherHash {
		t.Errorf("asked %s", q)
	}
	// Another flake with the same roots is another closure.
	if _, err := c.Closure(context.Background(), mustScope(t, "omnicorp/other", "/nix/store/"+testHash+"-a", "/nix/store/"+otherHash+"-b")); err != nil {
		t.Fatal(err)
	}
	if n := hits.Load(); n != 2 {
		t.Errorf("another flake: %d requests, want 2", n)
	}
	// After the TTL it is asked again and sees what was pushed since.
	answer.Store(`{"paths":["` + testHash + `","` + otherHash + `"],"nars":[],"derivers":[]}`)
	mu.Lock()
	now = now.Add(time.Minute)
	mu.Unlock()
	cl, err := c.Closure(context.Background(), ab)
	if err != nil || hits.Load() != 3 || !cl.Allows(mustRoute(t, "GET", "/"+otherHash+".narinfo")) {
		t.Errorf("after the TTL: %d requests, err %v", hits.Load(), err)
	}
	// A malformed or partial answer is an error (fail closed), not cached.
	for _, bad := range []string{`{"paths":["x"]}`, `not json`, `{"paths":null,"nars":[],"derivers":[]}`} {
		answer.Store(bad)
		mu.Lock()
		now = now.Add(time.Minute)
		mu.Unlock()
		if _, err := c.Closure(context.Background(), ab); err == nil {
			t.Errorf("answer %s: no error", bad)
		}
	}
}

// Past its TTL a closure is still used, at once, while one background
// lookup refreshes it; past TTL + Stale the caller waits for a fresh one.
func TestClosureClientStaleWhileRevalidate(t *testing.T) {
	var hits atomic.Int64
	var answer atomic.Value
	answer.Store(`{"paths":["` + testHash + `"],"nars":[],"derivers":[]}`)
	release := make(chan struct{}, 10)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if hits.Add(1) > 1 {
			<-release // refreshes wait until the test lets them answer
		}
		_, _ = w.Write([]byte(answer.Load().(string)))
	}))
	defer srv.Close()
	now := time.Unix(1_700_000_000, 0)
	var mu sync.Mutex
	c := NewClosureClient(srv.URL, ClosureOptions{TTL: time.Minute, Stale: time.Hour})
	c.cache.now = func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	scope := mustScope(t, "omnicorp/app", "/nix/store/"+testHash+"-a")
	allows := func(h string) bool {
		t.Helper()
		cl, err := c.Closure(context.Background(), scope)
		if err != nil {
			t.Fatal(err)
		}
		return cl.Allows(mustRoute(t, "GET", "/"+h+".narinfo"))
	}
	if !allows(testHash) || allows(otherHash) {
		t.Fatal("first closure")
	}
	answer.Store(`{"paths":["` + testHash + `","` + otherHash + `"],"nars":[],"derivers":[]}`)
	advance(2 * time.Minute)
	// Stale: answered at once (the refresh is held), from the old closure.
	if allows(otherHash) {
		t.Error("stale closure already has the new path")
	}
	release <- struct{}{}
	deadline := time.Now().Add(5 * time.Second)
	for !allows(otherHash) {
		if time.Now().After(deadline) {
			t.Fatal("the background refresh never landed")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if n := hits.Load(); n != 2 {
		t.Errorf("%d lookups, want 2 (first, one refresh)", n)
	}
	// Past TTL + Stale: the caller waits for the fetch.
	advance(2 * time.Hour)
	release <- struct{}{}
	if !allows(otherHash) || hits.Load() != 3 {
		t.Errorf("after TTL+Stale: %d lookups, want 3", hits.Load())
	}
}
