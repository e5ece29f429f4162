package authz

import (
	"context"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flakegate/flakegate/internal/authz/authztest"
	"github.com/flakegate/flakegate/internal/identity"
	"github.com/flakegate/flakegate/internal/nixname"
	"github.com/flakegate/flakegate/internal/route"
)

const (
	testHash = "0c6kzph7l0dcbfmjap64f0czdafn3b7x"
	testFile = "1w1fff338fvdw53sqgamddn1b2xgds473pv6y13gizdbqjv4i5p3.nar.zst"
)

func mustRoute(t testing.TB, method, path string) route.Request {
	t.Helper()
	r, err := route.Parse(method, path)
	if err != nil {
		t.Fatalf("route %s %s: %v", method, path, err)
	}
	return r
}

func TestOwnersClientAnswers(t *testing.T) {
	tests := []struct {
		name     string
		path     string // the union request
		status   int
		body     string
		wantPath string // what the owners endpoint is asked
		want     []nixname.Flake
		wantErr  string
	}{
		{name: "narinfo two owners", path: "/" + testHash + ".narinfo", status: 200,
			body:     `{"flakes":["omnicorp/app","Evilcorp/Tool"]}`,
			wantPath: "/owners/narinfo/" + testHash,
			want:     []nixname.Flake{{Org: "omnicorp", Name: "app"}, {Org: "evilcorp", Name: "tool"}}},
		{name: "nar by file name", path: "/nar/" + testFile, status: 200,
			body:     `{"flakes":["omnicorp/app"]}`,
			wantPath: "/owners/nar/" + testFile,
			want:     []nixname.Flake{{Org: "omnicorp", Name: "app"}}},
		{name: "no owner", path: "/" + testHash + ".narinfo", status: 200, body: `{"flakes":[]}`,
			wantPath: "/owners/narinfo/" + testHash, want: []nixname.Flake{}},
		{name: "server error", path: "/" + testHash + ".narinfo", status: 500, body: "boom",
			wantPath: "/owners/narinfo/" + testHash, wantErr: "500"},
		{name: "404 is an error, not no owner", path: "/" + testHash + ".narinfo", status: 404, body: "not found",
			wantPath: "/owners/narinfo/" + testHash, wantErr: "404"},
		{name: "not JSON", path: "/" + testHash + ".narinfo", status: 200, body: "<html>",
			wantPath: "/owners/narinfo/" + testHash, wantErr: "decode"},
		{name: "no flakes field", path: "/" + testHash + ".narinfo", status: 200, body: `{"owners":["a/b"]}`,
			wantPath: "/owners/narinfo/" + testHash, wantErr: `no "flakes"`},
		{name: "invalid flake name", path: "/" + testHash + ".narinfo", status: 200, body: `{"flakes":["../etc"]}`,
			wantPath: "/owners/narinfo/" + testHash, wantErr: "flake"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var gotPath atomic.Value
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				gotPath.Store(r.URL.Path)
				w.WriteHeader(tt.status)
				_, _ = w.Write([]byte(tt.body))
			}))
			defer srv.Close()
			c := NewOwnersClient(srv.URL+"/", OwnersOptions{})
			got, err := c.Owners(context.Background(), mustRoute(t, "GET", tt.path))
			if p, _ := gotPath.Load().(string); p != tt.wantPath {
				t.Errorf("asked %q, want %q", p, tt.wantPath)
			}
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("owners %v, want %v", got, tt.want)
			}
		})
	}
}

func TestOwnersClientCache(t *testing.T) {
	var hits atomic.Int64
	var answer atomic.Value
	answer.Store(`{"flakes":[]}`)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		_, _ = w.Write([]byte(answer.Load().(string)))
	}))
	defer srv.Close()

	now := time.Unix(1_700_000_000, 0)
	var mu sync.Mutex
	c := NewOwnersClient(srv.URL, OwnersOptions{TTL: 2 * time.Second})
	c.cache.now = func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	r := mustRoute(t, "GET", "/"+testHash+".narinfo")
	lookup := func() []nixname.Flake {
		t.Helper()
		got, err := c.Owners(context.Background(), r)
		if err != nil {
			t.Fatal(err)
		}
		return got
	}

	steps := []struct {
		name      string
		advance   time.Duration
		answer    string
		wantOwner int
		wantHits  int64
	}{
		{name: "first lookup fetches", wantOwner: 0, wantHits: 1},
		// An empty answer is cached exactly as long as a non-empty one: a
		// shorter life would make absent objects slower to deny than
		// present ones (a timing oracle).
		{name: "empty answer cached", advance: 1500 * time.Millisecond, answer: `{"flakes":["omnicorp/app"]}`, wantOwner: 0, wantHits: 1},
		{name: "empty answer expires after the TTL", advance: 600 * time.Millisecond, wantOwner: 1, wantHits: 2},
		{name: "owners cached", advance: 1500 * time.Millisecond, answer: `{"flakes":[]}`, wantOwner: 1, wantHits: 2},
		{name: "owners expire after the TTL", advance: 600 * time.Millisecond, wantOwner: 0, wantHits: 3},
	}
	for _, s := range steps {
		advance(s.advance)
		if s.answer != "" {
			answer.Store(s.answer)
		}
		if got := lookup(); len(got) != s.wantOwner {
			t.Errorf("%s: %d owners, want %d", s.name, len(got), s.wantOwner)
		}
		if h := hits.Load(); h != s.wantHits {
			t.Errorf("%s: %d fetches, want %d", s.name, h, s.wantHits)
		}
	}
}

func TestOwnersClientErrorsNotCached(t *testing.T) {
	var fail atomic.Bool
	fail.Store(true)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if fail.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte(`{"flakes":["omnicorp/app"]}`))
	}))
	defer srv.Close()
	c := NewOwnersClient(srv.URL, OwnersOptions{})
	r := mustRoute(t, "GET", "/nar/"+testFile)
	if _, err := c.Owners(context.Background(), r); err == nil {
		t.Fatal("want an error while the endpoint fails")
	}
	fail.Store(false)
	got, err := c.Owners(context.Background(), r)
	if err != nil || len(got) != 1 {
		t.Fatalf("after recovery: %v, %v", got, err)
	}
}

func TestOwnersClientTimeout(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(release)
	c := NewOwnersClient(srv.URL, OwnersOptions{Timeout: 50 * time.Millisecond})
	_, err := c.Owners(context.Background(), mustRoute(t, "GET", "/"+testHash+".narinfo"))
	if err == nil || !strings.Contains(err.Error(), "deadline") {
		t.Fatalf("error %v, want a deadline error", err)
	}
}

func TestOwnersClientSharesConcurrentLookups(t *testing.T) {
	var hits atomic.Int64
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		<-release
		_, _ = w.Write([]byte(`{"flakes":["omnicorp/app"]}`))
	}))
	defer srv.Close()
	c := NewOwnersClient(srv.URL, OwnersOptions{TTL: time.Minute})
	r := mustRoute(t, "GET", "/"+testHash+".narinfo")
	const n = 20
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got, err := c.Owners(context.Background(), r)
			if err == nil && len(got) != 1 {
				t.Errorf("owners %v", got)
			}
			errs <- err
		}()
	}
	// Let the lookups pile up on the one in flight, then answer it.
	deadline := time.Now().Add(5 * time.Second)
	for hits.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond)
	close(release)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	// Goroutines that arrived after the first fetch finished hit the cache;
	// none may have started a second fetch.
	if h := hits.Load(); h != 1 {
		t.Errorf("%d fetches for %d concurrent lookups of one object, want 1", h, n)
	}
}

func TestOwnersClientBounded(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte(`{"flakes":["omnicorp/app"]}`))
	}))
	defer srv.Close()
	c := NewOwnersClient(srv.URL, OwnersOptions{MaxEntries: 3})
	hashes := []string{
		"0c6kzph7l0dcbfmjap64f0czdafn3b7x", "1c6kzph7l0dcbfmjap64f0czdafn3b7x", "2c6kzph7l0dcbfmjap64f0czdafn3b7x",
		"3c6kzph7l0dcbfmjap64f0czdafn3b7x", "4c6kzph7l0dcbfmjap64f0czdafn3b7x", "5c6kzph7l0dcbfmjap64f0czdafn3b7x",
	}
	for _, h := range hashes {
		if _, err := c.Owners(context.Background(), mustRoute(t, "GET", "/"+h+".narinfo")); err != nil {
			t.Fatal(err)
		}
		n := c.cache.len()
		if n > 3 {
			t.Fatalf("cache holds %d entries, bound is 3", n)
		}
	}
}

// A union read right after the path was pushed into a second flake is
// answered from the cached owners list until it expires (TTL): the checker
// never makes an uncached lookup on a deny, since only denials of objects
// that exist would pay for it (issue 12's timing oracle). Then the new
// owner is evaluated and listed as readable.
func TestUnionReadSeesNewOwnerAfterTTL(t *testing.T) {
	key := "/owners/narinfo/" + testHash
	owners := authztest.NewFakeOwners(t, map[string][]string{key: {"omnicorp/app"}})
	client := NewOwnersClient(owners.URL, OwnersOptions{TTL: 2 * time.Second})
	now := time.Unix(1_700_000_000, 0)
	client.cache.now = func() time.Time { return now }
	acmeUser := &identity.Subject{Authenticated: true, Provider: "oidc", Kind: "user", Org: "acme", User: "carol", Via: "idp"}
	c := &Checker{
		Verifier: tokenVerifier{token: secretToken, subject: acmeUser},
		Policy:   newTestEngine(t),
		Owners:   client,
		Logger:   discardLogger(),
	}
	req := ParseCheckRequest(authztest.CheckRequest("GET", "/"+testHash+".narinfo", "Bearer "+secretToken))

	if res := c.Decide(context.Background(), req); res.Status != http.StatusNotFound {
		t.Fatalf("before the acme push: status %d, want 404", res.Status)
	}
	owners.Answers[key] = []string{"acme/tools", "omnicorp/app"} // pushed into acme/tools
	if res := c.Decide(context.Background(), req); res.Status != http.StatusNotFound {
		t.Fatalf("within the TTL: status %d, want 404 from the cached owners", res.Status)
	}
	now = now.Add(2100 * time.Millisecond)
	res := c.Decide(context.Background(), req)
	acme := nixname.Flake{Org: "acme", Name: "tools"}
	if res.Status != http.StatusOK || res.UnionOwner != acme || len(res.Readable) != 1 || res.Readable[0] != acme {
		t.Fatalf("after the TTL: status %d via %v readable %v (%s), want 200 via acme/tools only", res.Status, res.UnionOwner, res.Readable, res.Reason)
	}
}
