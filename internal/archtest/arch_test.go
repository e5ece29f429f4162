// Package archtest holds the test that keeps docs/ARCHITECTURE.md true: the
// layers and import rules written there are checked against `go list` of
// the whole module. A package missing from the document, or an import that
// breaks a stated rule, fails it.
package archtest

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/flakegate/flakegate/"

// pkg is what go list says of a package (non-test imports only: tests may
// use any helper).
type pkg struct {
	ImportPath string
	Imports    []string
}

// listPackages returns the module's packages by path relative to the module
// root, each with its imports of other module packages.
func listPackages(t *testing.T) map[string][]string {
	t.Helper()
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go tool not found: cannot list the import graph")
	}
	cmd := exec.Command(goTool, "list", "-json=ImportPath,Imports", "./...")
	cmd.Dir = filepath.Join("..", "..")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	pkgs := map[string][]string{}
	dec := json.NewDecoder(strings.NewReader(string(out)))
	for dec.More() {
		var p pkg
		if err := dec.Decode(&p); err != nil {
			t.Fatalf("go list output: %v", err)
		}
		var own []string
		for _, imp := range p.Imports {
			if rel, ok := strings.CutPrefix(imp, module); ok {
				own = append(own, rel)
			}
		}
		pkgs[strings.TrimPrefix(p.ImportPath, module)] = own
	}
	return pkgs
}

// doc is what docs/ARCHITECTURE.md states: layers bottom first (each a list
// of package patterns, "x/..." for a subtree) and extra rules.
type doc struct {
	layers [][]string
	names  []string
	only   map[string][]string // package → the only module packages it may import
	never  map[string][]string // package → module packages it must not import
}

// readDoc parses the ```layers and ```rules blocks of the document.
func readDoc(t *testing.T, path string) doc {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	d := doc{only: map[string][]string{}, never: map[string][]string{}}
	block := ""
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		switch {
		case strings.HasPrefix(line, "```") && block == "":
			block = strings.TrimPrefix(line, "```")
			if block == "" {
				block = "other"
			}
			continue
		case strings.HasPrefix(line, "```"):
			block = ""
			continue
		case line == "" || strings.HasPrefix(line, "#"):
			continue
		}
		switch block {
		case "layers":
			name, list, ok := strings.Cut(line, ":")
			if !ok {
				t.Fatalf("%s:%d: want \"layer: packages…\" in the layers block", path, n)
			}
			d.names = append(d.names, strings.TrimSpace(name))
			d.layers = append(d.layers, strings.Fields(list))
		case "rules":
			f := strings.Fields(line)
			if len(f) < 3 || (f[1] != "only" && f[1] != "never") {
				t.Fatalf("%s:%d: want \"pkg only|never pkgs…\" in the rules block", path, n)
			}
			if f[1] == "only" {
				d.only[f[0]] = f[2:]
			} else {
				d.never[f[0]] = f[2:]
			}
		}
	}
	if len(d.layers) == 0 {
		t.Fatalf("%s has no ```layers block", path)
	}
	return d
}

func matches(pattern, p string) bool {
	if sub, ok := strings.CutSuffix(pattern, "/..."); ok {
		return p == sub || strings.HasPrefix(p, sub+"/")
	}
	return p == pattern
}

// layerOf returns the layer index of p, or -1.
func (d doc) layerOf(p string) int {
	for i, l := range d.layers {
		for _, pat := range l {
			if matches(pat, p) {
				return i
			}
		}
	}
	return -1
}

// check returns every broken rule of the import graph.
func (d doc) check(pkgs map[string][]string) []string {
	var errs []string
	names := make([]string, 0, len(pkgs))
	for p := range pkgs {
		names = append(names, p)
	}
	slices.Sort(names)
	for _, p := range names {
		lp := d.layerOf(p)
		if lp < 0 {
			errs = append(errs, fmt.Sprintf("%s is in no layer of docs/ARCHITECTURE.md: place it", p))
			continue
		}
		for _, imp := range pkgs[p] {
			li := d.layerOf(imp)
			// A package may import lower layers, and its own parent
			// (internal/index/sqlite → internal/index).
			if li < lp || (li == lp && strings.HasPrefix(p, imp+"/")) {
				continue
			}
			if li < 0 {
				continue // reported as unplaced itself
			}
			errs = append(errs, fmt.Sprintf("%s (%s) imports %s (%s): not a lower layer", p, d.names[lp], imp, d.names[li]))
		}
		for pat, allowed := range d.only {
			if !matches(pat, p) {
				continue
			}
			for _, imp := range pkgs[p] {
				if !slices.ContainsFunc(allowed, func(a string) bool { return matches(a, imp) }) {
					errs = append(errs, fmt.Sprintf("%s imports %s: it may import only %v", p, imp, allowed))
				}
			}
		}
		for pat, banned := range d.never {
			if !matches(pat, p) {
				continue
			}
			for _, imp := range pkgs[p] {
				if slices.ContainsFunc(banned, func(b string) bool { return matches(b, imp) }) {
					errs = append(errs, fmt.Sprintf("%s imports %s, which docs/ARCHITECTURE.md forbids", p, imp))
				}
			}
		}
	}
	return errs
}

// TestImportsFollowArchitecture checks the module's import graph against
// docs/ARCHITECTURE.md.
func TestImportsFollowArchitecture(t *testing.T) {
	d := readDoc(t, filepath.Join("..", "..", "docs", "ARCHITECTURE.md"))
	for _, e := range d.check(listPackages(t)) {
		t.Error(e)
	}
}

// The checker itself catches what it must: an upward import, an unplaced
// package, an import outside an "only" list and a forbidden one.
func TestCheckerCatchesBrokenRules(t *testing.T) {
	d := doc{
		layers: [][]string{{"internal/leaf"}, {"internal/mid", "internal/mid/..."}, {"cmd/..."}},
		names:  []string{"leaf", "mid", "cmd"},
		only:   map[string][]string{"cmd/a": {"internal/mid"}},
		never:  map[string][]string{"internal/mid/x": {"internal/leaf"}},
	}
	pkgs := map[string][]string{
		"internal/leaf":  {"internal/mid"},                  // upward
		"internal/mid":   {"internal/leaf"},                 // fine
		"internal/mid/x": {"internal/mid", "internal/leaf"}, // parent fine; leaf forbidden
		"internal/mid/y": {"internal/mid/x"},                // sibling in the same layer
		"cmd/a":          {"internal/mid", "internal/leaf"}, // leaf not in its only list
		"internal/stray": nil,                               // unplaced
	}
	got := strings.Join(d.check(pkgs), "\n")
	for _, want := range []string{
		"internal/leaf (leaf) imports internal/mid (mid): not a lower layer",
		"internal/mid/x imports internal/leaf, which docs/ARCHITECTURE.md forbids",
		"internal/mid/y (mid) imports internal/mid/x (mid): not a lower layer",
		"cmd/a imports internal/leaf: it may import only [internal/mid]",
		"internal/stray is in no layer",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("checker missed %q; it said:\n%s", want, got)
		}
	}
	if strings.Contains(got, "internal/mid (mid) imports") || strings.Contains(got, "internal/mid/x (mid) imports internal/mid ") {
		t.Errorf("checker refused an allowed import:\n%s", got)
	}
}
