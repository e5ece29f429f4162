package nixcache

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"runtime"
	"strings"
	"testing"

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

// withBudget sets the decoder budget for one test (tests of this package
// run one at a time: none is parallel).
func withBudget(t *testing.T, n int64) {
	t.Helper()
	SetDecoderMemory(n)
	t.Cleanup(func() { SetDecoderMemory(DefaultDecoderMemory) })
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

// A stream's first bytes declare the window its decoder allocates: 128 MiB
// for a 16-byte zstd frame, 64 MiB for a 76-byte xz stream. Each decoder
// in use holds its window's class of one budget; a stream the rest of the
// budget cannot cover is refused at once, before anything is allocated,
// and the budget comes back when the decoder is closed (review, 2026-12-05:
// 32 such uploads per subject, and reads of a stored listing, had no bound
// but the host's memory).
func TestDecoderMemoryBudget(t *testing.T) {
	withBudget(t, MinDecoderMemory) // 128 MiB
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
	if got, _ := io.ReadAll(first); !bytes.Equal(got, nar) {
		t.Fatalf("the first stream decoded to %q", got)
	}
	first.Close()
	first.Close() // twice gives back once

	// Two 64 MiB xz streams fit; a third does not; 1 MiB windows fit by
	// the hundred.
	var held []io.ReadCloser
	for range 2 {
		d, err := NewDecoder("xz", bytes.NewReader(xz64))
		if err != nil {
			t.Fatalf("a 64 MiB xz stream in a budget of two: %v", err)
		}
		held = append(held, d)
	}
	if _, err := NewDecoder("xz", bytes.NewReader(xz64)); !errors.Is(err, ErrDecoderMemory) {
		t.Errorf("a third 64 MiB xz stream: %v", err)
	}
	for _, d := range held {
		d.Close()
	}
	held = held[:0]
	for i := range 128 {
		d, err := NewDecoder("zstd", bytes.NewReader(small))
		if err != nil {
			t.Fatalf("1 MiB window %d of 128: %v", i+1, err)
		}
		held = append(held, d)
	}
	if _, err := NewDecoder("zstd", bytes.NewReader(small)); !errors.Is(err, ErrDecoderMemory) {
		t.Errorf("a 129th 1 MiB window: %v", err)
	}
	for _, d := range held {
		d.Close()
	}

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
