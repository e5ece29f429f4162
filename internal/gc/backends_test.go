package gc

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/flakegate/flakegate/internal/blob"
	"github.com/flakegate/flakegate/internal/index"
	"github.com/flakegate/flakegate/internal/storage"
)

// backend opens an empty index and blob store of one kind.
type backend struct {
	name string
	open func(t *testing.T) (index.Index, blob.Store)
}

// backends are fs + SQLite always, S3 + PostgreSQL when the test services
// run (scripts/test-services.sh), as the scale-out tests use them.
func backends() []backend {
	return []backend{
		{"fs+sqlite", func(t *testing.T) (index.Index, blob.Store) {
			dir := t.TempDir()
			return open(t, "sqlite://"+filepath.Join(dir, "index.db"), "file://"+filepath.Join(dir, "blobs"))
		}},
		{"s3+postgres", func(t *testing.T) (index.Index, blob.Store) {
			pg, s3 := scaleOutURLs(t)
			return open(t, pg, s3)
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

// scaleOutURLs returns a PostgreSQL URL on a fresh schema and an S3 URL on
// a fresh prefix, or skips.
func scaleOutURLs(t *testing.T) (string, string) {
	t.Helper()
	s3URL, pgURL := os.Getenv("FLAKEGATE_TEST_S3_URL"), os.Getenv("FLAKEGATE_TEST_POSTGRES_URL")
	if s3URL == "" || pgURL == "" {
		t.Skip("FLAKEGATE_TEST_S3_URL / FLAKEGATE_TEST_POSTGRES_URL not set: run `eval \"$(scripts/test-services.sh start)\"` to start MinIO and PostgreSQL on loopback")
	}
	var rnd [6]byte
	_, _ = rand.Read(rnd[:])
	id := "gctest_" + hex.EncodeToString(rnd[:])
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, pgURL)
	if err != nil {
		t.Fatalf("connect to PostgreSQL: %v", err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE SCHEMA "+id); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if c, err := pgx.Connect(ctx, pgURL); err == nil {
			_, _ = c.Exec(ctx, "DROP SCHEMA "+id+" CASCADE")
			c.Close(ctx)
		}
	})
	pu, err := url.Parse(pgURL)
	if err != nil {
		t.Fatal(err)
	}
	q := pu.Query()
	q.Set("search_path", id)
	pu.RawQuery = q.Encode()
	su, err := url.Parse(s3URL)
	if err != nil {
		t.Fatal(err)
	}
	su.Path = strings.TrimSuffix(su.Path, "/") + "/" + id
	return pu.String(), su.String()
}
