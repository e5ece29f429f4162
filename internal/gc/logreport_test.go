package gc

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/flakegate/flakegate/internal/blob"
	"github.com/flakegate/flakegate/internal/index"
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

// A log replaced by one in another encoding left its first blob behind,
// named by no record; the collection that removes the log removes every
// encoding's blob. Another derivation's logs, and other flakes', stay.
func TestExpiredLogTakesItsOtherEncodingsBlobs(t *testing.T) {
	forEach(t, func(t *testing.T, w *world) {
		drv := hash(1) + "-a.drv"
		blobOf := func(flake nixname.Flake, enc, drv, text string) string {
			key := nixname.LogBlobKey(flake, enc, drv)
			bw, err := w.blob.Create(ctx(t))
			if err != nil {
				t.Fatal(err)
			}
			bw.Write([]byte(text))
			if err := bw.Commit(ctx(t), key); err != nil {
				t.Fatal(err)
			}
			return key
		}
		// The plain log was replaced by a zstd one: its blob stayed.
		orphan := blobOf(flakeA, "", drv, "the first, plain log")
		zstdKey := blobOf(flakeA, "zstd", drv, "the zstd log")
		if err := w.idx.PutLog(ctx(t), flakeA, index.Log{Drv: drv, BlobKey: zstdKey, Encoding: "zstd"}); err != nil {
			t.Fatal(err)
		}
		if err := w.c.ClaimLog(ctx(t), flakeA, drv, time.Now()); err != nil {
			t.Fatal(err)
		}
		keepOther := w.putLog(flakeA, hash(2)+"-b.drv", "not expired", time.Now().Add(time.Hour))
		keepFlakeB := blobOf(flakeB, "xz", drv, "flake B's log of the same drv")
		time.Sleep(10 * time.Millisecond)
		r := DefaultRetention()
		r.Grace = 0
		r.Flakes = map[nixname.Flake]Policy{flakeA: {KeepFor: time.Millisecond}}
		c, err := New(Config{Index: w.idx, Blob: w.blob, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		rep, err := c.Collect(ctx(t), Options{Retention: r})
		if err != nil {
			t.Fatal(err)
		}
		if rep.LogsDeleted != 1 {
			t.Errorf("LogsDeleted %d, want 1", rep.LogsDeleted)
		}
		for _, k := range []string{orphan, zstdKey} {
			if _, err := w.blob.Stat(ctx(t), k); err == nil {
				t.Errorf("%s is still stored after its log expired", k)
			}
		}
		for _, k := range []string{keepOther, keepFlakeB} {
			if _, err := w.blob.Stat(ctx(t), k); err != nil {
				t.Errorf("%s was deleted: %v", k, err)
			}
		}
	})
}
