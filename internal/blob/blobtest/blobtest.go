// Package blobtest is the conformance suite every blob.Store passes. A new
// backend is done when its test calls Run and it passes:
//
//	func TestConformance(t *testing.T) {
//		blobtest.Run(t, func(t *testing.T) blob.Store { return openMyStore(t) })
//	}
//
// newStore must return an empty store of its own (a fresh directory, bucket
// prefix…). Run closes every store it gets, so newStore must not register a
// Close of its own (removing the directory or prefix afterwards is fine).
//
// Keys: every store accepts exactly the keys blob.CheckKey accepts. The
// suite checks that Create+Commit, Open, Stat and Delete all refuse "a/.x",
// ".tmp/x", "../x", "/abs", "a//b", over-long keys and segments (with an
// error wrapping blob.ErrInvalidKey), and all work for the keys the servers
// write ("nar/<nixbase32>.nar.zst", "log/ORG/NAME/<hash>-NAME.drv") and the
// longest keys the rule allows.
package blobtest

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flakegate/flakegate/internal/blob"
)

// LargeSize is the size of the blob the streaming case writes.
const LargeSize = 64 << 20

const largeSeed = 0x5eed

// Run runs the conformance suite against stores made by newStore.
func Run(t *testing.T, newStore func(t *testing.T) blob.Store) {
	open := func(t *testing.T) blob.Store {
		t.Helper()
		s := newStore(t)
		t.Cleanup(func() {
			if err := s.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
		})
		return s
	}
	t.Run("RoundTrip", func(t *testing.T) { testRoundTrip(t, open(t)) })
	t.Run("NotVisibleBeforeCommit", func(t *testing.T) { testNotVisibleBeforeCommit(t, open(t)) })
	t.Run("Abort", func(t *testing.T) { testAbort(t, open(t)) })
	t.Run("CommitOverExisting", func(t *testing.T) { testCommitOverExisting(t, open(t)) })
	t.Run("ConcurrentWritersSameKey", func(t *testing.T) { testConcurrentWriters(t, open(t)) })
	t.Run("Seek", func(t *testing.T) { testSeek(t, open(t)) })
	t.Run("HTTPRange", func(t *testing.T) { testHTTPRange(t, open(t)) })
	t.Run("NotFound", func(t *testing.T) { testNotFound(t, open(t)) })
	t.Run("Delete", func(t *testing.T) { testDelete(t, open(t)) })
	t.Run("InvalidKeys", func(t *testing.T) { testInvalidKeys(t, open(t)) })
	t.Run("ValidKeys", func(t *testing.T) { testValidKeys(t, open(t)) })
	t.Run("LargeStreaming", func(t *testing.T) { testLarge(t, open(t)) })
	t.Run("Close", func(t *testing.T) {
		s := newStore(t)
		if err := s.Close(); err != nil {
			t.Fatalf("Close of an unused store: %v", err)
		}
	})
}

func ctxFor(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// put writes data under key in chunks and commits it.
func put(t *testing.T, s blob.Store, key string, data []byte) {
	t.Helper()
	ctx := ctxFor(t)
	w, err := s.Create(ctx)
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	for chunk := range slices(data, 4096+7) {
		if _, err := w.Write(chunk); err != nil {
			_ = w.Abort()
			t.Fatalf("Write %s: %v", key, err)
		}
	}
	if err := w.Commit(ctx, key); err != nil {
		t.Fatalf("Commit %s: %v", key, err)
	}
}

func slices(data []byte, n int) func(func([]byte) bool) {
	return func(yield func([]byte) bool) {
		for len(data) > 0 {
			k := min(n, len(data))
			if !yield(data[:k]) {
				return
			}
			data = data[k:]
		}
	}
}

func readAll(t *testing.T, s blob.Store, key string) ([]byte, blob.Info) {
	t.Helper()
	r, err := s.Open(ctxFor(t), key)
	if err != nil {
		t.Fatalf("Open %s: %v", key, err)
	}
	defer r.Close()
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("read %s: %v", key, err)
	}
	return b, r.Info()
}

func randomBytes(seed uint64, n int) []byte {
	b := make([]byte, n)
	fillPattern(seed, 0, b)
	return b
}

// fillPattern fills b with the bytes at offsets off… of a pseudo-random
// stream named by seed. Any byte of the stream can be computed on its own,
// so large blobs never need to be held to be checked.
func fillPattern(seed uint64, off int64, b []byte) {
	for i := range b {
		p := uint64(off) + uint64(i)
		b[i] = byte(splitmix(seed^(p>>3)) >> (8 * (p & 7)))
	}
}

func splitmix(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}

func isNotFound(err error) bool { return errors.Is(err, blob.ErrNotFound) }

func testRoundTrip(t *testing.T, s blob.Store) {
	cases := []struct {
		name, key string
		size      int
	}{
		{"empty", "log/empty", 0},
		{"one byte", "x", 1},
		{"nar key", "nar/0m4ky3j1mxsh6y0fgwdnp0vnhz5sl8xaqh1qn3vrr5xqhmbg8c7q.nar.zst", 100_000},
		{"all key characters", "a/B/c-d_e.f+g=h?i/9", 3},
		{"deep", "a/b/c/d/e/f", 10},
	}
	before := time.Now().Add(-10 * time.Minute)
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			data := randomBytes(uint64(i+1), c.size)
			put(t, s, c.key, data)
			got, info := readAll(t, s, c.key)
			if !bytes.Equal(got, data) {
				t.Fatalf("read back %d bytes, want the %d written", len(got), len(data))
			}
			if info.Key != c.key || info.Size != int64(c.size) {
				t.Errorf("Reader.Info() = %+v, want key %q size %d", info, c.key, c.size)
			}
			if info.ModTime.Before(before) || info.ModTime.After(time.Now().Add(10*time.Minute)) {
				t.Errorf("ModTime %v is not about now", info.ModTime)
			}
			st, err := s.Stat(ctxFor(t), c.key)
			if err != nil {
				t.Fatalf("Stat: %v", err)
			}
			if st.Key != c.key || st.Size != int64(c.size) || st.ModTime.IsZero() {
				t.Errorf("Stat = %+v, want key %q size %d and a ModTime", st, c.key, c.size)
			}
		})
	}
}

func testNotVisibleBeforeCommit(t *testing.T, s blob.Store) {
	// Sizes on both sides of typical in-memory thresholds.
	for _, size := range []int{10, 9 << 20} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			ctx := ctxFor(t)
			key := fmt.Sprintf("nar/pending-%d", size)
			w, err := s.Create(ctx)
			if err != nil {
				t.Fatal(err)
			}
			data := randomBytes(7, size)
			for chunk := range slices(data, 1<<20) {
				if _, err := w.Write(chunk); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := s.Stat(ctx, key); !isNotFound(err) {
				t.Fatalf("Stat before Commit: err = %v, want ErrNotFound", err)
			}
			if r, err := s.Open(ctx, key); !isNotFound(err) {
				if r != nil {
					r.Close()
				}
				t.Fatalf("Open before Commit: err = %v, want ErrNotFound", err)
			}
			if err := w.Commit(ctx, key); err != nil {
				t.Fatal(err)
			}
			if got, _ := readAll(t, s, key); !bytes.Equal(got, data) {
				t.Fatalf("after Commit read %d bytes, want %d", len(got), len(data))
			}
		})
	}
}

func testAbort(t *testing.T, s blob.Store) {
	for _, size := range []int{0, 100, 9 << 20} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			ctx := ctxFor(t)
			key := fmt.Sprintf("aborted-%d", size)
			w, err := s.Create(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := w.Write(randomBytes(3, size)); err != nil {
				t.Fatal(err)
			}
			if err := w.Abort(); err != nil {
				t.Fatalf("Abort: %v", err)
			}
			if _, err := s.Stat(ctx, key); !isNotFound(err) {
				t.Fatalf("Stat after Abort: err = %v, want ErrNotFound", err)
			}
			// The store is still usable for the same key.
			put(t, s, key, []byte("after abort"))
			if got, _ := readAll(t, s, key); string(got) != "after abort" {
				t.Fatalf("got %q", got)
			}
		})
	}
	t.Run("abort of an existing key keeps it", func(t *testing.T) {
		ctx := ctxFor(t)
		put(t, s, "kept", []byte("old"))
		w, err := s.Create(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write([]byte("new content")); err != nil {
			t.Fatal(err)
		}
		if err := w.Abort(); err != nil {
			t.Fatal(err)
		}
		if got, _ := readAll(t, s, "kept"); string(got) != "old" {
			t.Fatalf("after Abort of a rewrite, got %q, want %q", got, "old")
		}
	})
}

func testCommitOverExisting(t *testing.T, s blob.Store) {
	cases := []struct {
		name          string
		first, second []byte
	}{
		{"same bytes", []byte("same content"), []byte("same content")},
		{"different bytes", []byte("first version"), []byte("second, longer version")},
		{"shorter", randomBytes(1, 50_000), []byte("short")},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			key := fmt.Sprintf("log/over-%d", i)
			put(t, s, key, c.first)
			put(t, s, key, c.second)
			got, info := readAll(t, s, key)
			if !bytes.Equal(got, c.second) || info.Size != int64(len(c.second)) {
				t.Fatalf("after two commits read %q (size %d), want the second %q", trunc(got), info.Size, trunc(c.second))
			}
		})
	}
}

func trunc(b []byte) string {
	if len(b) > 40 {
		return string(b[:40]) + "…"
	}
	return string(b)
}

// Many writers commit the same key while readers read it: every read sees a
// complete blob, every commit succeeds.
func testConcurrentWriters(t *testing.T, s blob.Store) {
	const writers = 8
	data := randomBytes(42, 300_000)
	key := "nar/concurrent.nar"
	put(t, s, key, data) // readers always find something
	ctx := ctxFor(t)

	var wg sync.WaitGroup
	errs := make(chan error, 100)
	stop := make(chan struct{})
	var readers sync.WaitGroup
	for range 2 {
		readers.Go(func() {
			for n := 0; ; n++ {
				select {
				case <-stop:
					if n == 0 {
						errs <- errors.New("reader never ran")
					}
					return
				default:
				}
				r, err := s.Open(ctx, key)
				if err != nil {
					errs <- fmt.Errorf("Open during commits: %w", err)
					return
				}
				got, err := io.ReadAll(r)
				r.Close()
				if err != nil {
					errs <- fmt.Errorf("read during commits: %w", err)
					return
				}
				if !bytes.Equal(got, data) {
					errs <- fmt.Errorf("read a partial or mixed blob during commits: %d bytes", len(got))
					return
				}
			}
		})
	}
	for i := range writers {
		wg.Go(func() {
			w, err := s.Create(ctx)
			if err != nil {
				errs <- err
				return
			}
			for chunk := range slices(data, 1000+i) {
				if _, err := w.Write(chunk); err != nil {
					_ = w.Abort()
					errs <- fmt.Errorf("writer %d: %w", i, err)
					return
				}
			}
			if err := w.Commit(ctx, key); err != nil {
				errs <- fmt.Errorf("writer %d commit: %w", i, err)
			}
		})
	}
	wg.Wait()
	close(stop)
	readers.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if got, _ := readAll(t, s, key); !bytes.Equal(got, data) {
		t.Fatalf("after concurrent commits read %d bytes, want %d", len(got), len(data))
	}
}

func testSeek(t *testing.T, s blob.Store) {
	data := randomBytes(5, 200_000)
	put(t, s, "seek", data)
	r, err := s.Open(ctxFor(t), "seek")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	n := int64(len(data))
	steps := []struct {
		name    string
		offset  int64
		whence  int
		wantPos int64
		read    int
	}{
		{"start", 0, io.SeekStart, 0, 10},
		{"middle", 100_000, io.SeekStart, 100_000, 1000},
		{"forward from current", 500, io.SeekCurrent, 101_500, 100},
		{"backward from current", -50_000, io.SeekCurrent, 51_600, 5000},
		{"from end", -10, io.SeekEnd, n - 10, 10},
		{"back to start", 0, io.SeekStart, 0, 70_000},
		{"tail across a read", 150_000, io.SeekStart, 150_000, 50_000},
	}
	for _, st := range steps {
		pos, err := r.Seek(st.offset, st.whence)
		if err != nil || pos != st.wantPos {
			t.Fatalf("%s: Seek(%d, %d) = %d, %v; want %d", st.name, st.offset, st.whence, pos, err, st.wantPos)
		}
		buf := make([]byte, st.read)
		if _, err := io.ReadFull(r, buf); err != nil {
			t.Fatalf("%s: read %d at %d: %v", st.name, st.read, pos, err)
		}
		if !bytes.Equal(buf, data[pos:pos+int64(st.read)]) {
			t.Fatalf("%s: wrong bytes at %d", st.name, pos)
		}
	}
	// At the end: EOF, and Seek(0, SeekCurrent) reports the position.
	if pos, err := r.Seek(0, io.SeekCurrent); err != nil || pos != n {
		t.Fatalf("Seek(0, SeekCurrent) at end = %d, %v; want %d", pos, err, n)
	}
	if k, err := r.Read(make([]byte, 10)); k != 0 || err != io.EOF {
		t.Fatalf("Read at end = %d, %v; want 0, io.EOF", k, err)
	}
	if _, err := r.Seek(-1, io.SeekStart); err == nil {
		t.Fatal("Seek to a negative position succeeded")
	}
}

// ServeContent is how the blob server answers GET with Range: the Reader
// must support it (size via Seek(0, End), then seek and read).
func testHTTPRange(t *testing.T, s blob.Store) {
	data := randomBytes(9, 100_000)
	put(t, s, "nar/range.nar", data)
	cases := []struct {
		rng        string
		wantStatus int
		want       []byte
	}{
		{"", http.StatusOK, data},
		{"bytes=0-99", http.StatusPartialContent, data[:100]},
		{"bytes=50000-", http.StatusPartialContent, data[50000:]},
		{"bytes=-1000", http.StatusPartialContent, data[len(data)-1000:]},
		{"bytes=99999-99999", http.StatusPartialContent, data[99999:]},
		{"bytes=200000-", http.StatusRequestedRangeNotSatisfiable, nil},
	}
	for _, c := range cases {
		t.Run(cmp.Or(c.rng, "no range"), func(t *testing.T) {
			r, err := s.Open(ctxFor(t), "nar/range.nar")
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			req := httptest.NewRequest(http.MethodGet, "/nar/range.nar", nil)
			if c.rng != "" {
				req.Header.Set("Range", c.rng)
			}
			rec := httptest.NewRecorder()
			http.ServeContent(rec, req, "range.nar", r.Info().ModTime, r)
			if rec.Code != c.wantStatus {
				t.Fatalf("status %d, want %d (%s)", rec.Code, c.wantStatus, rec.Body.String())
			}
			if c.want != nil && !bytes.Equal(rec.Body.Bytes(), c.want) {
				t.Fatalf("body: %d bytes, want %d", rec.Body.Len(), len(c.want))
			}
		})
	}
}

func testNotFound(t *testing.T, s blob.Store) {
	ctx := ctxFor(t)
	put(t, s, "nar/present", []byte("x"))
	for _, key := range []string{"nar/absent", "absent", "nar/present/below", "nar/presen"} {
		if _, err := s.Stat(ctx, key); !isNotFound(err) {
			t.Errorf("Stat(%q): err = %v, want one wrapping blob.ErrNotFound", key, err)
		}
		r, err := s.Open(ctx, key)
		if !isNotFound(err) {
			t.Errorf("Open(%q): err = %v, want one wrapping blob.ErrNotFound", key, err)
		}
		if r != nil {
			r.Close()
		}
	}
}

func testDelete(t *testing.T, s blob.Store) {
	ctx := ctxFor(t)
	put(t, s, "log/del", []byte("to delete"))
	put(t, s, "log/keep", []byte("to keep"))
	if err := s.Delete(ctx, "log/del"); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if _, err := s.Stat(ctx, "log/del"); !isNotFound(err) {
		t.Fatalf("Stat after Delete: err = %v, want ErrNotFound", err)
	}
	if got, _ := readAll(t, s, "log/keep"); string(got) != "to keep" {
		t.Fatalf("Delete removed another key: %q", got)
	}
	// Deleting an absent key either succeeds or says ErrNotFound.
	if err := s.Delete(ctx, "log/del"); err != nil && !isNotFound(err) {
		t.Fatalf("Delete of an absent key: %v", err)
	}
}

// invalidKeys are keys blob.CheckKey refuses; every store must refuse each
// of them in every method, with an error wrapping blob.ErrInvalidKey.
func invalidKeys() []string {
	return []string{
		"",
		"/etc/passwd",
		"/abs",
		"..",
		".",
		"../x",
		"../../../../tmp/escape",
		"a/../../x",
		"nar/../../../etc/passwd",
		"a//b",
		"a/",
		"a/.x",
		".tmp/x",
		".tmp",
		"nar/.hidden",
		"a/b\x00c",
		"a\\..\\..\\x",
		"a b",
		"ünïcode",
		strings.Repeat("a", blob.MaxSegmentLen+1),
		strings.Repeat("abcdefg/", blob.MaxKeyLen/8) + "x", // blob.MaxKeyLen+1 bytes
	}
}

// validKeys are keys the servers really write, and the longest keys the
// rule allows; every store must hold each of them.
func validKeys() []string {
	drv := "7a5d1c1f0f4c9a0bd1i7i1d4fd0c3b3c-" // a store hash and '-'
	return []string{
		"nar/0m4ky3j1mxsh6y0fgwdnp0vnhz5sl8xaqh1qn3vrr5xqhmbg8c7q.nar.zst",
		"nar/1b9p07z77phvv2hf6gm9f28syp39f1ag80xzzjl5n9g1vrcz2h4x.nar",
		"log/omnicorp/app/" + drv + "hello-2.12.drv",
		"log/omni-corp/dev.env_2/" + drv + "python3.12-foo+bar=1?x.drv",
		// The longest log key: org and name of 100 bytes, a 255-byte
		// derivation file name.
		"log/" + strings.Repeat("o", 100) + "/" + strings.Repeat("n", 100) + "/" + drv + strings.Repeat("x", 255-len(drv)-4) + ".drv",
		// blob.MaxKeyLen bytes, with blob.MaxSegmentLen-byte segments.
		strings.Repeat("s", blob.MaxSegmentLen) + "/" + strings.Repeat("t", blob.MaxKeyLen-blob.MaxSegmentLen-3) + "/u",
	}
}

func testInvalidKeys(t *testing.T, s blob.Store) {
	ctx := ctxFor(t)
	invalid := func(t *testing.T, op string, err error) {
		t.Helper()
		if err == nil {
			t.Errorf("%s accepted it", op)
		} else if !errors.Is(err, blob.ErrInvalidKey) {
			t.Errorf("%s: err = %v, want one wrapping blob.ErrInvalidKey", op, err)
		}
	}
	for _, key := range invalidKeys() {
		name := fmt.Sprintf("%q", key)
		if len(key) > 40 {
			name = fmt.Sprintf("%d bytes", len(key))
		}
		t.Run(name, func(t *testing.T) {
			if blob.CheckKey(key) == nil {
				t.Fatal("blob.CheckKey accepts it: the suite's list is wrong")
			}
			_, err := s.Stat(ctx, key)
			invalid(t, "Stat", err)
			r, err := s.Open(ctx, key)
			invalid(t, "Open", err)
			if r != nil {
				r.Close()
			}
			invalid(t, "Delete", s.Delete(ctx, key))
			w, err := s.Create(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := w.Write([]byte("escape")); err != nil {
				t.Fatal(err)
			}
			err = w.Commit(ctx, key)
			invalid(t, "Commit", err)
			if err != nil {
				_ = w.Abort()
			}
		})
	}
}

func testValidKeys(t *testing.T, s blob.Store) {
	ctx := ctxFor(t)
	for i, key := range validKeys() {
		name := key
		if len(key) > 80 {
			name = fmt.Sprintf("%d bytes", len(key))
		}
		t.Run(name, func(t *testing.T) {
			if err := blob.CheckKey(key); err != nil {
				t.Fatalf("blob.CheckKey refuses it: the suite's list is wrong: %v", err)
			}
			if _, err := s.Stat(ctx, key); !isNotFound(err) {
				t.Fatalf("Stat before Commit: err = %v, want ErrNotFound", err)
			}
			data := randomBytes(uint64(100+i), 1000+i)
			put(t, s, key, data)
			if got, info := readAll(t, s, key); !bytes.Equal(got, data) || info.Key != key {
				t.Fatalf("Open: read %d bytes under %q, want the %d written under the key", len(got), info.Key, len(data))
			}
			if st, err := s.Stat(ctx, key); err != nil || st.Size != int64(len(data)) {
				t.Fatalf("Stat = %+v, %v; want size %d", st, err, len(data))
			}
			if err := s.Delete(ctx, key); err != nil {
				t.Fatalf("Delete: %v", err)
			}
			if _, err := s.Stat(ctx, key); !isNotFound(err) {
				t.Fatalf("Stat after Delete: err = %v, want ErrNotFound", err)
			}
		})
	}
}

// patternReader yields n bytes of a fillPattern stream without holding
// them: the test itself never has the large blob in memory.
type patternReader struct {
	seed      uint64
	off, size int64
}

func (p *patternReader) Read(b []byte) (int, error) {
	if p.off >= p.size {
		return 0, io.EOF
	}
	if int64(len(b)) > p.size-p.off {
		b = b[:p.size-p.off]
	}
	fillPattern(p.seed, p.off, b)
	p.off += int64(len(b))
	return len(b), nil
}

func heapInUse() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse
}

func testLarge(t *testing.T, s blob.Store) {
	ctx := ctxFor(t)
	key := "nar/large.nar"
	src := &patternReader{seed: largeSeed, size: LargeSize}
	h := sha256.New()
	w, err := s.Create(ctx)
	if err != nil {
		t.Fatal(err)
	}
	base := heapInUse()
	n, err := io.CopyBuffer(io.MultiWriter(w, h), src, make([]byte, 32<<10))
	if err != nil || n != LargeSize {
		_ = w.Abort()
		t.Fatalf("write large blob: %d bytes, %v", n, err)
	}
	// Written but not committed: the store must not be holding the blob in
	// memory (a bounded buffer is fine).
	if grew := int64(heapInUse()) - int64(base); grew > LargeSize/2 {
		t.Errorf("heap grew by %d MiB while writing a %d MiB blob: the store buffers it in memory", grew>>20, LargeSize>>20)
	}
	if _, err := s.Stat(ctx, key); !isNotFound(err) {
		t.Errorf("Stat before Commit: err = %v, want ErrNotFound", err)
	}
	if err := w.Commit(ctx, key); err != nil {
		t.Fatalf("Commit: %v", err)
	}
	want := h.Sum(nil)

	r, err := s.Open(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if r.Info().Size != LargeSize {
		t.Errorf("Info().Size = %d, want %d", r.Info().Size, LargeSize)
	}
	h.Reset()
	if n, err := io.CopyBuffer(h, r, make([]byte, 64<<10)); err != nil || n != LargeSize {
		t.Fatalf("read back %d bytes, %v", n, err)
	}
	if !bytes.Equal(h.Sum(nil), want) {
		t.Fatal("large blob read back differs from what was written")
	}
	// A read from the middle of the large blob.
	if _, err := r.Seek(LargeSize/2+3, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 16)
	if _, err := io.ReadFull(r, buf); err != nil {
		t.Fatalf("read at the middle: %v", err)
	}
	wantMid := make([]byte, 16)
	fillPattern(largeSeed, LargeSize/2+3, wantMid)
	if !bytes.Equal(buf, wantMid) {
		t.Fatal("bytes at the middle differ")
	}
}
