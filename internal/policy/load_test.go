package policy

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/flakegate/flakegate/internal/nixname"
)

func TestClassify(t *testing.T) {
	tests := []struct {
		name string
		want fileKind
	}{
		{"flakegate.rego", kindPolicy},
		{"lib.rego", kindPolicy},
		{"flakegate_test.rego", kindTest},
		{"flakes.yaml", kindData},
		{"flakes.yml", kindData},
		{"flakes.json", kindData},
		{"README.md", kindIgnored},
		{"issuers.toml", kindIgnored},
		{".flakegate.rego", kindIgnored},     // dotfile
		{".flakegate.rego.swp", kindIgnored}, // vim swap
		{"..data", kindIgnored},              // ConfigMap machinery
		{"..2026_01_01_00_00_00.1", kindIgnored},
		{"flakegate.rego~", kindIgnored},     // backup
		{"#flakegate.rego#", kindIgnored},    // emacs autosave
		{".#flakegate.rego", kindIgnored},    // emacs lock
		{"flakegate.rego.orig", kindIgnored}, // merge leftover
		{"4913", kindIgnored},                // vim write probe
		{"", kindIgnored},
	}
	for _, tc := range tests {
		if got := classify(tc.name); got != tc.want {
			t.Errorf("classify(%q) = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestRevision(t *testing.T) {
	snapOf := func(files map[string]string) string {
		t.Helper()
		snap, err := readDir(policyDir(t, files), false)
		if err != nil {
			t.Fatal(err)
		}
		return snap.Revision
	}
	base := snapOf(map[string]string{"a.rego": "x", "d.yaml": "y"})
	tests := []struct {
		name  string
		files map[string]string
		same  bool
	}{
		{"identical content", map[string]string{"a.rego": "x", "d.yaml": "y"}, true},
		{"test files do not count", map[string]string{"a.rego": "x", "d.yaml": "y", "a_test.rego": "t"}, true},
		{"ignored files do not count", map[string]string{"a.rego": "x", "d.yaml": "y", "notes.txt": "n", ".a.rego.swp": "s"}, true},
		{"content change", map[string]string{"a.rego": "x2", "d.yaml": "y"}, false},
		{"data change", map[string]string{"a.rego": "x", "d.yaml": "y2"}, false},
		{"rename", map[string]string{"b.rego": "x", "d.yaml": "y"}, false},
		{"added file", map[string]string{"a.rego": "x", "d.yaml": "y", "e.json": "{}"}, false},
	}
	for _, tc := range tests {
		if got := snapOf(tc.files); (got == base) != tc.same {
			t.Errorf("%s: revision %s vs base %s, want same=%v", tc.name, got, base, tc.same)
		}
	}
	// Without framing both would hash "a.rego" "1" "c.rego" "2".
	if snapOf(map[string]string{"a.rego": "1", "c.rego": "2"}) == snapOf(map[string]string{"a.rego": "1c.rego2"}) {
		t.Error("name/content boundaries are not part of the revision")
	}
	if len(base) != 12 {
		t.Errorf("revision %q is not 12 hex digits", base)
	}
}

func TestReadDirFollowsSymlinksAndSkipsDirectories(t *testing.T) {
	elsewhere := policyDir(t, map[string]string{"real.rego": "package p"})
	dir := policyDir(t, map[string]string{"local.rego": "package q"})
	if err := os.Symlink(filepath.Join(elsewhere, "real.rego"), filepath.Join(dir, "linked.rego")); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "dir.rego"), 0o755); err != nil {
		t.Fatal(err)
	}
	snap, err := readDir(dir, false)
	if err != nil {
		t.Fatal(err)
	}
	if got := snap.Names(); len(got) != 2 || got[0] != "linked.rego" || got[1] != "local.rego" {
		t.Errorf("files = %v, want [linked.rego local.rego]", got)
	}
	if string(snap.Files[0].Content) != "package p" {
		t.Errorf("symlink content = %q", snap.Files[0].Content)
	}

	// A dangling symlink fails the snapshot rather than silently dropping
	// a file from the set.
	if err := os.Symlink(filepath.Join(elsewhere, "gone.yaml"), filepath.Join(dir, "gone.yaml")); err != nil {
		t.Fatal(err)
	}
	if _, err := readDir(dir, false); err == nil {
		t.Error("readDir with a dangling data symlink succeeded")
	}
}

func TestToValue(t *testing.T) {
	inputs := []any{
		nil,
		true,
		"s",
		42,
		int64(-7),
		1.5,
		json.Number("12345678901234567890"),
		[]string{"a", "b"},
		[]any{"a", 1, false, nil, map[string]any{"k": "v"}},
		map[string]string{"k": "v"},
		map[string]any{
			"action":  "read",
			"flake":   nixname.Flake{Org: "omnicorp", Name: "app"},
			"subject": map[string]any{"authenticated": true, "claims": map[string]any{"aud": []any{"x"}, "exp": float64(1.7e9)}},
		},
		struct {
			A string `json:"a"`
		}{"x"},
	}
	for _, in := range inputs {
		got, err := toValue(in)
		if err != nil {
			t.Errorf("toValue(%#v): %v", in, err)
			continue
		}
		want, err := ast.InterfaceToValue(in)
		if err != nil {
			t.Fatalf("InterfaceToValue(%#v): %v", in, err)
		}
		if got.Compare(want) != 0 {
			t.Errorf("toValue(%#v) = %v, want %v", in, got, want)
		}
	}

	// A prepared value stands in for the value it was made from.
	subject := map[string]any{"authenticated": true, "claims": map[string]any{"sub": "x"}}
	prepared, err := Prepare(subject)
	if err != nil {
		t.Fatal(err)
	}
	got, err := toValue(map[string]any{"subject": prepared, "action": "read"})
	if err != nil {
		t.Fatal(err)
	}
	want, _ := ast.InterfaceToValue(map[string]any{"subject": subject, "action": "read"})
	if got.Compare(want) != 0 {
		t.Errorf("input with a prepared subject = %v, want %v", got, want)
	}
	if v, err := toValue(Prepared{}); err != nil || v.Compare(ast.NullValue) != 0 {
		t.Errorf("zero Prepared = %v, %v; want null", v, err)
	}
	if _, err := Prepare(map[string]any{"x": math.NaN()}); err == nil {
		t.Error("Prepare accepted NaN")
	}

	for _, bad := range []any{math.NaN(), math.Inf(1), json.Number("nope"), make(chan int), map[string]any{"f": func() {}}} {
		if v, err := toValue(bad); err == nil {
			t.Errorf("toValue(%#v) = %v, want an error", bad, v)
		}
	}
}
