package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/flakegate/flakegate/internal/index"
	"github.com/flakegate/flakegate/internal/index/indextest"
	"github.com/flakegate/flakegate/internal/nixname"
)

// Migration 6 (flake_paths and flake_files as rowid tables) must change
// nothing any query answers, before or after a collection, and must leave
// the schema and rows of version 5 intact when it fails or the process
// dies half-way.

// v5 is the schema before migration 6.
const v5 = 5

func openV(t *testing.T, file string, migs []migration) *Index {
	t.Helper()
	x, err := openWith(context.Background(), file, migs)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { x.Close() })
	return x
}

// openV5 opens file at schema version 5 with flake_files' columns of
// migration 7 added (if missing), without counting them in user_version:
// this package's code, which fills and queries the version-5 database
// here, reads and writes them. Migration 6 copies flake_files by naming
// its columns, so it migrates such a file as it does a plain version 5
// (the added columns are dropped, then migration 7 adds them again with
// its defaults: fillV5 writes its files with those, as a server before
// migration 7 did).
func openV5(t *testing.T, file string) *Index {
	t.Helper()
	x := openV(t, file, migrations[:v5])
	var n int
	must(t, x.w.QueryRow(`SELECT count(*) FROM pragma_table_info('flake_files') WHERE name = 'plain_size'`).Scan(&n))
	if n == 0 {
		if _, err := x.w.Exec(migrations[6].sql); err != nil {
			t.Fatalf("add migration 7's columns to a version-5 file: %v", err)
		}
	}
	return x
}

var (
	mflakes = []nixname.Flake{{Org: "omnicorp", Name: "a"}, {Org: "omnicorp", Name: "b"}, {Org: "acme", Name: "tools"}}
	// base is the time the fixture's paths were pushed around.
	base = time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
)

// mpaths is how many store paths the fixture has.
const mpaths = 60

// holds reports whether flake number f holds path i: every flake holds
// the paths divisible by 3 (several flakes with one hash, each with its
// own content), else one or two of them.
func holds(f, i int) bool { return i%3 == 0 || i%(f+2) == 1 || (f == 2 && i%5 == 2) }

// narInfoText is a narinfo of path i as flake f pushed it: about 1.2 KB
// (the size that spilled into overflow pages), every seventh 5 KB (a
// path with many references: over a rowid table's in-page limit too).
func narInfoText(f, i int, refs []string) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "StorePath: /nix/store/%s-pkg%d\nURL: nar/%s\nCompression: xz\nReferences: %s\n", indextest.Hash(i), i, mnarFile(f, i), strings.Join(refs, " "))
	pad := 1000
	if i%7 == 0 {
		pad = 5000
	}
	for b.Len() < pad {
		fmt.Fprintf(&b, "Sig: flake-%d-key:%x\n", f, b.Len()*(i+1))
	}
	return []byte(b.String())
}

// mnarFile is the NAR file flake f pushed path i with: flakes 0 and 1 the
// same file, flake 2 its own compression of it.
func mnarFile(f, i int) string {
	if f == 2 {
		return indextest.NarFile(i + 1000)
	}
	return indextest.NarFile(i)
}

// fillV5 writes, through the index at schema version 5, paths of several
// flakes (shared hashes with per-flake contents, references, re-signed
// narinfos), used at different times, some pinned, some doomed by an
// interrupted collection, and files of every kind, served or not.
func fillV5(t *testing.T, x *Index) {
	ctx := context.Background()
	for f, flake := range mflakes {
		for i := range mpaths {
			if !holds(f, i) {
				continue
			}
			at := base.Add(time.Duration(i) * time.Hour)
			n := index.Nar{File: mnarFile(f, i), Compression: nixname.CompressionXZ, FileHash: fmt.Sprintf("sha256:f%d-%d", f, i),
				FileSize: int64(100 + i), NarHash: fmt.Sprintf("sha256:nar%d", i), NarSize: int64(1000 + i), CreatedAt: at}
			must(t, x.PutNar(ctx, flake, n))
			var refs []string
			for _, j := range []int{i - 1, i / 2, i / 3} {
				if j >= 0 && j != i && holds(f, j) && !slices.Contains(refs, indextest.Hash(j)+"-pkg") {
					refs = append(refs, indextest.Hash(j)+"-pkg")
				}
			}
			slices.Sort(refs)
			p := index.Path{Hash: indextest.Hash(i), StorePath: fmt.Sprintf("/nix/store/%s-pkg%d", indextest.Hash(i), i),
				NarFile: n.File, NarHash: n.NarHash, References: refs, NarInfo: narInfoText(f, i, refs),
				SignedBy: fmt.Sprintf("keyset-%d", f), CreatedAt: at}
			must(t, x.AddPath(ctx, flake, p))
		}
		// Used since: every fourth path a day later.
		var used []string
		for i := 0; i < mpaths; i += 4 {
			used = append(used, indextest.Hash(i))
		}
		must(t, x.TouchPaths(ctx, flake, used, base.Add(24*time.Hour*time.Duration(f+2))))
		must(t, x.UpdateNarInfo(ctx, flake, indextest.Hash(3), []byte("StorePath: re-signed\n"), "keyset-new"))
		must(t, x.PutPin(ctx, flake, index.Pin{Name: "release", Hash: indextest.Hash(6), CreatedAt: base}))
		// A NAR the flake owns that none of its paths names.
		must(t, x.PutNar(ctx, flake, index.Nar{File: indextest.NarFile(5000 + f), Compression: nixname.CompressionXZ, FileHash: "sha256:x",
			NarHash: "sha256:x", CreatedAt: base}))
		must(t, x.PutLog(ctx, flake, index.Log{Drv: indextest.Hash(9) + "-pkg9.drv", BlobKey: fmt.Sprintf("log/%d", f), Encoding: "br"}))
		for k, kind := range nixname.FileKinds() {
			for _, i := range []int{0, 1, 2, 4, 7, 11} {
				file := index.File{Kind: kind, Key: fmt.Sprintf("%s-%d", kind, i), Needs: indextest.Hash(i), Encoding: "zstd",
					Data: []byte(strings.Repeat(fmt.Sprintf("{%d,%d,%d}", f, k, i), 100*(i+1))), Size: -1, CreatedAt: base.Add(time.Duration(i) * time.Hour)}
				if kind == nixname.KindDebugInfo {
					file.Needs = mnarFile(f, i)
				}
				must(t, x.PutFile(ctx, flake, file))
			}
		}
	}
	// An interrupted collection of flake b: paths up to base+30h doomed.
	var all []string
	for i := range mpaths {
		all = append(all, indextest.Hash(i))
	}
	doomed, err := x.DoomPaths(ctx, mflakes[1], all, base.Add(30*time.Hour))
	must(t, err)
	if len(doomed) < 3 {
		t.Fatalf("fixture: %d paths doomed, want several", len(doomed))
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// answers is what every query of the index answers about the fixture, one
// line per answer (errors included).
func answers(t *testing.T, x *Index) []string {
	ctx := context.Background()
	var out []string
	add := func(what string, v any, err error) {
		if err != nil {
			v = "error: " + strings.ReplaceAll(err.Error(), x.file, "FILE")
		}
		out = append(out, fmt.Sprintf("%s = %+v", what, v))
	}
	var hashes []string
	for i := range mpaths + 2 { // two no flake holds
		hashes = append(hashes, indextest.Hash(i))
	}
	for _, flake := range mflakes {
		for _, h := range hashes {
			p, err := x.GetPath(ctx, flake, h)
			add("GetPath "+flake.String()+" "+h, p, err)
		}
		ps, err := x.GetPaths(ctx, flake, hashes)
		slices.SortFunc(ps, func(a, b index.Path) int { return strings.Compare(a.Hash, b.Hash) })
		add("GetPaths "+flake.String(), ps, err)
		miss, err := x.MissingPaths(ctx, flake, hashes)
		add("MissingPaths "+flake.String(), miss, err)
		pins, err := x.Pins(ctx, flake)
		add("Pins "+flake.String(), pins, err)
		var scan []index.PathUse
		err = x.ScanPaths(ctx, flake, func(u index.PathUse) error { scan = append(scan, u); return nil })
		add("ScanPaths "+flake.String(), scan, err)
		for i := range mpaths {
			for _, file := range []string{mnarFile(0, i), mnarFile(2, i)} {
				n, err := x.GetNar(ctx, flake, file)
				add("GetNar "+flake.String()+" "+file, n, err)
			}
		}
		for _, kind := range nixname.FileKinds() {
			for i := range 12 {
				key := fmt.Sprintf("%s-%d", kind, i)
				f, err := x.GetFile(ctx, flake, kind, key)
				add("GetFile "+flake.String()+" "+key, f, err)
				o, err := x.Owners(ctx, kind, key)
				add("Owners "+key, o, err)
			}
		}
		l, err := x.GetLog(ctx, flake, indextest.Hash(9)+"-pkg9.drv")
		add("GetLog "+flake.String(), l, err)
	}
	for _, h := range hashes {
		ps, err := x.PathsOf(ctx, h, nil)
		add("PathsOf "+h, ps, err)
		ps, err = x.PathsOf(ctx, h, mflakes[1:])
		add("PathsOf b,c "+h, ps, err)
		o, err := x.Owners(ctx, nixname.KindNarInfo, h)
		add("Owners narinfo "+h, o, err)
	}
	for i := range mpaths {
		o, err := x.Owners(ctx, nixname.KindNar, mnarFile(2, i))
		add("Owners nar "+mnarFile(2, i), o, err)
	}
	st, err := x.Stats(ctx)
	add("Stats", st, err)
	u, err := x.Usage(ctx)
	add("Usage", u, err)
	fl, err := x.CollectableFlakes(ctx)
	add("CollectableFlakes", fl, err)
	var usage []string
	err = x.ScanUsage(ctx, func(last time.Time, size int64) bool {
		usage = append(usage, fmt.Sprint(last.UnixNano(), size))
		return true
	})
	slices.Sort(usage) // ties in last use come in any order
	add("ScanUsage", usage, err)
	g, err := x.Generation(ctx)
	add("Generation", g, err)
	// What no method reads back: which paths a collection doomed.
	doomed, err := x.queryStrings(ctx, `SELECT flake || ' ' || hash FROM path_use WHERE doomed = 1 ORDER BY 1`)
	add("doomed", doomed, err)
	return out
}

// collect runs a collection's steps on x and returns their answers.
func collect(t *testing.T, x *Index) []string {
	ctx := context.Background()
	var out []string
	add := func(what string, v any, err error) { out = append(out, fmt.Sprintf("%s = %+v (%v)", what, v, err)) }
	var all []string
	for i := range mpaths {
		all = append(all, indextest.Hash(i))
	}
	cutoff := base.Add(40 * time.Hour)
	for _, flake := range mflakes {
		if flake == mflakes[2] {
			// Spared, as a collection spares what an interrupted one doomed.
			add("SparePaths "+flake.String(), nil, x.SparePaths(ctx, flake, nil))
		}
		doomed, err := x.DoomPaths(ctx, flake, all, cutoff)
		slices.Sort(doomed)
		add("DoomPaths "+flake.String(), doomed, err)
		n, err := x.DeleteDoomed(ctx, flake)
		add("DeleteDoomed "+flake.String(), n, err)
		rel, err := x.ReleaseNars(ctx, flake, cutoff)
		add("ReleaseNars "+flake.String(), rel, err)
		var files []index.FileUse
		err = x.ScanFiles(ctx, flake, cutoff, func(u index.FileUse) error { files = append(files, u); return nil })
		add("ScanFiles "+flake.String(), files, err)
		logs, err := x.ExpiredLogs(ctx, flake, cutoff)
		add("ExpiredLogs "+flake.String(), logs, err)
		dropped, err := x.DropFiles(ctx, flake, cutoff)
		add("DropFiles "+flake.String(), dropped, err)
	}
	nars, err := x.DoomNars(ctx, cutoff)
	add("DoomNars", nars, err)
	var files []string
	for _, n := range nars {
		files = append(files, n.File)
	}
	add("ForgetNars", nil, x.ForgetNars(ctx, files))
	add("BumpGeneration", nil, x.BumpGeneration(ctx))
	// Pushes after it: a new path on a kept one, one referencing a deleted
	// one, and a re-push of kept content.
	a := mflakes[0]
	n := index.Nar{File: indextest.NarFile(9000), Compression: nixname.CompressionXZ, FileHash: "sha256:n", NarHash: "sha256:n", CreatedAt: base.Add(50 * time.Hour)}
	add("PutNar", nil, x.PutNar(ctx, a, n))
	kept, err := x.GetPath(ctx, a, indextest.Hash(0))
	add("GetPath kept", kept.Hash, err)
	p := index.Path{Hash: indextest.Hash(9000), StorePath: "/nix/store/" + indextest.Hash(9000) + "-new", NarFile: n.File, NarHash: n.NarHash,
		References: []string{indextest.Hash(0) + "-pkg"}, NarInfo: narInfoText(0, 9000, nil), CreatedAt: base.Add(50 * time.Hour)}
	add("AddPath on kept", nil, x.AddPath(ctx, a, p))
	p.Hash, p.References = indextest.Hash(9001), []string{indextest.Hash(1) + "-pkg"}
	add("AddPath on deleted", nil, x.AddPath(ctx, a, p))
	kept.CreatedAt = base.Add(60 * time.Hour)
	add("AddPath re-push", nil, x.AddPath(ctx, a, kept))
	return out
}

// TestMigrateRowidTables: a database at schema version 5, migrated,
// answers every lookup and collection query as the same database left at
// version 5 does, and has the new layout.
func TestMigrateRowidTables(t *testing.T) {
	dir := t.TempDir()
	oldFile, newFile := filepath.Join(dir, "v5.db"), filepath.Join(dir, "v6.db")
	x := openV5(t, oldFile)
	fillV5(t, x)
	must(t, x.Close())
	copyFile(t, oldFile, newFile)

	old := openV5(t, oldFile)
	if v := userVersion(t, old); v != v5 {
		t.Fatalf("old copy at version %d", v)
	}
	migrated := open(t, newFile)
	if v := userVersion(t, migrated); v != len(migrations) {
		t.Fatalf("migrated to version %d, want %d", v, len(migrations))
	}
	// Compacted: the old tables' pages are out of the file, and the WAL
	// that the compaction went through is emptied.
	var free int
	must(t, migrated.r.QueryRow(`PRAGMA freelist_count`).Scan(&free))
	if fi, err := os.Stat(newFile + "-wal"); free != 0 || err != nil || fi.Size() != 0 {
		t.Errorf("after the migration: %d free pages, WAL %v (%v); want a compacted file and an empty WAL", free, fi, err)
	}
	for _, table := range []string{"flake_paths", "flake_files"} {
		var ddl string
		must(t, migrated.r.QueryRow(`SELECT sql FROM sqlite_schema WHERE name = ?`, table).Scan(&ddl))
		if strings.Contains(strings.ToUpper(ddl), "WITHOUT ROWID") {
			t.Errorf("%s is still a WITHOUT ROWID table: %s", table, ddl)
		}
	}

	want, got := answers(t, old), answers(t, migrated)
	if len(want) < 1000 {
		t.Fatalf("only %d answers compared", len(want))
	}
	diff(t, "before a collection", want, got)
	// The fixture is what it says: shared hashes, doomed and pinned paths.
	joined := strings.Join(want, "\n")
	for _, s := range []string{"doomed = [omnicorp/b ", "Pinned:true", "SignedBy:keyset-new", "not found"} {
		if !strings.Contains(joined, s) {
			t.Errorf("the fixture's answers contain no %q", s)
		}
	}

	diff(t, "a collection", collect(t, old), collect(t, migrated))
	diff(t, "after a collection", answers(t, old), answers(t, migrated))
}

func diff(t *testing.T, when string, want, got []string) {
	t.Helper()
	if len(want) != len(got) {
		t.Errorf("%s: %d answers at version 5, %d migrated", when, len(want), len(got))
	}
	bad := 0
	for i := range min(len(want), len(got)) {
		if want[i] != got[i] {
			if bad++; bad <= 5 {
				t.Errorf("%s: answer differs:\nv5:       %.600s\nmigrated: %.600s", when, want[i], got[i])
			}
		}
	}
	if bad > 5 {
		t.Errorf("%s: %d answers differ in all", when, bad)
	}
}

func userVersion(t *testing.T, x *Index) int {
	t.Helper()
	var v int
	must(t, x.r.QueryRow(`PRAGMA user_version`).Scan(&v))
	return v
}

// schema is the database's schema (every table and index's SQL).
func schema(t *testing.T, x *Index) string {
	t.Helper()
	rows, err := x.r.Query(`SELECT type || ' ' || name || ': ' || coalesce(sql, '') FROM sqlite_schema ORDER BY name`)
	must(t, err)
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		must(t, rows.Scan(&s))
		out = append(out, s)
	}
	must(t, rows.Err())
	return strings.Join(out, "\n")
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	src, err := os.Open(from)
	must(t, err)
	defer src.Close()
	dst, err := os.Create(to)
	must(t, err)
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
	must(t, dst.Close())
}

// TestMigrationFailureKeepsV5: migration 6 done and then a failure in the
// same transaction (as any error in it) leaves version 5's schema and
// rows; the next start migrates.
func TestMigrationFailureKeepsV5(t *testing.T) {
	file, wantSchema, want := filledV5(t)

	boom := errors.New("injected failure")
	failing := append(slices.Clip(migrations[:v5+1]), migration{sql: `SELECT 1`, after: func(context.Context, *sql.Tx) error { return boom }})
	if _, err := openWith(context.Background(), file, failing); !errors.Is(err, boom) {
		t.Fatalf("open with a failing migration: %v; want the injected failure", err)
	}
	checkV5(t, file, wantSchema, want)
	migrated := open(t, file)
	if v := userVersion(t, migrated); v != len(migrations) {
		t.Fatalf("after the failure, the next open migrated to %d", v)
	}
}

// filledV5 makes an index file at schema version 5 filled by fillV5 and
// returns it with its schema and answers.
func filledV5(t *testing.T) (file, wantSchema string, want []string) {
	t.Helper()
	file = filepath.Join(t.TempDir(), "index.db")
	x := openV5(t, file)
	fillV5(t, x)
	wantSchema, want = schema(t, x), answers(t, x)
	must(t, x.Close())
	return file, wantSchema, want
}

// checkV5 checks that file is still at schema version 5 with the schema
// and answers given.
func checkV5(t *testing.T, file, wantSchema string, want []string) {
	t.Helper()
	x := openV5(t, file)
	if v := userVersion(t, x); v != v5 {
		t.Fatalf("user_version %d after the failed migration, want %d", v, v5)
	}
	if got := schema(t, x); got != wantSchema {
		t.Fatalf("schema changed by the failed migration:\n%s\nwant:\n%s", got, wantSchema)
	}
	diff(t, "after the failed migration", want, answers(t, x))
	must(t, x.Close())
}

// crashEnv names, in a child process of TestMigrationCrashKeepsV5, the
// database to migrate and die in.
const crashEnv = "FLAKEGATE_SQLITE_MIGRATION_CRASH"

// TestMigrationCrashKeepsV5: a process that dies in the middle of
// migration 6, its copy written to disk (the WAL) but not committed,
// leaves version 5's schema and rows.
func TestMigrationCrashKeepsV5(t *testing.T) {
	if file := os.Getenv(crashEnv); file != "" {
		crashChild(file)
		return
	}
	file, wantSchema, want := filledV5(t)

	cmd := exec.Command(os.Args[0], "-test.run=^TestMigrationCrashKeepsV5$")
	cmd.Env = append(os.Environ(), crashEnv+"="+file)
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 3 {
		t.Fatalf("child: %v (want exit status 3): %s", err, out)
	}
	// The child died with migration 6's rows in the WAL, uncommitted.
	if fi, err := os.Stat(file + "-wal"); err != nil || fi.Size() < 64<<10 {
		t.Fatalf("no uncommitted migration in the WAL (%v, %v): the crash tested nothing", fi, err)
	}
	checkV5(t, file, wantSchema, want)
	migrated := open(t, file)
	if v := userVersion(t, migrated); v != len(migrations) {
		t.Fatalf("after the crash, the next open migrated to %d", v)
	}
}

// crashChild migrates file with a page cache of a few pages (so that
// migration 6's copy spills to the WAL before the commit) and exits
// without committing or rolling back.
func crashChild(file string) {
	migs := slices.Clip(migrations[:v5])
	migs = append(migs, migration{sql: `PRAGMA cache_size = 4`}, migrations[v5],
		migration{sql: `SELECT 1`, after: func(context.Context, *sql.Tx) error { os.Exit(3); return nil }})
	_, err := openWith(context.Background(), file, migs)
	fmt.Fprintln(os.Stderr, "migration did not crash:", err)
	os.Exit(1)
}

// TestMigrateFileDigests: migration 7 keeps a version-6 database's files
// as they were, marked as recorded before digests and sizes (digest "",
// size -1), so that the server completes them on their first read.
func TestMigrateFileDigests(t *testing.T) {
	file := filepath.Join(t.TempDir(), "v6.db")
	x := openV(t, file, migrations[:6])
	flake := mflakes[0]
	created := base.Add(time.Hour)
	// Written as a version-6 server did (this package's PutFile writes
	// the new columns).
	if _, err := x.w.Exec(`INSERT INTO flake_paths (hash, flake, store_path, nar_file, nar_hash, refs, narinfo, created_at) VALUES (?, ?, ?, ?, ?, '', 'x', ?)`,
		indextest.Hash(1), flake.String(), "/nix/store/"+indextest.Hash(1)+"-pkg1", indextest.NarFile(1), "sha256:n", created.UnixNano()); err != nil {
		t.Fatal(err)
	}
	if _, err := x.w.Exec(`INSERT INTO flake_files (kind, key, flake, needs, encoding, data, created_at) VALUES (?, ?, ?, ?, 'zstd', ?, ?)`,
		string(nixname.KindListing), indextest.Hash(1), flake.String(), indextest.Hash(1), []byte("listing"), created.UnixNano()); err != nil {
		t.Fatal(err)
	}
	must(t, x.Close())
	migrated := open(t, file)
	if v := userVersion(t, migrated); v != len(migrations) {
		t.Fatalf("migrated to version %d, want %d", v, len(migrations))
	}
	ctx := context.Background()
	f, err := migrated.GetFile(ctx, flake, nixname.KindListing, indextest.Hash(1))
	if err != nil || string(f.Data) != "listing" || f.Encoding != "zstd" || f.Digest != "" || f.Size != -1 || !f.CreatedAt.Equal(created) {
		t.Fatalf("a version-6 file after the migration: %+v, %v; want its data, digest \"\" and size -1", f, err)
	}
	must(t, migrated.UpdateFileDigest(ctx, flake, f.Kind, f.Key, f.CreatedAt, "sha256:l", 7))
	if f, err := migrated.GetFile(ctx, flake, nixname.KindListing, indextest.Hash(1)); err != nil || f.Digest != "sha256:l" || f.Size != 7 {
		t.Fatalf("completed: %+v, %v", f, err)
	}
}
