package blobserverapp

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A dry run writes nothing, also where there is nothing: pointed at a
// data directory that holds no store (a typo in -data-dir or -index), it
// says so and creates nothing, where opening the store as the server
// does would create an empty index and blob directory and report
// "0 paths would go" — a check that passes for the wrong reason.
func TestGCDryRunCreatesNoStore(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "typo")
	for _, cfg := range []GCConfig{
		{DataDir: dir},
		{Index: "sqlite://" + filepath.Join(dir, "index.db"), Storage: "file://" + filepath.Join(dir, "blobs")},
	} {
		cfg.DryRun, cfg.LogLevel = true, "info"
		var out bytes.Buffer
		err := RunGC(context.Background(), cfg, &out, slog.New(slog.DiscardHandler))
		if err == nil || !strings.Contains(err.Error(), filepath.Join(dir, "index.db")) {
			t.Errorf("dry run on %+v: %v (output %q); want an error naming the missing index", cfg, err, out.String())
		}
		if _, serr := os.Stat(dir); !os.IsNotExist(serr) {
			t.Fatalf("dry run on %+v created %s (%v)", cfg, dir, serr)
		}
	}
}
