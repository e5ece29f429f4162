package nixname

import (
	"slices"
	"strings"
	"testing"
)

const (
	h32 = "0jqd0rlxzra1rs38rdxl43yh6rxchgc6"
	h52 = "05ra3y72i3qjri7xskf9qj8kb29r6naqy1sqpbs3azi3xcigmj56"
)

func TestParseFlake(t *testing.T) {
	tests := []struct {
		in   string
		want Flake
		ok   bool
	}{
		{"omnicorp/dev", Flake{"omnicorp", "dev"}, true},
		{"OmniCorp/Dev.env_1", Flake{"omnicorp", "dev.env_1"}, true},
		{"omnicorp", Flake{}, false},
		{"/dev", Flake{}, false},
		{"omnicorp/", Flake{}, false},
		{"a/b/c", Flake{}, false},
		{"_a/b", Flake{}, false},
		{"a/.b", Flake{}, false},
		{"a/b c", Flake{}, false},
		{"a/-b", Flake{}, false},
		{"_flakegate/_absent", Flake{}, false},
		{strings.Repeat("a", 100) + "/b", Flake{strings.Repeat("a", 100), "b"}, true},
		{strings.Repeat("a", 101) + "/b", Flake{}, false},
	}
	for _, tt := range tests {
		got, err := ParseFlake(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("ParseFlake(%q) = %+v, %v; want %+v ok=%v", tt.in, got, err, tt.want, tt.ok)
		}
	}
	if (Flake{}).String() != "" || !(Flake{}).IsZero() || (Flake{"a", "b"}).String() != "a/b" {
		t.Error("Flake String/IsZero")
	}
}

// TestNameChars pins the one name character class: exactly the bytes Nix
// allows in a store path name.
func TestNameChars(t *testing.T) {
	const want = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+-._?="
	for c := 0; c < 256; c++ {
		if got := IsNameChar(byte(c)); got != strings.ContainsRune(want, rune(c)) {
			t.Errorf("IsNameChar(%q) = %v", byte(c), got)
		}
	}
}

func TestIsStoreHash(t *testing.T) {
	for _, tt := range []struct {
		s  string
		ok bool
	}{
		{h32, true},
		{h32[:31], false},
		{h32 + "0", false},
		{h32[:31] + "e", false}, // e, o, u, t are not nixbase32
		{h32[:31] + "o", false},
		{h32[:31] + "u", false},
		{h32[:31] + "t", false},
		{strings.ToUpper(h32), false},
		{h52, false},
		{"", false},
	} {
		if got := IsStoreHash(tt.s); got != tt.ok {
			t.Errorf("IsStoreHash(%q) = %v, want %v", tt.s, got, tt.ok)
		}
	}
}

// TestCompressions pins the one list of supported compressions and their
// NAR file extensions.
func TestCompressions(t *testing.T) {
	want := []Compression{CompressionNone, CompressionXZ, CompressionZstd, CompressionBzip2}
	if got := Compressions(); !slices.Equal(got, want) {
		t.Fatalf("Compressions() = %v, want %v", got, want)
	}
	exts := map[Compression]string{
		CompressionNone: ".nar", CompressionXZ: ".nar.xz", CompressionZstd: ".nar.zst", CompressionBzip2: ".nar.bz2",
	}
	for c, ext := range exts {
		if !c.Supported() || c.Ext() != ext {
			t.Errorf("%s: Supported %v, Ext %q; want true, %q", c, c.Supported(), c.Ext(), ext)
		}
	}
	for _, c := range []Compression{"", "br", "gzip", "XZ", "lzip"} {
		if c.Supported() || c.Ext() != "" {
			t.Errorf("%q: Supported %v, Ext %q; want false, \"\"", c, c.Supported(), c.Ext())
		}
	}
	if got := NarExtSyntax(); got != ".nar[.xz|.zst|.bz2]" {
		t.Errorf("NarExtSyntax() = %q", got)
	}
}

func TestNarFileName(t *testing.T) {
	for _, c := range Compressions() {
		name := NarFileName(h52, c)
		h, got, ok := ParseNarFile(name)
		if !ok || got != c || h != h52 {
			t.Errorf("%s: %s parses to %q, %q, %v", c, name, h, got, ok)
		}
	}
	if NarFileName(h52, "br") != h52+".nar" {
		t.Error("unknown compression should give .nar")
	}
}

func TestParseNarFile(t *testing.T) {
	for _, name := range []string{
		h52 + ".nar.gz",
		h32 + ".nar", // 32-char hashes are refused
		h52,
		h52 + ".nar/x",
		h52 + ".NAR",
		h52[:51] + "e.nar",
		strings.ToUpper(h52) + ".nar",
		".nar.xz",
		h52 + ".nar.xz.nar",
		"",
	} {
		if h, c, ok := ParseNarFile(name); ok {
			t.Errorf("ParseNarFile(%q) = %q, %q; want refused", name, h, c)
		}
	}
}

// FuzzParseNarFile: every accepted name is NarFileName of its parts.
func FuzzParseNarFile(f *testing.F) {
	f.Add(h52 + ".nar.xz")
	f.Add(h52 + ".nar")
	f.Add(h32 + ".nar.zst")
	f.Fuzz(func(t *testing.T, name string) {
		h, c, ok := ParseNarFile(name)
		if !ok {
			return
		}
		if !c.Supported() || NarFileName(h, c) != name || len(h) != FileHashLen {
			t.Fatalf("%q parses to %q, %q", name, h, c)
		}
	})
}
