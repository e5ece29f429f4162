package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/flakegate/flakegate/internal/blobserverapp"
	"github.com/flakegate/flakegate/internal/gc"
	"github.com/flakegate/flakegate/internal/storage"
)

// runGC measures a garbage collection over a data directory written by
// `benchdata index -used-spread D` (path i last used i/n × D ago): a blob
// server serves it (-lookup-cache 0: every GET reads the index) while
// clients read narinfos of paths the collection keeps; narinfo latency is
// measured for -baseline without a collection, then during one
// (keep_for -keep-for, grace 0). It prints the collection's time, the
// Go heap it added at peak, and both latency distributions.
func runGC(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("gc", flag.ContinueOnError)
	dataDir := fs.String("data-dir", "", "data directory written by benchdata index -used-spread")
	keepFor := fs.Duration("keep-for", 0, "keep_for of the collection (e.g. half the -used-spread)")
	keepShare := fs.Float64("read-share", 0.4, "clients read the first share of hashes.txt (paths the collection keeps)")
	clients := fs.Int("clients", 16, "concurrent narinfo readers")
	baseline := fs.Duration("baseline", 20*time.Second, "how long to measure without a collection")
	collector := fs.String("collector", "", "run the collection as this shell command (e.g. /usr/bin/time -v blobserver gc -data-dir DIR -older-than 500h) instead of in this process, to measure its memory apart from the server's")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *dataDir == "" || *keepFor <= 0 {
		return errors.New("gc needs -data-dir and -keep-for")
	}
	b, err := os.ReadFile(filepath.Join(*dataDir, "hashes.txt"))
	if err != nil {
		return err
	}
	hashes := strings.Fields(string(b))
	hashes = hashes[:int(float64(len(hashes))**keepShare)]

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cfg := blobserverapp.DefaultConfig()
	cfg.DataDir, cfg.Listen, cfg.InternalListen, cfg.LookupCacheEntries, cfg.AccessLog = *dataDir, "127.0.0.1:0", "", 0, false
	cfg.BehindEnvoy = true    // the collection's reads, ungated
	cfg.ReadTouchInterval = 0 // reads would move last use; the collection must see the spread as written
	ready := make(chan string, 1)
	cfg.OnListen = func(p, _ string) { ready <- p }
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	done := make(chan error, 1)
	go func() { done <- blobserverapp.Run(ctx, cfg, quiet) }()
	var addr string
	select {
	case addr = <-ready:
	case err := <-done:
		return fmt.Errorf("blob server: %v", err)
	}
	base := "http://" + addr + "/omnicorp/app/"

	// load reads random kept narinfos until stop is closed.
	load := func(stop <-chan struct{}) (lat []time.Duration, bad int64) {
		var mu sync.Mutex
		var wg sync.WaitGroup
		var nbad atomic.Int64
		for range *clients {
			wg.Go(func() {
				var mine []time.Duration
				hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4}}
				for {
					select {
					case <-stop:
						mu.Lock()
						lat = append(lat, mine...)
						mu.Unlock()
						return
					default:
					}
					h := hashes[rand.IntN(len(hashes))]
					t0 := time.Now()
					resp, err := hc.Get(base + h + ".narinfo")
					if err == nil {
						io.Copy(io.Discard, resp.Body)
						resp.Body.Close()
					}
					mine = append(mine, time.Since(t0))
					if err != nil || resp.StatusCode != 200 {
						nbad.Add(1)
					}
				}
			})
		}
		wg.Wait()
		return lat, nbad.Load()
	}
	pct := func(lat []time.Duration, p float64) time.Duration {
		if len(lat) == 0 {
			return 0
		}
		slices.Sort(lat)
		return lat[int(float64(len(lat)-1)*p)]
	}

	stop := make(chan struct{})
	go func() { time.Sleep(*baseline); close(stop) }()
	lat, bad := load(stop)
	fmt.Fprintf(stdout, "without collection: %d narinfo GETs, p50 %v p99 %v, %d not 200\n", len(lat), pct(lat, .5), pct(lat, .99), bad)

	if *collector != "" {
		// The collection in its own process; its output (time -v's
		// report included) goes to ours.
		stop = make(chan struct{})
		cmdErr := make(chan error, 1)
		start := time.Now()
		go func() {
			cmd := exec.CommandContext(ctx, "sh", "-c", *collector)
			cmd.Stdout, cmd.Stderr = stdout, os.Stderr
			cmdErr <- cmd.Run()
			close(stop)
		}()
		lat, bad = load(stop)
		if err := <-cmdErr; err != nil {
			return fmt.Errorf("collector %q: %w", *collector, err)
		}
		fmt.Fprintf(stdout, "collection (own process): %v\n", time.Since(start).Round(time.Millisecond))
		fmt.Fprintf(stdout, "during collection: %d narinfo GETs, p50 %v p99 %v, %d not 200\n", len(lat), pct(lat, .5), pct(lat, .99), bad)
		cancel()
		<-done
		if bad > 0 {
			return fmt.Errorf("%d reads of kept paths failed during the collection", bad)
		}
		return nil
	}

	// The collection, as `blobserver gc` runs it (own index connection).
	idx, err := storage.OpenIndex(ctx, "sqlite://"+filepath.Join(*dataDir, "index.db"))
	if err != nil {
		return err
	}
	defer idx.Close()
	blobs, err := storage.OpenBlob(ctx, "file://"+filepath.Join(*dataDir, "blobs"))
	if err != nil {
		return err
	}
	defer blobs.Close()
	col, err := gc.New(gc.Config{Index: idx, Blob: blobs, Logger: quiet, InvalidateDelay: 3 * time.Second})
	if err != nil {
		return err
	}
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	heapBefore := ms.HeapInuse
	var peak atomic.Uint64
	sampling := make(chan struct{})
	go func() {
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-sampling:
				return
			case <-t.C:
				var m runtime.MemStats
				runtime.ReadMemStats(&m)
				if m.HeapInuse > peak.Load() {
					peak.Store(m.HeapInuse)
				}
			}
		}
	}()
	stop = make(chan struct{})
	type result struct {
		rep gc.Report
		err error
	}
	res := make(chan result, 1)
	ret := gc.DefaultRetention()
	ret.Grace = 0
	ret.Default.KeepFor = *keepFor
	go func() {
		rep, err := col.Collect(ctx, gc.Options{Retention: ret})
		close(stop)
		res <- result{rep, err}
	}()
	lat, bad = load(stop)
	r := <-res
	close(sampling)
	if r.err != nil {
		return fmt.Errorf("collection: %w", r.err)
	}
	st, err := idx.Stats(ctx)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "collection: removed %d paths (%d NAR records) in %v; %d paths left; Go heap +%d MiB at peak (whole process, server included)\n",
		r.rep.Paths(), r.rep.NarsDeleted, r.rep.Duration.Round(time.Millisecond), st.Paths, (peak.Load()-min(peak.Load(), heapBefore))>>20)
	fmt.Fprintf(stdout, "during collection: %d narinfo GETs, p50 %v p99 %v, %d not 200\n", len(lat), pct(lat, .5), pct(lat, .99), bad)
	if bad > 0 {
		return fmt.Errorf("%d reads of kept paths failed during the collection", bad)
	}
	cancel()
	<-done
	return nil
}
