package push_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	blobfs "github.com/flakegate/flakegate/internal/blob/fs"
	"github.com/flakegate/flakegate/internal/cacheserver"
	"github.com/flakegate/flakegate/internal/index/sqlite"
	"github.com/flakegate/flakegate/internal/nixcache"
	"github.com/flakegate/flakegate/internal/nixtest"
	"github.com/flakegate/flakegate/internal/push"
)

// cache is a real cache server (fs blobs, sqlite index, its own key) with
// no authorization in front: what push uploads is verified as in
// production; access control is the gate's and tested elsewhere.
type cache struct {
	url       string
	publicKey string
	srv       *cacheserver.Server
}

func newCache(t *testing.T, wrap func(http.Handler) http.Handler) *cache {
	t.Helper()
	dir := t.TempDir()
	secret, public, err := nixcache.GenerateKey("push.test-1")
	if err != nil {
		t.Fatal(err)
	}
	k, err := nixcache.ParseSecretKey(secret)
	if err != nil {
		t.Fatal(err)
	}
	keys, err := nixcache.NewKeySet(k)
	if err != nil {
		t.Fatal(err)
	}
	bs, err := blobfs.Open(filepath.Join(dir, "blobs"))
	if err != nil {
		t.Fatal(err)
	}
	idx, err := sqlite.Open(context.Background(), filepath.Join(dir, "index.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { idx.Close() })
	srv, err := cacheserver.New(cacheserver.Config{
		Blob: bs, Index: idx, Keys: keys,
		MaxNarSize: 1 << 30, MaxLogSize: 1 << 20, MaxNarInfoSize: 1 << 20, Priority: 40,
		UploadIdleTimeout: time.Minute, MaxExpansion: nixcache.DefaultMaxExpansion,
		MaxUploadsPerSubject: 32, CacheEntries: 1 << 12,
		ReadTouchInterval: time.Hour, ReadFlushInterval: 30 * time.Second, GenerationPoll: time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	var h http.Handler = srv.Handler()
	if wrap != nil {
		h = wrap(h)
	}
	hs := httptest.NewServer(h)
	t.Cleanup(hs.Close)
	return &cache{url: hs.URL, publicKey: public, srv: srv}
}

func config(c *cache, st *nixtest.Store, flake string, paths ...string) push.Config {
	cfg := push.DefaultConfig()
	cfg.Cache, cfg.Flake, cfg.Store, cfg.Paths = c.url, flake, st.URL(), paths
	cfg.Retries = 3
	return cfg
}

// TestPushThenPull pushes a closure with parallel uploads and pulls it
// back with Nix, which verifies the cache's signatures and the NAR hashes;
// a second push finds everything cached and uploads nothing.
func TestPushThenPull(t *testing.T) {
	st := nixtest.NewStore(t)
	top := st.MakeClosure(12, "push")
	c := newCache(t, nil)

	res, err := push.Run(context.Background(), config(c, st, "omnicorp/app", top), push.Env{})
	if err != nil {
		t.Fatal(err)
	}
	if res.Err() != nil || res.Total != 13 || res.Pushed != 13 || res.Skipped != 0 || res.Bytes == 0 || len(res.Uploaded) != 13 {
		t.Fatalf("first push: %+v (%v)", res, res.Err())
	}

	dst := nixtest.NewStore(t)
	if err := dst.CopyFrom(nixtest.Options{TrustedKeys: []string{c.publicKey}}, c.url+"/omnicorp/app", top); err != nil {
		t.Fatalf("pull what push pushed: %v", err)
	}
	if got, want := nixtest.Comparable(dst.Closure(top)), nixtest.Comparable(st.Closure(top)); !slices.Equal(got, want) {
		t.Fatalf("pulled closure differs:\n got %v\nwant %v", got, want)
	}
	if err := dst.Verify([]string{c.publicKey}, top); err != nil {
		t.Fatal(err)
	}

	res, err = push.Run(context.Background(), config(c, st, "omnicorp/app", top), push.Env{})
	if err != nil {
		t.Fatal(err)
	}
	if res.Err() != nil || res.Skipped != 13 || res.Pushed != 0 || res.Bytes != 0 || len(res.Uploaded) != 0 {
		t.Fatalf("second push must skip everything: %+v", res)
	}
}

// TestPushMatchesNixCopy: the narinfo the cache serves after a push says
// exactly what it says after `nix copy` of the same path (the compressed
// file differs: another zstd encoder).
func TestPushMatchesNixCopy(t *testing.T) {
	st := nixtest.NewStore(t)
	top := st.MakeClosure(4, "same")
	c := newCache(t, nil)
	if _, err := push.Run(context.Background(), config(c, st, "omnicorp/pushed", top), push.Env{}); err != nil {
		t.Fatal(err)
	}
	if err := st.CopyTo(nixtest.Options{}, c.url+"/omnicorp/copied?compression=zstd", top); err != nil {
		t.Fatal(err)
	}
	for _, pi := range st.Closure(top) {
		a := fields(t, c.url+"/omnicorp/pushed/"+nixtest.HashPart(pi.Path)+".narinfo")
		b := fields(t, c.url+"/omnicorp/copied/"+nixtest.HashPart(pi.Path)+".narinfo")
		if !slices.Equal(a, b) {
			t.Fatalf("%s: push's narinfo\n%v\ndiffers from nix copy's\n%v", pi.Path, a, b)
		}
		if len(a) < 6 {
			t.Fatalf("%s: narinfo too short: %v", pi.Path, a)
		}
	}
}

// fields are a served narinfo's lines except those naming the compressed
// file, sorted.
func fields(t *testing.T, url string) []string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d", url, resp.StatusCode)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, l := range strings.Split(string(body), "\n") {
		k, _, _ := strings.Cut(l, ":")
		switch k {
		case "URL", "FileHash", "FileSize", "":
			continue
		}
		out = append(out, l)
	}
	slices.Sort(out)
	return out
}

// TestPushRetriesTransientFailures: every first attempt of every request
// fails with 503 or a dropped connection; the push still completes.
func TestPushRetriesTransientFailures(t *testing.T) {
	st := nixtest.NewStore(t)
	top := st.MakeClosure(6, "flaky")
	var mu sync.Mutex
	seen := map[string]bool{}
	var failures atomic.Int64
	c := newCache(t, func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			key := r.Method + " " + r.URL.Path
			mu.Lock()
			first := !seen[key]
			seen[key] = true
			mu.Unlock()
			if first {
				failures.Add(1)
				if strings.HasSuffix(r.URL.Path, ".narinfo") {
					http.Error(w, "try later", http.StatusServiceUnavailable)
					return
				}
				panic(http.ErrAbortHandler) // connection dropped mid-request
			}
			h.ServeHTTP(w, r)
		})
	})
	res, err := push.Run(context.Background(), config(c, st, "omnicorp/app", top), push.Env{})
	if err != nil {
		t.Fatal(err)
	}
	if res.Err() != nil || res.Pushed != 7 {
		t.Fatalf("push through transient failures: %+v %v", res, res.Err())
	}
	if failures.Load() < 14 {
		t.Fatalf("only %d failures injected", failures.Load())
	}
}

// TestPushPermanentFailure: a refused NAR upload (403) is not retried and
// fails its path and every path that depends on it, and nothing else.
func TestPushPermanentFailure(t *testing.T) {
	st := nixtest.NewStore(t)
	top := st.MakeClosure(6, "refused")
	infos := st.Closure(top)
	// p3 of the closure: p4, p5 (through p(i-1)) and top depend on it.
	var victim string
	for _, pi := range infos {
		if strings.HasSuffix(pi.Path, "-refused-p3") {
			victim = nixtest.HashPart(pi.Path)
		}
	}
	var refused atomic.Int64
	c := newCache(t, func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodPut && strings.HasSuffix(r.URL.Path, "/"+victim+".narinfo") {
				refused.Add(1)
				http.Error(w, "forbidden", http.StatusForbidden)
				return
			}
			h.ServeHTTP(w, r)
		})
	})
	res, err := push.Run(context.Background(), config(c, st, "omnicorp/app", top), push.Env{})
	if err != nil {
		t.Fatal(err)
	}
	if refused.Load() != 1 {
		t.Fatalf("a 403 was retried: %d attempts", refused.Load())
	}
	var failed []string
	for _, f := range res.Failed {
		failed = append(failed, f.Path[strings.LastIndexByte(f.Path, '-')+1:])
	}
	slices.Sort(failed)
	if want := []string{"p3", "p4", "p5", "top"}; !slices.Equal(failed, want) {
		t.Fatalf("failed %v, want %v (%v)", failed, want, res.Err())
	}
	if res.Pushed != 3 {
		t.Fatalf("pushed %d, want 3 (p0, p1, p2): %+v", res.Pushed, res)
	}
}
