package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/flakegate/flakegate/internal/index"
	"github.com/flakegate/flakegate/internal/nixname"
)

// What the garbage collector needs (index.Collectable). SQLite serialises
// writers (BEGIN IMMEDIATE on one connection per process, the file lock
// across processes), so a check and the write it guards in one transaction
// are atomic against a collection's conditional deletes.

// insertPath records flake's path and its use (path_use); a flake's first
// content is kept, and the same content pushed again is marked used
// (unless doomed).
func insertPath(ctx context.Context, tx *sql.Tx, flake nixname.Flake, p index.Path, at time.Time) error {
	refs := strings.Join(p.References, " ")
	res, err := tx.ExecContext(ctx, `INSERT INTO flake_paths (`+pathCols+`)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (hash, flake) DO NOTHING`,
		flake.String(), p.Hash, p.StorePath, p.NarFile, p.NarHash, refs, p.NarInfo, p.SignedBy, at.UnixNano())
	if err != nil {
		return err
	}
	if n, err := res.RowsAffected(); err != nil {
		return err
	} else if n == 1 {
		_, err = tx.ExecContext(ctx, `INSERT INTO path_use (flake, hash, last_used) VALUES (?, ?, ?)
			ON CONFLICT (flake, hash) DO UPDATE SET last_used = excluded.last_used, doomed = 0`, flake.String(), p.Hash, at.UnixNano())
		return err
	}
	_, err = tx.ExecContext(ctx, `UPDATE path_use SET last_used = max(last_used, ?) WHERE flake = ? AND hash = ? AND doomed = 0
		AND EXISTS (SELECT 1 FROM flake_paths p WHERE p.hash = path_use.hash AND p.flake = path_use.flake AND p.nar_hash = ? AND p.refs = ?)`,
		at.UnixNano(), flake.String(), p.Hash, p.NarHash, refs)
	if err != nil {
		return err
	}
	var doomed bool
	if err := tx.QueryRowContext(ctx, `SELECT doomed FROM path_use WHERE flake = ? AND hash = ?`, flake.String(), p.Hash).Scan(&doomed); err != nil && !errors.Is(err, sql.ErrNoRows) {
		return err
	}
	if doomed {
		return fmt.Errorf("path %s is being collected: %w", p.Hash, index.ErrNotHeld)
	}
	return nil
}

// placeholders returns "?,?,…" for n parameters.
func placeholders(n int) string { return strings.TrimSuffix(strings.Repeat("?,", n), ",") }

// touchPaths marks those of hashes the flake holds as used at t and
// returns how many it holds.
func touchPaths(ctx context.Context, tx *sql.Tx, flake nixname.Flake, hashes []string, t time.Time) (int64, error) {
	var n int64
	for chunk := range slices.Chunk(hashes, maxParams) {
		args := []any{t.UnixNano(), flake.String()}
		for _, h := range chunk {
			args = append(args, h)
		}
		res, err := tx.ExecContext(ctx, `UPDATE path_use SET last_used = max(last_used, ?) WHERE flake = ? AND doomed = 0 AND hash IN (`+placeholders(len(chunk))+`)`, args...)
		if err != nil {
			return 0, err
		}
		k, err := res.RowsAffected()
		if err != nil {
			return 0, err
		}
		n += k
	}
	return n, nil
}

// AddPath records a pushed path after checking, in the same transaction,
// that the flake owns its NAR and holds its references (marking them used).
func (x *Index) AddPath(ctx context.Context, flake nixname.Flake, p index.Path) error {
	if err := index.CheckPath(flake, p); err != nil {
		return err
	}
	at := index.CreatedAt(p.CreatedAt)
	refs := index.RefHashes(p)
	return x.write(ctx, "add path "+p.Hash, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE nar_owners SET touched_at = max(touched_at, ?) WHERE file = ? AND flake = ?`, at.UnixNano(), p.NarFile, flake.String())
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil || n == 0 {
			return errors.Join(err, fmt.Errorf("nar %s: %w", p.NarFile, index.ErrNotHeld))
		}
		n, err := touchPaths(ctx, tx, flake, refs, at)
		if err != nil {
			return err
		}
		if n != int64(len(refs)) {
			return fmt.Errorf("%d of %d references: %w", int64(len(refs))-n, len(refs), index.ErrNotHeld)
		}
		return insertPath(ctx, tx, flake, p, at)
	})
}

// TouchPaths marks those of hashes the flake holds as used at t.
func (x *Index) TouchPaths(ctx context.Context, flake nixname.Flake, hashes []string, t time.Time) error {
	if len(hashes) == 0 {
		return nil
	}
	return x.write(ctx, "touch paths of "+flake.String(), func(tx *sql.Tx) error {
		_, err := touchPaths(ctx, tx, flake, hashes, t)
		return err
	})
}

// PutPin pins a path the flake holds, marking it used.
func (x *Index) PutPin(ctx context.Context, flake nixname.Flake, p index.Pin) error {
	if err := index.CheckPin(flake, p); err != nil {
		return err
	}
	at := index.CreatedAt(p.CreatedAt)
	return x.write(ctx, "pin "+p.Name, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE path_use SET last_used = max(last_used, ?) WHERE flake = ? AND hash = ? AND doomed = 0`,
			at.UnixNano(), flake.String(), p.Hash)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil || n == 0 {
			return errors.Join(err, fmt.Errorf("path %s of %s: %w", p.Hash, flake, index.ErrNotFound))
		}
		var storePath string
		if err := tx.QueryRowContext(ctx, `SELECT store_path FROM flake_paths WHERE hash = ? AND flake = ?`, p.Hash, flake.String()).Scan(&storePath); err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO pins (flake, name, hash, store_path, created_at) VALUES (?, ?, ?, ?, ?)
			ON CONFLICT (flake, name) DO UPDATE SET hash = excluded.hash, store_path = excluded.store_path, created_at = excluded.created_at`,
			flake.String(), p.Name, p.Hash, storePath, at.UnixNano())
		return err
	})
}

// DeletePin removes a pin.
func (x *Index) DeletePin(ctx context.Context, flake nixname.Flake, name string) error {
	return x.write(ctx, "unpin "+name, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM pins WHERE flake = ? AND name = ?`, flake.String(), name)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil || n == 0 {
			return errors.Join(err, fmt.Errorf("pin %s of %s: %w", name, flake, index.ErrNotFound))
		}
		return nil
	})
}

// Pins lists a flake's pins by name.
func (x *Index) Pins(ctx context.Context, flake nixname.Flake) ([]index.Pin, error) {
	rows, err := x.r.QueryContext(ctx, `SELECT name, hash, store_path, created_at FROM pins WHERE flake = ? ORDER BY name`, flake.String())
	if err != nil {
		return nil, fmt.Errorf("pins of %s: %w", flake, err)
	}
	defer rows.Close()
	var out []index.Pin
	for rows.Next() {
		var p index.Pin
		var at int64
		if err := rows.Scan(&p.Name, &p.Hash, &p.StorePath, &at); err != nil {
			return nil, fmt.Errorf("pins of %s: %w", flake, err)
		}
		p.CreatedAt = time.Unix(0, at)
		out = append(out, p)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("pins of %s: %w", flake, err)
	}
	return out, nil
}

// queryStrings runs a query returning one text column.
func (x *Index) queryStrings(ctx context.Context, q string, args ...any) ([]string, error) {
	rows, err := x.r.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, rows.Err()
}

// CollectableFlakes lists the flakes holding a path or owning a NAR.
func (x *Index) CollectableFlakes(ctx context.Context) ([]nixname.Flake, error) {
	names, err := x.queryStrings(ctx, `SELECT flake FROM flake_paths UNION SELECT flake FROM nar_owners UNION SELECT flake FROM logs UNION SELECT flake FROM flake_files ORDER BY 1`)
	if err != nil {
		return nil, fmt.Errorf("list flakes: %w", err)
	}
	return index.ParseOwners(names)
}

// ScanPaths calls fn for each of the flake's paths, a page at a time.
func (x *Index) ScanPaths(ctx context.Context, flake nixname.Flake, fn func(index.PathUse) error) error {
	after := ""
	for {
		page, err := x.scanPage(ctx, flake, after)
		if err != nil {
			return fmt.Errorf("scan paths of %s: %w", flake, err)
		}
		for _, u := range page {
			if err := fn(u); err != nil {
				return err
			}
		}
		if len(page) < index.ScanPage {
			return nil
		}
		after = page[len(page)-1].Hash
	}
}

func (x *Index) scanPage(ctx context.Context, flake nixname.Flake, after string) ([]index.PathUse, error) {
	rows, err := x.r.QueryContext(ctx, `SELECT p.hash, p.nar_file, coalesce(n.file_size, 0), p.refs, u.last_used,
			EXISTS (SELECT 1 FROM pins WHERE pins.flake = p.flake AND pins.hash = p.hash)
		FROM flake_paths p JOIN path_use u ON u.flake = p.flake AND u.hash = p.hash LEFT JOIN nars n ON n.file = p.nar_file
		WHERE p.flake = ? AND p.hash > ? ORDER BY p.hash LIMIT ?`, flake.String(), after, index.ScanPage)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := make([]index.PathUse, 0, 64)
	for rows.Next() {
		var u index.PathUse
		var refs string
		var last int64
		if err := rows.Scan(&u.Hash, &u.NarFile, &u.Size, &refs, &last, &u.Pinned); err != nil {
			return nil, err
		}
		u.LastUsed = time.Unix(0, last)
		if refs != "" {
			u.Refs = index.RefHashes(index.Path{Hash: u.Hash, References: strings.Split(refs, " ")})
		}
		out = append(out, u)
	}
	return out, rows.Err()
}

// ScanUsage calls fn for every NAR file a path names, once, most recently
// used first.
func (x *Index) ScanUsage(ctx context.Context, fn func(time.Time, int64) bool) error {
	rows, err := x.r.QueryContext(ctx, `SELECT max(u.last_used) AS t, coalesce(max(n.file_size), 0) FROM flake_paths p
		JOIN path_use u ON u.flake = p.flake AND u.hash = p.hash
		LEFT JOIN nars n ON n.file = p.nar_file GROUP BY p.nar_file ORDER BY t DESC`)
	if err != nil {
		return fmt.Errorf("scan usage: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var last, size int64
		if err := rows.Scan(&last, &size); err != nil {
			return fmt.Errorf("scan usage: %w", err)
		}
		if !fn(time.Unix(0, last), size) {
			return nil
		}
	}
	return rows.Err()
}

// DoomPaths marks those of the flake's paths last used before cutoff and
// not pinned as doomed.
func (x *Index) DoomPaths(ctx context.Context, flake nixname.Flake, hashes []string, cutoff time.Time) ([]string, error) {
	var doomed []string
	err := x.write(ctx, "doom paths of "+flake.String(), func(tx *sql.Tx) error {
		for chunk := range slices.Chunk(hashes, maxParams) {
			args := []any{flake.String(), cutoff.UnixNano()}
			for _, h := range chunk {
				args = append(args, h)
			}
			rows, err := tx.QueryContext(ctx, `UPDATE path_use SET doomed = 1 WHERE flake = ? AND doomed = 0 AND last_used < ? AND hash IN (`+placeholders(len(chunk))+`)
				AND NOT EXISTS (SELECT 1 FROM pins WHERE pins.flake = path_use.flake AND pins.hash = path_use.hash)
				RETURNING hash`, args...)
			if err != nil {
				return err
			}
			for rows.Next() {
				var h string
				if err := rows.Scan(&h); err != nil {
					rows.Close()
					return err
				}
				doomed = append(doomed, h)
			}
			if err := errors.Join(rows.Err(), rows.Close()); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return doomed, nil
}

// SparePaths clears the doomed mark (of every path of the flake when
// hashes is nil).
func (x *Index) SparePaths(ctx context.Context, flake nixname.Flake, hashes []string) error {
	return x.write(ctx, "spare paths of "+flake.String(), func(tx *sql.Tx) error {
		if hashes == nil {
			_, err := tx.ExecContext(ctx, `UPDATE path_use SET doomed = 0 WHERE flake = ? AND doomed = 1`, flake.String())
			return err
		}
		for chunk := range slices.Chunk(hashes, maxParams) {
			args := []any{flake.String()}
			for _, h := range chunk {
				args = append(args, h)
			}
			if _, err := tx.ExecContext(ctx, `UPDATE path_use SET doomed = 0 WHERE flake = ? AND hash IN (`+placeholders(len(chunk))+`)`, args...); err != nil {
				return err
			}
		}
		return nil
	})
}

// DeleteDoomed deletes the flake's doomed paths, a page per transaction
// (writers wait for one page at most).
func (x *Index) DeleteDoomed(ctx context.Context, flake nixname.Flake) (int64, error) {
	var total int64
	for {
		var n int64
		err := x.write(ctx, "delete doomed paths of "+flake.String(), func(tx *sql.Tx) error {
			if _, err := tx.ExecContext(ctx, `CREATE TEMP TABLE IF NOT EXISTS gone (hash TEXT PRIMARY KEY) WITHOUT ROWID;
				DELETE FROM temp.gone`); err != nil {
				return err
			}
			res, err := tx.ExecContext(ctx, `INSERT INTO temp.gone SELECT hash FROM path_use WHERE flake = ? AND doomed = 1 LIMIT ?`, flake.String(), index.ScanPage)
			if err != nil {
				return err
			}
			if n, err = res.RowsAffected(); err != nil || n == 0 {
				return err
			}
			if _, err := tx.ExecContext(ctx, `DELETE FROM flake_paths WHERE flake = ? AND hash IN (SELECT hash FROM temp.gone)`, flake.String()); err != nil {
				return err
			}
			_, err = tx.ExecContext(ctx, `DELETE FROM path_use WHERE flake = ? AND hash IN (SELECT hash FROM temp.gone)`, flake.String())
			return err
		})
		total += n
		if err != nil || n == 0 {
			return total, err
		}
	}
}

// ReleaseNars removes the flake's ownership of NAR files none of its paths
// names and no push touched since cutoff.
func (x *Index) ReleaseNars(ctx context.Context, flake nixname.Flake, cutoff time.Time) ([]index.NarUse, error) {
	const cond = `o.flake = ? AND o.touched_at < ? AND NOT EXISTS (SELECT 1 FROM flake_paths p WHERE p.flake = o.flake AND p.nar_file = o.file)`
	var out []index.NarUse
	after := ""
	for {
		page, err := x.narPage(ctx, `SELECT o.file, coalesce(n.file_size, 0) FROM nar_owners o LEFT JOIN nars n ON n.file = o.file
			WHERE `+cond+` AND o.file > ? ORDER BY o.file LIMIT ?`, flake.String(), cutoff.UnixNano(), after, index.ScanPage)
		if err != nil {
			return out, fmt.Errorf("release nars of %s: %w", flake, err)
		}
		if len(page) == 0 {
			return out, nil
		}
		after = page[len(page)-1].File
		size := map[string]int64{}
		for _, u := range page {
			size[u.File] = u.Size
		}
		err = x.write(ctx, "release nars of "+flake.String(), func(tx *sql.Tx) error {
			for chunk := range slices.Chunk(page, maxParams) {
				args := []any{flake.String(), cutoff.UnixNano()}
				for _, u := range chunk {
					args = append(args, u.File)
				}
				rows, err := tx.QueryContext(ctx, `DELETE FROM nar_owners AS o WHERE `+cond+` AND o.file IN (`+placeholders(len(chunk))+`) RETURNING file`, args...)
				if err != nil {
					return err
				}
				for rows.Next() {
					var f string
					if err := rows.Scan(&f); err != nil {
						rows.Close()
						return err
					}
					out = append(out, index.NarUse{File: f, Size: size[f]})
				}
				if err := errors.Join(rows.Err(), rows.Close()); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return out, err
		}
	}
}

func (x *Index) narPage(ctx context.Context, q string, args ...any) ([]index.NarUse, error) {
	rows, err := x.r.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []index.NarUse
	for rows.Next() {
		var u index.NarUse
		if err := rows.Scan(&u.File, &u.Size); err != nil {
			return nil, err
		}
		out = append(out, u)
	}
	return out, rows.Err()
}

// DoomNars marks unowned NAR records untouched since cutoff as being
// deleted and returns every record so marked.
func (x *Index) DoomNars(ctx context.Context, cutoff time.Time) ([]index.NarUse, error) {
	const cond = `n.deleting = 0 AND n.touched_at < ? AND NOT EXISTS (SELECT 1 FROM nar_owners o WHERE o.file = n.file)`
	after := ""
	for {
		page, err := x.queryStrings(ctx, `SELECT n.file FROM nars n WHERE `+cond+` AND n.file > ? ORDER BY n.file LIMIT ?`, cutoff.UnixNano(), after, index.ScanPage)
		if err != nil {
			return nil, fmt.Errorf("doom nars: %w", err)
		}
		if len(page) == 0 {
			break
		}
		after = page[len(page)-1]
		err = x.write(ctx, "doom nars", func(tx *sql.Tx) error {
			for chunk := range slices.Chunk(page, maxParams) {
				args := []any{cutoff.UnixNano()}
				for _, f := range chunk {
					args = append(args, f)
				}
				if _, err := tx.ExecContext(ctx, `UPDATE nars AS n SET deleting = 1 WHERE `+cond+` AND n.file IN (`+placeholders(len(chunk))+`)`, args...); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	out, err := x.narPage(ctx, `SELECT file, file_size FROM nars WHERE deleting = 1 ORDER BY file`)
	if err != nil {
		return nil, fmt.Errorf("doomed nars: %w", err)
	}
	return out, nil
}

// ForgetNars removes the records of doomed NAR files.
func (x *Index) ForgetNars(ctx context.Context, files []string) error {
	return x.write(ctx, "forget nars", func(tx *sql.Tx) error {
		for chunk := range slices.Chunk(files, maxParams) {
			args := make([]any, 0, len(chunk))
			for _, f := range chunk {
				args = append(args, f)
			}
			if _, err := tx.ExecContext(ctx, `DELETE FROM nars WHERE deleting = 1 AND file IN (`+placeholders(len(chunk))+`)`, args...); err != nil {
				return err
			}
		}
		return nil
	})
}

// DropFiles deletes the flake's files it no longer serves, uploaded before
// cutoff, a page per transaction, and counts them by kind.
func (x *Index) DropFiles(ctx context.Context, flake nixname.Flake, cutoff time.Time) (map[index.Kind]int64, error) {
	total := map[index.Kind]int64{}
	for {
		var n int64
		page := map[index.Kind]int64{}
		err := x.write(ctx, "drop files of "+flake.String(), func(tx *sql.Tx) error {
			rows, err := tx.QueryContext(ctx, `DELETE FROM flake_files WHERE flake = ? AND (kind, key) IN (SELECT f.kind, f.key FROM flake_files f
				WHERE f.flake = ? AND f.created_at < ? AND NOT `+index.FileServable+` LIMIT ?) RETURNING kind`,
				flake.String(), flake.String(), cutoff.UnixNano(), index.ScanPage)
			if err != nil {
				return err
			}
			defer rows.Close()
			for rows.Next() {
				var kind string
				if err := rows.Scan(&kind); err != nil {
					return err
				}
				page[index.Kind(kind)]++
				n++
			}
			return rows.Err()
		})
		if err != nil || n == 0 {
			return total, err
		}
		for k, c := range page { // counted once committed
			total[k] += c
		}
	}
}

// ScanFiles calls fn for each of the flake's files uploaded before
// `before`, a page at a time (index.ScanFilesQuery).
func (x *Index) ScanFiles(ctx context.Context, flake nixname.Flake, before time.Time, fn func(index.FileUse) error) error {
	return index.ScanFilesPaged(ctx, flake, func(ctx context.Context, after index.FileUse) ([]index.FileUse, error) {
		return x.scanFilesPage(ctx, flake, before, after)
	}, fn)
}

func (x *Index) scanFilesPage(ctx context.Context, flake nixname.Flake, before time.Time, after index.FileUse) ([]index.FileUse, error) {
	rows, err := x.r.QueryContext(ctx, index.ScanFilesQuery("?"), flake.String(), before.UnixNano(),
		after.Needs, string(after.Kind), after.Key, index.ScanPage)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []index.FileUse
	for rows.Next() {
		var u index.FileUse
		var kind string
		var created int64
		var touched sql.NullInt64
		if err := rows.Scan(&kind, &u.Key, &u.Needs, &created, &u.Served, &touched); err != nil {
			return nil, err
		}
		u.Kind, u.CreatedAt = index.Kind(kind), time.Unix(0, created)
		if touched.Valid {
			u.NarTouched = time.Unix(0, touched.Int64)
		}
		out = append(out, u)
	}
	return out, rows.Err()
}

// ClaimLog marks the flake's log of drv as uploaded at t; ErrBusy while
// a collection deletes it.
func (x *Index) ClaimLog(ctx context.Context, flake nixname.Flake, drv string, t time.Time) error {
	return x.write(ctx, "claim log "+drv, func(tx *sql.Tx) error {
		var deleting bool
		err := tx.QueryRowContext(ctx, `UPDATE logs SET created_at = max(created_at, ?) WHERE flake = ? AND drv = ? AND deleting = 0 RETURNING 0
			`, t.UnixNano(), flake.String(), drv).Scan(&deleting)
		if !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		err = tx.QueryRowContext(ctx, `SELECT deleting FROM logs WHERE flake = ? AND drv = ?`, flake.String(), drv).Scan(&deleting)
		if errors.Is(err, sql.ErrNoRows) {
			return nil
		}
		if err == nil && deleting {
			err = fmt.Errorf("log %s of %s: %w", drv, flake, index.ErrBusy)
		}
		return err
	})
}

// expiredLog is the condition, on a row of logs (parameters: flake,
// before), that DoomLogs dooms it.
const expiredLog = `flake = ? AND deleting = 0 AND created_at < ?`

// DoomLogs marks the flake's logs uploaded before `before` as being
// deleted and returns every log of the flake so marked.
func (x *Index) DoomLogs(ctx context.Context, flake nixname.Flake, before time.Time) ([]index.Log, error) {
	var out []index.Log
	err := x.write(ctx, "doom logs of "+flake.String(), func(tx *sql.Tx) error {
		if !before.IsZero() {
			if _, err := tx.ExecContext(ctx, `UPDATE logs SET deleting = 1 WHERE `+expiredLog, flake.String(), before.UnixNano()); err != nil {
				return err
			}
		}
		rows, err := tx.QueryContext(ctx, `SELECT drv, blob_key, encoding FROM logs WHERE flake = ? AND deleting = 1 ORDER BY drv`, flake.String())
		if err != nil {
			return err
		}
		out, err = scanLogs(rows)
		return err
	})
	return out, err
}

// ExpiredLogs returns the logs DoomLogs(flake, before) would return.
func (x *Index) ExpiredLogs(ctx context.Context, flake nixname.Flake, before time.Time) ([]index.Log, error) {
	expired := "0"
	args := []any{flake.String()}
	if !before.IsZero() {
		expired = expiredLog
		args = append(args, flake.String(), before.UnixNano())
	}
	rows, err := x.r.QueryContext(ctx, `SELECT drv, blob_key, encoding FROM logs WHERE (flake = ? AND deleting = 1) OR (`+expired+`) ORDER BY drv`, args...)
	if err != nil {
		return nil, fmt.Errorf("expired logs of %s: %w", flake, err)
	}
	out, err := scanLogs(rows)
	if err != nil {
		return nil, fmt.Errorf("expired logs of %s: %w", flake, err)
	}
	return out, nil
}

func scanLogs(rows *sql.Rows) ([]index.Log, error) {
	defer rows.Close()
	var out []index.Log
	for rows.Next() {
		var l index.Log
		if err := rows.Scan(&l.Drv, &l.BlobKey, &l.Encoding); err != nil {
			return nil, err
		}
		out = append(out, l)
	}
	return out, rows.Err()
}

// ForgetLogs removes the flake's doomed log records of drvs.
func (x *Index) ForgetLogs(ctx context.Context, flake nixname.Flake, drvs []string) error {
	return x.write(ctx, "forget logs of "+flake.String(), func(tx *sql.Tx) error {
		for chunk := range slices.Chunk(drvs, maxParams) {
			args := []any{flake.String()}
			for _, d := range chunk {
				args = append(args, d)
			}
			if _, err := tx.ExecContext(ctx, `DELETE FROM logs WHERE flake = ? AND deleting = 1 AND drv IN (`+placeholders(len(chunk))+`)`, args...); err != nil {
				return err
			}
		}
		return nil
	})
}

// Generation returns the collection generation counter.
func (x *Index) Generation(ctx context.Context) (int64, error) {
	var g int64
	if err := x.r.QueryRowContext(ctx, `SELECT generation FROM gc_state WHERE id = 1`).Scan(&g); err != nil {
		return 0, fmt.Errorf("read gc generation: %w", err)
	}
	return g, nil
}

// BumpGeneration increments the generation counter.
func (x *Index) BumpGeneration(ctx context.Context) error {
	return x.write(ctx, "bump gc generation", func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `UPDATE gc_state SET generation = generation + 1 WHERE id = 1`)
		return err
	})
}

// Usage returns each flake's path count and owned NAR bytes.
func (x *Index) Usage(ctx context.Context) ([]index.FlakeUsage, error) {
	rows, err := x.r.QueryContext(ctx, `SELECT f, sum(paths), sum(bytes) FROM (
			SELECT flake AS f, count(*) AS paths, 0 AS bytes FROM flake_paths GROUP BY flake
			UNION ALL
			SELECT o.flake, 0, coalesce(sum(n.file_size), 0) FROM nar_owners o JOIN nars n ON n.file = o.file GROUP BY o.flake)
		GROUP BY f ORDER BY f`)
	if err != nil {
		return nil, fmt.Errorf("usage per flake: %w", err)
	}
	defer rows.Close()
	var out []index.FlakeUsage
	for rows.Next() {
		var name string
		var u index.FlakeUsage
		if err := rows.Scan(&name, &u.Paths, &u.Bytes); err != nil {
			return nil, fmt.Errorf("usage per flake: %w", err)
		}
		if u.Flake, err = nixname.ParseFlake(name); err != nil {
			return nil, fmt.Errorf("usage per flake: stored flake: %w", err)
		}
		out = append(out, u)
	}
	return out, rows.Err()
}

// LockCollector takes an exclusive lock on a file beside the database
// (flock: released when the process dies).
func (x *Index) LockCollector(ctx context.Context) (func(), error) {
	name := x.file + ".gc-lock"
	f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("collector lock %s: %w", name, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("collector lock %s: another collection runs: %w", name, index.ErrBusy)
		}
		return nil, fmt.Errorf("collector lock %s: %w", name, err)
	}
	return func() { f.Close() }, nil
}
