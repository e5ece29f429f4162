package route

import (
	"net/http"
	"strings"
	"testing"

	"github.com/flakegate/flakegate/internal/nixname"
)

// canonical rebuilds the path of a parsed request.
func canonical(r Request) string {
	prefix := ""
	if !r.Flake.IsZero() {
		prefix = "/" + r.Flake.String()
	}
	switch r.Kind {
	case KindCacheInfo:
		return prefix + "/nix-cache-info"
	case KindNarInfo:
		return prefix + "/" + r.Hash + ".narinfo"
	case KindNar:
		return prefix + "/nar/" + r.File
	case KindLog:
		return prefix + "/log/" + r.Hash
	case KindToken:
		return "/_flakegate/token"
	case KindJWKS:
		return "/_flakegate/jwks"
	}
	return ""
}

// FuzzParse: Parse never panics; errors carry 400/404/405; every accepted
// request is self-consistent and its canonical path parses to the same
// request (so authz and the blob server, which both parse, agree).
func FuzzParse(f *testing.F) {
	for _, s := range []struct{ m, p string }{
		{"GET", "/nix-cache-info"},
		{"GET", "/omnicorp/dev/0jqd0rlxzra1rs38rdxl43yh6rxchgc6.narinfo"},
		{"PUT", "/omnicorp/dev/nar/05ra3y72i3qjri7xskf9qj8kb29r6naqy1sqpbs3azi3xcigmj56.nar.xz"},
		{"HEAD", "/nar/05ra3y72i3qjri7xskf9qj8kb29r6naqy1sqpbs3azi3xcigmj56.nar"},
		{"GET", "/Omni/Dev/log/0jqd0rlxzra1rs38rdxl43yh6rxchgc6-hello.drv"},
		{"POST", "/_flakegate/token"},
		{"GET", "/a/b/../c?x#y"},
	} {
		f.Add(s.m, s.p)
	}
	f.Fuzz(func(t *testing.T, method, path string) {
		r, err := Parse(method, path)
		if err != nil {
			switch StatusOf(err) {
			case http.StatusBadRequest, http.StatusNotFound, http.StatusMethodNotAllowed:
			default:
				t.Fatalf("status %d for %v", StatusOf(err), err)
			}
			return
		}
		if !r.Flake.IsZero() {
			if g, err := nixname.ParseFlake(r.Flake.String()); err != nil || g != r.Flake {
				t.Fatalf("accepted flake %q that ParseFlake refuses/changes", r.Flake)
			}
			if strings.ContainsAny(r.Flake.String()[len(r.Flake.Org)+1:], "/") {
				t.Fatalf("flake name with a slash: %q", r.Flake)
			}
		}
		switch r.Kind {
		case KindNarInfo:
			if !nixname.IsStoreHash(r.Hash) {
				t.Fatalf("narinfo hash %q", r.Hash)
			}
		case KindNar:
			if nixname.NarFileName(r.Hash, r.Compression) != r.File || strings.Contains(r.File, "/") {
				t.Fatalf("nar file %q hash %q compression %q", r.File, r.Hash, r.Compression)
			}
		case KindLog:
			if r.Flake.IsZero() || strings.ContainsAny(r.Hash, "/\\") || r.Hash == "." || r.Hash == ".." {
				t.Fatalf("log %q in %q", r.Hash, r.Flake)
			}
		}
		if r.Action == ActionPush && (r.Flake.IsZero() || method != http.MethodPut) {
			t.Fatalf("push %+v from %s %q", r, method, path)
		}
		if r.Action == ActionRead && method != http.MethodGet && method != http.MethodHead {
			t.Fatalf("read from method %q", method)
		}
		c := canonical(r)
		r2, err := Parse(method, c)
		if err != nil || r2 != r {
			t.Fatalf("canonical path %q of %q parses to %+v, %v; want %+v", c, path, r2, err, r)
		}
	})
}
