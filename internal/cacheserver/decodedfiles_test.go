package cacheserver

import (
	"bytes"
	"database/sql"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/flakegate/flakegate/internal/index"
	"github.com/flakegate/flakegate/internal/nixcache"
	"github.com/flakegate/flakegate/internal/nixname"
)

// A multi-range request of a listing decoded on the fly restarted the
// decoder at every backwards Seek, so one request of N ranges alternating
// between the end and the start decoded the whole listing N times (review
// of the fixes, 2026-12-05): several ranges of a decoded file are answered
// with the whole file (200).
func TestMultiRangeOfADecodedListingIsOneDecode(t *testing.T) {
	ts := newTestServer(t, "", nil, nil)
	p := makePath(t, "multirange", "none")
	ts.push(t, "omnicorp/a", p)
	plain := bigListing(8 << 20)
	stored := encode(t, "zstd", plain)
	if st, _, _, _, _ := allocated(t, "PUT", ts.URL+"/omnicorp/a/"+p.Hash+".ls", stored, "Content-Encoding", "zstd"); st != 201 {
		t.Fatalf("upload: %d", st)
	}
	url := ts.URL + "/omnicorp/a/" + p.Hash + ".ls"
	start := time.Now()
	st, _, _, n, _ := allocated(t, "GET", url, nil, "Accept-Encoding", "gzip")
	whole := time.Since(start)
	t.Logf("whole GET: %d, %d bytes in %v", st, n, whole)

	const pairs = 1000 // a 60 KiB header holds ~7,500 such pairs
	rng := "bytes=" + strings.TrimSuffix(strings.Repeat("-1,0-0,", pairs), ",")
	start = time.Now()
	st, _, _, n, mib := allocated(t, "GET", url, nil, "Accept-Encoding", "gzip", "Range", rng)
	multi := time.Since(start)
	t.Logf("multi-range GET (%d ranges, %d-byte header): %d, %d bytes sent in %v (%d MiB allocated)", 2*pairs, len(rng), st, n, multi, mib)
	if st != http.StatusOK || n != int64(len(plain)) {
		t.Errorf("multi-range GET of a decoded listing: %d, %d bytes; want 200 and the whole %d", st, n, len(plain))
	}
	if multi > 10*whole+500*time.Millisecond {
		t.Errorf("%d one-byte ranges of a listing stored as %d bytes took %v, the whole decoded listing %v: the listing is decoded once per range", 2*pairs, len(stored), multi, whole)
	}
}

// During a rolling upgrade a replica still running the previous version
// replaces a listing (ON CONFLICT DO UPDATE SET needs, encoding, data,
// created_at: it knows no digest or plain_size). The row kept the replaced
// listing's plain_size, served as Content-Length: a longer new listing came
// out cut at the old size (review of the fixes, 2026-12-05). The digest and
// size now count only for the upload they were computed for (digest_of).
func TestOldReplicaReplaceDoesNotServeAStaleSize(t *testing.T) {
	ts := newTestServer(t, "", nil, nil)
	p := makePath(t, "stale-size", "none")
	ts.push(t, "omnicorp/a", p)
	small := bigListing(1 << 10)
	large := bigListing(4 << 10)
	if st, _, _, _, _ := allocated(t, "PUT", ts.URL+"/omnicorp/a/"+p.Hash+".ls", encode(t, "zstd", small), "Content-Encoding", "zstd"); st != 201 {
		t.Fatalf("upload: %d", st)
	}
	// The previous version's PutFile, run by an older replica.
	db, err := sql.Open("sqlite", filepath.Join(ts.Dir, "index.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(`INSERT INTO flake_files (kind, key, flake, needs, encoding, data, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (kind, key, flake) DO UPDATE SET needs = excluded.needs, encoding = excluded.encoding, data = excluded.data, created_at = excluded.created_at`,
		"listing", p.Hash, "omnicorp/a", p.Hash, "zstd", encode(t, "zstd", large), time.Now().UnixNano()); err != nil {
		t.Fatal(err)
	}
	a := fileExchange(t, "GET", ts.URL+"/omnicorp/a/"+p.Hash+".ls", nil, hdr("Accept-Encoding", "identity"))
	t.Logf("GET after the old replica's replace: %d, %d bytes (listing is %d bytes)", a.Status, len(a.Body), len(large))
	if a.Status != 200 || a.Body != string(large) {
		t.Errorf("listing served after an older replica replaced it: status %d, %d of %d bytes (valid JSON: %v)", a.Status, len(a.Body), len(large), json.Valid([]byte(a.Body)))
	}
}

// failingWriter is a ResponseWriter whose client is gone: every Write fails.
type failingWriter struct{ h http.Header }

func (w *failingWriter) Header() http.Header         { return w.h }
func (w *failingWriter) WriteHeader(int)             {}
func (w *failingWriter) Write(p []byte) (int, error) { return 0, errors.New("client gone") }

// http.ServeContent serves a multi-range request from a goroutine that it
// does not wait for (review of the fixes, 2026-12-05); when the client goes away it
// returns while that goroutine is still decoding (here: skipping to the
// last byte of an 8 MiB listing). serveEncoded's deferred dc.Close() then
// hands the pooled zstd decoder back (putZstdReader: Reset(nil), Put)
// while the orphaned goroutine still reads from it; the next request that
// takes it from the pool shares it with that goroutine. Run with -race.
func TestAbandonedMultiRangeLeavesNoDecoderInUse(t *testing.T) {
	ts := newTestServer(t, "", nil, nil)
	plain := bigListing(8 << 20)
	stored := encode(t, "zstd", plain)
	f := index.File{Kind: nixname.KindListing, Key: strings.Repeat("0", 32), Flake: nixname.Flake{Org: "omnicorp", Name: "a"},
		Encoding: "zstd", Data: stored, Size: int64(len(plain)), CreatedAt: time.Now()}
	for i := 0; i < 20; i++ {
		r := httptest.NewRequest("GET", "/omnicorp/a/"+f.Key+".ls", nil)
		r.Header.Set("Accept-Encoding", "identity")
		r.Header.Set("Range", "bytes=0-0,-1,0-0,-1")
		start := time.Now()
		ts.Server.serveEncoded(&failingWriter{h: http.Header{}}, r, f, contentTypeJSON, cacheFile)
		t.Logf("serveEncoded returned after %v", time.Since(start))
		// Another request takes a decoder from the pool meanwhile.
		dec, err := nixcache.NewDecoder("zstd", bytes.NewReader(stored))
		if err != nil {
			t.Fatal(err)
		}
		n, err := io.Copy(io.Discard, dec)
		dec.Close()
		if err != nil || n != int64(len(plain)) {
			t.Errorf("a request decoding its own stream after the abandoned multi-range read: %d of %d bytes, %v", n, len(plain), err)
		}
	}
	time.Sleep(500 * time.Millisecond)
}
