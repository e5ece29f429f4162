package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/flakegate/flakegate/internal/index"
	"github.com/flakegate/flakegate/internal/index/indextest"
	"github.com/flakegate/flakegate/internal/nixname"
)

// benchPaths is how many paths BenchmarkGetPath's index holds.
const benchPaths = 100_000

// BenchmarkGetPath: a narinfo lookup (GetPath of a random path of the
// flake) in an index of benchPaths paths with narinfos of ≈ 750 bytes (rows
// of ≈ 1.2 KB, as bench/benchdata's), at schema version 5 (WITHOUT ROWID
// flake_paths: the row's tail in an overflow page) and at the current one
// (a rowid table: the primary-key index, then the row). Reports the
// database file's bytes per path too.
func BenchmarkGetPath(b *testing.B) {
	for _, v := range []struct {
		name string
		migs []migration
	}{{"v5-without-rowid", migrations[:v5]}, {"current", migrations}} {
		b.Run(v.name, func(b *testing.B) {
			ctx := context.Background()
			file := filepath.Join(b.TempDir(), "index.db")
			x, err := openWith(ctx, file, v.migs)
			if err != nil {
				b.Fatal(err)
			}
			defer x.Close()
			flake := nixname.Flake{Org: "omnicorp", Name: "app"}
			hashes := make([]string, benchPaths)
			err = x.write(ctx, "fill", func(tx *sql.Tx) error {
				for i := range hashes {
					hashes[i] = indextest.Hash(i)
					refs := []string{indextest.Hash(i/2) + "-bench-pkg", indextest.Hash(i/3) + "-bench-pkg"}
					text := fmt.Sprintf("StorePath: /nix/store/%s-bench-pkg\nURL: nar/%s\nCompression: zstd\nReferences: %s\n%s",
						hashes[i], indextest.NarFile(i), strings.Join(refs, " "), strings.Repeat("x", 500))
					p := index.Path{Hash: hashes[i], StorePath: "/nix/store/" + hashes[i] + "-bench-pkg", NarFile: indextest.NarFile(i),
						NarHash: "sha256:0mqa4zvpppwqmqmqynk28fawh5d3xjq8qg0l4kj69av1cwf8mcp", References: refs, NarInfo: []byte(text), SignedBy: "bench-1"}
					if err := insertPath(ctx, tx, flake, p, time.Unix(0, 1)); err != nil {
						return err
					}
				}
				return nil
			})
			if err != nil {
				b.Fatal(err)
			}
			if _, err := x.w.ExecContext(ctx, `PRAGMA wal_checkpoint(TRUNCATE)`); err != nil {
				b.Fatal(err)
			}
			fi, err := os.Stat(file)
			if err != nil {
				b.Fatal(err)
			}
			rng := rand.New(rand.NewPCG(1, 2))
			for b.Loop() {
				if _, err := x.GetPath(ctx, flake, hashes[rng.IntN(len(hashes))]); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(fi.Size())/benchPaths, "file-bytes/path")
		})
	}
}
