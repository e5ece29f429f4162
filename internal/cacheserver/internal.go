package cacheserver

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/flakegate/flakegate/internal/blob"
	"github.com/flakegate/flakegate/internal/index"
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
		s.owners(w, r, index.Kind(req.Kind), route.OwnersKey(req))
	})
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

// healthz checks that the index answers a query and the blob store a stat.
func (s *Server) healthz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	if _, err := s.idx.Owners(ctx, index.KindNarInfo, strings.Repeat("0", 32)); err != nil {
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
