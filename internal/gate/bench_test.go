package gate

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
)

func benchRequest() *http.Request {
	r := httptest.NewRequest("GET", "/omnicorp/app/0a9g8mz2ck6lw5yyz3bh3nxa0cacp2v1.narinfo", nil)
	r.Header.Set("Authorization", "Basic Zmxha2VnYXRlOnRva2Vu")
	r.Header.Set("User-Agent", "curl/8.5.0 Nix/2.24.10")
	r.Header.Set("Accept", "*/*")
	r.Header.Set("X-Request-Id", "5b2c7a3e-0f7d-4a57-9d6a-0c7f6c3d2e11")
	return r
}

// BenchmarkCheckRequestFill is the per-request cost of building the
// CheckRequest from a pooled buffer.
func BenchmarkCheckRequestFill(b *testing.B) {
	r := benchRequest()
	buf := newCheckBuf()
	now := time.Now()
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		buf.fill(r, uint64(i), now)
		buf.reset()
	}
}

// BenchmarkGateAllow is one request through the gate with a loopback gRPC
// ext_authz server that allows and adds the subject header.
func BenchmarkGateAllow(b *testing.B) {
	fa := &fakeAuthz{decide: allowWithSubject("github:omnicorp/app@refs/heads/main")}
	addr := startAuthz(b, fa)
	conn, err := Dial(context.Background(), addr)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	g := New(authv3.NewAuthorizationClient(conn), Options{Logger: slog.New(slog.NewJSONHandler(io.Discard, nil))})
	h := g.Wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(204) }))
	fa.seen = nil
	b.ReportAllocs()
	for b.Loop() {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, benchRequest())
		if rec.Code != 204 {
			b.Fatalf("status %d", rec.Code)
		}
		fa.mu.Lock()
		fa.seen = fa.seen[:0]
		fa.mu.Unlock()
	}
}
