package cacheserver

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/nix-community/go-nix/pkg/nixbase32"

	"github.com/flakegate/flakegate/internal/blob"
	"github.com/flakegate/flakegate/internal/index"
	"github.com/flakegate/flakegate/internal/nixcache"
	"github.com/flakegate/flakegate/internal/route"
)

var copyBufs = sync.Pool{New: func() any { b := make([]byte, 256<<10); return &b }}

// uploadError is a rejected upload: status and a message for the client.
type uploadError struct {
	status int
	msg    string
}

func (e *uploadError) Error() string { return e.msg }

func badRequest(format string, args ...any) error {
	return &uploadError{status: http.StatusBadRequest, msg: fmt.Sprintf(format, args...)}
}

func tooLarge(limit int64, what string) error {
	return &uploadError{status: http.StatusRequestEntityTooLarge, msg: fmt.Sprintf("%s exceeds the limit of %d bytes", what, limit)}
}

// answer writes the response for an upload error: the client's message for
// an uploadError, a logged 500 otherwise.
func (s *Server) answer(w http.ResponseWriter, r *http.Request, what string, err error) {
	var ue *uploadError
	if errors.As(err, &ue) {
		s.metrics.rejected.WithLabelValues(strings.Fields(what)[0]).Inc()
		s.log.InfoContext(r.Context(), "upload rejected", "path", r.URL.Path, "status", ue.status, "reason", ue.msg)
		s.fail(w, ue.status, ue.msg)
		return
	}
	s.internalError(w, r, what, err)
}

// idleDeadline pushes the connection's read deadline forward while an
// upload makes progress, so a client that stalls is dropped after idle
// without bounding the whole upload.
type idleDeadline struct {
	rc   *http.ResponseController
	idle time.Duration
	next time.Time // when to push the deadline again
}

func (d *idleDeadline) extend() {
	if d == nil {
		return
	}
	now := time.Now()
	if now.Before(d.next) {
		return
	}
	// Not every writer supports deadlines (then the server's own timeouts apply).
	_ = d.rc.SetReadDeadline(now.Add(d.idle))
	d.next = now.Add(d.idle / 10)
}

// clear removes the deadline after a complete body. After a failed upload
// the deadline stays: the server then drains (a little of) the rest of the
// body or closes the connection, and never waits on a stalled client.
func (d *idleDeadline) clear() {
	if d != nil {
		_ = d.rc.SetReadDeadline(time.Time{})
	}
}

func (s *Server) idleDeadline(w http.ResponseWriter) *idleDeadline {
	return &idleDeadline{rc: http.NewResponseController(w), idle: s.uploadIdle}
}

// stream copies body to dst (may be nil) and v, mapping failures: a body
// over limit → 413, a client that went away or stalled → 400, data the
// verifier refuses → 400/413, a storage write error → plain error (500).
func stream(body io.Reader, dst io.Writer, v *nixcache.Verifier, limit int64, what string, dl *idleDeadline) (int64, error) {
	// With a verifier each read gets its own buffer, handed to the
	// verifier after the storage write (no copy); without, one buffer.
	var bp *[]byte
	if v == nil {
		bp = copyBufs.Get().(*[]byte)
		defer copyBufs.Put(bp)
	}
	var total int64
	for {
		dl.extend()
		if v != nil {
			bp = nixcache.NewBuffer()
		}
		buf := *bp
		n, rerr := body.Read(buf)
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
				if errors.Is(err, nixcache.ErrTooLarge) {
					return total, &uploadError{status: http.StatusRequestEntityTooLarge, msg: err.Error()}
				}
				return total, badRequest("invalid %s: %v", what, err)
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
			return total, badRequest("reading the %s upload failed after %d bytes: %v", what, total, rerr)
		}
	}
}

func (s *Server) putNar(w http.ResponseWriter, r *http.Request, req route.Request) {
	created, err := s.receiveNar(r, req, s.idleDeadline(w))
	if err != nil {
		s.answer(w, r, "NAR upload", err)
		return
	}
	s.ok(w, created)
}

func (s *Server) ok(w http.ResponseWriter, created bool) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if created {
		w.WriteHeader(http.StatusCreated)
	}
	io.WriteString(w, "ok\n")
}

// receiveNar streams a NAR upload to storage while verifying it, then
// records it. It reports whether a new blob was stored.
func (s *Server) receiveNar(r *http.Request, req route.Request, dl *idleDeadline) (bool, error) {
	ctx := r.Context()
	if r.ContentLength > s.maxNar {
		return false, tooLarge(s.maxNar, "NAR file")
	}
	key := "nar/" + req.File
	// Bytes already stored are still received and verified (the flake
	// proves it has them) but not written again.
	have := false
	if _, err := s.idx.GetNar(ctx, route.Flake{}, req.File); err == nil {
		if _, err := s.blob.Stat(ctx, key); err == nil {
			have = true
		} else if !errors.Is(err, blob.ErrNotFound) {
			return false, fmt.Errorf("stat %s: %w", key, err)
		}
	} else if !errors.Is(err, index.ErrNotFound) {
		return false, fmt.Errorf("look up NAR %s: %w", req.File, err)
	}

	v, err := nixcache.NewVerifier(req.Compression, s.maxNar)
	if err != nil {
		return false, badRequest("%v", err)
	}
	var bw blob.Writer
	if !have {
		if bw, err = s.blob.Create(ctx); err != nil {
			v.Abort()
			return false, fmt.Errorf("create blob: %w", err)
		}
	}
	abort := func() {
		v.Abort()
		if bw != nil {
			if err := bw.Abort(); err != nil {
				s.log.WarnContext(ctx, "abort blob write", "key", key, "err", err)
			}
		}
	}
	body := http.MaxBytesReader(nil, r.Body, s.maxNar)
	var dst io.Writer
	if bw != nil {
		dst = bw
	}
	n, err := stream(body, dst, v, s.maxNar, "NAR", dl)
	s.metrics.uploadBytes.WithLabelValues("nar").Add(float64(n))
	if err != nil {
		abort()
		return false, err
	}
	res, err := v.Finish()
	if err != nil {
		abort()
		if errors.Is(err, nixcache.ErrTooLarge) {
			return false, &uploadError{status: http.StatusRequestEntityTooLarge, msg: err.Error()}
		}
		return false, badRequest("invalid NAR: %v", err)
	}
	if got := nixbase32.EncodeToString(res.FileHash); got != req.Hash {
		abort()
		return false, badRequest("NAR file hash mismatch: the URL names %s but the %d uploaded bytes hash to sha256:%s", req.File, res.FileSize, got)
	}
	if bw != nil {
		if err := bw.Commit(ctx, key); err != nil {
			return false, fmt.Errorf("commit blob %s: %w", key, err)
		}
	}
	rec := index.Nar{
		File: req.File, Compression: req.Compression,
		FileHash: nixcache.FormatHash(res.FileHash), FileSize: res.FileSize,
		NarHash: nixcache.FormatHash(res.NarHash), NarSize: res.NarSize,
	}
	if err := s.idx.PutNar(ctx, req.Flake, rec); err != nil {
		return false, fmt.Errorf("record NAR %s: %w", req.File, err)
	}
	return !have, nil
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
	if r.ContentLength > s.maxInfo {
		return false, tooLarge(s.maxInfo, "narinfo")
	}
	data, err := io.ReadAll(http.MaxBytesReader(nil, r.Body, s.maxInfo))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return false, tooLarge(s.maxInfo, "narinfo")
		}
		return false, badRequest("reading the narinfo upload failed: %v", err)
	}
	ni, err := nixcache.ParseNarInfo(data)
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

	unlock := s.lockPath(ni.Hash)
	defer unlock()
	existing, err := s.idx.GetPath(ctx, route.Flake{}, ni.Hash)
	switch {
	case errors.Is(err, index.ErrNotFound):
	case err != nil:
		return false, fmt.Errorf("look up path %s: %w", ni.Hash, err)
	default:
		_, err := s.idx.GetPath(ctx, req.Flake, ni.Hash)
		if err == nil {
			return false, nil // this flake has it already: idempotent
		}
		if !errors.Is(err, index.ErrNotFound) {
			return false, fmt.Errorf("look up path %s of %s: %w", ni.Hash, req.Flake, err)
		}
		if err := s.adoptNar(r, req.Flake, ni, existing); err != nil {
			return false, err
		}
	}

	text := s.keys.SignedNarInfo(ni)
	p := index.Path{
		Hash: ni.Hash, StorePath: ni.StorePath, NarFile: ni.File, References: ni.References,
		NarInfo: text, SignedBy: s.keys.ID(),
	}
	if err := s.idx.PutPath(ctx, req.Flake, p); err != nil {
		return false, fmt.Errorf("record path %s: %w", ni.Hash, err)
	}
	return existing.Hash == "", nil
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

// adoptNar handles a path that other flakes already pushed: the index keeps
// the first narinfo, which may name another NAR file (other compression).
// When that NAR has the same NarHash the flake proved it holds the same
// content, so it gets ownership of that file too and the stored narinfo
// works in its namespace. Different content is a conflict.
func (s *Server) adoptNar(r *http.Request, flake route.Flake, ni *nixcache.NarInfo, existing index.Path) error {
	ctx := r.Context()
	if existing.NarFile == ni.File {
		return nil
	}
	first, err := s.idx.GetNar(ctx, route.Flake{}, existing.NarFile)
	if err != nil {
		return fmt.Errorf("look up NAR %s of cached path %s: %w", existing.NarFile, existing.Hash, err)
	}
	if first.NarHash != nixcache.FormatHash(ni.NarHash) {
		return &uploadError{status: http.StatusConflict, msg: fmt.Sprintf(
			"%s is already in the cache with different contents (NarHash %s, yours %s): the build is not reproducible",
			ni.StorePath, first.NarHash, nixcache.FormatHash(ni.NarHash))}
	}
	if err := s.idx.PutNar(ctx, flake, first); err != nil {
		return fmt.Errorf("record ownership of NAR %s: %w", first.File, err)
	}
	return nil
}

func (s *Server) putLog(w http.ResponseWriter, r *http.Request, req route.Request) {
	err := s.receiveLog(r, req, s.idleDeadline(w))
	if err != nil {
		s.answer(w, r, "log upload", err)
		return
	}
	s.ok(w, true)
}

func (s *Server) receiveLog(r *http.Request, req route.Request, dl *idleDeadline) error {
	ctx := r.Context()
	if r.ContentLength > s.maxNar {
		return tooLarge(s.maxNar, "build log")
	}
	key := "log/" + req.Flake.Org + "/" + req.Flake.Name + "/" + req.Hash
	bw, err := s.blob.Create(ctx)
	if err != nil {
		return fmt.Errorf("create blob: %w", err)
	}
	n, err := stream(http.MaxBytesReader(nil, r.Body, s.maxNar), bw, nil, s.maxNar, "build log", dl)
	s.metrics.uploadBytes.WithLabelValues("log").Add(float64(n))
	if err != nil {
		bw.Abort()
		return err
	}
	if err := bw.Commit(ctx, key); err != nil {
		return fmt.Errorf("commit blob %s: %w", key, err)
	}
	if err := s.idx.PutLog(ctx, req.Flake, req.Hash, key); err != nil {
		return fmt.Errorf("record log %s: %w", req.Hash, err)
	}
	return nil
}
