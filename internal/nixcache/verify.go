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

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"

	"github.com/flakegate/flakegate/internal/route"
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

// Verifier hashes a NAR file while it is written through it and, in a
// goroutine fed by a pipe, decompresses it, hashes the NAR and checks its
// structure. Write fails as soon as the data is known to be bad. Call Finish
// after the last Write, or Abort to give up; one of them must be called.
type Verifier struct {
	compression route.Compression
	fileHash    hash.Hash
	fileSize    int64
	pw          *io.PipeWriter
	done        chan struct{}
	// set by the goroutine before done is closed
	narHash []byte
	narSize int64
	err     error
}

// NewVerifier starts a verifier for a NAR file with the given compression.
// maxNarSize limits the decompressed size (0: no limit).
func NewVerifier(c route.Compression, maxNarSize int64) (*Verifier, error) {
	switch c {
	case route.CompressionNone, route.CompressionXZ, route.CompressionZstd, route.CompressionBzip2:
	default:
		return nil, fmt.Errorf("compression %q is not supported", c)
	}
	pr, pw := io.Pipe()
	v := &Verifier{compression: c, fileHash: sha256.New(), pw: pw, done: make(chan struct{})}
	go v.consume(pr, maxNarSize)
	return v, nil
}

// Write hashes p and passes it to the decompressing goroutine. An error
// means the data is invalid (or the verifier was aborted).
func (v *Verifier) Write(p []byte) (int, error) {
	v.fileHash.Write(p)
	v.fileSize += int64(len(p))
	if _, err := v.pw.Write(p); err != nil {
		<-v.done
		if v.err != nil {
			return 0, v.err
		}
		return 0, err
	}
	return len(p), nil
}

// Finish ends the input and returns the measurements, or why the data is
// not a valid NAR of the verifier's compression.
func (v *Verifier) Finish() (NarResult, error) {
	v.pw.Close()
	<-v.done
	if v.err != nil {
		return NarResult{}, v.err
	}
	res := NarResult{FileHash: v.fileHash.Sum(nil), FileSize: v.fileSize, NarHash: v.narHash, NarSize: v.narSize}
	if v.compression == route.CompressionNone {
		res.NarHash = res.FileHash
	}
	return res, nil
}

// Abort stops the goroutine and discards everything.
func (v *Verifier) Abort() {
	v.pw.CloseWithError(errAborted)
	<-v.done
}

func (v *Verifier) consume(pr *io.PipeReader, maxNarSize int64) {
	defer close(v.done)
	err := v.check(pr, maxNarSize)
	if err == nil {
		// The compressed stream must end where the NAR ends.
		var n int64
		n, err = io.Copy(io.Discard, pr)
		if err == nil && n > 0 {
			err = fmt.Errorf("%d bytes of trailing data after the %s stream", n, v.compression)
		}
	}
	if err != nil {
		v.err = err
		pr.CloseWithError(err)
		return
	}
	pr.Close()
}

func (v *Verifier) check(pr io.Reader, maxNarSize int64) error {
	var dec io.Reader
	switch v.compression {
	case route.CompressionNone:
		dec = pr
	case route.CompressionXZ:
		xr, err := xz.NewReader(pr)
		if err != nil {
			return decompressError(v.compression, err)
		}
		dec = xr
	case route.CompressionZstd:
		zr, err := zstd.NewReader(pr, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxWindow(zstdMaxWindow))
		if err != nil {
			return decompressError(v.compression, err)
		}
		defer zr.Close()
		dec = zr
	case route.CompressionBzip2:
		dec = bzip2.NewReader(pr)
	}
	var h hash.Hash
	counted := &countingReader{r: dec, limit: maxNarSize}
	var src io.Reader = counted
	if v.compression != route.CompressionNone {
		h = sha256.New()
		src = io.TeeReader(counted, h)
	}
	if err := checkNAR(bufio.NewReaderSize(src, 64<<10)); err != nil {
		if errors.Is(err, errAborted) || errors.Is(err, ErrTooLarge) {
			return err
		}
		var ne *narError
		if v.compression != route.CompressionNone && !errors.As(err, &ne) {
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

// decompressError says which decompression failed, without the library's
// own "xz: " style prefix.
func decompressError(c route.Compression, err error) error {
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
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	if c.limit > 0 && c.n > c.limit {
		return n, fmt.Errorf("%w: the decompressed NAR exceeds %d bytes", ErrTooLarge, c.limit)
	}
	return n, err
}
