package policy_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/flakegate/flakegate/internal/policy"
)

const policiesDir = "../../policies"

// TestShippedPolicies runs the Rego tests of policies/ (the default policy and
// the omnicorp example) the way `authz -check` does, so CI runs them.
func TestShippedPolicies(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var out bytes.Buffer
	err := policy.Check(ctx, policiesDir, &out)
	t.Log("\n" + out.String())
	if err != nil {
		t.Fatalf("Check(policies/): %v", err)
	}
	if !strings.Contains(out.String(), "omnicorp_test.rego") || !strings.Contains(out.String(), "flakegate_test.rego") {
		t.Error("the shipped Rego tests did not run")
	}
}

// copyPolicies copies the shipped policy directory (without tests) and
// applies edit to flakes.yaml.
func copyPolicies(t *testing.T, edit func(string) string) string {
	t.Helper()
	dir := t.TempDir()
	for _, name := range []string{"flakegate.rego", "flakes.yaml"} {
		b, err := os.ReadFile(filepath.Join(policiesDir, name))
		if err != nil {
			t.Fatal(err)
		}
		content := string(b)
		if name == "flakes.yaml" {
			content = edit(content)
		}
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func pull(flake, org, user string) map[string]any {
	o, n, _ := strings.Cut(flake, "/")
	return map[string]any{
		"action": "read",
		"flake":  map[string]any{"org": o, "name": n},
		"subject": map[string]any{
			"authenticated": true, "provider": "oidc", "kind": "user", "org": org, "user": user,
			"repo": "", "ref": "", "ref_protected": false, "environment": "", "via": "idp", "claims": map[string]any{},
		},
	}
}

// The shipped policy, loaded by the engine, decides the omnicorp example.
func TestShippedPolicyEngine(t *testing.T) {
	e, err := policy.NewEngine(policiesDir, policy.Options{Rescan: -1})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		input map[string]any
		allow bool
	}{
		{pull("omnicorp/super-duper-secure", "omnicorp", "alice"), true},
		{pull("omnicorp/super-duper-secure", "omnicorp", "carol"), false},
		{pull("omnicorp/dev-environments", "omnicorp", "carol"), true},
		{pull("omnicorp/dev-environments", "evilcorp", "mallory"), false},
	}
	for _, tc := range tests {
		d, err := e.Evaluate(context.Background(), tc.input)
		if err != nil {
			t.Fatal(err)
		}
		if d.Allow != tc.allow || d.Reason == "" {
			t.Errorf("%v/%v: %+v, want allow=%v with a reason", tc.input["flake"], tc.input["subject"].(map[string]any)["user"], d, tc.allow)
		}
	}
}

// A typo in flakes.yaml must not widen access: the engine refuses the set
// (the previous one keeps serving after a reload), and names the mistake.
func TestShippedPolicyRefusesBrokenSettings(t *testing.T) {
	tests := []struct {
		name string
		edit func(string) string
		want string
	}{
		{"misspelt read", func(s string) string {
			return strings.Replace(s, "  read:\n    users: [alice, bob]", "  reader:\n    users: [alice, bob]", 1)
		}, `omnicorp/super-duper-secure: unknown key "reader"`},
		{"users as a string", func(s string) string { return strings.Replace(s, "users: [alice, bob]", "users: alice", 1) }, "read.users must be a list"},
		{"undefined group", func(s string) string { return strings.Replace(s, "users: [alice, bob]", "groups: [trusted]", 1) }, `read.groups names "trusted"`},
		// Without flakes.yaml's read lists, super-duper-secure would fall back
		// to the org-wide default: a missing or empty file is refused too.
		{"empty file", func(string) string { return "" }, "flakes.yaml is empty"},
		{"blank file", func(string) string { return "  \n\n" }, "flakes.yaml is empty"},
		{"comments only", func(s string) string { return s[:strings.Index(s, "omnicorp/super-duper-secure:")] }, "flakes.yaml is empty"},
		{"a list", func(string) string { return "- omnicorp/super-duper-secure\n" }, "not be array"},
		{"a string", func(string) string { return "omnicorp/super-duper-secure\n" }, "not be string"},
		{"deleted", nil, "flakes.yaml is missing"},
	}
	// Each directory was just written: a short debounce keeps NewEngine's
	// wait for it to settle short.
	opts := policy.Options{Rescan: -1, Debounce: 10 * time.Millisecond}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var dir string
			if tc.edit == nil {
				dir = copyPolicies(t, func(s string) string { return s })
				if err := os.Remove(filepath.Join(dir, "flakes.yaml")); err != nil {
					t.Fatal(err)
				}
			} else {
				dir = copyPolicies(t, tc.edit)
			}
			_, err := policy.NewEngine(dir, opts)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("NewEngine = %v, want an error containing %q", err, tc.want)
			}
		})
	}
	// The unedited copy loads: the edits above are what break it.
	if _, err := policy.NewEngine(copyPolicies(t, func(s string) string { return s }), opts); err != nil {
		t.Fatalf("unedited copy: %v", err)
	}
}
