package cacheserver

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/flakegate/flakegate/internal/index"
	"github.com/flakegate/flakegate/internal/nixcache"
	"github.com/flakegate/flakegate/internal/nixname"
	"github.com/flakegate/flakegate/internal/route"
)

// The small JSON files of a binary cache besides narinfos and NARs (see
// nixcache/files.go for their formats): NAR listings (<hash>.ls), debug
// info links (debuginfo/<build-id>), realisations (realisations/<id>.doi,
// Nix ≤ 2.33) and build trace entries (build-trace-v2/<drv>/<out>.doi,
// Nix ≥ 2.34). Each flake has its own copy (index.File), stored as
// uploaded with its Content-Encoding, and served only while the flake owns
// what it names (index.File.Needs): the listed path's narinfo, the debug
// info's NAR, the realisation's output path.

const (
	contentTypeJSON = "application/json"
	cacheFile       = "private, max-age=60"
)

// fileSpec is what the server does with the files of one kind.
type fileSpec struct {
	kind index.Kind
	// max bounds the decoded bytes; the upload (encoded) too.
	max int64
	// check validates the decoded data of the file req names and returns
	// what the file needs the flake to own (index.File.Needs), and the
	// store path base name the flake must already own at upload ("" for
	// none).
	check func(data []byte, req route.Request) (needs, mustOwn string, err error)
}

var fileSpecs = map[route.Kind]fileSpec{
	route.KindListing: {nixname.KindListing, nixcache.MaxListingSize, func(data []byte, req route.Request) (string, string, error) {
		// Nix uploads the listing before the NAR and the narinfo
		// (BinaryCacheStore::uploadData), so the narinfo cannot be asked
		// for here: the listing is served once the flake has it.
		return req.Hash, "", nixcache.CheckListing(data)
	}},
	route.KindDebugInfo: {nixname.KindDebugInfo, nixcache.MaxSmallFileSize, func(data []byte, req route.Request) (string, string, error) {
		// Uploaded before its NAR, too: served once the flake owns it.
		file, err := nixcache.CheckDebugInfo(data, req.Hash)
		return file, "", err
	}},
	route.KindRealisation: {nixname.KindRealisation, nixcache.MaxSmallFileSize, func(data []byte, req route.Request) (string, string, error) {
		out, err := nixcache.CheckRealisation(data, req.Hash)
		if err != nil {
			return "", "", err
		}
		return out[:nixname.StoreHashLen], out, nil
	}},
	route.KindBuildTrace: {nixname.KindBuildTrace, nixcache.MaxSmallFileSize, func(data []byte, req route.Request) (string, string, error) {
		out, err := nixcache.CheckBuildTrace(data)
		if err != nil {
			return "", "", err
		}
		return out[:nixname.StoreHashLen], out, nil
	}},
}

// uploadEncoding reads an upload's Content-Encoding: its canonical name
// ("" for none), or a 415 for one the server cannot decode.
func uploadEncoding(r *http.Request) (string, error) {
	v := strings.Join(r.Header.Values("Content-Encoding"), ",")
	enc, ok := nixcache.NormalizeEncoding(v)
	if !ok || strings.Contains(enc, ",") {
		return "", &uploadError{status: http.StatusUnsupportedMediaType, unread: true, msg: fmt.Sprintf(
			"Content-Encoding %q is not supported: use one of %s, or none", v, strings.Join(nixcache.Encodings(), ", "))}
	}
	return enc, nil
}

// readSmallBody reads a whole upload body of at most max bytes: 413 beyond
// (also when Content-Length says so, before reading), 400 when the client
// fails to send it.
func readSmallBody(r *http.Request, max int64, what string) ([]byte, error) {
	if r.ContentLength > max {
		return nil, tooLarge(max, what)
	}
	data, err := io.ReadAll(http.MaxBytesReader(nil, r.Body, max))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, tooLarge(max, what)
		}
		return nil, &uploadError{status: http.StatusBadRequest, msg: "reading the " + what + " upload failed: " + err.Error(), unread: true}
	}
	return data, nil
}

// decodeUpload decodes an upload's data from enc, at most max bytes: 413
// beyond, 400 for data that does not decode.
func decodeUpload(data []byte, enc string, max int64, what string) ([]byte, error) {
	plain, err := nixcache.Decode(enc, data, max)
	if errors.Is(err, nixcache.ErrTooLarge) {
		return nil, &uploadError{status: http.StatusRequestEntityTooLarge, msg: fmt.Sprintf("%s decodes to more than %d bytes", what, max)}
	}
	if err != nil {
		return nil, badRequest("invalid %s: Content-Encoding %s: %v", what, enc, err)
	}
	return plain, nil
}

func (s *Server) putFile(w http.ResponseWriter, r *http.Request, req route.Request) {
	created, err := s.receiveFile(r, req)
	if err != nil {
		s.answer(w, r, string(req.Kind)+" upload", err)
		return
	}
	s.ok(w, created)
}

func (s *Server) receiveFile(r *http.Request, req route.Request) (bool, error) {
	ctx := r.Context()
	spec := fileSpecs[req.Kind]
	what := string(req.Kind)
	enc, err := uploadEncoding(r)
	if err != nil {
		return false, err
	}
	data, err := readSmallBody(r, spec.max, what)
	if err != nil {
		return false, err
	}
	s.metrics.uploadBytes.WithLabelValues(what).Add(float64(len(data)))
	plain, err := decodeUpload(data, enc, spec.max, what)
	if err != nil {
		return false, err
	}
	needs, mustOwn, err := spec.check(plain, req)
	if err != nil {
		return false, badRequest("invalid %s: %v", what, err)
	}
	if mustOwn != "" {
		// Only the pushing flake's own paths are asked about: whether
		// another flake holds the output changes nothing.
		missing, err := s.idx.MissingPaths(ctx, req.Flake, []string{mustOwn[:nixname.StoreHashLen]})
		if err != nil {
			return false, fmt.Errorf("look up output path %s of %s: %w", mustOwn, req.Flake, err)
		}
		if len(missing) > 0 {
			return false, badRequest("output path %s/%s of %s %s is not in %s: push it first", nixcache.StoreDir, mustOwn, what, req.Hash, req.Flake)
		}
	}
	f := index.File{Kind: spec.kind, Key: req.Hash, Needs: needs, Encoding: enc, Data: data}
	if !spec.kind.KeepsFirst() {
		if err := s.idx.PutFile(ctx, req.Flake, f); err != nil {
			return false, fmt.Errorf("record %s %s: %w", what, req.Hash, err)
		}
		return true, nil
	}
	// A realisation is what an output is: the flake's first stays, as its
	// first narinfo of a path does; a re-push of the same output is 200,
	// another output 409. Only the flake's own record is read.
	unlock := s.lockPath(req.Flake, string(spec.kind)+"/"+req.Hash)
	defer unlock()
	have, err := s.idx.GetFile(ctx, req.Flake, spec.kind, req.Hash)
	switch {
	case err == nil:
		return false, sameOutput(req, have, needs)
	case !errors.Is(err, index.ErrNotFound):
		return false, fmt.Errorf("look up %s %s of %s: %w", what, req.Hash, req.Flake, err)
	}
	if err := s.idx.PutFile(ctx, req.Flake, f); err != nil {
		return false, fmt.Errorf("record %s %s: %w", what, req.Hash, err)
	}
	stored, err := s.idx.GetFile(ctx, req.Flake, spec.kind, req.Hash)
	if err != nil {
		return false, fmt.Errorf("read back %s %s of %s: %w", what, req.Hash, req.Flake, err)
	}
	if err := sameOutput(req, stored, needs); err != nil {
		return false, err
	}
	return bytes.Equal(stored.Data, data), nil
}

// sameOutput answers a realisation upload for an output the flake already
// has: nil for the same output path (by hash), 409 for another.
func sameOutput(req route.Request, have index.File, needs string) error {
	if have.Needs == needs {
		return nil
	}
	return &uploadError{status: http.StatusConflict, msg: fmt.Sprintf(
		"%s %s is already in %s with output path hash %s, yours is %s: the build is not reproducible",
		req.Kind, req.Hash, req.Flake, have.Needs, needs)}
}

func (s *Server) serveFile(w http.ResponseWriter, r *http.Request, req route.Request) {
	spec := fileSpecs[req.Kind]
	var f index.File
	var err error
	if req.Flake.IsZero() {
		f, err = s.unionFile(r, spec.kind, req.Hash)
	} else {
		f, err = s.idx.GetFile(r.Context(), req.Flake, spec.kind, req.Hash)
	}
	if errors.Is(err, index.ErrNotFound) {
		s.notFound(w)
		return
	}
	if err != nil {
		s.internalError(w, r, "looking up the "+string(req.Kind), err)
		return
	}
	s.serveEncoded(w, r, f.Data, f.Encoding, contentTypeJSON, cacheFile, f.CreatedAt)
}

// unionOwners returns the flakes a union read of an object of kind and key
// may be served from, sorted: its owners (index.Owners) that are readable
// (route.ReadableHeader; all without the header, on a server without a
// gate). None is index.ErrNotFound.
func (s *Server) unionOwners(r *http.Request, kind index.Kind, key string) ([]nixname.Flake, error) {
	readable, err := s.readableFlakes(r)
	if err != nil {
		return nil, err
	}
	owners, err := s.idx.Owners(r.Context(), kind, key)
	if err != nil {
		return nil, err
	}
	if readable != nil {
		owners = slices.DeleteFunc(owners, func(f nixname.Flake) bool { return !slices.Contains(readable, f) })
	}
	if len(owners) == 0 {
		return nil, fmt.Errorf("%s %s in the union view: %w", kind, key, index.ErrNotFound)
	}
	return owners, nil
}

// unionFile returns what the union view serves for a file: the first
// readable owner's (by flake name), when every readable owner's says the
// same (fileContent); otherwise the file is answered as absent and the
// conflict logged and counted, as for narinfos: a pusher of one flake
// cannot make a reader of several get its listing or output instead of
// another flake's.
func (s *Server) unionFile(r *http.Request, kind index.Kind, key string) (index.File, error) {
	owners, err := s.unionOwners(r, kind, key)
	if err != nil {
		return index.File{}, err
	}
	var first index.File
	var firstContent string
	for i, o := range owners {
		f, err := s.idx.GetFile(r.Context(), o, kind, key)
		if errors.Is(err, index.ErrNotFound) && i > 0 {
			continue // gone since Owners
		}
		if err != nil {
			return index.File{}, err
		}
		content, err := s.fileContent(r, f)
		if err != nil {
			return index.File{}, err
		}
		if i == 0 {
			first, firstContent = f, content
			continue
		}
		if content != firstContent {
			s.metrics.unionConflicts.Inc()
			s.log.WarnContext(r.Context(), "union view: flakes the caller may read hold different files; answering 404",
				"kind", string(kind), "key", key, "flakes", []string{first.Flake.String(), o.String()},
				"subject", r.Header.Get(route.SubjectHeader))
			return index.File{}, fmt.Errorf("%s %s in the union view: conflicting contents: %w", kind, key, index.ErrNotFound)
		}
	}
	return first, nil
}

// fileContent is what two flakes' files of one key must share to agree in
// the union view: the output path's hash for a realisation or build trace
// entry (signatures may differ), the NarHash of the NAR a debug info link
// names (the NAR file and its compression may differ), the decoded
// listing (its encoding may differ).
func (s *Server) fileContent(r *http.Request, f index.File) (string, error) {
	switch f.Kind {
	case nixname.KindDebugInfo:
		n, err := s.idx.GetNar(r.Context(), f.Flake, f.Needs)
		if err != nil {
			return "", fmt.Errorf("NAR %s of debug info %s of %s: %w", f.Needs, f.Key, f.Flake, err)
		}
		return n.NarHash, nil
	case nixname.KindListing:
		plain, err := nixcache.Decode(f.Encoding, f.Data, nixcache.MaxListingSize)
		if err != nil {
			return "", fmt.Errorf("decode listing %s of %s: %w", f.Key, f.Flake, err)
		}
		return string(plain), nil
	}
	return f.Needs, nil
}

// serveEncoded serves data stored with Content-Encoding enc: as stored
// when the client accepts enc (nixcache.Accepts: Nix 2.35's curl lists
// what it decodes, Nix 2.8 sends no Accept-Encoding and decodes what it
// gets), decoded otherwise. Range, HEAD and conditional requests apply
// to what is sent.
func (s *Server) serveEncoded(w http.ResponseWriter, r *http.Request, data []byte, enc, contentType, cacheControl string, modTime time.Time) {
	h := w.Header()
	ae, present := r.Header["Accept-Encoding"]
	if enc != "" {
		h.Set("Vary", "Accept-Encoding")
		if nixcache.Accepts(strings.Join(ae, ","), present, enc) {
			h.Set("Content-Encoding", enc)
		} else {
			plain, err := nixcache.Decode(enc, data, nixcache.MaxListingSize)
			if err != nil {
				s.internalError(w, r, "decoding a stored "+enc+" file", err)
				return
			}
			data = plain
		}
	}
	h.Set("Content-Type", contentType)
	h.Set("Cache-Control", cacheControl)
	http.ServeContent(w, r, "", modTime, bytes.NewReader(data))
}

// decodeFailure is why an encoded upload does not decode (decodeChecker).
type decodeFailure struct{ err error }

func (e *decodeFailure) Error() string { return e.err.Error() }
func (e *decodeFailure) Unwrap() error { return e.err }

// errDecodeStopped ends a decodeChecker whose upload failed for another
// reason (stop): its verdict is not needed.
var errDecodeStopped = errors.New("decoding stopped: the upload failed")

// decodeChecker decodes, in the background, what is written to it from a
// Content-Encoding, refusing more than max decoded bytes and, with ratio
// > 0, more than ratio × the encoded bytes it has read plus
// nixcache.ExpansionFloor (nixcache.Expands, the rule of compressed NARs):
// a build log uploaded with log-compression is stored as uploaded and
// streamed through it, so that a log that does not decode, or a
// decompression bomb, is refused before it is committed. The encoded
// count is what the decoder has read, so a bomb (a few hundred bytes of
// bzip2 that decode to GiBs) is stopped after about ratio × its size
// instead of decoding to max. A Write after the decoder failed returns a
// *decodeFailure.
//
// Hand-written rather than an io.LimitReader over the decoder: the limit
// moves with the input, and the loop also checks stop between reads, so
// that a failed upload does not go on decoding what it had sent.
type decodeChecker struct {
	pw      *io.PipeWriter
	done    chan error
	stopped atomic.Bool
	what    string
	// decoded is the decoded byte count, for tests (written by the
	// decoding goroutine; read once done has been received).
	decoded int64
}

func newDecodeChecker(enc string, max, ratio int64, what string) *decodeChecker {
	pr, pw := io.Pipe()
	c := &decodeChecker{pw: pw, done: make(chan error, 1), what: what}
	go func() {
		err := c.run(enc, pr, max, ratio)
		if err != nil {
			err = &decodeFailure{err}
			pr.CloseWithError(err)
		}
		c.done <- err
	}()
	return c
}

// run decodes pr, checking the limits after every read of the decoder.
func (c *decodeChecker) run(enc string, pr *io.PipeReader, max, ratio int64) error {
	in := &byteCounter{r: pr}
	dec, err := nixcache.NewDecoder(enc, in)
	if err != nil {
		return err
	}
	defer dec.Close()
	buf := make([]byte, 32<<10)
	for {
		if c.stopped.Load() {
			return errDecodeStopped
		}
		n, err := dec.Read(buf)
		c.decoded += int64(n)
		if c.decoded > max {
			return &uploadError{status: http.StatusRequestEntityTooLarge, msg: fmt.Sprintf(
				"%s decodes to more than %d bytes, the limit", c.what, max)}
		}
		// in.n is read in this goroutine, the one the decoder reads it in.
		if nixcache.Expands(c.decoded, in.n, ratio) {
			return &uploadError{status: http.StatusRequestEntityTooLarge, msg: fmt.Sprintf(
				"%s decodes to more than %d times its encoded size (over %d bytes from the first %d bytes of %s), the limit",
				c.what, ratio, c.decoded, in.n, enc)}
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			if c.stopped.Load() {
				return errDecodeStopped
			}
			return fmt.Errorf("%w: %s: %v", nixcache.ErrEncoding, enc, err)
		}
	}
	_, err = io.Copy(io.Discard, pr) // what follows the encoded stream is ignored, as decoders do
	return err
}

func (c *decodeChecker) Write(p []byte) (int, error) { return c.pw.Write(p) }

// stop makes the decoder give up at its next read: the upload failed, so
// what it sent need not be decoded to the end (a bomb's would be, long
// after the client left).
func (c *decodeChecker) stop() {
	c.stopped.Store(true)
	c.pw.CloseWithError(errDecodeStopped)
}

// finish ends the input and returns the decoder's verdict.
func (c *decodeChecker) finish() error {
	c.pw.Close()
	return <-c.done
}

// decodeError maps a decodeChecker failure to the client's answer: the
// checker's own 413s as they are, 400 for data that does not decode.
func decodeError(err error, what string) error {
	var ue *uploadError
	if errors.As(err, &ue) {
		return ue
	}
	return badRequest("invalid %s: %v", what, err)
}

// byteCounter counts the bytes read through it.
type byteCounter struct {
	r io.Reader
	n int64
}

func (b *byteCounter) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	b.n += int64(n)
	return n, err
}
