package gc

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/flakegate/flakegate/internal/blob"
	"github.com/flakegate/flakegate/internal/index"
	"github.com/flakegate/flakegate/internal/index/indextest"
	"github.com/flakegate/flakegate/internal/nixname"
	"github.com/flakegate/flakegate/internal/testutil"
)

var (
	flakeA = nixname.Flake{Org: "omnicorp", Name: "a"}
	flakeB = nixname.Flake{Org: "omnicorp", Name: "b"}
	// now is the collections' clock; paths are recorded at now - age.
	now = time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)
	day = 24 * time.Hour
)

// world is one backend's index and blob store with a collector on them.
type world struct {
	t    *testing.T
	idx  index.Index
	c    index.Collectable
	blob blob.Store
	gc   *Collector
	log  *testutil.LogBuffer
	raw  raw
}

func newWorld(t *testing.T, b backend) *world {
	x, bs, raw := b.open(t)
	log := &testutil.LogBuffer{}
	gc, err := New(Config{Index: x, Blob: bs, Logger: slog.New(slog.NewTextHandler(log, nil)), Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	return &world{t: t, idx: x, c: x.(index.Collectable), blob: bs, gc: gc, log: log, raw: raw}
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return c
}

// narSize is every test NAR's narSize: LRU cases count in multiples of it.
const narSize = 1000

func narFile(i int) string { return indextest.NarFile(i) }
func hash(i int) string    { return indextest.Hash(i) }

// push stores NAR i (its blob, then the records, as the server does) and
// flake's path i referencing refs, used age ago.
func (w *world) push(flake nixname.Flake, i int, age time.Duration, refs ...int) {
	w.t.Helper()
	cx := ctx(w.t)
	at := now.Add(-age)
	n := index.Nar{File: narFile(i), Compression: nixname.CompressionXZ, FileHash: fmt.Sprint("sha256:f", i), FileSize: narSize,
		NarHash: fmt.Sprint("sha256:n", i), NarSize: 2 * narSize, CreatedAt: at}
	if _, err := w.c.ClaimNar(cx, n); err != nil {
		w.t.Fatal(err)
	}
	bw, err := w.blob.Create(cx)
	if err != nil {
		w.t.Fatal(err)
	}
	bw.Write(bytes.Repeat([]byte{byte(i)}, narSize))
	if err := bw.Commit(cx, "nar/"+n.File); err != nil {
		w.t.Fatal(err)
	}
	if err := w.idx.PutNar(cx, flake, n); err != nil {
		w.t.Fatal(err)
	}
	names := []string{}
	for _, r := range refs {
		names = append(names, fmt.Sprint(hash(r), "-p", r))
	}
	slices.Sort(names)
	p := index.Path{Hash: hash(i), StorePath: fmt.Sprint("/nix/store/", hash(i), "-p", i), NarFile: n.File, NarHash: n.NarHash,
		References: names, NarInfo: []byte("narinfo\n"), CreatedAt: at}
	if err := w.c.AddPath(cx, flake, p); err != nil {
		w.t.Fatalf("push %v path %d: %v", flake, i, err)
	}
}

// has reports whether flake holds path i.
func (w *world) has(flake nixname.Flake, i int) bool {
	w.t.Helper()
	_, err := w.idx.GetPath(ctx(w.t), flake, hash(i))
	if err != nil && !errors.Is(err, index.ErrNotFound) {
		w.t.Fatal(err)
	}
	return err == nil
}

// stored reports whether NAR i's blob is in storage.
func (w *world) stored(i int) bool {
	w.t.Helper()
	_, err := w.blob.Stat(ctx(w.t), "nar/"+narFile(i))
	if err != nil && !errors.Is(err, blob.ErrNotFound) {
		w.t.Fatal(err)
	}
	return err == nil
}

// want checks which of paths 0..n-1 the flake holds.
func (w *world) want(flake nixname.Flake, n int, held ...int) {
	w.t.Helper()
	for i := range n {
		if got, want := w.has(flake, i), slices.Contains(held, i); got != want {
			w.t.Errorf("%v holds path %d: %v, want %v", flake, i, got, want)
		}
	}
}

// wantStored checks which of NARs 0..n-1 are in storage.
func (w *world) wantStored(n int, kept ...int) {
	w.t.Helper()
	for i := range n {
		if got, want := w.stored(i), slices.Contains(kept, i); got != want {
			w.t.Errorf("NAR %d stored: %v, want %v", i, got, want)
		}
	}
}

func (w *world) collect(opts Options) Report {
	w.t.Helper()
	rep, err := w.gc.Collect(ctx(w.t), opts)
	if err != nil {
		w.t.Fatalf("Collect: %v", err)
	}
	return rep
}

func keepFor(d time.Duration) Retention {
	r := DefaultRetention()
	r.Default.KeepFor = d
	return r
}

func forEach(t *testing.T, fn func(t *testing.T, w *world)) {
	for _, b := range backends() {
		t.Run(b.name, func(t *testing.T) { fn(t, newWorld(t, b)) })
	}
}

func flakeReport(rep Report, f nixname.Flake) FlakeReport {
	for _, fr := range rep.Flakes {
		if fr.Flake == f {
			return fr
		}
	}
	return FlakeReport{}
}

func TestExpiryByAge(t *testing.T) {
	forEach(t, func(t *testing.T, w *world) {
		w.push(flakeA, 0, 40*day)
		w.push(flakeA, 1, 2*day)
		w.push(flakeA, 2, 31*day)
		rep := w.collect(Options{Retention: keepFor(30 * day)})
		w.want(flakeA, 3, 1)
		w.wantStored(3, 1)
		fr := flakeReport(rep, flakeA)
		if fr.Paths != 2 || fr.Bytes != 2*narSize || fr.Reasons[ReasonExpired] != 2 || fr.NarsReleased != 2 || fr.Kept != 1 {
			t.Errorf("report for %v = %+v", flakeA, fr)
		}
		if rep.NarsDeleted != 2 || rep.BytesFreed != 2*narSize {
			t.Errorf("report: %d NARs, %d bytes deleted; want 2, %d", rep.NarsDeleted, rep.BytesFreed, 2*narSize)
		}
		if !strings.Contains(w.log.String(), "garbage collection done") {
			t.Errorf("no log line for the collection:\n%s", w.log)
		}
		// Nothing expires without keep_for; -older-than overrides it.
		w.collect(Options{Retention: DefaultRetention()})
		w.want(flakeA, 3, 1)
		w.collect(Options{Retention: keepFor(30 * day), OverrideKeepFor: true, OlderThan: day})
		w.want(flakeA, 3)
		w.wantStored(3)
	})
}

func TestExpiryByRead(t *testing.T) {
	forEach(t, func(t *testing.T, w *world) {
		w.push(flakeA, 0, 40*day)
		w.push(flakeA, 1, 40*day)
		w.push(flakeB, 1, 40*day)
		// Read through flake A a day ago: kept in A, not in B.
		if err := w.c.TouchPaths(ctx(t), flakeA, []string{hash(0), hash(1)}, now.Add(-day)); err != nil {
			t.Fatal(err)
		}
		w.collect(Options{Retention: keepFor(30 * day)})
		w.want(flakeA, 2, 0, 1)
		w.want(flakeB, 2)
		w.wantStored(2, 0, 1)
	})
}

func TestLRUBySize(t *testing.T) {
	forEach(t, func(t *testing.T, w *world) {
		// Flake A: four paths of one narSize each, used 4…1 days ago; max
		// two: the two least recently used go.
		for i := range 4 {
			w.push(flakeA, i, time.Duration(4-i)*day)
		}
		r := keepFor(30 * day)
		r.Flakes = map[nixname.Flake]Policy{flakeA: {KeepFor: 30 * day, MaxSize: 2 * narSize}}
		rep := w.collect(Options{Retention: r})
		w.want(flakeA, 4, 2, 3)
		if fr := flakeReport(rep, flakeA); fr.Reasons[ReasonFlakeMaxSize] != 2 {
			t.Errorf("report %+v, want 2 paths gone for the flake's max_size", fr)
		}
		// The whole store: B's path (5 days) is the least recently used.
		w.push(flakeB, 4, 5*day)
		w.push(flakeB, 5, time.Hour*2)
		r.MaxSize = 3 * narSize
		rep = w.collect(Options{Retention: r})
		w.want(flakeB, 6, 5)
		w.want(flakeA, 4, 2, 3)
		w.wantStored(6, 2, 3, 5)
		if fr := flakeReport(rep, flakeB); fr.Reasons[ReasonGlobalMaxSize] != 1 {
			t.Errorf("report %+v, want 1 path gone for the store's max_size", fr)
		}
	})
}

func TestPinsKeepClosures(t *testing.T) {
	forEach(t, func(t *testing.T, w *world) {
		// 0 ← 1 ← 2 (2 references 1, which references 0), all old; 3 old.
		w.push(flakeA, 0, 90*day)
		w.push(flakeA, 1, 90*day, 0)
		w.push(flakeA, 2, 90*day, 1, 0)
		w.push(flakeA, 3, 90*day)
		if err := w.c.PutPin(ctx(t), flakeA, index.Pin{Name: "release", Hash: hash(2), CreatedAt: now.Add(-80 * day)}); err != nil {
			t.Fatal(err)
		}
		r := keepFor(30 * day)
		r.Default.MaxSize = 1 // pins are kept whatever the narSize
		w.collect(Options{Retention: r, OverrideKeepFor: true, OlderThan: 0})
		w.want(flakeA, 4, 0, 1, 2)
		w.wantStored(4, 0, 1, 2)
		if err := w.c.DeletePin(ctx(t), flakeA, "release"); err != nil {
			t.Fatal(err)
		}
		w.collect(Options{Retention: r})
		w.want(flakeA, 4)
		w.wantStored(4)
	})
}

func TestClosureOfRecentPathKept(t *testing.T) {
	forEach(t, func(t *testing.T, w *world) {
		w.push(flakeA, 0, 90*day)
		w.push(flakeA, 1, 90*day, 0)
		w.push(flakeA, 2, 90*day)
		// A recent path referencing 1 (pushed with the same time, so the
		// push's touch of 1 does not count: only the closure keeps 0).
		w.push(flakeA, 3, 90*day, 1)
		if err := w.c.TouchPaths(ctx(t), flakeA, []string{hash(3)}, now.Add(-day)); err != nil {
			t.Fatal(err)
		}
		w.collect(Options{Retention: keepFor(30 * day)})
		w.want(flakeA, 4, 0, 1, 3)
	})
}

func TestSharedNarSurvivesUntilBothRelease(t *testing.T) {
	forEach(t, func(t *testing.T, w *world) {
		w.push(flakeA, 0, 40*day)
		w.push(flakeB, 0, 10*day)
		w.collect(Options{Retention: keepFor(30 * day)})
		w.want(flakeA, 1)
		w.want(flakeB, 1, 0)
		w.wantStored(1, 0)
		if o, _ := w.idx.Owners(ctx(t), nixname.KindNar, narFile(0)); !slices.Equal(o, []nixname.Flake{flakeB}) {
			t.Errorf("owners of the shared NAR = %v, want only %v", o, flakeB)
		}
		r := keepFor(30 * day)
		r.Flakes = map[nixname.Flake]Policy{flakeB: {KeepFor: 5 * day}}
		w.collect(Options{Retention: r})
		w.want(flakeB, 1)
		w.wantStored(1)
	})
}

// snapshot is everything a collection could change.
func (w *world) snapshot(flakes []nixname.Flake, n int) string {
	var b strings.Builder
	for _, f := range flakes {
		uses := map[string]index.PathUse{}
		w.c.ScanPaths(ctx(w.t), f, func(u index.PathUse) error { uses[u.Hash] = u; return nil })
		for _, h := range slices.Sorted(maps.Keys(uses)) {
			fmt.Fprintf(&b, "%v %+v\n", f, uses[h])
		}
	}
	for i := range n {
		o, _ := w.idx.Owners(ctx(w.t), nixname.KindNar, narFile(i))
		_, err := w.idx.GetNar(ctx(w.t), nixname.Flake{}, narFile(i))
		fmt.Fprintf(&b, "nar %d owners %v record %v stored %v\n", i, o, err == nil, w.stored(i))
	}
	g, _ := w.c.Generation(ctx(w.t))
	fmt.Fprintf(&b, "generation %d\n", g)
	return b.String()
}

func TestDryRunChangesNothing(t *testing.T) {
	forEach(t, func(t *testing.T, w *world) {
		w.push(flakeA, 0, 40*day)
		w.push(flakeA, 1, 40*day, 0)
		w.push(flakeA, 2, 1*day)
		w.push(flakeB, 0, 40*day)
		// A NAR without a path or owner (an abandoned upload).
		if _, err := w.c.ClaimNar(ctx(t), index.Nar{File: narFile(3), FileSize: narSize, CreatedAt: now.Add(-40 * day)}); err != nil {
			t.Fatal(err)
		}
		before := w.snapshot([]nixname.Flake{flakeA, flakeB}, 4)
		rows, blobs := w.raw.rows(t), w.raw.blobs(t)
		rep := w.collect(Options{Retention: keepFor(30 * day), DryRun: true, Verbose: true})
		if after := w.snapshot([]nixname.Flake{flakeA, flakeB}, 4); after != before {
			t.Fatalf("a dry run changed the index or storage:\nbefore:\n%s\nafter:\n%s", before, after)
		}
		w.wantUnchanged(rows, blobs)
		fr := flakeReport(rep, flakeA)
		if fr.Paths != 2 || fr.Bytes != 2*narSize || len(fr.Removed) != 2 || fr.Removed[0].Reason != ReasonExpired {
			t.Errorf("dry run report for %v = %+v, want paths 0 and 1 (expired)", flakeA, fr)
		}
		// The real collection does what the dry run said.
		real := w.collect(Options{Retention: keepFor(30 * day)})
		if got := flakeReport(real, flakeA); got.Paths != fr.Paths || got.Bytes != fr.Bytes {
			t.Errorf("collection %+v differs from its dry run %+v", got, fr)
		}
		w.want(flakeA, 3, 2)
		w.wantStored(4, 2)
	})
}

// A path used after the collection read the flake (a read, a push
// referencing it) is not deleted, nor anything in its closure.
func TestUsedDuringCollectionKeepsClosure(t *testing.T) {
	forEach(t, func(t *testing.T, w *world) {
		w.push(flakeA, 0, 90*day)
		w.push(flakeA, 1, 90*day, 0)
		w.push(flakeA, 2, 90*day, 1)
		w.push(flakeA, 3, 90*day)
		w.push(flakeA, 4, 90*day)
		w.gc.beforeDelete = func(f nixname.Flake) {
			if f != flakeA {
				return
			}
			// A read of 1 and a push of 5 referencing 3, both now.
			if err := w.c.TouchPaths(ctx(t), flakeA, []string{hash(1)}, now); err != nil {
				t.Fatal(err)
			}
			w.push(flakeA, 5, 0, 3)
		}
		rep := w.collect(Options{Retention: keepFor(30 * day)})
		w.want(flakeA, 6, 0, 1, 3, 5)
		w.wantStored(6, 0, 1, 3, 5)
		if fr := flakeReport(rep, flakeA); fr.Paths != 2 || fr.Skipped != 3 {
			t.Errorf("report %+v, want 2 deleted (2 and 4) and 3 skipped (1, 0, 3)", fr)
		}
	})
}

// The grace period: nothing used within it goes, even with -older-than 0,
// and a NAR uploaded without its narinfo yet keeps its owner.
func TestGracePeriod(t *testing.T) {
	forEach(t, func(t *testing.T, w *world) {
		w.push(flakeA, 0, 10*time.Minute)
		w.push(flakeA, 1, 2*time.Hour)
		n := index.Nar{File: narFile(2), FileSize: narSize, CreatedAt: now.Add(-10 * time.Minute)}
		if err := w.idx.PutNar(ctx(t), flakeA, n); err != nil {
			t.Fatal(err)
		}
		w.collect(Options{Retention: DefaultRetention(), OverrideKeepFor: true, OlderThan: 0})
		w.want(flakeA, 2, 0)
		if o, _ := w.idx.Owners(ctx(t), nixname.KindNar, narFile(2)); len(o) != 1 {
			t.Errorf("a NAR uploaded within the grace period lost its owner: %v", o)
		}
	})
}

func TestOneCollectionAtATime(t *testing.T) {
	forEach(t, func(t *testing.T, w *world) {
		unlock, err := w.c.LockCollector(ctx(t))
		if err != nil {
			t.Fatal(err)
		}
		defer unlock()
		if _, err := w.gc.Collect(ctx(t), Options{Retention: DefaultRetention()}); !errors.Is(err, index.ErrBusy) {
			t.Fatalf("Collect while another holds the lock: %v, want ErrBusy", err)
		}
		// A dry run changes nothing and needs no lock.
		if _, err := w.gc.Collect(ctx(t), Options{Retention: DefaultRetention(), DryRun: true}); err != nil {
			t.Fatalf("dry run while another collection runs: %v", err)
		}
	})
}

// files puts flake's listing, debug info link, realisation and build trace
// entry of path i (uploaded age ago) and returns them.
func (w *world) files(flake nixname.Flake, i int, age time.Duration) []index.File {
	w.t.Helper()
	fs := []index.File{
		{Kind: nixname.KindListing, Key: hash(i), Needs: hash(i)},
		{Kind: nixname.KindDebugInfo, Key: fmt.Sprintf("%040x", i+1), Needs: narFile(i)},
		{Kind: nixname.KindRealisation, Key: fmt.Sprintf("sha256:%064x!out", i+1), Needs: hash(i)},
		{Kind: nixname.KindBuildTrace, Key: fmt.Sprint(hash(i+100), "-p.drv/out"), Needs: hash(i)},
	}
	for k := range fs {
		fs[k].Data, fs[k].CreatedAt = fmt.Appendf(nil, `{"flake":%q,"i":%d}`, flake, i), now.Add(-age)
		if err := w.idx.PutFile(ctx(w.t), flake, fs[k]); err != nil {
			w.t.Fatal(err)
		}
	}
	return fs
}

// served reports which of fs the flake serves (GetFile: what the server
// answers 200 for, the others are 404).
func (w *world) served(flake nixname.Flake, fs []index.File) []bool {
	w.t.Helper()
	var out []bool
	for _, f := range fs {
		_, err := w.idx.GetFile(ctx(w.t), flake, f.Kind, f.Key)
		if err != nil && !errors.Is(err, index.ErrNotFound) {
			w.t.Fatal(err)
		}
		out = append(out, err == nil)
	}
	return out
}

// The files that describe a path (listing, realisation, build trace entry)
// and a NAR file (debug info link) leave the flake with it: after the
// collection they are 404, also once the path is pushed again (their rows
// are gone, a new realisation is accepted); a kept path's are served, and
// another flake's copy of the same path keeps its own.
func TestFilesGoWithTheirPaths(t *testing.T) {
	forEach(t, func(t *testing.T, w *world) {
		w.push(flakeA, 0, 40*day)
		w.push(flakeA, 1, 2*day)
		w.push(flakeB, 0, 2*day) // the same NAR file, kept in B
		gone, kept, other := w.files(flakeA, 0, 35*day), w.files(flakeA, 1, 35*day), w.files(flakeB, 0, 35*day)
		all := []bool{true, true, true, true}
		none := []bool{false, false, false, false}
		if got := w.served(flakeA, gone); !slices.Equal(got, all) {
			t.Fatalf("before the collection A serves %v of path 0's files", got)
		}
		rep := w.collect(Options{Retention: keepFor(30 * day)})
		w.want(flakeA, 2, 1)
		if got := w.served(flakeA, gone); !slices.Equal(got, none) {
			t.Errorf("after the collection A serves %v of expired path 0's files; want none", got)
		}
		if got := w.served(flakeA, kept); !slices.Equal(got, all) {
			t.Errorf("after the collection A serves %v of kept path 1's files; want all", got)
		}
		if got := w.served(flakeB, other); !slices.Equal(got, all) {
			t.Errorf("after the collection B serves %v of its path 0's files; want all", got)
		}
		if fr := flakeReport(rep, flakeA); fr.FileCount() != 4 {
			t.Errorf("report for A: %v files removed, want 4", fr.Files)
		}
		// Pushed again, path 0 does not bring back the old files.
		w.push(flakeA, 0, 0)
		if got := w.served(flakeA, gone); !slices.Equal(got, none) {
			t.Errorf("after path 0 was pushed again A serves %v of its old files; want none (removed)", got)
		}
		fresh := index.File{Kind: nixname.KindRealisation, Key: gone[2].Key, Needs: hash(0), Data: []byte(`{"new":1}`)}
		if err := w.idx.PutFile(ctx(t), flakeA, fresh); err != nil {
			t.Fatal(err)
		}
		if got, err := w.idx.GetFile(ctx(t), flakeA, fresh.Kind, fresh.Key); err != nil || string(got.Data) != `{"new":1}` {
			t.Errorf("a new realisation of the output after the old one went: %q, %v", got.Data, err)
		}
	})
}

// A build log is kept for keep_for after its last upload (pins and paths
// do not keep it), then its record and blob go; no keep_for keeps it.
func TestLogsExpire(t *testing.T) {
	forEach(t, func(t *testing.T, w *world) {
		// Logs are stamped by the index's clock: a collector on it.
		m := NewMetrics(prometheus.NewRegistry())
		c, err := New(Config{Index: w.idx, Blob: w.blob, Logger: slog.New(slog.NewTextHandler(w.log, nil)), Metrics: m})
		if err != nil {
			t.Fatal(err)
		}
		drv := hash(7) + "-hello.drv"
		keyA, keyB := w.putLog(flakeA, drv, "building\n", time.Now()), w.putLog(flakeB, drv, "building\n", time.Now())
		logs := func() (a, b bool) {
			_, ea := w.idx.GetLog(ctx(t), flakeA, drv)
			_, eb := w.idx.GetLog(ctx(t), flakeB, drv)
			_, sa := w.blob.Stat(ctx(t), keyA)
			_, sb := w.blob.Stat(ctx(t), keyB)
			if (ea == nil) != (sa == nil) || (eb == nil) != (sb == nil) {
				t.Errorf("a log's record and blob disagree: records %v %v, blobs %v %v", ea, eb, sa, sb)
			}
			return ea == nil, eb == nil
		}
		r := DefaultRetention()
		r.Grace = 0
		r.Flakes = map[nixname.Flake]Policy{flakeA: {KeepFor: time.Hour}} // B: keep_for unset
		if _, err := c.Collect(ctx(t), Options{Retention: r}); err != nil {
			t.Fatal(err)
		}
		if a, b := logs(); !a || !b {
			t.Fatalf("logs uploaded just now, keep_for 1h: A %v B %v; want both kept", a, b)
		}
		time.Sleep(10 * time.Millisecond)
		r.Flakes[flakeA] = Policy{KeepFor: time.Millisecond}
		rep, err := c.Collect(ctx(t), Options{Retention: r})
		if err != nil {
			t.Fatal(err)
		}
		if a, b := logs(); a || !b {
			t.Errorf("after keep_for passed for A: A's log kept %v, B's %v; want only B's", a, b)
		}
		if rep.LogsDeleted != 1 || flakeReport(rep, flakeA).Logs != 1 {
			t.Errorf("report: %d logs deleted, A %d; want 1", rep.LogsDeleted, flakeReport(rep, flakeA).Logs)
		}
		if n := promtest.ToFloat64(m.logsDeleted); n != 1 {
			t.Errorf("flakegate_gc_logs_deleted_total = %v, want 1", n)
		}
		// Uploaded again, it is served again.
		w.putLog(flakeA, drv, "building\n", time.Now())
		if a, _ := logs(); !a {
			t.Errorf("a log uploaded again after a collection is not served")
		}
	})
}

// The store's max_size counts the bytes stored: a NAR file that several
// flakes hold counts once.
func TestGlobalMaxSizeCountsSharedNarsOnce(t *testing.T) {
	forEach(t, func(t *testing.T, w *world) {
		w.push(flakeA, 0, 1*day)
		w.push(flakeB, 0, 2*day) // the same NAR file: stored once
		w.push(flakeA, 1, 3*day)
		r := keepFor(30 * day)
		r.MaxSize = 2 * narSize // 2 files stored: fits (3 if counted per flake)
		rep := w.collect(Options{Retention: r})
		w.want(flakeA, 2, 0, 1)
		w.want(flakeB, 2, 0)
		if rep.Paths() != 0 || !rep.GlobalCutoff.IsZero() {
			t.Errorf("2 NAR files with max_size 2 files: removed %d paths, cutoff %v; want nothing", rep.Paths(), rep.GlobalCutoff)
		}
		// One file fits: the least recently used file (path 1's) goes, the
		// shared one stays in both flakes.
		r.MaxSize = narSize
		w.collect(Options{Retention: r})
		w.want(flakeA, 2, 0)
		w.want(flakeB, 2, 0)
		w.wantStored(2, 0)
	})
}

// wantUnchanged checks that every index row and every blob is as listed
// before (raw: read beside the index and store APIs).
func (w *world) wantUnchanged(rows, blobs []string) {
	w.t.Helper()
	if len(rows) == 0 || len(blobs) == 0 {
		w.t.Fatalf("nothing to compare: %d rows, %d blobs before", len(rows), len(blobs))
	}
	if after := w.raw.rows(w.t); !slices.Equal(after, rows) {
		w.t.Errorf("the index changed:\nbefore:\n%s\nafter:\n%s", strings.Join(rows, "\n"), strings.Join(after, "\n"))
	}
	if after := w.raw.blobs(w.t); !slices.Equal(after, blobs) {
		w.t.Errorf("the blobs changed:\nbefore:\n%s\nafter:\n%s", strings.Join(blobs, "\n"), strings.Join(after, "\n"))
	}
}

// putLog stores flake's build log of drv (its blob, then its record, as
// the server does), marked uploaded at `at` (the index stamps a new log
// with its own clock; a claim only moves that later), and returns its blob
// key.
func (w *world) putLog(flake nixname.Flake, drv, text string, at time.Time) string {
	w.t.Helper()
	cx := ctx(w.t)
	key := "log/" + flake.Org + "/" + flake.Name + "/" + drv
	bw, err := w.blob.Create(cx)
	if err != nil {
		w.t.Fatal(err)
	}
	bw.Write([]byte(text))
	if err := bw.Commit(cx, key); err != nil {
		w.t.Fatal(err)
	}
	if err := w.idx.PutLog(cx, flake, index.Log{Drv: drv, BlobKey: key}); err != nil {
		w.t.Fatal(err)
	}
	if err := w.c.ClaimLog(cx, flake, drv, at); err != nil {
		w.t.Fatal(err)
	}
	return key
}

// fileRows counts the flake's file rows by kind (served or not).
func (w *world) fileRows(flake nixname.Flake) map[nixname.Kind]int64 {
	w.t.Helper()
	out := map[nixname.Kind]int64{}
	err := w.c.ScanFiles(ctx(w.t), flake, time.Now().Add(100*365*day), func(u index.FileUse) error {
		out[u.Kind]++
		return nil
	})
	if err != nil {
		w.t.Fatal(err)
	}
	return out
}

// logsHeld returns the flake's logs among drvs that it serves, with the
// size of their blobs.
func (w *world) logsHeld(flake nixname.Flake, drvs []string) map[string]int64 {
	w.t.Helper()
	out := map[string]int64{}
	for _, drv := range drvs {
		l, err := w.idx.GetLog(ctx(w.t), flake, drv)
		if errors.Is(err, index.ErrNotFound) {
			continue
		} else if err != nil {
			w.t.Fatal(err)
		}
		info, err := w.blob.Stat(ctx(w.t), l.BlobKey)
		if err != nil {
			w.t.Fatalf("log %s of %v: record without blob: %v", drv, flake, err)
		}
		out[drv] = info.Size
	}
	return out
}

// minus returns what is in before and not in after, by kind.
func minus(before, after map[nixname.Kind]int64) map[nixname.Kind]int64 {
	out := map[nixname.Kind]int64{}
	for k, n := range before {
		if d := n - after[k]; d != 0 {
			out[k] = d
		}
	}
	return out
}

// A dry run says, per flake, the files of each kind and the build logs
// (count and bytes) that a real collection then deletes, besides the
// paths; a flake's report never counts another flake's files or logs
// (same keys, same derivation); and it changes nothing. The real run's
// report says the same, and both are compared with what was actually
// removed (rows and blobs read before and after).
func TestDryRunReportsFilesAndLogs(t *testing.T) {
	forEach(t, func(t *testing.T, w *world) {
		// Logs are stamped by the index's clock (now): the collector's clock
		// is a year later, and paths and files are placed relative to it.
		clock := time.Now().Add(365 * day).Truncate(time.Second)
		w.gc.cfg.Now = func() time.Time { return clock }
		ago := func(d time.Duration) time.Duration { return now.Sub(clock.Add(-d)) } // push/files age for d before clock
		old, fresh := ago(40*day), ago(2*day)

		// Flake A.
		w.push(flakeA, 0, old)      // expired: its 4 files go (NAR 0 released)
		w.push(flakeA, 2, old)      // expired but referenced by 1: stays
		w.push(flakeA, 1, fresh, 2) // kept
		w.files(flakeA, 0, ago(35*day))
		w.files(flakeA, 1, ago(35*day))
		w.files(flakeA, 2, ago(35*day))
		// Path 5, expired, names NAR 1 (kept by path 1): its listing,
		// realisation and build trace go; its debug info link needs NAR 5,
		// which A does not own: never served, it goes too. Path 1's debug
		// info link (NAR 1) stays.
		p5 := index.Path{Hash: hash(5), StorePath: "/nix/store/" + hash(5) + "-p5", NarFile: narFile(1), NarHash: "sha256:n1",
			NarInfo: []byte("narinfo\n"), CreatedAt: now.Add(-old)}
		if err := w.c.AddPath(ctx(t), flakeA, p5); err != nil {
			t.Fatal(err)
		}
		w.files(flakeA, 5, ago(35*day))
		// NAR 6 owned since long without a path (an abandoned upload): A
		// releases it, its debug info link goes. NAR 7 owned since 10
		// minutes (a push in progress, within the grace period): kept, its
		// link stays.
		for i, at := range map[int]time.Time{6: clock.Add(-40 * day), 7: clock.Add(-10 * time.Minute)} {
			if err := w.idx.PutNar(ctx(t), flakeA, index.Nar{File: narFile(i), FileSize: narSize, CreatedAt: at}); err != nil {
				t.Fatal(err)
			}
			debug := index.File{Kind: nixname.KindDebugInfo, Key: fmt.Sprintf("%040x", i+1), Needs: narFile(i), Data: []byte("{}"), CreatedAt: clock.Add(-35 * day)}
			if err := w.idx.PutFile(ctx(t), flakeA, debug); err != nil {
				t.Fatal(err)
			}
		}
		// A listing of a path never pushed goes; one uploaded within the
		// grace period (its narinfo comes next) stays.
		for i, at := range map[int]time.Time{9: clock.Add(-35 * day), 8: clock.Add(-10 * time.Minute)} {
			l := index.File{Kind: nixname.KindListing, Key: hash(i), Needs: hash(i), Data: []byte("{}"), CreatedAt: at}
			if err := w.idx.PutFile(ctx(t), flakeA, l); err != nil {
				t.Fatal(err)
			}
		}
		drvs := []string{hash(20) + "-x.drv", hash(21) + "-y.drv", hash(22) + "-z.drv"}
		w.putLog(flakeA, drvs[0], "A: expired\n", clock.Add(-31*day))
		w.putLog(flakeA, drvs[1], "A: recent\n", clock.Add(-day))

		// Flake B: the same path 0 (kept there: its files, same keys as
		// A's, stay), path 4 expired with its 4 files, and the same
		// derivation's log as A's, longer, expired, plus its own.
		w.push(flakeB, 0, fresh)
		w.push(flakeB, 4, old)
		w.files(flakeB, 0, ago(35*day))
		w.files(flakeB, 4, ago(35*day))
		w.putLog(flakeB, drvs[0], "B: a longer expired log\n", clock.Add(-31*day))
		w.putLog(flakeB, drvs[2], "B: another expired one\n", clock.Add(-60*day))

		opts := Options{Retention: keepFor(30 * day)}
		flakes := []nixname.Flake{flakeA, flakeB}
		rows, blobs := w.raw.rows(t), w.raw.blobs(t)
		filesBefore := map[nixname.Flake]map[nixname.Kind]int64{}
		logsBefore := map[nixname.Flake]map[string]int64{}
		for _, f := range flakes {
			filesBefore[f], logsBefore[f] = w.fileRows(f), w.logsHeld(f, drvs)
		}

		dryOpts := opts
		dryOpts.DryRun, dryOpts.Verbose = true, true
		dry := w.collect(dryOpts)
		w.wantUnchanged(rows, blobs)

		want := map[nixname.Flake]FlakeReport{
			flakeA: {Paths: 2, Files: map[nixname.Kind]int64{nixname.KindListing: 3, nixname.KindDebugInfo: 3, nixname.KindRealisation: 2, nixname.KindBuildTrace: 2},
				Logs: 1, LogBytes: int64(len("A: expired\n"))},
			flakeB: {Paths: 1, Files: map[nixname.Kind]int64{nixname.KindListing: 1, nixname.KindDebugInfo: 1, nixname.KindRealisation: 1, nixname.KindBuildTrace: 1},
				Logs: 2, LogBytes: int64(len("B: a longer expired log\n") + len("B: another expired one\n"))},
		}
		check := func(what string, rep Report) {
			t.Helper()
			for _, f := range flakes {
				got, wf := flakeReport(rep, f), want[f]
				if got.Paths != wf.Paths || !maps.Equal(got.Files, wf.Files) || got.Logs != wf.Logs || got.LogBytes != wf.LogBytes {
					t.Errorf("%s report for %v: %d paths, files %v, %d logs (%d bytes); want %d paths, files %v, %d logs (%d bytes)",
						what, f, got.Paths, got.Files, got.Logs, got.LogBytes, wf.Paths, wf.Files, wf.Logs, wf.LogBytes)
				}
			}
		}
		check("dry run", dry)

		real := w.collect(opts)
		check("collection", real)
		// What the collection removed, read from the index and storage.
		for _, f := range flakes {
			dr, rr := flakeReport(dry, f), flakeReport(real, f)
			if removed := minus(filesBefore[f], w.fileRows(f)); !maps.Equal(removed, dr.Files) || !maps.Equal(removed, rr.Files) {
				t.Errorf("%v: the collection removed files %v; the dry run said %v, the collection's report %v", f, removed, dr.Files, rr.Files)
			}
			after := w.logsHeld(f, drvs)
			var gone int
			var bytes int64
			for drv, size := range logsBefore[f] {
				if _, ok := after[drv]; !ok {
					gone++
					bytes += size
				}
			}
			if gone != dr.Logs || bytes != dr.LogBytes || gone != rr.Logs || bytes != rr.LogBytes {
				t.Errorf("%v: the collection removed %d logs (%d bytes); the dry run said %d (%d), the collection's report %d (%d)",
					f, gone, bytes, dr.Logs, dr.LogBytes, rr.Logs, rr.LogBytes)
			}
		}
		if n, b := real.Logs(); real.LogsDeleted != n || n != 3 || b != want[flakeA].LogBytes+want[flakeB].LogBytes {
			t.Errorf("collection: %d logs deleted, reports %d (%d bytes); want 3", real.LogsDeleted, n, b)
		}
		if real.Files() != 14 || dry.Files() != 14 {
			t.Errorf("files in all flakes: collection %d, dry run %d; want 14", real.Files(), dry.Files())
		}
		// Both log lines carry the same per-flake counts.
		for _, f := range flakes {
			line := fmt.Sprintf("%s:paths=%d,bytes=", f, want[f].Paths)
			if n := strings.Count(w.log.String(), line); n != 2 {
				t.Errorf("%q in %d log lines, want 2 (dry run and collection):\n%s", line, n, w.log)
			}
		}
		if !strings.Contains(w.log.String(), ",files=10,files_build-trace=2,files_debuginfo=3,files_listing=3,files_realisation=2,logs=1,log_bytes=11") {
			t.Errorf("log lines lack A's files by kind and logs:\n%s", w.log)
		}
	})
}
