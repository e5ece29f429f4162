package cacheserver

import (
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/flakegate/flakegate/internal/route"
)

// BenchmarkNarInfoGET measures the handler alone (no network): index
// lookup from the read pool and the write of the stored text.
func BenchmarkNarInfoGET(b *testing.B) {
	for _, bc := range []struct {
		name         string
		accessLog    bool
		cacheEntries int
	}{
		{"hit-cache", false, 0},
		{"hit-cache+access-log", true, 0},
		{"index-only", false, -1},
	} {
		b.Run(bc.name, func(b *testing.B) {
			ts := newTestServer(b, "", nil, func(c *Config) {
				c.AccessLog, c.CacheEntries, c.Logger = bc.accessLog, bc.cacheEntries, discardLogger()
			})
			p := makePath(b, "bench", route.CompressionZstd)
			ts.push(b, "omnicorp/a", p)
			h := ts.Handler()
			path := "/omnicorp/a/" + p.Hash + ".narinfo"
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				req := httptest.NewRequest("GET", path, nil)
				for pb.Next() {
					w := &discardWriter{h: http.Header{}}
					h.ServeHTTP(w, req)
					if w.code != 0 && w.code != 200 {
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
