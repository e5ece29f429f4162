package route

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/flakegate/flakegate/internal/nixname"
)

const (
	h32   = "0jqd0rlxzra1rs38rdxl43yh6rxchgc6"
	h52   = "05ra3y72i3qjri7xskf9qj8kb29r6naqy1sqpbs3azi3xcigmj56"
	flkA  = "omnicorp/dev-environments"
	bid   = "0123456789abcdef0123456789abcdef01234567"
	hex64 = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	rid   = "sha256:" + hex64 + "!out"
)

func TestParse(t *testing.T) {
	fl := nixname.Flake{Org: "omnicorp", Name: "dev-environments"}
	tests := []struct {
		method, path string
		want         Request
		status       int // 0: success
	}{
		// cache info
		{"GET", "/nix-cache-info", Request{Action: ActionInfo, Kind: KindCacheInfo}, 0},
		{"HEAD", "/nix-cache-info", Request{Action: ActionInfo, Kind: KindCacheInfo}, 0},
		{"GET", "/" + flkA + "/nix-cache-info", Request{Action: ActionInfo, Kind: KindCacheInfo, Flake: fl}, 0},
		{"PUT", "/" + flkA + "/nix-cache-info", Request{}, 405},
		{"PUT", "/nix-cache-info", Request{}, 405},
		// narinfo
		{"GET", "/" + flkA + "/" + h32 + ".narinfo", Request{Action: ActionRead, Kind: KindNarInfo, Flake: fl, Hash: h32}, 0},
		{"HEAD", "/" + flkA + "/" + h32 + ".narinfo", Request{Action: ActionRead, Kind: KindNarInfo, Flake: fl, Hash: h32}, 0},
		{"PUT", "/" + flkA + "/" + h32 + ".narinfo", Request{Action: ActionPush, Kind: KindNarInfo, Flake: fl, Hash: h32}, 0},
		{"GET", "/" + h32 + ".narinfo", Request{Action: ActionRead, Kind: KindNarInfo, Hash: h32}, 0},
		{"PUT", "/" + h32 + ".narinfo", Request{}, 405},
		{"DELETE", "/" + flkA + "/" + h32 + ".narinfo", Request{}, 405},
		{"GET", "/" + flkA + "/" + h32[:31] + ".narinfo", Request{}, 400},
		{"GET", "/" + flkA + "/" + h32[:31] + "e.narinfo", Request{}, 400}, // 'e' is not nixbase32
		{"GET", "/" + flkA + "/" + "0JQD0RLXZRA1RS38RDXL43YH6RXCHGC6.narinfo", Request{}, 400},
		// NARs
		{"GET", "/" + flkA + "/nar/" + h52 + ".nar.xz", Request{Action: ActionRead, Kind: KindNar, Flake: fl, Hash: h52, File: h52 + ".nar.xz", Compression: nixname.CompressionXZ}, 0},
		{"GET", "/" + flkA + "/nar/" + h52 + ".nar.zst", Request{Action: ActionRead, Kind: KindNar, Flake: fl, Hash: h52, File: h52 + ".nar.zst", Compression: nixname.CompressionZstd}, 0},
		{"GET", "/" + flkA + "/nar/" + h52 + ".nar.bz2", Request{Action: ActionRead, Kind: KindNar, Flake: fl, Hash: h52, File: h52 + ".nar.bz2", Compression: nixname.CompressionBzip2}, 0},
		{"PUT", "/" + flkA + "/nar/" + h52 + ".nar", Request{Action: ActionPush, Kind: KindNar, Flake: fl, Hash: h52, File: h52 + ".nar", Compression: nixname.CompressionNone}, 0},
		{"HEAD", "/nar/" + h52 + ".nar", Request{Action: ActionRead, Kind: KindNar, Hash: h52, File: h52 + ".nar", Compression: nixname.CompressionNone}, 0},
		{"PUT", "/nar/" + h52 + ".nar", Request{}, 405},
		{"GET", "/" + flkA + "/nar/" + h52 + ".nar.gz", Request{}, 400},
		{"GET", "/" + flkA + "/nar/" + h32 + ".nar", Request{}, 400}, // 32-char hashes are refused
		{"GET", "/" + flkA + "/nar/" + h52, Request{}, 400},
		{"GET", "/" + flkA + "/nar/" + h52 + ".nar/x", Request{}, 404},
		// logs
		{"GET", "/" + flkA + "/log/" + h32 + "-hello-2.12.drv", Request{Action: ActionRead, Kind: KindLog, Flake: fl, Hash: h32 + "-hello-2.12.drv"}, 0},
		{"PUT", "/" + flkA + "/log/" + h32 + "-hello.drv", Request{Action: ActionPush, Kind: KindLog, Flake: fl, Hash: h32 + "-hello.drv"}, 0},
		{"GET", "/log/" + h32 + "-hello.drv", Request{Action: ActionRead, Kind: KindLog, Hash: h32 + "-hello.drv"}, 0},
		{"PUT", "/log/" + h32 + "-hello.drv", Request{}, 405},
		// listings, debug info, realisations, build traces (issue 13)
		{"GET", "/" + flkA + "/" + h32 + ".ls", Request{Action: ActionRead, Kind: KindListing, Flake: fl, Hash: h32}, 0},
		{"PUT", "/" + flkA + "/" + h32 + ".ls", Request{Action: ActionPush, Kind: KindListing, Flake: fl, Hash: h32}, 0},
		{"GET", "/" + h32 + ".ls", Request{Action: ActionRead, Kind: KindListing, Hash: h32}, 0},
		{"PUT", "/" + h32 + ".ls", Request{}, 405},
		{"GET", "/" + flkA + "/" + h32[:31] + ".ls", Request{}, 400},
		{"GET", "/" + flkA + "/debuginfo/" + bid, Request{Action: ActionRead, Kind: KindDebugInfo, Flake: fl, Hash: bid}, 0},
		{"PUT", "/" + flkA + "/debuginfo/" + bid, Request{Action: ActionPush, Kind: KindDebugInfo, Flake: fl, Hash: bid}, 0},
		{"HEAD", "/debuginfo/" + bid, Request{Action: ActionRead, Kind: KindDebugInfo, Hash: bid}, 0},
		{"GET", "/debuginfo/" + bid[:39], Request{}, 400},
		{"PUT", "/" + flkA + "/debuginfo/" + bid + ".debug", Request{Action: ActionPush, Kind: KindDebugInfo, Flake: fl, Hash: bid + ".debug"}, 0},
		{"GET", "/debuginfo/" + bid + ".debu", Request{}, 400},
		{"GET", "/debuginfo/" + bid[:39] + "A", Request{}, 400},
		{"GET", "/" + flkA + "/debuginfo/" + bid + "/x", Request{}, 404},
		{"GET", "/debuginfo/..", Request{}, 404},
		{"GET", "/" + flkA + "/realisations/" + rid + ".doi", Request{Action: ActionRead, Kind: KindRealisation, Flake: fl, Hash: rid}, 0},
		{"PUT", "/" + flkA + "/realisations/" + rid + ".doi", Request{Action: ActionPush, Kind: KindRealisation, Flake: fl, Hash: rid}, 0},
		{"GET", "/realisations/" + rid + ".doi", Request{Action: ActionRead, Kind: KindRealisation, Hash: rid}, 0},
		{"GET", "/realisations/" + rid, Request{}, 400},
		{"GET", "/realisations/sha256:" + h32 + "!out.doi", Request{}, 400},
		{"GET", "/realisations/sha256:" + hex64 + "!.doi", Request{}, 400},
		{"GET", "/realisations/sha256:" + hex64 + "!a%2fb.doi", Request{}, 400},
		{"GET", "/" + flkA + "/build-trace-v2/" + h32 + "-hello.drv/out.doi", Request{Action: ActionRead, Kind: KindBuildTrace, Flake: fl, Hash: h32 + "-hello.drv/out"}, 0},
		{"PUT", "/" + flkA + "/build-trace-v2/" + h32 + "-hello.drv/dev.doi", Request{Action: ActionPush, Kind: KindBuildTrace, Flake: fl, Hash: h32 + "-hello.drv/dev"}, 0},
		{"GET", "/build-trace-v2/" + h32 + "-hello.drv/out.doi", Request{Action: ActionRead, Kind: KindBuildTrace, Hash: h32 + "-hello.drv/out"}, 0},
		{"PUT", "/build-trace-v2/" + h32 + "-hello.drv/out.doi", Request{}, 405},
		{"GET", "/build-trace-v2/" + h32 + "-hello/out.doi", Request{}, 400},
		{"GET", "/build-trace-v2/" + h32 + "-hello.drv/.out.doi", Request{}, 400},
		{"GET", "/build-trace-v2/" + h32 + "-hello.drv/../out.doi", Request{}, 404},
		// pins
		{"GET", "/" + flkA + "/_pins", Request{Action: ActionRead, Kind: KindPins, Flake: fl}, 0},
		{"HEAD", "/" + flkA + "/_pins", Request{Action: ActionRead, Kind: KindPins, Flake: fl}, 0},
		{"PUT", "/" + flkA + "/_pins", Request{}, 405},
		{"PUT", "/" + flkA + "/_pins/release-1.2", Request{Action: ActionPin, Kind: KindPin, Flake: fl, Name: "release-1.2"}, 0},
		{"DELETE", "/" + flkA + "/_pins/release-1.2", Request{Action: ActionPin, Kind: KindPin, Flake: fl, Name: "release-1.2"}, 0},
		{"GET", "/" + flkA + "/_pins/release", Request{}, 405},
		{"PUT", "/" + flkA + "/_pins/.hidden", Request{}, 400},
		{"PUT", "/" + flkA + "/_pins/a%20b", Request{}, 400},
		{"PUT", "/" + flkA + "/_pins/a/b", Request{}, 404},
		{"GET", "/_pins", Request{}, 404},
		{"PUT", "/_pins/x", Request{}, 404},
		{"GET", "/" + flkA + "/log/hello.drv", Request{}, 400},
		{"GET", "/" + flkA + "/log/" + h32 + "-a b.drv", Request{}, 400},
		// flakes
		{"GET", "/OmniCorp/Dev-Environments/nix-cache-info", Request{Action: ActionInfo, Kind: KindCacheInfo, Flake: fl}, 0},
		{"GET", "/_omni/x/nix-cache-info", Request{}, 400},
		{"GET", "/.omni/x/nix-cache-info", Request{}, 400},
		{"GET", "/omni/-x/nix-cache-info", Request{}, 400},
		{"GET", "/om ni/x/nix-cache-info", Request{}, 400},
		// token service
		{"POST", "/_flakegate/token", Request{Action: ActionExchange, Kind: KindToken}, 0},
		{"GET", "/_flakegate/token", Request{}, 405},
		{"GET", "/_flakegate/jwks", Request{Action: ActionPublic, Kind: KindJWKS}, 0},
		{"POST", "/_flakegate/jwks", Request{}, 405},
		{"GET", "/_flakegate/public-keys", Request{Action: ActionPublic, Kind: KindPublicKeys}, 0},
		{"HEAD", "/_flakegate/public-keys", Request{Action: ActionPublic, Kind: KindPublicKeys}, 0},
		{"PUT", "/_flakegate/public-keys", Request{}, 405},
		{"GET", "/_flakegate/whoami", Request{Action: ActionWhoami, Kind: KindWhoami}, 0},
		{"POST", "/_flakegate/whoami", Request{}, 405},
		{"GET", "/_flakegate/public-keys/x", Request{}, 404},
		{"GET", "/_flakegate/other", Request{}, 404},
		// shapes that are not cache URLs
		{"GET", "/", Request{}, 404},
		{"GET", "", Request{}, 400},
		{"GET", "relative/path", Request{}, 400},
		{"GET", "/" + flkA + "/", Request{}, 404},
		{"GET", "//" + h32 + ".narinfo", Request{}, 404},
		{"GET", "/" + flkA + "/../x/" + h32 + ".narinfo", Request{}, 404},
		{"GET", "/" + flkA + "/./" + h32 + ".narinfo", Request{}, 404},
		{"GET", "/omnicorp/" + h32 + ".narinfo", Request{}, 404},
		{"GET", "/favicon.ico", Request{}, 404},
		// query strings and fragments are ignored
		{"GET", "/" + flkA + "/" + h32 + ".narinfo?x=1", Request{Action: ActionRead, Kind: KindNarInfo, Flake: fl, Hash: h32}, 0},
		{"GET", "/nix-cache-info#frag", Request{Action: ActionInfo, Kind: KindCacheInfo}, 0},
	}
	for _, tt := range tests {
		got, err := Parse(tt.method, tt.path)
		if tt.status == 0 {
			if err != nil {
				t.Errorf("Parse(%s %q): %v", tt.method, tt.path, err)
			} else if got != tt.want {
				t.Errorf("Parse(%s %q) = %+v, want %+v", tt.method, tt.path, got, tt.want)
			}
			continue
		}
		if err == nil {
			t.Errorf("Parse(%s %q) = %+v, want status %d", tt.method, tt.path, got, tt.status)
		} else if s := StatusOf(err); s != tt.status {
			t.Errorf("Parse(%s %q): status %d (%v), want %d", tt.method, tt.path, s, err, tt.status)
		}
	}
}

func TestUnion(t *testing.T) {
	tests := []struct {
		path  string
		union bool
	}{
		{"/" + h32 + ".narinfo", true},
		{"/nar/" + h52 + ".nar", true},
		{"/nix-cache-info", true},
		{"/" + flkA + "/" + h32 + ".narinfo", false},
		{"/" + flkA + "/log/" + h32 + "-x.drv", false},
		{"/log/" + h32 + "-x.drv", true},
		{"/" + h32 + ".ls", true},
		{"/debuginfo/" + bid, true},
		{"/realisations/" + rid + ".doi", true},
		{"/build-trace-v2/" + h32 + "-x.drv/out.doi", true},
		{"/" + flkA + "/build-trace-v2/" + h32 + "-x.drv/out.doi", false},
	}
	for _, tt := range tests {
		r, err := Parse(http.MethodGet, tt.path)
		if err != nil {
			t.Fatal(err)
		}
		if r.Union() != tt.union {
			t.Errorf("%s: Union() = %v", tt.path, r.Union())
		}
	}
	if r, _ := Parse(http.MethodGet, "/_flakegate/jwks"); r.Union() {
		t.Error("/_flakegate/jwks is not the union view")
	}
}

// Every NAR file name nixname writes parses to its hash, compression and
// name, so that route accepts exactly nixname's NAR files.
func TestParseNarFileNames(t *testing.T) {
	for _, c := range nixname.Compressions() {
		name := nixname.NarFileName(h52, c)
		r, err := Parse("GET", "/nar/"+name)
		if err != nil || r.Compression != c || r.Hash != h52 || r.File != name {
			t.Errorf("%s: %s parses to %+v, %v", c, name, r, err)
		}
	}
}

// Every owned kind's owners path parses back to the object it was made
// from, and keys of another kind or shape are refused.
func TestOwnersPath(t *testing.T) {
	for _, p := range []string{
		"/" + h32 + ".narinfo", "/nar/" + h52 + ".nar.zst", "/" + h32 + ".ls", "/log/" + h32 + "-x.drv",
		"/debuginfo/" + bid, "/realisations/" + rid + ".doi", "/build-trace-v2/" + h32 + "-x.drv/out.doi",
	} {
		r, err := Parse(http.MethodGet, p)
		if err != nil {
			t.Fatal(err)
		}
		op, ok := OwnersPath(r)
		if !ok {
			t.Fatalf("%s: no owners path", p)
		}
		kind, key, _ := strings.Cut(strings.TrimPrefix(op, OwnersPrefix), "/")
		back, err := ParseOwnersPath(kind, key)
		if err != nil || back != r {
			t.Errorf("%s: owners path %s parses to %+v, %v", p, op, back, err)
		}
	}
	for _, c := range [][2]string{
		{"narinfo", h32 + ".narinfo"}, {"narinfo", "../" + h32}, {"listing", h52}, {"nar", h52},
		{"debuginfo", bid + "/x"}, {"realisation", "sha256:" + h32 + "!out"}, {"build-trace", h32 + "-x.drv"},
		{"cache-info", ""}, {"token", ""}, {"narinfo", h32 + ".narinfo?x=" + h32},
	} {
		want := 400
		if c[0] == "cache-info" || c[0] == "token" {
			want = 404
		}
		if r, err := ParseOwnersPath(c[0], c[1]); err == nil || StatusOf(err) != want {
			t.Errorf("ParseOwnersPath(%q, %q) = %+v, %v; want %d", c[0], c[1], r, err, want)
		}
	}
}

// TestParseLongPaths: paths with more segments than Parse's stack array
// are split whole, as shorter ones (the array grows, nothing is dropped).
func TestParseLongPaths(t *testing.T) {
	for path, want := range map[string]int{
		"/omnicorp/app/a/b/c/d/e/f/g/h/i": http.StatusNotFound,
		"/Bad!/app/a/b/c/d/e/f/g/h/i":     http.StatusBadRequest,
		"/omnicorp/app/a/b/c/d/e/f//h/i":  http.StatusNotFound,
	} {
		if r, err := Parse(http.MethodGet, path); err == nil || StatusOf(err) != want {
			t.Errorf("Parse(GET, %q) = %+v, %v; want %d", path, r, err, want)
		}
	}
	r, err := Parse(http.MethodGet, "/omnicorp/app/build-trace-v2/"+strings.Repeat("0", 32)+"-x.drv/out.doi")
	if err != nil || r.Flake.String() != "omnicorp/app" || r.Kind != KindBuildTrace {
		t.Fatalf("five-segment route: %+v, %v", r, err)
	}
}

// BenchmarkParse is the gate's hot path: a narinfo read, parsed once by
// authz and once by the blob server per request (0 allocations).
func BenchmarkParse(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Parse(http.MethodGet, "/omnicorp/app/0123456789abcdfghijklmnpqrsvwxyz.narinfo"); err != nil {
			b.Fatal(err)
		}
	}
}

// A long request path is quoted short in errors and logged short: errors go
// back to anyone who sends a URL, and into two logs.
func TestLongPathsAreQuotedShort(t *testing.T) {
	long := "/" + strings.Repeat("é", 40<<10) + ".narinfo"
	_, err := Parse("GET", long)
	if err == nil || len(err.Error()) > 2*maxQuoted+100 || !strings.Contains(err.Error(), "…") || !utf8.ValidString(err.Error()) {
		t.Errorf("Parse of a %d-byte path: error of %d bytes: %.300q", len(long), len(err.Error()), err)
	}
	if got := LogPath(long); len(got) > 1<<10+32 || !strings.HasSuffix(got, fmt.Sprintf("…(%d bytes)", len(long))) || !utf8.ValidString(got) {
		t.Errorf("LogPath of a %d-byte path: %d bytes, %.80q…", len(long), len(got), got)
	}
	// Names refused by nixname (its error quotes them) are cut too.
	bad := strings.Repeat("!", 50<<10)
	for _, c := range []struct{ method, path string }{
		{http.MethodGet, "/" + bad + "/app/nix-cache-info"},
		{http.MethodGet, "/omnicorp/" + bad + "/nix-cache-info"},
		{http.MethodPut, "/omnicorp/app/_pins/" + bad},
	} {
		if _, err := Parse(c.method, c.path); err == nil || len(err.Error()) > 4*maxQuoted+8 {
			t.Errorf("%s %.40s… (%d bytes): error of %d bytes", c.method, c.path, len(c.path), len(err.Error()))
		}
	}
	if p := "/omnicorp/app/nix-cache-info"; LogPath(p) != p {
		t.Errorf("LogPath(%q) = %q", p, LogPath(p))
	}
}
