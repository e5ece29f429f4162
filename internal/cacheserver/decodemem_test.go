package cacheserver

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/ulikunitz/xz"

	"github.com/flakegate/flakegate/internal/nixcache"
	"github.com/flakegate/flakegate/internal/nixname"
	"github.com/flakegate/flakegate/internal/route"
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

// One org's uploads hold at most a quarter of the decoder memory, and the
// decoded reads of one org another: with one tenant's stalled uploads (from
// however many refs) holding its share, another tenant's push still gets
// memory; readers cannot take a pushing org's share, nor other orgs'
// readers theirs (reviews of the fixes, 2026-12-05).
func TestOneTenantCannotStarveOthersOfDecoderMemory(t *testing.T) {
	wait := nixcache.DecoderWait
	nixcache.DecoderWait = 50 * time.Millisecond
	nixcache.SetDecoderMemory(nixcache.DefaultDecoderMemory) // a quarter: 256 MiB
	t.Cleanup(func() {
		nixcache.SetDecoderMemory(nixcache.DefaultDecoderMemory)
		nixcache.DecoderWait = wait
	})
	ts := newTestServer(t, "", nil, nil)
	const evil, good = "github:evil/x@refs/heads/main", "github:omnicorp/app@refs/heads/main"
	// evil's stalled uploads hold 64 MiB windows, its whole share.
	evilUpload := httptest.NewRequest("PUT", "/evil/x/nar/x", nil)
	var held []io.ReadCloser
	for {
		d, err := nixcache.NewDecoder("xz", bytes.NewReader(xzHeader64MiB(t)), nixcache.DecoderOwner(decoderOwner(evilUpload, nixname.Flake{Org: "evil", Name: "x"})))
		if err != nil {
			break
		}
		held = append(held, d)
	}
	defer func() {
		for _, d := range held {
			d.Close()
		}
	}()
	if len(held) != 3 {
		t.Fatalf("evil holds %d decoders of 64 MiB, want 3 (its quarter of 1 GiB)", len(held))
	}
	put := func(subject, flake string, p testPath) (int, string) {
		a := fileExchange(t, "PUT", ts.URL+"/"+flake+"/nar/"+p.FileName, p.File, hdr(route.SubjectHeader, subject))
		return a.Status, a.Body
	}
	if st, body := put("github:evil/x@refs/heads/other", "evil/y", compressedXZ64(t, "evil-more")); st != http.StatusServiceUnavailable {
		t.Errorf("evil's upload from another ref beyond its share: %d %q, want 503", st, body)
	}
	if st, body := put(good, "omnicorp/app", makePath(t, "good", nixname.CompressionZstd)); st/100 != 2 {
		t.Errorf("another org's upload beside evil's: %d %q", st, body)
	}
	// Readers, however many, hold the readers' share only.
	read := httptest.NewRequest("GET", "/omnicorp/app/log/x", nil)
	for range 3 {
		d, err := nixcache.NewDecoder("xz", bytes.NewReader(xzHeader64MiB(t)), nixcache.DecoderOwner(decoderOwner(read, nixname.Flake{Org: "omnicorp", Name: "app"})))
		if err != nil {
			t.Fatalf("a decoded read: %v", err)
		}
		held = append(held, d)
	}
	if st, body := put(good, "omnicorp/app", compressedXZ64(t, "good-2")); st/100 != 2 {
		t.Errorf("omnicorp's upload while readers of omnicorp hold their share: %d %q", st, body)
	}
	// Readers of omnicorp holding their share leave the readers of other
	// orgs theirs (review of the fixes: one "reads" share for every reader
	// let one tenant's slow readers block every org's decoded reads).
	other := httptest.NewRequest("GET", "/acme/lib/log/x", nil)
	d, err := nixcache.NewDecoder("xz", bytes.NewReader(xzHeader64MiB(t)), nixcache.DecoderOwner(decoderOwner(other, nixname.Flake{Org: "acme", Name: "lib"})))
	if err != nil {
		t.Errorf("a decoded read of another org beside omnicorp's readers: %v", err)
	} else {
		held = append(held, d)
	}
}

// compressedXZ64 is a path whose NAR is xz-compressed with a 64 MiB
// dictionary (xz -9).
func compressedXZ64(t *testing.T, name string) testPath {
	p := makePath(t, name, nixname.CompressionXZ)
	p.File = xzDict64(t, p.NAR)
	p.FileName = fileNameOf(p.File, p.Compression)
	return p
}

// xzHeader64MiB is an xz stream whose first block declares a 64 MiB
// dictionary.
func xzHeader64MiB(t *testing.T) []byte { return xzDict64(t, []byte("x")) }

// xzDict64 is data xz-compressed with a 64 MiB dictionary (xz -9).
func xzDict64(t *testing.T, data []byte) []byte {
	t.Helper()
	var out bytes.Buffer
	w, err := xz.WriterConfig{DictCap: 64 << 20}.NewWriter(&out)
	if err != nil {
		t.Fatal(err)
	}
	w.Write(data)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}
