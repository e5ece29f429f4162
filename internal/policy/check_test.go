package policy

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"
)

const checkPolicy = `package flakegate.authz

default allow := false

allow if input.subject.user in data.users.allowed
`

const checkTests = `package flakegate.authz_test

import data.flakegate.authz

test_listed_user_allowed if {
	authz.allow with input as {"subject": {"user": "alice"}}
}

test_other_user_denied if {
	not authz.allow with input as {"subject": {"user": "mallory"}}
}

test_cases[c.user] if {
	some c in [{"user": "alice", "allow": true}, {"user": "bob", "allow": false}]
	got := authz.allow with input as {"subject": {"user": c.user}}
	got == c.allow
}
`

func TestCheck(t *testing.T) {
	tests := []struct {
		name    string
		files   map[string]string
		wantErr []string // substrings of the error; none: must pass
		wantOut []string // substrings of the output
	}{
		{
			name:    "good directory passes",
			files:   map[string]string{"flakegate.rego": checkPolicy, "users.yaml": "allowed: [alice]\n", "flakegate_test.rego": checkTests},
			wantOut: []string{"compiles: flakegate.rego, users.yaml", "PASS  flakegate_test.rego:5 data.flakegate.authz_test.test_listed_user_allowed", "3 tests: 3 passed, 0 failed"},
		},
		{
			name:    "a failing test is named",
			files:   map[string]string{"flakegate.rego": checkPolicy, "users.yaml": "allowed: [alice, mallory]\n", "flakegate_test.rego": checkTests},
			wantErr: []string{"1 of 3 tests failed", "data.flakegate.authz_test.test_other_user_denied"},
			wantOut: []string{"FAIL  flakegate_test.rego:9 data.flakegate.authz_test.test_other_user_denied", "1 failed"},
		},
		{
			name:    "a failing table case is named",
			files:   map[string]string{"flakegate.rego": checkPolicy, "users.yaml": "allowed: [alice, bob]\n", "flakegate_test.rego": checkTests},
			wantErr: []string{"test_cases"},
			wantOut: []string{"FAIL  flakegate_test.rego:13 data.flakegate.authz_test.test_cases", `case "bob" failed`},
		},
		{
			name:    "compile error names file and line",
			files:   map[string]string{"flakegate.rego": checkPolicy + "\nallow if y\n", "flakegate_test.rego": checkTests},
			wantErr: []string{"flakegate.rego:7", "var y is unsafe"},
			wantOut: []string{"ERROR flakegate.rego:7: rego_unsafe_var_error: var y is unsafe"},
		},
		{
			name:    "compile error in a test file names file and line",
			files:   map[string]string{"flakegate.rego": checkPolicy, "flakegate_test.rego": checkTests + "\ntest_broken if z\n"},
			wantErr: []string{"flakegate_test.rego:19", "var z is unsafe"},
			wantOut: []string{"ERROR flakegate_test.rego:19"},
		},
		{
			name:    "test evaluation errors fail",
			files:   map[string]string{"flakegate.rego": checkPolicy, "users.yaml": "allowed: [alice]\n", "x_test.rego": "package x_test\n\ntest_conflict if {\n\tf(1) == 1\n}\n\nf(x) := 1 if x\n\nf(x) := 2 if x\n"},
			wantErr: []string{"1 of 1 tests failed", "data.x_test.test_conflict"},
			wantOut: []string{"ERROR x_test.rego:3 data.x_test.test_conflict", "conflicting values"},
		},
		{
			name:    "print output of a failing test is shown",
			files:   map[string]string{"flakegate.rego": checkPolicy, "x_test.rego": "package x_test\n\ntest_print if {\n\tprint(\"looking at\", 42)\n\tfalse\n}\n"},
			wantErr: []string{"test_print"},
			wantOut: []string{"| looking at 42"},
		},
		{
			name: "config_errors fail the check, tests still run",
			files: map[string]string{
				"flakegate.rego":      checkPolicy + "\nconfig_errors contains \"users.yaml: nobody is allowed\" if count(data.users.allowed) == 0\n",
				"users.yaml":          "allowed: []\n",
				"flakegate_test.rego": checkTests,
			},
			wantErr: []string{"the engine would refuse this set", "users.yaml: nobody is allowed", "tests failed"},
			wantOut: []string{"ERROR users.yaml: nobody is allowed", "FAIL  flakegate_test.rego:5"},
		},
		{
			name:    "no tests is not an error",
			files:   map[string]string{"flakegate.rego": checkPolicy},
			wantOut: []string{"nothing to test"},
		},
		{
			name:    "test files without tests are an error",
			files:   map[string]string{"flakegate.rego": checkPolicy, "x_test.rego": "package x_test\n\nhelper := 1\n"},
			wantErr: []string{"no test_ rules"},
		},
		{
			name:    "no policy is an error",
			files:   map[string]string{"x_test.rego": "package x_test\n\ntest_x if true\n"},
			wantErr: []string{"no policy files"},
			wantOut: []string{"ERROR no policy files"},
		},
		{
			name:    "skipped tests are reported",
			files:   map[string]string{"flakegate.rego": checkPolicy, "x_test.rego": "package x_test\n\ntest_x if true\n\ntodo_test_y if false\n"},
			wantOut: []string{"SKIP  x_test.rego:5", "2 tests: 1 passed, 0 failed, 1 skipped"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			var out bytes.Buffer
			err := Check(ctx, policyDir(t, tc.files), &out)
			if len(tc.wantErr) == 0 && err != nil {
				t.Errorf("Check: %v\n%s", err, out.String())
			}
			if len(tc.wantErr) > 0 && err == nil {
				t.Errorf("Check passed, want an error\n%s", out.String())
			}
			for _, want := range tc.wantErr {
				if err != nil && !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not mention %q", err, want)
				}
			}
			for _, want := range tc.wantOut {
				if !strings.Contains(out.String(), want) {
					t.Errorf("output does not contain %q:\n%s", want, out.String())
				}
			}
		})
	}
}
