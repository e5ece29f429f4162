package nixcache

import (
	"bufio"
	"compress/bzip2"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"strings"
	"sync"

	"github.com/therootcompany/xz"

	"github.com/flakegate/flakegate/internal/nixname"
)

// ErrTooLarge is returned (wrapped) when the decompressed NAR exceeds the
// verifier's limit.
var ErrTooLarge = errors.New("NAR too large")

// errAborted ends the decompressing goroutine when the upload is abandoned.
var errAborted = errors.New("upload aborted")

// zstdMaxWindow bounds the memory a zstd stream may make the decoder use.
const zstdMaxWindow = 128 << 20

// NarResult is what a Verifier measured.
type NarResult struct {
	FileHash []byte // SHA-256 of the bytes written (the file as stored)
	FileSize int64
	NarHash  []byte // SHA-256 of the decompressed NAR
	NarSize  int64
}

// Verifier hashes a NAR file while it is written through it and checks it:
// decompresses it, hashes the NAR and checks its structure. The work runs
// in a goroutine fed through a short queue of copied chunks, so that the
// writer (reading the upload and storing it) and the verification overlap
// instead of taking turns. Write fails once the data is known to be bad
// (possibly a few chunks later than the bad bytes). Call Finish after the
// last Write, or Abort to give up; one of them must be called. A Verifier
// is used by one goroutine.
type Verifier struct {
	compression nixname.Compression
	chunks      chan *[]byte  // copies of the written bytes, to the goroutine
	stop        chan struct{} // closed by Abort
	done        chan struct{} // closed when the goroutine has ended
	closed      bool          // Finish or Abort was called
	// set by the goroutine before done is closed
	fileHash hash.Hash
	fileSize int64
	narHash  []byte
	narSize  int64
	err      error
}

// verifyQueue is how many written chunks may wait for the goroutine.
const verifyQueue = 4

// chunkBufs holds the chunk copies of the size uploads are written in.
var chunkBufs = sync.Pool{New: func() any { b := make([]byte, 0, chunkSize); return &b }}

// chunkSize is the capacity of the pooled chunk buffers.
const chunkSize = 256 << 10

// recycle returns a chunk buffer to the pool; larger ones (Write's copies
// of big writes) are left to the garbage collector.
func recycle(bp *[]byte) {
	if cap(*bp) == chunkSize {
		chunkBufs.Put(bp)
	}
}

// NewVerifier starts a verifier for a NAR file with the given compression.
// maxNarSize limits the decompressed size (0: no limit).
func NewVerifier(c nixname.Compression, maxNarSize int64, opts ...VerifierOption) (*Verifier, error) {
	if !c.Supported() {
		return nil, fmt.Errorf("compression %q is not supported", c)
	}
	v := &Verifier{
		compression: c, fileHash: sha256.New(),
		chunks: make(chan *[]byte, verifyQueue), stop: make(chan struct{}), done: make(chan struct{}),
	}
	var o verifierOptions
	for _, opt := range opts {
		opt(&o)
	}
	go v.consume(maxNarSize, o)
	return v, nil
}

// Write queues a copy of p for verification. An error means the data is
// invalid (or the verifier was aborted or finished).
func (v *Verifier) Write(p []byte) (int, error) {
	var bp *[]byte
	if len(p) <= chunkSize {
		bp = chunkBufs.Get().(*[]byte)
		*bp = append((*bp)[:0], p...)
	} else {
		b := append([]byte(nil), p...)
		bp = &b
	}
	if err := v.WriteBuffer(bp, len(p)); err != nil {
		return 0, err
	}
	return len(p), nil
}

// NewBuffer returns a buffer to read upload data into and hand to
// WriteBuffer, which then owns it: the bytes reach the verifying goroutine
// without the copy Write makes.
func NewBuffer() *[]byte {
	bp := chunkBufs.Get().(*[]byte)
	*bp = (*bp)[:cap(*bp)]
	return bp
}

// WriteBuffer queues (*bp)[:n] for verification and takes bp: the caller
// must not touch it again, whatever the result. An error means the data is
// invalid (or the verifier was aborted or finished).
func (v *Verifier) WriteBuffer(bp *[]byte, n int) error {
	*bp = (*bp)[:n]
	if v.closed {
		recycle(bp)
		return errAborted
	}
	select {
	case <-v.done: // the goroutine stopped early: the data is bad
		recycle(bp)
		return v.err
	default:
	}
	if n == 0 {
		recycle(bp)
		return nil
	}
	select {
	case v.chunks <- bp:
		return nil
	case <-v.done:
		recycle(bp)
		return v.err
	}
}

// Finish ends the input and returns the measurements, or why the data is
// not a valid NAR of the verifier's compression.
func (v *Verifier) Finish() (NarResult, error) {
	if !v.closed {
		v.closed = true
		close(v.chunks)
	}
	<-v.done
	if v.err != nil {
		return NarResult{}, v.err
	}
	res := NarResult{FileHash: v.fileHash.Sum(nil), FileSize: v.fileSize, NarHash: v.narHash, NarSize: v.narSize}
	if v.compression == nixname.CompressionNone {
		res.NarHash = res.FileHash
	} else if limit := MaxFileSize(res.NarSize); res.FileSize > limit {
		// A zstd frame may carry any number of empty blocks (an xz stream
		// its padding, a bzip2 one...): without a bound, a NAR of a few
		// KiB could be stored as a file of -max-nar-size, and served in
		// the union view to every reader of a path several flakes hold.
		return NarResult{}, fmt.Errorf("the %s file is %d bytes, more than any compressor makes of a NAR of %d bytes (at most %d)",
			v.compression, res.FileSize, res.NarSize, limit)
	}
	return res, nil
}

// MaxFileSize is the largest compressed file accepted for a NAR of
// narSize bytes: narSize + narSize/64 + 64 KiB, above what xz, zstd and
// bzip2 produce for incompressible data (their worst cases are about
// +0.1 %, +0.4 % and +1 %, plus headers).
func MaxFileSize(narSize int64) int64 {
	return narSize + narSize/64 + 64<<10
}

// Abort stops the goroutine and discards everything.
func (v *Verifier) Abort() {
	if !v.closed {
		v.closed = true
		close(v.stop)
	}
	<-v.done
}

func (v *Verifier) consume(maxNarSize int64, o verifierOptions) {
	defer close(v.done)
	r := &chunkReader{v: v}
	defer r.release()
	err := v.check(r, maxNarSize, o)
	if err == nil {
		// The compressed stream must end where the NAR ends.
		var n int64
		n, err = io.Copy(io.Discard, r)
		if err == nil && n > 0 {
			err = fmt.Errorf("%d bytes of trailing data after the %s stream", n, v.compression)
		}
	}
	v.err = err
}

// chunkReader reads the queued chunks in the verifier's goroutine, hashing
// and counting the file bytes as they arrive.
type chunkReader struct {
	v   *Verifier
	cur *[]byte
	off int
}

func (r *chunkReader) Read(p []byte) (int, error) {
	if err := r.fill(); err != nil {
		return 0, err
	}
	n := copy(p, (*r.cur)[r.off:])
	r.off += n
	return n, nil
}

// Skip passes over n bytes (hashed as they arrive, like all bytes) without
// copying them.
func (r *chunkReader) Skip(n int64) (int64, error) {
	var done int64
	for done < n {
		if err := r.fill(); err != nil {
			return done, err
		}
		k := min(n-done, int64(len(*r.cur)-r.off))
		r.off += int(k)
		done += k
	}
	return done, nil
}

// fill makes sure the current chunk has unread bytes, waiting for the next
// one (and hashing it) when needed.
func (r *chunkReader) fill() error {
	for r.cur == nil || r.off == len(*r.cur) {
		r.release()
		select {
		case bp, ok := <-r.v.chunks:
			if !ok {
				return io.EOF
			}
			r.v.fileHash.Write(*bp)
			r.v.fileSize += int64(len(*bp))
			r.cur, r.off = bp, 0
		case <-r.v.stop:
			return errAborted
		}
	}
	return nil
}

func (r *chunkReader) release() {
	if r.cur != nil {
		recycle(r.cur)
	}
	r.cur = nil
}

func (v *Verifier) check(pr io.Reader, maxNarSize int64, o verifierOptions) error {
	var dec io.Reader
	switch v.compression {
	case nixname.CompressionNone:
		dec = pr
	case nixname.CompressionXZ, nixname.CompressionZstd:
		r, done, err := newWindowDecoder(v.compression == nixname.CompressionZstd, pr, decoderOptions{owner: o.owner, done: v.stop})
		if err != nil {
			if memoryError(err) {
				return err
			}
			return decompressError(v.compression, err)
		}
		defer done()
		dec = r
	case nixname.CompressionBzip2:
		dec = bzip2.NewReader(pr)
	}
	var h hash.Hash
	counted := &countingReader{r: dec, limit: maxNarSize}
	if v.compression != nixname.CompressionNone && o.maxExpansion > 0 {
		counted.ratio, counted.compressed = o.maxExpansion, &v.fileSize
	}
	var src io.Reader = counted
	if v.compression != nixname.CompressionNone {
		h = sha256.New()
		src = io.TeeReader(counted, h)
	}
	// Uncompressed, file contents need not pass through the checker's
	// buffer: they are hashed as chunks arrive and skipped in place.
	var under skipper
	if v.compression == nixname.CompressionNone {
		under = counted
	}
	if err := checkNARSkipping(bufio.NewReaderSize(src, 64<<10), under); err != nil {
		if errors.Is(err, errAborted) || errors.Is(err, ErrTooLarge) {
			return err
		}
		var ne *narError
		if v.compression != nixname.CompressionNone && !errors.As(err, &ne) {
			return decompressError(v.compression, err)
		}
		return err
	}
	v.narSize = counted.n
	if h != nil {
		v.narHash = h.Sum(nil)
	}
	return nil
}

// xzDictMax bounds the LZMA2 dictionary an xz stream may make the decoder
// allocate (xz -9, the most Nix uses, needs 64 MiB).
const xzDictMax = 64 << 20

// decompressError says which decompression failed, without the library's
// own "xz: " style prefix.
func decompressError(c nixname.Compression, err error) error {
	if errors.Is(err, xz.ErrMemlimit) {
		return fmt.Errorf("decompress %s: the stream needs an LZMA2 dictionary above the %d MiB limit (xz -9 needs 64 MiB)", c, xzDictMax>>20)
	}
	msg := err.Error()
	for _, p := range []string{"xz: ", "zstd: ", "bzip2 data invalid: ", "bzip2: "} {
		msg = strings.TrimPrefix(msg, p)
	}
	return fmt.Errorf("decompress %s: %s", c, msg)
}

type countingReader struct {
	r     io.Reader
	n     int64
	limit int64
	// ratio > 0 bounds n by ratio × *compressed + ExpansionFloor, where
	// *compressed is the count of file bytes received so far (the
	// Verifier's fileSize, updated in the same goroutine).
	ratio      int64
	compressed *int64
}

// over reports why n decompressed bytes are too many, or nil.
func (c *countingReader) over() error {
	if c.limit > 0 && c.n > c.limit {
		return fmt.Errorf("%w: the decompressed NAR exceeds %d bytes", ErrTooLarge, c.limit)
	}
	if c.compressed != nil && Expands(c.n, *c.compressed, c.ratio) {
		return fmt.Errorf("%w: the NAR decompresses to more than %d times its compressed size (over %d bytes from the first %d compressed bytes)",
			ErrTooLarge, c.ratio, c.n, *c.compressed)
	}
	return nil
}

// Skip skips in the underlying reader when it can, counting as Read does.
func (c *countingReader) Skip(n int64) (int64, error) {
	var k int64
	var err error
	if s, ok := c.r.(skipper); ok {
		k, err = s.Skip(n)
	} else {
		k, err = io.CopyN(io.Discard, c.r, n)
	}
	c.n += k
	if e := c.over(); e != nil {
		return k, e
	}
	return k, err
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	if e := c.over(); e != nil {
		return n, e
	}
	return n, err
}
