package cacheserver

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/flakegate/flakegate/internal/index"
	"github.com/flakegate/flakegate/internal/nixcache"
	"github.com/flakegate/flakegate/internal/nixname"
	"github.com/flakegate/flakegate/internal/route"
)

// Pins (internal/gc keeps a pinned path's closure whatever the retention):
//
//	GET    /{org}/{flake}/_pins          → 200 {"pins":[{"name","store_path","created_at"}]} (a read); 404 when none
//	PUT    /{org}/{flake}/_pins/{name}   body: the store path → 200 {the pin} (action pin)
//	DELETE /{org}/{flake}/_pins/{name}   → 200 (404 when absent)

// PinJSON is a pin as the pins endpoints answer it.
type PinJSON struct {
	Name      string    `json:"name"`
	StorePath string    `json:"store_path"`
	CreatedAt time.Time `json:"created_at"`
}

// PinsJSON is the answer of GET /{org}/{flake}/_pins.
type PinsJSON struct {
	Pins []PinJSON `json:"pins"`
}

// maxPinBody bounds a pin's body (a store path).
const maxPinBody = 4096

func (s *Server) collectable(w http.ResponseWriter) (index.Collectable, bool) {
	c, ok := s.idx.(index.Collectable)
	if !ok {
		s.fail(w, http.StatusNotImplemented, "pins need an index that supports garbage collection")
	}
	return c, ok
}

func writeJSON(w http.ResponseWriter, v any) {
	b, _ := json.Marshal(v) // plain structs: cannot fail
	b = append(b, '\n')
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(b)))
	h.Set("Cache-Control", "private, no-cache")
	w.Write(b)
}

func (s *Server) servePins(w http.ResponseWriter, r *http.Request, req route.Request) {
	c, ok := s.collectable(w)
	if !ok {
		return
	}
	pins, err := c.Pins(r.Context(), req.Flake)
	if err != nil {
		s.internalError(w, r, "listing pins", err)
		return
	}
	if len(pins) == 0 {
		// The 404 of an absent object, as a denied read answers: an empty
		// list (200) for any flake name one may read told an org member
		// which flakes flakes.yaml restricts (adversarial review,
		// 2026-12-05; internal/hostapp TestPinsOfARestrictedFlakeAnswerAsAbsent).
		s.notFound(w)
		return
	}
	out := PinsJSON{Pins: make([]PinJSON, 0, len(pins))}
	for _, p := range pins {
		out.Pins = append(out.Pins, PinJSON{Name: p.Name, StorePath: p.StorePath, CreatedAt: p.CreatedAt.UTC()})
	}
	writeJSON(w, out)
}

func (s *Server) servePin(w http.ResponseWriter, r *http.Request, req route.Request) {
	c, ok := s.collectable(w)
	if !ok {
		return
	}
	ctx := r.Context()
	switch r.Method {
	case http.MethodDelete:
		err := c.DeletePin(ctx, req.Flake, req.Name)
		if errors.Is(err, index.ErrNotFound) {
			s.fail(w, http.StatusNotFound, fmt.Sprintf("no pin %q in %s", req.Name, req.Flake))
			return
		}
		if err != nil {
			s.internalError(w, r, "removing a pin", err)
			return
		}
		s.log.InfoContext(ctx, "unpinned", "flake", req.Flake.String(), "name", req.Name, "subject", r.Header.Get(route.SubjectHeader))
		writePlain(w, http.StatusOK, "ok\n")
	case http.MethodPut:
		hash, err := readPinBody(r)
		if err != nil {
			s.fail(w, http.StatusBadRequest, err.Error())
			return
		}
		err = c.PutPin(ctx, req.Flake, index.Pin{Name: req.Name, Hash: hash})
		if errors.Is(err, index.ErrNotFound) {
			s.fail(w, http.StatusNotFound, fmt.Sprintf("%s/%s… is not in %s: push it before pinning it", nixcache.StoreDir, hash, req.Flake))
			return
		}
		if err != nil {
			s.internalError(w, r, "pinning", err)
			return
		}
		pins, err := c.Pins(ctx, req.Flake)
		if err != nil {
			s.internalError(w, r, "reading the pin back", err)
			return
		}
		for _, p := range pins {
			if p.Name == req.Name {
				s.log.InfoContext(ctx, "pinned", "flake", req.Flake.String(), "name", req.Name, "store_path", p.StorePath, "subject", r.Header.Get(route.SubjectHeader))
				writeJSON(w, PinJSON{Name: p.Name, StorePath: p.StorePath, CreatedAt: p.CreatedAt.UTC()})
				return
			}
		}
		s.internalError(w, r, "reading the pin back", errors.New("pin absent after PutPin (removed concurrently?)"))
	default:
		s.fail(w, http.StatusMethodNotAllowed, "PUT pins, DELETE unpins")
	}
}

// readPinBody reads a pin's body, a store path (/nix/store/<hash>-<name>,
// or just its base name), and returns its hash.
func readPinBody(r *http.Request) (string, error) {
	b, err := io.ReadAll(http.MaxBytesReader(nil, r.Body, maxPinBody))
	if err != nil {
		return "", fmt.Errorf("reading the pin's body: %v (want a store path of at most %d bytes)", err, maxPinBody)
	}
	p := strings.TrimSpace(string(b))
	base := strings.TrimPrefix(p, nixcache.StoreDir+"/")
	if len(base) < nixname.StoreHashLen+2 || base[nixname.StoreHashLen] != '-' || !nixname.IsStoreHash(base[:nixname.StoreHashLen]) || strings.Contains(base, "/") {
		return "", fmt.Errorf("the body must be a store path (%s/<hash>-<name>), got %q", nixcache.StoreDir, p)
	}
	return base[:nixname.StoreHashLen], nil
}
