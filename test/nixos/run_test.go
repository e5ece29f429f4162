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

// TestModuleRunsBinaries runs the real authz and blobserver with the
// command lines the module generates for the example configuration of each
// mode: authz -check accepts the generated issuers and policy files (Nix
// values turned into YAML) and runs the policy tests, both services start
// and become healthy, and the blob server's public listener is gated
// (embedded-gate: authz decides, 401 without a token) or serves directly
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

	cases := []struct {
		mode          string
		extra         string // more settings
		wantAnonymous int    // an anonymous narinfo GET on the public listener
		wantKid       string // the token signing key authz uses; "" a created one
	}{
		// Token keys given as files (credentials, -token-keys=%d).
		{"embedded-gate", `{ authz.tokenKeyFiles = [ "/run/secrets/flakegate-token-key.pem" ]; }`, http.StatusUnauthorized, kid},
		// Token keys created in the state directory.
		{"behind-envoy", `{ }`, http.StatusNotFound, ""},
	}
	for _, c := range cases {
		mode, wantAnonymous := c.mode, c.wantAnonymous
		t.Run(mode, func(t *testing.T) {
			r := mustEvalModule(t, withExample(t, mode, c.extra))
			h := newHost(t, r, bin)

			prog, args := h.command(authzUnit, "ExecStartPre", secrets)
			out, err := runCmd(prog, args...)
			if err != nil || !strings.Contains(out, "authz -check: OK") {
				t.Fatalf("ExecStartPre (%s %s): %v\n%s", prog, strings.Join(args, " "), err, out)
			}

			prog, args = h.command(blobUnit, "ExecStart", secrets)
			out, err = runCmd(prog, append(args, "-print-public-key")...)
			if err != nil || strings.TrimSpace(out) != public {
				t.Fatalf("blobserver -print-public-key with the unit's flags: %v\n%s\nwant the credential's key %s", err, out, public)
			}

			prog, args = h.command(authzUnit, "ExecStart", secrets)
			authz := testutil.StartProcess(t, "authz", prog, nil, args...)
			authz.WaitHealthy(t, "http://"+h.addrs["127.0.0.1:9002"]+"/healthz", 30*time.Second)

			prog, args = h.command(blobUnit, "ExecStart", secrets)
			blob := testutil.StartProcess(t, "blobserver", prog, nil, args...)
			blob.WaitHealthy(t, "http://"+h.addrs["127.0.0.1:8081"]+"/healthz", 30*time.Second)

			const narinfo = "/00000000000000000000000000000000.narinfo"
			status, body := testutil.Get(t, "http://"+h.addrs["127.0.0.1:8080"]+narinfo, 10*time.Second)
			if status != wantAnonymous {
				t.Errorf("anonymous GET %s: %d %q, want %d", narinfo, status, body, wantAnonymous)
			}
			asked := strings.Contains(authz.Log.String(), `"path":"`+narinfo+`"`)
			if gated := mode == "embedded-gate"; asked != gated {
				t.Errorf("authz asked about %s: %v, want %v", narinfo, asked, gated)
			}
			// The key from the credential signs, not a generated one.
			if _, err := os.Stat(filepath.Join(h.dir, "var-lib", "flakegate-blobserver", "signing-key.sec")); err == nil {
				t.Error("the blob server generated a key in its data directory although one was given")
			}
			created, _ := filepath.Glob(filepath.Join(h.dir, "var-lib", "flakegate-authz", "token-keys", "*.pem"))
			if c.wantKid == "" {
				if len(created) != 1 {
					t.Errorf("token keys in the state directory: %v, want one created", created)
				}
			} else {
				if len(created) != 0 {
					t.Errorf("authz created token keys %v although one was given", created)
				}
				if !strings.Contains(authz.Log.String(), `"signing_kid":"`+c.wantKid+`"`) {
					t.Errorf("authz does not sign with the given token key %s", c.wantKid)
				}
			}
		})
	}
}

func runCmd(prog string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, prog, args...).CombinedOutput()
	return string(out), err
}
