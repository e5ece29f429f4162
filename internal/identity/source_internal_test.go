package identity

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// A JWKS file is read again when its content changes, even when its size
// and time do not (a key removed by a file of the same size copied with its
// time kept kept verifying; review r6, 2026-12-05, on the token key files).
func TestJWKSFileChangeOfSameSizeAndTimeIsSeen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "jwks.json")
	when := time.Now().Add(-time.Hour).Truncate(time.Second)
	write := func(s string) {
		if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(path, when, when); err != nil {
			t.Fatal(err)
		}
	}
	src := &fileSource{path: path}
	write(`{"keys":[{"kid":"old"}]}`)
	if b, err := src.load(context.Background()); err != nil || string(b) != `{"keys":[{"kid":"old"}]}` {
		t.Fatalf("first read: %q %v", b, err)
	}
	if _, err := src.load(context.Background()); !errors.Is(err, errUnchanged) {
		t.Fatalf("unchanged file: %v", err)
	}
	write(`{"keys":[{"kid":"new"}]}`) // same size, same time
	if b, err := src.load(context.Background()); err != nil || string(b) != `{"keys":[{"kid":"new"}]}` {
		t.Errorf("a changed file of the same size and time: %q %v", b, err)
	}
}
