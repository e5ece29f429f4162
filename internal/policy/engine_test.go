package policy

import (
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/flakegate/flakegate/internal/nixname"
	"github.com/flakegate/flakegate/internal/testutil"
)

const okPolicy = "package flakegate.authz\n\ndefault allow := false\n"

func TestNewEngineRejectsBadSets(t *testing.T) {
	tests := []struct {
		name  string
		files map[string]string
		want  []string // substrings of the error
	}{
		{
			name:  "empty directory",
			files: map[string]string{},
			want:  []string{"no policy files"},
		},
		{
			name:  "only tests",
			files: map[string]string{"x_test.rego": "package flakegate.authz_test\n\ntest_x if true\n"},
			want:  []string{"no policy files"},
		},
		{
			name:  "parse error names file and line",
			files: map[string]string{"a.rego": okPolicy, "b.rego": "package flakegate.authz\n\nallow if {\n  input.x ==\n  ]\n}\n"},
			want:  []string{"b.rego:5:", "rego_parse_error"},
		},
		{
			name:  "Rego v0 syntax is refused",
			files: map[string]string{"a.rego": "package flakegate.authz\n\ndefault allow = false\n\nallow { input.x }\n"},
			want:  []string{"a.rego:5:", "rego_parse_error"},
		},
		{
			name:  "strict mode: unused local",
			files: map[string]string{"a.rego": okPolicy + "\nallow if {\n\tx := 1\n\tinput.y\n}\n"},
			want:  []string{"a.rego:6:", "assigned var x unused"},
		},
		{
			name:  "network builtins are not available",
			files: map[string]string{"a.rego": okPolicy + "\nallow if http.send({\"method\": \"GET\", \"url\": \"http://x\"}).status_code == 200\n"},
			want:  []string{"a.rego:5:", "undefined function http.send"},
		},
		{
			name:  "no flakegate.authz package",
			files: map[string]string{"a.rego": "package other\n\nallow := true\n"},
			want:  []string{"no policy file declares package flakegate.authz"},
		},
		{
			name:  "no allow rule",
			files: map[string]string{"a.rego": "package flakegate.authz\n\nreason := \"x\"\n"},
			want:  []string{"a.rego: package flakegate.authz defines no allow rule"},
		},
		{
			name:  "comment-only policy file",
			files: map[string]string{"a.rego": okPolicy, "b.rego": "# nothing yet\n"},
			want:  []string{"b.rego: rego_parse_error: empty module"},
		},
		{
			name:  "invalid YAML names the line",
			files: map[string]string{"a.rego": okPolicy, "flakes.yaml": "a: 1\nb: [1, 2\nc: 3\n"},
			want:  []string{"flakes.yaml:", "invalid YAML"},
		},
		{
			name:  "duplicate YAML key",
			files: map[string]string{"a.rego": okPolicy, "flakes.yaml": "omnicorp/x: {}\nomnicorp/x: {read: {}}\n"},
			want:  []string{"flakes.yaml:", "omnicorp/x"},
		},
		{
			name:  "invalid JSON names the line",
			files: map[string]string{"a.rego": okPolicy, "flakes.json": "{\n  \"a\": 1,\n  \"b\": ,\n}\n"},
			want:  []string{"flakes.json:3: invalid JSON"},
		},
		{
			name:  "trailing JSON",
			files: map[string]string{"a.rego": okPolicy, "flakes.json": "{} {}"},
			want:  []string{"flakes.json: invalid JSON: data after the first JSON value"},
		},
		{
			name:  "two files for one data key",
			files: map[string]string{"a.rego": okPolicy, "flakes.json": "{}", "flakes.yaml": "{}"},
			want:  []string{"data.flakes is already loaded from flakes.json"},
		},
		{
			name:  "data file overlapping the policy package",
			files: map[string]string{"a.rego": okPolicy, "flakegate.yaml": "authz: {allow: true}\n"},
			want:  []string{"flakegate.yaml: data.flakegate would overlap package data.flakegate.authz"},
		},
		{
			name: "config_errors refuse the set",
			files: map[string]string{
				"a.rego":      okPolicy + "\nconfig_errors contains sprintf(\"flakes.yaml: %s is wrong\", [k]) if some k, true in data.flakes\n",
				"flakes.yaml": "x: true\ny: false\nz: true\n",
			},
			want: []string{"flakes.yaml: x is wrong; flakes.yaml: z is wrong"},
		},
		{
			name:  "config_errors must be a set",
			files: map[string]string{"a.rego": okPolicy + "\nconfig_errors := 3\n"},
			want:  []string{"flakegate.authz.config_errors must be a set of strings, not a number"},
		},
		{
			name:  "every problem is reported, sorted",
			files: map[string]string{"a.rego": "package flakegate.authz\nallow if {", "b.rego": "package flakegate.authz\nallow if }", "c.json": "{"},
			want:  []string{"a.rego:", "b.rego:2:", "c.json:"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := policyDir(t, tc.files)
			// A short debounce: each case's directory was just written, and
			// NewEngine waits for it to settle (see settle.go).
			e, err := NewEngine(dir, Options{Logger: testLogger(&testutil.LogBuffer{}), Debounce: 10 * time.Millisecond})
			if err == nil {
				t.Fatalf("NewEngine accepted the set (revision %s)", e.Revision())
			}
			for _, want := range tc.want {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not mention %q", err, want)
				}
			}
			var le *LoadError
			if !errors.As(err, &le) {
				t.Errorf("error is %T, want a *LoadError", err)
			}
		})
	}
	t.Run("missing directory", func(t *testing.T) {
		_, err := NewEngine(filepath.Join(t.TempDir(), "nope"), Options{})
		if err == nil || !strings.Contains(err.Error(), "read policy directory") {
			t.Errorf("error = %v, want a read error", err)
		}
	})
}

func TestEvaluate(t *testing.T) {
	tests := []struct {
		name       string
		policy     string
		input      map[string]any
		wantAllow  bool
		wantReason string
		wantErr    string
	}{
		{
			name:       "allow with reason",
			policy:     "package flakegate.authz\n\nallow if input.action == \"read\"\n\nreason := \"readers welcome\"\n",
			input:      map[string]any{"action": "read"},
			wantAllow:  true,
			wantReason: "readers welcome",
		},
		{
			name:       "deny by default without reason",
			policy:     okPolicy + "\nallow if input.action == \"read\"\n",
			input:      map[string]any{"action": "push"},
			wantAllow:  false,
			wantReason: "",
		},
		{
			name:       "undefined allow denies and says why",
			policy:     "package flakegate.authz\n\nallow if input.action == \"read\"\n",
			input:      map[string]any{"action": "push"},
			wantAllow:  false,
			wantReason: "policy left allow undefined for this input (add `default allow := false`)",
		},
		{
			name:       "non-boolean allow denies",
			policy:     "package flakegate.authz\n\nallow := \"yes\"\n\nreason := \"ignored\"\n",
			input:      map[string]any{},
			wantAllow:  false,
			wantReason: "policy's allow is a string, not a boolean",
		},
		{
			name:       "object allow denies",
			policy:     "package flakegate.authz\n\nallow := {\"x\": true}\n",
			input:      map[string]any{},
			wantAllow:  false,
			wantReason: "policy's allow is an object, not a boolean",
		},
		{
			name:       "partial-set allow denies",
			policy:     "package flakegate.authz\n\nallow contains \"x\"\n",
			input:      map[string]any{},
			wantAllow:  false,
			wantReason: "policy's allow is an array, not a boolean",
		},
		{
			name:       "non-string reason is reported, allow kept",
			policy:     "package flakegate.authz\n\nallow := true\n\nreason := 42\n",
			input:      map[string]any{},
			wantAllow:  true,
			wantReason: "policy's reason is a number, not a string",
		},
		{
			name:    "conflicting values are an error (fail closed)",
			policy:  "package flakegate.authz\n\nallow if input.a\n\nallow := false if input.b\n",
			input:   map[string]any{"a": true, "b": true},
			wantErr: "eval_conflict_error: rule data.flakegate.authz.allow produced conflicting values",
		},
		{
			name:    "conflicting function values are an error",
			policy:  "package flakegate.authz\n\nf(x) := 1 if x\n\nf(x) := 2 if x\n\nallow if f(input.a) == 1\n",
			input:   map[string]any{"a": true},
			wantErr: "function data.flakegate.authz.f produced conflicting values",
		},
		{
			name:       "struct input values are converted",
			policy:     okPolicy + "\nallow if input.flake.org == \"omnicorp\"\n",
			input:      map[string]any{"flake": nixname.Flake{Org: "omnicorp", Name: "app"}},
			wantAllow:  true,
			wantReason: "",
		},
		{
			name:       "helper rules in other packages",
			policy:     "package flakegate.authz\n\nimport data.flakegate.lib\n\ndefault allow := false\n\nallow if lib.ok\n",
			input:      map[string]any{"ok": true},
			wantAllow:  true,
			wantReason: "",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			files := map[string]string{"flakegate.rego": tc.policy}
			if strings.Contains(tc.policy, "data.flakegate.lib") {
				files["lib.rego"] = "package flakegate.lib\n\nok if input.ok == true\n"
			}
			e, err := NewEngine(policyDir(t, files), Options{Logger: testLogger(&testutil.LogBuffer{}), Debounce: 10 * time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			d, err := e.Evaluate(context.Background(), tc.input)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Evaluate = %+v, %v; want error containing %q", d, err, tc.wantErr)
				}
				if d.Allow {
					t.Error("an evaluation error came with Allow")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if d.Allow != tc.wantAllow || d.Reason != tc.wantReason || d.Revision != e.Revision() {
				t.Errorf("Evaluate = %+v, want allow=%v reason=%q revision=%s", d, tc.wantAllow, tc.wantReason, e.Revision())
			}
		})
	}
}

func TestEvaluateHonoursContext(t *testing.T) {
	// A policy that takes long: every combination of two big ranges.
	policy := okPolicy + "\nallow if {\n\tsome i in numbers.range(1, 2000)\n\tsome j in numbers.range(1, 2000)\n\ti * j == -1\n}\n"
	e, err := NewEngine(policyDir(t, map[string]string{"flakegate.rego": policy}), Options{Logger: testLogger(&testutil.LogBuffer{})})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	d, err := e.Evaluate(ctx, map[string]any{})
	if err == nil {
		t.Fatalf("Evaluate finished (%+v) despite the deadline", d)
	}
	if d.Allow {
		t.Error("a cancelled evaluation allowed")
	}
}

func TestEvaluateRejectsUnrepresentableInput(t *testing.T) {
	e, err := NewEngine(policyDir(t, map[string]string{"flakegate.rego": okPolicy}), Options{Logger: testLogger(&testutil.LogBuffer{})})
	if err != nil {
		t.Fatal(err)
	}
	deep := map[string]any{}
	cur := deep
	for range maxInputDepth + 2 {
		next := map[string]any{}
		cur["x"] = next
		cur = next
	}
	for name, input := range map[string]map[string]any{
		"channel":   {"c": make(chan int)},
		"too deep":  deep,
		"bad float": {"n": json.Number("1e99999")},
	} {
		if d, err := e.Evaluate(context.Background(), input); err == nil || d.Allow {
			t.Errorf("%s: Evaluate = %+v, %v; want an error", name, d, err)
		}
	}
}

func TestDataDocument(t *testing.T) {
	dir := policyDir(t, map[string]string{
		"flakegate.rego": okPolicy + "\nallow if data.teams.ops[_] == input.user\n",
		"teams.yml":      "ops: [alice]\nsize: 3\n",
		"limits.json":    `{"max": 12345678901234567890}`,
		"notes.md":       "ignored",
	})
	e, err := NewEngine(dir, Options{Logger: testLogger(&testutil.LogBuffer{})})
	if err != nil {
		t.Fatal(err)
	}
	data := e.Data()
	if len(data) != 2 {
		t.Errorf("Data() has keys %v, want teams and limits", data)
	}
	teams, _ := data["teams"].(map[string]any)
	if n, ok := teams["size"].(json.Number); !ok || n.String() != "3" {
		t.Errorf("teams.size = %#v, want json.Number 3", teams["size"])
	}
	limits, _ := data["limits"].(map[string]any)
	if n, _ := limits["max"].(json.Number); n.String() != "12345678901234567890" {
		t.Errorf("big integer lost precision: %#v", limits["max"])
	}
	if !decide(t, e, map[string]any{"user": "alice"}).Allow || decide(t, e, map[string]any{"user": "bob"}).Allow {
		t.Error("data.teams from teams.yml not used by the policy")
	}
}
