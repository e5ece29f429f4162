package gc

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/flakegate/flakegate/internal/blob"
	"github.com/flakegate/flakegate/internal/index"
	"github.com/flakegate/flakegate/internal/storage"
	"github.com/flakegate/flakegate/internal/testutil"
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
			pg, s3 := testutil.ScaleOutURLs(t, "gctest")
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
