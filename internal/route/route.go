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
// protocol.go): the headers authz sets for the blob server, the owners and
// closure endpoints and their answers, and the bodies of the answers both give.
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
	// ActionPin sets or removes a pin (PUT, DELETE /{org}/{flake}/_pins/{name}).
	ActionPin Action = "pin"
	// ActionWhoami is GET /_flakegate/whoami: who the caller's token says
	// it is. Authenticated (401 without a valid token), no policy decision.
	ActionWhoami Action = "whoami"
	// ActionPublic is for endpoints anyone may call (the token issuer's
	// JWKS, the narinfo signing keys).
	// The policy is not consulted for it.
	ActionPublic Action = "public"
)

// Kind is the kind of object a request is about: nixname's owned kinds
// (one spelling, shared with the index) and the routes of their own.
type Kind = nixname.Kind

const (
	KindCacheInfo   Kind = "cache-info"
	KindNarInfo          = nixname.KindNarInfo
	KindNar              = nixname.KindNar
	KindLog              = nixname.KindLog
	KindListing          = nixname.KindListing
	KindDebugInfo        = nixname.KindDebugInfo
	KindRealisation      = nixname.KindRealisation
	KindBuildTrace       = nixname.KindBuildTrace
	KindToken       Kind = "token" // POST /_flakegate/token
	KindJWKS        Kind = "jwks"  // GET /_flakegate/jwks
	// KindPublicKeys is GET /_flakegate/public-keys: the narinfo signing
	// keys, served by the blob server (every other /_flakegate/ path is
	// authz's), so that a client configures Nix from the cache itself.
	KindPublicKeys Kind = "public-keys"
	KindWhoami     Kind = "whoami" // GET /_flakegate/whoami
	KindPins       Kind = "pins"   // GET /{org}/{flake}/_pins: the flake's pins (a read)
	KindPin        Kind = "pin"    // PUT, DELETE /{org}/{flake}/_pins/{name}
)

// Request is what a cache URL means.
type Request struct {
	Action Action
	Kind   Kind
	// Flake is the namespace; zero for the union view and for /_flakegate.
	Flake nixname.Flake
	// Hash is the 32-character store path hash for narinfo and listing,
	// the file hash (nixbase32, 52 characters) for a NAR, the derivation
	// file name (e.g. "<hash>-hello.drv") for a build log, the build id
	// (40 hex digits, then ".debug" as Nix writes it) for debug info, the derivation output id
	// ("sha256:<64 hex>!out") for a realisation and "<drv file name>/<output>"
	// for a build trace entry: the object's key, also what the owners
	// endpoint is asked about (see OwnersKey).
	Hash string
	// File is the NAR file name below nar/ (e.g. "<filehash>.nar.zst").
	File string
	// Compression is the NAR compression implied by File's extension.
	Compression nixname.Compression
	// Name is a pin's name (KindPin).
	Name string
}

// Union reports whether the request reads through the union view.
func (r Request) Union() bool {
	switch r.Kind {
	case KindToken, KindJWKS, "":
		return false
	}
	return r.Flake.IsZero()
}

// unionPrefixes are the first path segments of union-view objects below a
// directory (/nar/…, /log/…): a path starting with one is never read as
// /{org}/{flake}/….
var unionPrefixes = map[string]bool{"nar": true, "log": true, "debuginfo": true, "realisations": true}

// buildTracePrefix is the directory of Nix ≥ 2.34's realisations
// (BinaryCacheStore::realisationsPrefix): build-trace-v2/<drv>/<output>.doi.
const buildTracePrefix = "build-trace-v2"

// Error is a request the cache does not serve. Status is the HTTP status
// to answer with (400, 404 or 405).
type Error struct {
	Status int
	Msg    string
}

func (e *Error) Error() string { return e.Msg }

// errf is an *Error with a formatted message. The message goes back to
// the client and into the decision and access logs, and a path may be as
// long as the server's header limit: a string argument longer than
// maxQuoted is cut (with "…"), an error argument (nixname's quote the name
// they refuse) at twice that, and the message as a whole at four times.
func errf(status int, format string, args ...any) error {
	for i, a := range args {
		switch v := a.(type) {
		case string:
			args[i] = cutQuoted(v, maxQuoted)
		case error:
			args[i] = cutQuoted(v.Error(), 2*maxQuoted)
		}
	}
	return &Error{Status: status, Msg: cutQuoted(fmt.Sprintf(format, args...), 4*maxQuoted)}
}

// cutQuoted is s, cut to n bytes with "…" when longer.
func cutQuoted(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n], "") + "…"
}

// maxQuoted is the most bytes of a request's text an error message quotes.
const maxQuoted = 200

// LogPath is a request path as the logs write it: a path longer than 1 KiB
// (no valid one is) is cut, with its length, so that a client's long URL
// costs a log line of bounded size.
func LogPath(p string) string {
	const max = 1 << 10
	if len(p) <= max {
		return p
	}
	return strings.ToValidUTF8(p[:max], "") + fmt.Sprintf("…(%d bytes)", len(p))
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
	// Split into a stack array: every route has at most 5 segments, and
	// strings.Split's slice was one of the gate's allocations per request
	// (issue 16). A longer path still splits whole (append grows it).
	var buf [8]string
	segs := buf[:0]
	for s := path[1:]; ; {
		seg, more, found := strings.Cut(s, "/")
		segs = append(segs, seg)
		if !found {
			break
		}
		s = more
	}
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
		case len(segs) == 2 && segs[1] == "whoami":
			if !read {
				return Request{}, errf(http.StatusMethodNotAllowed, "%s not allowed on %s: use GET", method, path)
			}
			return Request{Action: ActionWhoami, Kind: KindWhoami}, nil
		case len(segs) == 2 && segs[1] == "public-keys":
			if !read {
				return Request{}, errf(http.StatusMethodNotAllowed, "%s not allowed on %s: use GET", method, path)
			}
			return Request{Action: ActionPublic, Kind: KindPublicKeys}, nil
		}
		return Request{}, errf(http.StatusNotFound, "no such resource: %q", path)
	}

	var r Request
	rest := segs
	// Union view: /nix-cache-info, /{hash}.narinfo, /{hash}.ls, /nar/{file},
	// /log/{drv}, /debuginfo/{id}, /realisations/{id}.doi and
	// /build-trace-v2/{drv}/{output}.doi. The last has three segments, as
	// /{org}/{flake}/{x} has, but no flake object is named "{output}.doi".
	unionShape := len(segs) == 1 || (len(segs) == 2 && unionPrefixes[segs[0]]) ||
		(len(segs) == 3 && segs[0] == buildTracePrefix && strings.HasSuffix(segs[2], ".doi"))
	if !unionShape {
		if len(segs) < 3 {
			return Request{}, errf(http.StatusNotFound, "no such resource: %q (want /{org}/{flake}/…)", path)
		}
		// "org/name" is the path's own text: no concatenation.
		f, err := nixname.ParseFlake(path[1 : 1+len(segs[0])+1+len(segs[1])])
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

	case len(rest) == 1 && strings.HasSuffix(rest[0], ".ls"):
		h := strings.TrimSuffix(rest[0], ".ls")
		if !nixname.IsStoreHash(h) {
			return Request{}, errf(http.StatusBadRequest, "%q is not a store path hash (32 nixbase32 characters)", h)
		}
		r.Kind, r.Hash = KindListing, h

	case len(rest) == 1 && rest[0] == "_pins" && !r.Flake.IsZero():
		if !read {
			return Request{}, errf(http.StatusMethodNotAllowed, "%s not allowed on %s: GET lists the pins; PUT or DELETE %s/{name}", method, path, path)
		}
		r.Action, r.Kind = ActionRead, KindPins
		return r, nil

	case len(rest) == 2 && rest[0] == "_pins" && !r.Flake.IsZero():
		if err := nixname.CheckPinName(rest[1]); err != nil {
			return Request{}, errf(http.StatusBadRequest, "%v", err)
		}
		if method != http.MethodPut && method != http.MethodDelete {
			return Request{}, errf(http.StatusMethodNotAllowed, "%s not allowed on %s: PUT (body: the store path) pins, DELETE unpins", method, path)
		}
		r.Action, r.Kind, r.Name = ActionPin, KindPin, rest[1]
		return r, nil

	case len(rest) == 2 && rest[0] == "log":
		if !validLogName(rest[1]) {
			return Request{}, errf(http.StatusBadRequest, "%q is not a derivation file name", rest[1])
		}
		r.Kind, r.Hash = KindLog, rest[1]

	case len(rest) == 2 && rest[0] == "debuginfo":
		// Nix names the link after the debug file: <build id>.debug
		// (BinaryCacheStore::uploadData: "debuginfo/" + s1 + s2, s2 being
		// "<38 hex>.debug"); the bare build id is accepted too.
		if !nixname.IsBuildID(strings.TrimSuffix(rest[1], ".debug")) {
			return Request{}, errf(http.StatusBadRequest, "%q is not a build id (40 lower-case hex digits, then .debug)", rest[1])
		}
		r.Kind, r.Hash = KindDebugInfo, rest[1]

	case len(rest) == 2 && rest[0] == "realisations":
		id, ok := strings.CutSuffix(rest[1], ".doi")
		if !ok || !nixname.IsDrvOutputID(id) {
			return Request{}, errf(http.StatusBadRequest, "%q is not a realisation file name (sha256:<64 hex digits>!<output>.doi)", rest[1])
		}
		r.Kind, r.Hash = KindRealisation, id

	case len(rest) == 3 && rest[0] == buildTracePrefix:
		out, ok := strings.CutSuffix(rest[2], ".doi")
		if !ok || !validLogName(rest[1]) || !strings.HasSuffix(rest[1], ".drv") || !nixname.IsOutputName(out) {
			return Request{}, errf(http.StatusBadRequest, "%q is not a build trace file name (%s/<hash>-<name>.drv/<output>.doi)", strings.Join(rest, "/"), buildTracePrefix)
		}
		r.Kind, r.Hash = KindBuildTrace, rest[1]+"/"+out

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
