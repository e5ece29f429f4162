package testutil

import (
	"context"
	"io"
	"net/http"
	"testing"
	"time"
)

// Get fetches url within timeout and returns the status code and the whole
// body; any transport error fails the test.
func Get(t testing.TB, url string, timeout time.Duration) (status int, body string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, body := Do(t, req)
	return resp.StatusCode, body
}

// Do sends req (whose context bounds it) and returns the response with its
// whole body read and closed; any transport error fails the test.
func Do(t testing.TB, req *http.Request) (resp *http.Response, body string) {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", req.Method, req.URL, err)
	}
	return resp, string(b)
}
