package blobserverapp

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/flakegate/flakegate/internal/blob"
	"github.com/flakegate/flakegate/internal/bytesize"
	"github.com/flakegate/flakegate/internal/cacheserver"
	"github.com/flakegate/flakegate/internal/gc"
	"github.com/flakegate/flakegate/internal/index"
	"github.com/flakegate/flakegate/internal/serve"
	"github.com/flakegate/flakegate/internal/storage"
)

// GCConfig is `blobserver gc`'s configuration: the same storage as the
// server's, and the collection's options.
type GCConfig struct {
	DataDir string
	Storage string // "": file://<DataDir>/blobs
	Index   string // "": sqlite://<DataDir>/index.db
	// RetentionFile is the retention file (gc.Retention); "": keep
	// everything by age (only -older-than and unowned files expire).
	RetentionFile string
	DryRun        bool
	// OlderThan, when OverrideKeepFor, replaces every flake's keep_for.
	OlderThan       time.Duration
	OverrideKeepFor bool
	// Check only checks the retention file and prints what it says.
	Check bool
	// InvalidateDelay: see gc.Config (servers poll every GenerationPoll).
	InvalidateDelay time.Duration
	LogLevel        string
}

// DefaultGCConfig is `blobserver gc`'s defaults.
func DefaultGCConfig() GCConfig {
	return GCConfig{InvalidateDelay: 3 * DefaultConfig().GenerationPoll, LogLevel: "info"}
}

// Validate reports every problem at once.
func (c *GCConfig) Validate() error {
	var errs []error
	if !c.Check && (c.Storage == "" || c.Index == "") && c.DataDir == "" {
		errs = append(errs, errors.New("-data-dir is required (or set -storage and -index)"))
	}
	if c.Check && c.RetentionFile == "" {
		errs = append(errs, errors.New("-check needs -retention FILE"))
	}
	if c.OverrideKeepFor && c.OlderThan < 0 {
		errs = append(errs, fmt.Errorf("-older-than %v: negative", c.OlderThan))
	}
	if c.InvalidateDelay < 0 {
		errs = append(errs, fmt.Errorf("-invalidate-delay %v: negative", c.InvalidateDelay))
	}
	if _, err := serve.ParseLogLevel(c.LogLevel); err != nil {
		errs = append(errs, fmt.Errorf("-log-level: %v", err))
	}
	if c.RetentionFile != "" {
		if _, err := gc.LoadRetention(c.RetentionFile); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// loadRetention reads the retention file, or keeps everything without one.
func loadRetention(file string) (gc.Retention, error) {
	if file == "" {
		return gc.DefaultRetention(), nil
	}
	return gc.LoadRetention(file)
}

// RunGC is `blobserver gc`: one collection (or a dry run, or a check of
// the retention file), its report written to out.
func RunGC(ctx context.Context, cfg GCConfig, out io.Writer, log *slog.Logger) error {
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("invalid configuration:\n%w", err)
	}
	ret, err := loadRetention(cfg.RetentionFile)
	if err != nil {
		return err
	}
	if cfg.Check {
		printRetention(out, cfg.RetentionFile, ret)
		return nil
	}
	sc := Config{DataDir: cfg.DataDir, Storage: cfg.Storage, Index: cfg.Index}
	if cfg.DryRun {
		if err := localStoreExists(sc); err != nil {
			return err
		}
	}
	blobs, err := storage.OpenBlobShared(ctx, sc.storageURL())
	if err != nil {
		return fmt.Errorf("open blob store: %w", err)
	}
	defer blobs.Close()
	idx, err := storage.OpenIndex(ctx, sc.indexURL())
	if err != nil {
		return fmt.Errorf("open index: %w", err)
	}
	defer idx.Close()
	col, err := gc.New(gc.Config{Index: idx, Blob: blobs, Logger: log, InvalidateDelay: cfg.InvalidateDelay})
	if err != nil {
		return err
	}
	rep, err := col.Collect(ctx, gc.Options{Retention: ret, DryRun: cfg.DryRun, Verbose: cfg.DryRun,
		OverrideKeepFor: cfg.OverrideKeepFor, OlderThan: cfg.OlderThan})
	printReport(out, rep)
	return err
}

// localStoreExists checks that the SQLite index file and the blob
// directory of a local store exist. Opening a store creates what is
// missing (an empty index, a blob directory), which a dry run must not
// do: pointed at the wrong -data-dir it would create a store there and
// report that nothing would go.
func localStoreExists(sc Config) error {
	var errs []error
	for _, s := range []struct{ what, scheme, url string }{
		{"index", "sqlite", sc.indexURL()},
		{"blob store", "file", sc.storageURL()},
	} {
		scheme, path, _ := strings.Cut(s.url, "://")
		if !strings.EqualFold(scheme, s.scheme) || path == "" {
			continue
		}
		if _, err := os.Stat(path); err != nil {
			errs = append(errs, fmt.Errorf("dry run: no %s at %s (a dry run creates nothing; check -data-dir, -index and -storage): %w", s.what, path, err))
		}
	}
	return errors.Join(errs...)
}

func printRetention(out io.Writer, file string, r gc.Retention) {
	pol := func(p gc.Policy) string {
		keep := "forever"
		if p.KeepFor > 0 {
			keep = p.KeepFor.String()
		}
		size := "no limit"
		if p.MaxSize > 0 {
			size = bytesize.Format(p.MaxSize)
		}
		return "keep_for " + keep + ", max_size " + size
	}
	fmt.Fprintf(out, "%s: ok\ndefault: %s\n", file, pol(r.Default))
	store := "no limit"
	if r.MaxSize > 0 {
		store = bytesize.Format(r.MaxSize)
	}
	fmt.Fprintf(out, "store max_size: %s, grace %v\n", store, r.Grace)
	for f, p := range r.Flakes {
		fmt.Fprintf(out, "%s: %s\n", f, pol(p))
	}
}

// printReport writes what a collection did (or a dry run would do): a
// line per flake where anything goes — paths (with -dry-run, each one
// below it), files by kind, expired build logs — and a total. A dry run's
// lines read the same as a real run's, with "would remove" for "removed".
func printReport(out io.Writer, rep gc.Report) {
	verb := "removed"
	if rep.DryRun {
		verb = "would remove"
	}
	for _, f := range rep.Flakes {
		if f.Paths == 0 && f.Skipped == 0 && f.FileCount() == 0 && f.Logs == 0 {
			continue
		}
		fmt.Fprintf(out, "%s: %s %d paths, %d bytes (%s); keeps %d", f.Flake, verb, f.Paths, f.Bytes, reasons(f.Reasons), f.Kept)
		if f.Skipped > 0 {
			fmt.Fprintf(out, " (%d used during the collection)", f.Skipped)
		}
		fmt.Fprintf(out, "; %d files", f.FileCount())
		if f.FileCount() > 0 {
			var kinds []string
			for _, k := range f.FileKinds() {
				kinds = append(kinds, fmt.Sprintf("%s %d", k, f.Files[k]))
			}
			fmt.Fprintf(out, " (%s)", strings.Join(kinds, ", "))
		}
		fmt.Fprintf(out, "; %d build logs, %d bytes\n", f.Logs, f.LogBytes)
		for _, r := range f.Removed {
			fmt.Fprintf(out, "  %s %d bytes %s (last used %s)\n", r.Hash, r.Size, r.Reason, r.LastUsed.UTC().Format(time.RFC3339))
		}
	}
	logs, logBytes := rep.Logs()
	if rep.DryRun {
		fmt.Fprintf(out, "dry run: %d paths, %d files, %d build logs (%d bytes) would go; nothing changed\n", rep.Paths(), rep.Files(), logs, logBytes)
		return
	}
	fmt.Fprintf(out, "removed %d paths and %d files; deleted %d NAR files (%d bytes) and %d build logs (%d bytes) from storage in %v\n",
		rep.Paths(), rep.Files(), rep.NarsDeleted, rep.BytesFreed, rep.LogsDeleted, logBytes, rep.Duration.Round(time.Millisecond))
}

func reasons(m map[string]int) string {
	s := ""
	for _, k := range []string{gc.ReasonExpired, gc.ReasonFlakeMaxSize, gc.ReasonGlobalMaxSize} {
		if m[k] > 0 {
			if s != "" {
				s += ", "
			}
			s += fmt.Sprintf("%s %d", k, m[k])
		}
	}
	if s == "" {
		return "nothing"
	}
	return s
}

// background runs the server's periodic work until ctx is done: the cache
// server's maintenance (reads, cache generation) and, with GCInterval, a
// collection every interval with the retention file read anew each time
// (edits apply at the next collection; a file that does not load skips it).
// wait returns once everything stopped.
func background(ctx context.Context, cfg Config, srv *cacheserver.Server, idx index.Index, blobs blob.Store, metrics *gc.Metrics, log *slog.Logger) (wait func()) {
	var wg sync.WaitGroup
	wg.Go(func() { srv.Maintain(ctx) })
	if c, ok := idx.(index.Collectable); ok {
		wg.Go(func() {
			if u, err := c.Usage(ctx); err == nil {
				metrics.SetUsage(u)
			} else if ctx.Err() == nil {
				log.Warn("storage used per flake", "err", err)
			}
		})
	}
	if cfg.GCInterval > 0 {
		col, err := gc.New(gc.Config{Index: idx, Blob: blobs, Logger: log, Metrics: metrics, InvalidateDelay: 3 * cfg.GenerationPoll})
		if err != nil {
			log.Error("garbage collection disabled", "err", err)
			return wg.Wait
		}
		wg.Go(func() {
			t := time.NewTicker(cfg.GCInterval)
			defer t.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-t.C:
				}
				ret, err := loadRetention(cfg.RetentionFile)
				if err != nil {
					log.Error("garbage collection skipped: the retention file does not load (fix it; blobserver gc -check -retention FILE)", "err", err)
					continue
				}
				_, err = col.Collect(ctx, gc.Options{Retention: ret})
				if errors.Is(err, index.ErrBusy) {
					log.Info("garbage collection skipped: another server is collecting")
				}
			}
		})
	}
	return wg.Wait
}

// ParseDuration reads a duration as the retention file does: a Go duration
// (12h) or whole days (30d).
func ParseDuration(s string) (time.Duration, error) { return gc.ParseDuration(s) }

// NewLogger is `blobserver gc`'s logger: JSON lines to w at LogLevel.
func (c *GCConfig) NewLogger(w io.Writer) *slog.Logger { return serve.NewLogger(w, c.LogLevel) }
