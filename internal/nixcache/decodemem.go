package nixcache

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/therootcompany/xz"
)

// Decoder memory.
//
// An xz or zstd stream names the window its decoder keeps (the LZMA2
// dictionary, up to xzDictMax; the zstd window, up to zstdMaxWindow), and
// the decoder allocates all of it before its first byte of output: a
// 16-byte zstd frame costs 128 MiB, a 76-byte xz stream 64 MiB. Uploads
// (NARs, logs, listings) and reads of stored encoded files (a listing or
// log served decoded) start such decoders, so without a bound a few dozen
// tiny requests exhaust the host's memory.
//
// So every xz and zstd decoder belongs to a window class (a power of two,
// 1 MiB to the kind's limit): the class of what the stream's first frame
// or block declares, the decoder's own limit set to the class, so a later
// frame or block declaring more is refused by the decoder itself. Every
// decoder alive, in use or idle for reuse, holds its cost (the class plus
// what the library allocates beside the window) of one process-wide budget
// (SetDecoderMemory). A stream that does not fit first evicts idle
// decoders, then waits for one in use to finish (at most DecoderWait),
// then is refused with ErrDecoderMemory (503).
//
// Hand-written rather than sync.Pool and a semaphore: a sync.Pool per class
// keeps idle decoders outside any count (a review drove the heap to 6.4 GiB
// with a 1 GiB budget by using each class in turn), and refusing at once
// failed an ordinary push of 25 xz -9 paths in parallel.

// ErrDecoderMemory means the decoder memory budget could not cover one more
// stream of the window this one declares within DecoderWait: try again.
var ErrDecoderMemory = errors.New("the server's memory for decompressing is in use by other requests")

// DefaultDecoderMemory is the budget until SetDecoderMemory is called.
const DefaultDecoderMemory = 1 << 30

// MinDecoderMemory is the smallest budget that admits one stream of every
// window this package accepts.
const MinDecoderMemory = zstdMaxWindow + zstdOverhead

// DecoderWait is how long a stream waits for decoder memory before it is
// refused.
var DecoderWait = 30 * time.Second

// What a decoder allocates beside its window, measured (klauspost/compress
// 1.20: the history ring holds window + 2 × (128 KiB + its over-allocation),
// plus block and literal buffers; therootcompany/xz: a few buffers).
const (
	zstdOverhead = 512 << 10
	xzOverhead   = 64 << 10
)

// Window classes: 1 << class bytes, minClass to the kind's maximum.
const (
	minClass     = 20 // 1 MiB
	zstdMaxClass = 27 // zstdMaxWindow
	xzMaxClass   = 26 // xzDictMax
)

type decoderKind int

const (
	kindZstd decoderKind = iota
	kindXZ
)

func (k decoderKind) cost(class int) int64 {
	if k == kindZstd {
		return 1<<class + zstdOverhead
	}
	return 1<<class + xzOverhead
}

// budget is the decoders' memory: every decoder alive holds its cost, the
// idle ones waiting in free for reuse (newest last).
type budget struct {
	mu      sync.Mutex
	limit   int64
	used    int64
	free    [2][zstdMaxClass - minClass + 1][]any
	idle    int           // decoders in free
	changed chan struct{} // closed and replaced when memory is given back
	// owned is what each owner's decoders in use hold (DecoderOwner): at
	// most a share each, so that one tenant's stalled uploads or reads
	// cannot hold all of it (review of the fixes, 2026-12-05).
	owned map[string]int64
}

var decoders = &budget{limit: DefaultDecoderMemory, changed: make(chan struct{}), owned: map[string]int64{}}

// DecoderOption configures a decoder of NewDecoder and its kin.
type DecoderOption func(*decoderOptions)

type decoderOptions struct {
	owner string
	done  <-chan struct{}
}

// DecoderDone ends a wait for decoder memory when done is closed (the
// request ended): NewDecoder then fails with an error wrapping
// context.Canceled at once, rather than when DecoderWait has passed.
func DecoderDone(done <-chan struct{}) DecoderOption {
	return func(o *decoderOptions) { o.done = done }
}

// DecoderOwner names who a decoder decodes for (the blob server: the
// request's tenant); "" is nobody's. One owner's decoders in use hold at
// most a quarter of the decoder memory budget (or the largest decoder's
// cost, if more), so that one tenant cannot starve the others.
func DecoderOwner(owner string) DecoderOption {
	return func(o *decoderOptions) { o.owner = owner }
}

func decoderOpts(opts []DecoderOption) decoderOptions {
	var o decoderOptions
	for _, f := range opts {
		f(&o)
	}
	return o
}

// SetDecoderMemory sets the process's budget for xz and zstd decoders
// alive at once (in use, or idle for reuse), in bytes, at least
// MinDecoderMemory. Idle decoders are dropped.
func SetDecoderMemory(n int64) {
	b := decoders
	b.mu.Lock()
	defer b.mu.Unlock()
	b.limit = max(n, MinDecoderMemory)
	saved := b.limit
	b.limit = 0
	b.evict(0) // every idle decoder
	b.limit = saved
	b.wake()
}

// DecoderMemoryInUse reports the bytes held by decoders alive and how many
// of them are idle (metrics, tests).
func DecoderMemoryInUse() (bytes int64, idle int) {
	b := decoders
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.used, b.idle
}

func (b *budget) wake() {
	close(b.changed)
	b.changed = make(chan struct{})
}

// evict drops idle decoders, largest class first, until need more bytes
// fit; it reports whether they do. Call with mu held.
func (b *budget) evict(need int64) bool {
	for class := zstdMaxClass; class >= minClass && b.used+need > b.limit; class-- {
		for k := range b.free {
			list := &b.free[k][class-minClass]
			for len(*list) > 0 && b.used+need > b.limit {
				(*list)[0] = nil // the oldest: dropped, the GC frees it
				*list = (*list)[1:]
				b.used -= decoderKind(k).cost(class)
				b.idle--
			}
		}
	}
	return b.used+need <= b.limit
}

// get returns an idle decoder of kind and class (nil: make one; its cost
// is then held) for owner, or ErrDecoderMemory after DecoderWait, or an
// error wrapping context.Canceled once done is closed (nil: never).
func (b *budget) get(k decoderKind, class int, owner string, done <-chan struct{}) (any, error) {
	cost := k.cost(class)
	var timer *time.Timer
	for {
		b.mu.Lock()
		if owner == "" || b.owned[owner]+cost <= b.share() {
			list := &b.free[k][class-minClass]
			if n := len(*list); n > 0 {
				d := (*list)[n-1]
				(*list)[n-1] = nil
				*list = (*list)[:n-1]
				b.idle--
				b.own(owner, cost)
				b.mu.Unlock()
				return d, nil
			}
			if b.evict(cost) {
				b.used += cost
				b.own(owner, cost)
				b.mu.Unlock()
				return nil, nil
			}
		}
		changed := b.changed
		b.mu.Unlock()
		if timer == nil {
			timer = time.NewTimer(DecoderWait)
			defer timer.Stop()
		}
		select {
		case <-changed:
		case <-done:
			return nil, fmt.Errorf("wait for decoder memory: %w", context.Canceled)
		case <-timer.C:
			return nil, fmt.Errorf("%w (a stream declaring a %d MiB window waited %s): try again", ErrDecoderMemory, 1<<(class-20), DecoderWait)
		}
	}
}

// share is the most one owner's decoders in use may hold: a quarter of
// the budget, so that a tenant holding its share as a pusher and another
// as a reader still leaves half to the rest, and at least the largest
// decoder's cost, so that a small budget still admits every window. Call
// with mu held.
func (b *budget) share() int64 {
	return max(b.limit/4, kindZstd.cost(zstdMaxClass))
}

// own adds n to what owner holds. Call with mu held.
func (b *budget) own(owner string, n int64) {
	if owner == "" {
		return
	}
	if b.owned[owner] += n; b.owned[owner] <= 0 {
		delete(b.owned, owner)
	}
}

// put gives owner's decoder back: kept idle for reuse when d is not nil
// (its cost still held), else its cost returned.
func (b *budget) put(k decoderKind, class int, d any, owner string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.own(owner, -k.cost(class))
	if d != nil && b.used <= b.limit {
		list := &b.free[k][class-minClass]
		*list = append(*list, d)
		b.idle++
	} else {
		b.used -= k.cost(class)
	}
	b.wake()
}

// windowClass is the smallest class holding a window of w bytes, at most
// maxClass (a larger window is refused by a decoder of maxClass).
func windowClass(w uint64, maxClass int) int {
	c := minClass
	for c < maxClass && uint64(1)<<c < w {
		c++
	}
	return c
}

// peek reads up to n bytes of r's start: those bytes, and a reader of the
// whole of r again.
func peek(r io.Reader, n int) ([]byte, io.Reader, error) {
	head := make([]byte, n)
	m, err := io.ReadFull(r, head)
	if err == io.EOF || err == io.ErrUnexpectedEOF {
		err = nil
	}
	head = head[:m]
	return head, io.MultiReader(bytes.NewReader(head), r), err
}

// newZstdReader returns a decoder of r of the window class its first frame
// declares (the largest class when the start does not show one: a
// skippable frame, or too few bytes), held for owner (DecoderOwner), and
// the function that gives it back (once, however often called);
// ErrDecoderMemory when the budget cannot cover the class in time.
func newZstdReader(r io.Reader, o decoderOptions) (io.Reader, func(), error) {
	head, r, err := peek(r, zstd.HeaderMaxSize)
	if err != nil {
		return nil, nil, err
	}
	class := zstdMaxClass
	var h zstd.Header
	if h.Decode(head) == nil && !h.Skippable {
		w := h.WindowSize
		if h.SingleSegment {
			w = h.FrameContentSize
		}
		class = windowClass(w, zstdMaxClass)
	}
	d, err := decoders.get(kindZstd, class, o.owner, o.done)
	if err != nil {
		return nil, nil, err
	}
	zr, _ := d.(*zstd.Decoder)
	if zr == nil {
		// Concurrency 1: decodes synchronously and starts no goroutines,
		// so one dropped leaks nothing.
		zr, err = zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxWindow(1<<class))
		if err != nil {
			decoders.put(kindZstd, class, nil, o.owner)
			return nil, nil, err
		}
	}
	if err := zr.Reset(r); err != nil {
		decoders.put(kindZstd, class, nil, o.owner)
		return nil, nil, err
	}
	var once sync.Once
	done := func() {
		once.Do(func() {
			if zr.Reset(nil) != nil {
				decoders.put(kindZstd, class, nil, o.owner) // not reusable
				return
			}
			decoders.put(kindZstd, class, zr, o.owner)
		})
	}
	return &classReader{r: zr, class: class, maxClass: zstdMaxClass, kind: "zstd frame", window: "window"}, done, nil
}

// newWindowDecoder is newZstdReader for zstd, else newXZReader: the two
// kinds whose decoders hold a window of the decoder memory.
func newWindowDecoder(zstd bool, r io.Reader, o decoderOptions) (io.Reader, func(), error) {
	if zstd {
		return newZstdReader(r, o)
	}
	return newXZReader(r, o)
}

// memoryError reports whether err is the decoder memory's (the budget
// could not cover the stream in time, or the wait ended with its
// request): passed on as it is, never as a stream that does not decode.
func memoryError(err error) bool {
	return errors.Is(err, ErrDecoderMemory) || errors.Is(err, context.Canceled)
}

// emptyXZ is an xz stream of no data: an idle decoder is reset to it, so
// that it keeps no reference to the stream it read (this decoder's Reset
// reads the next stream's header at once; it cannot be reset to nothing).
var emptyXZ = []byte{
	0xFD, '7', 'z', 'X', 'Z', 0x00, 0x00, 0x04, 0xE6, 0xD6, 0xB4, 0x46, // stream header, CRC64
	0x00, 0x00, 0x00, 0x00, 0x1C, 0xDF, 0x44, 0x21, // index of no blocks
	0x1F, 0xB6, 0xF3, 0x7D, 0x01, 0x00, 0x00, 0x00, 0x00, 0x04, 'Y', 'Z', // stream footer
}

// newXZReader is newZstdReader for xz: the class of the LZMA2 dictionary
// the first block declares. Concatenated streams are read as one, as xz
// does.
func newXZReader(r io.Reader, o decoderOptions) (io.Reader, func(), error) {
	head, r, err := peek(r, xzHeadMax)
	if err != nil {
		return nil, nil, err
	}
	class := xzMaxClass
	if d := xzDictSize(head); d > 0 {
		class = windowClass(d, xzMaxClass)
	}
	d, err := decoders.get(kindXZ, class, o.owner, o.done)
	if err != nil {
		return nil, nil, err
	}
	xr, _ := d.(*xz.Reader)
	if xr != nil {
		err = xr.Reset(r)
	} else {
		xr, err = xz.NewReader(r, 1<<class)
	}
	if err != nil {
		decoders.put(kindXZ, class, nil, o.owner)
		return nil, nil, err
	}
	var once sync.Once
	done := func() {
		once.Do(func() {
			if xr.Reset(bytes.NewReader(emptyXZ)) != nil {
				decoders.put(kindXZ, class, nil, o.owner) // not reusable
				return
			}
			decoders.put(kindXZ, class, xr, o.owner)
		})
	}
	return &classReader{r: xr, class: class, maxClass: xzMaxClass, kind: "xz block", window: "LZMA2 dictionary"}, done, nil
}

// classReader names the error of a decoder limited to a class below its
// kind's maximum that met a frame or block declaring more than the first.
type classReader struct {
	r               io.Reader
	class, maxClass int
	kind, window    string
}

func (c *classReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if err != nil && c.class < c.maxClass && (errors.Is(err, xz.ErrMemlimit) || errors.Is(err, zstd.ErrWindowSizeExceeded) || errors.Is(err, zstd.ErrDecoderSizeExceeded)) {
		err = fmt.Errorf("a later %s needs a larger %s than the first declared (%d MiB or less): every frame must fit the first one's", c.kind, c.window, 1<<(c.class-20))
	}
	return n, err
}

// xzHeadMax is the most of an xz stream xzDictSize reads: the stream
// header and the largest block header.
const xzHeadMax = 12 + 1024

// xzDictSize reads the LZMA2 dictionary size that the first block of the
// xz stream starting head declares; 0 when head does not show one.
// Hand-written: neither xz library exports its header parser, and the
// format is fixed (xz file format 1.2.1, sections 2.1.1, 3.1 and 5.3.1).
func xzDictSize(head []byte) uint64 {
	const streamHeader = 12
	if len(head) < streamHeader+2 || !bytes.HasPrefix(head, []byte{0xFD, '7', 'z', 'X', 'Z', 0}) {
		return 0
	}
	b := head[streamHeader:]
	size := (int(b[0]) + 1) * 4 // 0: an index, no block
	if b[0] == 0 || len(b) < size {
		return 0
	}
	b = b[:size-4] // without the CRC32
	flags, p := b[1], 2
	for _, present := range []bool{flags&0x40 != 0, flags&0x80 != 0} { // compressed, uncompressed size
		if present {
			_, n := binary.Uvarint(b[p:])
			if n <= 0 {
				return 0
			}
			p += n
		}
	}
	for range int(flags&3) + 1 {
		id, n := binary.Uvarint(b[p:])
		if n <= 0 {
			return 0
		}
		p += n
		propSize, n := binary.Uvarint(b[p:])
		if n <= 0 || propSize > uint64(len(b)-p-n) {
			return 0
		}
		p += n
		if id == 0x21 && propSize == 1 { // LZMA2
			d := b[p]
			if d > 40 {
				return 0
			}
			if d == 40 {
				return 0xFFFFFFFF
			}
			return uint64(2|d&1) << (d/2 + 11)
		}
		p += int(propSize)
	}
	return 0
}
