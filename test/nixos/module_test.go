package nixos

import (
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/flakegate/flakegate/internal/nixtest"
)

const (
	singleUnit = "flakegate" // single-host: the one process
	authzUnit  = "flakegate-authz"
	blobUnit   = "flakegate-blobserver"
)

// execFlags returns the program and the flags of a unit's ExecStart (or
// ExecStartPre), with %d left as the literal "%d".
func execFlags(t *testing.T, s service, key string) (string, map[string]string) {
	t.Helper()
	words := splitExec(t, s.str(t, key), "%d")
	return words[0], flags(t, words[1:])
}

func wantFlags(t *testing.T, unit string, got map[string]string, want map[string]string) {
	t.Helper()
	for name, v := range want {
		g, ok := got[name]
		switch {
		case v == "<absent>" && ok:
			t.Errorf("%s: -%s=%s is set, want it absent", unit, name, g)
		case v != "<absent>" && !ok:
			t.Errorf("%s: -%s missing, want %q", unit, name, v)
		case v != "<absent>" && g != v:
			t.Errorf("%s: -%s=%q, want %q", unit, name, g, v)
		}
	}
}

// checksFirst: the unit's ExecStartPre is the program's -check with
// exactly the flags ExecStart runs.
func checksFirst(t *testing.T, unit string, s service, start map[string]string) {
	t.Helper()
	_, pre := execFlags(t, s, "ExecStartPre")
	if _, ok := pre["check"]; !ok {
		t.Errorf("%s: ExecStartPre is not -check: %v", unit, pre)
	}
	delete(pre, "check")
	if !maps.Equal(pre, start) {
		t.Errorf("%s: -check flags %v differ from ExecStart's %v", unit, pre, start)
	}
}

// checkCommon: what both services of every configuration share.
func checkCommon(t *testing.T, r moduleResult, s service, unit string) {
	t.Helper()
	if len(s.Environment) != 0 {
		t.Errorf("%s: environment %v: settings go in flags, secrets in credentials", unit, s.Environment)
	}
	for key, want := range map[string]any{
		"DynamicUser": true, "NoNewPrivileges": true, "ProtectSystem": "strict", "ProtectHome": true,
		"PrivateTmp": true, "PrivateDevices": true, "CapabilityBoundingSet": "", "AmbientCapabilities": "",
		"RestrictSUIDSGID": true, "MemoryDenyWriteExecute": true, "UMask": "0077", "StateDirectoryMode": "0700",
	} {
		if s.ServiceConfig[key] != want {
			t.Errorf("%s: %s = %#v, want %#v", unit, key, s.ServiceConfig[key], want)
		}
	}
	if f := s.list("SystemCallFilter"); !slices.Equal(f, []string{"@system-service", "~@privileged"}) {
		t.Errorf("%s: SystemCallFilter = %v", unit, f)
	}
	if !slices.Contains(s.WantedBy, "multi-user.target") {
		t.Errorf("%s: wantedBy %v", unit, s.WantedBy)
	}
	prog, _ := execFlags(t, s, "ExecStart")
	bin := strings.TrimPrefix(unit, "flakegate-")
	if unit == singleUnit {
		bin = "blobserver"
	}
	if want := r.Package + "/bin/" + bin; prog != want {
		t.Errorf("%s: runs %s, want %s", unit, prog, want)
	}
}

// exampleUnits evaluates the example configuration of mode and returns the
// result and its two units, checked for what every unit shares.
func exampleUnits(t *testing.T, mode string) (r moduleResult, blob, authz service) {
	t.Helper()
	r = mustEvalModule(t, exampleConfig(t, mode))
	blob, authz = r.unit(t, blobUnit), r.unit(t, authzUnit)
	checkCommon(t, r, blob, blobUnit)
	checkCommon(t, r, authz, authzUnit)
	return r, blob, authz
}

// TestModuleSingleHost: the default mode, one unit running the blob server
// with the authorization core in process; every key in its credentials.
func TestModuleSingleHost(t *testing.T) {
	r := mustEvalModule(t, withExample(t, "single-host", `{ authz.tokenKeyFiles = [ "/run/secrets/token.pem" ]; }`))
	if len(r.Services) != 1 {
		t.Fatalf("services %v, want only %s", keys(r.Services), singleUnit)
	}
	s := r.unit(t, singleUnit)
	checkCommon(t, r, s, singleUnit)
	_, f := execFlags(t, s, "ExecStart")
	wantFlags(t, singleUnit, f, map[string]string{
		"listen":           "127.0.0.1:8080",
		"internal-listen":  "127.0.0.1:8081",
		"data-dir":         "/var/lib/flakegate",
		"signing-key-file": "%d/signing-key-0",
		"policies":         "/etc/flakegate/policies",
		"issuers":          "/etc/flakegate/issuers.yaml",
		"public-url":       "https://cache.example.com",
		"token-keys":       "%d",
		"ext-authz":        "<absent>",
		"authz-http":       "<absent>",
		"owners-url":       "<absent>",
		"http-listen":      "<absent>",
	})
	checksFirst(t, singleUnit, s, f)
	if got := s.list("LoadCredential"); !slices.Equal(got, []string{"signing-key-0:/run/secrets/flakegate-signing-key", "token-key-0.pem:/run/secrets/token.pem"}) {
		t.Errorf("LoadCredential = %v", got)
	}
	if s.ServiceConfig["StateDirectory"] != "flakegate" || len(r.Firewall) != 0 || len(r.Warnings) != 0 {
		t.Errorf("StateDirectory %v, firewall %v, warnings %v", s.ServiceConfig["StateDirectory"], r.Firewall, r.Warnings)
	}
	if len(s.RestartTriggers) != 1 || !strings.Contains(s.RestartTriggers[0], "github-actions") {
		t.Errorf("restartTriggers %v: want the issuers file's text (read at start only)", s.RestartTriggers)
	}
	// Without token key files: the token keys live in the data directory.
	r = mustEvalModule(t, exampleConfig(t, "single-host"))
	_, f = execFlags(t, r.unit(t, singleUnit), "ExecStart")
	wantFlags(t, singleUnit, f, map[string]string{"token-keys": "/var/lib/flakegate/token-keys", "tls-cert": "<absent>", "tls-key": "<absent>"})

	// HTTPS on the public port: the files read in place (re-read on change,
	// so not credentials), the key's group added to the unit.
	r = mustEvalModule(t, withExample(t, "single-host", `{ blobserver.listen = "0.0.0.0:443"; blobserver.tls = {
		certFile = "/var/lib/acme/cache/fullchain.pem"; keyFile = "/var/lib/acme/cache/key.pem"; group = "acme"; }; }`))
	s = r.unit(t, singleUnit)
	_, f = execFlags(t, s, "ExecStart")
	wantFlags(t, singleUnit, f, map[string]string{"tls-cert": "/var/lib/acme/cache/fullchain.pem", "tls-key": "/var/lib/acme/cache/key.pem", "listen": "0.0.0.0:443"})
	if got := s.list("SupplementaryGroups"); !slices.Equal(got, []string{"acme"}) {
		t.Errorf("SupplementaryGroups = %v, want [acme]", got)
	}
	if got := s.list("LoadCredential"); slices.ContainsFunc(got, func(c string) bool { return strings.Contains(c, "key.pem") }) {
		t.Errorf("the TLS key went through a credential (copied once at start: no reload): %v", got)
	}
}

// TestModuleEmbeddedGate: one host, the blob server asks authz before every
// request and forwards the token exchange; secrets arrive as credentials.
func TestModuleEmbeddedGate(t *testing.T) {
	r, blob, authz := exampleUnits(t, "embedded-gate")

	_, bf := execFlags(t, blob, "ExecStart")
	wantFlags(t, blobUnit, bf, map[string]string{
		"listen":           "127.0.0.1:8080",
		"internal-listen":  "127.0.0.1:8081",
		"data-dir":         "/var/lib/flakegate-blobserver",
		"ext-authz":        "127.0.0.1:9001",
		"authz-http":       "http://127.0.0.1:9002",
		"behind-envoy":     "<absent>",
		"signing-key-file": "%d/signing-key-0",
		"storage":          "<absent>",
		"index":            "<absent>",
	})
	if got := blob.list("LoadCredential"); !slices.Equal(got, []string{"signing-key-0:/run/secrets/flakegate-signing-key"}) {
		t.Errorf("blob server LoadCredential = %v", got)
	}
	if blob.ServiceConfig["StateDirectory"] != "flakegate-blobserver" || blob.ServiceConfig["LimitNOFILE"] != float64(65536) {
		t.Errorf("blob server StateDirectory %v, LimitNOFILE %v", blob.ServiceConfig["StateDirectory"], blob.ServiceConfig["LimitNOFILE"])
	}
	if !slices.Contains(blob.Wants, "flakegate-authz.service") || !slices.Contains(blob.After, "flakegate-authz.service") {
		t.Errorf("the gated blob server does not pull in and wait for authz: wants %v, after %v", blob.Wants, blob.After)
	}

	_, af := execFlags(t, authz, "ExecStart")
	wantFlags(t, authzUnit, af, map[string]string{
		"listen":      "127.0.0.1:9001",
		"http-listen": "127.0.0.1:9002",
		"policies":    "/etc/flakegate/policies",
		"issuers":     "/etc/flakegate/issuers.yaml",
		"owners-url":  "http://127.0.0.1:8081",
		"public-url":  "https://cache.example.com",
		"token-keys":  "/var/lib/flakegate-authz/token-keys",
	})
	// ExecStartPre checks exactly the configuration ExecStart runs.
	checksFirst(t, authzUnit, authz, af)

	// The issuers and per-flake settings given as Nix values.
	var issuers struct {
		Issuers []map[string]any `json:"issuers"`
	}
	if err := yaml.Unmarshal([]byte(etcText(t, r, "flakegate/issuers.yaml")), &issuers); err != nil {
		t.Fatal(err)
	}
	if len(issuers.Issuers) != 1 || issuers.Issuers[0]["claims"] != "github-actions" {
		t.Errorf("issuers.yaml = %v", issuers)
	}
	var fl map[string]struct {
		Read struct {
			Users []string `json:"users"`
		} `json:"read"`
	}
	if err := yaml.Unmarshal([]byte(etcText(t, r, "flakegate/policies/flakes.yaml")), &fl); err != nil {
		t.Fatal(err)
	}
	if got := fl["acme/release-tools"].Read.Users; !slices.Equal(got, []string{"alice"}) {
		t.Errorf("flakes.yaml acme/release-tools read.users = %v", got)
	}
	// The default policy comes from the package, without the omnicorp
	// example's test (it checks the shipped flakes.yaml, not this one).
	for _, name := range []string{"flakegate.rego", "flakegate_test.rego"} {
		if src := r.Etc["flakegate/policies/"+name].Source; src == nil || *src != r.Package+"/share/flakegate/policies/"+name {
			t.Errorf("policy %s: source %v", name, src)
		}
	}
	if _, ok := r.Etc["flakegate/policies/omnicorp_test.rego"]; ok {
		t.Error("omnicorp_test.rego installed: it fails against any flakes.yaml but the shipped one")
	}
	if len(r.Firewall) != 0 || len(r.Warnings) != 0 {
		t.Errorf("firewall %v, warnings %v: want a closed firewall and no warning on loopback", r.Firewall, r.Warnings)
	}
}

// TestModuleBehindEnvoy: Envoy asks authz; the blob server listens on
// loopback without the embedded gate.
func TestModuleBehindEnvoy(t *testing.T) {
	r, blob, authz := exampleUnits(t, "behind-envoy")
	_, bf := execFlags(t, blob, "ExecStart")
	wantFlags(t, blobUnit, bf, map[string]string{
		"listen":           "127.0.0.1:8080",
		"internal-listen":  "127.0.0.1:8081",
		"ext-authz":        "<absent>",
		"authz-http":       "<absent>",
		"behind-envoy":     "true",
		"signing-key-file": "%d/signing-key-0",
	})
	if slices.Contains(blob.Wants, "flakegate-authz.service") {
		t.Error("behind Envoy the blob server does not need authz to run")
	}
	_, af := execFlags(t, authz, "ExecStart")
	wantFlags(t, authzUnit, af, map[string]string{"listen": "127.0.0.1:9001", "owners-url": "http://127.0.0.1:8081"})
	if len(r.Firewall) != 0 {
		t.Errorf("firewall %v", r.Firewall)
	}
}

// TestModuleFirewall: closed unless openFirewall, and then only the blob
// server's public port.
func TestModuleFirewall(t *testing.T) {
	r := mustEvalModule(t, withExample(t, "embedded-gate", `{ blobserver.listen = "0.0.0.0:8443"; }`))
	if len(r.Firewall) != 0 {
		t.Errorf("firewall opened %v without openFirewall", r.Firewall)
	}
	if len(r.Warnings) != 1 || !strings.Contains(r.Warnings[0], "without TLS") {
		t.Errorf("warnings %v: want one about clear-text tokens on 0.0.0.0:8443", r.Warnings)
	}
	r = mustEvalModule(t, withExample(t, "single-host", `{ blobserver.listen = "[::]:443"; openFirewall = true; }`))
	if !slices.Equal(r.Firewall, []int{443}) {
		t.Errorf("single-host openFirewall opened %v, want [443]", r.Firewall)
	}
	// Port 443 needs CAP_NET_BIND_SERVICE, and gets only that.
	if s := r.unit(t, singleUnit); s.ServiceConfig["CapabilityBoundingSet"] != "CAP_NET_BIND_SERVICE" || s.ServiceConfig["AmbientCapabilities"] != "CAP_NET_BIND_SERVICE" {
		t.Errorf("listening on 443: CapabilityBoundingSet %q, AmbientCapabilities %q", s.ServiceConfig["CapabilityBoundingSet"], s.ServiceConfig["AmbientCapabilities"])
	}
	// The internal listener is never opened, even when it faces the network.
	r = mustEvalModule(t, withExample(t, "embedded-gate", `{ blobserver.listen = "0.0.0.0:8443"; blobserver.internalListen = "10.0.0.5:8081"; openFirewall = true; }`))
	if !slices.Equal(r.Firewall, []int{8443}) {
		t.Errorf("openFirewall opened %v, want [8443]", r.Firewall)
	}
	if !slices.ContainsFunc(r.Warnings, func(w string) bool { return strings.Contains(w, "internalListen (10.0.0.5:8081) is not a loopback") }) {
		t.Errorf("warnings %v: want one about the internal listener off loopback", r.Warnings)
	}
}

// TestModuleInvalidCombinations: configurations that would serve ungated,
// leak a secret into the store or cannot work fail evaluation with a message
// that says what to change.
func TestModuleInvalidCombinations(t *testing.T) {
	cases := []struct {
		name, mode, extra, want string
	}{
		{"envoy mode on the network", "behind-envoy", `{ blobserver.listen = "0.0.0.0:8080"; }`, "must be a loopback address"},
		{"gate without authz", "embedded-gate", `{ authz.enable = false; }`, `"embedded-gate" needs authz`},
		{"single host without authz", "single-host", `{ authz.enable = false; }`, "would leave nothing to authorize"},
		{"single host with a remote authz", "single-host", `{ blobserver.extAuthz = "10.0.0.9:9001"; }`, `which mode "single-host" does not use`},
		{"single host without issuers", "single-host", `{ authz.issuers = lib.mkForce [ ]; }`, "exactly one of authz.issuers and authz.issuersFile"},
		{"envoy mode with a gate address", "behind-envoy", `{ blobserver.extAuthz = "127.0.0.1:9001"; }`, `are for mode "embedded-gate"`},
		{"firewall behind envoy", "behind-envoy", `{ openFirewall = true; }`, `which mode "behind-envoy" does not have`},
		{"firewall on loopback", "embedded-gate", `{ openFirewall = true; }`, "is a loopback address"},
		{"no issuers", "embedded-gate", `{ authz.issuers = lib.mkForce [ ]; }`, "exactly one of authz.issuers and authz.issuersFile"},
		{"both issuers", "embedded-gate", `{ authz.issuersFile = "/etc/issuers.yaml"; }`, "exactly one of authz.issuers and authz.issuersFile"},
		{"policy dir and flakes", "embedded-gate", `{ authz.policyDir = "/srv/policies"; }`, "authz.policyDir replaces the default policy"},
		{"key through extraFlags", "embedded-gate", `{ blobserver.extraFlags."signing-key-file" = "/run/k"; }`, "extraFlags set -signing-key-file, which the module sets"},
		{"token keys through extraFlags", "single-host", `{ authz.extraFlags."token-keys" = "/srv/keys"; }`, "extraFlags set -token-keys"},
		{"public listener through extraFlags behind envoy", "behind-envoy", `{ blobserver.extraFlags.listen = "0.0.0.0:8080"; }`, "extraFlags set -listen"},
		{"core flag on a two-process blob server", "embedded-gate", `{ blobserver.extraFlags.policies = "/srv/p"; }`, "extraFlags set -policies"},
		{"password in index URL", "embedded-gate", `{ blobserver.index = "postgres://fg:hunter2@db/fg"; }`, "must not contain a password"},
		{"password parameter in index URL", "embedded-gate", `{ blobserver.index = "postgres://fg@db/fg?sslmode=require&password=hunter2"; }`, "must not contain a password"},
		{"data dir outside /var/lib", "embedded-gate", `{ blobserver.dataDir = "/srv/cache"; }`, "must be under /var/lib"},
		{"TLS certificate without its key", "single-host", `{ blobserver.tls.certFile = "/var/lib/acme/c/fullchain.pem"; }`, "go together"},
		{"TLS behind envoy", "behind-envoy", `{ blobserver.tls.certFile = "/var/lib/acme/c/fullchain.pem"; blobserver.tls.keyFile = "/var/lib/acme/c/key.pem"; }`, "Envoy terminates TLS"},
		{"TLS key through extraFlags", "single-host", `{ blobserver.extraFlags."tls-key" = "/run/k"; }`, "extraFlags set -tls-key"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			extra := c.extra
			if strings.Contains(extra, "lib.") {
				extra = "(let lib = import " + abs(t, "nix/vendor/nixpkgs-lib/lib") + "; in " + extra + ")"
			}
			r, err := evalModule(t, withExample(t, c.mode, extra))
			if err != nil {
				t.Fatalf("evaluation error instead of an assertion: %v", err)
			}
			if !slices.ContainsFunc(r.FailedAssertions, func(m string) bool { return strings.Contains(m, c.want) }) {
				t.Errorf("failed assertions %q, want one saying %q", r.FailedAssertions, c.want)
			}
		})
	}
	t.Run("unknown mode", func(t *testing.T) {
		_, err := evalModule(t, withExample(t, "embedded-gate", `{ mode = "open"; }`))
		if err == nil || !strings.Contains(err.Error(), `one of "single-host", "embedded-gate", "behind-envoy"`) {
			t.Errorf("mode \"open\": %v", err)
		}
	})
}

// TestModuleEscapesValues: flag values reach the program unchanged, even
// with systemd's special characters (% specifiers, $ variables, quotes).
func TestModuleEscapesValues(t *testing.T) {
	r := mustEvalModule(t, withExample(t, "embedded-gate",
		`{ blobserver.extraFlags = { "log-level" = "50% of $HOME \"q\" \\ end"; "access-log" = true; "priority" = 30; }; }`))
	_, f := execFlags(t, r.unit(t, blobUnit), "ExecStart")
	wantFlags(t, blobUnit, f, map[string]string{"log-level": `50% of $HOME "q" \ end`, "access-log": "true", "priority": "30"})
}

// TestModuleSecretsStayOutOfStore: key files given as paths reach the
// services as systemd credentials; neither their content nor their path
// appears on a command line, and evaluating the configuration in read-write
// mode adds nothing holding the secret to the store. A Nix path literal
// (which Nix would copy into the world-readable store) or a store path is
// refused before anything is copied.
func TestModuleSecretsStayOutOfStore(t *testing.T) {
	dir := t.TempDir()
	const marker = "flakegate-secret-marker-6f1c"
	sign, tok, env := filepath.Join(dir, "signing.sec"), filepath.Join(dir, "token.pem"), filepath.Join(dir, "blob.env")
	for _, p := range []string{sign, tok, env} {
		if err := os.WriteFile(p, []byte(marker+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	store := nixtest.NewStore(t)
	cfg := withExample(t, "embedded-gate", `{
		blobserver.signingKeyFiles = lib.mkForce [ "`+sign+`" ];
		blobserver.environmentFile = "`+env+`";
		authz.tokenKeyFiles = [ "`+tok+`" ];
	}`)
	cfg = "(let lib = import " + abs(t, "nix/vendor/nixpkgs-lib/lib") + "; in " + cfg + ")"
	r, err := evalModuleIn(t, store, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.FailedAssertions) > 0 {
		t.Fatal(r.FailedAssertions)
	}
	blob, authz := r.unit(t, blobUnit), r.unit(t, authzUnit)
	if got := blob.list("LoadCredential"); !slices.Equal(got, []string{"signing-key-0:" + sign}) {
		t.Errorf("blob server LoadCredential = %v", got)
	}
	if got := blob.list("EnvironmentFile"); !slices.Equal(got, []string{env}) {
		t.Errorf("blob server EnvironmentFile = %v", got)
	}
	if got := authz.list("LoadCredential"); !slices.Equal(got, []string{"token-key-0.pem:" + tok}) {
		t.Errorf("authz LoadCredential = %v", got)
	}
	_, af := execFlags(t, authz, "ExecStart")
	wantFlags(t, authzUnit, af, map[string]string{"token-keys": "%d"})
	for unit, s := range map[string]service{blobUnit: blob, authzUnit: authz} {
		for _, key := range []string{"ExecStart", "ExecStartPre"} {
			line, _ := s.ServiceConfig[key].(string)
			if strings.Contains(line, dir) || strings.Contains(line, marker) {
				t.Errorf("%s %s names a secret file: %s", unit, key, line)
			}
		}
	}
	raw, err := nixEval(t, store, "import "+abs(t, "nix/tests/eval-module.nix")+" { config = "+cfg+"; }")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(raw), marker) {
		t.Error("a secret's content appears in the evaluated configuration")
	}
	assertNotInStore(t, store, marker)

	// The control: this harness does see a secret that evaluation copies
	// into the store (an interpolated path literal).
	t.Run("control: a copied path literal is found", func(t *testing.T) {
		store := nixtest.NewStore(t)
		if _, err := nixEval(t, store, `builtins.stringLength "${`+sign+`}"`); err != nil {
			t.Fatal(err)
		}
		if storeFileWith(t, store, marker) == "" {
			t.Fatal("the interpolated key file is not found in the store: the store checks of this test cannot fail")
		}
	})

	refused := []struct{ name, extra, want string }{
		{"path literal", `{ blobserver.signingKeyFiles = lib.mkForce [ ` + sign + ` ]; }`, "outside the Nix store"},
		{"store path", `{ blobserver.signingKeyFiles = lib.mkForce [ "/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-key" ]; }`, "outside the Nix store"},
		{"token key literal", `{ authz.tokenKeyFiles = [ ` + tok + ` ]; }`, "outside the Nix store"},
		{"environment file literal", `{ blobserver.environmentFile = ` + env + `; }`, "outside the Nix store"},
	}
	for _, c := range refused {
		t.Run(c.name, func(t *testing.T) {
			store := nixtest.NewStore(t)
			cfg := "(let lib = import " + abs(t, "nix/vendor/nixpkgs-lib/lib") + "; in " + withExample(t, "embedded-gate", c.extra) + ")"
			_, err := evalModuleIn(t, store, cfg)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("evaluation did not refuse it with %q: %v", c.want, err)
			}
			assertNotInStore(t, store, marker)
		})
	}
}

// assertNotInStore fails when a file of the chroot store holds marker.
func assertNotInStore(t *testing.T, store *nixtest.Store, marker string) {
	t.Helper()
	if p := storeFileWith(t, store, marker); p != "" {
		t.Errorf("the store holds the secret: %s", p)
	}
}

// storeFileWith returns a file of the chroot store that holds marker, or "".
func storeFileWith(t *testing.T, store *nixtest.Store, marker string) string {
	t.Helper()
	found := ""
	err := filepath.WalkDir(filepath.Join(store.URL(), "nix", "store"), func(p string, d os.DirEntry, err error) error {
		if os.IsNotExist(err) {
			return filepath.SkipDir
		}
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		b, err := os.ReadFile(p)
		if err == nil && strings.Contains(string(b), marker) {
			found = p
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return found
}

func etcText(t *testing.T, r moduleResult, name string) string {
	t.Helper()
	f, ok := r.Etc[name]
	if !ok || f.Text == nil {
		t.Fatalf("environment.etc.%q has no text; etc = %v", name, keys(r.Etc))
	}
	return *f.Text
}
