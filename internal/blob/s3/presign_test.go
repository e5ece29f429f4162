package s3

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// Presigning costs no request to S3: against a fake S3 that counts what it
// receives, 1000 presigns after Open make none (region is configured).
func TestPresignMakesNoRequest(t *testing.T) {
	var requests atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		w.WriteHeader(http.StatusOK) // HEAD bucket: it exists
	}))
	defer srv.Close()
	t.Setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")
	s := openStore(t, "s3://bucket/prefix?endpoint="+strings.TrimPrefix(srv.URL, "http://")+"&region=us-east-1&secure=false")
	defer s.Close()
	time.Sleep(100 * time.Millisecond) // the start-up sweep's list request
	before := requests.Load()
	for range 1000 {
		u, err := s.Presign(context.Background(), http.MethodGet, "nar/x.nar.xz", time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(u.Path, "/bucket/prefix/nar/x.nar.xz") || u.Query().Get("X-Amz-Expires") != "60" {
			t.Fatalf("presigned URL %s", u)
		}
	}
	if n := requests.Load() - before; n != 0 {
		t.Errorf("1000 presigns made %d requests to S3, want 0", n)
	}
	for _, bad := range []struct {
		method, key string
		expiry      time.Duration
	}{
		{http.MethodPut, "nar/x.nar", time.Minute},
		{http.MethodDelete, "nar/x.nar", time.Minute},
		{http.MethodGet, "../x", time.Minute},
		{http.MethodGet, ".tmp/x", time.Minute},
		{http.MethodGet, "nar/x.nar", 0},
		{http.MethodGet, "nar/x.nar", 8 * 24 * time.Hour},
	} {
		if _, err := s.Presign(context.Background(), bad.method, bad.key, bad.expiry); err == nil {
			t.Errorf("Presign(%s %s %s): no error", bad.method, bad.key, bad.expiry)
		}
	}
}

// Against real MinIO: a presigned GET reads the blob, a presigned HEAD
// stats it, a GET URL does not serve a PUT or another key, and once it
// has expired it is refused.
func TestPresignAgainstMinIO(t *testing.T) {
	s := openStore(t, testURL(t))
	defer s.Close()
	ctx := context.Background()
	body := bytes.Repeat([]byte("nar bytes "), 1000)
	w, err := s.Create(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(body); err != nil {
		t.Fatal(err)
	}
	if err := w.Commit(ctx, "nar/presigned.nar"); err != nil {
		t.Fatal(err)
	}
	fetch := func(method, url string) (int, []byte) {
		t.Helper()
		req, err := http.NewRequest(method, url, nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}
	get, err := s.Presign(ctx, http.MethodGet, "nar/presigned.nar", 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if status, b := fetch("GET", get.String()); status != 200 || !bytes.Equal(b, body) {
		t.Fatalf("presigned GET: %d, %d bytes", status, len(b))
	}
	head, err := s.Presign(ctx, http.MethodHead, "nar/presigned.nar", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if status, _ := fetch("HEAD", head.String()); status != 200 {
		t.Errorf("presigned HEAD: %d", status)
	}
	if status, _ := fetch("HEAD", get.String()); status == 200 {
		t.Errorf("a GET URL answered a HEAD")
	}
	if status, _ := fetch("PUT", get.String()); status == 200 {
		t.Errorf("a GET URL accepted a PUT")
	}
	other := strings.Replace(get.String(), "presigned.nar", "other.nar", 1)
	if status, _ := fetch("GET", other); status != http.StatusForbidden {
		t.Errorf("the URL with another key: %d, want 403", status)
	}
	time.Sleep(3 * time.Second)
	if status, b := fetch("GET", get.String()); status != http.StatusForbidden || !strings.Contains(string(b), "expired") {
		t.Errorf("expired presigned GET: %d %q, want 403 (expired)", status, b)
	}
}
