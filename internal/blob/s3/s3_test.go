package s3

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/flakegate/flakegate/internal/blob"
	"github.com/flakegate/flakegate/internal/blob/blobtest"
)

func TestParseURL(t *testing.T) {
	cases := []struct {
		url     string
		want    Config
		wantErr string
	}{
		{url: "s3://cache", want: Config{Bucket: "cache", Endpoint: "s3.amazonaws.com", Secure: true, PartSize: defaultPartSize}},
		{url: "s3://cache/blobs/v1/?endpoint=127.0.0.1:9000&region=eu-west-1&secure=false&path_style=true&part_size=32MiB",
			want: Config{Bucket: "cache", Prefix: "blobs/v1/", Endpoint: "127.0.0.1:9000", Region: "eu-west-1", PathStyle: true, PartSize: 32 << 20}},
		{url: "s3://cache?part_size=5242880", want: Config{Bucket: "cache", Endpoint: "s3.amazonaws.com", Secure: true, PartSize: 5 << 20}},
		// part_size is a bytesize: MB = 1000², MiB = 1024².
		{url: "s3://cache?part_size=16MB", want: Config{Bucket: "cache", Endpoint: "s3.amazonaws.com", Secure: true, PartSize: 16_000_000}},
		{url: "s3://cache?part_size=16M", want: Config{Bucket: "cache", Endpoint: "s3.amazonaws.com", Secure: true, PartSize: 16_000_000}},
		{url: "s3://cache?part_size=16mib", want: Config{Bucket: "cache", Endpoint: "s3.amazonaws.com", Secure: true, PartSize: 16 << 20}},
		{url: "s3://cache?part_size=1GB", want: Config{Bucket: "cache", Endpoint: "s3.amazonaws.com", Secure: true, PartSize: 1_000_000_000}},
		{url: "s3://cache?part_size=5MB", wantErr: `part_size="5MB" (5000000 bytes): want 5MiB`},
		{url: "s3://cache?part_size=5GB", want: Config{Bucket: "cache", Endpoint: "s3.amazonaws.com", Secure: true, PartSize: 5_000_000_000}},
		{url: "s3://cache?part_size=6GB", wantErr: "part_size"},
		{url: "s3://cache?part_size=lots", wantErr: `part_size: invalid size "lots"`},
		{url: "s3://cache?part_size=-16MiB", wantErr: "negative"},
		{url: "s3://cache?part_size=1MiB", wantErr: "part_size"},
		{url: "s3://cache?part_size=6GiB", wantErr: "part_size"},
		{url: "s3://cache?secure=maybe", wantErr: "secure"},
		{url: "s3://cache?acl=public", wantErr: `unknown parameter "acl"`},
		{url: "s3://cache?endpoint=http://x:9000", wantErr: "endpoint"},
		{url: "s3://key:secret@cache", wantErr: "credentials in the URL"},
		{url: "s3://key:secret@cache/%zz", wantErr: `parse "s3://key:***@cache/%zz": invalid URL escape`},
		{url: "s3:///prefix", wantErr: "missing bucket"},
		{url: "file:///data", wantErr: "scheme"},
		{url: "s3://cache/../up", wantErr: "prefix"},
		{url: "s3://cache/.tmp", wantErr: "prefix"},
		// The longest prefix: 511 bytes, so PREFIX/KEY fits 1024 bytes.
		{url: "s3://cache/" + strings.Repeat("p", 255) + "/" + strings.Repeat("q", 255), want: Config{Bucket: "cache", Prefix: strings.Repeat("p", 255) + "/" + strings.Repeat("q", 255) + "/", Endpoint: "s3.amazonaws.com", Secure: true, PartSize: defaultPartSize}},
		{url: "s3://cache/" + strings.Repeat("p", 255) + "/" + strings.Repeat("q", 254) + "/r", wantErr: "at most 511"},
	}
	for _, c := range cases {
		t.Run(c.url, func(t *testing.T) {
			got, err := ParseURL(c.url)
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, c.wantErr)
				}
				if strings.Contains(err.Error(), "secret") {
					t.Fatalf("error leaks the credentials: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != c.want {
				t.Fatalf("got %+v\nwant %+v", got, c.want)
			}
		})
	}
}

// testURL returns the S3 URL of the test MinIO with a fresh prefix, making
// sure the bucket exists, or skips.
func testURL(t *testing.T) string {
	t.Helper()
	raw := os.Getenv("FLAKEGATE_TEST_S3_URL")
	if raw == "" {
		t.Skip("FLAKEGATE_TEST_S3_URL not set: run `eval \"$(scripts/test-services.sh start)\"` to start MinIO on loopback")
	}
	cfg, err := ParseURL(raw)
	if err != nil {
		t.Fatalf("FLAKEGATE_TEST_S3_URL: %v", err)
	}
	s, err := newClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if ok, err := s.BucketExists(ctx, cfg.Bucket); err != nil {
		t.Fatalf("test MinIO at %s: %v", cfg.Endpoint, err)
	} else if !ok {
		if err := s.MakeBucket(ctx, cfg.Bucket, minio.MakeBucketOptions{Region: cfg.Region}); err != nil {
			t.Fatalf("create bucket %s: %v", cfg.Bucket, err)
		}
	}
	var rnd [6]byte
	_, _ = rand.Read(rnd[:])
	return withPrefix(raw, "t-"+hex.EncodeToString(rnd[:]))
}

// withPrefix appends a path segment to an s3:// URL's prefix.
func withPrefix(raw, seg string) string {
	u, err := url.Parse(raw)
	if err != nil {
		panic(err) // raw was parsed before
	}
	u.Path = strings.TrimSuffix(u.Path, "/") + "/" + seg
	return u.String()
}

func openStore(t *testing.T, raw string) *Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := Open(ctx, raw, nil)
	if err != nil {
		t.Fatalf("Open(%s): %v", raw, err)
	}
	return s
}

// objects lists every object and incomplete upload below the store's prefix.
func objects(t *testing.T, s *Store) (objs, uploads []string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for oi := range s.client.ListObjectsIter(ctx, s.cfg.Bucket, minio.ListObjectsOptions{Prefix: s.cfg.Prefix, Recursive: true}) {
		if oi.Err != nil {
			t.Fatal(oi.Err)
		}
		objs = append(objs, strings.TrimPrefix(oi.Key, s.cfg.Prefix))
	}
	res, err := s.core.ListMultipartUploads(ctx, s.cfg.Bucket, s.cfg.Prefix, "", "", "", 1000)
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range res.Uploads {
		uploads = append(uploads, u.Key)
	}
	return objs, uploads
}

func cleanup(t *testing.T, s *Store) {
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		for oi := range s.client.ListObjectsIter(ctx, s.cfg.Bucket, minio.ListObjectsOptions{Prefix: s.cfg.Prefix, Recursive: true}) {
			if oi.Err == nil {
				_ = s.client.RemoveObject(ctx, s.cfg.Bucket, oi.Key, minio.RemoveObjectOptions{})
			}
		}
	})
}

func TestConformance(t *testing.T) {
	base := testURL(t)
	n := 0
	blobtest.Run(t, func(t *testing.T) blob.Store {
		n++
		s := openStore(t, withPrefix(base, fmt.Sprint("s", n)))
		cleanup(t, s)
		return s
	})
}

func write(t *testing.T, w blob.Writer, n int) {
	t.Helper()
	chunk := bytes.Repeat([]byte("0123456789abcdef"), 4096)
	for left := n; left > 0; left -= len(chunk) {
		if _, err := w.Write(chunk[:min(left, len(chunk))]); err != nil {
			t.Fatal(err)
		}
	}
}

// After Abort nothing stays in the bucket: no object, no temporary object,
// no incomplete multipart upload.
func TestAbortLeavesNothing(t *testing.T) {
	s := openStore(t, testURL(t))
	defer s.Close()
	cleanup(t, s)
	ctx := context.Background()
	for _, size := range []int{100, DirectPutMax + 1, 3 * defaultPartSize} {
		w, err := s.Create(ctx)
		if err != nil {
			t.Fatal(err)
		}
		write(t, w, size)
		if err := w.Abort(); err != nil {
			t.Fatal(err)
		}
		if objs, ups := objects(t, s); len(objs)+len(ups) != 0 {
			t.Fatalf("after Abort of %d bytes: objects %v, incomplete uploads %v", size, objs, ups)
		}
	}
}

// A streamed blob's temporary object is gone after Commit; only the key stays.
func TestCommitLeavesOnlyTheKey(t *testing.T) {
	s := openStore(t, testURL(t))
	defer s.Close()
	cleanup(t, s)
	ctx := context.Background()
	w, err := s.Create(ctx)
	if err != nil {
		t.Fatal(err)
	}
	write(t, w, DirectPutMax+12345)
	if objs, _ := objects(t, s); len(objs) != 0 {
		// The multipart upload may not have completed a part yet; an object
		// under the prefix before Commit would be a leak or a visible blob.
		t.Fatalf("before Commit: objects %v", objs)
	}
	if err := w.Commit(ctx, "nar/x.nar"); err != nil {
		t.Fatal(err)
	}
	objs, ups := objects(t, s)
	if len(objs) != 1 || objs[0] != "nar/x.nar" || len(ups) != 0 {
		t.Fatalf("after Commit: objects %v, incomplete uploads %v; want only nar/x.nar", objs, ups)
	}
	info, err := s.Stat(ctx, "nar/x.nar")
	if err != nil || info.Size != DirectPutMax+12345 {
		t.Fatalf("Stat = %+v, %v", info, err)
	}
}

// A cancelled context fails the upload and leaves nothing.
func TestCancelledUpload(t *testing.T) {
	s := openStore(t, testURL(t))
	defer s.Close()
	cleanup(t, s)
	ctx, cancel := context.WithCancel(context.Background())
	w, err := s.Create(ctx)
	if err != nil {
		t.Fatal(err)
	}
	write(t, w, DirectPutMax+1)
	cancel()
	chunk := make([]byte, 1<<20)
	var werr error
	for range 64 { // the pipe fails once the upload notices the cancel
		if _, werr = w.Write(chunk); werr != nil {
			break
		}
	}
	if werr == nil {
		werr = w.Commit(context.Background(), "nar/cancelled")
	} else {
		_ = w.Abort()
	}
	if werr == nil {
		t.Fatal("writing and committing under a cancelled context succeeded")
	}
	if _, err := s.Stat(context.Background(), "nar/cancelled"); !errors.Is(err, blob.ErrNotFound) {
		t.Fatalf("Stat after cancelled upload: %v", err)
	}
	if objs, ups := objects(t, s); len(objs)+len(ups) != 0 {
		t.Fatalf("after cancel: objects %v, incomplete uploads %v", objs, ups)
	}
}

func TestSweepTemp(t *testing.T) {
	s := openStore(t, testURL(t))
	defer s.Close()
	cleanup(t, s)
	ctx := context.Background()
	put := func(key string) {
		if _, err := s.client.PutObject(ctx, s.cfg.Bucket, s.cfg.Prefix+key, strings.NewReader("x"), 1, minio.PutObjectOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	put(".tmp/stale")
	put("nar/real")
	if n, err := s.SweepTemp(ctx, time.Hour); err != nil || n != 0 {
		t.Fatalf("SweepTemp(1h) = %d, %v; want 0 (the temporary object is fresh)", n, err)
	}
	if n, err := s.SweepTemp(ctx, -time.Minute); err != nil || n != 1 {
		t.Fatalf("SweepTemp(0) = %d, %v; want 1", n, err)
	}
	objs, _ := objects(t, s)
	if len(objs) != 1 || objs[0] != "nar/real" {
		t.Fatalf("after sweep: %v, want only nar/real", objs)
	}
}

// Two stores with different prefixes in one bucket do not see each other.
func TestPrefixIsolation(t *testing.T) {
	a := openStore(t, testURL(t))
	defer a.Close()
	cleanup(t, a)
	b := openStore(t, testURL(t))
	defer b.Close()
	cleanup(t, b)
	ctx := context.Background()
	w, _ := a.Create(ctx)
	_, _ = w.Write([]byte("in a"))
	if err := w.Commit(ctx, "k"); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Stat(ctx, "k"); !errors.Is(err, blob.ErrNotFound) {
		t.Fatalf("store b sees store a's key: %v", err)
	}
	r, err := a.Open(ctx, "k")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if got, _ := io.ReadAll(r); string(got) != "in a" {
		t.Fatalf("got %q", got)
	}
}

func TestOpenMissingBucket(t *testing.T) {
	raw := testURL(t)
	u, _ := url.Parse(raw)
	u.Host = "flakegate-no-such-bucket"
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := Open(ctx, u.String(), nil)
	if err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Fatalf("Open of a missing bucket: err = %v, want 'does not exist'", err)
	}
}
