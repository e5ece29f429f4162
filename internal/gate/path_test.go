package gate

import (
	"errors"
	"net/http/httptest"
	"testing"
)

func TestCanonicalPath(t *testing.T) {
	tests := []struct {
		in, want string
		err      error
	}{
		{in: "/omnicorp/app/0a9g8mz2ck6lw5yyz3bh3nxa0cacp2v1.narinfo", want: "/omnicorp/app/0a9g8mz2ck6lw5yyz3bh3nxa0cacp2v1.narinfo"},
		{in: "/", want: "/"},
		{in: "*", want: "*"},
		{in: "//omnicorp///app/nix-cache-info", want: "/omnicorp/app/nix-cache-info"},
		{in: "/omnicorp/x/../app/nix-cache-info", want: "/omnicorp/app/nix-cache-info"},
		{in: "/omnicorp/./app/./nix-cache-info", want: "/omnicorp/app/nix-cache-info"},
		{in: "/../../etc/passwd", want: "/etc/passwd"},
		{in: "/a/b/..", want: "/a/"},
		{in: "/a/b/.", want: "/a/b/"},
		{in: "/a/.hidden/b", want: "/a/.hidden/b"},
		{in: "/a/..b/c", want: "/a/..b/c"},
		{in: "/%6Fmnicorp/app", want: "/omnicorp/app"},       // unreserved decoded
		{in: "/omnicorp/%2e%2E/secret/x", want: "/secret/x"}, // encoded dots are dots
		{in: "/a%3fb/c%20d", want: "/a%3Fb/c%20d"},           // reserved stay escaped, hex upper-cased
		{in: "/omnicorp%2Fsecret/x", err: errEscapedSlash},   // REJECT_REQUEST
		{in: "/omnicorp%2fsecret/x", err: errEscapedSlash},   // any case
		{in: "/a%5Cb", err: errEscapedSlash},                 // backslash too
		{in: "/a%5cb", err: errEscapedSlash},                 //
		{in: "/trailing%", want: "/trailing%25"},             // not an escape: escaped
		{in: "/a%zz", want: "/a%25zz"},                       //
		{in: "/a//b/%2E%2E//c", want: "/a/c"},
		{in: "/%%370", want: "/%2570"}, // never decoded twice                // merge, then dots
	}
	for _, tc := range tests {
		got, err := canonicalPath(tc.in)
		if !errors.Is(err, tc.err) {
			t.Errorf("canonicalPath(%q) error = %v, want %v", tc.in, err, tc.err)
			continue
		}
		if err == nil && got != tc.want {
			t.Errorf("canonicalPath(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestCanonicalizeRequest(t *testing.T) {
	r := httptest.NewRequest("GET", "//omnicorp/x/../app/%6Eix-cache-info?a=1", nil)
	if err := canonicalizeRequest(r); err != nil {
		t.Fatal(err)
	}
	if r.URL.Path != "/omnicorp/app/nix-cache-info" || r.RequestURI != "/omnicorp/app/nix-cache-info?a=1" {
		t.Errorf("path %q, request URI %q", r.URL.Path, r.RequestURI)
	}
	if r.URL.EscapedPath() != r.URL.Path {
		t.Errorf("escaped path %q disagrees with path %q", r.URL.EscapedPath(), r.URL.Path)
	}

	r = httptest.NewRequest("GET", "/omnicorp%2Fsecret/x", nil)
	if err := canonicalizeRequest(r); !errors.Is(err, errEscapedSlash) {
		t.Errorf("escaped slash: err = %v", err)
	}

	// The common path is left untouched (same string, no rewrite).
	r = httptest.NewRequest("GET", "/omnicorp/app/nix-cache-info", nil)
	before := r.RequestURI
	if err := canonicalizeRequest(r); err != nil || r.RequestURI != before || r.URL.RawPath != "" {
		t.Errorf("clean path rewritten: %q raw %q err %v", r.RequestURI, r.URL.RawPath, err)
	}
}

func FuzzCanonicalPath(f *testing.F) {
	for _, s := range []string{"/", "//a/../b", "/%2e%2e/x", "/a%2Fb", "/a/./b/../../c/"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p string) {
		got, err := canonicalPath("/" + p)
		if err != nil {
			return
		}
		// The result is a fixed point and has no dot or empty segments.
		again, err := canonicalPath(got)
		if err != nil || again != got {
			t.Fatalf("not idempotent: %q -> %q -> %q (%v)", p, got, again, err)
		}
	})
}
