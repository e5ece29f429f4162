package cacheserver

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/flakegate/flakegate/internal/gc"
	"github.com/flakegate/flakegate/internal/index"
	"github.com/flakegate/flakegate/internal/index/sqlite"
	"github.com/flakegate/flakegate/internal/nixname"
)

// pausingOwnIndex stops every OwnClaimedNar until release is closed, after
// telling reached (the upload's blob is committed by then): the time it
// may wait for SQLite's write lock or a PostgreSQL round trip.
type pausingOwnIndex struct {
	*sqlite.Index
	reached chan struct{}
	release chan struct{}
}

func (x pausingOwnIndex) OwnClaimedNar(ctx context.Context, f nixname.Flake, n index.Nar, claim time.Time) error {
	x.reached <- struct{}{}
	<-x.release
	return x.Index.OwnClaimedNar(ctx, f, n, claim)
}

// A collection that starts between an upload's claim and its record (a
// grace of 0, or a collector's clock ahead of the uploader's by more than
// the grace) dooms the claimed file, deletes the blob just committed and
// forgets the record. The upload then recorded the file anew and answered
// 201, its narinfo was accepted and served with its NAR gone (review r5,
// 2026-12-05). Now the upload is refused (503: Nix pushes the NAR again)
// and nothing names the deleted blob.
func TestCollectionBetweenClaimAndRecordIsNotAcknowledged(t *testing.T) {
	reached, release := make(chan struct{}, 1), make(chan struct{})
	ts := newTestServer(t, "", nil, func(c *Config) {
		c.Index = pausingOwnIndex{Index: c.Index.(*sqlite.Index), reached: reached, release: release}
	})
	p := makePath(t, "raced", nixname.CompressionZstd)
	type answer struct {
		st   int
		body string
	}
	put := make(chan answer, 1)
	go func() {
		st, body, _, err := send("PUT", ts.URL+"/acme/app/nar/"+p.FileName, p.File)
		if err != nil {
			body = err.Error()
		}
		put <- answer{st, body}
	}()
	<-reached // claimed and committed, not yet recorded
	time.Sleep(10 * time.Millisecond)
	col, err := gc.New(gc.Config{Index: ts.idx, Blob: ts.blob, Logger: discardLogger(), InvalidateDelay: 0})
	if err != nil {
		t.Fatal(err)
	}
	ret := gc.DefaultRetention()
	ret.Grace = 0
	rep, err := col.Collect(context.Background(), gc.Options{Retention: ret})
	if err != nil {
		t.Fatal(err)
	}
	close(release)
	a := <-put
	if rep.NarsDeleted != 1 {
		t.Fatalf("the collection deleted %d NAR files, want the claimed one (the race did not happen)", rep.NarsDeleted)
	}
	if a.st != http.StatusServiceUnavailable {
		t.Errorf("the upload whose blob was collected answered %d %q, want 503", a.st, a.body)
	}
	if st, _, _ := do(t, "HEAD", ts.URL+"/acme/app/nar/"+p.FileName, nil); st != http.StatusNotFound {
		t.Errorf("HEAD of the collected NAR: %d, want 404 (Nix uploads it again)", st)
	}
	if st, body, _ := do(t, "PUT", ts.URL+"/acme/app/"+p.Hash+".narinfo", []byte(p.NarInfo())); st/100 == 2 {
		t.Errorf("the narinfo of the collected NAR was accepted: %d %q", st, body)
	}
	// Pushed again, as Nix does after the 503, it is whole.
	ts.push(t, "acme/app", p)
	if st, _, _ := do(t, "GET", ts.URL+"/acme/app/nar/"+p.FileName, nil); st != http.StatusOK {
		t.Errorf("GET of the NAR pushed again: %d", st)
	}
}
