package cacheserver

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/flakegate/flakegate/internal/index"
	"github.com/flakegate/flakegate/internal/index/sqlite"
	"github.com/flakegate/flakegate/internal/nixname"
)

// failingPutLog is the SQLite index whose PutLog fails while fail is set.
type failingPutLog struct {
	*sqlite.Index
	fail atomic.Bool
}

func (x *failingPutLog) PutLog(ctx context.Context, flake nixname.Flake, l index.Log) error {
	if x.fail.Load() {
		return errors.New("injected: the index is unreachable")
	}
	return x.Index.PutLog(ctx, flake, l)
}

// A log upload whose record fails after its blob was committed must leave
// the log as it was: the blob key was the flake's and the derivation's
// whatever the encoding, so a zstd upload whose PutLog failed replaced a
// plain log's bytes under the plain log's record, which then served zstd
// bytes as text (adversarial review, 2026-12-05: nothing half-written). The
// key now names the encoding, and a new log replaces the old one only
// through its record.
func TestFailedLogRecordLeavesTheOldLog(t *testing.T) {
	var idx *failingPutLog
	ts := newTestServer(t, "", nil, func(c *Config) {
		idx = &failingPutLog{Index: c.Index.(*sqlite.Index)}
		c.Index = idx
	})
	drv := storeHash("half-written") + "-x.drv"
	url := ts.URL + "/omnicorp/a/log/" + drv
	if st, body, _ := do(t, "PUT", url, []byte("first build\n")); st/100 != 2 {
		t.Fatalf("first log: %d %s", st, body)
	}
	idx.fail.Store(true)
	if a := fileExchange(t, "PUT", url, encode(t, "zstd", []byte("second build\n")), hdr("Content-Encoding", "zstd")); a.Status/100 == 2 {
		t.Fatalf("a log upload whose record failed answered %d", a.Status)
	}
	idx.fail.Store(false)
	for _, ae := range []string{"identity", "zstd"} {
		a := fileExchange(t, "GET", url, nil, hdr("Accept-Encoding", ae))
		if a.Status != http.StatusOK || a.Body != "first build\n" || strings.Contains(a.Header, "Content-Encoding") {
			t.Errorf("Accept-Encoding %s after a failed upload: %d %q, want the first log, plain\n%s", ae, a.Status, a.Body, a.Header)
		}
	}
	// A later upload in another encoding replaces it.
	if a := fileExchange(t, "PUT", url, encode(t, "zstd", []byte("third build\n")), hdr("Content-Encoding", "zstd")); a.Status/100 != 2 {
		t.Fatalf("third log: %d %s", a.Status, a.Body)
	}
	if a := fileExchange(t, "GET", url, nil, hdr("Accept-Encoding", "identity")); a.Status != 200 || a.Body != "third build\n" {
		t.Errorf("after the third upload: %d %q", a.Status, a.Body)
	}
}

// The encoding is a directory of the key, which no log name can be: as a
// suffix, the zstd log of H-x.drv and a plain log named H-x.drv.zstd shared
// a blob, so the second upload overwrote the first's bytes (review of the
// fixes, 2026-12-05).
func TestLogKeysOfEncodingsNeverCollide(t *testing.T) {
	ts := newTestServer(t, "", nil, nil)
	drv := storeHash("collide") + "-x.drv"
	base := ts.URL + "/omnicorp/a/log/"
	if a := fileExchange(t, "PUT", base+drv, encode(t, "zstd", []byte("the zstd log\n")), hdr("Content-Encoding", "zstd")); a.Status/100 != 2 {
		t.Fatalf("zstd log: %d %s", a.Status, a.Body)
	}
	if a := fileExchange(t, "PUT", base+drv+".zstd", []byte("a plain log named like the other's key\n"), nil); a.Status/100 != 2 {
		t.Fatalf("plain log: %d %s", a.Status, a.Body)
	}
	if a := fileExchange(t, "GET", base+drv, nil, hdr("Accept-Encoding", "identity")); a.Status != 200 || a.Body != "the zstd log\n" {
		t.Errorf("the zstd log after a plain log named %s.zstd: %d %q", drv, a.Status, a.Body)
	}
	if a := fileExchange(t, "GET", base+drv+".zstd", nil, hdr("Accept-Encoding", "identity")); a.Status != 200 || a.Body != "a plain log named like the other's key\n" {
		t.Errorf("the plain log: %d %q", a.Status, a.Body)
	}
}
