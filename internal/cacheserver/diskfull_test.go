package cacheserver

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/flakegate/flakegate/internal/blob"
	"github.com/flakegate/flakegate/internal/nixname"
)

// fullStore is a blob store whose writes fail as a full disk's do once
// full is set.
type fullStore struct {
	blob.Store
	full atomic.Bool
}

func (s *fullStore) Create(ctx context.Context) (blob.Writer, error) {
	w, err := s.Store.Create(ctx)
	if err != nil {
		return nil, err
	}
	return &fullWriter{Writer: w, s: s}, nil
}

type fullWriter struct {
	blob.Writer
	s *fullStore
}

func (w *fullWriter) Write(p []byte) (int, error) {
	if w.s.full.Load() {
		return 0, fmt.Errorf("write /data/blobs/.tmp/upload-1: %w", syscall.ENOSPC)
	}
	return w.Writer.Write(p)
}

// A full disk is said as such (507), not as an internal error, and the
// upload leaves nothing behind (review r5, 2026-12-05).
func TestFullDiskAnswers507(t *testing.T) {
	var fs *fullStore
	ts := newTestServer(t, "", nil, func(c *Config) {
		fs = &fullStore{Store: c.Blob}
		c.Blob = fs
	})
	fs.full.Store(true)
	p := makePath(t, "full", nixname.CompressionZstd)
	st, body, _ := do(t, "PUT", ts.URL+"/omnicorp/a/nar/"+p.FileName, p.File)
	if st != http.StatusInsufficientStorage || !strings.Contains(body, "storage is full") {
		t.Errorf("NAR upload on a full disk: %d %q, want 507 saying so", st, body)
	}
	a := fileExchange(t, "PUT", ts.URL+"/omnicorp/a/log/"+storeHash("full")+"-x.drv", []byte("log\n"), nil)
	if a.Status != http.StatusInsufficientStorage {
		t.Errorf("log upload on a full disk: %d %q", a.Status, a.Body)
	}
	if n := ts.countBlobs(t); n != 0 {
		t.Errorf("%d blobs stored", n)
	}
	fs.full.Store(false)
	ts.push(t, "omnicorp/a", p)
}
