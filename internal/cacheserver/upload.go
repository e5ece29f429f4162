package cacheserver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nix-community/go-nix/pkg/nixbase32"

	"github.com/flakegate/flakegate/internal/abandon"
	"github.com/flakegate/flakegate/internal/blob"
	"github.com/flakegate/flakegate/internal/index"
	"github.com/flakegate/flakegate/internal/nixcache"
	"github.com/flakegate/flakegate/internal/nixname"
	"github.com/flakegate/flakegate/internal/route"
)

var copyBufs = sync.Pool{New: func() any { b := make([]byte, 256<<10); return &b }}

// uploadError is a rejected upload: status and a message for the client.
type uploadError struct {
	status int
	msg    string
	// unread: the rest of the request body was not read; the answer must
	// go out at once and close the connection (abandon.Body).
	unread bool
	// retryAfter, when set, is sent as Retry-After (seconds).
	retryAfter string
}

// collecting answers an upload of a NAR file a garbage collection is
// deleting right now: 503, retried by Nix; the next attempt stores it anew.
func collecting(what string) error {
	return &uploadError{status: http.StatusServiceUnavailable, retryAfter: "5",
		msg: what + " is being deleted by a garbage collection: try again in a few seconds"}
}

func (e *uploadError) Error() string { return e.msg }

// decoderBusy answers a stream the decoder memory budget cannot cover now
// (nixcache.ErrDecoderMemory): 503, which Nix retries.
func decoderBusy(err error) error {
	return &uploadError{status: http.StatusServiceUnavailable, retryAfter: "1", unread: true, msg: err.Error()}
}

// verifierError is the client's answer to a Verifier's refusal of what
// was uploaded: 413 beyond a size or expansion bound, 503 when the decoder
// memory is in use, 400 otherwise.
func verifierError(err error, what string) error {
	switch {
	case errors.Is(err, nixcache.ErrTooLarge):
		return &uploadError{status: http.StatusRequestEntityTooLarge, msg: err.Error()}
	case errors.Is(err, nixcache.ErrDecoderMemory):
		return decoderBusy(err)
	}
	return badRequest("invalid %s: %v", what, err)
}

func badRequest(format string, args ...any) error {
	return &uploadError{status: http.StatusBadRequest, msg: fmt.Sprintf(format, args...)}
}

func tooLarge(limit int64, what string) error {
	return &uploadError{status: http.StatusRequestEntityTooLarge, msg: fmt.Sprintf("%s exceeds the limit of %d bytes", what, limit), unread: true}
}

// answer writes the response for an upload error: the client's message for
// an uploadError, a logged 500 otherwise.
func (s *Server) answer(w http.ResponseWriter, r *http.Request, what string, err error) {
	var ue *uploadError
	if errors.As(err, &ue) {
		s.metrics.rejected.WithLabelValues(strings.Fields(what)[0]).Inc()
		s.log.InfoContext(r.Context(), "upload rejected", "path", route.LogPath(r.URL.Path), "status", ue.status, "reason", ue.msg)
		if ue.unread {
			abandon.Body(w, r)
		}
		if ue.retryAfter != "" {
			w.Header().Set("Retry-After", ue.retryAfter)
		}
		s.fail(w, ue.status, ue.msg)
		return
	}
	s.internalError(w, r, what, err)
}

// stream copies body to dst (may be nil) and v, mapping failures: a body
// over limit → 413, a client that went away or stalled → 400, an upload
// over dl's time bound or below its minimum rate → 408, data the verifier
// refuses → 400/413, a storage write error → plain error (500). After a
// failure the answer goes out at once and the connection is closed
// (dl.abandon): nothing more of the body is read.
func stream(body io.Reader, dst io.Writer, v *nixcache.Verifier, limit int64, what string, dl *idleDeadline) (total int64, err error) {
	if dl != nil {
		dl.what = what
		defer func() {
			if err != nil {
				dl.abandon()
			}
		}()
	}
	// With a verifier each read gets its own buffer, handed to the
	// verifier after the storage write (no copy); without, one buffer.
	var bp *[]byte
	if v == nil {
		bp = copyBufs.Get().(*[]byte)
		defer copyBufs.Put(bp)
	}
	for {
		if err := dl.check(total); err != nil {
			return total, err
		}
		if v != nil {
			bp = nixcache.NewBuffer()
		}
		buf := *bp
		n, rerr := body.Read(buf)
		dl.readDone()
		if n > 0 {
			total += int64(n)
			if dst != nil {
				if _, err := dst.Write(buf[:n]); err != nil {
					if v != nil {
						v.WriteBuffer(bp, 0)
					}
					return total, fmt.Errorf("write %s to storage: %w", what, err)
				}
			}
		}
		if v != nil {
			if err := v.WriteBuffer(bp, n); err != nil {
				return total, verifierError(err, what)
			}
		}
		if rerr == io.EOF {
			dl.clear()
			return total, nil
		}
		if rerr != nil {
			var mbe *http.MaxBytesError
			if errors.As(rerr, &mbe) {
				return total, tooLarge(limit, what)
			}
			if err := dl.readError(total); err != nil {
				return total, err
			}
			return total, badRequest("reading the %s upload failed after %d bytes: %v", what, total, rerr)
		}
	}
}

func (s *Server) putNar(w http.ResponseWriter, r *http.Request, req route.Request) {
	var held io.Closer
	defer func() {
		if held == nil {
			return
		}
		// The blob a commit replaced is freed only now, once the answer is
		// out (see receiveNar).
		_ = http.NewResponseController(w).Flush()
		if err := held.Close(); err != nil {
			s.log.WarnContext(r.Context(), "release replaced blob", "file", req.File, "err", err)
		}
	}()
	created, err := s.receiveNar(r, req, s.idleDeadline(w, r), &held)
	if err != nil {
		s.answer(w, r, "NAR upload", err)
		return
	}
	s.ok(w, created)
}

// okBody is the body of an accepted upload.
const okBody = "ok\n"

// ok answers an accepted upload. Content-Length is set so that the answer
// is the same whether or not putNar flushes it before its handler returns
// (a flushed answer without it goes out chunked).
func (s *Server) ok(w http.ResponseWriter, created bool) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Content-Length", strconv.Itoa(len(okBody)))
	if created {
		w.WriteHeader(http.StatusCreated)
	}
	io.WriteString(w, okBody)
}

// receiveNar streams a NAR upload to storage while verifying it, then
// records the flake's ownership. It reports whether the flake did not own
// the file before. When the commit replaced a file another upload stored,
// *held keeps it until the caller has answered (blob.Holder).
func (s *Server) receiveNar(r *http.Request, req route.Request, dl *idleDeadline, held *io.Closer) (bool, error) {
	ctx := r.Context()
	if r.ContentLength > s.maxNar {
		return false, tooLarge(s.maxNar, "NAR file")
	}
	key := "nar/" + req.File
	// The answer depends only on this flake's own state (201 when it did not
	// own the file before), and the bytes are received, verified and stored
	// even when another flake already stored the same file: committing over
	// a content-addressed key is allowed (blob.Writer), so neither the status
	// nor the work done reveals what other flakes pushed.
	owned := false
	if _, err := s.idx.GetNar(ctx, req.Flake, req.File); err == nil {
		owned = true
	} else if !errors.Is(err, index.ErrNotFound) {
		return false, fmt.Errorf("look up NAR %s of %s: %w", req.File, req.Flake, err)
	}

	v, err := nixcache.NewVerifier(req.Compression, s.maxNar, s.verifierOptions(r, req.Flake)...)
	if err != nil {
		return false, badRequest("%v", err)
	}
	bw, err := s.blob.Create(ctx)
	if err != nil {
		v.Abort()
		return false, fmt.Errorf("create blob: %w", err)
	}
	abort := func() {
		v.Abort()
		if err := bw.Abort(); err != nil {
			s.log.WarnContext(ctx, "abort blob write", "key", key, "err", err)
		}
	}
	body := http.MaxBytesReader(nil, r.Body, s.maxNar)
	n, err := stream(body, bw, v, s.maxNar, "NAR", dl)
	s.metrics.uploadBytes.WithLabelValues("nar").Add(float64(n))
	if err != nil {
		abort()
		return false, err
	}
	res, err := v.Finish()
	if err != nil {
		abort()
		return false, verifierError(err, "NAR")
	}
	if got := nixbase32.EncodeToString(res.FileHash); got != req.Hash {
		abort()
		return false, badRequest("NAR file hash mismatch: the URL names %s but the %d uploaded bytes hash to sha256:%s", req.File, res.FileSize, got)
	}
	rec := index.Nar{
		File: req.File, Compression: req.Compression,
		FileHash: nixcache.FormatHash(res.FileHash), FileSize: res.FileSize,
		NarHash: nixcache.FormatHash(res.NarHash), NarSize: res.NarSize,
	}
	// Claimed before the commit, so that no garbage collection deletes
	// the file after it (internal/gc, rule 4).
	var claim time.Time
	c, collectable := s.idx.(index.Collectable)
	if collectable {
		if claim, err = c.ClaimNar(ctx, rec); err != nil {
			abort()
			if errors.Is(err, index.ErrBusy) {
				return false, collecting("NAR " + req.File)
			}
			return false, fmt.Errorf("claim NAR %s: %w", req.File, err)
		}
	}
	// Committing over a file another flake stored frees the old one's
	// blocks (+120-220 ms for 256 MiB on ext4): held open, it is freed
	// after the answer instead, whose time then does not tell whether the
	// file existed.
	if h, ok := s.blob.(blob.Holder); ok {
		c, err := h.Hold(key)
		if err != nil {
			abort()
			return false, err
		}
		*held = c
	}
	if err := bw.Commit(ctx, key); err != nil {
		return false, fmt.Errorf("commit blob %s: %w", key, err)
	}
	// Owned only if the claim is still there: a collection that forgot it
	// meanwhile may have deleted the blob just committed (index.Collectable
	// OwnClaimedNar); Nix pushes the NAR again after the 503.
	if collectable {
		err = c.OwnClaimedNar(ctx, req.Flake, rec, claim)
	} else {
		err = s.idx.PutNar(ctx, req.Flake, rec)
	}
	if err != nil {
		if errors.Is(err, index.ErrBusy) {
			return false, collecting("NAR " + req.File)
		}
		return false, fmt.Errorf("record NAR %s: %w", req.File, err)
	}
	return !owned, nil
}

func (s *Server) putNarInfo(w http.ResponseWriter, r *http.Request, req route.Request) {
	created, err := s.receiveNarInfo(r, req)
	if err != nil {
		s.answer(w, r, "narinfo upload", err)
		return
	}
	s.ok(w, created)
}

// maxListed bounds how many missing references an error message names.
const maxListed = 5

func (s *Server) receiveNarInfo(r *http.Request, req route.Request) (bool, error) {
	ctx := r.Context()
	// Nix's narinfo-compression uploads it with Content-Encoding; the
	// server renders and signs the narinfo it serves, so it keeps the
	// decoded text.
	enc, err := uploadEncoding(r)
	if err != nil {
		return false, err
	}
	data, err := readSmallBody(r, s.maxInfo, "narinfo")
	if err != nil {
		return false, err
	}
	if data, err = decodeUpload(data, enc, s.maxInfo, "narinfo"); err != nil {
		return false, err
	}
	ni, err := nixcache.ParseNarInfo(data)
	if err == nil {
		err = ni.CheckUpload()
	}
	if err != nil {
		return false, badRequest("invalid narinfo: %v", err)
	}
	if ni.Hash != req.Hash {
		return false, badRequest("narinfo StorePath %s does not match the URL's hash %s", ni.StorePath, req.Hash)
	}

	nar, err := s.idx.GetNar(ctx, req.Flake, ni.File)
	if errors.Is(err, index.ErrNotFound) {
		return false, badRequest("NAR %s was not uploaded to %s: upload it before its narinfo", ni.URL(), req.Flake)
	}
	if err != nil {
		return false, fmt.Errorf("look up NAR %s: %w", ni.File, err)
	}
	if err := matchNar(ni, nar); err != nil {
		return false, err
	}

	var refHashes []string
	byHash := map[string]string{}
	for _, ref := range ni.References {
		if ref == ni.Base() {
			continue
		}
		refHashes = append(refHashes, ref[:32])
		byHash[ref[:32]] = ref
	}
	missing, err := s.idx.MissingPaths(ctx, req.Flake, refHashes)
	if err != nil {
		return false, fmt.Errorf("check references: %w", err)
	}
	if len(missing) > 0 {
		var names []string
		for _, h := range missing[:min(len(missing), maxListed)] {
			names = append(names, nixcache.StoreDir+"/"+byHash[h])
		}
		more := ""
		if len(missing) > maxListed {
			more = fmt.Sprintf(" and %d more", len(missing)-maxListed)
		}
		return false, badRequest("reference %s%s of %s is not in %s: push references first", strings.Join(names, ", "), more, ni.StorePath, req.Flake)
	}

	text := s.keys.SignedNarInfo(ni)
	p := index.Path{
		Hash: ni.Hash, StorePath: ni.StorePath, NarFile: ni.File, NarHash: nixcache.FormatHash(ni.NarHash),
		References: ni.References, NarInfo: text, SignedBy: s.keys.ID(),
	}
	// Only this flake's record of the path is read or written: what other
	// flakes hold for it changes neither the status nor the body.
	unlock := s.lockPath(req.Flake, ni.Hash)
	defer unlock()
	// Once answered, this server serves the flake's record: whether this
	// upload recorded it, another server sharing the index did (a 200
	// here), or an error followed a commit, no "absent" cached before
	// stays.
	defer s.misses.forget(req.Flake, ni.Hash)
	existing, err := s.idx.GetPath(ctx, req.Flake, ni.Hash)
	switch {
	case err == nil:
		if err := sameContent(req.Flake, existing, p); err != nil {
			return false, err
		}
		// Pushed again: it counts as used (retention).
		if c, ok := s.idx.(index.Collectable); ok {
			if err := c.TouchPaths(ctx, req.Flake, []string{ni.Hash}, time.Now()); err != nil {
				s.log.WarnContext(ctx, "record a re-pushed path as used", "hash", ni.Hash, "flake", req.Flake.String(), "err", err)
			}
		}
		return false, nil
	case !errors.Is(err, index.ErrNotFound):
		return false, fmt.Errorf("look up path %s of %s: %w", ni.Hash, req.Flake, err)
	}
	if err := s.putPath(ctx, req.Flake, p); err != nil {
		if errors.Is(err, index.ErrNotHeld) {
			return false, badRequest("%s: its NAR or a reference left %s (garbage collected) while it was pushed: push it again", ni.StorePath, req.Flake)
		}
		return false, fmt.Errorf("record path %s: %w", ni.Hash, err)
	}
	// Another server sharing the index may have recorded the flake's path
	// between the look-up and the insert (the lock is per process); the
	// first record stays, so read back which one that is.
	stored, err := s.idx.GetPath(ctx, req.Flake, ni.Hash)
	if err != nil {
		return false, fmt.Errorf("read back path %s of %s: %w", ni.Hash, req.Flake, err)
	}
	if !stored.SameContent(p) {
		return false, sameContent(req.Flake, stored, p)
	}
	return string(stored.NarInfo) == string(p.NarInfo), nil
}

// putPath records a pushed path: with an index the garbage collector works
// on, checking in the same transaction that the flake still holds its NAR
// and references (internal/gc, rule 2).
func (s *Server) putPath(ctx context.Context, flake nixname.Flake, p index.Path) error {
	if c, ok := s.idx.(index.Collectable); ok {
		return c.AddPath(ctx, flake, p)
	}
	return s.idx.PutPath(ctx, flake, p)
}

// sameContent answers a narinfo upload for a path the flake already has:
// nil (200, idempotent) for the same contents, 409 for other contents (a
// non-reproducible rebuild): the flake's first content stays, as silently
// serving either would break "what a flake pushed is what it gets". Only
// the flake's own record is named.
func sameContent(flake nixname.Flake, have, pushed index.Path) error {
	if have.SameContent(pushed) {
		return nil
	}
	what := "NarHash " + have.NarHash + ", yours " + pushed.NarHash
	if have.NarHash == pushed.NarHash {
		what = "same NarHash, other references"
	}
	return &uploadError{status: http.StatusConflict, msg: fmt.Sprintf(
		"%s is already in %s with different contents (%s): the build is not reproducible",
		have.StorePath, flake, what)}
}

// matchNar checks the narinfo against what the server measured.
func matchNar(ni *nixcache.NarInfo, n index.Nar) error {
	type field struct {
		name, claimed, measured string
	}
	for _, f := range []field{
		{"Compression", string(ni.Compression), string(n.Compression)},
		{"FileHash", nixcache.FormatHash(ni.FileHash), n.FileHash},
		{"FileSize", fmt.Sprint(ni.FileSize), fmt.Sprint(n.FileSize)},
		{"NarHash", nixcache.FormatHash(ni.NarHash), n.NarHash},
		{"NarSize", fmt.Sprint(ni.NarSize), fmt.Sprint(n.NarSize)},
	} {
		if f.claimed != f.measured {
			return badRequest("narinfo %s %s does not match the uploaded NAR %s (%s)", f.name, f.claimed, ni.URL(), f.measured)
		}
	}
	return nil
}

func (s *Server) putLog(w http.ResponseWriter, r *http.Request, req route.Request) {
	err := s.receiveLog(r, req, s.idleDeadline(w, r))
	if err != nil {
		s.answer(w, r, "log upload", err)
		return
	}
	s.ok(w, true)
}

func (s *Server) receiveLog(r *http.Request, req route.Request, dl *idleDeadline) error {
	ctx := r.Context()
	enc, err := uploadEncoding(r)
	if err != nil {
		return err
	}
	if r.ContentLength > s.maxLog {
		return tooLarge(s.maxLog, "build log")
	}
	// The key names the encoding: two uploads of one derivation's log in
	// different encodings (or one whose record then fails) must not
	// overwrite the blob another record describes, or that record would
	// serve bytes of another encoding (TestFailedLogRecordLeavesTheOldLog).
	// Uploads in one encoding share the key: whichever commits last, its
	// record names the right encoding (nixname.LogBlobKey;
	// TestLogKeysOfEncodingsNeverCollide).
	key := nixname.LogBlobKey(req.Flake, enc, req.Hash)
	bw, err := s.blob.Create(ctx)
	if err != nil {
		return fmt.Errorf("create blob: %w", err)
	}
	// A log uploaded with Content-Encoding (log-compression) is stored as
	// uploaded; it must decode, to at most MaxLogSize bytes and within
	// the expansion ratio of compressed NARs (a decompression bomb is
	// stopped after about MaxExpansion times what was sent).
	var dst io.Writer = bw
	var check *decodeChecker
	if enc != "" {
		check = newDecodeChecker(enc, s.maxLog, s.limits.maxExpansion, "build log", decoderOwner(r, req.Flake))
		dst = io.MultiWriter(bw, check)
	}
	n, err := stream(http.MaxBytesReader(nil, r.Body, s.maxLog), dst, nil, s.maxLog, "build log", dl)
	s.metrics.uploadBytes.WithLabelValues("log").Add(float64(n))
	if check != nil {
		decodeFailed := errors.As(err, new(*decodeFailure))
		if err != nil && !decodeFailed {
			// The upload failed on its own (client gone, too slow, too
			// large): its verdict is moot, and the decoder must not go on
			// decoding what it had been sent.
			check.stop()
		}
		if cerr := check.finish(); cerr != nil {
			bw.Abort()
			if err == nil || decodeFailed {
				if dl != nil && err == nil {
					dl.abandon()
				}
				return decodeError(cerr, "build log")
			}
		}
	}
	if err != nil {
		bw.Abort()
		return err
	}
	// Claimed before the commit (the key is the flake's and the
	// derivation's: a new upload overwrites the old blob), so that no
	// garbage collection deletes the blob after it (internal/gc).
	if c, ok := s.idx.(index.Collectable); ok {
		if err := c.ClaimLog(ctx, req.Flake, req.Hash, time.Now()); err != nil {
			bw.Abort()
			if errors.Is(err, index.ErrBusy) {
				return collecting("build log " + req.Hash)
			}
			return fmt.Errorf("claim log %s: %w", req.Hash, err)
		}
	}
	if err := bw.Commit(ctx, key); err != nil {
		return fmt.Errorf("commit blob %s: %w", key, err)
	}
	if err := s.idx.PutLog(ctx, req.Flake, index.Log{Drv: req.Hash, BlobKey: key, Encoding: enc}); err != nil {
		if errors.Is(err, index.ErrBusy) {
			return collecting("build log " + req.Hash)
		}
		return fmt.Errorf("record log %s: %w", req.Hash, err)
	}
	// A log replaced by one in another encoding leaves its blob behind,
	// named by no record. Deleting it here could delete what a concurrent
	// upload in that encoding has just committed and recorded (an
	// acknowledged log lost); the collection that removes the log removes
	// every encoding's blob (internal/gc), while the record is doomed and
	// no upload of the log can commit.
	return nil
}
