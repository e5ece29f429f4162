package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/flakegate/flakegate/internal/index"
	"github.com/flakegate/flakegate/internal/nixname"
)

// What the garbage collector needs (index.Collectable). Transactions run
// at READ COMMITTED: a push's check-and-touch (AddPath, PutPin, ClaimNar,
// PutNar) and a collection's conditional delete take the same row's lock,
// and whichever comes second re-reads the row: a delete after a touch sees
// the new time and skips the row, a touch after a delete finds no row and
// fails (ErrNotHeld, ErrNotFound, or ErrBusy for a NAR being deleted).

// touchPaths marks those of hashes the flake holds as used at t and
// returns how many it holds.
func touchPaths(ctx context.Context, tx pgx.Tx, flake nixname.Flake, hashes []string, t time.Time) (int64, error) {
	tag, err := tx.Exec(ctx, `UPDATE path_use SET last_used = greatest(last_used, $1) WHERE flake = $2 AND NOT doomed AND hash = ANY($3)`, t, flake.String(), hashes)
	if err != nil {
		return 0, err
	}
	return tag.RowsAffected(), nil
}

// AddPath records a pushed path after checking, in the same transaction,
// that the flake owns its NAR and holds its references (marking them used).
func (x *Index) AddPath(ctx context.Context, flake nixname.Flake, p index.Path) error {
	if err := index.CheckPath(flake, p); err != nil {
		return err
	}
	at := index.CreatedAt(p.CreatedAt)
	refs := index.RefHashes(p)
	return x.write(ctx, "add path "+p.Hash, func(ctx context.Context, tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `UPDATE nar_owners SET touched_at = greatest(touched_at, $1) WHERE file = $2 AND flake = $3`, at, p.NarFile, flake.String())
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return fmt.Errorf("nar %s: %w", p.NarFile, index.ErrNotHeld)
		}
		if len(refs) > 0 {
			n, err := touchPaths(ctx, tx, flake, refs, at)
			if err != nil {
				return err
			}
			if n != int64(len(refs)) {
				return fmt.Errorf("%d of %d references: %w", int64(len(refs))-n, len(refs), index.ErrNotHeld)
			}
		}
		return insertPath(ctx, tx, flake, p, at)
	})
}

// TouchPaths marks those of hashes the flake holds as used at t.
func (x *Index) TouchPaths(ctx context.Context, flake nixname.Flake, hashes []string, t time.Time) error {
	if len(hashes) == 0 {
		return nil
	}
	return x.write(ctx, "touch paths of "+flake.String(), func(ctx context.Context, tx pgx.Tx) error {
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
	return x.write(ctx, "pin "+p.Name, func(ctx context.Context, tx pgx.Tx) error {
		var storePath string
		err := tx.QueryRow(ctx, `WITH u AS (UPDATE path_use SET last_used = greatest(last_used, $1) WHERE flake = $2 AND hash = $3 AND NOT doomed RETURNING hash)
			SELECT p.store_path FROM flake_paths p JOIN u ON u.hash = p.hash WHERE p.flake = $2`,
			at, flake.String(), p.Hash).Scan(&storePath)
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("path %s of %s: %w", p.Hash, flake, index.ErrNotFound)
		}
		if err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `INSERT INTO pins (flake, name, hash, store_path, created_at) VALUES ($1, $2, $3, $4, $5)
			ON CONFLICT (flake, name) DO UPDATE SET hash = excluded.hash, store_path = excluded.store_path, created_at = excluded.created_at`,
			flake.String(), p.Name, p.Hash, storePath, at)
		return err
	})
}

// DeletePin removes a pin.
func (x *Index) DeletePin(ctx context.Context, flake nixname.Flake, name string) error {
	return x.write(ctx, "unpin "+name, func(ctx context.Context, tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `DELETE FROM pins WHERE flake = $1 AND name = $2`, flake.String(), name)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return fmt.Errorf("pin %s of %s: %w", name, flake, index.ErrNotFound)
		}
		return nil
	})
}

// Pins lists a flake's pins by name.
func (x *Index) Pins(ctx context.Context, flake nixname.Flake) ([]index.Pin, error) {
	ctx, cancel := withTimeout(ctx)
	defer cancel()
	rows, err := x.pool.Query(ctx, `SELECT name, hash, store_path, created_at FROM pins WHERE flake = $1 ORDER BY name`, flake.String())
	if err != nil {
		return nil, fmt.Errorf("pins of %s: %w", flake, err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (index.Pin, error) {
		var p index.Pin
		err := r.Scan(&p.Name, &p.Hash, &p.StorePath, &p.CreatedAt)
		return p, err
	})
	if err != nil {
		return nil, fmt.Errorf("pins of %s: %w", flake, err)
	}
	return out, nil
}

// CollectableFlakes lists the flakes holding a path or owning a NAR.
func (x *Index) CollectableFlakes(ctx context.Context) ([]nixname.Flake, error) {
	ctx, cancel := withTimeout(ctx)
	defer cancel()
	rows, err := x.pool.Query(ctx, `SELECT flake FROM flake_paths UNION SELECT flake FROM nar_owners UNION SELECT flake FROM logs UNION SELECT flake FROM flake_files ORDER BY 1`)
	if err != nil {
		return nil, fmt.Errorf("list flakes: %w", err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
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
	ctx, cancel := withTimeout(ctx)
	defer cancel()
	rows, err := x.pool.Query(ctx, `SELECT p.hash, p.nar_file, coalesce(n.file_size, 0), p.refs, u.last_used,
			EXISTS (SELECT 1 FROM pins WHERE pins.flake = p.flake AND pins.hash = p.hash)
		FROM flake_paths p JOIN path_use u ON u.flake = p.flake AND u.hash = p.hash LEFT JOIN nars n ON n.file = p.nar_file
		WHERE p.flake = $1 AND p.hash > $2 ORDER BY p.hash LIMIT $3`, flake.String(), after, index.ScanPage)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (index.PathUse, error) {
		var u index.PathUse
		var refs []string
		err := r.Scan(&u.Hash, &u.NarFile, &u.Size, &refs, &u.LastUsed, &u.Pinned)
		u.Refs = index.RefHashes(index.Path{Hash: u.Hash, References: refs})
		return u, err
	})
}

// ScanUsage calls fn for every NAR file a path names, once, most recently
// used first.
func (x *Index) ScanUsage(ctx context.Context, fn func(time.Time, int64) bool) error {
	rows, err := x.pool.Query(ctx, `SELECT max(u.last_used) AS t, coalesce(max(n.file_size), 0) FROM flake_paths p
		JOIN path_use u ON u.flake = p.flake AND u.hash = p.hash
		LEFT JOIN nars n ON n.file = p.nar_file GROUP BY p.nar_file ORDER BY t DESC`)
	if err != nil {
		return fmt.Errorf("scan usage: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var last time.Time
		var size int64
		if err := rows.Scan(&last, &size); err != nil {
			return fmt.Errorf("scan usage: %w", err)
		}
		if !fn(last, size) {
			return nil
		}
	}
	return rows.Err()
}

// DoomPaths marks those of the flake's paths last used before cutoff and
// not pinned as doomed.
func (x *Index) DoomPaths(ctx context.Context, flake nixname.Flake, hashes []string, cutoff time.Time) ([]string, error) {
	var doomed []string
	err := x.write(ctx, "doom paths of "+flake.String(), func(ctx context.Context, tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `UPDATE path_use p SET doomed = true WHERE p.flake = $1 AND NOT p.doomed AND p.last_used < $2 AND p.hash = ANY($3)
			AND NOT EXISTS (SELECT 1 FROM pins WHERE pins.flake = p.flake AND pins.hash = p.hash)
			RETURNING p.hash`, flake.String(), cutoff, hashes)
		if err != nil {
			return err
		}
		doomed, err = pgx.CollectRows(rows, pgx.RowTo[string])
		return err
	})
	if err != nil {
		return nil, err
	}
	return doomed, nil
}

// SparePaths clears the doomed mark (of every path of the flake when
// hashes is nil).
func (x *Index) SparePaths(ctx context.Context, flake nixname.Flake, hashes []string) error {
	return x.write(ctx, "spare paths of "+flake.String(), func(ctx context.Context, tx pgx.Tx) error {
		var err error
		if hashes == nil {
			_, err = tx.Exec(ctx, `UPDATE path_use SET doomed = false WHERE flake = $1 AND doomed`, flake.String())
		} else {
			_, err = tx.Exec(ctx, `UPDATE path_use SET doomed = false WHERE flake = $1 AND hash = ANY($2)`, flake.String(), hashes)
		}
		return err
	})
}

// DeleteDoomed deletes the flake's doomed paths, a page per transaction.
func (x *Index) DeleteDoomed(ctx context.Context, flake nixname.Flake) (int64, error) {
	var total int64
	for {
		var n int64
		err := x.write(ctx, "delete doomed paths of "+flake.String(), func(ctx context.Context, tx pgx.Tx) error {
			tag, err := tx.Exec(ctx, `WITH gone AS (DELETE FROM path_use WHERE flake = $1 AND hash IN
					(SELECT hash FROM path_use WHERE flake = $1 AND doomed LIMIT $2) RETURNING hash)
				DELETE FROM flake_paths p USING gone WHERE p.flake = $1 AND p.hash = gone.hash`, flake.String(), index.ScanPage)
			n = tag.RowsAffected()
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
	var out []index.NarUse
	err := x.write(ctx, "release nars of "+flake.String(), func(ctx context.Context, tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `WITH gone AS (
				DELETE FROM nar_owners o WHERE o.flake = $1 AND o.touched_at < $2
				AND NOT EXISTS (SELECT 1 FROM flake_paths p WHERE p.flake = o.flake AND p.nar_file = o.file)
				RETURNING o.file)
			SELECT g.file, coalesce(n.file_size, 0) FROM gone g LEFT JOIN nars n ON n.file = g.file`, flake.String(), cutoff)
		if err != nil {
			return err
		}
		if out, err = pgx.CollectRows(rows, scanNarUse); err != nil {
			return err
		}
		// A flake that holds nothing any more leaves flakes (Stats counts
		// only flakes holding something, so a push racing this is counted
		// whatever the order).
		_, err = tx.Exec(ctx, `DELETE FROM flakes f WHERE f.flake = $1 AND NOT EXISTS (SELECT 1 FROM flake_paths p WHERE p.flake = f.flake)
			AND NOT EXISTS (SELECT 1 FROM nar_owners o WHERE o.flake = f.flake)`, flake.String())
		return err
	})
	return out, err
}

func scanNarUse(r pgx.CollectableRow) (index.NarUse, error) {
	var u index.NarUse
	err := r.Scan(&u.File, &u.Size)
	return u, err
}

// DoomNars marks unowned NAR records untouched since cutoff as being
// deleted and returns every record so marked.
func (x *Index) DoomNars(ctx context.Context, cutoff time.Time) ([]index.NarUse, error) {
	var out []index.NarUse
	err := x.write(ctx, "doom nars", func(ctx context.Context, tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `UPDATE nars n SET deleting = true WHERE NOT n.deleting AND n.touched_at < $1
			AND NOT EXISTS (SELECT 1 FROM nar_owners o WHERE o.file = n.file)`, cutoff); err != nil {
			return err
		}
		rows, err := tx.Query(ctx, `SELECT file, file_size FROM nars WHERE deleting ORDER BY file`)
		if err != nil {
			return err
		}
		out, err = pgx.CollectRows(rows, scanNarUse)
		return err
	})
	return out, err
}

// ForgetNars removes the records of doomed NAR files.
func (x *Index) ForgetNars(ctx context.Context, files []string) error {
	return x.write(ctx, "forget nars", func(ctx context.Context, tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `DELETE FROM nars WHERE deleting AND file = ANY($1)`, files)
		return err
	})
}

// DropFiles deletes the flake's files it no longer serves, uploaded before
// cutoff, a page per transaction, and counts them by kind.
func (x *Index) DropFiles(ctx context.Context, flake nixname.Flake, cutoff time.Time) (map[index.Kind]int64, error) {
	total := map[index.Kind]int64{}
	for {
		var n int64
		page := map[index.Kind]int64{}
		err := x.write(ctx, "drop files of "+flake.String(), func(ctx context.Context, tx pgx.Tx) error {
			clear(page) // a retried transaction counts anew
			n = 0
			rows, err := tx.Query(ctx, `WITH gone AS (DELETE FROM flake_files WHERE flake = $1 AND (kind, key) IN (SELECT f.kind, f.key FROM flake_files f
				WHERE f.flake = $1 AND f.created_at < $2 AND NOT `+index.FileServable+` LIMIT $3) RETURNING kind)
				SELECT kind, count(*) FROM gone GROUP BY kind`, flake.String(), cutoff, index.ScanPage)
			if err != nil {
				return err
			}
			var kind string
			var c int64
			_, err = pgx.ForEachRow(rows, []any{&kind, &c}, func() error {
				page[index.Kind(kind)] += c
				n += c
				return nil
			})
			return err
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
	ctx, cancel := withTimeout(ctx)
	defer cancel()
	rows, err := x.pool.Query(ctx, index.ScanFilesQuery("$"), flake.String(), before, after.Needs, string(after.Kind), after.Key, index.ScanPage)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (index.FileUse, error) {
		var u index.FileUse
		var kind string
		var touched *time.Time
		err := r.Scan(&kind, &u.Key, &u.Needs, &u.CreatedAt, &u.Served, &touched)
		u.Kind = index.Kind(kind)
		if touched != nil {
			u.NarTouched = *touched
		}
		return u, err
	})
}

// ClaimLog marks the flake's log of drv as uploaded at t; ErrBusy while
// a collection deletes it. The update takes the row's lock: a doom after
// it sees the new time, one before it makes it find the row deleting.
func (x *Index) ClaimLog(ctx context.Context, flake nixname.Flake, drv string, t time.Time) error {
	return x.write(ctx, "claim log "+drv, func(ctx context.Context, tx pgx.Tx) error {
		var deleting bool
		err := tx.QueryRow(ctx, `WITH u AS (UPDATE logs SET created_at = greatest(created_at, $3) WHERE flake = $1 AND drv = $2 AND NOT deleting RETURNING drv)
			SELECT NOT EXISTS (SELECT 1 FROM u) AND EXISTS (SELECT 1 FROM logs WHERE flake = $1 AND drv = $2 AND deleting)`,
			flake.String(), drv, t).Scan(&deleting)
		if err == nil && deleting {
			err = fmt.Errorf("log %s of %s: %w", drv, flake, index.ErrBusy)
		}
		return err
	})
}

// expiredLog is the condition, on a row of logs (parameters: $1 flake,
// $2 before), that DoomLogs dooms it.
const expiredLog = `flake = $1 AND NOT deleting AND created_at < $2`

// DoomLogs marks the flake's logs uploaded before `before` as being
// deleted and returns every log of the flake so marked.
func (x *Index) DoomLogs(ctx context.Context, flake nixname.Flake, before time.Time) ([]index.Log, error) {
	var out []index.Log
	err := x.write(ctx, "doom logs of "+flake.String(), func(ctx context.Context, tx pgx.Tx) error {
		if !before.IsZero() {
			if _, err := tx.Exec(ctx, `UPDATE logs SET deleting = true WHERE `+expiredLog, flake.String(), before); err != nil {
				return err
			}
		}
		rows, err := tx.Query(ctx, `SELECT drv, blob_key, encoding FROM logs WHERE flake = $1 AND deleting ORDER BY drv`, flake.String())
		if err != nil {
			return err
		}
		out, err = pgx.CollectRows(rows, scanLog)
		return err
	})
	return out, err
}

// ExpiredLogs returns the logs DoomLogs(flake, before) would return.
func (x *Index) ExpiredLogs(ctx context.Context, flake nixname.Flake, before time.Time) ([]index.Log, error) {
	ctx, cancel := withTimeout(ctx)
	defer cancel()
	expired := "false"
	args := []any{flake.String()}
	if !before.IsZero() {
		expired = expiredLog
		args = append(args, before)
	}
	rows, err := x.pool.Query(ctx, `SELECT drv, blob_key, encoding FROM logs WHERE (flake = $1 AND deleting) OR (`+expired+`) ORDER BY drv`, args...)
	if err != nil {
		return nil, fmt.Errorf("expired logs of %s: %w", flake, err)
	}
	out, err := pgx.CollectRows(rows, scanLog)
	if err != nil {
		return nil, fmt.Errorf("expired logs of %s: %w", flake, err)
	}
	return out, nil
}

func scanLog(r pgx.CollectableRow) (index.Log, error) {
	var l index.Log
	err := r.Scan(&l.Drv, &l.BlobKey, &l.Encoding)
	return l, err
}

// ForgetLogs removes the flake's doomed log records of drvs.
func (x *Index) ForgetLogs(ctx context.Context, flake nixname.Flake, drvs []string) error {
	return x.write(ctx, "forget logs of "+flake.String(), func(ctx context.Context, tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `DELETE FROM logs WHERE flake = $1 AND deleting AND drv = ANY($2)`, flake.String(), drvs)
		return err
	})
}

// Generation returns the collection generation counter.
func (x *Index) Generation(ctx context.Context) (int64, error) {
	ctx, cancel := withTimeout(ctx)
	defer cancel()
	var g int64
	if err := x.pool.QueryRow(ctx, `SELECT generation FROM gc_state WHERE id = 1`).Scan(&g); err != nil {
		return 0, fmt.Errorf("read gc generation: %w", err)
	}
	return g, nil
}

// BumpGeneration increments the generation counter.
func (x *Index) BumpGeneration(ctx context.Context) error {
	return x.write(ctx, "bump gc generation", func(ctx context.Context, tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `UPDATE gc_state SET generation = generation + 1 WHERE id = 1`)
		return err
	})
}

// Usage returns each flake's path count and owned NAR bytes.
func (x *Index) Usage(ctx context.Context) ([]index.FlakeUsage, error) {
	ctx, cancel := withTimeout(ctx)
	defer cancel()
	rows, err := x.pool.Query(ctx, `SELECT f, sum(paths)::bigint, sum(bytes)::bigint FROM (
			SELECT flake AS f, count(*) AS paths, 0::bigint AS bytes FROM flake_paths GROUP BY flake
			UNION ALL
			SELECT o.flake, 0, coalesce(sum(n.file_size), 0)::bigint FROM nar_owners o JOIN nars n ON n.file = o.file GROUP BY o.flake) u
		GROUP BY f ORDER BY f`)
	if err != nil {
		return nil, fmt.Errorf("usage per flake: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (index.FlakeUsage, error) {
		var name string
		var u index.FlakeUsage
		if err := r.Scan(&name, &u.Paths, &u.Bytes); err != nil {
			return u, err
		}
		f, err := nixname.ParseFlake(name)
		u.Flake = f
		return u, err
	})
	if err != nil {
		return nil, fmt.Errorf("usage per flake: %w", err)
	}
	return out, nil
}

// collectorLockKey names the advisory lock one collection at a time holds
// (per schema).
const collectorLockKey = "flakegate.index.gc:"

// LockCollector takes a session-level advisory lock on a connection kept
// out of the pool until unlock (PostgreSQL releases it if the process
// dies and the connection drops).
func (x *Index) LockCollector(ctx context.Context) (func(), error) {
	ctx, cancel := withTimeout(ctx)
	defer cancel()
	conn, err := x.pool.Acquire(ctx)
	if err != nil {
		return nil, fmt.Errorf("collector lock: %w", err)
	}
	var ok bool
	if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock(hashtext($1 || coalesce(current_schema(), '')))`, collectorLockKey).Scan(&ok); err != nil {
		conn.Release()
		return nil, fmt.Errorf("collector lock: %w", err)
	}
	if !ok {
		conn.Release()
		return nil, fmt.Errorf("collector lock: another collection runs: %w", index.ErrBusy)
	}
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := conn.Exec(ctx, `SELECT pg_advisory_unlock(hashtext($1 || coalesce(current_schema(), '')))`, collectorLockKey); err != nil {
			// Drop the connection: closing it releases the lock.
			conn.Conn().Close(ctx)
		}
		conn.Release()
	}, nil
}
