package cacheserver

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/nix-community/go-nix/pkg/nixbase32"
	"github.com/ulikunitz/xz"

	blobfs "github.com/flakegate/flakegate/internal/blob/fs"
	"github.com/flakegate/flakegate/internal/index/sqlite"
	"github.com/flakegate/flakegate/internal/nixcache"
	"github.com/flakegate/flakegate/internal/nixname"

	"github.com/flakegate/flakegate/internal/testutil"
)

// testPath is a store path with its NAR file and narinfo, built the way
// Nix would upload it.
type testPath struct {
	Base        string // "<hash>-<name>"
	Hash        string
	Refs        []string // base names
	Compression nixname.Compression
	NAR         []byte // uncompressed
	File        []byte // as uploaded
	FileName    string // below nar/
}

func (p testPath) StorePath() string { return "/nix/store/" + p.Base }

// NarInfo renders the narinfo Nix would PUT (with a client signature the
// server must drop).
func (p testPath) NarInfo() string {
	fh := sha256.Sum256(p.File)
	nh := sha256.Sum256(p.NAR)
	return fmt.Sprintf("StorePath: %s\nURL: nar/%s\nCompression: %s\nFileHash: sha256:%s\nFileSize: %d\nNarHash: sha256:%s\nNarSize: %d\nReferences: %s\nDeriver: %s-x.drv\nSig: client-1:%s\n",
		p.StorePath(), p.FileName, p.Compression, nixbase32.EncodeToString(fh[:]), len(p.File),
		nixbase32.EncodeToString(nh[:]), len(p.NAR), strings.Join(p.Refs, " "), p.Hash,
		"dGVzdHNpZ3Rlc3RzaWd0ZXN0c2lndGVzdHNpZ3Rlc3RzaWd0ZXN0c2lndGVzdHNpZ3Rlc3RzaWd0ZXN0c2lnMTIzNA==")
}

// storeHash derives a valid store hash from a name.
func storeHash(name string) string {
	h := sha256.Sum256([]byte(name))
	return nixbase32.EncodeToString(h[:20])
}

func narStr(b *bytes.Buffer, s string) {
	var n [8]byte
	binary.LittleEndian.PutUint64(n[:], uint64(len(s)))
	b.Write(n[:])
	b.WriteString(s)
	b.Write(make([]byte, (8-len(s)%8)%8))
}

// narOf is the NAR of a single regular file.
func narOf(contents string) []byte {
	var b bytes.Buffer
	for _, s := range []string{"nix-archive-1", "(", "type", "regular", "contents", contents, ")"} {
		narStr(&b, s)
	}
	return b.Bytes()
}

func compress(t testing.TB, c nixname.Compression, b []byte) []byte {
	t.Helper()
	switch c {
	case nixname.CompressionNone:
		return b
	case nixname.CompressionXZ:
		var out bytes.Buffer
		w, err := xz.NewWriter(&out)
		if err != nil {
			t.Fatal(err)
		}
		w.Write(b)
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		return out.Bytes()
	case nixname.CompressionZstd:
		enc, err := zstd.NewWriter(nil)
		if err != nil {
			t.Fatal(err)
		}
		defer enc.Close()
		return enc.EncodeAll(b, nil)
	}
	t.Fatalf("no compressor for %s", c)
	return nil
}

// makePath builds a path named name whose file mentions its references
// (as a real build output would).
func makePath(t testing.TB, name string, c nixname.Compression, refs ...testPath) testPath {
	t.Helper()
	p := testPath{Hash: storeHash(name), Compression: c}
	p.Base = p.Hash + "-" + name
	contents := "contents of " + name + "\n" + strings.Repeat(name+" ", 200)
	for _, r := range refs {
		p.Refs = append(p.Refs, r.Base)
		contents += "\n" + r.StorePath()
	}
	p.NAR = narOf(contents)
	p.File = compress(t, c, p.NAR)
	fh := sha256.Sum256(p.File)
	p.FileName = nixname.NarFileName(nixbase32.EncodeToString(fh[:]), c)
	return p
}

// compressedAs is p with the same NAR stored as another file: compressed
// with c (a twin pushed by another flake, a re-push in another encoding).
func (p testPath) compressedAs(t testing.TB, c nixname.Compression) testPath {
	t.Helper()
	p.Compression = c
	p.File = compress(t, c, p.NAR)
	p.FileName = fileNameOf(p.File, c)
	return p
}

// testServer is a Server on a fresh data dir with its public and internal
// handlers on httptest servers.
type testServer struct {
	*Server
	URL, InternalURL string
	Dir              string
	Keys             *nixcache.KeySet
	Log              *testutil.LogBuffer
	close            func()
}

var testKeySecret, testKeyPublic = mustKey("test-cache-1")

func mustKey(name string) (string, string) {
	s, p, err := nixcache.GenerateKey(name)
	if err != nil {
		panic(err)
	}
	return s, p
}

func keySet(t testing.TB, secrets ...string) *nixcache.KeySet {
	t.Helper()
	var ks []nixcache.SigningKey
	for _, s := range secrets {
		k, err := nixcache.ParseSecretKey(s)
		if err != nil {
			t.Fatal(err)
		}
		ks = append(ks, k)
	}
	set, err := nixcache.NewKeySet(ks...)
	if err != nil {
		t.Fatal(err)
	}
	return set
}

// testConfig is the blob server's configuration (the values of
// blobserverapp.DefaultConfig, which cacheserver cannot import) without
// storage.
func testConfig() Config {
	return Config{
		MaxNarSize:           64 << 30,
		MaxLogSize:           256 << 20,
		MaxNarInfoSize:       1 << 20,
		Priority:             40,
		UploadIdleTimeout:    2 * time.Minute,
		UploadMinRate:        16 << 10,
		UploadMaxDuration:    2 * time.Hour,
		MaxExpansion:         nixcache.DefaultMaxExpansion,
		MaxUploadsPerSubject: 32,
		CacheEntries:         1 << 16,
		MissTTL:              10 * time.Second,
		ReadTouchInterval:    time.Hour,
		ReadFlushInterval:    30 * time.Second,
		GenerationPoll:       time.Second,
	}
}

func newTestServer(t testing.TB, dir string, keys *nixcache.KeySet, mod func(*Config)) *testServer {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	if keys == nil {
		keys = keySet(t, testKeySecret)
	}
	bs, err := blobfs.Open(filepath.Join(dir, "blobs"))
	if err != nil {
		t.Fatal(err)
	}
	idx, err := sqlite.Open(context.Background(), filepath.Join(dir, "index.db"))
	if err != nil {
		t.Fatal(err)
	}
	logw := &testutil.LogBuffer{}
	cfg := testConfig()
	cfg.Blob, cfg.Index, cfg.Keys, cfg.AccessLog = bs, idx, keys, true
	cfg.Logger = slog.New(slog.NewJSONHandler(logw, nil))
	if mod != nil {
		mod(&cfg)
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	pub := httptest.NewServer(s.Handler())
	internal := httptest.NewServer(s.InternalHandler())
	ts := &testServer{Server: s, URL: pub.URL, InternalURL: internal.URL, Dir: dir, Keys: keys, Log: logw}
	closed := false
	ts.close = func() {
		if closed {
			return
		}
		closed = true
		pub.Close()
		internal.Close()
		idx.Close()
		bs.Close()
	}
	t.Cleanup(ts.close)
	return ts
}

// send sends a request and returns status, body and headers.
func send(method, url string, body []byte) (int, string, http.Header, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		return 0, "", nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, "", nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, "", nil, err
	}
	return resp.StatusCode, string(b), resp.Header, nil
}

// do is send that fails the test on a transport error.
func do(t testing.TB, method, url string, body []byte) (int, string, http.Header) {
	t.Helper()
	st, b, h, err := send(method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	return st, b, h
}

// push uploads p into flake like Nix: HEAD the NAR, PUT it if absent, PUT
// the narinfo. It fails the test on any unexpected answer.
func (ts *testServer) push(t testing.TB, flake string, p testPath) {
	t.Helper()
	if err := ts.tryPush(flake, p); err != nil {
		t.Fatal(err)
	}
}

// tryPush is push for goroutines: it returns the error.
func (ts *testServer) tryPush(flake string, p testPath) error {
	base := ts.URL + "/" + flake
	st, _, _, err := send("HEAD", base+"/nar/"+p.FileName, nil)
	if err != nil {
		return err
	}
	switch st {
	case http.StatusNotFound:
		st, body, _, err := send("PUT", base+"/nar/"+p.FileName, p.File)
		if err != nil {
			return err
		}
		if st/100 != 2 {
			return fmt.Errorf("PUT nar %s into %s: %d %s", p.Base, flake, st, body)
		}
	case http.StatusOK:
	default:
		return fmt.Errorf("HEAD nar %s: %d", p.Base, st)
	}
	st, body, _, err := send("PUT", base+"/"+p.Hash+".narinfo", []byte(p.NarInfo()))
	if err != nil {
		return err
	}
	if st/100 != 2 {
		return fmt.Errorf("PUT narinfo %s into %s: %d %s", p.Base, flake, st, body)
	}
	return nil
}

// countBlobs counts committed NAR files.
func (ts *testServer) countBlobs(t testing.TB) int {
	t.Helper()
	e, err := os.ReadDir(filepath.Join(ts.Dir, "blobs", "nar"))
	if os.IsNotExist(err) {
		return 0
	}
	if err != nil {
		t.Fatal(err)
	}
	return len(e)
}

func sha256Of(b []byte) []byte {
	h := sha256.Sum256(b)
	return h[:]
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }
