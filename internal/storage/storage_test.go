package storage

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/flakegate/flakegate/internal/redact"
)

func TestOpen(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	b, err := OpenBlob(ctx, "file://"+filepath.Join(dir, "blobs"))
	if err != nil {
		t.Fatal(err)
	}
	b.Close()
	x, err := OpenIndex(ctx, "sqlite://"+filepath.Join(dir, "index.db"))
	if err != nil {
		t.Fatal(err)
	}
	x.Close()

	checkOpenErrors(t, ctx, []badURL{
		{true, "/no/scheme", "want scheme"},
		{true, "file://", "no directory"},
		{true, "ftp://x", "unsupported scheme"},
		{false, "sqlite://", "no file"},
		{false, "mysql://user:hunter2@db/x", "unsupported scheme"},
	})
}

// badURL is a storage URL OpenBlob (blob) or OpenIndex must refuse with an
// error containing want.
type badURL struct {
	blob bool
	url  string
	want string
}

// checkOpenErrors opens each URL and checks the error names the problem and
// never the password "hunter2".
func checkOpenErrors(t *testing.T, ctx context.Context, bad []badURL) {
	t.Helper()
	for _, tt := range bad {
		var err error
		if tt.blob {
			_, err = OpenBlob(ctx, tt.url)
		} else {
			_, err = OpenIndex(ctx, tt.url)
		}
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: err %v, want %q", redact.URL(tt.url), err, tt.want)
		}
		if err != nil && strings.Contains(err.Error(), "hunter2") {
			t.Errorf("%s: error leaks the password: %v", redact.URL(tt.url), err)
		}
	}
}
