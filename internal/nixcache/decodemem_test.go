package nixcache

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"

	"github.com/flakegate/flakegate/internal/nixname"
)

// zstdFrame is one zstd frame of data declaring window w (a power of two,
// at least 1 KiB), not single-segment: what a streaming encoder writes.
func zstdFrame(t testing.TB, data []byte, w int) []byte {
	t.Helper()
	var buf bytes.Buffer
	enc, err := zstd.NewWriter(&buf, zstd.WithEncoderConcurrency(1), zstd.WithSingleSegment(false), zstd.WithWindowSize(1<<10))
	if err != nil {
		t.Fatal(err)
	}
	enc.Write(data)
	enc.Close()
	f := buf.Bytes()
	// Frame header descriptor, then the window descriptor (no single
	// segment): exponent in the top five bits, windowLog = 10 + exponent.
	if f[4]&0x20 != 0 {
		t.Fatalf("frame header %x is single-segment", f[:6])
	}
	log := 0
	for 1<<log < w {
		log++
	}
	f[5] = byte(log-10) << 3
	return f
}

// singleSegment is a zstd frame whose window is its declared content size
// fcs, holding one RLE block of n bytes of 'a' (so it fails once decoded
// when n != fcs; the memory is taken before).
func singleSegment(fcs uint64, n int) []byte {
	f := []byte{0x28, 0xb5, 0x2f, 0xfd, 0xE0} // magic; FCS of 8 bytes, single segment
	f = binary.LittleEndian.AppendUint64(f, fcs)
	bh := uint32(1) | 1<<1 | uint32(n)<<3 // last block, RLE, size n
	return append(f, byte(bh), byte(bh>>8), byte(bh>>16), 'a')
}

func xzStream(t testing.TB, data []byte, dict int) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, err := xz.WriterConfig{DictCap: dict}.NewWriter(&buf)
	if err != nil {
		t.Fatal(err)
	}
	w.Write(data)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// withBudget sets the decoder budget for one test, and a short wait
// (tests of this package run one at a time: none is parallel).
func withBudget(t *testing.T, n int64) {
	t.Helper()
	SetDecoderMemory(n)
	wait := DecoderWait
	DecoderWait = 50 * time.Millisecond
	t.Cleanup(func() {
		SetDecoderMemory(DefaultDecoderMemory)
		DecoderWait = wait
	})
}

// allocated is how many bytes fn allocated.
func allocated(fn func()) uint64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	fn()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// heapInuse is the heap in use after a collection.
func heapInuse() uint64 {
	var m runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&m)
	return m.HeapInuse
}

// A stream's first bytes declare the window its decoder allocates: 128 MiB
// for a 16-byte zstd frame, 64 MiB for a 76-byte xz stream. Each decoder
// alive holds its cost of one budget; a stream the rest of the budget
// cannot cover waits, then is refused, before anything is allocated, and
// the budget comes back when the decoder is closed (review, 2026-12-05:
// 32 such uploads per subject, and reads of a stored listing, had no bound
// but the host's memory).
func TestDecoderMemoryBudget(t *testing.T) {
	withBudget(t, MinDecoderMemory) // one 128 MiB zstd window
	nar := regularNAR("x")
	huge := zstdFrame(t, nar, 128<<20)
	xz64 := xzStream(t, nar, 64<<20)
	small := zstdFrame(t, nar, 1<<20)

	first, err := NewDecoder("zstd", bytes.NewReader(huge))
	if err != nil {
		t.Fatal(err)
	}
	for name, s := range map[string]struct {
		enc  string
		data []byte
	}{
		"a second 128 MiB zstd window": {"zstd", huge},
		"a 64 MiB xz dictionary":       {"xz", xz64},
		"a 1 MiB zstd window":          {"zstd", small},
	} {
		var dec io.ReadCloser
		if got := allocated(func() { dec, err = NewDecoder(s.enc, bytes.NewReader(s.data)) }); got > 1<<20 {
			t.Errorf("%s: refusing it allocated %d bytes", name, got)
		}
		if !errors.Is(err, ErrDecoderMemory) {
			t.Errorf("%s with the budget in use: %v, want ErrDecoderMemory", name, err)
			if dec != nil {
				dec.Close()
			}
		}
	}
	// A stream waiting for memory gets it when another finishes.
	got := make(chan error, 1)
	DecoderWait = 5 * time.Second
	go func() {
		d, err := NewDecoder("xz", bytes.NewReader(xz64))
		if err == nil {
			_, err = io.ReadAll(d)
			d.Close()
		}
		got <- err
	}()
	time.Sleep(50 * time.Millisecond)
	if b, _ := io.ReadAll(first); !bytes.Equal(b, nar) {
		t.Fatalf("the first stream decoded to %q", b)
	}
	first.Close()
	if err := <-got; err != nil {
		t.Errorf("a stream that waited for the first to finish: %v", err)
	}
	DecoderWait = 50 * time.Millisecond

	// The NAR verifier draws from the same budget, and gives back on
	// every path: the failures above left nothing held.
	hold, err := NewDecoder("zstd", bytes.NewReader(huge))
	if err != nil {
		t.Fatalf("the budget was not given back: %v", err)
	}
	if _, err := runVerifier(t, nixname.CompressionZstd, 0, small, 4096); !errors.Is(err, ErrDecoderMemory) {
		t.Errorf("a NAR upload with the budget in use: %v", err)
	}
	hold.Close()
	if _, err := runVerifier(t, nixname.CompressionZstd, 0, small, 4096); err != nil {
		t.Errorf("the same NAR after: %v", err)
	}
	if _, err := runVerifier(t, nixname.CompressionXZ, 0, xz64, 4096); err != nil {
		t.Errorf("a 64 MiB xz NAR after: %v", err)
	}
}

// Idle decoders kept for reuse hold their cost too: using each class in
// turn cannot grow the heap beyond the budget (review of the fixes,
// 2026-12-05: idle decoders in a sync.Pool per class were counted nowhere,
// 6.4 GiB of heap with a 1 GiB budget). Idle ones are dropped for a stream
// that needs their memory.
func TestIdleDecodersCountAgainstTheBudget(t *testing.T) {
	const limit = 192 << 20
	withBudget(t, limit)
	data := regularNAR("x")
	base := heapInuse()
	for round := range 2 {
		for class := minClass; class <= zstdMaxClass; class++ {
			for _, enc := range []string{"zstd", "xz"} {
				var s []byte
				if enc == "zstd" {
					s = zstdFrame(t, data, 1<<class)
				} else {
					if class > xzMaxClass {
						continue
					}
					s = xzStream(t, data, 1<<class)
				}
				d, err := NewDecoder(enc, bytes.NewReader(s))
				if err != nil {
					t.Fatalf("round %d, %s class %d alone: %v", round, enc, class, err)
				}
				if b, err := io.ReadAll(d); err != nil || !bytes.Equal(b, data) {
					t.Fatalf("%s class %d: %v", enc, class, err)
				}
				d.Close()
				if used, _ := DecoderMemoryInUse(); used > limit {
					t.Fatalf("%d bytes held, over the budget of %d", used, limit)
				}
			}
		}
	}
	if grown := int64(heapInuse()) - int64(base); grown > limit*5/4 {
		t.Errorf("the heap grew by %d MiB with a budget of %d MiB", grown>>20, limit>>20)
	}
	if _, idle := DecoderMemoryInUse(); idle == 0 {
		t.Error("no decoder kept for reuse")
	}
}

// What a budget admits is what the decoders allocate, within a tenth: the
// cost counts the library's buffers beside the window (review of the
// fixes: zstd decoders used 141 % of a charge of the window alone).
func TestDecoderCostCoversWhatDecodersAllocate(t *testing.T) {
	withBudget(t, MinDecoderMemory)
	data := bytes.Repeat([]byte("0123456789abcdef"), 1<<14)
	for _, tc := range []struct {
		name, enc string
		s         []byte
	}{
		{"zstd 1 MiB window", "zstd", zstdFrame(t, data, 1<<20)},
		{"xz 1 MiB dictionary", "xz", xzStream(t, data, 1<<20)},
	} {
		SetDecoderMemory(MinDecoderMemory) // drops idle decoders of the case before
		before := heapInuse()
		var held []io.ReadCloser
		buf := make([]byte, 1)
		for {
			d, err := NewDecoder(tc.enc, bytes.NewReader(tc.s))
			if err != nil {
				break
			}
			if _, err := d.Read(buf); err != nil {
				t.Fatal(err)
			}
			held = append(held, d)
		}
		reserved, _ := DecoderMemoryInUse()
		got := heapInuse() - before
		t.Logf("%s: %d decoders admitted, %d MiB reserved, %d MiB of heap in use", tc.name, len(held), reserved>>20, got>>20)
		if got > uint64(reserved)*11/10 {
			t.Errorf("%s: %d MiB of heap for %d MiB reserved", tc.name, got>>20, reserved>>20)
		}
		for _, d := range held {
			d.Close()
			d.Close() // twice gives back once, and pools once
		}
		if used, idle := DecoderMemoryInUse(); idle != len(held) || used != reserved {
			t.Errorf("after closing %d decoders twice: %d idle, %d bytes held (want %d)", len(held), idle, used, reserved)
		}
	}
}

// A decoder's limit is its class: a later frame (or block) declaring a
// larger window than the first is refused by the decoder, so no stream
// allocates more than it reserved. A single-segment frame's window is its
// content size.
func TestDecoderNeverExceedsItsClass(t *testing.T) {
	nar := regularNAR("x")
	twoFrames := append(zstdFrame(t, nar[:8], 1<<20), zstdFrame(t, nar[8:], 128<<20)...)
	var err error
	got := allocated(func() { _, err = Decode("zstd", twoFrames, 1<<20) })
	if err == nil || !strings.Contains(err.Error(), "a later zstd frame needs a larger window than the first declared (1 MiB or less)") {
		t.Errorf("a 1 MiB frame followed by a 128 MiB one: %v", err)
	}
	if got > 16<<20 {
		t.Errorf("decoding it allocated %d MiB", got>>20)
	}
	// A later single-segment frame, whose window is its content size, is
	// named the same way (review of the fixes: "decompressed size exceeds
	// configured limit").
	if _, err := Decode("zstd", append(zstdFrame(t, nar[:8], 1<<20), singleSegment(100<<20, 1000)...), 1<<30); err == nil || !strings.Contains(err.Error(), "a later zstd frame") {
		t.Errorf("a 1 MiB frame followed by a 100 MiB single-segment one: %v", err)
	}
	// As a NAR upload: a clear 400-class error, not a limit message.
	if _, err := runVerifier(t, nixname.CompressionZstd, 0, twoFrames, 4096); err == nil || !strings.Contains(err.Error(), "later zstd frame") {
		t.Errorf("the verifier: %v", err)
	}

	withBudget(t, MinDecoderMemory)
	// A single-segment frame of 100 MiB content: class 128 MiB, the
	// whole budget, as its window is its content size.
	ss, err := NewDecoder("zstd", bytes.NewReader(singleSegment(100<<20, 1000)))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := NewDecoder("zstd", bytes.NewReader(smallFrame(t))); !errors.Is(err, ErrDecoderMemory) {
		t.Errorf("beside a 100 MiB single-segment frame: %v", err)
	}
	ss.Close()
	// One of 129 MiB is beyond every class: refused by the decoder.
	if got := allocated(func() { _, err = Decode("zstd", singleSegment(129<<20, 1000), 1<<30) }); err == nil || got > 16<<20 {
		t.Errorf("a 129 MiB single-segment frame: %v, %d MiB allocated", err, got>>20)
	}
}

func smallFrame(t *testing.T) []byte { return zstdFrame(t, regularNAR("y"), 1<<20) }

// xzDictSize reads what the first block declares; anything it cannot read
// is 0 (the largest class is reserved then).
func TestXZDictSize(t *testing.T) {
	data := regularNAR("dictionary")
	for _, dict := range []int{1 << 20, 3 << 20, 8 << 20, 64 << 20} {
		if got := xzDictSize(xzStream(t, data, dict)); got != uint64(dict) {
			t.Errorf("dictionary %d: read %d", dict, got)
		}
	}
	full := xzStream(t, data, 8<<20)
	for name, head := range map[string][]byte{
		"empty":           nil,
		"stream header":   full[:12],
		"cut block":       full[:15],
		"not xz":          append([]byte("not an xz stream"), full[16:]...),
		"index, no block": append(append([]byte(nil), full[:12]...), 0, 1, 0, 0),
	} {
		if got := xzDictSize(head); got != 0 {
			t.Errorf("%s: %d, want 0", name, got)
		}
	}
}

func FuzzXZDictSize(f *testing.F) {
	f.Add(xzStream(f, regularNAR("a"), 8<<20))
	f.Add([]byte{0xFD, '7', 'z', 'X', 'Z', 0, 0, 4, 0, 0, 0, 0, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, head []byte) {
		d := xzDictSize(head)
		if d != 0 && (d < 4096 || d > 0xFFFFFFFF) {
			t.Fatalf("dictionary %d", d)
		}
	})
}

// One owner's decoders in use hold at most its share (a quarter of the
// budget, or the largest decoder's cost if more), so that one
// subject's stalled uploads or reads cannot starve the others (review of
// the fixes, 2026-12-05: eight stalled uploads declaring 128 MiB windows
// held a 1 GiB budget and every other subject's push got 503).
func TestOneOwnerHoldsAtMostItsShare(t *testing.T) {
	xz64 := xzStream(t, regularNAR("x"), 64<<20)
	withBudget(t, 4*kindXZ.cost(26))
	open := func(owner string) (io.ReadCloser, error) {
		return NewDecoder("xz", bytes.NewReader(xz64), DecoderOwner(owner))
	}
	var held []io.ReadCloser
	for i := range 2 {
		d, err := open("github:evil/x@refs/heads/main")
		if err != nil {
			t.Fatalf("evil's decoder %d of its share: %v", i+1, err)
		}
		held = append(held, d)
	}
	if _, err := open("github:evil/x@refs/heads/main"); !errors.Is(err, ErrDecoderMemory) {
		t.Errorf("a third for the same owner, beyond its share: %v", err)
	}
	d, err := open("github:omnicorp/app@refs/heads/main")
	if err != nil {
		t.Fatalf("another owner beside a greedy one: %v", err)
	}
	held = append(held, d)
	held[0].Close()
	d, err = open("github:evil/x@refs/heads/main")
	if err != nil {
		t.Errorf("the owner again after closing one: %v", err)
	} else {
		held = append(held, d)
	}
	for _, d := range held {
		d.Close()
	}
}

// The smallest budget admits the largest window for an owner too: the
// share is never below the largest decoder's cost (review of the fixes,
// 2026-12-05: with -max-decoder-memory at its minimum, every owned 128 MiB
// zstd stream waited for a share it could never get).
func TestSmallestBudgetAdmitsTheLargestWindowOfAnOwner(t *testing.T) {
	withBudget(t, MinDecoderMemory)
	d, err := NewDecoder("zstd", bytes.NewReader(zstdFrame(t, regularNAR("x"), 128<<20)), DecoderOwner("org:omnicorp"))
	if err != nil {
		t.Fatalf("a 128 MiB window on an idle server with the smallest budget: %v", err)
	}
	d.Close()
}

// A stream waiting for decoder memory stops waiting when its request ends
// (the client left; a verifier aborted), rather than holding its handler,
// connection and upload slot until DecoderWait has passed (review of the
// fixes, 2026-12-05).
func TestWaitForDecoderMemoryEndsWithTheRequest(t *testing.T) {
	withBudget(t, MinDecoderMemory)
	DecoderWait = time.Hour
	huge := zstdFrame(t, regularNAR("x"), 128<<20)
	hold, err := NewDecoder("zstd", bytes.NewReader(huge))
	if err != nil {
		t.Fatal(err)
	}
	defer hold.Close()

	done := make(chan struct{})
	got := make(chan error, 1)
	go func() {
		_, err := NewDecoder("zstd", bytes.NewReader(huge), DecoderDone(done))
		got <- err
	}()
	close(done)
	select {
	case err := <-got:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("a wait whose request ended: %v, want context.Canceled", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("a wait whose request ended went on")
	}

	// The verifier's wait ends when the upload is aborted.
	v, err := NewVerifier(nixname.CompressionZstd, 0)
	if err != nil {
		t.Fatal(err)
	}
	v.Write(huge)
	aborted := make(chan struct{})
	go func() { v.Abort(); close(aborted) }()
	select {
	case <-aborted:
	case <-time.After(20 * time.Second):
		t.Fatal("Abort waited for decoder memory")
	}
	if used, _ := DecoderMemoryInUse(); used != kindZstd.cost(zstdMaxClass) {
		t.Errorf("%d bytes held after the waits ended, want only the first decoder's", used)
	}
}

// Many streams of every class and several owners at once, some waiting,
// some giving up: when all are closed nothing is held but idle decoders,
// and no owner holds anything (run under -race in scripts/test.sh).
func TestDecoderBudgetUnderConcurrency(t *testing.T) {
	withBudget(t, 256<<20)
	DecoderWait = 200 * time.Millisecond
	data := regularNAR("x")
	var streams [][]byte
	for class := minClass; class <= 24; class++ {
		streams = append(streams, zstdFrame(t, data, 1<<class), xzStream(t, data, 1<<class))
	}
	var wg sync.WaitGroup
	for g := range 16 {
		wg.Go(func() {
			owner := fmt.Sprintf("org:o%d", g%3)
			for i := range 40 {
				s := streams[(g+i)%len(streams)]
				enc := "zstd"
				if (g+i)%2 == 1 {
					enc = "xz"
				}
				done := make(chan struct{})
				if i%7 == 0 {
					close(done)
				}
				d, err := NewDecoder(enc, bytes.NewReader(s), DecoderOwner(owner), DecoderDone(done))
				if err != nil {
					continue
				}
				if b, err := io.ReadAll(d); err != nil || !bytes.Equal(b, data) {
					t.Errorf("%s: %v", enc, err)
				}
				d.Close()
			}
		})
	}
	wg.Wait()
	used, idle := DecoderMemoryInUse()
	var idleCost int64
	decoders.mu.Lock()
	for k := range decoders.free {
		for c := range decoders.free[k] {
			idleCost += int64(len(decoders.free[k][c])) * decoderKind(k).cost(c+minClass)
		}
	}
	owned := len(decoders.owned)
	decoders.mu.Unlock()
	if used != idleCost || owned != 0 || used > 256<<20 {
		t.Errorf("after every stream closed: %d bytes held, %d by %d idle decoders, %d owners holding", used, idleCost, idle, owned)
	}
}
