package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flakegate/flakegate/internal/index"
	"github.com/flakegate/flakegate/internal/index/indextest"
	"github.com/flakegate/flakegate/internal/nixname"
)

var (
	flakeA = nixname.Flake{Org: "omnicorp", Name: "a"}
	flakeB = nixname.Flake{Org: "omnicorp", Name: "b"}
)

const (
	h1 = "0jqd0rlxzra1rs38rdxl43yh6rxchgc6"
	h2 = "6w8g7njm4mck5dmjxws0z1xnrxvl81xa"
	h3 = "j5jxw3iy7bbz4a57fh9g2xm2gxmyal8h"
)

func open(t *testing.T, path string) *Index {
	t.Helper()
	x, err := Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { x.Close() })
	return x
}

func nar(i int) index.Nar {
	return index.Nar{
		File: fmt.Sprintf("%052d.nar.xz", i), Compression: nixname.CompressionXZ,
		FileHash: fmt.Sprintf("sha256:file%d", i), FileSize: int64(100 + i),
		NarHash: fmt.Sprintf("sha256:nar%d", i), NarSize: int64(1000 + i),
	}
}

func path(hash string, narFile string, refs ...string) index.Path {
	return index.Path{
		Hash: hash, StorePath: "/nix/store/" + hash + "-x", NarFile: narFile, References: refs,
		NarInfo: []byte("StorePath: /nix/store/" + hash + "-x\n"), SignedBy: "k1",
	}
}

func TestOwnership(t *testing.T) {
	ctx := context.Background()
	x := open(t, filepath.Join(t.TempDir(), "index.db"))

	if err := x.PutNar(ctx, flakeA, nar(1)); err != nil {
		t.Fatal(err)
	}
	if err := x.PutPath(ctx, flakeA, path(h1, nar(1).File, h1+"-x")); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		flake nixname.Flake
		hash  string
		found bool
	}{
		{"owner", flakeA, h1, true},
		{"union", nixname.Flake{}, h1, true},
		{"other flake", flakeB, h1, false},
		{"absent", flakeA, h2, false},
		{"absent union", nixname.Flake{}, h2, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := x.GetPath(ctx, tt.flake, tt.hash)
			if tt.flake.IsZero() {
				// No union record of a path: each flake has its own.
				if err == nil || errors.Is(err, index.ErrNotFound) {
					t.Fatalf("GetPath without a flake: %v, want an error", err)
				}
			} else if tt.found {
				if err != nil {
					t.Fatal(err)
				}
				if p.Hash != h1 || p.NarFile != nar(1).File || !slices.Equal(p.References, []string{h1 + "-x"}) || p.SignedBy != "k1" || p.CreatedAt.IsZero() {
					t.Fatalf("got %+v", p)
				}
			} else if !errors.Is(err, index.ErrNotFound) {
				t.Fatalf("err %v, want ErrNotFound", err)
			}
			n, err := x.GetNar(ctx, tt.flake, nar(1).File)
			if tt.found != (err == nil) && tt.hash == h1 {
				t.Fatalf("GetNar err %v, found want %v", err, tt.found)
			}
			if err == nil && n != withTime(nar(1), n) {
				t.Fatalf("GetNar %+v", n)
			}
		})
	}

	owners, err := x.Owners(ctx, nixname.KindNarInfo, h1)
	if err != nil || !slices.Equal(owners, []nixname.Flake{flakeA}) {
		t.Fatalf("owners %v %v", owners, err)
	}
	// Second flake: same content, its own ownership.
	if err := x.PutNar(ctx, flakeB, nar(1)); err != nil {
		t.Fatal(err)
	}
	if err := x.PutPath(ctx, flakeB, path(h1, nar(1).File, h1+"-x")); err != nil {
		t.Fatal(err)
	}
	for _, k := range []struct {
		kind index.Kind
		key  string
	}{{nixname.KindNarInfo, h1}, {nixname.KindNar, nar(1).File}} {
		owners, err := x.Owners(ctx, k.kind, k.key)
		if err != nil || !slices.Equal(owners, []nixname.Flake{flakeA, flakeB}) {
			t.Fatalf("owners of %s: %v %v", k.kind, owners, err)
		}
	}
	owners, err = x.Owners(ctx, nixname.KindNar, "nothing.nar")
	if err != nil || owners == nil || len(owners) != 0 {
		t.Fatalf("owners of absent: %#v %v (want empty, non-nil)", owners, err)
	}
	if _, err := x.Owners(ctx, index.Kind("cache-info"), "x"); err == nil {
		t.Fatal("owners of cache info accepted")
	}
	st, err := x.Stats(ctx)
	if err != nil || st != (index.Stats{Paths: 1, Nars: 1, Flakes: 2}) {
		t.Fatalf("stats %+v %v", st, err)
	}
}

func withTime(n, got index.Nar) index.Nar { n.CreatedAt = got.CreatedAt; return n }

func TestIdempotentFirstContentKept(t *testing.T) {
	ctx := context.Background()
	x := open(t, filepath.Join(t.TempDir(), "index.db"))
	first := path(h1, nar(1).File)
	second := path(h1, nar(2).File)
	second.NarInfo = []byte("other")
	for _, p := range []index.Path{first, first, second} {
		if err := x.PutPath(ctx, flakeA, p); err != nil {
			t.Fatal(err)
		}
	}
	got, err := x.GetPath(ctx, flakeA, h1)
	if err != nil || got.NarFile != first.NarFile || string(got.NarInfo) != string(first.NarInfo) {
		t.Fatalf("got %+v %v", got, err)
	}
	for range 2 {
		if err := x.PutNar(ctx, flakeA, nar(1)); err != nil {
			t.Fatal(err)
		}
	}
	if st, _ := x.Stats(ctx); st.Paths != 1 || st.Nars != 1 || st.Flakes != 1 {
		t.Fatalf("stats %+v", st)
	}
}

func TestMissingPaths(t *testing.T) {
	ctx := context.Background()
	x := open(t, filepath.Join(t.TempDir(), "index.db"))
	if err := x.PutPath(ctx, flakeA, path(h1, "f")); err != nil {
		t.Fatal(err)
	}
	if err := x.PutPath(ctx, flakeB, path(h2, "f")); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		flake  nixname.Flake
		hashes []string
		want   []string
	}{
		{flakeA, []string{h1, h2, h3}, []string{h2, h3}},
		{flakeB, []string{h1, h2, h3}, []string{h1, h3}},
		{flakeA, []string{h1}, nil},
		{flakeA, nil, nil},
		{flakeA, []string{h3, h3}, []string{h3}},
	}
	for _, tt := range tests {
		got, err := x.MissingPaths(ctx, tt.flake, tt.hashes)
		if err != nil || !slices.Equal(got, tt.want) {
			t.Errorf("MissingPaths(%s, %v) = %v, %v; want %v", tt.flake, tt.hashes, got, err, tt.want)
		}
	}
	// More hashes than one query takes.
	many := make([]string, 1200)
	for i := range many {
		many[i] = fmt.Sprintf("%032d", i)
	}
	many[700] = h1
	got, err := x.MissingPaths(ctx, flakeA, many)
	if err != nil || len(got) != 1199 || slices.Contains(got, h1) {
		t.Fatalf("MissingPaths of 1200: %d %v", len(got), err)
	}
}

func TestLogs(t *testing.T) {
	ctx := context.Background()
	x := open(t, filepath.Join(t.TempDir(), "index.db"))
	drv := h1 + "-hello.drv"
	if _, err := x.GetLog(ctx, flakeA, drv); !errors.Is(err, index.ErrNotFound) {
		t.Fatalf("err %v", err)
	}
	for _, key := range []string{"log/omnicorp/a/1", "log/omnicorp/a/2"} {
		if err := x.PutLog(ctx, flakeA, index.Log{Drv: drv, BlobKey: key}); err != nil {
			t.Fatal(err)
		}
	}
	if k, err := x.GetLog(ctx, flakeA, drv); err != nil || k.BlobKey != "log/omnicorp/a/2" {
		t.Fatalf("GetLog = %q, %v", k, err)
	}
	if _, err := x.GetLog(ctx, flakeB, drv); !errors.Is(err, index.ErrNotFound) {
		t.Fatalf("other flake's log: %v", err)
	}
}

func TestInvalidFlakeRefused(t *testing.T) {
	ctx := context.Background()
	x := open(t, filepath.Join(t.TempDir(), "index.db"))
	for _, f := range []nixname.Flake{{}, {Org: "Up", Name: "x"}, {Org: "a/b", Name: "c"}} {
		if err := x.PutNar(ctx, f, nar(1)); err == nil {
			t.Errorf("PutNar accepted flake %q", f)
		}
		if err := x.PutPath(ctx, f, path(h1, "f")); err == nil {
			t.Errorf("PutPath accepted flake %q", f)
		}
	}
}

func TestUpdateNarInfoAndReopen(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "with space")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "index.db")
	x, err := Open(ctx, file)
	if err != nil {
		t.Fatal(err)
	}
	if err := x.PutPath(ctx, flakeA, path(h1, "f")); err != nil {
		t.Fatal(err)
	}
	if err := x.UpdateNarInfo(ctx, flakeA, h1, []byte("resigned"), "k2"); err != nil {
		t.Fatal(err)
	}
	if err := x.UpdateNarInfo(ctx, flakeA, h2, []byte("x"), "k2"); err != nil {
		t.Fatalf("update of absent path: %v", err)
	}
	x.Close()
	if _, err := os.Stat(file); err != nil {
		t.Fatalf("database not at %s: %v", file, err)
	}
	y := open(t, file)
	p, err := y.GetPath(ctx, flakeA, h1)
	if err != nil || string(p.NarInfo) != "resigned" || p.SignedBy != "k2" {
		t.Fatalf("after reopen: %+v %v", p, err)
	}
}

// Two Index values on one file behave like two processes: concurrent
// writers from both all land, readers never fail.
func TestConcurrentWritersTwoHandles(t *testing.T) {
	ctx := context.Background()
	file := filepath.Join(t.TempDir(), "index.db")
	xs := []*Index{open(t, file), open(t, file)}
	var wg sync.WaitGroup
	errs := make(chan error, 1000)
	const per = 40
	for w := range 8 {
		wg.Go(func() {
			x := xs[w%2]
			f := []nixname.Flake{flakeA, flakeB}[w%2]
			for i := range per {
				n := nar(i)
				if err := x.PutNar(ctx, f, n); err != nil {
					errs <- err
					return
				}
				h := fmt.Sprintf("%032d", i)
				if err := x.PutPath(ctx, f, path(h, n.File)); err != nil {
					errs <- err
					return
				}
				if _, err := x.GetPath(ctx, f, h); err != nil {
					errs <- fmt.Errorf("read own write: %w", err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	st, err := xs[0].Stats(ctx)
	if err != nil || st != (index.Stats{Paths: per, Nars: per, Flakes: 2}) {
		t.Fatalf("stats %+v %v", st, err)
	}
}

func TestSchemaTooNew(t *testing.T) {
	ctx := context.Background()
	file := filepath.Join(t.TempDir(), "index.db")
	x := open(t, file)
	if _, err := x.w.ExecContext(ctx, `PRAGMA user_version = 99`); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(ctx, file); err == nil {
		t.Fatal("opened a database with a newer schema")
	}
}

// TestMigrateV1 opens a database written by the version-1 schema (one
// narinfo per store path) and checks the per-flake records made of it.
func TestMigrateV1(t *testing.T) {
	ctx := context.Background()
	file := filepath.Join(t.TempDir(), "index.db")
	db, err := sql.Open("sqlite", "file:"+file)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	exec := func(q string, args ...any) {
		t.Helper()
		if _, err := db.ExecContext(ctx, q, args...); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	exec(migrations[0].sql)
	exec(`PRAGMA user_version = 1`)
	nars, paths := indextest.V1Fixture()
	for _, n := range nars {
		exec(`INSERT INTO nars VALUES (?, ?, ?, ?, ?, ?, ?)`, n.Nar.File, string(n.Nar.Compression), n.Nar.FileHash, n.Nar.FileSize, n.Nar.NarHash, n.Nar.NarSize, n.Nar.CreatedAt.UnixNano())
		for _, f := range n.Owners {
			exec(`INSERT INTO nar_owners VALUES (?, ?)`, n.Nar.File, f.String())
		}
	}
	for _, p := range paths {
		exec(`INSERT INTO paths VALUES (?, ?, ?, ?, ?, ?, ?)`, p.Path.Hash, p.Path.StorePath, p.Path.NarFile, strings.Join(p.Path.References, " "), p.Path.NarInfo, p.Path.SignedBy, p.Path.CreatedAt.UnixNano())
		for _, f := range p.Owners {
			exec(`INSERT INTO path_owners VALUES (?, ?)`, p.Path.Hash, f.String())
		}
	}
	db.Close()
	x := open(t, file)
	indextest.CheckMigrated(t, x)
	var v int
	if err := x.r.QueryRowContext(ctx, `PRAGMA user_version`).Scan(&v); err != nil || v != len(migrations) {
		t.Fatalf("user_version = %d, %v; want %d", v, err, len(migrations))
	}
}

// synchronousOf reads the writer connection's synchronous level (2: FULL).
func synchronousOf(t *testing.T, x *Index) int {
	t.Helper()
	var level int
	if err := x.w.QueryRowContext(context.Background(), `PRAGMA synchronous`).Scan(&level); err != nil {
		t.Fatal(err)
	}
	return level
}

// ClaimNar commits without an fsync (synchronous=NORMAL for its one
// transaction): every later write must still be fsync'd, the claim must be
// visible at once to another handle on the file (a collector in another
// process), and a refused claim must not leave the connection at NORMAL.
func TestClaimNarLeavesWritesFull(t *testing.T) {
	ctx := context.Background()
	file := filepath.Join(t.TempDir(), "index.db")
	x := open(t, file)
	other := open(t, file)
	if got := synchronousOf(t, x); got != 2 {
		t.Fatalf("synchronous before any claim = %d, want 2 (FULL)", got)
	}
	if _, err := x.ClaimNar(ctx, nar(1)); err != nil {
		t.Fatal(err)
	}
	if got := synchronousOf(t, x); got != 2 {
		t.Fatalf("synchronous after a claim = %d, want 2 (FULL)", got)
	}
	// Visible to the other handle: an unowned claimed record, touched now,
	// is not doomed by a collection whose cutoff is before the claim.
	doomed, err := other.DoomNars(ctx, time.Now().Add(-time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if len(doomed) != 0 {
		t.Fatalf("a fresh claim was doomed: %v", doomed)
	}
	// A collection that started after it dooms it (unowned, untouched
	// since): the claim of a doomed file is refused, and the connection is
	// back at FULL afterwards too.
	doomed, err = other.DoomNars(ctx, time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if len(doomed) != 1 || doomed[0].File != nar(1).File {
		t.Fatalf("doomed %v, want the claimed file", doomed)
	}
	if _, err := x.ClaimNar(ctx, nar(1)); !errors.Is(err, index.ErrBusy) {
		t.Fatalf("claim of a doomed file: %v, want ErrBusy", err)
	}
	if got := synchronousOf(t, x); got != 2 {
		t.Fatalf("synchronous after a refused claim = %d, want 2 (FULL)", got)
	}
	// The next ordinary write is fsync'd and sees the claim's effects.
	if err := x.PutNar(ctx, flakeA, nar(2)); err != nil {
		t.Fatal(err)
	}
}

// doneAfter is a context that turns done at its nth look at Done or Err
// (counting both), and stays done: a request whose client goes away at
// any one step of a call.
type doneAfter struct {
	context.Context
	mu     sync.Mutex
	n      int
	closed chan struct{}
}

func newDoneAfter(n int) *doneAfter {
	c := make(chan struct{})
	close(c)
	return &doneAfter{Context: context.Background(), n: n, closed: c}
}

func (c *doneAfter) tick() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.n--
	return c.n < 0
}

var openDone = make(chan struct{}) // never closed: not done yet

func (c *doneAfter) Done() <-chan struct{} {
	if c.tick() {
		return c.closed
	}
	return openDone
}

func (c *doneAfter) Err() error {
	if c.tick() {
		return context.Canceled
	}
	return nil
}

// A claim whose request is cancelled at any point (the client went away)
// must leave the writer connection at synchronous=FULL: SQLite applies
// PRAGMA synchronous when it compiles it, so the NORMAL of a claim can be
// in force although its statement returned an error; left so, every later
// write (the narinfo a 201 answers) would commit without an fsync.
func TestCancelledClaimNarLeavesWritesFull(t *testing.T) {
	x := open(t, filepath.Join(t.TempDir(), "index.db"))
	for n := range 40 {
		_, err := x.ClaimNar(newDoneAfter(n), nar(n))
		if got := synchronousOf(t, x); got != 2 {
			t.Fatalf("synchronous after a claim cancelled at its context's look %d (%v) = %d, want 2 (FULL)", n, err, got)
		}
	}
}
