// Package postgres is an index.Index on PostgreSQL (pgx/v5 connection pool),
// for several blob servers sharing one catalogue. It has the same semantics
// as the default SQLite index; both pass internal/index/indextest.
//
// # URL
//
//	postgres://USER[:PASSWORD]@HOST:PORT/DB?sslmode=verify-full&pool_max_conns=20&search_path=flakegate
//
// Any libpq/pgx connection parameter works (postgresql:// too); the password
// may come from PGPASSWORD or ~/.pgpass instead of the URL. search_path picks
// the schema the tables live in (it must exist); pool_max_conns sizes the
// pool (default: the larger of 4 and the number of CPUs). Errors never hold
// the password: the URL and pgx's errors go through internal/redact.
//
// # Migrations
//
// The schema is created and upgraded at Open from the SQL files embedded
// from migrations/ (NNNN_name.sql, applied in order, recorded in
// flakegate_schema_migrations). Migrating runs in one transaction holding a
// transaction-scoped advisory lock, so servers starting together apply each
// migration once and the others wait; a database migrated by a newer server
// is refused rather than misread.
//
// # Concurrency
//
// Each write is one transaction: rows are inserted with ON CONFLICT DO
// NOTHING (the first record of a NAR, and a flake's first narinfo of a path,
// are kept) and the ownership row likewise, so concurrent pushes of the same or overlapping closures from
// any number of servers all succeed and record every owner. Serialization
// failures and deadlocks, should the server report any, are retried.
package postgres

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/flakegate/flakegate/internal/index"
	"github.com/flakegate/flakegate/internal/nixname"
	"github.com/flakegate/flakegate/internal/redact"
)

// opTimeout bounds each index call that comes with no earlier deadline.
const opTimeout = 30 * time.Second

//go:embed migrations/*.sql
var migrationFiles embed.FS

// Index is a PostgreSQL index.
type Index struct {
	pool *pgxpool.Pool
}

var (
	_ index.Index             = (*Index)(nil)
	_ index.NarInfoUpdater    = (*Index)(nil)
	_ index.FileDigestUpdater = (*Index)(nil)
	_ index.Collectable       = (*Index)(nil)
)

// Open connects to the database a URL names, applies pending migrations and
// returns the index. Errors never contain the password.
func Open(ctx context.Context, url string) (*Index, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		// pgx errors may quote the connection string: say only what failed.
		return nil, fmt.Errorf("postgres index: invalid URL %s: %w", redact.URL(url), redact.Error(err, url))
	}
	if cfg.ConnConfig.ConnectTimeout == 0 {
		cfg.ConnConfig.ConnectTimeout = 10 * time.Second
	}
	where := fmt.Sprintf("%s:%d/%s", cfg.ConnConfig.Host, cfg.ConnConfig.Port, cfg.ConnConfig.Database)
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("postgres index at %s: %w", where, redact.Error(err, url))
	}
	pctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	if err := pool.Ping(pctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("postgres index at %s: connect: %w", where, redact.Error(err, url))
	}
	x := &Index{pool: pool}
	if err := x.migrate(pctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("postgres index at %s: migrate: %w", where, err)
	}
	return x, nil
}

// Close closes the pool.
func (x *Index) Close() error {
	x.pool.Close()
	return nil
}

type migration struct {
	version int
	name    string
	sql     string
}

func migrations() ([]migration, error) {
	entries, err := fs.ReadDir(migrationFiles, "migrations")
	if err != nil {
		return nil, err
	}
	var ms []migration
	for _, e := range entries {
		num, _, ok := strings.Cut(e.Name(), "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil || v <= 0 {
			return nil, fmt.Errorf("migration file %q: want NNNN_name.sql", e.Name())
		}
		b, err := migrationFiles.ReadFile("migrations/" + e.Name())
		if err != nil {
			return nil, err
		}
		ms = append(ms, migration{version: v, name: e.Name(), sql: string(b)})
	}
	slices.SortFunc(ms, func(a, b migration) int { return a.version - b.version })
	for i, m := range ms {
		if m.version != i+1 {
			return nil, fmt.Errorf("migration %s: versions must be 1, 2, 3… without gaps", m.name)
		}
	}
	return ms, nil
}

// migrateLockKey names the advisory lock serialising migrations (per schema).
const migrateLockKey = "flakegate.index.migrate:"

func (x *Index) migrate(ctx context.Context) error {
	ms, err := migrations()
	if err != nil {
		return err
	}
	return pgx.BeginFunc(ctx, x.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtext($1 || coalesce(current_schema(), '')))`, migrateLockKey); err != nil {
			return fmt.Errorf("take migration lock: %w", err)
		}
		if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS flakegate_schema_migrations (
			version    integer PRIMARY KEY,
			name       text NOT NULL,
			applied_at timestamptz NOT NULL DEFAULT now())`); err != nil {
			return fmt.Errorf("create migrations table (does the schema in search_path exist?): %w", err)
		}
		var cur int
		if err := tx.QueryRow(ctx, `SELECT coalesce(max(version), 0) FROM flakegate_schema_migrations`).Scan(&cur); err != nil {
			return fmt.Errorf("read schema version: %w", err)
		}
		if cur > len(ms) {
			return fmt.Errorf("database schema version %d is newer than this server's (%d): upgrade the server", cur, len(ms))
		}
		for _, m := range ms[cur:] {
			if _, err := tx.Exec(ctx, m.sql); err != nil {
				return fmt.Errorf("apply %s: %w", m.name, err)
			}
			if _, err := tx.Exec(ctx, `INSERT INTO flakegate_schema_migrations (version, name) VALUES ($1, $2)`, m.version, m.name); err != nil {
				return fmt.Errorf("record %s: %w", m.name, err)
			}
		}
		return nil
	})
}

// withTimeout bounds ctx by opTimeout unless it already ends sooner.
func withTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	if d, ok := ctx.Deadline(); ok && time.Until(d) < opTimeout {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, opTimeout)
}

// retryable reports serialization failures and deadlocks, which a fresh
// attempt of the same transaction resolves.
func retryable(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && (pe.Code == "40001" || pe.Code == "40P01")
}

// write runs fn in one transaction, retrying it a few times when the server
// asks to.
func (x *Index) write(ctx context.Context, what string, fn func(ctx context.Context, tx pgx.Tx) error) error {
	ctx, cancel := withTimeout(ctx)
	defer cancel()
	var err error
	for attempt := range 4 {
		if attempt > 0 {
			select {
			case <-time.After(time.Duration(attempt*attempt) * 10 * time.Millisecond):
			case <-ctx.Done():
				return fmt.Errorf("%s: %w (after %v)", what, ctx.Err(), err)
			}
		}
		err = pgx.BeginFunc(ctx, x.pool, func(tx pgx.Tx) error { return fn(ctx, tx) })
		if err == nil || !retryable(err) {
			break
		}
	}
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}

// recordFlake records flake in flakes, the table Stats counts.
// ownNar records that flake owns file, used at `at`.
func ownNar(ctx context.Context, tx pgx.Tx, flake nixname.Flake, file string, at time.Time) error {
	if _, err := tx.Exec(ctx, `INSERT INTO nar_owners (file, flake, touched_at) VALUES ($1, $2, $3)
		ON CONFLICT (file, flake) DO UPDATE SET touched_at = greatest(nar_owners.touched_at, excluded.touched_at)`, file, flake.String(), at); err != nil {
		return err
	}
	return recordFlake(ctx, tx, flake)
}

func recordFlake(ctx context.Context, tx pgx.Tx, flake nixname.Flake) error {
	_, err := tx.Exec(ctx, `INSERT INTO flakes (flake) VALUES ($1) ON CONFLICT DO NOTHING`, flake.String())
	return err
}

// PutNar records a verified NAR and flake's ownership of it, both marked
// as touched now; ErrBusy while a collection deletes the file.
func (x *Index) PutNar(ctx context.Context, flake nixname.Flake, n index.Nar) error {
	if err := index.CheckNar(flake, n); err != nil {
		return err
	}
	at := index.CreatedAt(n.CreatedAt)
	return x.write(ctx, "put nar "+n.File, func(ctx context.Context, tx pgx.Tx) error {
		if _, err := claimNar(ctx, tx, n, at); err != nil {
			return err
		}
		return ownNar(ctx, tx, flake, n.File, at)
	})
}

// OwnClaimedNar records that flake owns n, claimed by ClaimNar at claim
// (see index.Collectable): ErrBusy when the claimed record is gone, doomed
// or another (made again after a collection forgot it).
func (x *Index) OwnClaimedNar(ctx context.Context, flake nixname.Flake, n index.Nar, claim time.Time) error {
	if err := index.CheckNar(flake, n); err != nil {
		return err
	}
	at := index.CreatedAt(n.CreatedAt)
	return x.write(ctx, "own nar "+n.File, func(ctx context.Context, tx pgx.Tx) error {
		var file string
		err := tx.QueryRow(ctx, `UPDATE nars SET touched_at = greatest(touched_at, $2) WHERE file = $1 AND NOT deleting AND created_at = $3 RETURNING file`,
			n.File, at, claim).Scan(&file)
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("nar %s: its claim was collected: %w", n.File, index.ErrBusy)
		}
		if err != nil {
			return err
		}
		return ownNar(ctx, tx, flake, n.File, at)
	})
}

// ClaimNar records a NAR (no owner) as touched now, before its blob is
// committed, and returns the record's creation time; ErrBusy while a
// collection deletes the file.
func (x *Index) ClaimNar(ctx context.Context, n index.Nar) (time.Time, error) {
	if n.File == "" {
		return time.Time{}, errors.New("claim nar: empty file name")
	}
	// Committed without waiting for the WAL flush (synchronous_commit off
	// for this transaction only): the claim orders the upload with a
	// collection's DoomNars (internal/gc, rule 5), which needs it visible,
	// as an asynchronous commit is at once, not durable; PutNar repeats it
	// in a synchronous commit, which flushes this one too (the WAL is
	// flushed in order). A crash in between loses only a claim of an upload
	// not yet answered. One WAL flush less per NAR upload.
	var claim time.Time
	err := x.write(ctx, "claim nar "+n.File, func(ctx context.Context, tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SET LOCAL synchronous_commit = off`); err != nil {
			return err
		}
		var err error
		claim, err = claimNar(ctx, tx, n, index.CreatedAt(n.CreatedAt))
		return err
	})
	return claim, err
}

// claimNar inserts or touches a NAR record unless it is being deleted, and
// returns the record's creation time (the claim's identity). The row lock
// it takes orders it with a collection's DoomNars.
func claimNar(ctx context.Context, tx pgx.Tx, n index.Nar, at time.Time) (time.Time, error) {
	var created time.Time
	err := tx.QueryRow(ctx, `INSERT INTO nars (file, compression, file_hash, file_size, nar_hash, nar_size, created_at, touched_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $7)
		ON CONFLICT (file) DO UPDATE SET touched_at = greatest(nars.touched_at, excluded.touched_at) WHERE NOT nars.deleting
		RETURNING created_at`,
		n.File, string(n.Compression), n.FileHash, n.FileSize, n.NarHash, n.NarSize, at).Scan(&created)
	if errors.Is(err, pgx.ErrNoRows) {
		return time.Time{}, fmt.Errorf("nar %s: %w", n.File, index.ErrBusy)
	}
	return created, err
}

// GetNar returns a NAR's record; with a non-zero flake only if it owns it.
func (x *Index) GetNar(ctx context.Context, flake nixname.Flake, file string) (index.Nar, error) {
	ctx, cancel := withTimeout(ctx)
	defer cancel()
	const cols = `n.file, n.compression, n.file_hash, n.file_size, n.nar_hash, n.nar_size, n.created_at`
	var row pgx.Row
	if flake.IsZero() {
		row = x.pool.QueryRow(ctx, `SELECT `+cols+` FROM nars n WHERE n.file = $1`, file)
	} else {
		row = x.pool.QueryRow(ctx, `SELECT `+cols+` FROM nar_owners o JOIN nars n ON n.file = o.file
			WHERE o.file = $1 AND o.flake = $2`, file, flake.String())
	}
	var n index.Nar
	var comp string
	err := row.Scan(&n.File, &comp, &n.FileHash, &n.FileSize, &n.NarHash, &n.NarSize, &n.CreatedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return index.Nar{}, fmt.Errorf("nar %s: %w", file, index.ErrNotFound)
	}
	if err != nil {
		return index.Nar{}, fmt.Errorf("get nar %s: %w", file, err)
	}
	n.Compression = nixname.Compression(comp)
	return n, nil
}

// pathCols are the columns scanPath reads, in its order.
const pathCols = `flake, hash, store_path, nar_file, nar_hash, refs, narinfo, signed_by, created_at`

// PutPath records flake's narinfo of a path; a flake's first content is kept.
func (x *Index) PutPath(ctx context.Context, flake nixname.Flake, p index.Path) error {
	if err := index.CheckPath(flake, p); err != nil {
		return err
	}
	return x.write(ctx, "put path "+p.Hash, func(ctx context.Context, tx pgx.Tx) error {
		return insertPath(ctx, tx, flake, p, index.CreatedAt(p.CreatedAt))
	})
}

// insertPath records flake's path (first content kept; the same content
// pushed again is marked used) and the flake.
func insertPath(ctx context.Context, tx pgx.Tx, flake nixname.Flake, p index.Path, at time.Time) error {
	refs := p.References
	if refs == nil {
		refs = []string{}
	}
	narInfo := p.NarInfo
	if narInfo == nil {
		narInfo = []byte{}
	}
	tag, err := tx.Exec(ctx, `INSERT INTO flake_paths (`+pathCols+`)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (hash, flake) DO NOTHING`,
		flake.String(), p.Hash, p.StorePath, p.NarFile, p.NarHash, refs, narInfo, p.SignedBy, at)
	if err != nil {
		return err
	}
	if tag.RowsAffected() == 1 {
		_, err = tx.Exec(ctx, `INSERT INTO path_use (flake, hash, last_used) VALUES ($1, $2, $3)
			ON CONFLICT (flake, hash) DO UPDATE SET last_used = excluded.last_used, doomed = false`, flake.String(), p.Hash, at)
	} else {
		// The same content pushed again is marked used; a doomed record
		// cannot be (the push fails: push it again once it is gone).
		var doomed bool
		err = tx.QueryRow(ctx, `WITH u AS (UPDATE path_use u SET last_used = greatest(u.last_used, $3) WHERE u.flake = $1 AND u.hash = $2 AND NOT u.doomed
			AND EXISTS (SELECT 1 FROM flake_paths p WHERE p.hash = u.hash AND p.flake = u.flake AND p.nar_hash = $4 AND p.refs = $5) RETURNING 1)
			SELECT EXISTS (SELECT 1 FROM path_use WHERE flake = $1 AND hash = $2 AND doomed) AND NOT EXISTS (SELECT 1 FROM u)`,
			flake.String(), p.Hash, at, p.NarHash, refs).Scan(&doomed)
		if err == nil && doomed {
			err = fmt.Errorf("path %s is being collected: %w", p.Hash, index.ErrNotHeld)
		}
	}
	if err != nil {
		return err
	}
	return recordFlake(ctx, tx, flake)
}

// scanPath reads one row of pathCols.
func scanPath(row pgx.Row) (index.Path, error) {
	var p index.Path
	var flake string
	if err := row.Scan(&flake, &p.Hash, &p.StorePath, &p.NarFile, &p.NarHash, &p.References, &p.NarInfo, &p.SignedBy, &p.CreatedAt); err != nil {
		return index.Path{}, err
	}
	f, err := nixname.ParseFlake(flake)
	if err != nil {
		return index.Path{}, fmt.Errorf("stored flake: %w", err)
	}
	p.Flake = f
	if len(p.References) == 0 {
		p.References = nil
	}
	return p, nil
}

// GetPath returns flake's record of a path.
func (x *Index) GetPath(ctx context.Context, flake nixname.Flake, hash string) (index.Path, error) {
	if err := index.CheckGetPath(flake, hash); err != nil {
		return index.Path{}, err
	}
	ctx, cancel := withTimeout(ctx)
	defer cancel()
	p, err := scanPath(x.pool.QueryRow(ctx, `SELECT `+pathCols+` FROM flake_paths WHERE hash = $1 AND flake = $2`, hash, flake.String()))
	if errors.Is(err, pgx.ErrNoRows) {
		return index.Path{}, fmt.Errorf("path %s of %s: %w", hash, flake, index.ErrNotFound)
	}
	if err != nil {
		return index.Path{}, fmt.Errorf("get path %s of %s: %w", hash, flake, err)
	}
	return p, nil
}

var _ index.PathsGetter = (*Index)(nil)

// GetPaths returns flake's records of those of hashes it holds, in one query.
func (x *Index) GetPaths(ctx context.Context, flake nixname.Flake, hashes []string) ([]index.Path, error) {
	if err := index.CheckGetPath(flake, ""); err != nil {
		return nil, err
	}
	if len(hashes) == 0 {
		return nil, nil
	}
	ctx, cancel := withTimeout(ctx)
	defer cancel()
	rows, err := x.pool.Query(ctx, `SELECT `+pathCols+` FROM flake_paths WHERE flake = $1 AND hash = ANY($2)`, flake.String(), hashes)
	if err != nil {
		return nil, fmt.Errorf("get paths of %s: %w", flake, err)
	}
	defer rows.Close()
	var out []index.Path
	for rows.Next() {
		p, err := scanPath(rows)
		if err != nil {
			return nil, fmt.Errorf("get paths of %s: %w", flake, err)
		}
		out = append(out, p)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("get paths of %s: %w", flake, err)
	}
	return out, nil
}

// PathsOf returns the records of a path held by flakes (all when nil),
// sorted by flake.
func (x *Index) PathsOf(ctx context.Context, hash string, flakes []nixname.Flake) ([]index.Path, error) {
	if flakes != nil && len(flakes) == 0 {
		return nil, nil
	}
	ctx, cancel := withTimeout(ctx)
	defer cancel()
	var rows pgx.Rows
	var err error
	if flakes == nil {
		rows, err = x.pool.Query(ctx, `SELECT `+pathCols+` FROM flake_paths WHERE hash = $1 ORDER BY flake`, hash)
	} else {
		rows, err = x.pool.Query(ctx, `SELECT `+pathCols+` FROM flake_paths WHERE hash = $1 AND flake = ANY($2) ORDER BY flake`, hash, index.FlakeNames(flakes))
	}
	if err != nil {
		return nil, fmt.Errorf("paths of %s: %w", hash, err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (index.Path, error) { return scanPath(r) })
	if err != nil {
		return nil, fmt.Errorf("paths of %s: %w", hash, err)
	}
	return out, nil
}

// UpdateNarInfo stores a flake's re-signed narinfo. An absent path is not an error.
func (x *Index) UpdateNarInfo(ctx context.Context, flake nixname.Flake, hash string, narInfo []byte, signedBy string) error {
	return x.write(ctx, "update narinfo "+hash, func(ctx context.Context, tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `UPDATE flake_paths SET narinfo = $1, signed_by = $2 WHERE hash = $3 AND flake = $4`, narInfo, signedBy, hash, flake.String())
		return err
	})
}

// MissingPaths returns those of hashes that flake does not own, in the
// order given, without duplicates. One query, whatever the number of hashes.
func (x *Index) MissingPaths(ctx context.Context, flake nixname.Flake, hashes []string) ([]string, error) {
	if len(hashes) == 0 {
		return nil, nil
	}
	ctx, cancel := withTimeout(ctx)
	defer cancel()
	rows, err := x.pool.Query(ctx, `SELECT hash FROM flake_paths WHERE flake = $1 AND hash = ANY($2)`, flake.String(), hashes)
	if err != nil {
		return nil, fmt.Errorf("missing paths of %s: %w", flake, err)
	}
	owned, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("missing paths of %s: %w", flake, err)
	}
	ownedSet := make(map[string]bool, len(owned))
	for _, h := range owned {
		ownedSet[h] = true
	}
	return index.Missing(hashes, ownedSet), nil
}

// Owners lists the flakes owning a path (KindNarInfo, by store hash) or a
// NAR (KindNar, by file name), sorted by "org/name" byte-wise.
func (x *Index) Owners(ctx context.Context, kind index.Kind, hash string) ([]nixname.Flake, error) {
	q, err := index.OwnersQuery(kind, "$1")
	if err != nil {
		return nil, err
	}
	ctx, cancel := withTimeout(ctx)
	defer cancel()
	rows, err := x.pool.Query(ctx, q, hash)
	if err != nil {
		return nil, fmt.Errorf("owners of %s %s: %w", kind, hash, err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
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
	return x.write(ctx, "put log "+l.Drv, func(ctx context.Context, tx pgx.Tx) error {
		var drv string
		err := tx.QueryRow(ctx, `INSERT INTO logs (flake, drv, blob_key, encoding, created_at) VALUES ($1, $2, $3, $4, now())
			ON CONFLICT (flake, drv) DO UPDATE SET blob_key = excluded.blob_key, encoding = excluded.encoding, created_at = excluded.created_at
			WHERE NOT logs.deleting RETURNING drv`,
			flake.String(), l.Drv, l.BlobKey, l.Encoding).Scan(&drv)
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("log %s of %s: %w", l.Drv, flake, index.ErrBusy)
		}
		return err
	})
}

// GetLog returns a flake's build log.
func (x *Index) GetLog(ctx context.Context, flake nixname.Flake, drv string) (index.Log, error) {
	ctx, cancel := withTimeout(ctx)
	defer cancel()
	l := index.Log{Drv: drv}
	err := x.pool.QueryRow(ctx, `SELECT blob_key, encoding, created_at FROM logs WHERE flake = $1 AND drv = $2 AND NOT deleting`, flake.String(), drv).Scan(&l.BlobKey, &l.Encoding, &l.UploadedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return index.Log{}, fmt.Errorf("log %s of %s: %w", drv, flake, index.ErrNotFound)
	}
	if err != nil {
		return index.Log{}, fmt.Errorf("get log %s of %s: %w", drv, flake, err)
	}
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
	return x.write(ctx, "put "+string(f.Kind)+" "+f.Key, func(ctx context.Context, tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `INSERT INTO flake_files (kind, key, flake, needs, encoding, data, digest, plain_size, digest_of, created_at)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9) ON CONFLICT (kind, key, flake) `+conflict,
			string(f.Kind), f.Key, flake.String(), f.Needs, f.Encoding, f.Data, f.Digest, f.Size, created)
		return err
	})
}

// GetFile returns a flake's file while the flake owns what it needs.
func (x *Index) GetFile(ctx context.Context, flake nixname.Flake, kind index.Kind, key string) (index.File, error) {
	if err := index.CheckGetFile(flake, kind); err != nil {
		return index.File{}, err
	}
	ctx, cancel := withTimeout(ctx)
	defer cancel()
	f := index.File{Flake: flake, Kind: kind, Key: key}
	err := x.pool.QueryRow(ctx, `SELECT f.needs, f.encoding, f.data, `+index.FileDigestCols+`, f.created_at FROM flake_files f
		WHERE f.kind = $1 AND f.key = $2 AND f.flake = $3 AND `+index.FileServable, string(kind), key, flake.String()).
		Scan(&f.Needs, &f.Encoding, &f.Data, &f.Digest, &f.Size, &f.CreatedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return index.File{}, fmt.Errorf("%s %s of %s: %w", kind, key, flake, index.ErrNotFound)
	}
	if err != nil {
		return index.File{}, fmt.Errorf("get %s %s of %s: %w", kind, key, flake, err)
	}
	return f, nil
}

// UpdateFileDigest completes a file recorded before digests and sizes
// were, unless it was replaced or completed meanwhile.
func (x *Index) UpdateFileDigest(ctx context.Context, flake nixname.Flake, kind index.Kind, key string, createdAt time.Time, digest string, size int64) error {
	if err := index.CheckGetFile(flake, kind); err != nil {
		return err
	}
	return x.write(ctx, "update digest of "+string(kind)+" "+key, func(ctx context.Context, tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `UPDATE flake_files SET digest = $1, plain_size = $2, digest_of = created_at
			WHERE kind = $3 AND key = $4 AND flake = $5 AND created_at = $6 AND (plain_size < 0 OR digest_of IS DISTINCT FROM created_at)`,
			digest, size, string(kind), key, flake.String(), createdAt)
		return err
	})
}

// Stats counts paths, NARs and flakes owning a path or a NAR. The path and
// NAR counts are exact (a scan of the primary keys).
func (x *Index) Stats(ctx context.Context) (index.Stats, error) {
	ctx, cancel := withTimeout(ctx)
	defer cancel()
	var s index.Stats
	err := x.pool.QueryRow(ctx, `SELECT
		(SELECT count(DISTINCT hash) FROM flake_paths),
		(SELECT count(*) FROM nars),
		(SELECT count(*) FROM flakes f WHERE EXISTS (SELECT 1 FROM flake_paths p WHERE p.flake = f.flake)
			OR EXISTS (SELECT 1 FROM nar_owners o WHERE o.flake = f.flake))`).Scan(&s.Paths, &s.Nars, &s.Flakes)
	if err != nil {
		return index.Stats{}, fmt.Errorf("index stats: %w", err)
	}
	return s, nil
}
