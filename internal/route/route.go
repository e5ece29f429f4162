// Package route maps a cache request (method + URL path) to what it is about:
// the action the policy decides on, the flake namespace, and the object.
//
// It is the single URL parser of flakegate: the blob server routes with it and
// the authorization service builds the policy input with it, so the two can
// never disagree about what a URL means. It is pure (no I/O) and fuzzed.
// The names it parses (flakes, store and file hashes, compressions, NAR file
// names) and their rules are internal/nixname's.
//
// It also holds what else the two processes must agree on over HTTP (see
// protocol.go): the headers authz sets for the blob server, the owners
// endpoints and their answer, and the bodies of the answers both give.
package route

import (
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/flakegate/flakegate/internal/nixname"
)

// Action is what the policy is asked to allow.
type Action string

const (
	ActionInfo     Action = "info"
	ActionRead     Action = "read"
	ActionPush     Action = "push"
	ActionExchange Action = "exchange"
	// ActionPublic is for endpoints anyone may call (the token issuer's JWKS).
	// The policy is not consulted for it.
	ActionPublic Action = "public"
)

// Kind is the kind of object a request is about.
type Kind string

const (
	KindCacheInfo Kind = "cache-info"
	KindNarInfo   Kind = "narinfo"
	KindNar       Kind = "nar"
	KindLog       Kind = "log"
	KindToken     Kind = "token" // POST /_flakegate/token
	KindJWKS      Kind = "jwks"  // GET /_flakegate/jwks
)

// Request is what a cache URL means.
type Request struct {
	Action Action
	Kind   Kind
	// Flake is the namespace; zero for the union view and for /_flakegate.
	Flake nixname.Flake
	// Hash is the 32-character store path hash for narinfo, the file hash
	// (nixbase32, 52 characters) for a NAR, and the derivation file name
	// (e.g. "<hash>-hello.drv") for a build log.
	Hash string
	// File is the NAR file name below nar/ (e.g. "<filehash>.nar.zst").
	File string
	// Compression is the NAR compression implied by File's extension.
	Compression nixname.Compression
}

// Union reports whether the request reads through the union view.
func (r Request) Union() bool {
	return r.Flake.IsZero() && (r.Kind == KindNarInfo || r.Kind == KindNar || r.Kind == KindCacheInfo)
}

// Error is a request the cache does not serve. Status is the HTTP status
// to answer with (400, 404 or 405).
type Error struct {
	Status int
	Msg    string
}

func (e *Error) Error() string { return e.Msg }

func errf(status int, format string, args ...any) error {
	return &Error{Status: status, Msg: fmt.Sprintf(format, args...)}
}

// StatusOf returns the HTTP status for an error from Parse (400 for others).
func StatusOf(err error) int {
	var e *Error
	if errors.As(err, &e) {
		return e.Status
	}
	return http.StatusBadRequest
}

// Parse maps a method and URL path (without query string) to a Request.
func Parse(method, path string) (Request, error) {
	if i := strings.IndexAny(path, "?#"); i >= 0 {
		path = path[:i]
	}
	if !strings.HasPrefix(path, "/") {
		return Request{}, errf(http.StatusBadRequest, "path %q does not start with /", path)
	}
	segs := strings.Split(path[1:], "/")
	for _, s := range segs {
		if s == "" || s == "." || s == ".." {
			return Request{}, errf(http.StatusNotFound, "no such resource: %q", path)
		}
	}
	read := method == http.MethodGet || method == http.MethodHead
	push := method == http.MethodPut

	if segs[0] == "_flakegate" {
		switch {
		case len(segs) == 2 && segs[1] == "token":
			if method != http.MethodPost {
				return Request{}, errf(http.StatusMethodNotAllowed, "%s not allowed on %s: use POST", method, path)
			}
			return Request{Action: ActionExchange, Kind: KindToken}, nil
		case len(segs) == 2 && segs[1] == "jwks":
			if !read {
				return Request{}, errf(http.StatusMethodNotAllowed, "%s not allowed on %s: use GET", method, path)
			}
			return Request{Action: ActionPublic, Kind: KindJWKS}, nil
		}
		return Request{}, errf(http.StatusNotFound, "no such resource: %q", path)
	}

	var r Request
	rest := segs
	// Union view: /nix-cache-info, /{hash}.narinfo, /nar/{file}.
	unionShape := (len(segs) == 1) || (len(segs) == 2 && segs[0] == "nar")
	if !unionShape {
		if len(segs) < 3 {
			return Request{}, errf(http.StatusNotFound, "no such resource: %q (want /{org}/{flake}/…)", path)
		}
		f, err := nixname.ParseFlake(segs[0] + "/" + segs[1])
		if err != nil {
			return Request{}, errf(http.StatusBadRequest, "%v", err)
		}
		r.Flake = f
		rest = segs[2:]
	}

	switch {
	case len(rest) == 1 && rest[0] == "nix-cache-info":
		if method != http.MethodGet && method != http.MethodHead {
			return Request{}, errf(http.StatusMethodNotAllowed, "%s not allowed on nix-cache-info", method)
		}
		r.Action, r.Kind = ActionInfo, KindCacheInfo
		return r, nil

	case len(rest) == 1 && strings.HasSuffix(rest[0], ".narinfo"):
		h := strings.TrimSuffix(rest[0], ".narinfo")
		if !nixname.IsStoreHash(h) {
			return Request{}, errf(http.StatusBadRequest, "%q is not a store path hash (32 nixbase32 characters)", h)
		}
		r.Kind, r.Hash = KindNarInfo, h

	case len(rest) == 2 && rest[0] == "nar":
		h, c, ok := nixname.ParseNarFile(rest[1])
		if !ok {
			return Request{}, errf(http.StatusBadRequest, "%q is not a NAR file name ({nixbase32 hash}%s)", rest[1], nixname.NarExtSyntax())
		}
		r.Kind, r.Hash, r.File, r.Compression = KindNar, h, rest[1], c

	case len(rest) == 2 && rest[0] == "log" && !r.Flake.IsZero():
		if !validLogName(rest[1]) {
			return Request{}, errf(http.StatusBadRequest, "%q is not a derivation file name", rest[1])
		}
		r.Kind, r.Hash = KindLog, rest[1]

	default:
		return Request{}, errf(http.StatusNotFound, "no such resource: %q", path)
	}

	switch {
	case read:
		r.Action = ActionRead
	case push:
		if r.Flake.IsZero() {
			return Request{}, errf(http.StatusMethodNotAllowed, "PUT is not allowed on the union view: push to /{org}/{flake}/…")
		}
		r.Action = ActionPush
	default:
		return Request{}, errf(http.StatusMethodNotAllowed, "%s not allowed on %s", method, path)
	}
	return r, nil
}

// validLogName accepts "<32-char hash>-<name>.drv" (the derivation's file
// name, as Nix puts it in log/ URLs) and refuses anything path-like: the
// name is of nixname's name characters, at most 255 bytes in all.
func validLogName(s string) bool {
	if len(s) < 34 || len(s) > 255 || !nixname.IsStoreHash(s[:32]) || s[32] != '-' {
		return false
	}
	for i := 33; i < len(s); i++ {
		if !nixname.IsNameChar(s[i]) {
			return false
		}
	}
	return true
}
