// Package nixtest drives a real Nix (the nix-bin package, Nix ≥ 2.8) from
// tests: chroot stores that never touch /nix/store, closures of store paths
// with references, binary-cache keys, netrc files, and `nix` runs with the
// flags every test needs and a timeout.
//
// Every helper skips the test when Nix is not installed (Require).
package nixtest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"
)

// DefaultTimeout bounds one Nix command.
const DefaultTimeout = 2 * time.Minute

// Require skips the test when the nix tools are missing and returns the
// path of the nix binary.
func Require(t testing.TB) string {
	t.Helper()
	p, err := exec.LookPath("nix")
	if err != nil {
		t.Skip("nix not found: install nix-bin (scripts/install-test-deps.sh) to run the real-Nix tests")
	}
	for _, tool := range []string{"nix-store", "nix-instantiate"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not found: install nix-bin", tool)
		}
	}
	return p
}

// Version is the nix binary's version as major, minor (2, 8 for "nix
// (Nix) 2.8.0"); the test fails when it cannot be read.
func Version(t testing.TB) (major, minor int) {
	t.Helper()
	out, err := exec.Command(Require(t), "--version").Output()
	if err != nil {
		t.Fatalf("nix --version: %v", err)
	}
	f := strings.Fields(string(out))
	if len(f) == 0 {
		t.Fatalf("nix --version printed nothing")
	}
	if _, err := fmt.Sscanf(f[len(f)-1], "%d.%d", &major, &minor); err != nil {
		t.Fatalf("nix --version %q: %v", out, err)
	}
	return major, minor
}

// AtLeast reports whether the nix binary is version major.minor or later.
func AtLeast(t testing.TB, major, minor int) bool {
	t.Helper()
	ma, mi := Version(t)
	return ma > major || ma == major && mi >= minor
}

// UnauthorizedIsMiss reports whether this Nix takes a 401 answer to a
// narinfo lookup for "not in this cache" and goes on (Nix 2.8), rather
// than stopping with "HTTP error 401" (Nix 2.35, whose FileTransfer treats
// only 403 and 404 as misses). The versions between were not checked:
// they count as 2.35 does.
func UnauthorizedIsMiss(t testing.TB) bool {
	t.Helper()
	return !AtLeast(t, 2, 9)
}

// Outputs is the installable naming drv's outputs: drv itself for Nix 2.8,
// where a derivation's path means its outputs, and "drv^*" for later Nix,
// where the path names the .drv file (Nix 2.35 checked).
func Outputs(t testing.TB, drv string) string {
	t.Helper()
	if !AtLeast(t, 2, 9) {
		return drv
	}
	return drv + "^*"
}

// Options tune one Nix run.
type Options struct {
	// CacheHome is XDG_CACHE_HOME (Nix caches narinfo lookups there).
	// Default: a fresh directory per run.
	CacheHome string
	// Netrc is a netrc file (see WriteNetrc).
	Netrc string
	// TrustedKeys are the trusted-public-keys; empty trusts none.
	TrustedKeys []string
	// Settings are extra --option name value pairs.
	Settings map[string]string
	// Timeout bounds the command. Default DefaultTimeout.
	Timeout time.Duration
	// Stdin is the command's input.
	Stdin []byte
	// Env is extra environment ("NAME=value"), after the standard one
	// (so NIX_CONFIG here replaces the empty default).
	// E.g. NIX_SSL_CERT_FILE: the CA bundle Nix 2.8 trusts for HTTPS (it
	// has no ssl-cert-file setting: --option ssl-cert-file is "unknown").
	Env []string
}

// Result is a finished command.
type Result struct {
	Stdout, Stderr string
}

// Run runs a Nix tool (nix, nix-store, nix-instantiate…) with the standard
// flags: nix-command enabled, no substituters, and opts. It fails only by
// returning an error that includes stderr.
func Run(t testing.TB, opts Options, tool string, args ...string) (Result, error) {
	t.Helper()
	Require(t)
	timeout := opts.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cacheHome := opts.CacheHome
	if cacheHome == "" {
		cacheHome = t.TempDir()
	}
	full := []string{"--extra-experimental-features", "nix-command", "--option", "substituters", ""}
	full = append(full, "--option", "trusted-public-keys", strings.Join(opts.TrustedKeys, " "))
	if opts.Netrc != "" {
		full = append(full, "--option", "netrc-file", opts.Netrc)
	}
	keys := make([]string, 0, len(opts.Settings))
	for k := range opts.Settings {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		full = append(full, "--option", k, opts.Settings[k])
	}
	full = append(full, args...)
	if tool != "nix" {
		// The old CLI does not know --extra-experimental-features.
		full = full[2:]
	}
	cmd := exec.CommandContext(ctx, tool, full...)
	cmd.Env = append(os.Environ(), "XDG_CACHE_HOME="+cacheHome, "NIX_CONFIG=", "HOME="+cacheHome)
	cmd.Env = append(cmd.Env, opts.Env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if opts.Stdin != nil {
		cmd.Stdin = bytes.NewReader(opts.Stdin)
	}
	err := cmd.Run()
	res := Result{Stdout: stdout.String(), Stderr: stderr.String()}
	if ctx.Err() != nil {
		return res, fmt.Errorf("%s %s: timed out after %v\n%s", tool, strings.Join(args, " "), timeout, res.Stderr)
	}
	if err != nil {
		return res, fmt.Errorf("%s %s: %w\n%s", tool, strings.Join(args, " "), err, res.Stderr)
	}
	return res, nil
}

// Store is a chroot store: a directory whose nix/store holds the paths.
// Tests using different stores run in parallel without touching /nix/store.
type Store struct {
	Root string
	t    testing.TB
}

// NewStore makes an empty chroot store in a temporary directory.
func NewStore(t testing.TB) *Store {
	t.Helper()
	Require(t)
	return &Store{Root: t.TempDir(), t: t}
}

// URL is the store's --store argument.
func (s *Store) URL() string { return s.Root }

// Nix runs `nix <args> --store <root>`, failing the test on error.
func (s *Store) Nix(opts Options, args ...string) string {
	s.t.Helper()
	res, err := Run(s.t, opts, "nix", append([]string{"--store", s.Root}, args...)...)
	if err != nil {
		s.t.Fatal(err)
	}
	return res.Stdout
}

// MakeClosure builds n+1 input-addressed store paths in s (trivial
// derivations run in the Nix sandbox, like real build outputs: Nix needs a
// trusted signature to substitute them) and returns the top path, whose
// closure holds all of them. Path i references paths i-1 and i/2, so the
// graph has depth and sharing; every fifth path is large (~64 KiB of
// pseudo-random hex) so compression matters, the rest are small. Outputs
// are deterministic: the same seed makes the same paths with the same
// contents in every store, different seeds share nothing, and a smaller n
// with the same seed gives a sub-closure (except the top path).
//
// Building needs the Nix sandbox (root or user namespaces); the builder is
// the host's /bin/sh, exposed with extra-sandbox-paths.
func (s *Store) MakeClosure(n int, seed string) string {
	s.t.Helper()
	top, err := s.BuildClosure(Options{}, n, seed)
	if err != nil {
		s.t.Fatal(err)
	}
	return top
}

// BuildClosure is MakeClosure with opts (e.g. a post-build-hook in
// opts.Env's NIX_CONFIG) that returns the build's error instead of failing
// the test.
func (s *Store) BuildClosure(opts Options, n int, seed string) (string, error) {
	s.t.Helper()
	expr := closureExpr(s.t, n, seed, `derivation {
    name = "${seed}-p${toString i}";
    system = builtins.currentSystem;
    builder = "/bin/sh";
    args = [ "-c" "printf '%s\\n%s\\n' \"$refs\" \"$noise\" > $out" ];
    refs = refs;
    noise = noise i (if big i then 65536 else 256);
  }`, `derivation {
    name = "${seed}-top";
    system = builtins.currentSystem;
    builder = "/bin/sh";
    args = [ "-c" "echo \"$refs\" > $out" ];
    refs = ps;
  }`)
	settings := map[string]string{"extra-sandbox-paths": hostShellPaths(), "max-jobs": "2"}
	for k, v := range opts.Settings {
		settings[k] = v
	}
	opts.Settings = settings
	res, err := Run(s.t, opts, "nix-build", "--store", s.Root, "--no-out-link", "-E", expr)
	if err != nil {
		return "", err
	}
	return topPath(s.t, res.Stdout), nil
}

// Build builds a Nix expression's derivations in s in the Nix sandbox (the
// host's /bin/sh and coreutils exposed, as MakeClosure does; a builder
// sets PATH=/bin:/usr/bin itself) with the experimental features named
// (e.g. "ca-derivations") enabled, and returns nix-build's output.
func (s *Store) Build(expr string, features ...string) string {
	s.t.Helper()
	res, err := Run(s.t, Options{Settings: map[string]string{
		"extra-sandbox-paths": hostShellPaths(), "max-jobs": "2",
		"experimental-features": strings.Join(append([]string{"nix-command"}, features...), " "),
	}}, "nix-build", "--store", s.Root, "--no-out-link", "-E", expr)
	if err != nil {
		s.t.Fatal(err)
	}
	return res.Stdout
}

// Derivation returns the derivation path of a Nix expression in s.
func (s *Store) Derivation(expr string, features ...string) string {
	s.t.Helper()
	res, err := Run(s.t, Options{Settings: map[string]string{
		"experimental-features": strings.Join(append([]string{"nix-command"}, features...), " "),
	}}, "nix-instantiate", "--store", s.Root, "-E", expr)
	if err != nil {
		s.t.Fatal(err)
	}
	return topPathOf(s.t, res.Stdout, ".drv")
}

// MakeTextClosure is MakeClosure without building: the paths are
// content-addressed text files (builtins.toFile), which is faster and needs
// no sandbox, but Nix accepts such paths without any signature.
func (s *Store) MakeTextClosure(n int, seed string) string {
	s.t.Helper()
	expr := closureExpr(s.t, n, seed, `builtins.toFile "${seed}-p${toString i}" ''
    path ${toString i} of ${seed}
    ${builtins.concatStringsSep "\n" refs}
    ${noise i (if big i then 65536 else 256)}
  ''`, `builtins.toFile "${seed}-top" (builtins.concatStringsSep "\n" ps)`)
	res, err := Run(s.t, Options{}, "nix-instantiate", "--store", s.Root, "--eval", "--read-write-mode", "-E", expr)
	if err != nil {
		s.t.Fatal(err)
	}
	return topPath(s.t, res.Stdout)
}

// closureExpr is the Nix expression of a closure: mk (with i and refs in
// scope) makes path i, top (with ps in scope) the top path.
func closureExpr(t testing.TB, n int, seed, mk, top string) string {
	t.Helper()
	if n < 1 {
		t.Fatal("closure: n must be at least 1")
	}
	if strings.ContainsAny(seed, "\"\\$'` ") {
		t.Fatalf("closure: seed %q must be a plain word", seed)
	}
	return fmt.Sprintf(`
let
  seed = "%s";
  noise = i: size: builtins.concatStringsSep "" (builtins.genList (j: builtins.hashString "sha256" "${seed}-${toString i}-${toString j}") (size / 64));
  big = i: i - (i / 5) * 5 == 0;
  mk = i: refs: %s;
  ps = builtins.genList (i: mk i (if i == 0 then [] else [ (builtins.elemAt ps (i - 1)) (builtins.elemAt ps (i / 2)) ])) %d;
in %s
`, seed, mk, n, top)
}

func topPath(t testing.TB, out string) string {
	t.Helper()
	return topPathOf(t, out, "")
}

// topPathOf returns the last store path of out, which must end with suffix.
func topPathOf(t testing.TB, out, suffix string) string {
	t.Helper()
	lines := strings.Fields(out)
	if len(lines) == 0 {
		t.Fatalf("closure: no output path")
	}
	top := strings.Trim(lines[len(lines)-1], `"`)
	if !strings.HasPrefix(top, "/nix/store/") || !strings.HasSuffix(top, suffix) {
		t.Fatalf("closure: unexpected output %q", out)
	}
	return top
}

// hostShellPaths are the host directories the sandbox needs to run /bin/sh
// and coreutils.
func hostShellPaths() string {
	var ps []string
	for _, p := range []string{"/bin", "/usr", "/lib", "/lib64", "/lib32", "/libx32"} {
		if _, err := os.Stat(p); err == nil {
			ps = append(ps, p)
		}
	}
	return strings.Join(ps, " ")
}

// PathInfo is what `nix path-info --json` says about a path.
type PathInfo struct {
	Path       string   `json:"path"`
	NarHash    string   `json:"narHash"`
	NarSize    int64    `json:"narSize"`
	References []string `json:"references"`
	Signatures []string `json:"signatures"`
	CA         string   `json:"ca"`
	Valid      *bool    `json:"valid"`
}

// HashPart is the 32-character hash part of a store path
// ("/nix/store/<hash>-<name>"), as used in narinfo URLs; "" when path is not
// a store path.
func HashPart(path string) string {
	base, ok := strings.CutPrefix(path, "/nix/store/")
	if !ok || len(base) < 33 || base[32] != '-' {
		return ""
	}
	return base[:32]
}

// Comparable renders path infos as what must be equal in every store that
// holds the same paths (path, NAR hash and size, references), dropping what
// legitimately differs (signatures, which a cache replaces, and validity).
func Comparable(infos []PathInfo) []string {
	out := make([]string, len(infos))
	for i, pi := range infos {
		out[i] = fmt.Sprintf("%s %s %d %v", pi.Path, pi.NarHash, pi.NarSize, pi.References)
	}
	return out
}

// parsePathInfos reads `nix path-info --json`: a list of objects with
// "path" (Nix up to 2.18), or an object keyed by path (Nix 2.19 and later,
// e.g. 2.35's --json-format 1).
func parsePathInfos(b []byte) ([]PathInfo, error) {
	var infos []PathInfo
	if err := json.Unmarshal(b, &infos); err == nil {
		return infos, nil
	}
	var byPath map[string]PathInfo
	if err := json.Unmarshal(b, &byPath); err != nil {
		return nil, err
	}
	for p, pi := range byPath {
		pi.Path = p
		infos = append(infos, pi)
	}
	slices.SortFunc(infos, func(a, b PathInfo) int { return strings.Compare(a.Path, b.Path) })
	return infos, nil
}

// Closure returns path-info of every path in the closure of paths, sorted by path.
func (s *Store) Closure(paths ...string) []PathInfo {
	s.t.Helper()
	out := s.Nix(Options{}, append([]string{"path-info", "--json", "-r"}, paths...)...)
	infos, err := parsePathInfos([]byte(out))
	if err != nil {
		s.t.Fatalf("parse nix path-info output: %v\n%s", err, out)
	}
	sort.Slice(infos, func(i, j int) bool { return infos[i].Path < infos[j].Path })
	for i := range infos {
		sort.Strings(infos[i].References)
	}
	return infos
}

// CopyTo pushes the closures of paths to a binary cache URL.
func (s *Store) CopyTo(opts Options, cacheURL string, paths ...string) error {
	s.t.Helper()
	_, err := Run(s.t, opts, "nix", append([]string{"copy", "--store", s.Root, "--to", cacheURL}, paths...)...)
	return err
}

// CopyFrom pulls the closures of paths from a binary cache URL into s,
// trusting only opts.TrustedKeys.
func (s *Store) CopyFrom(opts Options, cacheURL string, paths ...string) error {
	s.t.Helper()
	_, err := Run(s.t, opts, "nix", append([]string{"copy", "--from", cacheURL, "--to", s.Root}, paths...)...)
	return err
}

// Verify re-hashes the contents of the closure of paths and checks they
// carry a signature by one of trustedKeys (`nix store verify`).
func (s *Store) Verify(trustedKeys []string, paths ...string) error {
	s.t.Helper()
	_, err := Run(s.t, Options{TrustedKeys: trustedKeys}, "nix", append([]string{"store", "verify", "--store", s.Root, "-r"}, paths...)...)
	return err
}

// GenerateKey makes a binary cache key pair with nix-store and returns the
// secret key file and the public key.
func GenerateKey(t testing.TB, name string) (secretFile, publicKey string) {
	t.Helper()
	dir := t.TempDir()
	sec, pub := filepath.Join(dir, name+".sec"), filepath.Join(dir, name+".pub")
	if _, err := Run(t, Options{}, "nix-store", "--generate-binary-cache-key", name, sec, pub); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(pub)
	if err != nil {
		t.Fatal(err)
	}
	return sec, strings.TrimSpace(string(b))
}

// WriteNetrc writes a netrc file that makes Nix send password (a token)
// as HTTP basic auth to host (host or host:port).
func WriteNetrc(t testing.TB, host, login, password string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "netrc")
	if err := os.WriteFile(p, []byte(fmt.Sprintf("machine %s\nlogin %s\npassword %s\n", host, login, password)), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}
