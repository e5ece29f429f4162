// Package sqlite is the default index.Index, in one SQLite database file
// (modernc.org/sqlite, WAL mode).
//
// One connection writes (transactions BEGIN IMMEDIATE, synchronous=FULL);
// a pool of query-only connections reads in parallel with it, so narinfo
// lookups never queue behind uploads. Several processes may share the file:
// SQLite's locking and a busy timeout serialise their writers.
package sqlite

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"runtime"
	"slices"
	"strings"
	"time"

	_ "modernc.org/sqlite" // database/sql driver "sqlite"

	"github.com/flakegate/flakegate/internal/index"
	"github.com/flakegate/flakegate/internal/nixname"
)

// busyTimeout is how long a connection waits for another writer's lock.
const busyTimeout = 30 * time.Second

// Index is a SQLite index.
type Index struct {
	w *sql.DB // one connection: all writes
	r *sql.DB // pool of query-only connections

	// Statements of every upload and NAR lookup, prepared once (preparing
	// each time was ≈ 9 % of the server's CPU in a push; docs/benchmarks.md).
	getPath, getNar, getOwnedNar *sql.Stmt // on r
	claim, own                   *sql.Stmt // on w

	file string // the database file (the collector's lock is beside it)
}

var (
	_ index.Index          = (*Index)(nil)
	_ index.NarInfoUpdater = (*Index)(nil)
	_ index.Collectable    = (*Index)(nil)
)

// Open opens (creating and migrating if needed) the database at path.
func Open(ctx context.Context, path string) (*Index, error) {
	return openWith(ctx, path, migrations)
}

// openWith is Open migrating with migs (tests: an older schema, a failing
// step).
func openWith(ctx context.Context, path string, migs []migration) (*Index, error) {
	if path == "" {
		return nil, errors.New("sqlite index: empty path")
	}
	dsn := func(extra string) string {
		q := url.Values{}
		q.Set("_busy_timeout", fmt.Sprint(busyTimeout.Milliseconds()))
		q.Set("_journal_mode", "WAL")
		q.Set("_synchronous", "FULL")
		q.Set("_txlock", "immediate")
		if extra != "" {
			q.Set(extra, "1")
		}
		return "file:" + (&url.URL{Path: path}).EscapedPath() + "?" + q.Encode()
	}
	w, err := sql.Open("sqlite", dsn(""))
	if err != nil {
		return nil, fmt.Errorf("open sqlite index %s: %w", path, err)
	}
	w.SetMaxOpenConns(1)
	w.SetConnMaxIdleTime(0)
	x := &Index{w: w, file: path}
	if err := x.migrate(ctx, migs); err != nil {
		w.Close()
		return nil, fmt.Errorf("migrate sqlite index %s: %w", path, err)
	}
	r, err := sql.Open("sqlite", dsn("_query_only"))
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("open sqlite index %s: %w", path, err)
	}
	n := max(4, 2*runtime.GOMAXPROCS(0))
	r.SetMaxOpenConns(n)
	r.SetMaxIdleConns(n)
	x.r = r
	for _, p := range []struct {
		db   *sql.DB
		stmt **sql.Stmt
		sql  string
	}{
		{r, &x.getPath, `SELECT ` + pathCols + ` FROM flake_paths WHERE hash = ? AND flake = ?`},
		{r, &x.getNar, `SELECT ` + narCols + ` FROM nars n WHERE n.file = ?`},
		{r, &x.getOwnedNar, `SELECT ` + narCols + ` FROM nar_owners o JOIN nars n ON n.file = o.file WHERE o.file = ? AND o.flake = ?`},
		{w, &x.claim, `INSERT INTO nars (file, compression, file_hash, file_size, nar_hash, nar_size, created_at, touched_at)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?)
			ON CONFLICT (file) DO UPDATE SET touched_at = max(touched_at, excluded.touched_at) WHERE deleting = 0
			RETURNING created_at`},
		{w, &x.own, `INSERT INTO nar_owners (file, flake, touched_at) VALUES (?, ?, ?)
			ON CONFLICT DO UPDATE SET touched_at = max(touched_at, excluded.touched_at)`},
	} {
		if *p.stmt, err = p.db.PrepareContext(ctx, p.sql); err != nil {
			x.Close()
			return nil, fmt.Errorf("prepare sqlite index statement: %w", err)
		}
	}
	return x, nil
}

// migration is one schema step: SQL, then (optional) Go work in the same
// transaction.
type migration struct {
	sql   string
	after func(ctx context.Context, tx *sql.Tx) error
}

// migrations are applied in order; PRAGMA user_version counts those done.
var migrations = []migration{
	{sql: `CREATE TABLE nars (
		file        TEXT PRIMARY KEY,
		compression TEXT NOT NULL,
		file_hash   TEXT NOT NULL,
		file_size   INTEGER NOT NULL,
		nar_hash    TEXT NOT NULL,
		nar_size    INTEGER NOT NULL,
		created_at  INTEGER NOT NULL
	) WITHOUT ROWID;
	CREATE TABLE nar_owners (
		file  TEXT NOT NULL REFERENCES nars(file),
		flake TEXT NOT NULL,
		PRIMARY KEY (file, flake)
	) WITHOUT ROWID;
	CREATE TABLE paths (
		hash       TEXT PRIMARY KEY,
		store_path TEXT NOT NULL,
		nar_file   TEXT NOT NULL,
		refs       TEXT NOT NULL,
		narinfo    BLOB NOT NULL,
		signed_by  TEXT NOT NULL DEFAULT '',
		created_at INTEGER NOT NULL
	) WITHOUT ROWID;
	CREATE TABLE path_owners (
		hash  TEXT NOT NULL REFERENCES paths(hash),
		flake TEXT NOT NULL,
		PRIMARY KEY (hash, flake)
	) WITHOUT ROWID;
	CREATE INDEX path_owners_by_flake ON path_owners (flake, hash);
	CREATE TABLE logs (
		flake      TEXT NOT NULL,
		drv        TEXT NOT NULL,
		blob_key   TEXT NOT NULL,
		created_at INTEGER NOT NULL,
		PRIMARY KEY (flake, drv)
	) WITHOUT ROWID;`},
	// 2: per-flake narinfos (issue 12: one narinfo per store path across
	// all flakes let a pusher of one flake probe, pre-empt and poison
	// another's paths). Each flake that owned a path gets its own copy of
	// the narinfo it served; then copies a flake could not have pushed
	// itself are dropped (see pruneForeign).
	{sql: `CREATE TABLE flake_paths (
		hash       TEXT NOT NULL,
		flake      TEXT NOT NULL,
		store_path TEXT NOT NULL,
		nar_file   TEXT NOT NULL,
		nar_hash   TEXT NOT NULL,
		refs       TEXT NOT NULL,
		narinfo    BLOB NOT NULL,
		signed_by  TEXT NOT NULL DEFAULT '',
		created_at INTEGER NOT NULL,
		PRIMARY KEY (hash, flake)
	) WITHOUT ROWID;
	INSERT INTO flake_paths (hash, flake, store_path, nar_file, nar_hash, refs, narinfo, signed_by, created_at)
		SELECT p.hash, o.flake, p.store_path, p.nar_file, coalesce(n.nar_hash, ''), p.refs, p.narinfo, p.signed_by, p.created_at
		FROM path_owners o JOIN paths p ON p.hash = o.hash LEFT JOIN nars n ON n.file = p.nar_file;
	DROP TABLE path_owners;
	DROP TABLE paths;
	CREATE INDEX flake_paths_by_flake ON flake_paths (flake, hash);`, after: pruneForeign},
	// 3: the rest of Nix's binary-cache files (issue 13): per-flake NAR
	// listings, debug info links, realisations and build trace entries,
	// and the Content-Encoding of build logs.
	{sql: `CREATE TABLE flake_files (
		kind       TEXT NOT NULL,
		key        TEXT NOT NULL,
		flake      TEXT NOT NULL,
		needs      TEXT NOT NULL,
		encoding   TEXT NOT NULL DEFAULT '',
		data       BLOB NOT NULL,
		created_at INTEGER NOT NULL,
		PRIMARY KEY (kind, key, flake)
	) WITHOUT ROWID;
	ALTER TABLE logs ADD COLUMN encoding TEXT NOT NULL DEFAULT '';`},
	// 4: garbage collection (issue 14): when each path was last used (and
	// whether a collection doomed it) and
	// each NAR ownership and record last touched by a push (existing rows:
	// their creation time), NAR records being deleted, pins, and the
	// generation counter servers watch to drop cached answers.
	{sql: `ALTER TABLE flake_paths ADD COLUMN last_used INTEGER NOT NULL DEFAULT 0;
	ALTER TABLE flake_paths ADD COLUMN doomed INTEGER NOT NULL DEFAULT 0;
	UPDATE flake_paths SET last_used = created_at;
	ALTER TABLE nars ADD COLUMN touched_at INTEGER NOT NULL DEFAULT 0;
	ALTER TABLE nars ADD COLUMN deleting INTEGER NOT NULL DEFAULT 0;
	UPDATE nars SET touched_at = created_at;
	ALTER TABLE nar_owners ADD COLUMN touched_at INTEGER NOT NULL DEFAULT 0;
	UPDATE nar_owners SET touched_at = coalesce((SELECT n.created_at FROM nars n WHERE n.file = nar_owners.file), 0);
	CREATE INDEX flake_paths_by_nar ON flake_paths (flake, nar_file);
	CREATE INDEX nar_owners_by_flake ON nar_owners (flake, file);
	-- A collection's scan of a flake reads this index only: the rows hold
	-- the narinfo text (kilobytes, in overflow pages read to reach any
	-- later column). It has flake_paths_by_flake's prefix, which it replaces.
	DROP INDEX flake_paths_by_flake;
	CREATE INDEX flake_paths_by_flake ON flake_paths (flake, hash, last_used, nar_file, refs);
	CREATE TABLE pins (
		flake      TEXT NOT NULL,
		name       TEXT NOT NULL,
		hash       TEXT NOT NULL,
		store_path TEXT NOT NULL,
		created_at INTEGER NOT NULL,
		PRIMARY KEY (flake, name)
	) WITHOUT ROWID;
	CREATE INDEX pins_by_path ON pins (flake, hash);
	CREATE TABLE gc_state (
		id         INTEGER PRIMARY KEY CHECK (id = 1),
		generation INTEGER NOT NULL
	);
	INSERT INTO gc_state (id, generation) VALUES (1, 0);`},
	// 5: garbage collection, continued (issue 14). When each path was last
	// used and whether a collection doomed it move to a side table: a
	// read's touch and a collection's doom rewrote the row holding the
	// narinfo text (kilobytes); they now write a row of a few bytes
	// (measured in docs/benchmarks.md). Files are found by flake (a
	// collection drops those whose path is gone), and build logs can be
	// marked as being deleted.
	{sql: `CREATE TABLE path_use (
		flake     TEXT NOT NULL,
		hash      TEXT NOT NULL,
		last_used INTEGER NOT NULL,
		doomed    INTEGER NOT NULL DEFAULT 0,
		PRIMARY KEY (flake, hash)
	) WITHOUT ROWID;
	-- Read from migration 4's covering index, not the kilobyte rows. A
	-- doomed mark (an interrupted collection's) is not carried: the next
	-- collection spares every doomed path first anyway.
	INSERT INTO path_use (flake, hash, last_used)
		SELECT flake, hash, last_used FROM flake_paths INDEXED BY flake_paths_by_flake ORDER BY flake, hash;
	-- flake_paths keeps its last_used and doomed columns, unused from now
	-- on (new rows get the defaults), and flake_paths_by_flake, which
	-- still covers what a collection's scan reads there: dropping a
	-- column rewrites every row (over ten minutes for a million paths,
	-- measured) and a new index reads them all, where this migration
	-- reads one index.
	CREATE INDEX flake_files_by_flake ON flake_files (flake, needs);
	ALTER TABLE logs ADD COLUMN deleting INTEGER NOT NULL DEFAULT 0;`},
	// 6: flake_paths and flake_files become rowid tables (issue 16). In a
	// WITHOUT ROWID table a row is stored in an index B-tree, whose pages
	// (4 KiB) hold at most ≈ 1 KB of a row: a path's row (≈ 1.2 KB, the
	// narinfo text and its columns) spilled its tail into an overflow page
	// of its own, ≈ 5.7 KB of disk per path, 72 % of it unused. A rowid
	// table's leaf holds rows up to ≈ 4 KB in place (docs/benchmarks.md:
	// bytes per path before and after). The lookup keys become indexes:
	// (hash, flake) the primary key (narinfo lookups, owners of a hash);
	// (flake, hash) a flake's paths in order (a collection's scan, missing
	// paths, usage); (flake, nar_file, hash) whether a flake's path names a
	// NAR (releasing NARs) and, covering, the usage scan. Migration 4's
	// covering index of the scan (with the references) is gone: the rows
	// it spared reading are now in place. The unused last_used and doomed
	// columns (moved to path_use by migration 5) are dropped. A
	// flake_files row (a NAR listing: kilobytes) had the same spill.
	// Everything is copied in key order in this one transaction; the
	// file is then compacted (migrate).
	{sql: `CREATE TABLE flake_paths_v6 (
		hash       TEXT NOT NULL,
		flake      TEXT NOT NULL,
		store_path TEXT NOT NULL,
		nar_file   TEXT NOT NULL,
		nar_hash   TEXT NOT NULL,
		refs       TEXT NOT NULL,
		narinfo    BLOB NOT NULL,
		signed_by  TEXT NOT NULL DEFAULT '',
		created_at INTEGER NOT NULL,
		PRIMARY KEY (hash, flake)
	);
	INSERT INTO flake_paths_v6 (hash, flake, store_path, nar_file, nar_hash, refs, narinfo, signed_by, created_at)
		SELECT hash, flake, store_path, nar_file, nar_hash, refs, narinfo, signed_by, created_at FROM flake_paths ORDER BY hash, flake;
	DROP TABLE flake_paths;
	ALTER TABLE flake_paths_v6 RENAME TO flake_paths;
	CREATE INDEX flake_paths_by_flake ON flake_paths (flake, hash);
	CREATE INDEX flake_paths_by_nar ON flake_paths (flake, nar_file, hash);
	CREATE TABLE flake_files_v6 (
		kind       TEXT NOT NULL,
		key        TEXT NOT NULL,
		flake      TEXT NOT NULL,
		needs      TEXT NOT NULL,
		encoding   TEXT NOT NULL DEFAULT '',
		data       BLOB NOT NULL,
		created_at INTEGER NOT NULL,
		PRIMARY KEY (kind, key, flake)
	);
	INSERT INTO flake_files_v6 (kind, key, flake, needs, encoding, data, created_at)
		SELECT kind, key, flake, needs, encoding, data, created_at FROM flake_files ORDER BY kind, key, flake;
	DROP TABLE flake_files;
	ALTER TABLE flake_files_v6 RENAME TO flake_files;
	-- (kind, key): what the WITHOUT ROWID table's index held implicitly
	-- (its primary key), in the order a dry run's scan pages by.
	CREATE INDEX flake_files_by_flake ON flake_files (flake, needs, kind, key);`},
	// 7: a file's union agreement key and decoded size, computed at
	// upload (adversarial review r4, F3: a union read decoded every
	// owner's listing to compare them, and a client not accepting the
	// stored encoding got it decoded whole into memory). Rows recorded
	// before have plain_size -1 and are completed on their first read
	// (UpdateFileDigest). digest_of is the created_at of the upload they
	// describe: a replica of an older version replacing the file keeps
	// them but not created_at, and the stale pair is then recomputed, not
	// served (review of the fixes, 2026-12-05). Adding columns with
	// constant defaults rewrites no row.
	{sql: `ALTER TABLE flake_files ADD COLUMN digest TEXT NOT NULL DEFAULT '';
	ALTER TABLE flake_files ADD COLUMN plain_size INTEGER NOT NULL DEFAULT -1;
	ALTER TABLE flake_files ADD COLUMN digest_of INTEGER NOT NULL DEFAULT 0;`},
}

// pruneForeign removes, after migration 2, the per-flake copies of a
// narinfo that the flake could not have pushed itself: before per-flake
// narinfos, a flake that pushed a path another flake had pushed first
// (same NarHash) served the first pusher's narinfo, whose NAR file or
// references it may not own. Such a copy would name another flake's paths
// and break the flake's closure; dropping it loses nothing the flake
// pushed (its own narinfo was never stored), and its next push of the path
// stores its own. Removal repeats until no copy references a dropped one.
func pruneForeign(ctx context.Context, tx *sql.Tx) error {
	if _, err := tx.ExecContext(ctx, `DELETE FROM flake_paths AS p WHERE NOT EXISTS
		(SELECT 1 FROM nar_owners o WHERE o.file = p.nar_file AND o.flake = p.flake)`); err != nil {
		return fmt.Errorf("drop narinfos whose NAR the flake does not own: %w", err)
	}
	// refs is a space-separated list of "<hash>-<name>" (characters of a
	// store path name: no quote, no backslash), read as a JSON array.
	for {
		res, err := tx.ExecContext(ctx, `DELETE FROM flake_paths AS p WHERE p.refs <> '' AND EXISTS (
			SELECT 1 FROM json_each('["' || replace(p.refs, ' ', '","') || '"]') AS r
			WHERE substr(r.value, 1, 32) <> p.hash AND NOT EXISTS (
				SELECT 1 FROM flake_paths q WHERE q.hash = substr(r.value, 1, 32) AND q.flake = p.flake))`)
		if err != nil {
			return fmt.Errorf("drop narinfos with references the flake does not own: %w", err)
		}
		if n, err := res.RowsAffected(); err != nil || n == 0 {
			return err
		}
	}
}

// migrate applies the steps of migs not applied yet, all in one
// transaction: an interrupted migration (crash, error) leaves the schema
// and rows as they were. When the steps freed more than half of the file
// (a table rebuilt), it is then compacted (compact).
func (x *Index) migrate(ctx context.Context, migs []migration) error {
	tx, err := x.w.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	var v int
	if err := tx.QueryRowContext(ctx, `PRAGMA user_version`).Scan(&v); err != nil {
		return err
	}
	if v > len(migrations) {
		return fmt.Errorf("database schema version %d is newer than this server (%d)", v, len(migrations))
	}
	if v >= len(migs) {
		return nil
	}
	for i := v; i < len(migs); i++ {
		m := migs[i]
		if _, err := tx.ExecContext(ctx, m.sql); err != nil {
			return fmt.Errorf("migration %d: %w", i+1, err)
		}
		if m.after != nil {
			if err := m.after(ctx, tx); err != nil {
				return fmt.Errorf("migration %d: %w", i+1, err)
			}
		}
	}
	if _, err := tx.ExecContext(ctx, fmt.Sprintf(`PRAGMA user_version = %d`, len(migs))); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return err
	}
	if v > 0 {
		x.compact(ctx, v, len(migs))
	}
	return nil
}

// compact rewrites the database file (VACUUM) after a migration from
// schema version from to to when more than half of its pages are free: a
// rebuilt table's old pages stay in the file, for later inserts, until
// then (migration 6 at a million paths: 5.7 GB of which ≈ 4.2 GB free).
// The migration is committed whatever happens here: a failure (the VACUUM
// needs free disk of about the compacted size beside the file, for the
// WAL, and as much in SQLite's temporary directory, TMPDIR) only leaves
// the file larger, and is logged with the command that compacts it by hand.
func (x *Index) compact(ctx context.Context, from, to int) {
	var free, pages int64
	if err := x.w.QueryRowContext(ctx, `SELECT freelist_count, page_count FROM pragma_freelist_count(), pragma_page_count()`).Scan(&free, &pages); err != nil || free*2 <= pages {
		return
	}
	start := time.Now()
	slog.Info("sqlite index: compacting the file after the schema migration", "file", x.file, "from", from, "to", to, "free_pages", free, "pages", pages)
	if _, err := x.w.ExecContext(ctx, `VACUUM`); err != nil {
		slog.Warn("sqlite index: compacting after the migration failed; the index works, its file stays larger until compacted (with the servers stopped: sqlite3 FILE VACUUM)",
			"file", x.file, "err", err)
		return
	}
	// The VACUUM went through the WAL: empty it (else the WAL file keeps
	// the compacted size on disk until the last connection closes).
	if _, err := x.w.ExecContext(ctx, `PRAGMA wal_checkpoint(TRUNCATE)`); err != nil {
		slog.Warn("sqlite index: truncating the WAL after compacting failed; it is emptied at the next checkpoint", "file", x.file, "err", err)
	}
	slog.Info("sqlite index: compacted", "file", x.file, "took", time.Since(start).Round(time.Millisecond))
}

// Close closes both connection pools.
func (x *Index) Close() error {
	var errs []error
	for _, st := range []*sql.Stmt{x.getPath, x.getNar, x.getOwnedNar, x.claim, x.own} {
		if st != nil {
			errs = append(errs, st.Close())
		}
	}
	if x.r != nil {
		errs = append(errs, x.r.Close())
	}
	errs = append(errs, x.w.Close())
	return errors.Join(errs...)
}

// write runs fn in one IMMEDIATE transaction on the writer connection.
func (x *Index) write(ctx context.Context, what string, fn func(tx *sql.Tx) error) error {
	tx, err := x.w.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("%s: begin: %w", what, err)
	}
	defer tx.Rollback()
	if err := fn(tx); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("%s: commit: %w", what, err)
	}
	return nil
}

// PutNar records a verified NAR and flake's ownership of it, both marked
// as touched now; ErrBusy while a collection deletes the file.
func (x *Index) PutNar(ctx context.Context, flake nixname.Flake, n index.Nar) error {
	if err := index.CheckNar(flake, n); err != nil {
		return err
	}
	created := index.CreatedAt(n.CreatedAt)
	return x.write(ctx, "put nar "+n.File, func(tx *sql.Tx) error {
		if _, err := x.claimNar(ctx, tx, n, created); err != nil {
			return err
		}
		_, err := tx.StmtContext(ctx, x.own).ExecContext(ctx, n.File, flake.String(), created.UnixNano())
		return err
	})
}

// OwnClaimedNar records that flake owns n, claimed by ClaimNar at claim
// (see index.Collectable): ErrBusy when the claimed record is gone, doomed
// or another (made again after a collection forgot it).
func (x *Index) OwnClaimedNar(ctx context.Context, flake nixname.Flake, n index.Nar, claim time.Time) error {
	if err := index.CheckNar(flake, n); err != nil {
		return err
	}
	created := index.CreatedAt(n.CreatedAt)
	return x.write(ctx, "own nar "+n.File, func(tx *sql.Tx) error {
		var file string
		err := tx.QueryRowContext(ctx, `UPDATE nars SET touched_at = max(touched_at, ?1) WHERE file = ?2 AND deleting = 0 AND created_at = ?3 RETURNING file`,
			created.UnixNano(), n.File, claim.UnixNano()).Scan(&file)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("nar %s: its claim was collected: %w", n.File, index.ErrBusy)
		}
		if err != nil {
			return err
		}
		_, err = tx.StmtContext(ctx, x.own).ExecContext(ctx, n.File, flake.String(), created.UnixNano())
		return err
	})
}

// ClaimNar records a NAR (no owner) as touched now, before its blob is
// committed, and returns the record's creation time; ErrBusy while a
// collection deletes the file.
//
// The claim is committed without an fsync (synchronous=NORMAL for this one
// transaction): what it is for — ordering the upload with a collection's
// DoomNars (internal/gc, rule 5) — needs it visible to every connection,
// which a WAL commit is at once, not durable. PutNar repeats the claim in
// its own fsync'd commit, which also makes this one durable (the WAL is
// synced in order). A crash in between loses at most the claim, and with it
// nothing the client was told: the upload was not answered yet (the blob a
// crash may leave committed without a record is overwritten by the next
// upload of that file). One fsync less per NAR upload (docs/benchmarks.md).
func (x *Index) ClaimNar(ctx context.Context, n index.Nar) (time.Time, error) {
	if n.File == "" {
		return time.Time{}, errors.New("claim nar: empty file name")
	}
	conn, err := x.w.Conn(ctx)
	if err != nil {
		return time.Time{}, fmt.Errorf("claim nar %s: %w", n.File, err)
	}
	defer conn.Close()
	// PRAGMA synchronous cannot change inside a transaction: set it around.
	// SQLite applies the pragma when it compiles the statement, so an error
	// (a request's context cancelled while it runs) does not say it was not
	// applied: it is restored below whatever happened.
	var claim time.Time
	if _, err = conn.ExecContext(ctx, `PRAGMA synchronous = NORMAL`); err != nil {
		err = fmt.Errorf("claim nar %s: %w", n.File, err)
	} else {
		claim, err = x.claimWith(ctx, conn, n)
	}
	// Back to FULL before the connection serves another write, whatever
	// happened; a connection that cannot be reset is discarded (a new one
	// gets the DSN's synchronous=FULL).
	if _, rerr := conn.ExecContext(context.WithoutCancel(ctx), `PRAGMA synchronous = FULL`); rerr != nil {
		_ = conn.Raw(func(any) error { return driver.ErrBadConn })
		return time.Time{}, errors.Join(err, fmt.Errorf("claim nar %s: restore synchronous=FULL: %w", n.File, rerr))
	}
	return claim, err
}

// claimWith claims n in one transaction on conn: the record's creation time.
func (x *Index) claimWith(ctx context.Context, conn *sql.Conn, n index.Nar) (time.Time, error) {
	tx, err := conn.BeginTx(ctx, nil)
	if err != nil {
		return time.Time{}, fmt.Errorf("claim nar %s: begin: %w", n.File, err)
	}
	defer tx.Rollback()
	claim, err := x.claimNar(ctx, tx, n, index.CreatedAt(n.CreatedAt))
	if err != nil {
		return time.Time{}, fmt.Errorf("claim nar %s: %w", n.File, err)
	}
	if err := tx.Commit(); err != nil {
		return time.Time{}, fmt.Errorf("claim nar %s: commit: %w", n.File, err)
	}
	return claim, nil
}

// claimNar inserts or touches a NAR record unless it is being deleted, and
// returns the record's creation time (the claim's identity).
func (x *Index) claimNar(ctx context.Context, tx *sql.Tx, n index.Nar, at time.Time) (time.Time, error) {
	var created int64
	err := tx.StmtContext(ctx, x.claim).QueryRowContext(ctx,
		n.File, string(n.Compression), n.FileHash, n.FileSize, n.NarHash, n.NarSize, at.UnixNano(), at.UnixNano()).Scan(&created)
	if errors.Is(err, sql.ErrNoRows) {
		return time.Time{}, fmt.Errorf("nar %s: %w", n.File, index.ErrBusy)
	}
	return time.Unix(0, created), err
}

// GetNar returns a NAR's record; with a non-zero flake only if it owns it.
func (x *Index) GetNar(ctx context.Context, flake nixname.Flake, file string) (index.Nar, error) {
	var row *sql.Row
	if flake.IsZero() {
		row = x.getNar.QueryRowContext(ctx, file)
	} else {
		row = x.getOwnedNar.QueryRowContext(ctx, file, flake.String())
	}
	var n index.Nar
	var comp string
	var created int64
	err := row.Scan(&n.File, &comp, &n.FileHash, &n.FileSize, &n.NarHash, &n.NarSize, &created)
	if errors.Is(err, sql.ErrNoRows) {
		return index.Nar{}, fmt.Errorf("nar %s: %w", file, index.ErrNotFound)
	}
	if err != nil {
		return index.Nar{}, fmt.Errorf("get nar %s: %w", file, err)
	}
	n.Compression = nixname.Compression(comp)
	n.CreatedAt = time.Unix(0, created)
	return n, nil
}

// narCols are the columns GetNar reads, in its order.
const narCols = `n.file, n.compression, n.file_hash, n.file_size, n.nar_hash, n.nar_size, n.created_at`

// pathCols are the columns scanPath reads, in its order.
const pathCols = `flake, hash, store_path, nar_file, nar_hash, refs, narinfo, signed_by, created_at`

// PutPath records flake's narinfo of a path; a flake's first content is kept.
func (x *Index) PutPath(ctx context.Context, flake nixname.Flake, p index.Path) error {
	if err := index.CheckPath(flake, p); err != nil {
		return err
	}
	created := index.CreatedAt(p.CreatedAt)
	return x.write(ctx, "put path "+p.Hash, func(tx *sql.Tx) error {
		return insertPath(ctx, tx, flake, p, created)
	})
}

// scanPath reads one row of pathCols.
func scanPath(scan func(...any) error) (index.Path, error) {
	var p index.Path
	var flake, refs string
	var created int64
	if err := scan(&flake, &p.Hash, &p.StorePath, &p.NarFile, &p.NarHash, &refs, &p.NarInfo, &p.SignedBy, &created); err != nil {
		return index.Path{}, err
	}
	f, err := nixname.ParseFlake(flake)
	if err != nil {
		return index.Path{}, fmt.Errorf("stored flake: %w", err)
	}
	p.Flake = f
	if refs != "" {
		p.References = strings.Split(refs, " ")
	}
	p.CreatedAt = time.Unix(0, created)
	return p, nil
}

// GetPath returns flake's record of a path.
func (x *Index) GetPath(ctx context.Context, flake nixname.Flake, hash string) (index.Path, error) {
	if err := index.CheckGetPath(flake, hash); err != nil {
		return index.Path{}, err
	}
	p, err := scanPath(x.getPath.QueryRowContext(ctx, hash, flake.String()).Scan)
	if errors.Is(err, sql.ErrNoRows) {
		return index.Path{}, fmt.Errorf("path %s of %s: %w", hash, flake, index.ErrNotFound)
	}
	if err != nil {
		return index.Path{}, fmt.Errorf("get path %s of %s: %w", hash, flake, err)
	}
	return p, nil
}

var _ index.PathsGetter = (*Index)(nil)

// GetPaths returns flake's records of those of hashes it holds, asked in
// chunks of maxParams.
func (x *Index) GetPaths(ctx context.Context, flake nixname.Flake, hashes []string) ([]index.Path, error) {
	if err := index.CheckGetPath(flake, ""); err != nil {
		return nil, err
	}
	var out []index.Path
	for chunk := range slices.Chunk(hashes, maxParams-1) {
		args := make([]any, 0, len(chunk)+1)
		args = append(args, flake.String())
		for _, h := range chunk {
			args = append(args, h)
		}
		rows, err := x.r.QueryContext(ctx, `SELECT `+pathCols+` FROM flake_paths WHERE flake = ? AND hash IN (?`+strings.Repeat(",?", len(chunk)-1)+`)`, args...)
		if err != nil {
			return nil, fmt.Errorf("get paths of %s: %w", flake, err)
		}
		for rows.Next() {
			p, err := scanPath(rows.Scan)
			if err != nil {
				rows.Close()
				return nil, fmt.Errorf("get paths of %s: %w", flake, err)
			}
			out = append(out, p)
		}
		if err := errors.Join(rows.Close(), rows.Err()); err != nil {
			return nil, fmt.Errorf("get paths of %s: %w", flake, err)
		}
	}
	return out, nil
}

// PathsOf returns the records of a path held by flakes (all when nil),
// sorted by flake. Long flake lists are asked in chunks of maxParams.
func (x *Index) PathsOf(ctx context.Context, hash string, flakes []nixname.Flake) ([]index.Path, error) {
	if flakes == nil {
		return x.pathsOf(ctx, hash, nil)
	}
	var out []index.Path
	for chunk := range slices.Chunk(flakes, maxParams) {
		ps, err := x.pathsOf(ctx, hash, chunk)
		if err != nil {
			return nil, err
		}
		out = append(out, ps...)
	}
	slices.SortFunc(out, func(a, b index.Path) int { return strings.Compare(a.Flake.String(), b.Flake.String()) })
	return out, nil
}

// pathsOf is one query of PathsOf: every flake's record when flakes is nil.
func (x *Index) pathsOf(ctx context.Context, hash string, flakes []nixname.Flake) ([]index.Path, error) {
	q := `SELECT ` + pathCols + ` FROM flake_paths WHERE hash = ?`
	args := []any{hash}
	if flakes != nil {
		q += ` AND flake IN (?` + strings.Repeat(",?", len(flakes)-1) + `)`
		for _, f := range flakes {
			args = append(args, f.String())
		}
	}
	rows, err := x.r.QueryContext(ctx, q+` ORDER BY flake`, args...)
	if err != nil {
		return nil, fmt.Errorf("paths of %s: %w", hash, err)
	}
	defer rows.Close()
	var out []index.Path
	for rows.Next() {
		p, err := scanPath(rows.Scan)
		if err != nil {
			return nil, fmt.Errorf("paths of %s: %w", hash, err)
		}
		out = append(out, p)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("paths of %s: %w", hash, err)
	}
	return out, nil
}

// UpdateNarInfo stores a flake's re-signed narinfo.
func (x *Index) UpdateNarInfo(ctx context.Context, flake nixname.Flake, hash string, narInfo []byte, signedBy string) error {
	return x.write(ctx, "update narinfo "+hash, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `UPDATE flake_paths SET narinfo = ?, signed_by = ? WHERE hash = ? AND flake = ?`, narInfo, signedBy, hash, flake.String())
		return err
	})
}

// maxParams bounds the host parameters of one query (SQLite's default
// limit is 32766; stay well below).
const maxParams = 500

// MissingPaths returns those of hashes that flake does not own, in the
// order given, without duplicates.
func (x *Index) MissingPaths(ctx context.Context, flake nixname.Flake, hashes []string) ([]string, error) {
	owned := make(map[string]bool, len(hashes))
	for chunk := range slices.Chunk(hashes, maxParams) {
		args := make([]any, 0, len(chunk)+1)
		args = append(args, flake.String())
		for _, h := range chunk {
			args = append(args, h)
		}
		q := `SELECT hash FROM flake_paths WHERE flake = ? AND hash IN (?` + strings.Repeat(",?", len(chunk)-1) + `)`
		rows, err := x.r.QueryContext(ctx, q, args...)
		if err != nil {
			return nil, fmt.Errorf("missing paths of %s: %w", flake, err)
		}
		for rows.Next() {
			var h string
			if err := rows.Scan(&h); err != nil {
				rows.Close()
				return nil, fmt.Errorf("missing paths of %s: %w", flake, err)
			}
			owned[h] = true
		}
		if err := rows.Close(); err != nil {
			return nil, fmt.Errorf("missing paths of %s: %w", flake, err)
		}
		if err := rows.Err(); err != nil {
			return nil, fmt.Errorf("missing paths of %s: %w", flake, err)
		}
	}
	return index.Missing(hashes, owned), nil
}

// Owners lists the flakes owning a path (KindNarInfo, by store hash) or a
// NAR (KindNar, by file name), sorted.
func (x *Index) Owners(ctx context.Context, kind index.Kind, hash string) ([]nixname.Flake, error) {
	q, err := index.OwnersQuery(kind, "?")
	if err != nil {
		return nil, err
	}
	rows, err := x.r.QueryContext(ctx, q, hash)
	if err != nil {
		return nil, fmt.Errorf("owners of %s %s: %w", kind, hash, err)
	}
	defer rows.Close()
	var names []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			return nil, fmt.Errorf("owners of %s %s: %w", kind, hash, err)
		}
		names = append(names, s)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("owners of %s %s: %w", kind, hash, err)
	}
	out, err := index.ParseOwners(names)
	if err != nil {
		return nil, fmt.Errorf("owners of %s %s: %w", kind, hash, err)
	}
	return out, nil
}

// PutLog records a flake's build log (replacing an older one).
func (x *Index) PutLog(ctx context.Context, flake nixname.Flake, l index.Log) error {
	if err := index.CheckLog(flake, l); err != nil {
		return err
	}
	return x.write(ctx, "put log "+l.Drv, func(tx *sql.Tx) error {
		var drv string
		err := tx.QueryRowContext(ctx, `INSERT INTO logs (flake, drv, blob_key, encoding, created_at) VALUES (?, ?, ?, ?, ?)
			ON CONFLICT (flake, drv) DO UPDATE SET blob_key = excluded.blob_key, encoding = excluded.encoding, created_at = excluded.created_at
			WHERE deleting = 0 RETURNING drv`,
			flake.String(), l.Drv, l.BlobKey, l.Encoding, time.Now().UnixNano()).Scan(&drv)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("log %s of %s: %w", l.Drv, flake, index.ErrBusy)
		}
		return err
	})
}

// GetLog returns a flake's build log.
func (x *Index) GetLog(ctx context.Context, flake nixname.Flake, drv string) (index.Log, error) {
	l := index.Log{Drv: drv}
	var at int64
	err := x.r.QueryRowContext(ctx, `SELECT blob_key, encoding, created_at FROM logs WHERE flake = ? AND drv = ? AND deleting = 0`, flake.String(), drv).Scan(&l.BlobKey, &l.Encoding, &at)
	if errors.Is(err, sql.ErrNoRows) {
		return index.Log{}, fmt.Errorf("log %s of %s: %w", drv, flake, index.ErrNotFound)
	}
	if err != nil {
		return index.Log{}, fmt.Errorf("get log %s of %s: %w", drv, flake, err)
	}
	l.UploadedAt = time.Unix(0, at)
	return l, nil
}

// PutFile records a flake's file: replacing its earlier one, or keeping
// the first for kinds that keep it.
func (x *Index) PutFile(ctx context.Context, flake nixname.Flake, f index.File) error {
	if err := index.CheckFile(flake, f); err != nil {
		return err
	}
	conflict := index.FileConflict(f.Kind)
	created := index.CreatedAt(f.CreatedAt)
	return x.write(ctx, "put "+string(f.Kind)+" "+f.Key, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO flake_files (kind, key, flake, needs, encoding, data, digest, plain_size, digest_of, created_at)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (kind, key, flake) `+conflict,
			string(f.Kind), f.Key, flake.String(), f.Needs, f.Encoding, f.Data, f.Digest, f.Size, created.UnixNano(), created.UnixNano())
		return err
	})
}

// GetFile returns a flake's file while the flake owns what it needs.
func (x *Index) GetFile(ctx context.Context, flake nixname.Flake, kind index.Kind, key string) (index.File, error) {
	if err := index.CheckGetFile(flake, kind); err != nil {
		return index.File{}, err
	}
	f := index.File{Flake: flake, Kind: kind, Key: key}
	var created int64
	err := x.r.QueryRowContext(ctx, `SELECT f.needs, f.encoding, f.data, `+index.FileDigestCols+`, f.created_at FROM flake_files f
		WHERE f.kind = ? AND f.key = ? AND f.flake = ? AND `+index.FileServable, string(kind), key, flake.String()).
		Scan(&f.Needs, &f.Encoding, &f.Data, &f.Digest, &f.Size, &created)
	if errors.Is(err, sql.ErrNoRows) {
		return index.File{}, fmt.Errorf("%s %s of %s: %w", kind, key, flake, index.ErrNotFound)
	}
	if err != nil {
		return index.File{}, fmt.Errorf("get %s %s of %s: %w", kind, key, flake, err)
	}
	f.CreatedAt = time.Unix(0, created)
	return f, nil
}

var _ index.FileDigestUpdater = (*Index)(nil)

// UpdateFileDigest completes a file recorded before digests and sizes
// were, unless it was replaced or completed meanwhile.
func (x *Index) UpdateFileDigest(ctx context.Context, flake nixname.Flake, kind index.Kind, key string, createdAt time.Time, digest string, size int64) error {
	if err := index.CheckGetFile(flake, kind); err != nil {
		return err
	}
	return x.write(ctx, "update digest of "+string(kind)+" "+key, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `UPDATE flake_files SET digest = ?, plain_size = ?, digest_of = created_at
			WHERE kind = ? AND key = ? AND flake = ? AND created_at = ? AND (plain_size < 0 OR digest_of <> created_at)`,
			digest, size, string(kind), key, flake.String(), createdAt.UnixNano())
		return err
	})
}

// Stats counts distinct store paths, NARs and flakes owning anything.
func (x *Index) Stats(ctx context.Context) (index.Stats, error) {
	var s index.Stats
	err := x.r.QueryRowContext(ctx, `SELECT
		(SELECT count(*) FROM (SELECT DISTINCT hash FROM flake_paths)),
		(SELECT count(*) FROM nars),
		(SELECT count(*) FROM (SELECT flake FROM flake_paths UNION SELECT flake FROM nar_owners))`).Scan(&s.Paths, &s.Nars, &s.Flakes)
	if err != nil {
		return index.Stats{}, fmt.Errorf("index stats: %w", err)
	}
	return s, nil
}
