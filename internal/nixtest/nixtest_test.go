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
