package authz

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
)

// fakeOwners is the blob server's internal owners endpoint: fixed answers
// by path; paths not listed answer 500.
type fakeOwners struct {
	*httptest.Server
	answers map[string][]string
}

func newFakeOwners(t *testing.T, answers map[string][]string) *fakeOwners {
	f := &fakeOwners{answers: answers}
	f.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		flakes, ok := f.answers[r.URL.Path]
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

func checkRequest(method, path, authorization string) *authv3.CheckRequest {
	headers := map[string]string{":authority": "cache.example.com"}
	if authorization != "" {
		headers["authorization"] = authorization
	}
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{
		Http: &authv3.AttributeContext_HttpRequest{Method: method, Path: path, Headers: headers},
	}}}
}

func headerValue(hs []*corev3.HeaderValueOption, key string) string {
	for _, h := range hs {
		if h.GetHeader().GetKey() == key {
			return h.GetHeader().GetValue()
		}
	}
	return ""
}
