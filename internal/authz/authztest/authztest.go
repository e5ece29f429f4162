// Package authztest builds and reads ext_authz messages for tests of the
// authorization service and its callers. Test support only: production code
// never imports it (docs/ARCHITECTURE.md).
package authztest

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
)

// CheckRequest is the Check Envoy sends for method and path, with an
// Authorization header unless authorization is "".
func CheckRequest(method, path, authorization string) *authv3.CheckRequest {
	headers := map[string]string{":authority": "cache.example.com"}
	if authorization != "" {
		headers["authorization"] = authorization
	}
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{
		Http: &authv3.AttributeContext_HttpRequest{Method: method, Path: path, Headers: headers},
	}}}
}

// HeaderValue is the value of the first header option named key, or "".
func HeaderValue(hs []*corev3.HeaderValueOption, key string) string {
	for _, h := range hs {
		if h.GetHeader().GetKey() == key {
			return h.GetHeader().GetValue()
		}
	}
	return ""
}

// FakeOwners is the blob server's internal owners endpoint with fixed
// answers by URL path (e.g. "/owners/narinfo/<hash>"); a path not listed
// answers 500. Answers may be changed between requests (not concurrently).
type FakeOwners struct {
	*httptest.Server
	Answers map[string][]string
}

// NewFakeOwners starts a FakeOwners, closed when the test ends.
func NewFakeOwners(t testing.TB, answers map[string][]string) *FakeOwners {
	f := &FakeOwners{Answers: answers}
	f.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		flakes, ok := f.Answers[r.URL.Path]
		if !ok {
			http.Error(w, "index unavailable", http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string][]string{"flakes": flakes})
	}))
	t.Cleanup(f.Close)
	return f
}
