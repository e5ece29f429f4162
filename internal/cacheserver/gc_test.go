package cacheserver

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/flakegate/flakegate/internal/gc"
	"github.com/flakegate/flakegate/internal/index"
	"github.com/flakegate/flakegate/internal/nixname"
	"github.com/flakegate/flakegate/internal/route"
)

var omniApp = nixname.Flake{Org: "omnicorp", Name: "app"}

func lastUsed(t *testing.T, ts *testServer, flake nixname.Flake, hash string) time.Time {
	t.Helper()
	var at time.Time
	err := ts.idx.(index.Collectable).ScanPaths(context.Background(), flake, func(u index.PathUse) error {
		if u.Hash == hash {
			at = u.LastUsed
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return at
}

// Reads count as uses for retention, recorded at most once per interval
// per flake path and written in batches: never a write per GET.
func TestReadsRecordedCoarselyInBatches(t *testing.T) {
	ts := newTestServer(t, "", nil, nil)
	p := makePath(t, "hello", nixname.CompressionXZ)
	ts.push(t, "omnicorp/app", p)
	pushed := lastUsed(t, ts, omniApp, p.Hash)
	clock := time.Now().Add(10 * 24 * time.Hour)
	ts.reads.now = func() time.Time { return clock }
	for range 5 {
		if st, _, _ := do(t, "GET", ts.URL+"/omnicorp/app/"+p.Hash+".narinfo", nil); st != 200 {
			t.Fatalf("GET narinfo: %d", st)
		}
		do(t, "GET", ts.URL+"/"+p.Hash+".narinfo", nil) // the union view counts too
	}
	if got := lastUsed(t, ts, omniApp, p.Hash); !got.Equal(pushed) {
		t.Fatalf("a GET wrote to the index (last use %v, pushed %v): reads must be batched", got, pushed)
	}
	if ts.reads.n != 1 {
		t.Fatalf("%d reads pending after 10 GETs of one path, want 1", ts.reads.n)
	}
	ts.flushReads(context.Background())
	if got := lastUsed(t, ts, omniApp, p.Hash); !got.Equal(clock) {
		t.Fatalf("after the flush the path was last used %v, want the read's time %v", got, clock)
	}
	// Within the interval another read is not recorded again; after it, it is.
	do(t, "GET", ts.URL+"/omnicorp/app/"+p.Hash+".narinfo", nil)
	if ts.reads.n != 0 {
		t.Fatalf("a read within the interval was recorded again")
	}
	clock = clock.Add(2 * time.Hour)
	do(t, "GET", ts.URL+"/omnicorp/app/"+p.Hash+".narinfo", nil)
	// An absent path is not recorded.
	do(t, "GET", ts.URL+"/omnicorp/app/"+storeHash("absent")+".narinfo", nil)
	if ts.reads.n != 1 {
		t.Fatalf("%d reads pending, want 1 (the read after the interval)", ts.reads.n)
	}
}

// What a collection removes is a 404 through a running server within
// seconds, lookup caches included; nothing is served half (a narinfo
// whose NAR is gone).
func TestCollectedIsNotFoundThroughRunningServer(t *testing.T) {
	ts := newTestServer(t, "", nil, func(c *Config) { c.GenerationPoll = 20 * time.Millisecond })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { ts.Maintain(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	dep := makePath(t, "dep", nixname.CompressionXZ)
	app := makePath(t, "app", nixname.CompressionZstd, dep)
	ts.push(t, "omnicorp/app", dep)
	ts.push(t, "omnicorp/app", app)
	urls := []string{
		ts.URL + "/omnicorp/app/" + app.Hash + ".narinfo", ts.URL + "/omnicorp/app/nar/" + app.FileName,
		ts.URL + "/omnicorp/app/" + dep.Hash + ".narinfo", ts.URL + "/nar/" + dep.FileName,
		ts.URL + "/" + app.Hash + ".narinfo",
	}
	for _, u := range urls { // now in the lookup caches
		if st, _, _ := do(t, "GET", u, nil); st != 200 {
			t.Fatalf("GET %s: %d", u, st)
		}
	}
	col, err := gc.New(gc.Config{Index: ts.idx, Blob: ts.blob, Logger: ts.log, InvalidateDelay: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ret := gc.DefaultRetention()
	ret.Grace = 0
	rep, err := col.Collect(context.Background(), gc.Options{Retention: ret, OverrideKeepFor: true, OlderThan: 0})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Paths() != 2 || rep.NarsDeleted != 2 {
		t.Fatalf("collection removed %d paths, %d NARs; want 2, 2", rep.Paths(), rep.NarsDeleted)
	}
	for _, u := range urls {
		if st, body, _ := do(t, "GET", u, nil); st != http.StatusNotFound || strings.Contains(body, "internal") {
			t.Errorf("GET %s after the collection: %d %q, want 404", u, st, body)
		}
	}
	if n := ts.countBlobs(t); n != 0 {
		t.Errorf("%d NAR files left on disk", n)
	}
	// The flake can push the same paths again.
	ts.push(t, "omnicorp/app", dep)
	ts.push(t, "omnicorp/app", app)
	if st, _, _ := do(t, "GET", urls[0], nil); st != 200 {
		t.Errorf("re-pushed path: %d", st)
	}
}

// A NAR upload while a collection deletes that file is refused with 503
// (Nix retries) and records nothing; once the collection is done it is
// stored anew.
func TestUploadOfNarBeingCollected(t *testing.T) {
	ts := newTestServer(t, "", nil, nil)
	p := makePath(t, "doomed", nixname.CompressionXZ)
	if st, body, _ := do(t, "PUT", ts.URL+"/omnicorp/app/nar/"+p.FileName, p.File); st != 201 {
		t.Fatalf("PUT nar: %d %s", st, body)
	}
	c := ts.idx.(index.Collectable)
	ctx := context.Background()
	future := time.Now().Add(time.Hour)
	if _, err := c.ReleaseNars(ctx, omniApp, future); err != nil {
		t.Fatal(err)
	}
	if d, err := c.DoomNars(ctx, future); err != nil || len(d) != 1 {
		t.Fatalf("DoomNars = %v, %v", d, err)
	}
	st, body, h := do(t, "PUT", ts.URL+"/omnicorp/app/nar/"+p.FileName, p.File)
	if st != http.StatusServiceUnavailable || h.Get("Retry-After") == "" || !strings.Contains(body, "garbage collection") {
		t.Fatalf("PUT of a NAR being collected: %d %q %v, want 503 with Retry-After", st, body, h)
	}
	if o, _ := ts.idx.Owners(ctx, nixname.KindNar, p.FileName); len(o) != 0 {
		t.Fatalf("a refused upload recorded an owner: %v", o)
	}
	if err := ts.blob.Delete(ctx, "nar/"+p.FileName); err != nil {
		t.Fatal(err)
	}
	if err := c.ForgetNars(ctx, []string{p.FileName}); err != nil {
		t.Fatal(err)
	}
	ts.push(t, "omnicorp/app", p)
	if st, _, _ := do(t, "GET", ts.URL+"/omnicorp/app/nar/"+p.FileName, nil); st != 200 {
		t.Fatalf("NAR pushed after the collection: %d", st)
	}
}

// A NAR the index lists whose blob is gone (collected after a cached
// lookup) is a 404, not a 500.
func TestListedNarWithoutBlobIsNotFound(t *testing.T) {
	ts := newTestServer(t, "", nil, nil)
	p := makePath(t, "gone", nixname.CompressionXZ)
	ts.push(t, "omnicorp/app", p)
	u := ts.URL + "/omnicorp/app/nar/" + p.FileName
	if st, _, _ := do(t, "GET", u, nil); st != 200 {
		t.Fatalf("GET: %d", st)
	}
	if err := ts.blob.Delete(context.Background(), "nar/"+p.FileName); err != nil {
		t.Fatal(err)
	}
	if st, body, _ := do(t, "GET", u, nil); st != http.StatusNotFound || body != "not found\n" && !strings.HasPrefix(body, "not found") {
		t.Fatalf("GET of a collected blob: %d %q, want 404", st, body)
	}
}

func TestPins(t *testing.T) {
	ts := newTestServer(t, "", nil, nil)
	dep := makePath(t, "pin-dep", nixname.CompressionXZ)
	top := makePath(t, "pin-top", nixname.CompressionXZ, dep)
	other := makePath(t, "other-only", nixname.CompressionXZ)
	ts.push(t, "omnicorp/app", dep)
	ts.push(t, "omnicorp/app", top)
	ts.push(t, "omnicorp/other", other)
	base := ts.URL + "/omnicorp/app/_pins"
	st, body, h := do(t, "PUT", base+"/release", []byte(top.StorePath()+"\n"))
	if st != 200 || h.Get("Content-Type") != "application/json" || !strings.Contains(body, `"store_path":"`+top.StorePath()+`"`) {
		t.Fatalf("PUT pin: %d %s", st, body)
	}
	// By base name too; a second name for the same path.
	if st, body, _ := do(t, "PUT", base+"/deployed", []byte(top.Base)); st != 200 {
		t.Fatalf("PUT pin by base name: %d %s", st, body)
	}
	st, body, _ = do(t, "GET", base, nil)
	if st != 200 || strings.Count(body, top.StorePath()) != 2 || !strings.Contains(body, `"name":"deployed"`) {
		t.Fatalf("GET pins: %d %s", st, body)
	}
	// Another flake's path, an absent one: the same 404 (no existence leak).
	_, absentBody, _ := do(t, "PUT", base+"/x", []byte("/nix/store/"+storeHash("absent")+"-absent"))
	st, otherBody, _ := do(t, "PUT", base+"/x", []byte(other.StorePath()))
	if st != 404 || strings.ReplaceAll(otherBody, other.Hash, "H") != strings.ReplaceAll(absentBody, storeHash("absent"), "H") {
		t.Fatalf("pinning another flake's path: %d %q; absent path: %q", st, otherBody, absentBody)
	}
	for _, bad := range []string{"", "hello", "/nix/store/" + top.Hash, "/etc/" + top.Base, "/nix/store/" + top.Base + "/bin"} {
		if st, body, _ := do(t, "PUT", base+"/bad", []byte(bad)); st != 400 {
			t.Errorf("pin body %q: %d %s, want 400", bad, st, body)
		}
	}
	if st, _, _ := do(t, "PUT", base+"/big", make([]byte, maxPinBody+1)); st != 400 {
		t.Errorf("oversized pin body: %d, want 400", st)
	}
	// No pins: the 404 of an absent object (as a denied read of a
	// restricted flake answers).
	if st, body, _ := do(t, "GET", ts.URL+"/omnicorp/other/_pins", nil); st != 404 || body != "not found\n" {
		t.Errorf("other flake's pins: %d %s, want 404", st, body)
	}
	if u := lastUsed(t, ts, omniApp, top.Hash); time.Since(u) > time.Minute {
		t.Errorf("pinning did not mark the path used (%v)", u)
	}
	if st, _, _ := do(t, "DELETE", base+"/release", nil); st != 200 {
		t.Fatalf("DELETE pin: %d", st)
	}
	if st, _, _ := do(t, "DELETE", base+"/release", nil); st != 404 {
		t.Fatalf("DELETE of an absent pin: %d, want 404", st)
	}
	if st, body, _ := do(t, "GET", base, nil); st != 200 || strings.Contains(body, `"release"`) {
		t.Fatalf("GET pins after unpinning: %d %s", st, body)
	}
}

// A build log a collection is deleting is a 404 at once, and an upload of
// it meanwhile is a 503 (Retry-After) that changes nothing; once the
// collection forgot it, an upload stores it anew.
func TestLogBeingCollected(t *testing.T) {
	ts := newTestServer(t, "", nil, nil)
	c := ts.idx.(index.Collectable)
	flake := nixname.Flake{Org: "omnicorp", Name: "a"}
	drv := storeHash("drv") + "-hello.drv"
	url := ts.URL + "/omnicorp/a/log/" + drv
	if st, body, _ := do(t, "PUT", url, []byte("first\n")); st != 201 {
		t.Fatalf("PUT log: %d %s", st, body)
	}
	doomed, err := c.DoomLogs(context.Background(), flake, time.Now().Add(time.Hour))
	if err != nil || len(doomed) != 1 {
		t.Fatalf("DoomLogs = %v, %v", doomed, err)
	}
	for _, u := range []string{url, ts.URL + "/log/" + drv} {
		if st, _, _ := do(t, "GET", u, nil); st != 404 {
			t.Errorf("GET %s of a log being deleted: %d, want 404", u, st)
		}
	}
	st, body, h := do(t, "PUT", url, []byte("second\n"))
	if st != http.StatusServiceUnavailable || h.Get("Retry-After") == "" || !strings.Contains(body, "garbage collection") {
		t.Fatalf("PUT of a log being deleted: %d %v %q; want 503 with Retry-After", st, h, body)
	}
	if b, err := ts.blob.Open(context.Background(), doomed[0].BlobKey); err != nil {
		t.Fatalf("the refused upload touched the blob: %v", err)
	} else {
		got := make([]byte, 16)
		n, _ := b.Read(got)
		b.Close()
		if string(got[:n]) != "first\n" {
			t.Errorf("the refused upload replaced the blob: %q", got[:n])
		}
	}
	if err := c.ForgetLogs(context.Background(), flake, []string{drv}); err != nil {
		t.Fatal(err)
	}
	if st, body, _ := do(t, "PUT", url, []byte("third\n")); st != 201 {
		t.Fatalf("PUT after the collection: %d %s", st, body)
	}
	if st, body, _ := do(t, "GET", url, nil); st != 200 || body != "third\n" {
		t.Errorf("GET after a new upload: %d %q", st, body)
	}
}

// blockingTouch holds TouchPaths until released, then fails it as a
// backend whose query's context was cancelled would.
type blockingTouch struct {
	index.Index
	index.Collectable
	entered, release chan struct{}
}

func (b *blockingTouch) TouchPaths(ctx context.Context, flake nixname.Flake, hashes []string, at time.Time) error {
	select {
	case b.entered <- struct{}{}:
	default:
	}
	<-b.release
	if err := ctx.Err(); err != nil {
		return err
	}
	return b.Collectable.TouchPaths(ctx, flake, hashes, at)
}

// Reads being written when the server stops are written, not lost: the
// periodic flush was cancelled with the server, after it had taken the
// pending reads, and the final flush then found none (a CI failure of
// blobserverapp.TestDeniedReadsDoNotKeepPaths).
func TestReadsInFlightAtStopAreWritten(t *testing.T) {
	ts := newTestServer(t, "", nil, func(c *Config) { c.ReadFlushInterval = 5 * time.Millisecond })
	p := makePath(t, "hello", nixname.CompressionXZ)
	ts.push(t, "omnicorp/app", p)
	clock := time.Now().Add(10 * 24 * time.Hour)
	ts.reads.now = func() time.Time { return clock }
	b := &blockingTouch{Index: ts.idx, Collectable: ts.idx.(index.Collectable), entered: make(chan struct{}, 1), release: make(chan struct{})}
	real := ts.idx
	ts.idx = b
	if st, _, _ := do(t, "GET", ts.URL+"/omnicorp/app/"+p.Hash+".narinfo", nil); st != 200 {
		t.Fatalf("GET narinfo: %d", st)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { ts.Maintain(ctx); close(done) }()
	<-b.entered // a periodic flush is writing the read
	cancel()    // the server stops meanwhile
	close(b.release)
	<-done
	ts.idx = real
	if got := lastUsed(t, ts, omniApp, p.Hash); !got.Equal(clock) {
		t.Fatalf("the read being written at stop was lost: last use %v, want %v", got, clock)
	}
}

// One flake's reads cannot crowd out another's: the tracker's budget was
// one for every flake, so a pusher reading its own paths by the hundred
// thousand (cheap hits) kept the target's reads from being recorded, and a
// collection removed a path the target read within keep_for (adversarial
// review, 2026-12-05). A flake's share is bounded, and a full share asks
// Maintain for an early flush.
func TestOneFlakesReadsCannotCrowdOutAnothers(t *testing.T) {
	const target = "omnicorp/super-duper-secure"
	targetFlake, attackerFlake := nixname.Flake{Org: "omnicorp", Name: "super-duper-secure"}, nixname.Flake{Org: "evil", Name: "x"}
	ts := newTestServer(t, "", nil, nil)
	secret := makePath(t, "secret-runtime", nixname.CompressionXZ)
	ts.push(t, target, secret)
	pushed := lastUsed(t, ts, targetFlake, secret.Hash)

	clock := time.Now().Add(10 * 24 * time.Hour)
	ts.reads.now = func() time.Time { return clock }
	// The flood: each hit of one of the attacker's paths calls record, as
	// flakePath does (the paths need not exist for the tracker).
	for i := range maxPending {
		ts.reads.record(attackerFlake, storeHash(fmt.Sprint("atk-", i)))
	}
	select {
	case <-ts.reads.full:
	default:
		t.Error("a flake's full share did not ask for an early flush")
	}
	if st, _, _ := do(t, "GET", ts.URL+"/"+target+"/"+secret.Hash+".narinfo", nil); st != 200 {
		t.Fatalf("target's read: %d", st)
	}
	ts.flushReads(context.Background())
	if got := lastUsed(t, ts, targetFlake, secret.Hash); !got.Equal(clock) {
		t.Errorf("the target's read at %v was not recorded (last use still %v, the push): another flake's reads filled the tracker", clock, got)
	}

	// What was at stake: a collection 31 days after the push, keep_for
	// 30d, keeps the path the target read 21 days before.
	col, err := gc.New(gc.Config{Index: ts.idx, Blob: ts.blob, Logger: ts.log, Now: func() time.Time { return pushed.Add(31 * 24 * time.Hour) }})
	if err != nil {
		t.Fatal(err)
	}
	ret := gc.DefaultRetention()
	ret.Default.KeepFor = 30 * 24 * time.Hour
	if _, err := col.Collect(context.Background(), gc.Options{Retention: ret}); err != nil {
		t.Fatal(err)
	}
	ts.InvalidateCaches()
	if st, _, _ := do(t, "GET", ts.URL+"/"+target+"/"+secret.Hash+".narinfo", nil); st != 200 {
		t.Errorf("the target's path read on day 10 was collected on day 31 (keep_for 30d): GET %d", st)
	}
}

// A full share is flushed by Maintain at once, not at the next interval.
func TestFullReadShareFlushesEarly(t *testing.T) {
	ts := newTestServer(t, "", nil, nil)
	p := makePath(t, "early-flush", nixname.CompressionXZ)
	ts.push(t, "omnicorp/app", p)
	flake := nixname.Flake{Org: "omnicorp", Name: "app"}
	ts.readFlush = time.Hour // only the early flush can write within the test
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); ts.Maintain(ctx) }()
	defer func() { cancel(); <-done }()
	clock := time.Now().Add(24 * time.Hour)
	ts.reads.now = func() time.Time { return clock }
	ts.reads.record(flake, p.Hash)
	for i := range maxPendingPerFlake {
		ts.reads.record(flake, storeHash(fmt.Sprint("other-", i)))
	}
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if lastUsed(t, ts, flake, p.Hash).Equal(clock) {
			return
		}
	}
	t.Error("10 s after a flake's read share filled, its reads were still not written (flush interval 1 h)")
}

// Adversarial review (2026-12-05, r4 F7): a build log whose blob a
// collection deleted between the lookup and the open is answered exactly
// as an absent log (and so as authz's denied read): the zstd log's 404 went
// out with the log's "Content-Encoding: zstd" and "Vary" (a client that
// accepts zstd failed to decode "not found\n"), and the log decoded on the
// fly for a client that does not accept zstd was a 500.
func TestGoneLogIsAbsent(t *testing.T) {
	ts := newTestServer(t, "", nil, nil)
	readable := "omnicorp/a"
	absent := storeHash("never-uploaded") + "-absent.drv"
	for _, c := range []struct {
		name string
		enc  string
	}{{"zstd", "zstd"}, {"plain", ""}} {
		drv := storeHash("gone-"+c.name) + "-gone.drv"
		body, h := []byte("building gone\n"), http.Header(nil)
		if c.enc != "" {
			body, h = encode(t, c.enc, body), hdr("Content-Encoding", c.enc)
		}
		if a := fileExchange(t, "PUT", ts.URL+"/omnicorp/a/log/"+drv, body, h); a.Status != http.StatusCreated {
			t.Fatalf("PUT %s log: %+v", c.name, a)
		}
		// The collection's deletion, after the index lookup would have
		// found the log.
		l, err := ts.idx.GetLog(context.Background(), nixname.Flake{Org: "omnicorp", Name: "a"}, drv)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Remove(filepath.Join(ts.Dir, "blobs", filepath.FromSlash(l.BlobKey))); err != nil {
			t.Fatal(err)
		}
		for _, method := range []string{"GET", "HEAD"} {
			for _, ae := range []string{"zstd", "gzip", ""} { // as stored, decoded on the fly, no header
				for _, base := range []string{ts.URL + "/omnicorp/a/log/", ts.URL + "/log/"} {
					reqHdr := hdr(route.ReadableHeader, readable)
					if ae != "" {
						reqHdr.Set("Accept-Encoding", ae)
					}
					gone := fileExchange(t, method, base+drv, nil, reqHdr)
					want := fileExchange(t, method, base+absent, nil, reqHdr)
					if want.Status != http.StatusNotFound {
						t.Fatalf("absent log: %+v", want)
					}
					if gone != want {
						t.Errorf("%s %s log %s, Accept-Encoding %q: gone answers\n%d %q %q\nan absent log\n%d %q %q",
							method, c.name, base, ae, gone.Status, gone.Header, gone.Body, want.Status, want.Header, want.Body)
					}
				}
			}
		}
	}
	// What authz's denied read carries besides Date (internal/authz
	// Respond): the absent answer's headers are exactly these.
	a := fileExchange(t, "GET", ts.URL+"/omnicorp/a/log/"+absent, nil, hdr("Accept-Encoding", "zstd"))
	if want := "Content-Length: 10\r\nContent-Type: text/plain; charset=utf-8\r\nX-Content-Type-Options: nosniff\r\n"; a.Header != want || a.Body != route.BodyNotFound {
		t.Errorf("absent log: %q %q, want %q %q", a.Header, a.Body, want, route.BodyNotFound)
	}
}

// plainHeader drops whatever a handler set for the answer it gave up
// (what http.ServeContent sets included), and keeps what is about the
// exchange: an error answer never describes a body it does not carry.
func TestPlainHeaderDropsRepresentation(t *testing.T) {
	ts := newTestServer(t, "", nil, nil)
	rec := httptest.NewRecorder()
	h := rec.Header()
	for _, k := range []string{"Content-Encoding", "Content-Range", "Content-Language", "Content-Location",
		"Content-Disposition", "Accept-Ranges", "Last-Modified", "ETag", "Vary", "Cache-Control", "Expires", "Content-Length"} {
		h.Set(k, "x")
	}
	h.Set("Retry-After", "1")
	ts.notFound(rec)
	var got strings.Builder
	rec.Result().Header.Write(&got)
	if want := "Content-Type: text/plain; charset=utf-8\r\nRetry-After: 1\r\nX-Content-Type-Options: nosniff\r\n"; got.String() != want {
		t.Errorf("404 header:\n%s\nwant\n%s", got.String(), want)
	}
}
