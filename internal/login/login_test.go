package login

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestExchangeErrors(t *testing.T) {
	tests := []struct {
		name    string
		handler http.HandlerFunc
		want    string
	}{
		{"JSON error from authz", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(403)
			w.Write([]byte(`{"error":"a cache token cannot be exchanged again"}`))
		}, "answered 403: a cache token cannot be exchanged again"},
		{"plain-text denial from the gate", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/plain")
			w.WriteHeader(401)
			w.Write([]byte("invalid token: token expired\n"))
		}, "answered 401: invalid token: token expired"},
		{"empty 503", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(503) }, "answered 503: Service Unavailable"},
		{"200 without a token", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.Write([]byte(`{"expires_at":"2030-01-01T00:00:00Z"}`))
		}, "lacks token"},
		{"200 with garbage", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte(`<html>`)) }, "decode answer"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewServer(tt.handler)
			defer srv.Close()
			base, err := CacheBase(srv.URL)
			if err != nil {
				t.Fatal(err)
			}
			_, err = Exchange(context.Background(), srv.Client(), base, "idp-token", 0, 5*time.Second)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want %q", err, tt.want)
			}
			if strings.Contains(err.Error(), "idp-token") {
				t.Error("error text contains the token")
			}
		})
	}
}

func TestExchangeSendsBearer(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		if r.Method != http.MethodPost || r.URL.Path != TokenPath || r.Header.Get("Authorization") != "Bearer idp-token" ||
			string(b) != `{"lifetime_seconds":5400}` {
			w.WriteHeader(400)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"token":"cache-token","expires_at":"2030-01-01T00:00:00Z","token_id":"j1"}`))
	}))
	defer srv.Close()
	base, _ := CacheBase(srv.URL + "/")
	tok, err := Exchange(context.Background(), srv.Client(), base, "idp-token", 90*time.Minute, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if tok.Token != "cache-token" || tok.ExpiresAt.Year() != 2030 {
		t.Errorf("got %+v", tok)
	}
}

// SecureCacheBase: CacheBase, and plain http only to this machine.
func TestCacheBase(t *testing.T) {
	tests := []struct{ in, want, wantErr string }{
		{"https://cache.example.com", "https://cache.example.com", ""},
		{"https://cache.example.com/", "https://cache.example.com", ""},
		{"http://127.0.0.1:8080", "http://127.0.0.1:8080", ""},
		{"cache.example.com", "", "want https://host"},
		{"https://cache.example.com/omnicorp/app", "", "only the cache's base URL"},
		{"https://user:pw@cache.example.com", "", "only the cache's base URL"},
		{"https://cache.example.com?x=1", "", "only the cache's base URL"},
		{"ftp://cache.example.com", "", "want https://host"},
		{"http://localhost:8080", "http://localhost:8080", ""},
		{"http://[::1]:8080", "http://[::1]:8080", ""},
		// Plain http to another host: the IdP token, the cache token and
		// the keys Nix trusts would cross the network in clear text
		// (review r6, 2026-12-05).
		{"http://cache.example.com", "", "use https"},
		{"http://10.1.2.3:8080", "", "use https"},
		{"http://127.0.0.1.example.com", "", "use https"},
	}
	for _, tt := range tests {
		u, err := SecureCacheBase(tt.in)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("%q: err = %v, want %q", tt.in, err, tt.wantErr)
			}
			continue
		}
		if err != nil || u.String() != tt.want {
			t.Errorf("%q: got %v, %v; want %s", tt.in, u, err, tt.want)
		}
	}
}

func TestCISource(t *testing.T) {
	env := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }
	tests := []struct {
		name               string
		src                CISource
		wantToken, wantErr string
	}{
		{"gitlab default variable", CISource{Getenv: env(map[string]string{"FLAKEGATE_ID_TOKEN": " tok\n"})}, "tok", ""},
		{"named variable wins", CISource{TokenEnv: "MINE", Getenv: env(map[string]string{"MINE": "a", "FLAKEGATE_ID_TOKEN": "b"})}, "a", ""},
		{"named variable empty", CISource{TokenEnv: "MINE", Getenv: env(map[string]string{"FLAKEGATE_ID_TOKEN": "b"})}, "", "$MINE is empty"},
		{"github half configured", CISource{Getenv: env(map[string]string{"ACTIONS_ID_TOKEN_REQUEST_URL": "http://x"})}, "", "id-token: write"},
		{"nothing", CISource{Audience: "https://c", Getenv: env(nil)}, "", "no job token found"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tok, _, err := tt.src.Token(context.Background())
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || tok != tt.wantToken {
				t.Fatalf("got %q, %v; want %q", tok, err, tt.wantToken)
			}
		})
	}
}

func TestNixConfLines(t *testing.T) {
	with := NixConfLines("https://c.example", "/home/a/.config/nix/netrc", "c.example-1:KEY")
	for _, want := range []string{"extra-substituters = https://c.example/\n", "extra-trusted-public-keys = c.example-1:KEY\n", "netrc-file = /home/a/.config/nix/netrc\n"} {
		if !strings.Contains(with, want) {
			t.Errorf("lines lack %q:\n%s", want, with)
		}
	}
	if without := NixConfLines("https://c.example", "/n", ""); !strings.Contains(without, "<cache-public-key>") || !strings.Contains(without, "--public-key") {
		t.Errorf("placeholder missing:\n%s", without)
	}
}

// TestRunRegistersWithDeterminate: on a machine with Determinate Nix, the
// netrc login writes is added to the daemon's additionalNetrcSources
// (other settings kept), once.
func TestRunRegistersWithDeterminate(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"token":"cache-token","expires_at":"2030-01-01T00:00:00Z","token_id":"t1"}`))
	}))
	defer srv.Close()
	dir := t.TempDir()
	idFile, netrc, det := dir+"/id.jwt", dir+"/netrc", dir+"/config.json"
	for p, c := range map[string]string{idFile: "a.b.c\n", det: `{"garbageCollector":{"strategy":"automatic"}}`} {
		if err := os.WriteFile(p, []byte(c), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	var stderr strings.Builder
	env := Env{HTTPClient: srv.Client(), Getenv: func(string) string { return "" }, Stderr: &stderr, DeterminateConfig: det}
	for range 2 {
		if err := Run(context.Background(), Config{Cache: srv.URL, TokenFile: idFile, Netrc: netrc}, env); err != nil {
			t.Fatal(err)
		}
	}
	b, _ := os.ReadFile(det)
	var cfg map[string]any
	if err := json.Unmarshal(b, &cfg); err != nil {
		t.Fatal(err)
	}
	sources := cfg["authentication"].(map[string]any)["additionalNetrcSources"].([]any)
	if len(sources) != 1 || sources[0] != netrc || cfg["garbageCollector"] == nil {
		t.Fatalf("config.json after two logins: %s\n%s", b, stderr.String())
	}
}

func TestTransient(t *testing.T) {
	for status, want := range map[int]bool{503: true, 502: true, 429: true, 401: false, 403: false, 400: false} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(status) }))
		base, _ := CacheBase(srv.URL)
		_, err := Exchange(context.Background(), srv.Client(), base, "t", 0, 5*time.Second)
		srv.Close()
		if Transient(err) != want {
			t.Errorf("%d: Transient(%v) = %v, want %v", status, err, !want, want)
		}
	}
	base, _ := CacheBase("http://127.0.0.1:1")
	if _, err := Exchange(context.Background(), http.DefaultClient, base, "t", 0, time.Second); !Transient(err) {
		t.Errorf("connection refused is transient: %v", err)
	}
}

// A token stored for a plain-http cache on another host (before clients
// refused them) can still be removed: logout takes any cache URL (review
// of the fixes, 2026-12-05: the refusal kept the very secret it protects).
func TestLogoutOfAPlainHTTPCache(t *testing.T) {
	p := filepath.Join(t.TempDir(), "netrc")
	if err := os.WriteFile(p, []byte("machine cache.lan login flakegate password tok.en.sig\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	removed, err := Logout(p, "http://cache.lan:8080")
	if err != nil || !removed {
		t.Fatalf("logout of an http cache: removed=%v err=%v", removed, err)
	}
	if b, _ := os.ReadFile(p); strings.Contains(string(b), "tok.en.sig") {
		t.Errorf("the token is still there:\n%s", b)
	}
	if _, err := SecureCacheBase("http://cache.lan:8080"); err == nil {
		t.Error("a new login to it is accepted")
	}
	// status sends the token: refused before anything is sent (review of
	// the fixes, 2026-12-05: it went in clear text).
	var sent bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { sent = true }))
	defer srv.Close()
	u, _ := url.Parse(srv.URL)
	remote := "http://cache.lan.invalid:" + u.Port()
	if err := os.WriteFile(p, []byte("machine cache.lan.invalid login flakegate password tok.en.sig\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Status(context.Background(), srv.Client(), remote, p, time.Second); err == nil || sent || !strings.Contains(err.Error(), "use https") {
		t.Errorf("status of a plain-http remote cache: %v (sent: %v), want refused before sending", err, sent)
	}
}
