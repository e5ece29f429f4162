package nixtest

import (
	"strings"
	"testing"
)

func TestClosures(t *testing.T) {
	tests := []struct {
		name string
		make func(s *Store, n int, seed string) string
		ca   bool
	}{
		{"built", (*Store).MakeClosure, false},
		{"text", (*Store).MakeTextClosure, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := NewStore(t)
			top := tt.make(s, 12, "alpha")
			infos := s.Closure(top)
			if len(infos) != 13 {
				t.Fatalf("closure of %d paths, want 13", len(infos))
			}
			withRefs := 0
			for _, pi := range infos {
				if !strings.HasPrefix(pi.Path, "/nix/store/") || pi.NarSize == 0 || !strings.HasPrefix(pi.NarHash, "sha256") {
					t.Fatalf("bad path info %+v", pi)
				}
				if (pi.CA != "") != tt.ca {
					t.Fatalf("%s: CA %q, want content-addressed=%v", pi.Path, pi.CA, tt.ca)
				}
				if len(pi.References) > 0 {
					withRefs++
				}
			}
			if withRefs < 12 {
				t.Fatalf("only %d paths have references", withRefs)
			}
			// Same seed in another store: the same paths, same contents.
			s2 := NewStore(t)
			if top2 := tt.make(s2, 12, "alpha"); top2 != top {
				t.Fatalf("same seed gave %s and %s", top, top2)
			}
			infos2 := s2.Closure(top)
			for i := range infos {
				if infos[i].NarHash != infos2[i].NarHash {
					t.Fatalf("%s differs between stores", infos[i].Path)
				}
			}
			if other := tt.make(s2, 12, "beta"); other == top {
				t.Fatal("different seeds gave the same path")
			}
		})
	}
}

func TestGenerateKey(t *testing.T) {
	Require(t)
	sec, pub := GenerateKey(t, "nixtest-1")
	if !strings.HasPrefix(pub, "nixtest-1:") || sec == "" {
		t.Fatalf("key %q %q", sec, pub)
	}
}

func TestHashPart(t *testing.T) {
	tests := []struct{ path, want string }{
		{"/nix/store/0c6kzph7l0dcbfmjap64f0czdafn3b7x-hello-2.12", "0c6kzph7l0dcbfmjap64f0czdafn3b7x"},
		{"/nix/store/0c6kzph7l0dcbfmjap64f0czdafn3b7x", ""},
		{"/nix/store/short-name", ""},
		{"/gnu/store/0c6kzph7l0dcbfmjap64f0czdafn3b7x-hello", ""},
		{"", ""},
	}
	for _, tt := range tests {
		if got := HashPart(tt.path); got != tt.want {
			t.Errorf("HashPart(%q) = %q, want %q", tt.path, got, tt.want)
		}
	}
}

func TestComparable(t *testing.T) {
	a := PathInfo{Path: "/nix/store/a-x", NarHash: "sha256:1", NarSize: 10, References: []string{"/nix/store/b-y"}, Signatures: []string{"k1:s"}}
	b := a
	b.Signatures = []string{"k2:t"} // re-signed by a cache: still the same path
	c := a
	c.NarHash = "sha256:2"
	if got, want := Comparable([]PathInfo{a})[0], Comparable([]PathInfo{b})[0]; got != want {
		t.Errorf("signatures changed the comparable form: %q vs %q", got, want)
	}
	if Comparable([]PathInfo{a})[0] == Comparable([]PathInfo{c})[0] {
		t.Error("a different NAR hash compares equal")
	}
}
