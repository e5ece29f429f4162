package debughttp

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestMount(t *testing.T) {
	mux := http.NewServeMux()
	Mount(mux)
	for _, tc := range []struct {
		path     string
		status   int
		contains string
	}{
		{"/debug/pprof/", 200, "goroutine"},
		{"/debug/pprof/heap?debug=1", 200, "heap profile"},
		{"/debug/pprof/goroutine?debug=1", 200, "goroutine profile"},
		{"/debug/pprof/cmdline", 200, ""},
		{"/debug/pprof/symbol", 200, "num_symbols"},
		{"/debug/pprof/nosuchprofile", 404, "Unknown profile"},
		{"/debug/other", 404, ""},
	} {
		t.Run(tc.path, func(t *testing.T) {
			rec := httptest.NewRecorder()
			mux.ServeHTTP(rec, httptest.NewRequest("GET", tc.path, nil))
			if rec.Code != tc.status {
				t.Fatalf("GET %s = %d, want %d", tc.path, rec.Code, tc.status)
			}
			if !strings.Contains(rec.Body.String(), tc.contains) {
				t.Errorf("GET %s: body does not contain %q:\n%.300s", tc.path, tc.contains, rec.Body.String())
			}
		})
	}
}
