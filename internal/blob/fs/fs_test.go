package fs

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/flakegate/flakegate/internal/blob"
)

func TestOpenRemovesLeftovers(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	// An interrupted upload: written, never committed.
	w, err := s.Create(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write([]byte("half a NAR")); err != nil {
		t.Fatal(err)
	}
	// A committed blob survives.
	w2, _ := s.Create(ctx)
	w2.Write([]byte("complete"))
	if err := w2.Commit(ctx, "nar/done.nar"); err != nil {
		t.Fatal(err)
	}
	if n := countFiles(t, filepath.Join(dir, tmpDir)); n != 1 {
		t.Fatalf("%d temp files, want 1 (the uncommitted write)", n)
	}

	s2, err := Open(dir) // as after a crash
	if err != nil {
		t.Fatal(err)
	}
	if n := countFiles(t, filepath.Join(dir, tmpDir)); n != 0 {
		t.Fatalf("%d temp files left after reopening", n)
	}
	r, err := s2.Open(ctx, "nar/done.nar")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	b, _ := io.ReadAll(r)
	if string(b) != "complete" {
		t.Fatalf("got %q", b)
	}
}

func countFiles(t *testing.T, dir string) int {
	t.Helper()
	e, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	return len(e)
}

func TestReaderFile(t *testing.T) {
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	w, _ := s.Create(ctx)
	w.Write([]byte("0123456789"))
	if err := w.Commit(ctx, "nar/x.nar"); err != nil {
		t.Fatal(err)
	}
	r, err := s.Open(ctx, "nar/x.nar")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	f, ok := r.(interface{ File() *os.File })
	if !ok {
		t.Fatal("reader does not expose its *os.File")
	}
	st, err := f.File().Stat()
	if err != nil || st.Size() != 10 {
		t.Fatalf("stat via File: %v %v", st, err)
	}
	if st.Mode().Perm() != 0o644 {
		t.Fatalf("blob mode %v, want 0644", st.Mode().Perm())
	}
}

func TestKeys(t *testing.T) {
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	tests := []struct {
		key     string
		wantErr error // nil: valid key; else errors.Is target, or errInvalid
	}{
		{"nar/abc.nar.xz", blob.ErrNotFound},
		{"log/org/name/abc-x.drv", blob.ErrNotFound},
		{"nar", blob.ErrNotFound}, // a directory is not a blob
		{".tmp/upload-1", errInvalid},
		{".tmp", errInvalid},
		{"a//b", errInvalid},
		{"a/b/", errInvalid},
		{"a b", errInvalid},
		{"ünïcode", errInvalid},
	}
	// make "nar" a directory
	w, _ := s.Create(ctx)
	if err := w.Commit(ctx, "nar/other.nar"); err != nil {
		t.Fatal(err)
	}
	for _, tt := range tests {
		_, err := s.Stat(ctx, tt.key)
		switch {
		case tt.wantErr == errInvalid:
			if err == nil || errors.Is(err, blob.ErrNotFound) {
				t.Errorf("Stat(%q) = %v, want an invalid-key error", tt.key, err)
			}
		case !errors.Is(err, tt.wantErr):
			t.Errorf("Stat(%q) = %v, want %v", tt.key, err, tt.wantErr)
		}
	}
}

var errInvalid = errors.New("invalid key")

func TestWriterAfterCommit(t *testing.T) {
	s, _ := Open(t.TempDir())
	ctx := context.Background()
	w, _ := s.Create(ctx)
	if err := w.Commit(ctx, "k"); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write([]byte("x")); err == nil {
		t.Fatal("write after commit succeeded")
	}
	if err := w.Commit(ctx, "k2"); err == nil {
		t.Fatal("second commit succeeded")
	}
	if err := w.Abort(); err != nil {
		t.Fatalf("abort after commit: %v", err)
	}
	if _, err := s.Stat(ctx, "k"); err != nil {
		t.Fatalf("abort after commit removed the blob: %v", err)
	}
}

// Hold keeps a blob's file alive across a commit over its key (its blocks
// are freed at the Closer's close, after the caller answered): the new
// blob is visible at once, the held one still reads whole.
func TestHoldAcrossCommit(t *testing.T) {
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	const key = "nar/held.nar"
	if c, err := s.Hold(key); err != nil || c != nil {
		t.Fatalf("Hold of an absent key = %v, %v; want nil, nil", c, err)
	}
	if _, err := s.Hold("../x"); !errors.Is(err, blob.ErrInvalidKey) {
		t.Fatalf("Hold of an invalid key: %v", err)
	}
	commit := func(b string) {
		w, err := s.Create(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.WriteString(w, b); err != nil {
			t.Fatal(err)
		}
		if err := w.Commit(ctx, key); err != nil {
			t.Fatal(err)
		}
	}
	commit("first bytes")
	c, err := s.Hold(key)
	if err != nil || c == nil {
		t.Fatalf("Hold = %v, %v", c, err)
	}
	commit("other bytes")
	old, err := io.ReadAll(c.(io.Reader))
	if err != nil || string(old) != "first bytes" {
		t.Fatalf("held file reads %q, %v", old, err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	rd, err := s.Open(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	if b, _ := io.ReadAll(rd); string(b) != "other bytes" {
		t.Fatalf("key reads %q after the commit, want the new blob", b)
	}
}

// A Commit that fails before the rename (a cancelled request, a bad key)
// removes the temporary file: callers call exactly one of Commit and
// Abort, so the file stayed, with its descriptor, until the next start
// (review r5, 2026-12-05).
func TestFailedCommitLeavesNoTempFile(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	for name, commit := range map[string]func(w blob.Writer) error{
		"cancelled context": func(w blob.Writer) error { return w.Commit(cancelled, "nar/x.nar") },
		"bad key":           func(w blob.Writer) error { return w.Commit(context.Background(), "../x") },
	} {
		w, err := s.Create(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		w.Write([]byte("bytes"))
		if err := commit(w); err == nil {
			t.Fatalf("%s: Commit succeeded", name)
		}
		if n := countFiles(t, filepath.Join(dir, tmpDir)); n != 0 {
			t.Errorf("%s: %d temporary files left", name, n)
		}
		if err := w.Commit(context.Background(), "nar/y.nar"); err == nil {
			t.Errorf("%s: a second Commit after a failed one succeeded", name)
		}
	}
}
