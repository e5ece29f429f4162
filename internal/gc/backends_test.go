package gc

import (
	"context"
	"database/sql"
	"fmt"
	"io/fs"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/minio/minio-go/v7"

	"github.com/flakegate/flakegate/internal/blob"
	"github.com/flakegate/flakegate/internal/index"
	"github.com/flakegate/flakegate/internal/storage"
	"github.com/flakegate/flakegate/internal/testutil"
)

// backend opens an empty index and blob store of one kind.
type backend struct {
	name string
	open func(t *testing.T) (index.Index, blob.Store, raw)
}

// raw reads a backend's storage beside its APIs, to show that something
// (a dry run) changed nothing at all.
type raw struct {
	// rows returns every row of every index table, sorted.
	rows func(t *testing.T) []string
	// blobs returns every blob (key and size), sorted.
	blobs func(t *testing.T) []string
}

// backends are fs + SQLite always, S3 + PostgreSQL when the test services
// run (scripts/test-services.sh), as the scale-out tests use them.
func backends() []backend {
	return []backend{
		{"fs+sqlite", func(t *testing.T) (index.Index, blob.Store, raw) {
			dir := t.TempDir()
			db, blobs := filepath.Join(dir, "index.db"), filepath.Join(dir, "blobs")
			x, b := open(t, "sqlite://"+db, "file://"+blobs)
			return x, b, raw{rows: func(t *testing.T) []string { return sqliteRows(t, db) }, blobs: func(t *testing.T) []string { return fsBlobs(t, blobs) }}
		}},
		{"s3+postgres", func(t *testing.T) (index.Index, blob.Store, raw) {
			pg, s3 := testutil.ScaleOutURLs(t, "gctest")
			x, b := open(t, pg, s3)
			return x, b, raw{rows: func(t *testing.T) []string { return postgresRows(t, pg) }, blobs: func(t *testing.T) []string { return s3Blobs(t, s3) }}
		}},
	}
}

func open(t *testing.T, indexURL, blobURL string) (index.Index, blob.Store) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	x, err := storage.OpenIndex(ctx, indexURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { x.Close() })
	b, err := storage.OpenBlob(ctx, blobURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return x, b
}

// sqliteRows reads every table of the SQLite index at path, read-only.
func sqliteRows(t *testing.T, path string) []string {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+path+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var tables []string
	rows, err := db.Query(`SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var name string
		if err := rows.Scan(&name); err != nil {
			t.Fatal(err)
		}
		tables = append(tables, name)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, table := range tables {
		rows, err := db.Query(`SELECT * FROM ` + table)
		if err != nil {
			t.Fatal(err)
		}
		cols, _ := rows.Columns()
		for rows.Next() {
			vals := make([]any, len(cols))
			ptrs := make([]any, len(cols))
			for i := range vals {
				ptrs[i] = &vals[i]
			}
			if err := rows.Scan(ptrs...); err != nil {
				t.Fatal(err)
			}
			out = append(out, fmt.Sprintf("%s %q", table, vals))
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
	}
	if len(tables) < 5 {
		t.Fatalf("the SQLite index has tables %v: not read", tables)
	}
	slices.Sort(out)
	return out
}

// postgresRows reads every table of the PostgreSQL index (its schema).
func postgresRows(t *testing.T, pgURL string) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, pgURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	rows, err := conn.Query(ctx, `SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema() ORDER BY 1`)
	if err != nil {
		t.Fatal(err)
	}
	tables, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	if len(tables) < 5 {
		t.Fatalf("the PostgreSQL index has tables %v: not read", tables)
	}
	var out []string
	for _, table := range tables {
		rows, err := conn.Query(ctx, `SELECT * FROM `+pgx.Identifier{table}.Sanitize())
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			vals, err := rows.Values()
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, fmt.Sprintf("%s %q", table, vals))
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
	}
	slices.Sort(out)
	return out
}

// fsBlobs lists every file below a filesystem store's root.
func fsBlobs(t *testing.T, root string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		out = append(out, fmt.Sprintf("%s %d", rel, info.Size()))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(out)
	return out
}

// s3Blobs lists every object below an S3 store's prefix.
func s3Blobs(t *testing.T, s3URL string) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cfg, mc := testutil.MinioFor(t, s3URL)
	var out []string
	for oi := range mc.ListObjectsIter(ctx, cfg.Bucket, minio.ListObjectsOptions{Prefix: cfg.Prefix, Recursive: true}) {
		if oi.Err != nil {
			t.Fatal(oi.Err)
		}
		out = append(out, fmt.Sprintf("%s %d", strings.TrimPrefix(oi.Key, cfg.Prefix), oi.Size))
	}
	slices.Sort(out)
	return out
}
