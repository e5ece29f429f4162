package nixcache

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"

	"github.com/klauspost/compress/zstd"
	"github.com/therootcompany/xz"
	"golang.org/x/sync/semaphore"
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
// frame or block declaring more is refused by the decoder itself. Each
// decoder in use holds its class's bytes of one process-wide budget
// (SetDecoderMemory); when the budget cannot cover a new stream, it is
// refused at once with ErrDecoderMemory (503: Nix retries) rather than
// queued. Idle decoders wait in a pool per class and are not counted: a
// pool keeps them only until the next garbage collection or two.

// ErrDecoderMemory means the decoder memory budget cannot cover one more
// stream of the window this one declares, now: try again.
var ErrDecoderMemory = errors.New("the server's memory for decompressing is in use by other requests")

// DefaultDecoderMemory is the budget until SetDecoderMemory is called.
const DefaultDecoderMemory = 1 << 30

// MinDecoderMemory is the smallest budget that admits one stream of every
// window this package accepts.
const MinDecoderMemory = zstdMaxWindow

// decoderBudget is the budget decoders in use draw from; a stream's
// reservation is released to the semaphore it was taken from.
var decoderBudget atomic.Pointer[semaphore.Weighted]

func init() { SetDecoderMemory(DefaultDecoderMemory) }

// SetDecoderMemory sets the process's budget of xz and zstd decoder
// windows in use at once, in bytes (at least MinDecoderMemory). Streams
// decoding when it changes keep their reservation in the old budget.
func SetDecoderMemory(n int64) {
	decoderBudget.Store(semaphore.NewWeighted(max(n, MinDecoderMemory)))
}

// Window classes: 1 << class bytes, minClass to the kind's maximum.
const (
	minClass     = 20 // 1 MiB
	zstdMaxClass = 27 // zstdMaxWindow
	xzMaxClass   = 26 // xzDictMax
)

var (
	zstdPools [zstdMaxClass - minClass + 1]sync.Pool
	xzPools   [xzMaxClass - minClass + 1]sync.Pool
)

// windowClass is the smallest class holding a window of w bytes, at most
// maxClass (a larger window is refused by a decoder of maxClass).
func windowClass(w uint64, maxClass int) int {
	c := minClass
	for c < maxClass && uint64(1)<<c < w {
		c++
	}
	return c
}

// reserve takes 1 << class bytes of the budget: a release function, or
// ErrDecoderMemory.
func reserve(class int) (func(), error) {
	sem, n := decoderBudget.Load(), int64(1)<<class
	if !sem.TryAcquire(n) {
		return nil, fmt.Errorf("%w (a stream declaring a %d MiB window): try again", ErrDecoderMemory, n>>20)
	}
	var once sync.Once
	return func() { once.Do(func() { sem.Release(n) }) }, nil
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

// newZstdReader returns a decoder of r from the pool of the window class
// its first frame declares (the largest class when the start does not
// show one: a skippable frame, or too few bytes), and the function that
// gives it back; ErrDecoderMemory when the budget cannot cover the class.
func newZstdReader(r io.Reader) (io.Reader, func(), error) {
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
	release, err := reserve(class)
	if err != nil {
		return nil, nil, err
	}
	pool := &zstdPools[class-minClass]
	zr, _ := pool.Get().(*zstd.Decoder)
	if zr == nil {
		// Concurrency 1: decodes synchronously and starts no goroutines,
		// so one dropped by the pool leaks nothing.
		zr, err = zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxWindow(1<<class))
		if err != nil {
			release()
			return nil, nil, err
		}
	}
	if err := zr.Reset(r); err != nil {
		release()
		return nil, nil, err
	}
	done := func() {
		if zr.Reset(nil) == nil {
			pool.Put(zr)
		}
		release()
	}
	return &classReader{r: zr, class: class, maxClass: zstdMaxClass, kind: "zstd frame", window: "window"}, done, nil
}

// newXZReader is newZstdReader for xz: the class of the LZMA2 dictionary
// the first block declares. Concatenated streams are read as one, as xz
// does.
func newXZReader(r io.Reader) (io.Reader, func(), error) {
	head, r, err := peek(r, xzHeadMax)
	if err != nil {
		return nil, nil, err
	}
	class := xzMaxClass
	if d := xzDictSize(head); d > 0 {
		class = windowClass(d, xzMaxClass)
	}
	release, err := reserve(class)
	if err != nil {
		return nil, nil, err
	}
	pool := &xzPools[class-minClass]
	var xr *xz.Reader
	if pooled, ok := pool.Get().(*xz.Reader); ok {
		err = pooled.Reset(r)
		xr = pooled
	} else {
		xr, err = xz.NewReader(r, 1<<class)
	}
	if err != nil {
		release()
		return nil, nil, err
	}
	// Put back still referring to the stream it read (this decoder's
	// Reset reads the next stream's header at once, so it cannot be reset
	// to nothing): a finished pipe, small.
	done := func() {
		pool.Put(xr)
		release()
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
	if err != nil && c.class < c.maxClass && (errors.Is(err, xz.ErrMemlimit) || errors.Is(err, zstd.ErrWindowSizeExceeded)) {
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
