package cacheserver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/flakegate/flakegate/internal/blob"
	"github.com/flakegate/flakegate/internal/index"
	"github.com/flakegate/flakegate/internal/nixcache"
	"github.com/flakegate/flakegate/internal/nixname"
	"github.com/flakegate/flakegate/internal/route"
)

// InternalHandler serves owners lookups, /metrics and /healthz.
func (s *Server) InternalHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+route.OwnersPrefix+"{kind}/{key...}", func(w http.ResponseWriter, r *http.Request) {
		req, err := route.ParseOwnersPath(r.PathValue("kind"), r.PathValue("key"))
		if err != nil {
			s.fail(w, route.StatusOf(err), err.Error())
			return
		}
		s.owners(w, r, req.Kind, route.OwnersKey(req))
	})
	mux.HandleFunc("GET "+route.ClosurePath+"{org}/{name}", s.closure)
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.metrics.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", s.healthz)
	return mux
}

func (s *Server) owners(w http.ResponseWriter, r *http.Request, kind index.Kind, key string) {
	flakes, err := s.idx.Owners(r.Context(), kind, key)
	if err != nil {
		s.internalError(w, r, "looking up owners", err)
		return
	}
	resp := route.OwnersResponse{Flakes: make([]string, len(flakes))}
	for i, f := range flakes {
		resp.Flakes[i] = f.String()
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	json.NewEncoder(w).Encode(resp)
}

// MaxClosurePaths bounds the closure endpoint's answer (a NixOS system
// closure holds a few thousand paths); a larger closure is refused (422)
// rather than answered with tens of MiB.
const MaxClosurePaths = 200_000

// maxClosureRoots bounds the roots of one closure request.
const maxClosureRoots = 64

// closure answers the closure of the roots (query "root", store hashes)
// within a flake: route.ClosurePath, route.ClosureResponse.
func (s *Server) closure(w http.ResponseWriter, r *http.Request) {
	flake, err := nixname.ParseFlake(r.PathValue("org") + "/" + r.PathValue("name"))
	if err != nil {
		s.fail(w, http.StatusBadRequest, "not a flake (org/name)")
		return
	}
	roots := r.URL.Query()["root"]
	if len(roots) == 0 || len(roots) > maxClosureRoots {
		s.fail(w, http.StatusBadRequest, fmt.Sprintf("want 1 to %d root=<store hash> parameters", maxClosureRoots))
		return
	}
	for _, h := range roots {
		if !nixname.IsStoreHash(h) {
			s.fail(w, http.StatusBadRequest, "root: not a store path hash (32 nixbase32 characters)")
			return
		}
	}
	paths, err := index.Closure(r.Context(), s.idx, flake, roots, MaxClosurePaths)
	if errors.Is(err, index.ErrClosureTooLarge) {
		s.log.WarnContext(r.Context(), "closure refused: too large", "flake", flake.String(), "roots", roots, "max", MaxClosurePaths)
		s.fail(w, http.StatusUnprocessableEntity, fmt.Sprintf("closure larger than %d paths", MaxClosurePaths))
		return
	}
	if err != nil {
		s.internalError(w, r, "computing a closure", err)
		return
	}
	resp := route.ClosureResponse{
		Paths: make([]string, 0, len(paths)), Nars: make([]string, 0, len(paths)), Derivers: []string{},
	}
	for _, p := range paths {
		resp.Paths = append(resp.Paths, p.Hash)
		resp.Nars = append(resp.Nars, p.NarFile)
		if d := nixcache.DeriverOf(p.NarInfo); d != "" {
			resp.Derivers = append(resp.Derivers, d[:nixname.StoreHashLen])
		}
	}
	slices.Sort(resp.Nars)
	resp.Nars = slices.Compact(resp.Nars)
	slices.Sort(resp.Derivers)
	resp.Derivers = slices.Compact(resp.Derivers)
	s.log.DebugContext(r.Context(), "closure computed", "flake", flake.String(), "roots", len(roots), "paths", len(resp.Paths))
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	json.NewEncoder(w).Encode(resp)
}

// healthz checks that the index answers a query and the blob store a stat.
func (s *Server) healthz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	if _, err := s.idx.Owners(ctx, nixname.KindNarInfo, strings.Repeat("0", 32)); err != nil {
		s.log.ErrorContext(ctx, "health check: index", "err", err)
		s.fail(w, http.StatusServiceUnavailable, "index unavailable")
		return
	}
	if _, err := s.blob.Stat(ctx, "nar/healthz"); err != nil && !errors.Is(err, blob.ErrNotFound) {
		s.log.ErrorContext(ctx, "health check: blob store", "err", err)
		s.fail(w, http.StatusServiceUnavailable, "blob store unavailable")
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Write([]byte("ok\n"))
}
