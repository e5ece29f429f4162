package cacheserver

import (
	"errors"
	"net/http"
	"os"
	"strconv"
	"time"

	"github.com/flakegate/flakegate/internal/blob"
	"github.com/flakegate/flakegate/internal/index"
	"github.com/flakegate/flakegate/internal/route"
)

const (
	contentTypeNarInfo   = "text/x-nix-narinfo"
	contentTypeNar       = "application/x-nix-nar"
	contentTypeCacheInfo = "text/x-nix-cache-info"
	contentTypeLog       = "text/plain; charset=utf-8"

	// NARs are content-addressed: their bytes never change.
	cacheImmutable = "public, max-age=31536000, immutable"
	// narinfos may appear (and be re-signed); no "public": shared caches
	// must not hand a flake's narinfo to requests of other callers.
	cacheNarInfo = "max-age=60"
	cacheLog     = "max-age=60"
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
	text, ok := s.hits.getNarInfo(req.Flake, req.Hash)
	if !ok {
		p, err := s.idx.GetPath(r.Context(), req.Flake, req.Hash)
		if errors.Is(err, index.ErrNotFound) {
			s.fail(w, http.StatusNotFound, "not found")
			return
		}
		if err != nil {
			s.internalError(w, r, "looking up the narinfo", err)
			return
		}
		if text, err = s.signed(r, p); err != nil {
			s.internalError(w, r, "re-signing the narinfo", err)
			return
		}
		s.hits.addNarInfo(req.Flake, req.Hash, text)
	}
	h := w.Header()
	h.Set("Content-Type", contentTypeNarInfo)
	h.Set("Content-Length", strconv.Itoa(len(text)))
	h.Set("Cache-Control", cacheNarInfo)
	if r.Method == http.MethodHead {
		return
	}
	w.Write(text)
}

// signed returns the narinfo text carrying the current key set's
// signatures, re-signing a narinfo signed under an older key set. The
// re-signed text is stored when the index can (index.NarInfoUpdater), and
// kept in the hit cache either way.
func (s *Server) signed(r *http.Request, p index.Path) ([]byte, error) {
	id := s.keys.ID()
	if p.SignedBy == id {
		return p.NarInfo, nil
	}
	text, err := s.keys.Resign(p.NarInfo)
	if err != nil {
		return nil, err
	}
	if u, ok := s.idx.(index.NarInfoUpdater); ok {
		err := u.UpdateNarInfo(r.Context(), p.Hash, text, id)
		if err == nil {
			return text, nil
		}
		s.log.WarnContext(r.Context(), "store re-signed narinfo", "hash", p.Hash, "err", err)
	}
	return text, nil
}

// fileOf returns the *os.File behind a blob reader, for sendfile.
func fileOf(rd blob.Reader) (*os.File, bool) {
	f, ok := rd.(interface{ File() *os.File })
	if !ok {
		return nil, false
	}
	return f.File(), true
}

func (s *Server) serveNar(w http.ResponseWriter, r *http.Request, req route.Request) {
	if !s.hits.hasNar(req.Flake, req.File) {
		_, err := s.idx.GetNar(r.Context(), req.Flake, req.File)
		if errors.Is(err, index.ErrNotFound) {
			s.fail(w, http.StatusNotFound, "not found")
			return
		}
		if err != nil {
			s.internalError(w, r, "looking up the NAR", err)
			return
		}
		s.hits.addNar(req.Flake, req.File)
	}
	s.serveBlob(w, r, "nar/"+req.File, contentTypeNar, cacheImmutable, `"`+req.Hash+`"`)
}

func (s *Server) serveLog(w http.ResponseWriter, r *http.Request, req route.Request) {
	key, err := s.idx.GetLog(r.Context(), req.Flake, req.Hash)
	if errors.Is(err, index.ErrNotFound) {
		s.fail(w, http.StatusNotFound, "not found")
		return
	}
	if err != nil {
		s.internalError(w, r, "looking up the build log", err)
		return
	}
	s.serveBlob(w, r, key, contentTypeLog, cacheLog, "")
}

// serveBlob serves a blob with Range, HEAD and conditional requests; a
// filesystem blob goes out with sendfile.
func (s *Server) serveBlob(w http.ResponseWriter, r *http.Request, key, contentType, cacheControl, etag string) {
	rd, err := s.blob.Open(r.Context(), key)
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
