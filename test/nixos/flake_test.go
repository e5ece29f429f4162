package nixos

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/flakegate/flakegate/internal/nixtest"
	"github.com/flakegate/flakegate/internal/testutil"
)

var flakeSystems = []string{"x86_64-linux", "aarch64-linux", "x86_64-darwin", "aarch64-darwin"}

type flakePackage struct {
	Name    string `json:"name"`
	Type    string `json:"type"`
	OutPath string `json:"storePath"`
	Src     string `json:"src"`
	Args    struct {
		Pname       string   `json:"pname"`
		VendorHash  string   `json:"vendorHash"`
		SubPackages []string `json:"subPackages"`
		DoCheck     bool     `json:"doCheck"`
		PostInstall string   `json:"postInstall"`
	} `json:"args"`
}

// TestFlakeOutputs evaluates flake.nix's outputs with a stub nixpkgs input
// (nix/tests/eval-flake.nix) — `nix flake check --no-build` as far as
// nixpkgs' lib alone allows: every output is there for every system, each
// package builds the right commands from the right source with the pinned
// vendorHash, the overlay adds flakegate, and the `module` check evaluates
// the NixOS module in every mode without a failed assertion.
func TestFlakeOutputs(t *testing.T) {
	// Local data the package's source must leave out: a benchmark index
	// (many GB) under .bench/ was copied into the store by every evaluation.
	probe := abs(t, ".bench")
	if _, err := os.Stat(probe); os.IsNotExist(err) {
		t.Cleanup(func() { os.RemoveAll(probe) })
	}
	if err := os.MkdirAll(filepath.Join(probe, "flake-source-probe"), 0o755); err != nil {
		t.Fatal(err)
	}
	store := nixtest.NewStore(t)
	out, err := nixEval(t, store, "import "+abs(t, "nix/tests/eval-flake.nix"))
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Inputs       []string                           `json:"inputs"`
		Outputs      []string                           `json:"outputs"`
		Packages     map[string]map[string]flakePackage `json:"packages"`
		Overlay      flakePackage                       `json:"overlay"`
		NixosModules []string                           `json:"nixosModules"`
		Checks       map[string]map[string]string       `json:"checks"`
	}
	if err := json.Unmarshal(out, &f); err != nil {
		t.Fatalf("eval-flake.nix output: %v\n%.2000s", err, out)
	}
	if !slices.Equal(f.Inputs, []string{"nixpkgs"}) {
		t.Errorf("inputs %v, want nixpkgs only", f.Inputs)
	}
	for _, o := range []string{"packages", "nixosModules", "checks", "overlays"} {
		if !slices.Contains(f.Outputs, o) {
			t.Errorf("flake outputs %v lack %s", f.Outputs, o)
		}
	}
	if !slices.Contains(f.NixosModules, "flakegate") {
		t.Errorf("nixosModules %v lack flakegate", f.NixosModules)
	}
	hash := packageVendorHash(t)
	commands := map[string][]string{
		"default":    {"cmd/authz", "cmd/blobserver", "cmd/flakegate", "cmd/devissuer"},
		"authz":      {"cmd/authz"},
		"blobserver": {"cmd/blobserver"},
		"flakegate":  {"cmd/flakegate"},
		"devissuer":  {"cmd/devissuer"},
	}
	var src string
	for _, system := range flakeSystems {
		pkgs := f.Packages[system]
		if len(pkgs) != len(commands) {
			t.Errorf("%s: packages %v, want %v", system, keys(pkgs), keys(commands))
		}
		for name, want := range commands {
			p, ok := pkgs[name]
			if !ok {
				continue
			}
			if p.Type != "derivation" || !slices.Equal(p.Args.SubPackages, want) || p.Args.VendorHash != hash || p.Args.DoCheck {
				t.Errorf("%s.%s: %+v, want subPackages %v and vendorHash %s", system, name, p, want, hash)
			}
			if !strings.Contains(p.Args.PostInstall, "share/flakegate/policies") {
				t.Errorf("%s.%s does not install the policies the module reads", system, name)
			}
			if src == "" {
				src = p.Src
			} else if p.Src != src {
				t.Errorf("%s.%s builds from %s, others from %s", system, name, p.Src, src)
			}
		}
	}
	if !strings.HasPrefix(src, "/nix/store/") || !strings.HasSuffix(src, "-source") {
		t.Errorf("package source %q is not a store path of the repository", src)
	}
	inStore := filepath.Join(store.Root, src)
	if _, err := os.Stat(filepath.Join(inStore, "cmd", "blobserver", "main.go")); err != nil {
		t.Errorf("package source lacks the commands: %v", err)
	}
	for _, local := range []string{".bench", ".git"} {
		if _, err := os.Stat(filepath.Join(inStore, local)); !os.IsNotExist(err) {
			t.Errorf("package source holds %s (local data, copied into the store by every evaluation): %v", local, err)
		}
	}
	if f.Overlay.Name != "flakegate-0.1.0" || !slices.Equal(f.Overlay.Args.SubPackages, commands["default"]) {
		t.Errorf("overlays.default gives flakegate = %+v", f.Overlay)
	}
	for _, system := range flakeSystems {
		c := f.Checks[system]
		if _, ok := c["default"]; !ok {
			t.Errorf("%s: no check builds the package: %v", system, keys(c))
		}
		var evals []moduleResult
		if err := json.Unmarshal([]byte(c["module"]), &evals); err != nil {
			t.Fatalf("%s: checks.module: %v\n%s", system, err, c["module"])
		}
		// single-host, embedded-gate, behind-envoy: one unit, then two.
		if len(evals) != 3 {
			t.Fatalf("%s: checks.module evaluated %d modes, want 3", system, len(evals))
		}
		for i, r := range evals {
			// The flake's module sets the flake's own package.
			if r.Package != f.Packages[system]["default"].OutPath || len(r.Services) != min(i+1, 2) {
				t.Errorf("%s: checks.module mode %d: package %s, services %v", system, i, r.Package, keys(r.Services))
			}
		}
		if _, ok := c["nixos-system"]; ok {
			t.Errorf("%s: checks.nixos-system evaluated with nixpkgs' lib alone", system)
		}
	}
	t.Log("not evaluated here: checks.nixos-system (needs nixpkgs' nixosSystem); nothing built")
}

// TestFlakeCheckFailsOnFailedAssertion: the flake's module check refuses
// a configuration whose assertions fail, as NixOS refuses to build it: here
// the flake's own module with the blob server behind Envoy on the network.
func TestFlakeCheckFailsOnFailedAssertion(t *testing.T) {
	expr := `let
	  lib = import ` + abs(t, "nix/vendor/nixpkgs-lib/lib") + `;
	  flake = import ` + abs(t, "flake.nix") + `;
	  nixpkgs = { inherit lib; legacyPackages.x86_64-linux = import ` + abs(t, "nix/tests/stub-pkgs.nix") + ` { inherit lib; system = "x86_64-linux"; }; };
	  real = flake.outputs { self = real; inherit nixpkgs; };
	  # The same outputs, whose module also puts the blob server on the network.
	  bad = flake.outputs { self = bad // { nixosModules.flakegate = {
	    imports = [ real.nixosModules.flakegate ];
	    services.flakegate.blobserver.listen = "0.0.0.0:8080";
	  }; }; inherit nixpkgs; };
	in bad.checks.x86_64-linux.module.drvArgs.units`
	_, err := nixEval(t, nil, expr)
	if err == nil || !strings.Contains(err.Error(), `flakegate module (behind-envoy): services.flakegate: mode "behind-envoy" serves ungated`) {
		t.Fatalf("checks.module with a failing assertion: %v", err)
	}
}

var vendorHashRE = regexp.MustCompile(`vendorHash = "(sha256-[A-Za-z0-9+/=]+)";`)

func packageVendorHash(t *testing.T) string {
	t.Helper()
	m := vendorHashRE.FindStringSubmatch(testutil.ReadFile(t, root+"/nix/package.nix"))
	if m == nil {
		t.Fatal("nix/package.nix has no vendorHash")
	}
	return m[1]
}

// TestVendorHash recomputes nix/package.nix's vendorHash as buildGoModule
// does (the NAR hash of `go mod vendor`'s output), so that a change to
// go.mod or go.sum that forgets it fails here, with the new value, instead
// of in a user's `nix build`.
func TestVendorHash(t *testing.T) {
	requireNix(t)
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Fatal("go not found")
	}
	dir := t.TempDir() + "/vendor"
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, goTool, "mod", "vendor", "-o", dir)
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go mod vendor: %v\n%s", err, out)
	}
	res, err := nixtest.Run(t, nixtest.Options{}, "nix", "hash", "path", "--type", "sha256", dir)
	if err != nil {
		t.Fatal(err)
	}
	got := strings.TrimSpace(res.Stdout)
	if want := packageVendorHash(t); got != want {
		t.Errorf("nix/package.nix vendorHash = %s, but go.mod/go.sum vendor to %s: update it", want, got)
	}
}

// flakeCheck runs a real `nix flake check --no-build` (Nix's own checks of
// every output: packages and checks instantiate, the overlay and the
// modules have the right shape) on a copy of the flake (flake.nix and nix/,
// all that its evaluation reads), with the nixpkgs input replaced by the
// stub of nix/tests/stub-nixpkgs and a chroot store. edit may change the
// copy first.
func flakeCheck(t *testing.T, edit func(dir string)) (string, error) {
	t.Helper()
	requireNix(t)
	tmp := t.TempDir()
	repo, stub := filepath.Join(tmp, "repo"), filepath.Join(tmp, "stub-nixpkgs")
	copyTree(t, abs(t, "nix"), filepath.Join(repo, "nix"))
	copyTree(t, abs(t, "nix/vendor/nixpkgs-lib/lib"), filepath.Join(stub, "lib"))
	for from, to := range map[string]string{
		"flake.nix":                        filepath.Join(repo, "flake.nix"),
		"nix/tests/stub-nixpkgs/flake.nix": filepath.Join(stub, "flake.nix"),
		"nix/tests/stub-pkgs.nix":          filepath.Join(stub, "stub-pkgs.nix"),
	} {
		if err := os.WriteFile(to, []byte(testutil.ReadFile(t, abs(t, from))), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if edit != nil {
		edit(repo)
	}
	store := nixtest.NewStore(t)
	res, err := nixtest.Run(t, nixtest.Options{Timeout: 5 * time.Minute}, "nix",
		"--extra-experimental-features", "flakes", "--store", store.URL(),
		"flake", "check", "--no-build", "--no-write-lock-file", "path:"+repo,
		"--override-input", "nixpkgs", "path:"+stub)
	return res.Stdout + res.Stderr, err
}

func copyTree(t *testing.T, from, to string) {
	t.Helper()
	if err := os.CopyFS(to, os.DirFS(from)); err != nil {
		t.Fatal(err)
	}
}

// TestFlakeCheck: `nix flake check --no-build` passes on the flake, and
// fails, naming the assertion, when the configuration its module check
// evaluates is invalid.
func TestFlakeCheck(t *testing.T) {
	if out, err := flakeCheck(t, nil); err != nil {
		t.Fatalf("nix flake check --no-build: %v\n%s", err, out)
	}
	_, err := flakeCheck(t, func(repo string) {
		p := filepath.Join(repo, "nix", "tests", "example-config.nix")
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		bad := strings.Replace(string(b), "inherit mode;", `inherit mode; blobserver.listen = "0.0.0.0:8080";`, 1)
		if bad == string(b) {
			t.Fatal("example-config.nix has no `inherit mode;` to edit")
		}
		if err := os.WriteFile(p, []byte(bad), 0o644); err != nil {
			t.Fatal(err)
		}
	})
	if err == nil || !strings.Contains(err.Error(), "must be a loopback address") {
		t.Errorf("nix flake check on a module check with a failing assertion: %v", err)
	}
}
