// Package indextest is the conformance suite every index.Index passes. A
// new backend is done when its test calls Run (and, when several processes
// share its database, RunShared) and they pass:
//
//	func TestConformance(t *testing.T) {
//		indextest.Run(t, func(t *testing.T) index.Index { return openEmpty(t) })
//	}
//
// newIndex must return an empty index of its own (a fresh file, database
// schema…). Run closes every index it gets, so newIndex must not register a
// Close of its own.
package indextest

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nix-community/go-nix/pkg/nixbase32"

	"github.com/flakegate/flakegate/internal/index"
	"github.com/flakegate/flakegate/internal/nixname"
)

var (
	flakeA = nixname.Flake{Org: "omnicorp", Name: "a"}
	flakeB = nixname.Flake{Org: "omnicorp", Name: "b"}
	flakeC = nixname.Flake{Org: "acme", Name: "tools"}
	// "a-b/x" sorts before "a/z" as a string ('-' < '/') but after it by
	// (org, name): Owners order is by Flake.String(), byte-wise.
	flakeDash  = nixname.Flake{Org: "a-b", Name: "x"}
	flakeShort = nixname.Flake{Org: "a", Name: "z"}
)

// Hash returns the i-th of a family of valid, distinct 32-character store
// path hashes.
func Hash(i int) string { return base32(uint64(i)*0x9e3779b97f4a7c15+1, 32) }

// NarFile returns the i-th of a family of valid NAR file names.
func NarFile(i int) string { return base32(uint64(i)*0xbf58476d1ce4e5b9+7, 52) + ".nar.xz" }

func base32(x uint64, n int) string {
	b := make([]byte, n)
	for i := range b {
		x ^= x >> 31
		x *= 0x94d049bb133111eb
		b[i] = nixbase32.Alphabet[(x>>59)&31]
	}
	return string(b)
}

// micro is a creation time every backend stores exactly (microseconds, UTC).
var micro = time.Date(2026, 3, 14, 15, 9, 26, 535897000, time.UTC)

func nar(i int) index.Nar {
	return index.Nar{
		File: NarFile(i), Compression: nixname.CompressionXZ,
		FileHash: fmt.Sprintf("sha256:file%d", i), FileSize: int64(100 + i),
		NarHash: fmt.Sprintf("sha256:nar%d", i), NarSize: int64(1000 + i),
		CreatedAt: micro.Add(time.Duration(i) * time.Second),
	}
}

func path(i int, refs ...string) index.Path {
	h := Hash(i)
	return index.Path{
		Hash: h, StorePath: "/nix/store/" + h + "-pkg" + fmt.Sprint(i), NarFile: NarFile(i), References: refs,
		NarHash:   fmt.Sprintf("sha256:nar%d", i),
		NarInfo:   fmt.Appendf(nil, "StorePath: /nix/store/%s-pkg%d\nURL: nar/%s\n", h, i, NarFile(i)),
		SignedBy:  "keyset-1",
		CreatedAt: micro.Add(time.Duration(i) * time.Minute),
	}
}

func ctxFor(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// found checks a lookup's error against want (found, or absent:
// ErrNotFound) and reports whether it found something to check further.
func found(t *testing.T, what string, err error, want bool) bool {
	t.Helper()
	if !want {
		if !errors.Is(err, index.ErrNotFound) {
			t.Fatalf("%s: err = %v, want ErrNotFound", what, err)
		}
		return false
	}
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	return true
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// Run runs the conformance suite against indexes made by newIndex.
func Run(t *testing.T, newIndex func(t *testing.T) index.Index) {
	open := func(t *testing.T) index.Index {
		t.Helper()
		x := newIndex(t)
		t.Cleanup(func() {
			if err := x.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
		})
		return x
	}
	t.Run("NarOwnership", func(t *testing.T) { testNarOwnership(t, open(t)) })
	t.Run("PathOwnership", func(t *testing.T) { testPathOwnership(t, open(t)) })
	t.Run("PathRoundTrip", func(t *testing.T) { testPathRoundTrip(t, open(t)) })
	t.Run("FirstContentKept", func(t *testing.T) { testFirstContentKept(t, open(t)) })
	t.Run("PerFlakeContent", func(t *testing.T) { testPerFlakeContent(t, open(t)) })
	t.Run("PathsOf", func(t *testing.T) { testPathsOf(t, open(t)) })
	t.Run("MissingPaths", func(t *testing.T) { testMissingPaths(t, open(t)) })
	t.Run("Owners", func(t *testing.T) { testOwners(t, open(t)) })
	t.Run("Logs", func(t *testing.T) { testLogs(t, open(t)) })
	t.Run("Files", func(t *testing.T) { testFiles(t, open(t)) })
	t.Run("Closure", func(t *testing.T) { testClosure(t, open(t)) })
	t.Run("Stats", func(t *testing.T) { testStats(t, open(t)) })
	t.Run("Validation", func(t *testing.T) { testValidation(t, open(t)) })
	t.Run("NarInfoUpdater", func(t *testing.T) { testUpdater(t, open(t)) })
	t.Run("FileDigestUpdater", func(t *testing.T) { testFileDigestUpdater(t, open(t)) })
	t.Run("ConcurrentPushers", func(t *testing.T) {
		x := open(t)
		testConcurrent(t, []index.Index{x, x})
	})
	t.Run("GC", func(t *testing.T) { runGC(t, open) })
}

// RunShared checks that several Index instances on one database (as several
// servers have) agree and lose nothing under concurrent pushes. newPair
// returns two instances opened separately on the same empty database; both
// are closed by RunShared.
func RunShared(t *testing.T, newPair func(t *testing.T) (index.Index, index.Index)) {
	open := func(t *testing.T) (index.Index, index.Index) {
		a, b := newPair(t)
		t.Cleanup(func() {
			for _, x := range []index.Index{a, b} {
				if err := x.Close(); err != nil {
					t.Errorf("Close: %v", err)
				}
			}
		})
		return a, b
	}
	t.Run("SeeEachOther", func(t *testing.T) {
		a, b := open(t)
		ctx := ctxFor(t)
		must(t, a.PutNar(ctx, flakeA, nar(1)))
		must(t, a.PutPath(ctx, flakeA, path(1)))
		must(t, b.PutPath(ctx, flakeB, path(1)))
		if _, err := b.GetPath(ctx, flakeA, Hash(1)); err != nil {
			t.Fatalf("instance b does not see a's push: %v", err)
		}
		if ps, err := a.PathsOf(ctx, Hash(1), nil); err != nil || len(ps) != 2 {
			t.Fatalf("PathsOf via a = %v, %v; want both flakes' records", ps, err)
		}
		if got, err := a.Owners(ctx, nixname.KindNarInfo, Hash(1)); err != nil || !slices.Equal(got, []nixname.Flake{flakeA, flakeB}) {
			t.Fatalf("Owners via a = %v, %v; want both flakes", got, err)
		}
	})
	t.Run("ConcurrentPushers", func(t *testing.T) {
		a, b := open(t)
		testConcurrent(t, []index.Index{a, b})
	})
	t.Run("OneCollectorLock", func(t *testing.T) {
		a, b := open(t)
		testLock(t, a, b)
	})
}

func testNarOwnership(t *testing.T, x index.Index) {
	ctx := ctxFor(t)
	n := nar(1)
	must(t, x.PutNar(ctx, flakeA, n))
	must(t, x.PutNar(ctx, flakeA, n)) // idempotent
	cases := []struct {
		name  string
		flake nixname.Flake
		file  string
		found bool
	}{
		{"owner", flakeA, n.File, true},
		{"any flake (zero)", nixname.Flake{}, n.File, true},
		{"other flake", flakeB, n.File, false},
		{"absent", flakeA, NarFile(2), false},
		{"absent, any flake", nixname.Flake{}, NarFile(2), false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := x.GetNar(ctx, c.flake, c.file)
			if !found(t, "GetNar", err, c.found) {
				return
			}
			if !got.CreatedAt.Equal(n.CreatedAt) {
				t.Errorf("CreatedAt = %v, want %v", got.CreatedAt, n.CreatedAt)
			}
			got.CreatedAt = n.CreatedAt
			if got != n {
				t.Errorf("GetNar = %+v\nwant %+v", got, n)
			}
		})
	}
	// A second flake pushing the same NAR (other metadata: it cannot
	// differ for a real content-addressed file) owns it; content stays.
	other := n
	other.FileSize, other.NarHash = 1, "sha256:other"
	must(t, x.PutNar(ctx, flakeB, other))
	got, err := x.GetNar(ctx, flakeB, n.File)
	if err != nil {
		t.Fatalf("GetNar for the second owner: %v", err)
	}
	if got.FileSize != n.FileSize || got.NarHash != n.NarHash {
		t.Errorf("second PutNar replaced the first content: %+v", got)
	}
	if o, err := x.Owners(ctx, nixname.KindNar, n.File); err != nil || !slices.Equal(o, []nixname.Flake{flakeA, flakeB}) {
		t.Errorf("Owners = %v, %v; want [%v %v]", o, err, flakeA, flakeB)
	}
	// A zero CreatedAt is filled in with about now.
	z := nar(9)
	z.CreatedAt = time.Time{}
	must(t, x.PutNar(ctx, flakeA, z))
	if got, err := x.GetNar(ctx, flakeA, z.File); err != nil || time.Since(got.CreatedAt).Abs() > time.Hour {
		t.Errorf("zero CreatedAt stored as %v (%v), want about now", got.CreatedAt, err)
	}
}

func testPathOwnership(t *testing.T, x index.Index) {
	ctx := ctxFor(t)
	must(t, x.PutNar(ctx, flakeA, nar(1)))
	must(t, x.PutPath(ctx, flakeA, path(1)))
	must(t, x.PutPath(ctx, flakeA, path(1))) // idempotent
	must(t, x.PutPath(ctx, flakeB, path(2)))
	cases := []struct {
		name  string
		flake nixname.Flake
		hash  string
		found bool
	}{
		{"owner", flakeA, Hash(1), true},
		{"other flake", flakeB, Hash(1), false},
		{"other flake's path", flakeA, Hash(2), false},
		{"absent", flakeA, Hash(3), false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p, err := x.GetPath(ctx, c.flake, c.hash)
			if !found(t, "GetPath", err, c.found) {
				return
			}
			if p.Hash != c.hash || p.Flake != c.flake {
				t.Fatalf("GetPath returned %s of %v", p.Hash, p.Flake)
			}
		})
	}
	// There is no union record: each flake has its own.
	if _, err := x.GetPath(ctx, nixname.Flake{}, Hash(1)); err == nil || errors.Is(err, index.ErrNotFound) {
		t.Errorf("GetPath without a flake: err = %v, want an error that is not ErrNotFound", err)
	}
}

func testPathRoundTrip(t *testing.T, x index.Index) {
	ctx := ctxFor(t)
	cases := []struct {
		name string
		p    index.Path
	}{
		{"no references", path(1)},
		{"references keep their order", path(2, Hash(9)+"-zlib", Hash(2)+"-pkg2", Hash(3)+"-glibc")},
		{"binary narinfo bytes", func() index.Path { p := path(3); p.NarInfo = []byte{0, 1, 2, 0xff, '\n'}; return p }()},
		{"no signer", func() index.Path { p := path(4); p.SignedBy = ""; return p }()},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			must(t, x.PutPath(ctx, flakeA, c.p))
			got, err := x.GetPath(ctx, flakeA, c.p.Hash)
			if err != nil {
				t.Fatal(err)
			}
			want := c.p
			if got.Hash != want.Hash || got.StorePath != want.StorePath || got.NarFile != want.NarFile ||
				got.NarHash != want.NarHash || got.Flake != flakeA ||
				string(got.NarInfo) != string(want.NarInfo) || got.SignedBy != want.SignedBy {
				t.Errorf("GetPath = %+v\nwant %+v", got, want)
			}
			if len(got.References)+len(want.References) > 0 && !slices.Equal(got.References, want.References) {
				t.Errorf("References = %q, want %q", got.References, want.References)
			}
			if !got.CreatedAt.Equal(want.CreatedAt) {
				t.Errorf("CreatedAt = %v, want %v", got.CreatedAt, want.CreatedAt)
			}
		})
	}
}

// otherContents is p with other contents for the same store path: another
// narinfo text, NAR file (number file), NarHash and signer, all named by tag.
func otherContents(p index.Path, tag string, file int) index.Path {
	p.NarInfo = []byte("StorePath: " + tag + "\n")
	p.NarFile = NarFile(file)
	p.NarHash = "sha256:" + tag
	p.SignedBy = "keyset-" + tag
	return p
}

// testFirstContentKept: a flake's re-push of a path with other content
// keeps its first record.
func testFirstContentKept(t *testing.T, x index.Index) {
	ctx := ctxFor(t)
	first, second := path(1, Hash(5)+"-dep"), otherContents(path(1), "changed", 77)
	must(t, x.PutPath(ctx, flakeA, first))
	must(t, x.PutPath(ctx, flakeA, second))
	got, err := x.GetPath(ctx, flakeA, first.Hash)
	if err != nil {
		t.Fatal(err)
	}
	if string(got.NarInfo) != string(first.NarInfo) || got.NarFile != first.NarFile || got.SignedBy != first.SignedBy ||
		got.NarHash != first.NarHash || !slices.Equal(got.References, first.References) {
		t.Errorf("GetPath = %+v: the re-push replaced the first content", got)
	}
}

// testPerFlakeContent: two flakes pushing different contents for one store
// path each keep their own; neither push changes or blocks the other's.
func testPerFlakeContent(t *testing.T, x index.Index) {
	ctx := ctxFor(t)
	genuine, bogus := path(1, Hash(5)+"-dep"), otherContents(path(1), "bogus", 66)
	// The attacker's flake pushes first.
	must(t, x.PutPath(ctx, flakeC, bogus))
	must(t, x.PutPath(ctx, flakeA, genuine))
	for _, c := range []struct {
		flake nixname.Flake
		want  index.Path
	}{{flakeA, genuine}, {flakeC, bogus}} {
		got, err := x.GetPath(ctx, c.flake, genuine.Hash)
		if err != nil {
			t.Fatalf("GetPath(%v): %v", c.flake, err)
		}
		if string(got.NarInfo) != string(c.want.NarInfo) || got.NarFile != c.want.NarFile || got.NarHash != c.want.NarHash ||
			got.SignedBy != c.want.SignedBy || !slices.Equal(got.References, c.want.References) || got.Flake != c.flake {
			t.Errorf("GetPath(%v) = %+v\nwant %+v", c.flake, got, c.want)
		}
	}
	if _, err := x.GetPath(ctx, flakeB, genuine.Hash); !errors.Is(err, index.ErrNotFound) {
		t.Errorf("a third flake sees the path: %v", err)
	}
	if !genuine.SameContent(genuine) || genuine.SameContent(bogus) {
		t.Errorf("SameContent: genuine vs itself must agree, vs bogus must not")
	}
	other := genuine
	other.NarFile, other.NarInfo = NarFile(88), []byte("other compression\n")
	if !genuine.SameContent(other) {
		t.Errorf("SameContent: another NAR file of the same NAR and references must agree")
	}
	renamed := other
	renamed.StorePath = "/nix/store/" + Hash(1) + "-evil"
	if genuine.SameContent(renamed) {
		t.Errorf("SameContent: the same hash and NAR under another store path name must not agree")
	}
	other.References = []string{Hash(6) + "-other"}
	if genuine.SameContent(other) {
		t.Errorf("SameContent: other references must not agree")
	}
}

// testClosure: index.Closure walks one flake's own records only: another
// flake's record of the same path (with other references) never widens it,
// a missing reference is left out, a cycle ends, and the limit holds.
func testClosure(t *testing.T, x index.Index) {
	ctx := ctxFor(t)
	ref := func(i int) string { return Hash(i) + "-pkg" + fmt.Sprint(i) }
	// flakeA: 1 → 2 → 3, 2 → 4 (absent in A), 3 → 1 (a cycle); 5 unrelated.
	must(t, x.PutPath(ctx, flakeA, path(1, ref(2))))
	must(t, x.PutPath(ctx, flakeA, path(2, ref(3), ref(4))))
	must(t, x.PutPath(ctx, flakeA, path(3, ref(1))))
	must(t, x.PutPath(ctx, flakeA, path(5)))
	// flakeC holds 1 with a reference to 5 and holds 4: neither may appear.
	must(t, x.PutPath(ctx, flakeC, path(1, ref(5))))
	must(t, x.PutPath(ctx, flakeC, path(4)))
	hashes := func(ps []index.Path) []string {
		var out []string
		for _, p := range ps {
			if p.Flake != flakeA && !p.Flake.IsZero() {
				t.Errorf("closure holds %v's record of %s", p.Flake, p.Hash)
			}
			out = append(out, p.Hash)
		}
		return out
	}
	sorted := func(s ...string) []string { slices.Sort(s); return s }
	got, err := index.Closure(ctx, x, flakeA, []string{Hash(1)}, 0)
	must(t, err)
	if want := sorted(Hash(1), Hash(2), Hash(3)); !slices.Equal(hashes(got), want) {
		t.Errorf("closure of 1 in A = %v, want %v", hashes(got), want)
	}
	got, err = index.Closure(ctx, x, flakeA, []string{Hash(3), Hash(5), Hash(9)}, 0)
	must(t, err)
	if want := sorted(Hash(1), Hash(2), Hash(3), Hash(5)); !slices.Equal(hashes(got), want) {
		t.Errorf("closure of 3, 5, 9 in A = %v, want %v", hashes(got), want)
	}
	got, err = index.Closure(ctx, x, flakeB, []string{Hash(1)}, 0)
	must(t, err)
	if len(got) != 0 {
		t.Errorf("closure of 1 in B (which holds nothing) = %v, want none", hashes(got))
	}
	if _, err := index.Closure(ctx, x, flakeA, []string{Hash(1)}, 2); !errors.Is(err, index.ErrClosureTooLarge) {
		t.Errorf("closure of 3 paths with limit 2: err = %v, want ErrClosureTooLarge", err)
	}
	if _, err := index.Closure(ctx, x, flakeA, []string{"not-a-hash"}, 0); err == nil {
		t.Errorf("closure of a malformed root: no error")
	}
	// One path at a time (an index without PathsGetter) gives the same.
	got, err = index.Closure(ctx, struct{ index.Index }{x}, flakeA, []string{Hash(3), Hash(5), Hash(9)}, 0)
	must(t, err)
	if want := sorted(Hash(1), Hash(2), Hash(3), Hash(5)); !slices.Equal(hashes(got), want) {
		t.Errorf("closure without PathsGetter = %v, want %v", hashes(got), want)
	}
	pg, ok := x.(index.PathsGetter)
	if !ok {
		return
	}
	// GetPaths: only the flake's own records, absent ones left out, in
	// chunks beyond any bound on query parameters.
	many := []string{Hash(1), Hash(4), Hash(9)}
	for i := 1000; i < 3000; i++ {
		many = append(many, Hash(i))
	}
	ps, err := pg.GetPaths(ctx, flakeA, many)
	must(t, err)
	if h := hashes(ps); !slices.Equal(h, []string{Hash(1)}) || string(ps[0].NarInfo) != string(path(1, ref(2)).NarInfo) {
		t.Errorf("GetPaths(A, 1 4 9 + 2000 absent) = %v, want A's record of 1", h)
	}
	if ps, err := pg.GetPaths(ctx, flakeA, nil); err != nil || len(ps) != 0 {
		t.Errorf("GetPaths of none = %v, %v", ps, err)
	}
}

// manyFlakes is n made-up flakes with the given ones among them.
func manyFlakes(n int, with ...nixname.Flake) []nixname.Flake {
	out := make([]nixname.Flake, 0, n+len(with))
	for i := range n {
		out = append(out, nixname.Flake{Org: "many", Name: fmt.Sprint("f", i)})
		if i == n/2 {
			out = append(out, with...)
		}
	}
	return out
}

// testPathsOf: the records of a path by flake, for the union view.
func testPathsOf(t *testing.T, x index.Index) {
	ctx := ctxFor(t)
	pb := path(1)
	pb.NarHash = "sha256:b"
	must(t, x.PutPath(ctx, flakeA, path(1)))
	must(t, x.PutPath(ctx, flakeB, pb))
	must(t, x.PutPath(ctx, flakeC, path(1)))
	must(t, x.PutPath(ctx, flakeC, path(2)))
	flakesOf := func(ps []index.Path) []nixname.Flake {
		var out []nixname.Flake
		for _, p := range ps {
			if p.Hash != Hash(1) {
				t.Errorf("PathsOf returned a record of %s", p.Hash)
			}
			out = append(out, p.Flake)
		}
		return out
	}
	cases := []struct {
		name   string
		flakes []nixname.Flake
		want   []nixname.Flake
	}{
		{"all (nil)", nil, []nixname.Flake{flakeC, flakeA, flakeB}},
		{"none asked", []nixname.Flake{}, nil},
		{"some, sorted", []nixname.Flake{flakeB, flakeC}, []nixname.Flake{flakeC, flakeB}},
		{"one", []nixname.Flake{flakeB}, []nixname.Flake{flakeB}},
		{"a flake without it", []nixname.Flake{flakeDash, flakeA}, []nixname.Flake{flakeA}},
		{"only flakes without it", []nixname.Flake{flakeDash}, nil},
		{"more flakes than one query takes", manyFlakes(1200, flakeB, flakeA), []nixname.Flake{flakeA, flakeB}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := x.PathsOf(ctx, Hash(1), c.flakes)
			if err != nil {
				t.Fatal(err)
			}
			if f := flakesOf(got); !slices.Equal(f, c.want) {
				t.Fatalf("PathsOf flakes = %v, want %v", f, c.want)
			}
			for _, p := range got {
				if want := map[nixname.Flake]string{flakeB: "sha256:b"}[p.Flake]; want != "" && p.NarHash != want {
					t.Errorf("PathsOf gave %v the NarHash %s, want its own %s", p.Flake, p.NarHash, want)
				}
			}
		})
	}
	if got, err := x.PathsOf(ctx, Hash(3), nil); err != nil || len(got) != 0 {
		t.Errorf("PathsOf of an absent path = %v, %v; want none", got, err)
	}
}

func testMissingPaths(t *testing.T, x index.Index) {
	ctx := ctxFor(t)
	for i := range 5 {
		must(t, x.PutPath(ctx, flakeA, path(i)))
	}
	must(t, x.PutPath(ctx, flakeB, path(10)))
	many := make([]string, 0, 1200)
	wantMany := []string{}
	for i := range 1200 {
		many = append(many, Hash(i))
		if i >= 5 {
			wantMany = append(wantMany, Hash(i))
		}
	}
	cases := []struct {
		name   string
		flake  nixname.Flake
		hashes []string
		want   []string
	}{
		{"none asked", flakeA, nil, nil},
		{"all owned", flakeA, []string{Hash(0), Hash(4)}, nil},
		{"order kept", flakeA, []string{Hash(9), Hash(1), Hash(8), Hash(2), Hash(7)}, []string{Hash(9), Hash(8), Hash(7)}},
		{"duplicates once", flakeA, []string{Hash(8), Hash(8), Hash(0), Hash(8)}, []string{Hash(8)}},
		{"other flake's path is missing", flakeA, []string{Hash(10), Hash(3)}, []string{Hash(10)}},
		{"for the other flake", flakeB, []string{Hash(10), Hash(3)}, []string{Hash(3)}},
		{"more than one query's worth", flakeA, many, wantMany},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := x.MissingPaths(ctx, c.flake, c.hashes)
			if err != nil {
				t.Fatal(err)
			}
			if len(got)+len(c.want) > 0 && !slices.Equal(got, c.want) {
				t.Fatalf("MissingPaths = %d %q…, want %d %q…", len(got), head(got), len(c.want), head(c.want))
			}
		})
	}
}

func head(s []string) []string { return s[:min(len(s), 5)] }

func testOwners(t *testing.T, x index.Index) {
	ctx := ctxFor(t)
	for _, f := range []nixname.Flake{flakeB, flakeShort, flakeA, flakeDash, flakeC, flakeA} {
		must(t, x.PutNar(ctx, f, nar(1)))
		must(t, x.PutPath(ctx, f, path(1)))
	}
	must(t, x.PutPath(ctx, flakeC, path(2)))
	must(t, x.PutNar(ctx, flakeB, nar(2)))
	all := []nixname.Flake{flakeDash, flakeShort, flakeC, flakeA, flakeB} // by String(): "a-b/x" < "a/z" < "acme/…" < "omnicorp/…"
	cases := []struct {
		name string
		kind index.Kind
		hash string
		want []nixname.Flake
	}{
		{"path: sorted, deduplicated", nixname.KindNarInfo, Hash(1), all},
		{"nar: sorted, deduplicated", nixname.KindNar, NarFile(1), all},
		{"path with one owner", nixname.KindNarInfo, Hash(2), []nixname.Flake{flakeC}},
		{"nar with one owner", nixname.KindNar, NarFile(2), []nixname.Flake{flakeB}},
		{"kinds are separate: hash as a nar", nixname.KindNar, Hash(1), nil},
		{"kinds are separate: file as a path", nixname.KindNarInfo, NarFile(1), nil},
		{"absent path", nixname.KindNarInfo, Hash(3), nil},
		{"absent nar", nixname.KindNar, NarFile(3), nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := x.Owners(ctx, c.kind, c.hash)
			if err != nil {
				t.Fatalf("Owners: %v (absent objects have no owners, not an error)", err)
			}
			if len(got)+len(c.want) > 0 && !slices.Equal(got, c.want) {
				t.Fatalf("Owners = %v, want %v", got, c.want)
			}
		})
	}
	for _, k := range []index.Kind{"cache-info", "bogus"} {
		if _, err := x.Owners(ctx, k, Hash(1)); err == nil {
			t.Errorf("Owners(%q) succeeded, want an error", k)
		}
	}
}

func testLogs(t *testing.T, x index.Index) {
	ctx := ctxFor(t)
	drv := Hash(1) + "-hello-2.12.drv"
	before := time.Now()
	must(t, x.PutLog(ctx, flakeA, index.Log{Drv: drv, BlobKey: "log/a/1"}))
	a1, err := x.GetLog(ctx, flakeA, drv)
	must(t, err)
	must(t, x.PutLog(ctx, flakeB, index.Log{Drv: drv, BlobKey: "log/b/1", Encoding: "br"}))
	must(t, x.PutLog(ctx, flakeA, index.Log{Drv: drv, BlobKey: "log/a/2", Encoding: "zstd"})) // replaces
	cases := []struct {
		flake   nixname.Flake
		drv     string
		want    index.Log
		missing bool
	}{
		{flakeA, drv, index.Log{Drv: drv, BlobKey: "log/a/2", Encoding: "zstd"}, false},
		{flakeB, drv, index.Log{Drv: drv, BlobKey: "log/b/1", Encoding: "br"}, false},
		{flakeC, drv, index.Log{}, true},
		{flakeA, Hash(2) + "-other.drv", index.Log{}, true},
	}
	for _, c := range cases {
		got, err := x.GetLog(ctx, c.flake, c.drv)
		if c.missing {
			if !errors.Is(err, index.ErrNotFound) {
				t.Errorf("GetLog(%v, %s) = %q, %v; want ErrNotFound", c.flake, c.drv, got, err)
			}
			continue
		}
		at := got.UploadedAt
		got.UploadedAt = time.Time{}
		if err != nil || got != c.want {
			t.Errorf("GetLog(%v, %s) = %+v, %v; want %+v", c.flake, c.drv, got, err, c.want)
		}
		// The index's clock (PostgreSQL's now()) may be a little off this
		// process's: a minute either way.
		if at.Before(before.Add(-time.Minute)) || at.After(time.Now().Add(time.Minute)) {
			t.Errorf("GetLog(%v, %s).UploadedAt = %v, want about now (%v)", c.flake, c.drv, at, before)
		}
	}
	// UploadedAt is the current log's upload: the replacing upload of
	// flakeA is at or after its first and after flakeB's, which the union
	// view then serves (earliest upload first).
	a2, err1 := x.GetLog(ctx, flakeA, drv)
	b1, err2 := x.GetLog(ctx, flakeB, drv)
	if err1 != nil || err2 != nil || a2.UploadedAt.Before(a1.UploadedAt) || a2.UploadedAt.Before(b1.UploadedAt) {
		t.Errorf("UploadedAt: first log of A %v, B's %v, A's replacing log %v (%v, %v); want A's replacement last",
			a1.UploadedAt, b1.UploadedAt, a2.UploadedAt, err1, err2)
	}
	if got, err := x.Owners(ctx, nixname.KindLog, drv); err != nil || !slices.Equal(got, []nixname.Flake{flakeA, flakeB}) {
		t.Errorf("Owners(log) = %v, %v; want both flakes", got, err)
	}
}

// file is a File of kind for key i that needs what i's narinfo or NAR is.
func file(kind index.Kind, i int, data string) index.File {
	f := index.File{Kind: kind, Key: Hash(i), Needs: Hash(i), Data: []byte(data), Encoding: "zstd",
		Digest: "sha256:" + data, Size: int64(len(data))}
	switch kind {
	case nixname.KindDebugInfo:
		f.Key, f.Needs = fmt.Sprintf("%040x", i), NarFile(i)
	case nixname.KindRealisation:
		f.Key = fmt.Sprintf("sha256:%064x!out", i)
	case nixname.KindBuildTrace:
		f.Key = Hash(i+100) + "-x.drv/out"
	}
	return f
}

// A flake's files are its own, served (GetFile, Owners) only while it owns
// what they need, replaced or kept first by kind.
func testFiles(t *testing.T, x index.Index) {
	ctx := ctxFor(t)
	for i, kind := range nixname.FileKinds() {
		i := 10 * (i + 1) // each kind its own objects
		t.Run(string(kind), func(t *testing.T) {
			f := file(kind, i, `{"a":1}`)
			must(t, x.PutFile(ctx, flakeA, f))
			get := func(flake nixname.Flake) (index.File, error) { return x.GetFile(ctx, flake, kind, f.Key) }
			if _, err := get(flakeA); !errors.Is(err, index.ErrNotFound) {
				t.Fatalf("GetFile before the flake owns %s: %v; want ErrNotFound", f.Needs, err)
			}
			if got, err := x.Owners(ctx, kind, f.Key); err != nil || len(got) != 0 {
				t.Fatalf("Owners before the flake owns %s = %v, %v; want none", f.Needs, got, err)
			}
			// Another flake owning what the file needs does not make A's file servable.
			must(t, x.PutNar(ctx, flakeB, nar(i)))
			must(t, x.PutPath(ctx, flakeB, path(i)))
			if _, err := get(flakeA); !errors.Is(err, index.ErrNotFound) {
				t.Fatalf("GetFile when only another flake owns %s: %v; want ErrNotFound", f.Needs, err)
			}
			must(t, x.PutNar(ctx, flakeA, nar(i)))
			must(t, x.PutPath(ctx, flakeA, path(i)))
			got, err := get(flakeA)
			if err != nil || got.Flake != flakeA || string(got.Data) != `{"a":1}` || got.Encoding != "zstd" || got.Needs != f.Needs || got.Key != f.Key || got.Kind != kind ||
				got.Digest != f.Digest || got.Size != f.Size {
				t.Fatalf("GetFile = %+v, %v", got, err)
			}
			if _, err := get(flakeB); !errors.Is(err, index.ErrNotFound) {
				t.Fatalf("flake B sees A's file: %v", err)
			}
			if owners, err := x.Owners(ctx, kind, f.Key); err != nil || !slices.Equal(owners, []nixname.Flake{flakeA}) {
				t.Fatalf("Owners = %v, %v; want A only", owners, err)
			}
			// B's own file of the same key is B's; A's is unchanged.
			must(t, x.PutFile(ctx, flakeB, file(kind, i, `{"b":2}`)))
			if got, err := get(flakeB); err != nil || string(got.Data) != `{"b":2}` {
				t.Fatalf("B's file = %+v, %v", got, err)
			}
			if got, err := get(flakeA); err != nil || string(got.Data) != `{"a":1}` {
				t.Fatalf("A's file after B's push = %+v, %v", got, err)
			}
			if owners, err := x.Owners(ctx, kind, f.Key); err != nil || !slices.Equal(owners, []nixname.Flake{flakeA, flakeB}) {
				t.Fatalf("Owners = %v, %v; want A and B", owners, err)
			}
			// A re-push: replaced or the first kept, by kind.
			again := file(kind, i, `{"a":3}`)
			again.Encoding = ""
			must(t, x.PutFile(ctx, flakeA, again))
			got, err = get(flakeA)
			want := `{"a":3}`
			if kind.KeepsFirst() {
				want = `{"a":1}`
			}
			if err != nil || string(got.Data) != want || got.Digest != "sha256:"+want || got.Size != int64(len(want)) {
				t.Fatalf("after a re-push: %+v, %v; want data %s with its digest and size", got, err, want)
			}
		})
	}
	bad := []struct {
		name string
		err  error
	}{
		{"PutFile without flake", x.PutFile(ctx, nixname.Flake{}, file(nixname.KindListing, 9, "{}"))},
		{"PutFile of a narinfo", x.PutFile(ctx, flakeA, index.File{Kind: nixname.KindNarInfo, Key: Hash(9), Needs: Hash(9), Data: []byte("x")})},
		{"PutFile without needs", x.PutFile(ctx, flakeA, index.File{Kind: nixname.KindListing, Key: Hash(9), Data: []byte("x")})},
		{"PutLog without blob key", x.PutLog(ctx, flakeA, index.Log{Drv: Hash(9) + "-x.drv"})},
	}
	for _, c := range bad {
		if c.err == nil {
			t.Errorf("%s: accepted", c.name)
		}
	}
	if _, err := x.GetFile(ctx, nixname.Flake{}, nixname.KindListing, Hash(1)); err == nil || errors.Is(err, index.ErrNotFound) {
		t.Errorf("GetFile without flake: %v; want an error other than ErrNotFound", err)
	}
}

func testStats(t *testing.T, x index.Index) {
	ctx := ctxFor(t)
	if s, err := x.Stats(ctx); err != nil || s != (index.Stats{}) {
		t.Fatalf("Stats of an empty index = %+v, %v", s, err)
	}
	must(t, x.PutNar(ctx, flakeA, nar(1)))
	must(t, x.PutNar(ctx, flakeB, nar(1)))
	must(t, x.PutNar(ctx, flakeB, nar(2)))
	must(t, x.PutPath(ctx, flakeA, path(1)))
	must(t, x.PutPath(ctx, flakeB, path(1)))
	must(t, x.PutPath(ctx, flakeB, path(2)))
	must(t, x.PutPath(ctx, flakeB, path(3)))
	must(t, x.PutNar(ctx, flakeC, nar(3))) // a flake owning only a NAR counts
	must(t, x.PutLog(ctx, flakeDash, index.Log{Drv: Hash(1) + "-x.drv", BlobKey: "log/k"}))
	want := index.Stats{Paths: 3, Nars: 3, Flakes: 3}
	if s, err := x.Stats(ctx); err != nil || s != want {
		t.Fatalf("Stats = %+v, %v; want %+v", s, err, want)
	}
}

func testValidation(t *testing.T, x index.Index) {
	ctx := ctxFor(t)
	bad := nixname.Flake{Org: "Omni Corp", Name: "../x"}
	cases := []struct {
		name string
		err  error
	}{
		{"PutNar without flake", x.PutNar(ctx, nixname.Flake{}, nar(1))},
		{"PutNar with an invalid flake", x.PutNar(ctx, bad, nar(1))},
		{"PutNar without file", x.PutNar(ctx, flakeA, index.Nar{})},
		{"PutPath without flake", x.PutPath(ctx, nixname.Flake{}, path(1))},
		{"PutPath with an invalid flake", x.PutPath(ctx, bad, path(1))},
		{"PutPath with a bad hash", x.PutPath(ctx, flakeA, func() index.Path { p := path(1); p.Hash = "not-a-hash"; return p }())},
		{"PutLog without flake", x.PutLog(ctx, nixname.Flake{}, index.Log{Drv: Hash(1) + "-x.drv", BlobKey: "log/x"})},
	}
	for _, c := range cases {
		if c.err == nil {
			t.Errorf("%s: accepted", c.name)
		}
	}
	if s, err := x.Stats(ctx); err != nil || s != (index.Stats{}) {
		t.Errorf("refused writes left something: Stats = %+v, %v", s, err)
	}
}

func testUpdater(t *testing.T, x index.Index) {
	u, ok := x.(index.NarInfoUpdater)
	if !ok {
		t.Skip("index does not implement index.NarInfoUpdater")
	}
	ctx := ctxFor(t)
	must(t, x.PutPath(ctx, flakeA, path(1)))
	must(t, x.PutPath(ctx, flakeB, path(1)))
	must(t, u.UpdateNarInfo(ctx, flakeA, Hash(1), []byte("re-signed\n"), "keyset-2"))
	got, err := x.GetPath(ctx, flakeA, Hash(1))
	if err != nil {
		t.Fatal(err)
	}
	if string(got.NarInfo) != "re-signed\n" || got.SignedBy != "keyset-2" || got.NarFile != NarFile(1) {
		t.Fatalf("after UpdateNarInfo: %+v", got)
	}
	if other, err := x.GetPath(ctx, flakeB, Hash(1)); err != nil || string(other.NarInfo) != string(path(1).NarInfo) || other.SignedBy != "keyset-1" {
		t.Fatalf("UpdateNarInfo of %v changed %v's record: %+v, %v", flakeA, flakeB, other, err)
	}
	if err := u.UpdateNarInfo(ctx, flakeA, Hash(2), []byte("x"), "k"); err != nil {
		t.Fatalf("UpdateNarInfo of an absent hash: %v, want nil", err)
	}
	if ps, err := x.PathsOf(ctx, Hash(2), nil); err != nil || len(ps) != 0 {
		t.Fatalf("UpdateNarInfo created a path: %v, %v", ps, err)
	}
}

// A file recorded before digests and sizes were (Size -1) is completed
// once, only while it is still the file that was read: not after a
// re-push replaced it, not twice, not another flake's.
func testFileDigestUpdater(t *testing.T, x index.Index) {
	u, ok := x.(index.FileDigestUpdater)
	if !ok {
		t.Skip("index does not implement index.FileDigestUpdater")
	}
	ctx := ctxFor(t)
	for _, fl := range []nixname.Flake{flakeA, flakeB} {
		must(t, x.PutNar(ctx, fl, nar(1)))
		must(t, x.PutPath(ctx, fl, path(1)))
	}
	old := file(nixname.KindListing, 1, `{"old":1}`)
	old.Digest, old.Size = "", -1
	must(t, x.PutFile(ctx, flakeA, old))
	must(t, x.PutFile(ctx, flakeB, old))
	got, err := x.GetFile(ctx, flakeA, old.Kind, old.Key)
	if err != nil || got.Digest != "" || got.Size != -1 {
		t.Fatalf("file without digest: %+v, %v; want digest \"\" and size -1", got, err)
	}
	// Another time than the file's: the file was replaced since it was read.
	must(t, u.UpdateFileDigest(ctx, flakeA, old.Kind, old.Key, got.CreatedAt.Add(-time.Second), "sha256:stale", 1))
	if again, err := x.GetFile(ctx, flakeA, old.Kind, old.Key); err != nil || again.Size != -1 || again.Digest != "" {
		t.Fatalf("UpdateFileDigest of a file replaced since: %+v, %v; want it unchanged", again, err)
	}
	must(t, u.UpdateFileDigest(ctx, flakeA, old.Kind, old.Key, got.CreatedAt, "sha256:old", 9))
	if done, err := x.GetFile(ctx, flakeA, old.Kind, old.Key); err != nil || done.Digest != "sha256:old" || done.Size != 9 || string(done.Data) != `{"old":1}` {
		t.Fatalf("after UpdateFileDigest: %+v, %v", done, err)
	}
	// Completed: a later update (a read that raced) changes nothing.
	must(t, u.UpdateFileDigest(ctx, flakeA, old.Kind, old.Key, got.CreatedAt, "sha256:other", 7))
	if done, err := x.GetFile(ctx, flakeA, old.Kind, old.Key); err != nil || done.Digest != "sha256:old" || done.Size != 9 {
		t.Fatalf("a second UpdateFileDigest changed the file: %+v, %v", done, err)
	}
	if other, err := x.GetFile(ctx, flakeB, old.Kind, old.Key); err != nil || other.Digest != "" || other.Size != -1 {
		t.Fatalf("UpdateFileDigest of %v changed %v's file: %+v, %v", flakeA, flakeB, other, err)
	}
	// A new upload of the file replaces the digest and size with its own.
	fresh := file(nixname.KindListing, 1, `{"new":22}`)
	must(t, x.PutFile(ctx, flakeA, fresh))
	if got, err := x.GetFile(ctx, flakeA, old.Kind, old.Key); err != nil || got.Digest != fresh.Digest || got.Size != fresh.Size {
		t.Fatalf("re-push after UpdateFileDigest: %+v, %v; want %s, %d", got, err, fresh.Digest, fresh.Size)
	}
	if err := u.UpdateFileDigest(ctx, flakeA, old.Kind, Hash(2), got.CreatedAt, "sha256:x", 1); err != nil {
		t.Fatalf("UpdateFileDigest of an absent file: %v, want nil", err)
	}
}

// testConcurrent pushes overlapping closures from many goroutines, spread
// over the given instances, as several CI jobs pushing through several
// servers do: every push succeeds and every ownership is recorded.
func testConcurrent(t *testing.T, xs []index.Index) {
	const (
		pushers  = 16
		closure  = 40 // paths per push
		distinct = 60 // paths overall: closures overlap heavily
	)
	flakes := []nixname.Flake{flakeA, flakeB, flakeC}
	ctx := ctxFor(t)
	var wg sync.WaitGroup
	errs := make(chan error, pushers)
	for g := range pushers {
		wg.Go(func() {
			x := xs[g%len(xs)]
			f := flakes[g%len(flakes)]
			for k := range closure {
				i := (g*7 + k) % distinct
				if err := x.PutNar(ctx, f, nar(i)); err != nil {
					errs <- fmt.Errorf("pusher %d PutNar %d: %w", g, i, err)
					return
				}
				if err := x.PutPath(ctx, f, path(i)); err != nil {
					errs <- fmt.Errorf("pusher %d PutPath %d: %w", g, i, err)
					return
				}
				if _, err := x.MissingPaths(ctx, f, []string{Hash(i), Hash(i + 1)}); err != nil {
					errs <- fmt.Errorf("pusher %d MissingPaths: %w", g, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	// What each flake must own, and who must own each path.
	owns := map[nixname.Flake]map[int]bool{}
	owners := map[int][]nixname.Flake{}
	for g := range pushers {
		f := flakes[g%len(flakes)]
		if owns[f] == nil {
			owns[f] = map[int]bool{}
		}
		for k := range closure {
			i := (g*7 + k) % distinct
			if !owns[f][i] {
				owns[f][i] = true
				owners[i] = append(owners[i], f)
			}
		}
	}
	for _, x := range xs {
		for f, set := range owns {
			var hashes []string
			for i := range distinct {
				hashes = append(hashes, Hash(i))
			}
			missing, err := x.MissingPaths(ctx, f, hashes)
			if err != nil {
				t.Fatal(err)
			}
			for _, h := range missing {
				for i := range set {
					if Hash(i) == h {
						t.Errorf("%v lost ownership of path %d", f, i)
					}
				}
			}
			if want := distinct - len(set); len(missing) != want {
				t.Errorf("%v: %d paths missing, want %d", f, len(missing), want)
			}
		}
		for i, fs := range owners {
			want := slices.Clone(fs)
			slices.SortFunc(want, func(a, b nixname.Flake) int { return cmp.Compare(a.String(), b.String()) })
			for _, kind := range []index.Kind{nixname.KindNarInfo, nixname.KindNar} {
				key := Hash(i)
				if kind == nixname.KindNar {
					key = NarFile(i)
				}
				got, err := x.Owners(ctx, kind, key)
				if err != nil || !slices.Equal(got, want) {
					t.Errorf("Owners(%s, %d) = %v, %v; want %v", kind, i, got, err, want)
				}
			}
		}
		s, err := x.Stats(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if want := (index.Stats{Paths: int64(len(owners)), Nars: int64(len(owners)), Flakes: int64(len(owns))}); s != want {
			t.Errorf("Stats = %+v, want %+v", s, want)
		}
	}
}

// V1Nar and V1Path are rows of a version-1 index, which recorded one
// narinfo per store path for all flakes (paths + path_owners) before
// per-flake narinfos.
type V1Nar struct {
	Nar    index.Nar
	Owners []nixname.Flake
}

// V1Path is a path row of a version-1 index and the flakes owning it.
type V1Path struct {
	Path   index.Path // Flake and NarHash unused: version 1 had neither
	Owners []nixname.Flake
}

// V1Fixture is what a backend's migration test writes into a version-1
// database (with that version's SQL) before opening it; CheckMigrated then
// checks what the migration made of it. It holds what version 1 allowed: a
// flake that pushed a path another flake had pushed first was recorded as
// an owner of the first pusher's narinfo, whose NAR or references it may
// not own.
func V1Fixture() ([]V1Nar, []V1Path) {
	nars := []V1Nar{
		{nar(1), []nixname.Flake{flakeA, flakeB}},
		{nar(2), []nixname.Flake{flakeA, flakeC}},
		{nar(3), []nixname.Flake{flakeC}},
		{nar(4), []nixname.Flake{flakeA}},
	}
	paths := []V1Path{
		// Pushed by A and B, both own the NAR: each keeps a copy.
		{path(1), []nixname.Flake{flakeA, flakeB}},
		// A's path referencing path 1; C adopted it (owns the NAR) but
		// does not own path 1: C's copy goes.
		{path(2, Hash(1)+"-pkg1", Hash(2)+"-pkg2"), []nixname.Flake{flakeA, flakeC}},
		// C's own path referencing path 2: goes once C's copy of 2 has gone.
		{path(3, Hash(2)+"-pkg2"), []nixname.Flake{flakeC}},
		// B owns path 4 but not its NAR: B's copy goes, A's stays.
		{path(4), []nixname.Flake{flakeA, flakeB}},
	}
	return nars, paths
}

// CheckMigrated checks an index opened on a version-1 database that holds
// V1Fixture.
func CheckMigrated(t *testing.T, x index.Index) {
	t.Helper()
	ctx := ctxFor(t)
	want := map[nixname.Flake][]int{flakeA: {1, 2, 4}, flakeB: {1}, flakeC: nil}
	_, v1 := V1Fixture()
	for f, keep := range want {
		for k, vp := range v1 {
			i := k + 1
			got, err := x.GetPath(ctx, f, vp.Path.Hash)
			if !slices.Contains(keep, i) {
				if !errors.Is(err, index.ErrNotFound) {
					t.Errorf("after migration %v still serves path %d (%+v, %v): it does not own its NAR or references", f, i, got, err)
				}
				continue
			}
			if err != nil {
				t.Errorf("after migration %v lost path %d: %v", f, i, err)
				continue
			}
			if got.Flake != f || string(got.NarInfo) != string(vp.Path.NarInfo) || got.NarFile != vp.Path.NarFile ||
				got.NarHash != nar(i).NarHash || !slices.Equal(got.References, vp.Path.References) || !got.CreatedAt.Equal(vp.Path.CreatedAt) {
				t.Errorf("after migration %v's path %d = %+v\nwant %+v with NarHash %s", f, i, got, vp.Path, nar(i).NarHash)
			}
		}
	}
	if o, err := x.Owners(ctx, nixname.KindNarInfo, Hash(2)); err != nil || !slices.Equal(o, []nixname.Flake{flakeA}) {
		t.Errorf("after migration Owners(path 2) = %v, %v; want [%v]", o, err, flakeA)
	}
	if o, err := x.Owners(ctx, nixname.KindNar, NarFile(2)); err != nil || !slices.Equal(o, []nixname.Flake{flakeC, flakeA}) {
		t.Errorf("after migration Owners(nar 2) = %v, %v; NAR ownership must stay", o, err)
	}
	// Migrated rows count as used when they were created.
	for f, keep := range want {
		u := uses(t, x, f)
		for _, i := range keep {
			if got := u[Hash(i)]; !got.LastUsed.Equal(v1[i-1].Path.CreatedAt) || got.Size != nar(i).FileSize {
				t.Errorf("after migration %v's path %d: last used %v size %d; want its creation time %v and size %d", f, i, got.LastUsed, got.Size, v1[i-1].Path.CreatedAt, nar(i).FileSize)
			}
		}
	}
	if doomed, err := collectable(t, x).DoomNars(ctx, time.Time{}); err != nil || len(doomed) != 0 {
		t.Errorf("after migration DoomNars(zero time) = %v, %v; want nothing doomed", doomed, err)
	}
	// The migrated index takes per-flake pushes.
	bogus := path(1)
	bogus.NarHash, bogus.NarInfo = "sha256:bogus", []byte("bogus\n")
	must(t, x.PutPath(ctx, flakeC, bogus))
	if got, err := x.GetPath(ctx, flakeA, Hash(1)); err != nil || got.NarHash != nar(1).NarHash {
		t.Errorf("after migration a push to %v changed %v's path: %+v, %v", flakeC, flakeA, got, err)
	}
}
