package index

import (
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/flakegate/flakegate/internal/nixname"
)

func TestCheckFlake(t *testing.T) {
	for _, c := range []struct {
		flake nixname.Flake
		ok    bool
	}{
		{nixname.Flake{Org: "acme", Name: "web"}, true},
		{nixname.Flake{}, false},
		{nixname.Flake{Org: "Acme", Name: "web"}, false}, // not canonical: ParseFlake lower-cases
		{nixname.Flake{Org: "acme", Name: ""}, false},
		{nixname.Flake{Org: "acme/x", Name: "web"}, false},
		{nixname.Flake{Org: "_acme", Name: "web"}, false},
	} {
		if err := CheckFlake(c.flake); (err == nil) != c.ok {
			t.Errorf("CheckFlake(%+v) = %v, want ok=%v", c.flake, err, c.ok)
		}
	}
}

func TestCheckNarAndPath(t *testing.T) {
	good, zero := nixname.Flake{Org: "acme", Name: "web"}, nixname.Flake{}
	const hash = "0c0hl0x2ph4hx4fkr5c4ha7amj7aqf5y"
	for _, c := range []struct {
		name string
		err  error
		want string // "" for success, else a part of the error
	}{
		{"nar", CheckNar(good, Nar{File: "abc.nar.zst"}), ""},
		{"nar without file", CheckNar(good, Nar{}), "empty file name"},
		{"nar of no flake", CheckNar(zero, Nar{File: "abc.nar"}), "put nar abc.nar: no flake given"},
		{"nar of a non-canonical flake", CheckNar(nixname.Flake{Org: "ACME", Name: "web"}, Nar{File: "abc.nar"}), "invalid flake"},
		{"path", CheckPath(good, Path{Hash: hash}), ""},
		{"path with a short hash", CheckPath(good, Path{Hash: hash[:31]}), "not a store hash"},
		{"path with a bad hash", CheckPath(good, Path{Hash: strings.Repeat("e", 32)}), "not a store hash"},
		{"path of no flake", CheckPath(zero, Path{Hash: hash}), "put path " + hash + ": no flake given"},
	} {
		switch {
		case c.want == "" && c.err != nil:
			t.Errorf("%s: %v, want success", c.name, c.err)
		case c.want != "" && (c.err == nil || !strings.Contains(c.err.Error(), c.want)):
			t.Errorf("%s: %v, want an error containing %q", c.name, c.err, c.want)
		}
	}
}

func TestCreatedAt(t *testing.T) {
	given := time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
	if got := CreatedAt(given); !got.Equal(given) {
		t.Errorf("CreatedAt(%v) = %v", given, got)
	}
	before := time.Now()
	got := CreatedAt(time.Time{})
	if got.Before(before) || got.After(time.Now()) {
		t.Errorf("CreatedAt(zero) = %v, want now", got)
	}
}

func TestOwnersQuery(t *testing.T) {
	for _, c := range []struct {
		kind        Kind
		placeholder string
		want        string
	}{
		{nixname.KindNarInfo, "?", `SELECT flake FROM flake_paths WHERE hash = ? ORDER BY flake`},
		{nixname.KindNar, "$1", `SELECT flake FROM nar_owners WHERE file = $1 ORDER BY flake`},
		{nixname.KindLog, "?", `SELECT flake FROM logs WHERE drv = ? AND NOT deleting ORDER BY flake`},
		{"cache-info", "?", ""},
		{"token", "?", ""},
		{"", "?", ""},
	} {
		got, err := OwnersQuery(c.kind, c.placeholder)
		if c.kind.IsFile() {
			t.Fatalf("%q is not a file kind", c.kind)
		}
		if c.want == "" {
			if err == nil {
				t.Errorf("OwnersQuery(%q) = %q, want an error", c.kind, got)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("OwnersQuery(%q, %q) = %q, %v; want %q", c.kind, c.placeholder, got, err, c.want)
		}
	}
}

// A file kind's owners are the flakes holding a file of it whose needs
// they own: the one condition of both backends (FileServable).
func TestOwnersQueryOfFiles(t *testing.T) {
	for _, k := range nixname.FileKinds() {
		got, err := OwnersQuery(k, "$1")
		if err != nil || !strings.Contains(got, "f.kind = '"+string(k)+"' AND f.key = $1") || !strings.Contains(got, FileServable) {
			t.Errorf("OwnersQuery(%q) = %q, %v", k, got, err)
		}
	}
}

func TestParseOwners(t *testing.T) {
	a, b := nixname.Flake{Org: "acme", Name: "a"}, nixname.Flake{Org: "acme", Name: "b"}
	for _, c := range []struct {
		names   []string
		want    []nixname.Flake
		wantErr bool
	}{
		{nil, []nixname.Flake{}, false},
		{[]string{"acme/a", "acme/b"}, []nixname.Flake{a, b}, false},
		{[]string{"acme/b", "acme/a"}, []nixname.Flake{b, a}, false},
		{[]string{"acme/a", "no-slash"}, nil, true},
	} {
		got, err := ParseOwners(c.names)
		if (err != nil) != c.wantErr {
			t.Errorf("ParseOwners(%q) error %v, want error %v", c.names, err, c.wantErr)
			continue
		}
		if !c.wantErr && (got == nil || !slices.Equal(got, c.want)) {
			t.Errorf("ParseOwners(%q) = %#v, want %v (never nil)", c.names, got, c.want)
		}
	}
}

func TestMissing(t *testing.T) {
	for _, c := range []struct {
		name   string
		hashes []string
		owned  []string
		want   []string
	}{
		{"none asked", nil, []string{"a"}, nil},
		{"all owned", []string{"a", "b"}, []string{"b", "a"}, nil},
		{"none owned", []string{"c", "a", "b"}, nil, []string{"c", "a", "b"}},
		{"order kept", []string{"d", "a", "c", "b"}, []string{"a"}, []string{"d", "c", "b"}},
		{"duplicates once", []string{"x", "a", "x", "a", "y", "x"}, []string{"a"}, []string{"x", "y"}},
		{"owned duplicates dropped", []string{"a", "a"}, []string{"a"}, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			owned := map[string]bool{}
			for _, h := range c.owned {
				owned[h] = true
			}
			before := maps.Clone(owned)
			got := Missing(c.hashes, owned)
			if !slices.Equal(got, c.want) {
				t.Errorf("Missing(%q, %q) = %q, want %q", c.hashes, c.owned, got, c.want)
			}
			if !maps.Equal(owned, before) {
				t.Errorf("Missing changed owned: %v, was %v", owned, before)
			}
		})
	}
}
