package gc

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/flakegate/flakegate/internal/blob"
	"github.com/flakegate/flakegate/internal/nixname"
)

// refusingDeletes is a blob store whose Delete fails for some keys.
type refusingDeletes struct {
	blob.Store
	refuse map[string]bool
}

func (s refusingDeletes) Delete(ctx context.Context, key string) error {
	if s.refuse[key] {
		return fmt.Errorf("injected: deleting %s refused", key)
	}
	return s.Store.Delete(ctx, key)
}

// refusingStats is a blob store whose Stat fails for every key.
type refusingStats struct{ blob.Store }

func (s refusingStats) Stat(ctx context.Context, key string) (blob.Info, error) {
	return blob.Info{}, fmt.Errorf("injected: stat %s refused", key)
}

// A log's size is only reported: when the store cannot say it, the logs
// are still deleted and forgotten, the collection succeeds, and a warning
// says the bytes are unknown (a dry run likewise still lists the logs).
func TestLogSizeUnknownIsNotAFailure(t *testing.T) {
	forEach(t, func(t *testing.T, w *world) {
		key := w.putLog(flakeA, hash(1)+"-a.drv", "a build log", time.Now())
		time.Sleep(10 * time.Millisecond)
		r := DefaultRetention()
		r.Grace = 0
		r.Flakes = map[nixname.Flake]Policy{flakeA: {KeepFor: time.Millisecond}}
		c, err := New(Config{Index: w.idx, Blob: refusingStats{w.blob}, Logger: slog.New(slog.NewTextHandler(w.log, nil))})
		if err != nil {
			t.Fatal(err)
		}
		for _, dry := range []bool{true, false} {
			rep, err := c.Collect(ctx(t), Options{Retention: r, DryRun: dry})
			if err != nil {
				t.Fatalf("dry run %v: a log whose size cannot be read failed the collection: %v", dry, err)
			}
			if fr := flakeReport(rep, flakeA); fr.Logs != 1 || fr.LogBytes != 0 {
				t.Errorf("dry run %v: flake's Logs %d LogBytes %d, want 1 log of unknown (0) bytes", dry, fr.Logs, fr.LogBytes)
			}
		}
		if _, err := w.blob.Stat(ctx(t), key); err == nil {
			t.Error("the expired log's blob is still stored")
		}
		if !strings.Contains(w.log.String(), "sizes of expired build logs unknown") {
			t.Errorf("no warning that the log sizes are unknown:\n%s", w.log)
		}
	})
}

// A build log whose blob could not be deleted stays (doomed; the next
// collection deletes it): a real run's report counts the logs deleted and
// their bytes only, so that its line "deleted N build logs (B bytes)" and
// the flake's "N build logs, B bytes" say what left storage.
func TestLogReportCountsDeletedLogs(t *testing.T) {
	forEach(t, func(t *testing.T, w *world) {
		put := func(drv string, size int) string {
			return w.putLog(flakeA, drv, strings.Repeat("l", size), time.Now())
		}
		stuck := put(hash(1)+"-a.drv", 100)
		put(hash(2)+"-b.drv", 1000)
		time.Sleep(10 * time.Millisecond)
		r := DefaultRetention()
		r.Grace = 0
		r.Flakes = map[nixname.Flake]Policy{flakeA: {KeepFor: time.Millisecond}}
		collect := func(bs blob.Store) (Report, error) {
			// Logs are stamped by the index's clock: a collector on it.
			c, err := New(Config{Index: w.idx, Blob: bs, Logger: slog.New(slog.NewTextHandler(w.log, nil))})
			if err != nil {
				t.Fatal(err)
			}
			return c.Collect(ctx(t), Options{Retention: r})
		}
		rep, err := collect(refusingDeletes{w.blob, map[string]bool{stuck: true}})
		if err == nil {
			t.Error("a log blob's deletion failed: the collection reports no error")
		}
		fr := flakeReport(rep, flakeA)
		if n, b := rep.Logs(); rep.LogsDeleted != 1 || fr.Logs != 1 || n != 1 || fr.LogBytes != 1000 || b != 1000 {
			t.Errorf("one of two logs deleted (1000 bytes): LogsDeleted %d, flake's Logs %d LogBytes %d, totals %d logs %d bytes", rep.LogsDeleted, fr.Logs, fr.LogBytes, n, b)
		}
		rep, err = collect(w.blob)
		if err != nil {
			t.Fatal(err)
		}
		if fr := flakeReport(rep, flakeA); rep.LogsDeleted != 1 || fr.Logs != 1 || fr.LogBytes != 100 {
			t.Errorf("the next collection: LogsDeleted %d, flake's Logs %d LogBytes %d; want the stuck log, 100 bytes", rep.LogsDeleted, fr.Logs, fr.LogBytes)
		}
		if _, err := w.blob.Stat(ctx(t), stuck); err == nil {
			t.Error("the stuck log's blob is still stored after the second collection")
		}
	})
}
