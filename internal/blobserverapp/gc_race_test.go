package blobserverapp

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flakegate/flakegate/internal/blob"
	"github.com/flakegate/flakegate/internal/gc"
	"github.com/flakegate/flakegate/internal/index"
	"github.com/flakegate/flakegate/internal/nixname"
	"github.com/flakegate/flakegate/internal/nixtest"
	"github.com/flakegate/flakegate/internal/storage"
	"github.com/flakegate/flakegate/internal/testutil"
)

// raceDuration is how long TestNixGarbageCollectionRace lets pushes and
// collections run: FLAKEGATE_GC_RACE_DURATION (30s is the acceptance run,
// docs/benchmarks.md). Unset, the test is skipped: it builds closures for
// four real-Nix pushers per backend (about two minutes each on two cores).
func raceDuration(t *testing.T) time.Duration {
	v := os.Getenv("FLAKEGATE_GC_RACE_DURATION")
	if v == "" {
		t.Skip("set FLAKEGATE_GC_RACE_DURATION=30s to race real-Nix pushes against collections (about 2 minutes per backend plus the duration)")
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		t.Fatalf("FLAKEGATE_GC_RACE_DURATION: %v", err)
	}
	return d
}

// Real `nix copy` processes push overlapping closures into two flakes while
// two collectors (two servers' worth, on separate index connections, one
// lock) collect in a loop with keep_for 4 s and no grace (a pushed closure
// is gone a few seconds after its push unless pushed again or pinned). Pushes may fail cleanly (a reference
// collected under them: 400, push again); afterwards every narinfo the
// index holds has its NAR (owned by its flake, the blob in storage) and its
// references, every one is served with its NAR through the server, and
// real Nix pulls every closure whose top path is still there, the pinned
// one included.
func TestNixGarbageCollectionRace(t *testing.T) {
	nixtest.Require(t)
	if testing.Short() {
		t.Skip("real-Nix pushes racing collections: skipped in -short")
	}
	dur := raceDuration(t)
	t.Run("fs+sqlite", func(t *testing.T) { gcRace(t, dur, "", "") })
	t.Run("s3+postgres", func(t *testing.T) {
		pg, s3 := testutil.ScaleOutURLs(t, "gcrace")
		gcRace(t, dur, s3, pg)
	})
}

func gcRace(t *testing.T, dur time.Duration, storageURL, indexURL string) {
	secret, public := nixtest.GenerateKey(t, "flakegate-test-1")
	dataDir := t.TempDir()
	cfg := config(func(c *Config) {
		c.DataDir, c.SigningKeyFiles, c.Storage, c.Index = dataDir, []string{secret}, storageURL, indexURL
		c.GenerationPoll = 100 * time.Millisecond
		c.ReadTouchInterval, c.ReadFlushInterval = time.Second, 500*time.Millisecond // Nix's narinfo checks count as reads
		c.AccessLog = false
	})
	s := start(t, cfg)
	flakes := []string{"omnicorp/a", "omnicorp/b"}
	pushers := nixtest.MakePushers(t, 4, flakes, 3, "race")
	push := func(p nixtest.Pusher) error {
		return p.Store.CopyTo(nixtest.Options{}, s.URL+"/"+p.Flake+"?compression=zstd", p.Shared, p.Own)
	}
	for _, err := range pushers.Push(push) {
		t.Fatal(err)
	}
	pinned := pushers[0]
	if st, body := put(t, s.URL+"/"+pinned.Flake+"/_pins/release", pinned.Shared); st != 200 {
		t.Fatalf("pin: %d %s", st, body)
	}

	ctx, cancel := context.WithTimeout(context.Background(), dur+5*time.Minute)
	defer cancel()
	open := func() (index.Index, blob.Store) {
		x, err := storage.OpenIndex(ctx, cfg.indexURL())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { x.Close() })
		b, err := storage.OpenBlob(ctx, cfg.storageURL())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { b.Close() })
		return x, b
	}
	ret := gc.DefaultRetention()
	ret.Grace = 0
	logs := &testutil.LogBuffer{}
	var (
		wg                                      sync.WaitGroup
		collections, busy, removed, narsDeleted atomic.Int64
		pushesOK, pushesFailed                  atomic.Int64
		collectErr                              error
		errMu                                   sync.Mutex
	)
	stop := time.Now().Add(dur)
	for range 2 {
		x, b := open()
		col, err := gc.New(gc.Config{Index: x, Blob: b, Logger: slog.New(slog.NewJSONHandler(logs, nil)),
			InvalidateDelay: 300 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		wg.Go(func() {
			for time.Now().Before(stop) {
				rep, err := col.Collect(ctx, gc.Options{Retention: ret, OverrideKeepFor: true, OlderThan: 4 * time.Second})
				switch {
				case errors.Is(err, index.ErrBusy):
					busy.Add(1)
					time.Sleep(50 * time.Millisecond)
				case err != nil:
					errMu.Lock()
					collectErr = errors.Join(collectErr, err)
					errMu.Unlock()
					return
				default:
					collections.Add(1)
					removed.Add(int64(rep.Paths()))
					narsDeleted.Add(int64(rep.NarsDeleted))
				}
			}
		})
	}
	for _, p := range pushers {
		wg.Go(func() {
			for time.Now().Before(stop) {
				if err := push(p); err != nil {
					pushesFailed.Add(1)
					// The clean failures: a reference, or the NAR just
					// uploaded, collected under the push (no grace here).
					if !strings.Contains(err.Error(), "push it again") && !strings.Contains(err.Error(), "push references first") &&
						!strings.Contains(err.Error(), "upload it before its narinfo") && !strings.Contains(err.Error(), "garbage collection") {
						t.Errorf("pusher %d failed other than cleanly: %v", p.K, err)
					}
				} else {
					pushesOK.Add(1)
				}
				// A pause of 0–8 s (keep_for is 4 s): Nix's narinfo checks
				// count as reads, and a pusher looping without one kept
				// every path used on a fast machine (nothing expired:
				// no race).
				time.Sleep(time.Duration(rand.Int64N(int64(8 * time.Second))))
			}
		})
	}
	wg.Wait()
	if collectErr != nil {
		t.Fatalf("collection failed: %v", collectErr)
	}
	t.Logf("%v: %d collections (%d found the lock taken) removed %d paths and %d NAR files; %d pushes ok, %d failed cleanly",
		dur, collections.Load(), busy.Load(), removed.Load(), narsDeleted.Load(), pushesOK.Load(), pushesFailed.Load())
	if removed.Load() == 0 || pushesOK.Load() == 0 {
		t.Fatalf("no race happened: %d paths removed, %d pushes ok", removed.Load(), pushesOK.Load())
	}
	// One more push of everything, collections stopped: Nix skips what
	// the cache says it has, so a narinfo left without its NAR or a
	// reference would stay broken and fail the pulls below.
	for _, err := range pushers.Push(push) {
		t.Errorf("push after the race: %v", err)
	}

	// Every narinfo the index holds: its NAR owned and stored, its
	// references held by the flake, and served through the server.
	x, b := open()
	c := x.(index.Collectable)
	var paths, refs int
	for _, fs := range flakes {
		f, _ := nixname.ParseFlake(fs)
		held := map[string]index.PathUse{}
		if err := c.ScanPaths(ctx, f, func(u index.PathUse) error { held[u.Hash] = u; return nil }); err != nil {
			t.Fatal(err)
		}
		for h, u := range held {
			paths++
			if _, err := x.GetNar(ctx, f, u.NarFile); err != nil {
				t.Errorf("%s serves %s whose NAR %s it does not own: %v", f, h, u.NarFile, err)
			}
			if _, err := b.Stat(ctx, "nar/"+u.NarFile); err != nil {
				t.Errorf("%s serves %s whose NAR %s is gone from storage: %v", f, h, u.NarFile, err)
			}
			for _, r := range u.Refs {
				refs++
				if _, ok := held[r]; !ok {
					t.Errorf("%s serves %s whose reference %s is gone", f, h, r)
				}
			}
			if st, body := get(t, s.URL+"/"+fs+"/"+h+".narinfo"); st != 200 {
				t.Errorf("GET narinfo %s of %s: %d", h, f, st)
			} else if st, _ := get(t, s.URL+"/"+fs+"/nar/"+u.NarFile); st != 200 {
				t.Errorf("GET NAR of %s in %s: %d (narinfo %q)", h, f, st, body)
			}
		}
	}
	t.Logf("after the race: %d narinfos held, each with its NAR; %d references checked", paths, refs)
	if paths == 0 {
		t.Fatal("nothing left to check")
	}
	// Real Nix pulls every closure whose top is still there.
	pulled := 0
	for _, p := range pushers {
		for _, top := range []string{p.Shared, p.Own} {
			if st, _ := get(t, s.URL+"/"+p.Flake+"/"+nixtest.HashPart(top)+".narinfo"); st != 200 {
				if p.K == pinned.K && top == pinned.Shared {
					t.Errorf("the pinned closure %s is gone: %d", top, st)
				}
				continue
			}
			dst := nixtest.NewStore(t)
			if err := dst.CopyFrom(nixtest.Options{TrustedKeys: []string{public}}, s.URL+"/"+p.Flake, top); err != nil {
				t.Errorf("pull %s from %s: %v", top, p.Flake, err)
				continue
			}
			pulled++
		}
	}
	t.Logf("real Nix pulled %d closures (the pinned one included)", pulled)
	if pulled == 0 {
		t.Error("real Nix pulled nothing")
	}
}
