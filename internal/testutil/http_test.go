package testutil

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

func TestGet(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet {
			http.Error(w, "want GET", http.StatusMethodNotAllowed)
			return
		}
		switch r.URL.Path {
		case "/ok":
			w.Write([]byte("hello"))
		case "/teapot":
			w.WriteHeader(http.StatusTeapot)
			w.Write([]byte("short and stout"))
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	for _, c := range []struct {
		path   string
		status int
		body   string
	}{
		{"/ok", 200, "hello"},
		{"/teapot", http.StatusTeapot, "short and stout"},
		{"/nope", 404, "404 page not found\n"},
	} {
		status, body := Get(t, srv.URL+c.path, 10*time.Second)
		if status != c.status || body != c.body {
			t.Errorf("Get %s = %d %q, want %d %q", c.path, status, body, c.status, c.body)
		}
	}
}

func TestDo(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("WWW-Authenticate", `Bearer realm="test"`)
		w.WriteHeader(http.StatusUnauthorized)
		w.Write([]byte(r.Method + " " + r.Header.Get("Authorization")))
	}))
	defer srv.Close()
	req, err := http.NewRequest(http.MethodPut, srv.URL+"/x", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer t")
	resp, body := Do(t, req)
	if resp.StatusCode != http.StatusUnauthorized || resp.Header.Get("WWW-Authenticate") != `Bearer realm="test"` || body != "PUT Bearer t" {
		t.Errorf("Do = %d %q %q", resp.StatusCode, resp.Header.Get("WWW-Authenticate"), body)
	}
}
