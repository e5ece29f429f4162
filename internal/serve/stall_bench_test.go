package serve

import (
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// BenchmarkStreamStallGuard is the guard's cost per HTTP/2 request: small
// answers over one TLS connection, with and without it.
func BenchmarkStreamStallGuard(b *testing.B) {
	body := make([]byte, 600) // a narinfo
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write(body) })
	for _, tc := range []struct {
		name string
		idle time.Duration
	}{{"unguarded", 0}, {"guarded", 2 * time.Minute}} {
		b.Run(tc.name, func(b *testing.B) {
			srv := httptest.NewUnstartedServer(StreamStallGuard(h, tc.idle, nil))
			srv.EnableHTTP2 = true
			srv.StartTLS()
			defer srv.Close()
			c := srv.Client() // speaks HTTP/2 with EnableHTTP2
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					resp, err := c.Get(srv.URL + "/x.narinfo")
					if err != nil {
						b.Fatal(err)
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.ProtoMajor != 2 {
						b.Fatalf("HTTP/%d", resp.ProtoMajor)
					}
				}
			})
		})
	}
}
