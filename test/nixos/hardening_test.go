package nixos

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/flakegate/flakegate/internal/testutil"
)

// notCompared are the [Service] settings in which examples/systemd and the
// module differ on purpose.
var notCompared = map[string]string{
	"ExecStart":              "the module runs the package's binary with flags; the examples /usr/local/bin with an EnvironmentFile",
	"ExecStartPre":           "idem (both run the check first: authz -check or blobserver -check, TestModuleEmbeddedGate, TestModuleSingleHost)",
	"EnvironmentFile":        "the examples' settings file; the module's optional file of S3/PostgreSQL credentials",
	"ConfigurationDirectory": "NixOS manages /etc/flakegate with environment.etc",
	"ReadOnlyPaths":          "idem; /etc is read-only under ProtectSystem=strict anyway",
	"LoadCredential":         "the module passes given keys as credentials; the examples keep keys in the state directory",
	"SupplementaryGroups":    "the examples let a group read the TLS key; the module passes keys as credentials",
}

// unitSettings reads the settings of one section of a unit file: key ->
// values, with repeated keys and space-separated words accumulated (as
// systemd does for list settings) and yes/no read as true/false.
func unitSettings(t *testing.T, text, section string) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	in := false
	for _, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		switch {
		case line == "" || strings.HasPrefix(line, "#"):
		case strings.HasPrefix(line, "["):
			in = line == "["+section+"]"
		case in:
			k, v, ok := strings.Cut(line, "=")
			if !ok {
				t.Fatalf("unit line %q", line)
			}
			out[k] = append(out[k], words(v)...)
		}
	}
	return out
}

func words(v string) []string {
	switch v {
	case "yes":
		return []string{"true"}
	case "no":
		return []string{"false"}
	}
	return strings.Fields(v) // "" gives none: CapabilityBoundingSet= (empty)
}

// moduleSettings turns a generated serviceConfig into the same shape.
func moduleSettings(s service) map[string][]string {
	out := map[string][]string{}
	for k, v := range s.ServiceConfig {
		var ws []string
		switch v := v.(type) {
		case []any:
			for _, x := range v {
				ws = append(ws, words(fmt.Sprint(x))...)
			}
			if len(v) == 0 {
				continue // NixOS writes nothing for an empty list
			}
		case bool:
			ws = []string{fmt.Sprint(v)}
		default:
			ws = words(fmt.Sprint(v))
		}
		out[k] = ws
	}
	return out
}

// TestHardeningMatchesExamples: the module's units and examples/systemd's
// carry the same sandbox, restart and limit settings, so a hardening change
// made on one side only fails here; the settings that differ on purpose are
// listed in notCompared with the reason.
func TestHardeningMatchesExamples(t *testing.T) {
	for unit, mode := range map[string]string{singleUnit: "single-host", authzUnit: "embedded-gate", blobUnit: "embedded-gate"} {
		text := testutil.ReadFile(t, root+"/examples/systemd/"+unit+".service")
		// The module in the example's setup: its public port decides the
		// capability to bind it.
		extra := "{ }"
		if listen := exampleListen(t, text); listen != "" && unit != authzUnit {
			extra = fmt.Sprintf(`{ blobserver.listen = %q; }`, listen)
		}
		r := mustEvalModule(t, withExample(t, mode, extra))
		ex := unitSettings(t, text, "Service")
		mod := moduleSettings(r.unit(t, unit))
		for _, k := range sortedKeys(ex, mod) {
			if _, skip := notCompared[k]; skip {
				continue
			}
			e, inEx := ex[k]
			m, inMod := mod[k]
			switch {
			case !inMod:
				t.Errorf("%s: examples/systemd sets %s=%s, the module does not", unit, k, strings.Join(e, " "))
			case !inEx:
				t.Errorf("%s: the module sets %s=%s, examples/systemd does not", unit, k, strings.Join(m, " "))
			case !slices.Equal(e, m):
				t.Errorf("%s: %s is %q in examples/systemd, %q in the module", unit, k, e, m)
			}
		}
		// The [Unit] section: what it is and what it starts after.
		exUnit := unitSettings(t, text, "Unit")
		s := r.unit(t, unit)
		if got := strings.Join(exUnit["Description"], " "); got != s.Description {
			t.Errorf("%s: Description %q in examples/systemd, %q in the module", unit, got, s.Description)
		}
		if !slices.Equal(exUnit["After"], s.After) {
			t.Errorf("%s: After %v in examples/systemd, %v in the module", unit, exUnit["After"], s.After)
		}
	}
}

// exampleListen returns FLAKEGATE_LISTEN of the environment file a unit of
// examples/systemd reads ("" when none is set).
func exampleListen(t *testing.T, unitText string) string {
	t.Helper()
	env := unitSettings(t, unitText, "Service")["EnvironmentFile"]
	if len(env) != 1 {
		return ""
	}
	listen := ""
	for _, line := range strings.Split(testutil.ReadFile(t, root+"/examples/systemd/"+filepath.Base(env[0])), "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "FLAKEGATE_LISTEN="); ok {
			listen = v
		}
	}
	return listen
}

func sortedKeys(ms ...map[string][]string) []string {
	var out []string
	for _, m := range ms {
		for k := range m {
			if !slices.Contains(out, k) {
				out = append(out, k)
			}
		}
	}
	slices.Sort(out)
	return out
}

// renderUnit writes a generated service as a unit file, as NixOS does
// (booleans as true/false, one line per list element), with the package's
// binaries replaced by prog so that systemd-analyze finds an executable.
func renderUnit(r moduleResult, s service, prog string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "[Unit]\nDescription=%s\n", s.Description)
	for _, a := range s.After {
		fmt.Fprintf(&b, "After=%s\n", a)
	}
	for _, w := range s.Wants {
		fmt.Fprintf(&b, "Wants=%s\n", w)
	}
	b.WriteString("\n[Service]\n")
	for _, k := range sortedKeys(moduleSettings(s)) {
		v := s.ServiceConfig[k]
		vals, ok := v.([]any)
		if !ok {
			vals = []any{v}
		}
		for _, x := range vals {
			line := fmt.Sprint(x)
			if f, isNum := x.(float64); isNum {
				line = fmt.Sprint(int64(f))
			}
			line = strings.ReplaceAll(line, r.Package+"/bin/authz", prog)
			line = strings.ReplaceAll(line, r.Package+"/bin/blobserver", prog)
			fmt.Fprintf(&b, "%s=%s\n", k, line)
		}
	}
	b.WriteString("\n[Install]\n")
	for _, w := range s.WantedBy {
		fmt.Fprintf(&b, "WantedBy=%s\n", w)
	}
	return b.String()
}

// TestModuleUnitsVerify: systemd accepts the generated units — every key,
// the quoting of ExecStart and its %d specifier, LoadCredential — in every
// mode (systemd-analyze verify; logged and skipped where it is missing).
func TestModuleUnitsVerify(t *testing.T) {
	sa, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze not found: the generated units are checked by content only")
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	for _, mode := range []string{"single-host", "embedded-gate", "behind-envoy"} {
		r := mustEvalModule(t, withExample(t, mode, `{ authz.tokenKeyFiles = [ "/run/secrets/token.pem" ]; blobserver.environmentFile = "/run/secrets/blob.env"; blobserver.extraFlags."log-level" = "50% of $HOME \"q\""; }`))
		for _, unit := range keys(r.Services) {
			path := filepath.Join(t.TempDir(), unit+".service")
			text := renderUnit(r, r.unit(t, unit), self)
			if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			out, err := exec.CommandContext(ctx, sa, "verify", path).CombinedOutput()
			cancel()
			var problems []string
			for _, l := range strings.Split(string(out), "\n") {
				if strings.Contains(l, filepath.Base(path)) {
					problems = append(problems, l)
				}
			}
			if len(problems) > 0 {
				t.Errorf("%s %s: systemd-analyze verify:\n%s\n%s", mode, unit, strings.Join(problems, "\n"), text)
			} else if err != nil {
				t.Logf("%s %s: systemd-analyze verify could not run here (%v); nothing reported about the unit:\n%s", mode, unit, err, out)
			}
		}
	}
}
