package cacheserver

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"strings"
	"testing"

	promtest "github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/flakegate/flakegate/internal/index"
	"github.com/flakegate/flakegate/internal/nixname"
	"github.com/flakegate/flakegate/internal/route"
)

// bigListing is a valid listing of about size bytes: one directory of
// many regular files.
func bigListing(size int) []byte {
	var l bytes.Buffer
	l.WriteString(`{"version":1,"root":{"type":"directory","entries":{`)
	for i := 0; l.Len() < size; i++ {
		if i > 0 {
			l.WriteByte(',')
		}
		fmt.Fprintf(&l, `"f%07d":{"type":"regular","size":0,"narOffset":0}`, i)
	}
	l.WriteString(`}}}`)
	return l.Bytes()
}

// allocated sends one request and returns the answer's status, headers,
// the SHA-256 and length of its body, and the MiB allocated in the
// process (server and client) meanwhile.
func allocated(t *testing.T, method, url string, body []byte, header ...string) (int, http.Header, string, int64, uint64) {
	t.Helper()
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	resp, err := rawClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	n, err := io.Copy(h, resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	runtime.ReadMemStats(&after)
	return resp.StatusCode, resp.Header, hex.EncodeToString(h.Sum(nil)), n, (after.TotalAlloc - before.TotalAlloc) >> 20
}

func sum(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// A .ls listing's reads cost about what they send (adversarial review r4,
// F3): a listing that decodes to 40 MiB, stored as well under 1 MiB of
// zstd in two flakes, was decoded whole into memory by a HEAD or a 1-byte
// Range of a client not accepting zstd (112 MiB allocated), and by every
// union read of a reader of both flakes, whatever it accepted. Now a union
// read compares the digests taken at upload, and a client that does not
// accept the stored encoding gets a stream decoded as it is sent.
func TestListingReadsCostWhatIsSent(t *testing.T) {
	if testing.Short() {
		t.Skip("a 40 MiB listing")
	}
	ts := newTestServer(t, "", nil, nil)
	p := makePath(t, "big-listing", "none")
	ts.push(t, "omnicorp/a", p)
	ts.push(t, "omnicorp/b", p)
	plain := bigListing(40 << 20)
	stored := encode(t, "zstd", plain)
	t.Logf("listing: %d bytes, %d as zstd", len(plain), len(stored))
	for _, f := range []string{"omnicorp/a", "omnicorp/b"} {
		st, _, _, _, mib := allocated(t, "PUT", ts.URL+"/"+f+"/"+p.Hash+".ls", stored, "Content-Encoding", "zstd")
		if st != 201 {
			t.Fatalf("upload of the listing to %s: %d", f, st)
		}
		t.Logf("upload to %s: %d MiB allocated", f, mib)
	}
	ls := "/" + p.Hash + ".ls"
	const bound = 16 // MiB; decoding the listing into memory alone is 40
	for _, c := range []struct {
		name, method, url string
		header            []string
		status            int
		sum               string
		length            int64
	}{
		{"flake GET, zstd accepted", "GET", "/omnicorp/a" + ls, []string{"Accept-Encoding", "zstd"}, 200, sum(stored), int64(len(stored))},
		{"flake GET of 1 byte, zstd not accepted", "GET", "/omnicorp/a" + ls, []string{"Accept-Encoding", "gzip", "Range", "bytes=0-0"}, 206, sum(plain[:1]), 1},
		{"flake GET of the last 10 bytes, zstd not accepted", "GET", "/omnicorp/a" + ls, []string{"Accept-Encoding", "gzip", "Range", "bytes=-10"}, 206, sum(plain[len(plain)-10:]), 10},
		{"flake HEAD, zstd not accepted", "HEAD", "/omnicorp/a" + ls, []string{"Accept-Encoding", "gzip"}, 200, sum(nil), 0},
		{"flake GET, zstd not accepted: the whole listing, decoded", "GET", "/omnicorp/a" + ls, []string{"Accept-Encoding", "gzip"}, 200, sum(plain), int64(len(plain))},
		{"union GET, two readable owners, zstd accepted", "GET", ls, []string{"Accept-Encoding", "zstd", route.ReadableHeader, "omnicorp/a omnicorp/b"}, 200, sum(stored), int64(len(stored))},
		{"union HEAD, two readable owners, zstd not accepted", "HEAD", ls, []string{"Accept-Encoding", "gzip", route.ReadableHeader, "omnicorp/a omnicorp/b"}, 200, sum(nil), 0},
	} {
		st, h, got, n, mib := allocated(t, c.method, ts.URL+c.url, nil, c.header...)
		t.Logf("%s: %d, %d bytes, %d MiB allocated", c.name, st, n, mib)
		if st != c.status || got != c.sum || n != c.length {
			t.Errorf("%s: %d with %d bytes (sha256 %s); want %d with %d bytes (sha256 %s)", c.name, st, n, got, c.status, c.length, c.sum)
		}
		if c.method == "HEAD" && strings.Contains(c.name, "not accepted") && h.Get("Content-Length") != fmt.Sprint(len(plain)) {
			t.Errorf("%s: Content-Length %q, want the decoded size %d", c.name, h.Get("Content-Length"), len(plain))
		}
		if mib > bound {
			t.Errorf("%s of a listing stored as %d bytes: %d MiB allocated, want at most %d", c.name, len(stored), mib, bound)
		}
	}
}

// Listings recorded before digests were stored (index.File.Size -1: an
// index migrated from an older server) are compared and served as
// before: their digest and size are computed on the first read and
// stored, and copies that disagree are still a conflict.
func TestListingWithoutDigestCompletedOnRead(t *testing.T) {
	ts := newTestServer(t, "", nil, nil)
	p := makePath(t, "old-listing", "none")
	flakes := []nixname.Flake{{Org: "omnicorp", Name: "a"}, {Org: "omnicorp", Name: "b"}, {Org: "evilcorp", Name: "tools"}}
	listing := filesOf(p)[0].body
	other := bytes.Replace(listing, []byte(`"size":5`), []byte(`"size":6`), 1)
	ctx := context.Background()
	for i, f := range flakes {
		ts.push(t, f.String(), p)
		data, enc := encode(t, "zstd", listing), "zstd"
		switch i {
		case 1:
			data, enc = encode(t, "gzip", listing), "gzip" // the same listing, another encoding
		case 2:
			data = encode(t, "zstd", other)
		}
		// As a server before digests wrote it.
		if err := ts.idx.PutFile(ctx, f, index.File{Kind: nixname.KindListing, Key: p.Hash, Needs: p.Hash, Encoding: enc, Data: data, Size: -1}); err != nil {
			t.Fatal(err)
		}
	}
	ls := ts.URL + "/" + p.Hash + ".ls"
	if a := fileExchange(t, "GET", ls, nil, hdr(route.ReadableHeader, "omnicorp/a omnicorp/b", "Accept-Encoding", "identity")); a.Status != 200 || a.Body != string(listing) {
		t.Fatalf("union of agreeing listings without digests: %+v", a)
	}
	for _, f := range flakes[:2] {
		got, err := ts.idx.GetFile(ctx, f, nixname.KindListing, p.Hash)
		if err != nil || got.Digest != "sha256:"+sum(listing) || got.Size != int64(len(listing)) {
			t.Fatalf("%s's listing after its first read: digest %q size %d, %v; want sha256:%s, %d", f, got.Digest, got.Size, err, sum(listing), len(listing))
		}
	}
	before := promtest.ToFloat64(ts.metrics.unionConflicts)
	if a := fileExchange(t, "GET", ls, nil, hdr(route.ReadableHeader, "omnicorp/a evilcorp/tools")); a.Status != 404 {
		t.Fatalf("union of disagreeing listings without digests: %+v", a)
	}
	if got := promtest.ToFloat64(ts.metrics.unionConflicts) - before; got != 1 {
		t.Errorf("conflicts counted: %v, want 1", got)
	}
	// A flake's own, decoded for a client not accepting zstd: its size
	// was completed by the union read above.
	if a := fileExchange(t, "GET", ts.URL+"/evilcorp/tools/"+p.Hash+".ls", nil, hdr("Accept-Encoding", "gzip")); a.Status != 200 || a.Body != string(other) {
		t.Fatalf("evilcorp's listing, decoded: %+v", a)
	}
}

// Union realisations and build trace entries agree on the whole output
// path, hash and name, and on the dependent realisations (adversarial
// review r1, finding 3): they compared the output's hash only, so that an
// attacker's realisation naming the target's output hash under another
// name, with dependents of its choosing, was served to a reader of both
// where narinfos that disagree the same way are 404. Signatures may
// differ. At upload, the output must be the flake's path under that very
// name.
func TestUnionRealisationAgreesOnOutputAndDependents(t *testing.T) {
	const target, attacker = "omnicorp/super-duper-secure", "evil/x"
	readBoth := hdr(route.ReadableHeader, attacker+" "+target)
	ts := newTestServer(t, "", nil, nil)
	genuine := makePath(t, "ca-output", nixname.CompressionXZ)
	ts.push(t, target, genuine)
	renamed := makePath(t, "anything", nixname.CompressionXZ)
	renamed.Hash, renamed.Base = genuine.Hash, genuine.Hash+"-trojan"
	ts.push(t, attacker, renamed)

	id := "sha256:" + fmt.Sprintf("%x", sha256Of([]byte("ca-drv"))) + "!out"
	real := func(out, deps, sig string) []byte {
		return []byte(`{"dependentRealisations":{` + deps + `},"id":"` + id + `","outPath":"` + out + `","signatures":["` + sig + `"]}`)
	}
	dep := `"sha256:` + strings.Repeat("ab", 32) + `!out":"` + storeHash("x") + `-whatever"`
	put := func(flake, path string, body []byte, want int) {
		t.Helper()
		if a := fileExchange(t, "PUT", ts.URL+"/"+flake+"/"+path, body, nil); a.Status != want {
			t.Fatalf("PUT %s of %s: %+v, want %d", path, flake, a, want)
		}
	}
	union := func(path string) answer {
		t.Helper()
		return fileExchange(t, "GET", ts.URL+"/"+path, nil, readBoth)
	}
	conflicts := func() float64 { return promtest.ToFloat64(ts.metrics.unionConflicts) }

	rpath := "realisations/" + id + ".doi"
	put(target, rpath, real(genuine.Base, "", "k-1:c2ln"), 201)
	// The output is the flake's path under its very name.
	if a := fileExchange(t, "PUT", ts.URL+"/"+target+"/"+rpath, real(renamed.Base, "", "k-1:c2ln"), nil); a.Status != 400 || !strings.Contains(a.Body, "which holds /nix/store/"+genuine.Base) {
		t.Errorf("a realisation naming the flake's output under another name: %+v; want 400", a)
	}
	put(attacker, rpath, real(renamed.Base, dep, "evil-1:c2ln"), 201)
	if n := exchange(t, "GET", ts.URL+"/"+genuine.Hash+".narinfo", nil, readBoth); n.Status != 404 {
		t.Fatalf("union narinfo of disagreeing flakes: %d, want 404", n.Status)
	}
	before := conflicts()
	if a := union(rpath); a.Status != 404 || a.Body != route.BodyNotFound {
		t.Errorf("union realisation naming another store path name (and other dependents): %+v; want 404", a)
	}
	if got := conflicts() - before; got != 1 {
		t.Errorf("conflicts counted: %v, want 1", got)
	}

	// A flake with the very output, other dependent realisations: a conflict.
	const third = "evil/y"
	ts.push(t, third, genuine)
	put(third, rpath, real(genuine.Base, dep, "evil-1:c2ln"), 201)
	before = conflicts()
	if a := fileExchange(t, "GET", ts.URL+"/"+rpath, nil, hdr(route.ReadableHeader, target+" "+third)); a.Status != 404 {
		t.Errorf("union realisation with other dependent realisations: %+v; want 404", a)
	}
	if got := conflicts() - before; got != 1 {
		t.Errorf("conflicts counted: %v, want 1", got)
	}
	// The same output and dependents, signed by another key: they agree,
	// and the first flake's (by name) is served.
	const fourth = "omnicorp/mirror"
	ts.push(t, fourth, genuine)
	put(fourth, rpath, real(genuine.Base, "", "mirror-1:c2ln"), 201)
	if a := fileExchange(t, "GET", ts.URL+"/"+rpath, nil, hdr(route.ReadableHeader, fourth+" "+target)); a.Status != 200 || !strings.Contains(a.Body, `"mirror-1:c2ln"`) {
		t.Errorf("union realisation of flakes that agree but for signatures: %+v; want %s's", a, fourth)
	}
	// A re-push of the kept realisation with other signatures is 200.
	put(target, rpath, real(genuine.Base, "", "k-2:c2ln"), 200)

	// Build trace entries likewise.
	bpath := "build-trace-v2/" + storeHash("drv") + "-ca.drv/out.doi"
	trace := func(out string) []byte { return []byte(`{"outPath":"` + out + `","signatures":[]}`) }
	put(target, bpath, trace(genuine.Base), 201)
	put(attacker, bpath, trace(renamed.Base), 201)
	if a := fileExchange(t, "PUT", ts.URL+"/"+target+"/"+bpath, trace(renamed.Base), nil); a.Status != 400 || !strings.Contains(a.Body, "which holds") {
		t.Errorf("a build trace entry naming the flake's output under another name: %+v; want 400", a)
	}
	if a := union(bpath); a.Status != 404 {
		t.Errorf("union build trace entry naming another store path name: %+v; want 404", a)
	}
	put(fourth, bpath, trace(genuine.Base), 201)
	if a := fileExchange(t, "GET", ts.URL+"/"+bpath, nil, hdr(route.ReadableHeader, fourth+" "+target)); a.Status != 200 || a.Body != string(trace(genuine.Base)) {
		t.Errorf("union build trace entry of agreeing flakes: %+v", a)
	}
}
