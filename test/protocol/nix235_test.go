package protocol

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/andybalholm/brotli"
	"github.com/klauspost/compress/zstd"
	"github.com/nix-community/go-nix/pkg/nar"
	"github.com/nix-community/go-nix/pkg/nixbase32"

	"github.com/flakegate/flakegate/internal/nixcache"
	"github.com/flakegate/flakegate/internal/route"
	"github.com/flakegate/flakegate/test/teststack"
)

// Nix 2.35.2, src/libstore/filetransfer.cc, TransferItem: the statuses a
// transfer takes for success (successfulStatuses); every other status is
// an error, and HttpBinaryCacheStore::getFile / fileExists turn 404 and
// 403 (NotFound, Forbidden) into "no such file" — a silent miss.
var successful = []int{200, 201, 204, 206, 304}

// userAgent is what TransferItem::init sets (CURLOPT_USERAGENT).
const userAgent = "curl/8.17.0 Nix/2.35.2"

// acceptEncoding is what libcurl sends for CURLOPT_ACCEPT_ENCODING ""
// (TransferItem::init: "enable all supported encodings") on downloads,
// never on uploads; a libcurl with brotli and zstd.
const acceptEncoding = "deflate, gzip, br, zstd"

// buildID is the ELF build id of the debug file in the output's NAR.
const buildID = "0123456789abcdef0123456789abcdef01234567"

// storePath is one path as Nix uploads it: its NAR (zstd, the store's
// compression=zstd), narinfo and listing.
type storePath struct {
	base, hash string
	refs       []string
	nar, file  []byte // NAR, and the file as uploaded (zstd)
	fileName   string // below nar/
	listing    []byte
}

func storeHash(name string) string {
	h := sha256.Sum256([]byte(name))
	return nixbase32.EncodeToString(h[:20])
}

// entry is one file of a NAR.
type entry struct {
	path, contents string
	dir, exec      bool
}

func makePath(t *testing.T, name string, entries []entry, refs ...string) storePath {
	t.Helper()
	var b bytes.Buffer
	w, err := nar.NewWriter(&b)
	if err != nil {
		t.Fatal(err)
	}
	// The listing Nix writes (BinaryCacheStore::uploadData: {"version":1,
	// "root": narAccessor->getListing()}, keys sorted as nlohmann dumps them).
	type node = map[string]any
	root := node{"type": "directory", "entries": node{}}
	must(t, w.WriteHeader(&nar.Header{Path: "/", Type: nar.TypeDirectory}))
	for _, e := range entries {
		parent := root
		parts := strings.Split(e.path, "/")
		for _, p := range parts[:len(parts)-1] {
			parent = parent["entries"].(node)[p].(node)
		}
		last := parts[len(parts)-1]
		if e.dir {
			must(t, w.WriteHeader(&nar.Header{Path: "/" + e.path, Type: nar.TypeDirectory}))
			parent["entries"].(node)[last] = node{"type": "directory", "entries": node{}}
			continue
		}
		must(t, w.WriteHeader(&nar.Header{Path: "/" + e.path, Type: nar.TypeRegular, Size: int64(len(e.contents)), Executable: e.exec}))
		_, err := io.WriteString(w, e.contents)
		must(t, err)
		parent["entries"].(node)[last] = node{"type": "regular", "size": len(e.contents), "executable": e.exec}
	}
	must(t, w.Close())
	listing, err := json.Marshal(node{"version": 1, "root": root})
	must(t, err)
	enc, err := zstd.NewWriter(nil)
	must(t, err)
	file := enc.EncodeAll(b.Bytes(), nil)
	enc.Close()
	fh := sha256.Sum256(file)
	p := storePath{hash: storeHash(name), refs: refs, nar: b.Bytes(), file: file, listing: listing,
		fileName: nixbase32.EncodeToString(fh[:]) + ".nar.zst"}
	p.base = p.hash + "-" + name
	return p
}

// narInfo is what NarInfo::to_string writes for p, signed by the CI job's
// secret-key (the server drops it and signs with its own).
func (p storePath) narInfo() string {
	fh, nh := sha256.Sum256(p.file), sha256.Sum256(p.nar)
	return fmt.Sprintf("StorePath: /nix/store/%s\nURL: nar/%s\nCompression: zstd\nFileHash: sha256:%s\nFileSize: %d\nNarHash: sha256:%s\nNarSize: %d\nReferences: %s\nDeriver: %s-x.drv\nSig: ci-1:%s\n",
		p.base, p.fileName, nixbase32.EncodeToString(fh[:]), len(p.file), nixbase32.EncodeToString(nh[:]), len(p.nar),
		strings.Join(p.refs, " "), storeHash("drv-"+p.base), base64.StdEncoding.EncodeToString(make([]byte, 64)))
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func br(t *testing.T, b []byte) []byte {
	t.Helper()
	var out bytes.Buffer
	w := brotli.NewWriter(&out)
	_, err := w.Write(b)
	must(t, err)
	must(t, w.Close())
	return out.Bytes()
}

// client is a Nix 2.35 HttpBinaryCacheStore at base (a flake's URL or the
// union root) with a netrc token.
type client struct {
	t     *testing.T
	base  string
	token string
	http  *http.Client
}

func newClient(t *testing.T, base, token string) *client {
	// libcurl decodes Content-Encoding itself (it asked for it); Go's
	// transport must not add and strip its own gzip.
	return &client{t: t, base: base, token: token, http: &http.Client{Transport: &http.Transport{DisableCompression: true}, Timeout: 30 * time.Second}}
}

// reply is an answer as Nix sees it.
type reply struct {
	status int
	header http.Header
	body   []byte
}

// transient reports the statuses TransferItem::finish classes as
// Transient (filetransfer.cc): 408, 429 and 5xx but 501, 505 and 511.
// maybeRetry retries them up to `tries` (default 5) attempts, after
// Retry-After when the answer has one.
func transient(status int) bool {
	switch {
	case status == 408 || status == 429:
		return true
	case status == 501 || status == 505 || status == 511:
		return false
	}
	return status >= 500 && status < 600
}

// tries is the default of Nix's `tries` setting (FileTransferSettings).
const tries = 5

// do sends one request as TransferItem would: netrc credentials as Basic
// (CURLOPT_NETRC), Nix's User-Agent, Content-Type from the upload's mime
// type and the extra headers (HttpBinaryCacheStore::upload), and
// Accept-Encoding on downloads only; a transient answer is retried
// (maybeRetry), the body sent again.
func (c *client) do(method, path string, body []byte, header ...string) reply {
	c.t.Helper()
	for attempt := 1; ; attempt++ {
		r := c.once(method, path, body, header...)
		if !transient(r.status) || attempt >= tries {
			return r
		}
		delay := time.Duration(250<<attempt) * time.Millisecond
		if secs, err := strconv.Atoi(r.header.Get("Retry-After")); err == nil {
			delay = time.Duration(secs) * time.Second
		}
		time.Sleep(delay)
	}
}

func (c *client) once(method, path string, body []byte, header ...string) reply {
	c.t.Helper()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, c.base+"/"+path, rd)
	must(c.t, err)
	req.SetBasicAuth("flakegate", c.token)
	req.Header.Set("User-Agent", userAgent)
	if body == nil {
		req.Header.Set("Accept-Encoding", acceptEncoding)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := c.http.Do(req)
	if err != nil {
		c.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	must(c.t, err)
	return reply{resp.StatusCode, resp.Header, b}
}

// upload is HttpBinaryCacheStore::upsertFile: PUT with the mime type and,
// for a path getCompressionMethod compresses, the compressed bytes with
// "Content-Encoding: " + showCompressionAlgo. A status outside
// successfulStatuses fails the upload (UploadToHTTP: nix copy fails).
func (c *client) upload(path, mimeType string, body []byte, encoding string) {
	c.t.Helper()
	h := []string{"Content-Type", mimeType}
	if encoding != "" {
		h = append(h, "Content-Encoding", encoding)
	}
	r := c.do(http.MethodPut, path, body, h...)
	if !slices.Contains(successful, r.status) {
		c.t.Fatalf("PUT %s (%s, Content-Encoding %q): %d %s: Nix's upload fails (HttpBinaryCacheStore::upsertFile)", path, mimeType, encoding, r.status, r.body)
	}
}

// exists is HttpBinaryCacheStore::fileExists: HEAD; success is true, 404
// and 403 false, anything else an error (and the cache disabled).
func (c *client) exists(path string) bool {
	c.t.Helper()
	r := c.do(http.MethodHead, path, nil)
	switch {
	case slices.Contains(successful, r.status):
		return true
	case r.status == 404 || r.status == 403:
		return false
	}
	c.t.Fatalf("HEAD %s: %d: an error for Nix (HttpBinaryCacheStore::fileExists)", path, r.status)
	return false
}

// get is HttpBinaryCacheStore::getFile: GET; nil for 404 and 403 (no such
// file), the body decoded from its Content-Encoding as libcurl does, any
// other status an error.
func (c *client) get(path string) []byte {
	c.t.Helper()
	r := c.do(http.MethodGet, path, nil)
	switch {
	case r.status == 404 || r.status == 403:
		return nil
	case !slices.Contains(successful, r.status):
		c.t.Fatalf("GET %s: %d %s: an error for Nix (HttpBinaryCacheStore::getFile)", path, r.status, r.body)
	}
	enc := r.header.Get("Content-Encoding")
	if enc == "" {
		return r.body
	}
	if !strings.Contains(acceptEncoding, enc) {
		c.t.Fatalf("GET %s: Content-Encoding %q, which libcurl was not asked for (CURLE_BAD_CONTENT_ENCODING)", path, enc)
	}
	plain, err := nixcache.Decode(enc, r.body, 64<<20)
	if err != nil {
		c.t.Fatalf("GET %s: %v", path, err)
	}
	return plain
}

// TestNix235CopyAndSubstitute replays `nix copy --to` of a
// content-addressed derivation's output and its dependency into a flake
// with every optional file (ca-derivations, write-nar-listing,
// index-debug-info, narinfo-, ls- and log-compression), `nix store
// copy-log`, a second (no-op) `nix copy`, then a substitution through the
// union URL by a reader of the flake, and the same reads by a reader who
// may not read it.
func TestNix235CopyAndSubstitute(t *testing.T) { inModes(t, testNix235CopyAndSubstitute) }

func testNix235CopyAndSubstitute(t *testing.T, s *teststack.Stack) {
	const flake = "omnicorp/app"
	dep := makePath(t, "proto-dep", []entry{{path: "share", dir: true}, {path: "share/data", contents: "dependency\n"}})
	out := makePath(t, "proto-out", []entry{
		{path: "bin", dir: true}, {path: "bin/hello", contents: "#!/bin/sh\necho " + "/nix/store/" + dep.base + "\n", exec: true},
		{path: "lib", dir: true}, {path: "lib/debug", dir: true}, {path: "lib/debug/.build-id", dir: true},
		{path: "lib/debug/.build-id/" + buildID[:2], dir: true},
		{path: "lib/debug/.build-id/" + buildID[:2] + "/" + buildID[2:] + ".debug", contents: "DWARF"},
	}, dep.base)
	drv := storeHash("proto-drv") + "-proto-out.drv"
	buildTrace := "build-trace-v2/" + drv + "/out.doi" // BinaryCacheStore::makeRealisationPath
	// BinaryCacheStore::registerDrvOutput: the UnkeyedRealisation JSON,
	// signed by the CI job's key (signature format 2).
	realisation := []byte(`{"outPath":"` + out.base + `","signatures":[{"keyName":"ci-1","sig":"` + base64.StdEncoding.EncodeToString(make([]byte, 64)) + `"}]}`)
	debugKey := "debuginfo/" + buildID + ".debug" // uploadData: "debuginfo/" + s1 + s2
	logText := "building proto-out\nok\n"

	push := newClient(t, s.URL+"/"+flake, s.CI(flake, "refs/heads/main"))
	copyTo := func(first bool) {
		// HttpBinaryCacheStore::init → BinaryCacheStore::init →
		// getNixCacheInfo: GET nix-cache-info; 404 would make Nix PUT
		// one, any other failure is "does not appear to be a binary cache".
		info := push.get("nix-cache-info")
		if !strings.Contains(string(info), "StoreDir: /nix/store\n") {
			t.Fatalf("nix-cache-info: %q", info)
		}
		// copyPaths → Store::queryValidPaths → queryPathInfo →
		// BinaryCacheStore::queryPathInfoUncached → getFile: GET narinfo.
		var missing []storePath
		for _, p := range []storePath{dep, out} {
			if push.get(p.hash+".narinfo") == nil {
				missing = append(missing, p)
			}
		}
		if first != (len(missing) == 2) {
			t.Fatalf("first copy %v, but %d paths missing", first, len(missing))
		}
		// addMultipleToStore: every UploadNar node (uploadData) before the
		// UploadNarInfo nodes, which follow the references.
		for _, p := range missing {
			// write-nar-listing: upsertFile(<hash>.ls, "application/json"),
			// compressed by ls-compression (getCompressionMethod).
			push.upload(p.hash+".ls", "application/json", br(t, p.listing), "br")
			// index-debug-info: fileExists(key), then upsertFile(key,
			// {"archive": "../" + url, "member": …}, "application/json"),
			// not compressed (getCompressionMethod has no case for it).
			if p.base == out.base && !push.exists(debugKey) {
				link, _ := json.Marshal(map[string]string{"archive": "../nar/" + p.fileName, "member": "lib/debug/.build-id/" + buildID[:2] + "/" + buildID[2:] + ".debug"})
				push.upload(debugKey, "application/json", link, "")
			}
			// "Atomically write the NAR file": if !fileExists(url) upsertFile(url, …, "application/x-nix-nar").
			if !push.exists("nar/" + p.fileName) {
				push.upload("nar/"+p.fileName, "application/x-nix-nar", p.file, "")
			}
		}
		for _, p := range missing {
			// uploadNarInfo → writeNarInfo → upsertFile(<hash>.narinfo,
			// "text/x-nix-narinfo"), compressed by narinfo-compression.
			push.upload(p.hash+".narinfo", "text/x-nix-narinfo", br(t, []byte(p.narInfo())), "br")
		}
		// copyPaths(RealisedPath::Set): after the paths,
		// dstStore.registerDrvOutput for each realisation (ca-derivations).
		push.upload(buildTrace, "application/json", realisation, "")
	}
	copyTo(true)
	// nix store copy-log → BinaryCacheStore::addBuildLog:
	// upsertFile("log/" + drvPath, log, "text/plain; charset=utf-8"),
	// compressed by log-compression.
	push.upload("log/"+drv, "text/plain; charset=utf-8", br(t, []byte(logText)), "br")
	// Running nix copy again finds the paths and uploads nothing but the
	// realisation, which the cache answers as a re-push (200).
	copyTo(false)

	// A substitution through the union URL by a reader of the flake
	// (substituters = http://cache/, netrc token).
	reader := newClient(t, s.URL, s.User("mallory", "omnicorp"))
	t.Run("substitute", func(t *testing.T) {
		reader.t = t
		info := string(reader.get("nix-cache-info"))
		for _, want := range []string{"StoreDir: /nix/store\n", "WantMassQuery: 1\n", "Priority: "} {
			if !strings.Contains(info, want) {
				t.Fatalf("nix-cache-info lacks %q: %q", want, info)
			}
		}
		// DrvOutputSubstitutionGoal::init → queryRealisation →
		// BinaryCacheStore::queryRealisationUncached: GET the build trace
		// entry, parsed as an UnkeyedRealisation.
		var real struct{ OutPath string }
		if err := json.Unmarshal(reader.get(buildTrace), &real); err != nil || real.OutPath != out.base {
			t.Fatalf("build trace entry: %+v %v", real, err)
		}
		// PathSubstitutionGoal → queryPathInfo (GET narinfo) → narFromPath
		// (GET the narinfo's URL, decompress, NarHash checked).
		for _, p := range []storePath{out, dep} {
			ni, err := nixcache.ParseNarInfo(reader.get(p.hash + ".narinfo"))
			if err != nil {
				t.Fatalf("narinfo of %s: %v", p.base, err)
			}
			ok, err := nixcache.VerifyNarInfo(reader.get(p.hash+".narinfo"), []string{s.PublicKey})
			if err != nil || !ok {
				t.Fatalf("narinfo of %s is not signed by the cache's key: %v", p.base, err)
			}
			file := reader.get(ni.URL())
			if !bytes.Equal(file, p.file) {
				t.Fatalf("NAR of %s differs from the uploaded one", p.base)
			}
			got, err := nixcache.Decode("zstd", file, 1<<20)
			if h := sha256.Sum256(got); err != nil || nixcache.FormatHash(h[:]) != nixcache.FormatHash(ni.NarHash) {
				t.Fatalf("NAR of %s does not match its NarHash: %v", p.base, err)
			}
		}
		// getBuildLogExact (nix log): GET log/<drv>, decoded by libcurl.
		if got := string(reader.get("log/" + drv)); got != logText {
			t.Fatalf("build log: %q", got)
		}
		// Nix 2.35 writes listings but no longer reads them; tools do
		// (and Nix ≤ 2.x's RemoteFSAccessor did): GET <hash>.ls.
		if got := reader.get(out.hash + ".ls"); !bytes.Equal(got, out.listing) {
			t.Fatalf("listing: %s", got)
		}
		// dwarffs: GET debuginfo/<id>.debug, then the archive relative to it.
		var link struct{ Archive, Member string }
		if err := json.Unmarshal(reader.get(debugKey), &link); err != nil || link.Archive != "../nar/"+out.fileName {
			t.Fatalf("debug info link: %+v %v", link, err)
		}
		if !bytes.Equal(reader.get(strings.TrimPrefix(link.Archive, "../")), out.file) {
			t.Fatal("the debug info link's archive is not the output's NAR")
		}
	})

	// A reader who may not read the flake: every read is the silent miss
	// (404) an absent file gets, in the flake and through the union URL.
	t.Run("denied reader", func(t *testing.T) {
		eve := s.User("eve", "evilcorp")
		for _, base := range []string{s.URL, s.URL + "/" + flake} {
			c := newClient(t, base, eve)
			for _, path := range []string{buildTrace, out.hash + ".narinfo", "nar/" + out.fileName, "log/" + drv, out.hash + ".ls", debugKey} {
				absent := strings.ReplaceAll(strings.ReplaceAll(path, out.hash, storeHash("nobody")), drv[:32], storeHash("nobody-drv"))
				absent = strings.ReplaceAll(absent, buildID, strings.Repeat("e", 40))
				if path == "nar/"+out.fileName {
					absent = "nar/" + strings.Repeat("1", 52) + ".nar.zst"
				}
				got, want := c.do(http.MethodGet, path, nil), c.do(http.MethodGet, absent, nil)
				got.header.Del("Date")
				want.header.Del("Date")
				if got.status != 404 || got.status != want.status || !bytes.Equal(got.body, want.body) || fmt.Sprint(got.header) != fmt.Sprint(want.header) || string(got.body) != route.BodyNotFound {
					t.Errorf("%s/%s for a denied reader: %d %v %q; absent %s: %d %v %q", base, path, got.status, got.header, got.body, absent, want.status, want.header, want.body)
				}
			}
		}
	})
}

// The pushing flake's own rules hold against a Nix 2.35 client of another
// flake: it cannot write a realisation of an output it does not hold, nor
// change the flake's.
func TestNix235OtherFlakeCannotPoison(t *testing.T) { inModes(t, testNix235OtherFlakeCannotPoison) }

func testNix235OtherFlakeCannotPoison(t *testing.T, s *teststack.Stack) {
	p := makePath(t, "poison-out", []entry{{path: "x", contents: "x"}})
	own := newClient(t, s.URL+"/omnicorp/app", s.CI("omnicorp/app", "refs/heads/main"))
	own.upload("nar/"+p.fileName, "application/x-nix-nar", p.file, "")
	own.upload(p.hash+".narinfo", "text/x-nix-narinfo", []byte(p.narInfo()), "")
	trace := "build-trace-v2/" + storeHash("poison-drv") + "-x.drv/out.doi"
	own.upload(trace, "application/json", []byte(`{"outPath":"`+p.base+`","signatures":[]}`), "")

	evil := newClient(t, s.URL+"/evilcorp/tools", s.CI("evilcorp/tools", "refs/heads/main"))
	// Into its own flake: the output is not evilcorp's.
	r := evil.do(http.MethodPut, trace, []byte(`{"outPath":"`+p.base+`","signatures":[]}`), "Content-Type", "application/json")
	if r.status != 400 || !strings.Contains(string(r.body), "push it first") {
		t.Fatalf("evilcorp's realisation of an output it does not hold: %d %s", r.status, r.body)
	}
	// Into omnicorp/app: a push denied by the policy (403).
	r = newClient(t, s.URL+"/omnicorp/app", s.CI("evilcorp/tools", "refs/heads/main")).do(http.MethodPut, p.hash+".ls", []byte(`{"version":1,"root":{"type":"regular"}}`), "Content-Type", "application/json")
	if r.status != 403 {
		t.Fatalf("evilcorp's listing into omnicorp/app: %d %s", r.status, r.body)
	}
	if got := own.get(trace); !strings.Contains(string(got), p.base) {
		t.Fatalf("omnicorp/app's build trace entry: %s", got)
	}
}
