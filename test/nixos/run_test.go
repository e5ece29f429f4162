package nixos

import (
	"context"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/flakegate/flakegate/internal/nixcache"
	"github.com/flakegate/flakegate/internal/testutil"
	"github.com/flakegate/flakegate/internal/tokens"
)

// host is a stand-in for the machine the units run on: the module's fixed
// paths and addresses mapped to a temporary directory and free ports.
type host struct {
	t       *testing.T
	r       moduleResult
	bin     string // the built binaries, standing for <package>/bin
	dir     string
	replace *strings.Replacer
	addrs   map[string]string // unit address -> free address
}

func newHost(t *testing.T, r moduleResult, bin string) *host {
	h := &host{t: t, r: r, bin: bin, dir: t.TempDir(), addrs: map[string]string{}}
	pairs := []string{
		r.Package + "/bin", bin,
		"/etc/", filepath.Join(h.dir, "etc") + "/",
		"/var/lib/", filepath.Join(h.dir, "var-lib") + "/",
	}
	for _, a := range []string{"127.0.0.1:8080", "127.0.0.1:8081", "127.0.0.1:9001", "127.0.0.1:9002"} {
		h.addrs[a] = testutil.FreeAddr(t)
		pairs = append(pairs, a, h.addrs[a])
	}
	h.replace = strings.NewReplacer(pairs...)
	h.writeEtc()
	// What systemd creates for StateDirectory=.
	for _, s := range r.Services {
		if d, ok := s.ServiceConfig["StateDirectory"].(string); ok {
			if err := os.MkdirAll(filepath.Join(h.dir, "var-lib", d), 0o700); err != nil {
				t.Fatal(err)
			}
		}
	}
	return h
}

// writeEtc installs environment.etc: text as files, sources from the
// package (share/flakegate/policies, i.e. the repository's policies/).
func (h *host) writeEtc() {
	t := h.t
	shipped := h.r.Package + "/share/flakegate/policies/"
	for name, f := range h.r.Etc {
		dst := filepath.Join(h.dir, "etc", name)
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			t.Fatal(err)
		}
		var data []byte
		switch {
		case f.Text != nil:
			data = []byte(*f.Text)
		case f.Source != nil && strings.HasPrefix(*f.Source, shipped):
			data = []byte(testutil.ReadFile(t, filepath.Join(root, "policies", strings.TrimPrefix(*f.Source, shipped))))
		default:
			t.Fatalf("environment.etc.%q: source %v is not a file of the package", name, f.Source)
		}
		if err := os.WriteFile(dst, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// command returns a unit's ExecStart (or ExecStartPre) as program and
// arguments on this host, with LoadCredential's files copied into a
// credentials directory for %d.
func (h *host) command(unit, key string, secrets map[string]string) (string, []string) {
	t := h.t
	s := h.r.unit(t, unit)
	creds := filepath.Join(h.dir, "credentials", unit)
	if err := os.MkdirAll(creds, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, lc := range s.list("LoadCredential") {
		id, path, ok := strings.Cut(lc, ":")
		content, known := secrets[path]
		if !ok || !known {
			t.Fatalf("%s: LoadCredential %q: not a secret this test provides", unit, lc)
		}
		if err := os.WriteFile(filepath.Join(creds, id), []byte(content), 0o400); err != nil {
			t.Fatal(err)
		}
	}
	words := splitExec(t, s.str(t, key), creds)
	for i, w := range words {
		words[i] = h.replace.Replace(w)
	}
	return words[0], words[1:]
}

// TestModuleRunsBinaries runs the real binaries with the command lines the
// module generates for the example configuration of each mode: the check
// before the start (authz -check, or blobserver -check for the single host)
// accepts the generated issuers and policy files (Nix values turned into
// YAML) and runs the policy tests, the blob server loads the signing key
// from its credential, the services start and become healthy, and the blob
// server's public listener is gated (single-host, embedded-gate: the
// authorization core decides, 401 without a token) or serves directly
// (behind-envoy: 404, the narinfo is absent).
func TestModuleRunsBinaries(t *testing.T) {
	requireNix(t)
	bin := testutil.BuildCommands(t, "github.com/flakegate/flakegate/cmd/authz", "github.com/flakegate/flakegate/cmd/blobserver")
	secret, public, err := nixcache.GenerateKey("cache.example.com-1")
	if err != nil {
		t.Fatal(err)
	}
	keyPath, kid, err := tokens.GenerateKey(t.TempDir(), tokens.AlgEdDSA, time.Now().Add(-time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	secrets := map[string]string{
		"/run/secrets/flakegate-signing-key":   secret,
		"/run/secrets/flakegate-token-key.pem": testutil.ReadFile(t, keyPath),
	}
	const givenTokenKey = `{ authz.tokenKeyFiles = [ "/run/secrets/flakegate-token-key.pem" ]; }`

	cases := []struct {
		mode          string
		extra         string // more settings
		wantAnonymous int    // an anonymous narinfo GET on the public listener
		wantKid       string // the token signing key authz uses; "" a created one
	}{
		// Token keys given as files (credentials, -token-keys=%d).
		{"single-host", givenTokenKey, http.StatusUnauthorized, kid},
		{"embedded-gate", givenTokenKey, http.StatusUnauthorized, kid},
		// Token keys created in the state directory.
		{"behind-envoy", `{ }`, http.StatusNotFound, ""},
	}
	for _, c := range cases {
		t.Run(c.mode, func(t *testing.T) {
			r := mustEvalModule(t, withExample(t, c.mode, c.extra))
			h := newHost(t, r, bin)

			check := func(unit, want string) {
				t.Helper()
				prog, args := h.command(unit, "ExecStartPre", secrets)
				out, err := runCmd(prog, args...)
				if err != nil || !strings.Contains(out, want) {
					t.Fatalf("%s ExecStartPre (%s %s): %v\n%s", unit, prog, strings.Join(args, " "), err, out)
				}
			}
			start := func(unit, health string) *testutil.Process {
				t.Helper()
				prog, args := h.command(unit, "ExecStart", secrets)
				p := testutil.StartProcess(t, unit, prog, nil, args...)
				p.WaitHealthy(t, "http://"+h.addrs[health]+"/healthz", 30*time.Second)
				return p
			}
			blob := blobUnit
			var decisions, access *testutil.LogBuffer // where the authorization core and the blob server log
			var tokenKeys string
			if c.mode == "single-host" {
				blob = singleUnit
				check(singleUnit, "blobserver -check: OK")
				decisions = start(singleUnit, "127.0.0.1:8081").Log
				access = decisions
				tokenKeys = "flakegate/token-keys"
			} else {
				check(authzUnit, "authz -check: OK")
				decisions = start(authzUnit, "127.0.0.1:9002").Log
				access = start(blobUnit, "127.0.0.1:8081").Log
				tokenKeys = "flakegate-authz/token-keys"
			}

			prog, args := h.command(blob, "ExecStart", secrets)
			out, err := runStdout(prog, append(args, "-print-public-key")...)
			if err != nil || strings.TrimSpace(out) != public {
				t.Fatalf("blobserver -print-public-key with the unit's flags: %v\n%s\nwant the credential's key %s", err, out, public)
			}

			const narinfo = "/00000000000000000000000000000000.narinfo"
			status, body := testutil.Get(t, "http://"+h.addrs["127.0.0.1:8080"]+narinfo, 10*time.Second)
			if status != c.wantAnonymous {
				t.Errorf("anonymous GET %s: %d %q, want %d", narinfo, status, body, c.wantAnonymous)
			}
			// The log lines come through pipes, after the answer: wait for
			// the decision; behind Envoy, for the blob server's access-log
			// line, then half a second more for a decision that must not come.
			if c.mode != "behind-envoy" {
				if !eventually(func() bool { return decidedOn(decisions.String(), narinfo) }, 10*time.Second) {
					t.Errorf("no decision on %s was logged: the public listener is not gated", narinfo)
				}
			} else {
				if !eventually(func() bool { return strings.Contains(access.String(), `"path":"`+narinfo+`"`) }, 10*time.Second) {
					t.Errorf("no access-log line for %s", narinfo)
				}
				time.Sleep(500 * time.Millisecond)
				if decidedOn(decisions.String(), narinfo) {
					t.Errorf("authz decided on %s, which Envoy (absent) never asked", narinfo)
				}
			}
			// The key from the credential signs, not a generated one.
			if m, _ := filepath.Glob(filepath.Join(h.dir, "var-lib", "*", "signing-key.sec")); len(m) != 0 {
				t.Errorf("the blob server generated a key %v although one was given", m)
			}
			created, _ := filepath.Glob(filepath.Join(h.dir, "var-lib", tokenKeys, "*.pem"))
			if c.wantKid == "" {
				if len(created) != 1 {
					t.Errorf("token keys in the state directory: %v, want one created", created)
				}
			} else {
				if len(created) != 0 {
					t.Errorf("authz created token keys %v although one was given", created)
				}
				if !strings.Contains(decisions.String(), `"signing_kid":"`+c.wantKid+`"`) {
					t.Errorf("the token exchange does not sign with the given token key %s", c.wantKid)
				}
			}
		})
	}
}

// eventually polls cond until it holds or timeout passes.
func eventually(cond func() bool, timeout time.Duration) bool {
	for deadline := time.Now().Add(timeout); ; time.Sleep(20 * time.Millisecond) {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
	}
}

// decidedOn reports whether log holds a decision-log line about path.
func decidedOn(log, path string) bool {
	for _, l := range strings.Split(log, "\n") {
		if strings.Contains(l, `"log":"decision"`) && strings.Contains(l, `"path":"`+path+`"`) {
			return true
		}
	}
	return false
}

// runStdout runs prog and returns what it printed on stdout alone (its
// warnings, e.g. about FLAKEGATE_* variables of the test environment, go to
// stderr, which an error includes).
func runStdout(prog string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var stderr strings.Builder
	cmd := exec.CommandContext(ctx, prog, args...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return string(out) + stderr.String(), err
	}
	return string(out), nil
}

func runCmd(prog string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, prog, args...).CombinedOutput()
	return string(out), err
}
