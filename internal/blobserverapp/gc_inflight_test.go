package blobserverapp

import (
	"context"
	"io"
	"log/slog"
	"path/filepath"
	"testing"

	blobfs "github.com/flakegate/flakegate/internal/blob/fs"
	"github.com/flakegate/flakegate/internal/index/sqlite"
)

// `blobserver gc` (documented as safe while servers serve, on the same
// -data-dir) opened the file store with blobfs.Open, which removed every
// file in <root>/.tmp: the running server's uploads in progress, whose
// Commit then failed (a 500), even with -dry-run ("changes nothing")
// (review r5, 2026-12-05). It now opens it with blobfs.OpenShared.
func TestGCBesideARunningServerKeepsItsUploads(t *testing.T) {
	for _, dry := range []bool{true, false} {
		name := "run"
		if dry {
			name = "dry-run"
		}
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			dir := t.TempDir()
			// The running server's store and index.
			bs, err := blobfs.Open(filepath.Join(dir, "blobs"))
			if err != nil {
				t.Fatal(err)
			}
			idx, err := sqlite.Open(ctx, filepath.Join(dir, "index.db"))
			if err != nil {
				t.Fatal(err)
			}
			defer idx.Close()
			// An upload in progress on the server.
			w, err := bs.Create(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := w.Write([]byte("the first bytes of a large NAR")); err != nil {
				t.Fatal(err)
			}
			// The admin runs a collection (or a dry run) meanwhile.
			cfg := DefaultGCConfig()
			cfg.DataDir, cfg.DryRun, cfg.InvalidateDelay = dir, dry, 0
			if err := RunGC(ctx, cfg, io.Discard, slog.New(slog.DiscardHandler)); err != nil {
				t.Fatal(err)
			}
			// The upload finishes.
			if err := w.Commit(ctx, "nar/0000000000000000000000000000000000000000000000000000.nar"); err != nil {
				t.Errorf("the server's upload failed because `blobserver gc` ran: %v", err)
			}
		})
	}
}
