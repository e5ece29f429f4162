// Package nixos evaluates flake.nix and the NixOS module (nix/module.nix)
// with a real Nix (nix-instantiate) and the NixOS module system of the
// vendored nixpkgs lib (nix/vendor/nixpkgs-lib): the whole nixpkgs is not
// available offline, so the options the module sets outside itself are stubs
// (nix/tests/stubs.nix) and packages are evaluated, never built. It then
// checks what the module generates — systemd units, /etc files, firewall
// ports, assertions — and runs the real authz and blobserver binaries with
// the generated command lines.
//
// Without nix-instantiate the tests skip, or fail when CI=true.
package nixos

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/flakegate/flakegate/internal/nixtest"
)

// root is the repository root (tests run in test/nixos).
const root = "../.."

// requireNix skips without nix-instantiate, or fails under CI=true, where a
// missing test dependency must not turn tests into skips.
func requireNix(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("nix-instantiate"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("nix-instantiate not found and CI=true: scripts/install-test-deps.sh installs nix-bin")
		}
		t.Skip("nix-instantiate not found: install nix-bin (scripts/install-test-deps.sh) to evaluate the NixOS module")
	}
}

// service is one generated systemd service (nix/tests/eval-module.nix).
type service struct {
	Description     string            `json:"description"`
	After           []string          `json:"after"`
	Wants           []string          `json:"wants"`
	WantedBy        []string          `json:"wantedBy"`
	Environment     map[string]string `json:"environment"`
	ServiceConfig   map[string]any    `json:"serviceConfig"`
	RestartTriggers []string          `json:"restartTriggers"`
}

type etcFile struct {
	Text   *string `json:"text"`
	Source *string `json:"source"`
}

// moduleResult is what eval-module.nix returns.
type moduleResult struct {
	FailedAssertions []string           `json:"failedAssertions"`
	Warnings         []string           `json:"warnings"`
	Services         map[string]service `json:"services"`
	Etc              map[string]etcFile `json:"etc"`
	Firewall         []int              `json:"firewall"`
	Package          string             `json:"package"`
}

// nixEval runs nix-instantiate --eval --strict --json on expr (whose paths
// are absolute) and returns stdout, or the error with Nix's message. It never
// touches /nix/store: without a store it evaluates in read-only mode against
// a fresh chroot store (so it runs as any user); with one, in read-write
// mode against it: what evaluation adds to a store lands there, where a test
// can look.
func nixEval(t *testing.T, store *nixtest.Store, expr string) ([]byte, error) {
	t.Helper()
	requireNix(t)
	args := []string{"--eval", "--strict", "--json", "-E", expr}
	if store != nil {
		args = append([]string{"--store", store.URL(), "--read-write-mode"}, args...)
	} else {
		args = append([]string{"--store", nixtest.NewStore(t).URL()}, args...)
	}
	res, err := nixtest.Run(t, nixtest.Options{}, "nix-instantiate", args...)
	if err != nil {
		return nil, err
	}
	return []byte(res.Stdout), nil
}

// abs is the absolute path of a file of the repository.
func abs(t *testing.T, rel string) string {
	t.Helper()
	p, err := filepath.Abs(filepath.Join(root, rel))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// evalModule evaluates the module with config, a Nix expression of a NixOS
// module (e.g. `{ services.flakegate.enable = true; }`).
func evalModule(t *testing.T, config string) (moduleResult, error) {
	t.Helper()
	return evalModuleIn(t, nil, config)
}

func evalModuleIn(t *testing.T, store *nixtest.Store, config string) (moduleResult, error) {
	t.Helper()
	expr := fmt.Sprintf("import %s { config = %s; }", abs(t, "nix/tests/eval-module.nix"), config)
	out, err := nixEval(t, store, expr)
	if err != nil {
		return moduleResult{}, err
	}
	var r moduleResult
	if err := json.Unmarshal(out, &r); err != nil {
		t.Fatalf("eval-module.nix output: %v\n%s", err, out)
	}
	return r, nil
}

// mustEvalModule evaluates config and fails the test on an evaluation error
// or a failed assertion.
func mustEvalModule(t *testing.T, config string) moduleResult {
	t.Helper()
	r, err := evalModule(t, config)
	if err != nil {
		t.Fatalf("module evaluation: %v", err)
	}
	if len(r.FailedAssertions) > 0 {
		t.Fatalf("failed assertions:\n%s", strings.Join(r.FailedAssertions, "\n"))
	}
	return r
}

// exampleConfig is nix/tests/example-config.nix (what the flake's checks
// evaluate) for one mode.
func exampleConfig(t *testing.T, mode string) string {
	return fmt.Sprintf(`import %s { mode = %q; }`, abs(t, "nix/tests/example-config.nix"), mode)
}

// withExample merges extra (a Nix attribute set of services.flakegate
// settings) into the example configuration of mode.
func withExample(t *testing.T, mode, extra string) string {
	return fmt.Sprintf(`{ imports = [ (%s) ]; services.flakegate = %s; }`, exampleConfig(t, mode), extra)
}

// unit returns a generated service, failing when it is absent.
func (r moduleResult) unit(t *testing.T, name string) service {
	t.Helper()
	s, ok := r.Services[name]
	if !ok {
		t.Fatalf("no systemd service %s; have %v", name, keys(r.Services))
	}
	return s
}

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// str returns a serviceConfig entry that must be a string.
func (s service) str(t *testing.T, key string) string {
	t.Helper()
	v, ok := s.ServiceConfig[key].(string)
	if !ok {
		t.Fatalf("serviceConfig.%s = %#v, want a string", key, s.ServiceConfig[key])
	}
	return v
}

// list returns a serviceConfig entry as a list of strings (a single value
// is a list of one, as systemd reads it).
func (s service) list(key string) []string {
	switch v := s.ServiceConfig[key].(type) {
	case nil:
		return nil
	case []any:
		out := make([]string, len(v))
		for i, x := range v {
			out[i] = fmt.Sprint(x)
		}
		return out
	default:
		return []string{fmt.Sprint(v)}
	}
}
