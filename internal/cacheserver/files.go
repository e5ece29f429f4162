package cacheserver

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"

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
	// check validates the decoded bytes of the file req names, read from
	// plain (at most max of them; a read error is the decoder's), and
	// returns what it learnt.
	check func(plain io.Reader, req route.Request) (checkedFile, error)
}

// checkedFile is what the server learns of a file by checking it.
type checkedFile struct {
	// needs is what the file needs the flake to own (index.File.Needs).
	needs string
	// mustOwn is the store path base name whose narinfo the flake must
	// already hold, under that very name, at upload ("" for none).
	mustOwn string
	// digest is what the union view compares (index.File.Digest).
	digest string
}

var fileSpecs = map[route.Kind]fileSpec{
	route.KindListing: {nixname.KindListing, nixcache.MaxListingSize, func(plain io.Reader, req route.Request) (checkedFile, error) {
		// Nix uploads the listing before the NAR and the narinfo
		// (BinaryCacheStore::uploadData), so the narinfo cannot be asked
		// for here: the listing is served once the flake has it. It is
		// checked as a stream (nixcache.ReadListing) and its digest taken
		// on the way: it may decode to MaxListingSize.
		h := sha256.New()
		if err := nixcache.ReadListing(io.TeeReader(plain, h)); err != nil {
			return checkedFile{}, err
		}
		return checkedFile{needs: req.Hash, digest: sha256Digest(h)}, nil
	}},
	route.KindDebugInfo: {nixname.KindDebugInfo, nixcache.MaxSmallFileSize, func(plain io.Reader, req route.Request) (checkedFile, error) {
		data, err := io.ReadAll(plain)
		if err != nil {
			return checkedFile{}, err
		}
		// Uploaded before its NAR, too: served once the flake owns it.
		// Two flakes' links agree when their NARs have the same NarHash
		// (fileContent), which is not known here: no digest.
		file, err := nixcache.CheckDebugInfo(data, req.Hash)
		return checkedFile{needs: file}, err
	}},
	route.KindRealisation: {nixname.KindRealisation, nixcache.MaxSmallFileSize, func(plain io.Reader, req route.Request) (checkedFile, error) {
		data, err := io.ReadAll(plain)
		if err != nil {
			return checkedFile{}, err
		}
		out, err := nixcache.ParseRealisation(data, req.Hash)
		if err != nil {
			return checkedFile{}, err
		}
		return checkedFile{needs: out.OutPath[:nixname.StoreHashLen], mustOwn: out.OutPath, digest: out.Agreement()}, nil
	}},
	route.KindBuildTrace: {nixname.KindBuildTrace, nixcache.MaxSmallFileSize, func(plain io.Reader, req route.Request) (checkedFile, error) {
		data, err := io.ReadAll(plain)
		if err != nil {
			return checkedFile{}, err
		}
		out, err := nixcache.ParseBuildTrace(data)
		if err != nil {
			return checkedFile{}, err
		}
		return checkedFile{needs: out.OutPath[:nixname.StoreHashLen], mustOwn: out.OutPath, digest: out.Agreement()}, nil
	}},
}

// specOf returns the fileSpec of a File kind.
func specOf(kind index.Kind) (route.Kind, fileSpec) {
	for k, spec := range fileSpecs {
		if spec.kind == kind {
			return k, spec
		}
	}
	panic("cacheserver: no fileSpec for " + string(kind))
}

func sha256Digest(h hash.Hash) string { return "sha256:" + hex.EncodeToString(h.Sum(nil)) }

// countingReader counts the bytes read through it and keeps the first read
// error: checkFile reads a file's decoded bytes through it, so that the
// decoder's error (too large, does not decode) is answered as such
// whatever the check made of it; decodeChecker counts the encoded bytes
// its decoder has read.
type countingReader struct {
	r   io.Reader
	n   int64
	err error
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	if err != nil && err != io.EOF && c.err == nil {
		c.err = err
	}
	return n, err
}

// checkFile decodes data from enc as a stream, at most spec.max bytes,
// and checks it (spec.check): what the check learnt and the decoded size,
// or the client's answer: 413 beyond spec.max, 400 for data that does not
// decode or is not a valid file of the kind.
func checkFile(data []byte, enc string, spec fileSpec, req route.Request) (checkedFile, int64, error) {
	what := string(req.Kind)
	dec, err := nixcache.NewLimitedDecoder(enc, bytes.NewReader(data), spec.max)
	if errors.Is(err, nixcache.ErrDecoderMemory) {
		return checkedFile{}, 0, decoderBusy(err)
	}
	if err != nil {
		return checkedFile{}, 0, badRequest("invalid %s: Content-Encoding %s: %v", what, enc, err)
	}
	defer dec.Close()
	plain := &countingReader{r: dec}
	c, err := spec.check(plain, req)
	if err == nil {
		// The checks refuse data after the JSON value, so this reads
		// nothing but the decoder's end (and any error there).
		_, err = io.Copy(io.Discard, plain)
	}
	if plain.err != nil {
		err = plain.err
	}
	switch {
	case errors.Is(err, nixcache.ErrTooLarge):
		return checkedFile{}, 0, &uploadError{status: http.StatusRequestEntityTooLarge, msg: fmt.Sprintf("%s decodes to more than %d bytes", what, spec.max)}
	case errors.Is(err, nixcache.ErrEncoding):
		return checkedFile{}, 0, badRequest("invalid %s: Content-Encoding %s: %v", what, enc, err)
	case err != nil:
		return checkedFile{}, 0, badRequest("invalid %s: %v", what, err)
	}
	return c, plain.n, nil
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
	if errors.Is(err, nixcache.ErrDecoderMemory) {
		return nil, decoderBusy(err)
	}
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
	c, size, err := checkFile(data, enc, spec, req)
	if err != nil {
		return false, err
	}
	if c.mustOwn != "" {
		// The flake's own narinfo of the output, under the output's very
		// name: a realisation naming the flake's path of that hash under
		// another name names what the flake does not hold. Whether
		// another flake holds the output changes nothing.
		p, err := s.idx.GetPath(ctx, req.Flake, c.mustOwn[:nixname.StoreHashLen])
		switch {
		case errors.Is(err, index.ErrNotFound):
			return false, badRequest("output path %s/%s of %s %s is not in %s: push it first", nixcache.StoreDir, c.mustOwn, what, req.Hash, req.Flake)
		case err != nil:
			return false, fmt.Errorf("look up output path %s of %s: %w", c.mustOwn, req.Flake, err)
		case p.StorePath != nixcache.StoreDir+"/"+c.mustOwn:
			return false, badRequest("output path %s/%s of %s %s is not in %s, which holds %s under that hash", nixcache.StoreDir, c.mustOwn, what, req.Hash, req.Flake, p.StorePath)
		}
	}
	f := index.File{Kind: spec.kind, Key: req.Hash, Needs: c.needs, Encoding: enc, Data: data, Digest: c.digest, Size: size}
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
		return false, sameOutput(req, spec, have, c)
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
	if err := sameOutput(req, spec, stored, c); err != nil {
		return false, err
	}
	return bytes.Equal(stored.Data, data), nil
}

// sameOutput answers a realisation upload for an output the flake already
// has: nil for the same output path (hash and name; signatures and
// dependent realisations may differ, the first is kept as it is), 409 for
// another.
func sameOutput(req route.Request, spec fileSpec, have index.File, c checkedFile) error {
	had, _, err := checkFile(have.Data, have.Encoding, spec, req)
	if err != nil {
		// Checked at its upload: a stored file that no longer passes is
		// the server's failure (500), not the client's.
		return fmt.Errorf("read the stored %s %s of %s: %v", req.Kind, req.Hash, req.Flake, err)
	}
	if had.mustOwn == c.mustOwn {
		return nil
	}
	return &uploadError{status: http.StatusConflict, msg: fmt.Sprintf(
		"%s %s is already in %s with output path %s/%s, yours is %s/%s: the build is not reproducible",
		req.Kind, req.Hash, req.Flake, nixcache.StoreDir, had.mustOwn, nixcache.StoreDir, c.mustOwn)}
}

func (s *Server) serveFile(w http.ResponseWriter, r *http.Request, req route.Request) {
	spec := fileSpecs[req.Kind]
	var f index.File
	var err error
	if req.Flake.IsZero() {
		f, err = s.unionFile(r, spec.kind, req.Hash)
	} else {
		f, err = s.idx.GetFile(r.Context(), req.Flake, spec.kind, req.Hash)
		if err == nil {
			err = s.completeFile(r.Context(), &f)
		}
	}
	if errors.Is(err, index.ErrNotFound) {
		s.notFound(w)
		return
	}
	if err != nil {
		s.internalError(w, r, "looking up the "+string(req.Kind), err)
		return
	}
	s.serveEncoded(w, r, f, contentTypeJSON, cacheFile)
}

// completeFile fills in the Digest and Size of a file recorded before the
// server stored them (Size -1), from its data: decoded as a stream and
// hashed for a listing (checked at its upload), checked again for the
// small kinds. They are stored (index.FileDigestUpdater), so that this
// happens on the first read of such a file, not on every one.
func (s *Server) completeFile(ctx context.Context, f *index.File) error {
	if f.Size >= 0 {
		return nil
	}
	k, spec := specOf(f.Kind)
	if f.Kind == nixname.KindListing {
		spec.check = func(plain io.Reader, _ route.Request) (checkedFile, error) {
			h := sha256.New()
			if _, err := io.Copy(h, plain); err != nil {
				return checkedFile{}, err
			}
			return checkedFile{digest: sha256Digest(h)}, nil
		}
	}
	c, size, err := checkFile(f.Data, f.Encoding, spec, route.Request{Kind: k, Flake: f.Flake, Hash: f.Key})
	if err != nil {
		// Checked at its upload: the server's failure, not the client's.
		return fmt.Errorf("digest of the stored %s %s of %s: %v", f.Kind, f.Key, f.Flake, err)
	}
	if u, ok := s.idx.(index.FileDigestUpdater); ok {
		if err := u.UpdateFileDigest(ctx, f.Flake, f.Kind, f.Key, f.CreatedAt, c.digest, size); err != nil {
			s.log.WarnContext(ctx, "store the digest of a file recorded before digests were; it is computed again on its next read",
				"kind", string(f.Kind), "key", f.Key, "flake", f.Flake.String(), "err", err)
		}
	}
	f.Digest, f.Size = c.digest, size
	return nil
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
		if err == nil {
			err = s.completeFile(r.Context(), &f)
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
// the union view: the NarHash of the NAR a debug info link names (the NAR
// file and its compression may differ), else the digest taken at upload
// (index.File.Digest; completeFile for older files): of the decoded
// listing (its encoding may differ), of a realisation's or build trace
// entry's output path, hash and name, and dependent realisations
// (signatures may differ: nixcache.Realisation.Agreement). Comparing
// stored digests costs a union read nothing per owner; decoding each
// owner's listing cost up to MaxListingSize each (adversarial review r4).
func (s *Server) fileContent(r *http.Request, f index.File) (string, error) {
	if f.Kind == nixname.KindDebugInfo {
		n, err := s.idx.GetNar(r.Context(), f.Flake, f.Needs)
		if err != nil {
			return "", fmt.Errorf("NAR %s of debug info %s of %s: %w", f.Needs, f.Key, f.Flake, err)
		}
		return n.NarHash, nil
	}
	return f.Digest, nil
}

// serveEncoded serves a file stored with its upload's Content-Encoding: as
// stored when the client accepts it (nixcache.Accepts: Nix 2.35's curl
// lists what it decodes, Nix 2.8 sends no Accept-Encoding and decodes
// what it gets), decoded otherwise, as a stream (decodedContent): only
// what is sent is decoded, and the decoded file is never held. Range,
// HEAD and conditional requests apply to what is sent.
func (s *Server) serveEncoded(w http.ResponseWriter, r *http.Request, f index.File, contentType, cacheControl string) {
	h := w.Header()
	var content io.ReadSeeker = bytes.NewReader(f.Data)
	if f.Encoding != "" {
		h.Set("Vary", "Accept-Encoding")
		ae, present := r.Header["Accept-Encoding"]
		if nixcache.Accepts(strings.Join(ae, ","), present, f.Encoding) {
			h.Set("Content-Encoding", f.Encoding)
		} else {
			// One range at most: http.ServeContent answers several with a
			// goroutine that reads the content after it returns when the
			// client hangs up (this decoder would be back in its pool:
			// a crash), and a decoder would start over for each range
			// (review of the fixes, 2026-12-05). The whole file, 200, is a
			// valid answer to any Range.
			if rg := r.Header.Get("Range"); strings.Contains(rg, ",") {
				r.Header.Del("Range")
			}
			dc := &decodedContent{enc: f.Encoding, data: f.Data, size: f.Size, owner: decoderOwner(r, f.Flake), done: r.Context().Done()}
			defer dc.Close()
			// A stream whose header does not decode fails here, before
			// anything is sent; later failures cut the response (logged
			// below).
			if err := dc.start(); err != nil {
				s.decodeFailed(w, r, "decoding a stored "+f.Encoding+" file", err) // plainHeader drops Vary
				return
			}
			content = dc
			defer func() {
				if dc.err != nil {
					s.log.WarnContext(r.Context(), "serving a decoded file failed", "kind", string(f.Kind), "key", f.Key,
						"flake", f.Flake.String(), "encoding", f.Encoding, "err", dc.err)
				}
			}()
		}
	}
	h.Set("Content-Type", contentType)
	h.Set("Cache-Control", cacheControl)
	http.ServeContent(w, r, "", f.CreatedAt, content)
}

// decodedContent is a stored encoded file as the io.ReadSeeker of its
// decoded bytes that http.ServeContent reads, decoding only what is read:
// a HEAD decodes nothing, a Range of the first bytes those bytes, a whole
// GET streams through one decoder. Its size is the decoded size recorded
// at upload (index.File.Size), so ServeContent's Seek to the end decodes
// nothing; a Range further on decodes (and discards) what comes before,
// and a Seek back (a multi-range request) starts the decoder again.
// Hand-written: ServeContent needs a ReadSeeker, decoders only read.
type decodedContent struct {
	enc   string
	data  []byte
	size  int64
	owner string          // nixcache.DecoderOwner
	done  <-chan struct{} // nixcache.DecoderDone: the request's end
	off   int64           // where the next Read reads
	dec   io.ReadCloser   // nil until start; positioned at pos
	pos   int64
	err   error // the first decoding failure, for the log
}

// start (re)starts the decoder at the beginning of the data.
func (d *decodedContent) start() error {
	if d.dec != nil {
		d.dec.Close()
		d.dec = nil
	}
	dec, err := nixcache.NewDecoder(d.enc, bytes.NewReader(d.data), nixcache.DecoderOwner(d.owner), nixcache.DecoderDone(d.done))
	if err != nil {
		return err
	}
	d.dec, d.pos = dec, 0
	return nil
}

func (d *decodedContent) Seek(offset int64, whence int) (int64, error) {
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		offset += d.off
	case io.SeekEnd:
		offset += d.size
	default:
		return 0, errors.New("decodedContent.Seek: invalid whence")
	}
	if offset < 0 {
		return 0, errors.New("decodedContent.Seek: negative position")
	}
	d.off = offset
	return offset, nil
}

func (d *decodedContent) Read(p []byte) (n int, err error) {
	defer func() {
		if err != nil && err != io.EOF && d.err == nil {
			d.err = err
		}
	}()
	if d.off >= d.size {
		return 0, io.EOF
	}
	if d.dec == nil || d.pos > d.off {
		if err := d.start(); err != nil {
			return 0, err
		}
	}
	if d.pos < d.off {
		skipped, err := io.CopyN(io.Discard, d.dec, d.off-d.pos)
		d.pos += skipped
		if err != nil {
			return 0, fmt.Errorf("decode %s up to byte %d of %d: %w", d.enc, d.off, d.size, err)
		}
	}
	p = p[:min(int64(len(p)), d.size-d.off)]
	n, err = d.dec.Read(p)
	d.pos += int64(n)
	d.off += int64(n)
	if err == io.EOF && d.off < d.size {
		err = fmt.Errorf("decode %s: %d bytes, %d recorded at upload: %w", d.enc, d.off, d.size, io.ErrUnexpectedEOF)
	} else if err != nil && err != io.EOF {
		err = fmt.Errorf("decode %s: %w", d.enc, err)
	}
	return n, err
}

// Close returns the decoder (to its pool).
func (d *decodedContent) Close() error {
	if d.dec != nil {
		return d.dec.Close()
	}
	return nil
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
	pw       *io.PipeWriter
	done     chan error
	stopping chan struct{} // closed by stop: the decoding and any wait for decoder memory end
	stopOnce sync.Once
	what     string
	// decoded is the decoded byte count, for tests (written by the
	// decoding goroutine; read once done has been received).
	decoded int64
}

func newDecodeChecker(enc string, max, ratio int64, what, owner string) *decodeChecker {
	pr, pw := io.Pipe()
	c := &decodeChecker{pw: pw, done: make(chan error, 1), what: what, stopping: make(chan struct{})}
	go func() {
		err := c.run(enc, pr, max, ratio, nixcache.DecoderOwner(owner), nixcache.DecoderDone(c.stopping))
		if err != nil {
			err = &decodeFailure{err}
			pr.CloseWithError(err)
		}
		c.done <- err
	}()
	return c
}

// run decodes pr, checking the limits after every read of the decoder.
func (c *decodeChecker) run(enc string, pr *io.PipeReader, max, ratio int64, opts ...nixcache.DecoderOption) error {
	in := &countingReader{r: pr}
	dec, err := nixcache.NewDecoder(enc, in, opts...)
	if err != nil {
		return err
	}
	defer dec.Close()
	buf := make([]byte, 32<<10)
	for {
		if c.stopped() {
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
			if c.stopped() {
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
	c.stopOnce.Do(func() { close(c.stopping) })
	c.pw.CloseWithError(errDecodeStopped)
}

// stopped reports whether stop was called.
func (c *decodeChecker) stopped() bool {
	select {
	case <-c.stopping:
		return true
	default:
		return false
	}
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
	if errors.Is(err, nixcache.ErrDecoderMemory) {
		return decoderBusy(err)
	}
	return badRequest("invalid %s: %v", what, err)
}
