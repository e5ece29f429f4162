package sqlite

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/flakegate/flakegate/internal/index"
	"github.com/flakegate/flakegate/internal/index/indextest"
)

func TestConformance(t *testing.T) {
	indextest.Run(t, func(t *testing.T) index.Index {
		x, err := Open(context.Background(), filepath.Join(t.TempDir(), "index.db"))
		if err != nil {
			t.Fatal(err)
		}
		return x
	})
}

// Two Index instances on one file, as two processes sharing it.
func TestConformanceShared(t *testing.T) {
	indextest.RunShared(t, func(t *testing.T) (index.Index, index.Index) {
		file := filepath.Join(t.TempDir(), "index.db")
		a, err := Open(context.Background(), file)
		if err != nil {
			t.Fatal(err)
		}
		b, err := Open(context.Background(), file)
		if err != nil {
			a.Close()
			t.Fatal(err)
		}
		return a, b
	})
}
