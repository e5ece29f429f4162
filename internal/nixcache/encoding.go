package nixcache

import (
	"bytes"
	"compress/bzip2"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/andybalholm/brotli"
)

// Content encodings of uploads. Nix (HttpBinaryCacheStore::upsertFile,
// 2.35) compresses a narinfo, a .ls listing or a log/ file with the
// store's narinfo-compression, ls-compression or log-compression and
// sends "Content-Encoding: " + showCompressionAlgo(method): one of none,
// br, bzip2, compress, grzip, gzip, lrzip, lz4, lzip, lzma, lzop, xz, zstd.
// The cache accepts those it can decode (to validate the file and to
// serve it to a client that does not accept the encoding): gzip, xz,
// zstd, bzip2 and br; "none", "identity" and no header mean none.

// Encodings returns the Content-Encoding values uploads may carry besides
// none, for messages.
func Encodings() []string { return []string{"gzip", "xz", "zstd", "bzip2", "br"} }

// NormalizeEncoding returns the canonical name of a Content-Encoding value
// ("" for none) and whether the cache can decode it.
func NormalizeEncoding(v string) (string, bool) {
	v = strings.ToLower(strings.TrimSpace(v))
	switch v {
	case "", "none", "identity":
		return "", true
	case "x-gzip":
		return "gzip", true
	}
	for _, e := range Encodings() {
		if v == e {
			return v, true
		}
	}
	return v, false
}

// ErrEncoding is returned (wrapped) by Decode for data that does not decode.
var ErrEncoding = errors.New("content encoding")

// Decode returns the bytes of data encoded with enc (a NormalizeEncoding
// name), refusing with ErrTooLarge more than max decoded bytes and with
// ErrEncoding data that does not decode.
func Decode(enc string, data []byte, max int64, opts ...DecoderOption) ([]byte, error) {
	rc, err := NewLimitedDecoder(enc, bytes.NewReader(data), max, opts...)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	out, err := io.ReadAll(rc)
	if err != nil {
		return nil, err
	}
	return out, nil
}

// NewLimitedDecoder is NewDecoder whose reads fail with ErrTooLarge
// (wrapped) once r decodes to more than max bytes, and with ErrEncoding
// (wrapped) where r does not decode: for reading a stored or uploaded
// file as a stream, without holding it decoded.
func NewLimitedDecoder(enc string, r io.Reader, max int64, opts ...DecoderOption) (io.ReadCloser, error) {
	rc, err := NewDecoder(enc, r, opts...)
	if err != nil {
		return nil, err
	}
	return &limitedDecoder{rc: rc, enc: enc, left: max, max: max}, nil
}

type limitedDecoder struct {
	rc        io.ReadCloser
	enc       string
	left, max int64
}

func (d *limitedDecoder) Read(p []byte) (int, error) {
	if d.left < 0 {
		return 0, fmt.Errorf("%w: decodes to more than %d bytes", ErrTooLarge, d.max)
	}
	// One byte beyond the limit tells a stream of exactly max bytes from
	// a longer one.
	if int64(len(p)) > d.left+1 {
		p = p[:d.left+1]
	}
	n, err := d.rc.Read(p)
	d.left -= int64(n)
	if d.left < 0 {
		return n + int(d.left), fmt.Errorf("%w: decodes to more than %d bytes", ErrTooLarge, d.max)
	}
	if err != nil && err != io.EOF {
		return n, fmt.Errorf("%w: %s: %v", ErrEncoding, d.enc, err)
	}
	return n, err
}

func (d *limitedDecoder) Close() error { return d.rc.Close() }

// NewDecoder returns a reader of r's bytes decoded from enc (a
// NormalizeEncoding name; "" reads r as it is).
func NewDecoder(enc string, r io.Reader, opts ...DecoderOption) (io.ReadCloser, error) {
	switch enc {
	case "":
		return io.NopCloser(r), nil
	case "gzip":
		zr, err := gzip.NewReader(r)
		if err != nil {
			return nil, fmt.Errorf("%w: gzip: %v", ErrEncoding, err)
		}
		return zr, nil
	case "xz", "zstd":
		dr, done, err := newWindowDecoder(enc == "zstd", r, decoderOpts(opts))
		if memoryError(err) {
			return nil, err
		}
		if err != nil {
			return nil, fmt.Errorf("%w: %s: %v", ErrEncoding, enc, err)
		}
		return readCloser{dr, done}, nil
	case "bzip2":
		return io.NopCloser(bzip2.NewReader(r)), nil
	case "br":
		return io.NopCloser(brotli.NewReader(r)), nil
	}
	return nil, fmt.Errorf("%w: %q is not supported (use one of %s, or none)", ErrEncoding, enc, strings.Join(Encodings(), ", "))
}

type readCloser struct {
	io.Reader
	done func()
}

func (r readCloser) Close() error { r.done(); return nil }

// Accepts reports whether an Accept-Encoding header value (values joined
// with ",") admits enc: no header admits every encoding (RFC 9110 12.5.3;
// Nix 2.8 sends none and decodes what it gets), otherwise enc or "*" must
// be listed without q=0.
func Accepts(acceptEncoding string, present bool, enc string) bool {
	if enc == "" || !present {
		return true
	}
	star := false
	for _, part := range strings.Split(acceptEncoding, ",") {
		name, params, _ := strings.Cut(strings.TrimSpace(part), ";")
		name = strings.ToLower(strings.TrimSpace(name))
		zero := false
		for _, p := range strings.Split(params, ";") {
			k, v, _ := strings.Cut(strings.TrimSpace(p), "=")
			if strings.EqualFold(strings.TrimSpace(k), "q") {
				v = strings.TrimRight(strings.TrimSpace(v), "0")
				zero = v == "" || v == "." || v == "0" || v == "0."
			}
		}
		switch {
		case name == enc || (enc == "gzip" && name == "x-gzip"):
			return !zero
		case name == "*":
			star = !zero
		}
	}
	return star
}
