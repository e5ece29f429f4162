package cacheserver

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/flakegate/flakegate/internal/blob"
	"github.com/flakegate/flakegate/internal/index"
	"github.com/flakegate/flakegate/internal/nixcache"
	"github.com/flakegate/flakegate/internal/nixname"
	"github.com/flakegate/flakegate/internal/route"
)

const (
	contentTypeNarInfo   = "text/x-nix-narinfo"
	contentTypeNar       = "application/x-nix-nar"
	contentTypeCacheInfo = "text/x-nix-cache-info"
	contentTypeLog       = "text/plain; charset=utf-8"

	// Everything but nix-cache-info is served to authorized callers only:
	// "private" keeps a shared cache (a CDN in front) from handing a
	// response to anyone else. A NAR's bytes never change (content
	// addressed); narinfos may appear (and be re-signed).
	cacheNar     = "private, max-age=31536000, immutable"
	cacheNarInfo = "private, max-age=60"
	cacheLog     = "private, max-age=60"
)

func (s *Server) serveCacheInfo(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Type", contentTypeCacheInfo)
	h.Set("Content-Length", strconv.Itoa(len(s.cacheInfo)))
	h.Set("Cache-Control", "max-age=3600")
	if r.Method == http.MethodHead {
		return
	}
	w.Write(s.cacheInfo)
}

func (s *Server) serveNarInfo(w http.ResponseWriter, r *http.Request, req route.Request) {
	var p index.Path
	var err error
	if req.Flake.IsZero() {
		p, err = s.unionPath(r, req.Hash)
	} else {
		p, err = s.flakePath(r, req.Flake, req.Hash)
	}
	if errors.Is(err, index.ErrNotFound) {
		s.notFound(w)
		return
	}
	if err != nil {
		s.internalError(w, r, "looking up the narinfo", err)
		return
	}
	// The header values are shared, never-modified slices (Set and Del
	// replace or drop a key's slice, Add appends past its capacity of 1):
	// three allocations fewer on the hottest answer (issue 16).
	h := w.Header()
	h["Content-Type"] = headerNarInfoType
	h["Content-Length"] = contentLength(len(p.NarInfo))
	h["Cache-Control"] = headerNarInfoCache
	if r.Method == http.MethodHead {
		return
	}
	w.Write(p.NarInfo)
}

var (
	headerNarInfoType  = []string{contentTypeNarInfo}
	headerNarInfoCache = []string{cacheNarInfo}
	// contentLengths are the Content-Length values of 0 to 8191 bytes
	// (narinfos are under 2 KiB but for long reference lists).
	contentLengths = sync.OnceValue(func() [][]string {
		v := make([][]string, 8192)
		for i := range v {
			v[i] = []string{strconv.Itoa(i)}
		}
		return v
	})
)

// contentLength is a Content-Length header value of n.
func contentLength(n int) []string {
	if t := contentLengths(); n < len(t) {
		return t[n]
	}
	return []string{strconv.Itoa(n)}
}

// errAbsent answers a narinfo the miss cache knows to be absent (one
// value: no allocation on the common miss).
var errAbsent = fmt.Errorf("narinfo (recently looked up): %w", index.ErrNotFound)

// flakePath returns flake's record of a path, signed with the current
// keys, from the hit cache or the index.
func (s *Server) flakePath(r *http.Request, flake nixname.Flake, hash string) (index.Path, error) {
	if p, ok := s.hits.getNarInfo(flake, hash); ok {
		s.reads.record(flake, hash)
		return p, nil
	}
	if s.misses.absent(flake, hash) {
		return index.Path{}, errAbsent
	}
	epoch, seq := s.hits.now(), s.misses.seq()
	p, err := s.idx.GetPath(r.Context(), flake, hash)
	if errors.Is(err, index.ErrNotFound) {
		s.misses.add(flake, hash, seq)
	}
	if err != nil {
		return index.Path{}, err
	}
	s.reads.record(flake, hash)
	return s.signed(r, p, epoch)
}

// readableFlakes returns the flakes a union read may be served from: those
// authz named in route.ReadableHeader (the owners the caller may read), or
// nil for every flake when the header is absent on a server without a gate
// of its own (behind Envoy, whose authz names them too, or ungated). With
// a gate here, the header's absence is an error: the gate strips a
// client's copy and authz adds it to every union read it allows, so an
// allowed union read without it is a broken authorizer, and fails closed.
func (s *Server) readableFlakes(r *http.Request) ([]nixname.Flake, error) {
	vals := r.Header.Values(route.ReadableHeader)
	if len(vals) == 0 {
		if s.gated {
			return nil, fmt.Errorf("union read allowed without the %s header: the authorizer names no readable flake", route.ReadableHeader)
		}
		return nil, nil
	}
	flakes, err := route.ParseFlakes(strings.Join(vals, " "))
	if err != nil {
		return nil, fmt.Errorf("%s header from the gate: %w", route.ReadableHeader, err)
	}
	return flakes, nil
}

// unionPath returns what the union view serves for a path: the record of
// the readable flakes holding it, when they all agree on its contents
// (index.Path.SameContent; the earliest is served, its Deriver only when
// all name the same). When they
// disagree the path is answered as absent — never one flake's contents
// picked silently over another's — and the conflict is logged and counted.
// Reading a flake's own URL always serves that flake's record.
func (s *Server) unionPath(r *http.Request, hash string) (index.Path, error) {
	flakes, err := s.readableFlakes(r)
	if err != nil {
		return index.Path{}, err
	}
	var recs []index.Path
	epoch, seq := s.hits.now(), s.misses.seq()
	if flakes == nil {
		// Ungated: the zero flake's miss entry stands for every flake.
		if s.misses.absent(nixname.Flake{}, hash) {
			return index.Path{}, errAbsent
		}
		if recs, err = s.idx.PathsOf(r.Context(), hash, nil); err != nil {
			return index.Path{}, err
		}
		if len(recs) == 0 {
			s.misses.add(nixname.Flake{}, hash, seq)
		}
	} else {
		var missing []nixname.Flake
		for _, f := range flakes {
			if p, ok := s.hits.getNarInfo(f, hash); ok {
				recs = append(recs, p)
			} else if !s.misses.absent(f, hash) {
				missing = append(missing, f)
			}
		}
		if len(missing) > 0 {
			more, err := s.idx.PathsOf(r.Context(), hash, missing)
			if err != nil {
				return index.Path{}, err
			}
			// Each flake asked whose record is absent: a miss entry of its
			// own (never one that depends on another flake's records).
			for _, f := range missing {
				if !slices.ContainsFunc(more, func(p index.Path) bool { return p.Flake == f }) {
					s.misses.add(f, hash, seq)
				}
			}
			// Each flake's record read from the index is signed and cached
			// once; hits are served as they are.
			for _, p := range more {
				if p, err = s.signed(r, p, epoch); err != nil {
					return index.Path{}, err
				}
				recs = append(recs, p)
			}
		}
	}
	if len(recs) == 0 {
		return index.Path{}, fmt.Errorf("path %s in the union view: %w", hash, index.ErrNotFound)
	}
	// The earliest record is served (ties: by flake name), never one a
	// flake can put first by its name: a pusher of evil/x re-pushing a
	// path the target serves would otherwise have its own NAR file (and
	// Deriver) served to every reader of both (adversarial review,
	// 2026-12-05; TestUnionServesTheEarliestRecord).
	slices.SortFunc(recs, func(a, b index.Path) int {
		return cmp.Or(a.CreatedAt.Compare(b.CreatedAt), strings.Compare(a.Flake.String(), b.Flake.String()))
	})
	for _, p := range recs[1:] {
		if !p.SameContent(recs[0]) {
			s.metrics.unionConflicts.Inc()
			var held []string
			for _, q := range recs {
				held = append(held, q.Flake.String()+"="+q.NarHash)
			}
			s.log.WarnContext(r.Context(), "union view: flakes the caller may read hold different contents for a path; answering 404",
				"hash", hash, "store_path", recs[0].StorePath, "flakes", held, "subject", r.Header.Get(route.SubjectHeader))
			return index.Path{}, fmt.Errorf("path %s in the union view: conflicting contents: %w", hash, index.ErrNotFound)
		}
	}
	for _, p := range recs {
		s.reads.record(p.Flake, hash)
	}
	rec := recs[0]
	if flakes == nil {
		if rec, err = s.signed(r, rec, epoch); err != nil { // ungated: nothing cached above
			return index.Path{}, err
		}
	}
	return withAgreedDeriver(rec, recs), nil
}

// withAgreedDeriver returns rec, served in the union view for recs (which
// agree on the contents), without its Deriver line when another record
// names another deriver: the Deriver is outside the signed fingerprint
// and optional, and the one a reader's Nix records is where `nix log`
// looks, so no flake may pick it for the others.
func withAgreedDeriver(rec index.Path, recs []index.Path) index.Path {
	if len(recs) < 2 {
		return rec // the common case: nothing to compare
	}
	d := deriverLine(rec.NarInfo)
	for _, p := range recs[1:] {
		if !bytes.Equal(deriverLine(p.NarInfo), d) {
			out := make([]byte, 0, len(rec.NarInfo))
			for line := range bytes.Lines(rec.NarInfo) {
				if !bytes.HasPrefix(line, []byte("Deriver:")) {
					out = append(out, line...)
				}
			}
			rec.NarInfo = out
			return rec
		}
	}
	return rec
}

// deriverLine is the Deriver line of a narinfo text (nil when none).
func deriverLine(text []byte) []byte {
	for line := range bytes.Lines(text) {
		if bytes.HasPrefix(line, []byte("Deriver:")) {
			return bytes.TrimSpace(line)
		}
	}
	return nil
}

// signed returns p with a narinfo text carrying the current key set's
// signatures, re-signing a narinfo signed under an older key set, and
// caches it. The re-signed text is stored when the index can
// (index.NarInfoUpdater).
func (s *Server) signed(r *http.Request, p index.Path, epoch int64) (index.Path, error) {
	id := s.keys.ID()
	if p.SignedBy != id {
		text, err := s.keys.Resign(p.NarInfo)
		if err != nil {
			return index.Path{}, fmt.Errorf("re-sign the narinfo of %s in %s: %w", p.Hash, p.Flake, err)
		}
		if u, ok := s.idx.(index.NarInfoUpdater); ok {
			if err := u.UpdateNarInfo(r.Context(), p.Flake, p.Hash, text, id); err != nil {
				s.log.WarnContext(r.Context(), "store re-signed narinfo", "hash", p.Hash, "flake", p.Flake.String(), "err", err)
			}
		}
		p.NarInfo, p.SignedBy = text, id
	}
	if len(p.NarInfo) <= maxCachedNarInfo {
		s.hits.addNarInfo(p, epoch)
	}
	return p, nil
}

// maxCachedNarInfo is the largest narinfo text the hit cache keeps (about
// 230 references): the cache counts entries, and a pusher's narinfos with
// thousands of references (each held by its flake) would otherwise make
// each entry up to 1 MiB. Larger ones are read from the index each time.
const maxCachedNarInfo = 8 << 10

// fileOf returns the *os.File behind a blob reader, for sendfile.
func fileOf(rd blob.Reader) (*os.File, bool) {
	f, ok := rd.(interface{ File() *os.File })
	if !ok {
		return nil, false
	}
	return f.File(), true
}

func (s *Server) serveNar(w http.ResponseWriter, r *http.Request, req route.Request) {
	err := s.hasNar(r, req)
	if errors.Is(err, index.ErrNotFound) {
		s.notFound(w)
		return
	}
	if err != nil {
		s.internalError(w, r, "looking up the NAR", err)
		return
	}
	if s.presign != nil {
		s.redirectNar(w, r, req)
		return
	}
	s.serveBlob(w, r, "nar/"+req.File, contentTypeNar, cacheNar, `"`+req.Hash+`"`)
}

// hasNar reports (nil or index.ErrNotFound) whether the NAR may be served:
// owned by the flake of a flake URL, or in the union view by one of the
// readable flakes (any flake on a server without a gate). A NAR file's
// bytes are the same whoever pushed it.
func (s *Server) hasNar(r *http.Request, req route.Request) error {
	flakes := []nixname.Flake{req.Flake}
	if req.Flake.IsZero() {
		var err error
		if flakes, err = s.readableFlakes(r); err != nil {
			return err
		}
		if flakes == nil {
			flakes = []nixname.Flake{{}} // GetNar with no flake: any owner
		}
	}
	for _, f := range flakes {
		if s.hits.hasNar(f, req.File) {
			return nil
		}
	}
	epoch := s.hits.now()
	if len(flakes) == 1 {
		if _, err := s.idx.GetNar(r.Context(), flakes[0], req.File); err != nil {
			return err
		}
		s.hits.addNar(flakes[0], req.File, epoch)
		return nil
	}
	owners, err := s.idx.Owners(r.Context(), nixname.KindNar, req.File)
	if err != nil {
		return err
	}
	for _, f := range flakes {
		if slices.Contains(owners, f) {
			s.hits.addNar(f, req.File, epoch)
			return nil
		}
	}
	return fmt.Errorf("nar %s in the union view: %w", req.File, index.ErrNotFound)
}

// unionLog is the build log the union view serves: the readable owners'
// log uploaded first (index.Log.UploadedAt, the flake's current log;
// ties by flake name). Logs have no agreement rule (two builds of one
// derivation seldom log the same bytes, and telling would mean reading
// every owner's blob on every request), and choosing by flake name let a
// pusher whose flake sorts first ("aaa/x", "evil/x" < "omnicorp/…") serve
// its text for another flake's derivation to every reader of both, even
// uploaded after it. Upload order is not the pusher's to pick: to win it
// must upload before the flake it imitates (knowing the derivation before
// it is built) or after that flake replaced its own log. A reader who
// needs one flake's log asks the flake's URL.
func (s *Server) unionLog(r *http.Request, drv string) (index.Log, error) {
	owners, err := s.unionOwners(r, nixname.KindLog, drv)
	if err != nil {
		return index.Log{}, err
	}
	var first index.Log
	found := false
	for _, o := range owners { // sorted by name: a tie keeps the first
		l, err := s.idx.GetLog(r.Context(), o, drv)
		if errors.Is(err, index.ErrNotFound) {
			continue // deleted since Owners
		}
		if err != nil {
			return index.Log{}, err
		}
		if !found || l.UploadedAt.Before(first.UploadedAt) {
			first, found = l, true
		}
	}
	if !found {
		return index.Log{}, fmt.Errorf("log %s in the union view: %w", drv, index.ErrNotFound)
	}
	return first, nil
}

func (s *Server) serveLog(w http.ResponseWriter, r *http.Request, req route.Request) {
	var l index.Log
	var err error
	if req.Flake.IsZero() {
		l, err = s.unionLog(r, req.Hash)
	} else {
		l, err = s.idx.GetLog(r.Context(), req.Flake, req.Hash)
	}
	if errors.Is(err, index.ErrNotFound) {
		s.notFound(w)
		return
	}
	if err != nil {
		s.internalError(w, r, "looking up the build log", err)
		return
	}
	if l.Encoding == "" {
		s.serveBlob(w, r, l.BlobKey, contentTypeLog, cacheLog, "")
		return
	}
	// Stored with its upload's Content-Encoding: as stored when the client
	// accepts it (see serveEncoded), decoded on the fly otherwise.
	w.Header().Set("Vary", "Accept-Encoding")
	ae, present := r.Header["Accept-Encoding"]
	if nixcache.Accepts(strings.Join(ae, ","), present, l.Encoding) {
		w.Header().Set("Content-Encoding", l.Encoding)
		s.serveBlob(w, r, l.BlobKey, contentTypeLog, cacheLog, "")
		return
	}
	rd, err := s.blob.Open(r.Context(), l.BlobKey)
	if errors.Is(err, blob.ErrNotFound) {
		s.blobGone(w, r, l.BlobKey) // as serveBlob answers, not a 500
		return
	}
	if err != nil {
		s.internalError(w, r, "opening "+l.BlobKey, err)
		return
	}
	defer rd.Close()
	w.Header().Set("Content-Type", contentTypeLog)
	w.Header().Set("Cache-Control", cacheLog)
	if r.Method == http.MethodHead {
		return // no decoder, and no decoder memory, for headers
	}
	dec, err := nixcache.NewDecoder(l.Encoding, rd, nixcache.DecoderOwner(decoderOwner(r, req.Flake)), nixcache.DecoderDone(r.Context().Done()))
	if err != nil {
		s.decodeFailed(w, r, "decoding "+l.BlobKey, err)
		return
	}
	defer dec.Close()
	if _, err := io.Copy(w, dec); err != nil {
		s.log.WarnContext(r.Context(), "serving a decoded build log", "key", l.BlobKey, "err", err)
	}
}

// decodeFailed answers a stored encoded file whose decoder did not start:
// 503 with Retry-After when the decoder memory budget is spent for now
// (nixcache.ErrDecoderMemory), else the logged 500 of a stored file that
// does not decode.
func (s *Server) decodeFailed(w http.ResponseWriter, r *http.Request, what string, err error) {
	if errors.Is(err, context.Canceled) && r.Context().Err() != nil {
		return // the client left while waiting for decoder memory
	}
	if errors.Is(err, nixcache.ErrDecoderMemory) {
		s.log.WarnContext(r.Context(), "decoder memory in use: answering 503", "what", what, "err", err)
		w.Header().Set("Retry-After", "1")
		s.fail(w, http.StatusServiceUnavailable, err.Error())
		return
	}
	s.internalError(w, r, what, err)
}

// blobGone answers a blob the index listed (perhaps through a cached
// lookup) but a garbage collection deleted meanwhile: the 404 of an absent
// object, byte for byte (notFound drops what the handler had set).
func (s *Server) blobGone(w http.ResponseWriter, r *http.Request, key string) {
	s.log.InfoContext(r.Context(), "blob gone (garbage collected since the lookup): answering 404", "key", key)
	s.notFound(w)
}

// serveBlob serves a blob with Range, HEAD and conditional requests; a
// filesystem blob goes out with sendfile.
func (s *Server) serveBlob(w http.ResponseWriter, r *http.Request, key, contentType, cacheControl, etag string) {
	rd, err := s.blob.Open(r.Context(), key)
	if errors.Is(err, blob.ErrNotFound) {
		s.blobGone(w, r, key)
		return
	}
	if err != nil {
		// The index lists it, so a missing blob is a storage failure.
		s.internalError(w, r, "opening "+key, err)
		return
	}
	defer rd.Close()
	h := w.Header()
	h.Set("Content-Type", contentType)
	h.Set("Cache-Control", cacheControl)
	if etag != "" {
		h.Set("ETag", etag)
	}
	var modTime time.Time
	if etag == "" {
		modTime = rd.Info().ModTime
	}
	if f, ok := fileOf(rd); ok {
		http.ServeContent(w, r, "", modTime, f)
		return
	}
	http.ServeContent(w, r, "", modTime, rd)
}

// redirectNar answers an allowed NAR GET or HEAD (authorized by the gate,
// owned by a flake the request may read: hasNar) with 307 to a presigned
// URL of the blob, valid for NarRedirect: the client fetches the bytes
// from the object storage, with the same method. The URL is signed
// locally (no request to the storage); it is not checked that the blob
// exists (the index says it does). The answer must not be stored by a
// shared cache nor outlive the URL: Cache-Control private, no-store.
func (s *Server) redirectNar(w http.ResponseWriter, r *http.Request, req route.Request) {
	u, err := s.presign.Presign(r.Context(), r.Method, "nar/"+req.File, s.narRedirect)
	if err != nil {
		s.internalError(w, r, "presigning the NAR's URL", err)
		return
	}
	s.metrics.narRedirects.Inc()
	h := w.Header()
	h.Set("Location", u.String())
	h.Set("Cache-Control", "private, no-store")
	w.WriteHeader(http.StatusTemporaryRedirect)
}
