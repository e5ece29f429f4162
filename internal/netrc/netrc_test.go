package netrc

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestSetEntry(t *testing.T) {
	const host = "cache.example.com"
	tests := []struct {
		name, in, want string
	}{
		{
			name: "empty file",
			in:   "",
			want: "machine cache.example.com login flakegate password NEW\n",
		},
		{
			name: "other machines and comments kept, entry appended",
			in:   "# my hosts\nmachine github.com login me password gh\n",
			want: "# my hosts\nmachine github.com login me password gh\nmachine cache.example.com login flakegate password NEW\n",
		},
		{
			name: "no trailing newline",
			in:   "machine a login b password c",
			want: "machine a login b password c\nmachine cache.example.com login flakegate password NEW\n",
		},
		{
			name: "one-line entry replaced in place",
			in:   "machine a login b password c\nmachine cache.example.com login flakegate password OLD\nmachine z login y password x\n",
			want: "machine a login b password c\nmachine cache.example.com login flakegate password NEW\nmachine z login y password x\n",
		},
		{
			name: "multi-line entry replaced, following comment kept",
			in:   "machine cache.example.com\n  login someone\n  password OLD\n# next\nmachine z login y password x\n",
			want: "machine cache.example.com login flakegate password NEW\n# next\nmachine z login y password x\n",
		},
		{
			name: "entries sharing one line",
			in:   "machine a login b password c machine cache.example.com login l password OLD machine z login y password x\n",
			want: "machine a login b password c machine cache.example.com login flakegate password NEW machine z login y password x\n",
		},
		{
			name: "host matched case-insensitively, quoted",
			in:   "machine \"Cache.Example.com\" login l password OLD\n",
			want: "machine cache.example.com login flakegate password NEW\n",
		},
		{
			name: "only the first entry for the host is replaced",
			in:   "machine cache.example.com login l password OLD1\nmachine cache.example.com login l password OLD2\n",
			want: "machine cache.example.com login flakegate password NEW\nmachine cache.example.com login l password OLD2\n",
		},
		{
			name: "inserted before default (which must stay last)",
			in:   "machine a login b password c\ndefault login anonymous password x\n",
			want: "machine a login b password c\nmachine cache.example.com login flakegate password NEW\ndefault login anonymous password x\n",
		},
		{
			name: "macdef bodies are not parsed",
			in:   "machine ftp login u password p macdef init\nmachine cache.example.com password trap\n\nmachine cache.example.com login l password OLD\n",
			want: "machine ftp login u password p macdef init\nmachine cache.example.com password trap\n\nmachine cache.example.com login flakegate password NEW\n",
		},
		{
			name: "commented-out entry is not touched",
			in:   "# machine cache.example.com login l password OLD\n",
			want: "# machine cache.example.com login l password OLD\nmachine cache.example.com login flakegate password NEW\n",
		},
		{
			name: "a host that merely contains ours is another host",
			in:   "machine cache.example.com.evil login l password p\n",
			want: "machine cache.example.com.evil login l password p\nmachine cache.example.com login flakegate password NEW\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := SetEntry(tt.in, host, "flakegate", "NEW")
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("got\n%s\nwant\n%s", got, tt.want)
			}
			if p, ok := Password(got, host); !ok || p != "NEW" {
				t.Errorf("Password after update = %q, %v; want NEW", p, ok)
			}
		})
	}
}

func TestSetEntryRefusesBadValues(t *testing.T) {
	for _, v := range []string{"", "a b", "a\nmachine evil", "x\"y", "#c", `a\b`} {
		if _, err := SetEntry("", "h", "l", v); err == nil {
			t.Errorf("password %q accepted", v)
		}
	}
}

func TestWriteEntry(t *testing.T) {
	dir := t.TempDir()
	t.Run("creates directory and 0600 file", func(t *testing.T) {
		p := filepath.Join(dir, "new", "nix", "netrc")
		if err := WriteEntry(p, "h", "l", "tok1"); err != nil {
			t.Fatal(err)
		}
		assertMode(t, p, 0o600)
		assertContent(t, p, "machine h login l password tok1\n")
	})
	t.Run("tightens a loose mode and keeps other entries", func(t *testing.T) {
		p := filepath.Join(dir, "loose")
		if err := os.WriteFile(p, []byte("machine o login a password b\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := WriteEntry(p, "h", "l", "tok2"); err != nil {
			t.Fatal(err)
		}
		assertMode(t, p, 0o600)
		assertContent(t, p, "machine o login a password b\nmachine h login l password tok2\n")
	})
	t.Run("symlink is followed, link kept", func(t *testing.T) {
		real := filepath.Join(dir, "real-netrc")
		link := filepath.Join(dir, "link-netrc")
		if err := os.WriteFile(real, []byte("machine h login l password old\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(real, link); err != nil {
			t.Fatal(err)
		}
		if err := WriteEntry(link, "h", "l", "tok3"); err != nil {
			t.Fatal(err)
		}
		if fi, err := os.Lstat(link); err != nil || fi.Mode()&os.ModeSymlink == 0 {
			t.Fatalf("link replaced by a file: %v", err)
		}
		assertContent(t, real, "machine h login l password tok3\n")
	})
	t.Run("no temp files left", func(t *testing.T) {
		entries, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			if strings.HasPrefix(e.Name(), ".netrc-") {
				t.Errorf("temp file left: %s", e.Name())
			}
		}
	})
	t.Run("unreadable path fails without writing", func(t *testing.T) {
		p := filepath.Join(dir, "adir")
		if err := os.Mkdir(p, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := WriteEntry(p, "h", "l", "tok"); err == nil {
			t.Fatal("writing over a directory succeeded")
		}
	})
}

func assertMode(t *testing.T, p string, want os.FileMode) {
	t.Helper()
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != want {
		t.Errorf("%s mode = %o, want %o", p, got, want)
	}
}

func assertContent(t *testing.T, p, want string) {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != want {
		t.Errorf("%s =\n%s\nwant\n%s", p, b, want)
	}
}

func TestRemoveNetrcEntry(t *testing.T) {
	cases := []struct{ name, in, want string }{
		{"only entry", "machine cache.example.com login flakegate password tok\n", ""},
		{"others kept", "# mine\nmachine a.example login x password y\nmachine cache.example.com\n  login flakegate\n  password tok\nmachine b.example login u password v\n",
			"# mine\nmachine a.example login x password y\nmachine b.example login u password v\n"},
		{"same line as another", "machine a login x password y machine cache.example.com login f password t\n", "machine a login x password y \n"},
		{"every entry for the host", "machine cache.example.com password a\nmachine CACHE.example.com password b\n", ""},
		{"absent", "machine a login x password y\n", "machine a login x password y\n"},
		{"default kept", "machine cache.example.com password a\ndefault login anonymous\n", "default login anonymous\n"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, removed := RemoveEntry(c.in, "cache.example.com")
			if got != c.want || removed != (c.name != "absent") {
				t.Fatalf("got %q (removed %v), want %q", got, removed, c.want)
			}
			if _, ok := Password(got, "cache.example.com"); ok {
				t.Fatalf("the entry is still there: %q", got)
			}
		})
	}
}

// A netrc ending in a macdef body (no blank line after it, as files
// written by hand often are) got the cache's entry appended inside the
// body, which curl skips to the next blank line: login said "stored",
// curl never used it (review r6, 2026-12-05).
func TestEntryIsNotAppendedIntoAMacroBody(t *testing.T) {
	old := "machine ftp.example.com login a password b\nmacdef init\ncd /pub\n"
	got, err := SetEntry(old, "cache.example.com", "flakegate", "tok.en.x")
	if err != nil {
		t.Fatal(err)
	}
	if p, ok := Password(got, "cache.example.com"); !ok || p != "tok.en.x" {
		t.Errorf("SetEntry wrote\n%s\nbut the entry reads back as %q, %v (inside the macro body)", got, p, ok)
	}
	if !strings.HasPrefix(got, old) || !strings.Contains(got, "cd /pub\n\nmachine cache.example.com") {
		t.Errorf("the macro changed or no blank line ends it:\n%s", got)
	}
	// Updated again, it stays readable and single.
	again, err := SetEntry(got, "cache.example.com", "flakegate", "tok.en.y")
	if err != nil {
		t.Fatal(err)
	}
	if p, _ := Password(again, "cache.example.com"); p != "tok.en.y" || strings.Count(again, "cache.example.com") != 1 {
		t.Errorf("second update:\n%s", again)
	}
}

// A macdef body ends at a truly empty line only, as curl reads it: an
// entry placed after a line of blanks was "stored" and never sent (review
// of the fixes, 2026-12-05).
func TestMacroBodyEndsOnlyAtAnEmptyLine(t *testing.T) {
	content := "machine ftp.example login a password b\nmacdef init\ncd /pub\n \n"
	if _, ok := Password(content+"machine cache.example login flakegate password old\n", "cache.example"); ok {
		t.Error("an entry after a line of blanks was read outside the macro body")
	}
	out, err := SetEntry(content, "cache.example", "flakegate", "tok")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "cd /pub\n \n\nmachine cache.example") {
		t.Errorf("no empty line ends the macro before the entry:\n%q", out)
	}
	if p, ok := Password(out, "cache.example"); !ok || p != "tok" {
		t.Errorf("Password %q %v", p, ok)
	}
}
