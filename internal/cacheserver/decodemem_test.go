package cacheserver

import (
	"bytes"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/flakegate/flakegate/internal/nixcache"
	"github.com/flakegate/flakegate/internal/nixname"
)

// A zstd frame header declaring a 128 MiB window: the decoder of a stream
// starting with it would allocate the window before its first output byte.
var hugeWindowFrame = []byte{0x28, 0xb5, 0x2f, 0xfd, 0x00, 17 << 3, 1, 0, 0, 'a'}

// With the decoder memory budget in use, a compressed upload and a read
// that decodes a stored file are answered 503 with Retry-After (Nix
// retries), nothing is stored, and the same requests succeed once the
// budget is free again (review r5, 2026-12-05: each such request pinned
// up to 128 MiB, with no bound across requests).
func TestDecoderMemoryInUseAnswers503(t *testing.T) {
	nixcache.SetDecoderMemory(nixcache.MinDecoderMemory)
	wait := nixcache.DecoderWait
	nixcache.DecoderWait = 50 * time.Millisecond
	t.Cleanup(func() {
		nixcache.SetDecoderMemory(nixcache.DefaultDecoderMemory)
		nixcache.DecoderWait = wait
	})
	ts := newTestServer(t, "", nil, nil)
	drv := storeHash("budget") + "-x.drv"
	logURL := ts.URL + "/omnicorp/a/log/" + drv
	if a := fileExchange(t, "PUT", logURL, encode(t, "zstd", []byte("a stored zstd log\n")), hdr("Content-Encoding", "zstd")); a.Status/100 != 2 {
		t.Fatalf("log upload: %d %s", a.Status, a.Body)
	}
	p := makePath(t, "budget", nixname.CompressionZstd)

	// Another request holds the whole budget (a stream declaring a 128
	// MiB window; reserved, nothing allocated yet).
	hold, err := nixcache.NewDecoder("zstd", bytes.NewReader(hugeWindowFrame))
	if err != nil {
		t.Fatal(err)
	}
	busy := func(what string, st int, body string, h http.Header) {
		t.Helper()
		if st != http.StatusServiceUnavailable || h.Get("Retry-After") == "" || !strings.Contains(body, "memory for decompressing") {
			t.Errorf("%s with the decoder memory in use: %d, Retry-After %q, %q; want 503 naming the cause", what, st, h.Get("Retry-After"), body)
		}
	}
	st, body, h := do(t, "PUT", ts.URL+"/omnicorp/a/nar/"+p.FileName, p.File)
	busy("a zstd NAR upload", st, body, h)
	if n := ts.countBlobs(t); n != 0 {
		t.Errorf("%d NAR files stored by refused uploads", n)
	}
	a := fileExchange(t, "PUT", ts.URL+"/omnicorp/a/log/"+storeHash("other")+"-y.drv", encode(t, "zstd", []byte("log\n")), hdr("Content-Encoding", "zstd"))
	busy("a zstd log upload", a.Status, a.Body, http.Header{"Retry-After": {headerValue(a.Header, "Retry-After")}})
	a = fileExchange(t, "GET", logURL, nil, hdr("Accept-Encoding", "identity"))
	busy("a zstd log read decoded", a.Status, a.Body, http.Header{"Retry-After": {headerValue(a.Header, "Retry-After")}})
	// A HEAD decodes nothing, so needs no decoder memory.
	if a := fileExchange(t, "HEAD", logURL, nil, hdr("Accept-Encoding", "identity")); a.Status != http.StatusOK {
		t.Errorf("HEAD of the zstd log with the decoder memory in use: %d", a.Status)
	}
	// Served as stored, it needs no decoder.
	if a := fileExchange(t, "GET", logURL, nil, hdr("Accept-Encoding", "zstd")); a.Status != http.StatusOK {
		t.Errorf("the zstd log served as stored: %d", a.Status)
	}

	hold.Close()
	ts.push(t, "omnicorp/a", p)
	if a := fileExchange(t, "GET", logURL, nil, hdr("Accept-Encoding", "identity")); a.Status != 200 || a.Body != "a stored zstd log\n" {
		t.Errorf("the log decoded after: %d %q", a.Status, a.Body)
	}
}

// headerValue finds a header's value in fileExchange's rendered header.
func headerValue(header, name string) string {
	for _, line := range strings.Split(header, "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.EqualFold(strings.TrimSpace(k), name) {
			return strings.TrimSpace(v)
		}
	}
	return ""
}
