package cacheserver

import (
	"crypto/sha256"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/nix-community/go-nix/pkg/nixbase32"

	"github.com/flakegate/flakegate/internal/nixname"
)

// BenchmarkNarInfoGET measures the handler alone (no network): index
// lookup from the read pool and the write of the stored text.
func BenchmarkNarInfoGET(b *testing.B) {
	for _, bc := range []struct {
		name         string
		accessLog    bool
		cacheEntries int
		missTTL      time.Duration
		absent       bool // GET a path nobody pushed (404)
	}{
		{"hit-cache", false, testConfig().CacheEntries, testConfig().MissTTL, false},
		{"hit-cache+access-log", true, testConfig().CacheEntries, testConfig().MissTTL, false},
		{"index-only", false, 0, 0, false},
		{"miss-cache", false, testConfig().CacheEntries, testConfig().MissTTL, true},
		{"miss-index", false, testConfig().CacheEntries, 0, true},
	} {
		b.Run(bc.name, func(b *testing.B) {
			ts := newTestServer(b, "", nil, func(c *Config) {
				c.AccessLog, c.CacheEntries, c.MissTTL, c.Logger = bc.accessLog, bc.cacheEntries, bc.missTTL, discardLogger()
			})
			p := makePath(b, "bench", nixname.CompressionZstd)
			ts.push(b, "omnicorp/a", p)
			h := ts.Handler()
			path := "/omnicorp/a/" + p.Hash + ".narinfo"
			want := http.StatusOK
			if bc.absent {
				path, want = "/omnicorp/a/"+storeHash("absent")+".narinfo", http.StatusNotFound
			}
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				req := httptest.NewRequest("GET", path, nil)
				for pb.Next() {
					w := &discardWriter{h: http.Header{}}
					h.ServeHTTP(w, req)
					if (w.code == 0 && want != http.StatusOK) || (w.code != 0 && w.code != want) {
						b.Fatalf("status %d", w.code)
					}
				}
			})
		})
	}
}

type discardWriter struct {
	h    http.Header
	code int
}

func (d *discardWriter) Header() http.Header         { return d.h }
func (d *discardWriter) Write(p []byte) (int, error) { return len(p), nil }
func (d *discardWriter) WriteHeader(code int)        { d.code = code }

var _ io.Writer = (*discardWriter)(nil)

// BenchmarkPush is one store path of a chain pushed the way Nix pushes it
// (HEAD nar, PUT nar, PUT narinfo, over loopback HTTP) into a file store
// and SQLite index on disk: everything `nix copy` waits for per path,
// fsyncs included. Paths are 32 KiB of text-like contents, each
// referencing the one before (the closure shape of bench/run.sh nixcopy).
func BenchmarkPush(b *testing.B) {
	for _, c := range []nixname.Compression{nixname.CompressionNone, nixname.CompressionXZ, nixname.CompressionZstd} {
		b.Run(string(c), func(b *testing.B) {
			ts := newTestServer(b, "", nil, func(c *Config) { c.AccessLog, c.Logger = false, discardLogger() })
			var prev []testPath
			next := func(i int) testPath {
				name := fmt.Sprintf("%s-%d", c, i)
				p := makeSizedPath(b, name, 32<<10, c, prev...)
				prev = []testPath{p}
				return p
			}
			// Build the paths before timing (compression is the client's cost).
			paths := make([]testPath, 0, 256)
			for i := range cap(paths) {
				paths = append(paths, next(i))
			}
			b.ReportAllocs()
			b.ResetTimer()
			// made counts the paths made so far: each batch gets new names
			// (reusing one would push other contents under a pushed path: 409).
			i, made := 0, len(paths)
			for b.Loop() {
				if i == len(paths) {
					b.StopTimer()
					for j := range paths {
						paths[j] = next(made + j)
					}
					made += len(paths)
					b.StartTimer()
					i = 0
				}
				ts.push(b, "omnicorp/a", paths[i])
				i++
			}
		})
	}
}

// makeSizedPath is makePath with n bytes of pseudo-random hex contents
// (compressible about 2:1, like text and code).
func makeSizedPath(t testing.TB, name string, n int, c nixname.Compression, refs ...testPath) testPath {
	t.Helper()
	p := testPath{Hash: storeHash(name), Compression: c}
	p.Base = p.Hash + "-" + name
	var sb strings.Builder
	sb.WriteString("contents of " + name + "\n")
	for _, r := range refs {
		p.Refs = append(p.Refs, r.Base)
		sb.WriteString(r.StorePath() + "\n")
	}
	const digits = "0123456789abcdef"
	seed := sha256.Sum256([]byte(name))
	rng := rand.NewChaCha8(seed)
	for range n {
		sb.WriteByte(digits[rng.Uint64()&15])
	}
	p.NAR = narOf(sb.String())
	p.File = compress(t, c, p.NAR)
	fh := sha256.Sum256(p.File)
	p.FileName = nixname.NarFileName(nixbase32.EncodeToString(fh[:]), c)
	return p
}
