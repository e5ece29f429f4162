package authzproxy

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestRoute(t *testing.T) {
	var seen *http.Request
	var seenBody string
	authz := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		seen, seenBody = r, string(b)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		io.WriteString(w, `{"from":"authz"}`)
	}))
	defer authz.Close()
	p, err := New(authz.URL, Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	cache := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "cache") })
	front := httptest.NewServer(Route(p, cache))
	defer front.Close()

	tests := []struct {
		name, method, path, body string
		wantStatus               int
		wantBody                 string
		toAuthz                  bool
	}{
		{"token exchange forwarded with body and auth", "POST", "/_flakegate/token", `{"lifetime_seconds":60}`, 201, `{"from":"authz"}`, true},
		{"jwks forwarded", "GET", "/_flakegate/jwks", "", 201, `{"from":"authz"}`, true},
		{"cache path stays", "GET", "/omnicorp/app/nix-cache-info", "", 200, "cache", false},
		{"public keys are the blob server's", "GET", "/_flakegate/public-keys", "", 200, "cache", false},
		{"public keys lookalike forwarded", "GET", "/_flakegate/public-keys/x", "", 201, `{"from":"authz"}`, true},
		{"lookalike prefix stays", "GET", "/_flakegatex/token", "", 200, "cache", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			seen = nil
			req, _ := http.NewRequest(tt.method, front.URL+tt.path, strings.NewReader(tt.body))
			req.Header.Set("Authorization", "Bearer abc")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tt.wantStatus || string(b) != tt.wantBody {
				t.Fatalf("got %d %q, want %d %q", resp.StatusCode, b, tt.wantStatus, tt.wantBody)
			}
			if (seen != nil) != tt.toAuthz {
				t.Fatalf("reached authz = %v, want %v", seen != nil, tt.toAuthz)
			}
			if tt.toAuthz {
				if seen.URL.Path != tt.path || seen.Method != tt.method || seenBody != tt.body {
					t.Errorf("authz got %s %s %q", seen.Method, seen.URL.Path, seenBody)
				}
				if seen.Header.Get("Authorization") != "Bearer abc" {
					t.Error("Authorization not forwarded")
				}
				if seen.Header.Get("X-Forwarded-For") == "" {
					t.Error("X-Forwarded-For not set")
				}
			}
		})
	}
}

func TestAuthzDown(t *testing.T) {
	authz := httptest.NewServer(http.NotFoundHandler())
	url := authz.URL
	authz.Close()
	p, err := New(url, Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	p.ServeHTTP(rec, httptest.NewRequest("POST", "/_flakegate/token", nil))
	if rec.Code != http.StatusServiceUnavailable || !strings.Contains(rec.Body.String(), "unavailable") {
		t.Fatalf("got %d %q, want 503", rec.Code, rec.Body.String())
	}
}

func TestNewRejectsBadURLs(t *testing.T) {
	for _, u := range []string{"", "127.0.0.1:9002", "ftp://x", "http://", "http://h:1/path"} {
		if _, err := New(u, Options{}); err == nil {
			t.Errorf("%q accepted", u)
		}
	}
}
