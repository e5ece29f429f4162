package testutil

import (
	"os"
	"path/filepath"
	"testing"
)

func TestReadFile(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct{ name, content string }{
		{"empty", ""},
		{"text", "line 1\nline 2\n"},
		{"binary", "\x00\xff\x01"},
	} {
		p := filepath.Join(dir, c.name)
		if err := os.WriteFile(p, []byte(c.content), 0o644); err != nil {
			t.Fatal(err)
		}
		if got := ReadFile(t, p); got != c.content {
			t.Errorf("ReadFile(%s) = %q, want %q", c.name, got, c.content)
		}
	}
}

func TestCopyDir(t *testing.T) {
	from, to := t.TempDir(), filepath.Join(t.TempDir(), "copy")
	if err := os.WriteFile(filepath.Join(from, "a.rego"), []byte("package a\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(from, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	CopyDir(t, from, to)
	if got := ReadFile(t, filepath.Join(to, "a.rego")); got != "package a\n" {
		t.Errorf("copied a.rego = %q", got)
	}
	if _, err := os.Stat(filepath.Join(to, "sub")); !os.IsNotExist(err) {
		t.Errorf("CopyDir copied the subdirectory (err %v): it copies regular files only", err)
	}
}
