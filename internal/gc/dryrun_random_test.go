package gc

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/flakegate/flakegate/internal/index"
	"github.com/flakegate/flakegate/internal/nixname"
)

// On random stores (two flakes sharing some paths and NAR files, random
// references, ages, files, abandoned NAR uploads, per-flake and store
// max_size), a dry run predicts exactly the paths and the files by kind
// that the collection right after it removes, flake by flake.
func TestDryRunPredictsRandomCollections(t *testing.T) {
	for seed := range 20 {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			forEach(t, func(t *testing.T, w *world) {
				rng := rand.New(rand.NewPCG(uint64(seed), 7))
				ages := []time.Duration{10 * time.Minute, 2 * day, 29 * day, 31 * day, 60 * day}
				age := func() time.Duration { return ages[rng.IntN(len(ages))] }
				flakes := []nixname.Flake{flakeA, flakeB}
				held := map[nixname.Flake][]int{}
				for i := range 14 {
					for _, f := range flakes {
						if rng.IntN(3) == 0 && (f == flakeB || i%2 == 0) {
							continue
						}
						var refs []int
						for _, j := range held[f] {
							if rng.IntN(3) == 0 {
								refs = append(refs, j)
							}
						}
						w.push(f, i, age(), refs...)
						held[f] = append(held[f], i)
						if rng.IntN(4) != 0 {
							w.files(f, i, age())
						}
					}
				}
				for _, f := range flakes {
					// Abandoned or in-progress uploads: a NAR owned without a path,
					// with a debug info link; a listing of a path never pushed.
					i := 50 + rng.IntN(3)
					if err := w.idx.PutNar(ctx(t), f, index.Nar{File: narFile(i), FileSize: narSize, CreatedAt: now.Add(-age())}); err != nil {
						t.Fatal(err)
					}
					for _, u := range []index.File{
						{Kind: nixname.KindDebugInfo, Key: fmt.Sprintf("%040x", i+1), Needs: narFile(i)},
						{Kind: nixname.KindListing, Key: hash(i + 10), Needs: hash(i + 10)},
					} {
						u.Data, u.CreatedAt = []byte("{}"), now.Add(-age())
						if err := w.idx.PutFile(ctx(t), f, u); err != nil {
							t.Fatal(err)
						}
					}
				}
				r := keepFor(30 * day)
				r.Flakes = map[nixname.Flake]Policy{flakeB: {KeepFor: 30 * day, MaxSize: int64(rng.IntN(6)) * narSize}}
				r.MaxSize = int64(rng.IntN(12)) * narSize
				before := map[nixname.Flake]map[nixname.Kind]int64{}
				for _, f := range flakes {
					before[f] = w.fileRows(f)
				}
				dry := w.collect(Options{Retention: r, DryRun: true})
				real := w.collect(Options{Retention: r})
				for _, f := range flakes {
					d, c := flakeReport(dry, f), flakeReport(real, f)
					removed := minus(before[f], w.fileRows(f))
					if d.Paths != c.Paths || !maps.Equal(d.Files, removed) || !maps.Equal(c.Files, removed) {
						t.Errorf("%v: dry run %d paths, files %v; collection %d paths, files %v; removed files %v", f, d.Paths, d.Files, c.Paths, c.Files, removed)
					}
				}
			})
		})
	}
}
