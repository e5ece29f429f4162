package main

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/flakegate/flakegate/internal/authzapp"
	"github.com/flakegate/flakegate/internal/identity"
	"github.com/flakegate/flakegate/internal/identity/identitytest"
)

func TestRunCheck(t *testing.T) {
	dir := t.TempDir()
	b, err := yaml.Marshal(identity.Config{Issuers: []identity.IssuerConfig{
		identitytest.NewIssuer(t).Config("github", identity.ClaimsGitHubActions),
	}})
	if err != nil {
		t.Fatal(err)
	}
	issuers := filepath.Join(dir, "issuers.yaml")
	if err := os.WriteFile(issuers, b, 0o644); err != nil {
		t.Fatal(err)
	}
	policies := "../../internal/authz/testdata/policy"
	broken := t.TempDir()
	if err := os.WriteFile(filepath.Join(broken, "authz.rego"), []byte("package flakegate.authz\nallow if {\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	configFile := filepath.Join(dir, "authz.conf")
	if err := os.WriteFile(configFile, []byte("policies "+policies+"\nissuers "+issuers+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name     string
		args     []string
		env      map[string]string
		wantCode int
		wantOut  string
	}{
		{name: "good", args: []string{"-check", "-policies", policies, "-issuers", issuers}, wantCode: 0, wantOut: "authz -check: OK"},
		{name: "broken policy", args: []string{"-check", "-policies", broken, "-issuers", issuers}, wantCode: 1, wantOut: "authz -check: FAILED"},
		{name: "flags from the environment", args: []string{"-check"},
			env: map[string]string{"FLAKEGATE_POLICIES": policies, "FLAKEGATE_ISSUERS": issuers}, wantCode: 0, wantOut: "authz -check: OK"},
		{name: "flags from a config file", args: []string{"-check", "-config", configFile}, wantCode: 0, wantOut: "authz -check: OK"},
		{name: "nothing to check", args: []string{"-check"}, wantCode: 1, wantOut: "-policies is required"},
		{name: "unknown flag", args: []string{"-nope"}, wantCode: 2},
		{name: "stray argument", args: []string{"-check", "extra"}, wantCode: 2},
		{name: "serve with an invalid configuration", args: []string{"-policies", policies, "-issuers", issuers, "-owners-url", "ftp://x"}, wantCode: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, k := range []string{"FLAKEGATE_POLICIES", "FLAKEGATE_ISSUERS"} {
				t.Setenv(k, tt.env[k])
			}
			var stdout, stderr strings.Builder
			code := run(context.Background(), tt.args, &stdout, &stderr)
			if code != tt.wantCode {
				t.Fatalf("exit %d, want %d\nstdout: %s\nstderr: %s", code, tt.wantCode, stdout.String(), stderr.String())
			}
			if !strings.Contains(stdout.String(), tt.wantOut) {
				t.Errorf("stdout lacks %q:\n%s", tt.wantOut, stdout.String())
			}
		})
	}
}

// With no other flags authz runs authzapp.DefaultConfig: the flags keep
// no defaults of their own.
func TestFlagDefaultsAreDefaultConfig(t *testing.T) {
	dir := t.TempDir()
	issuers := filepath.Join(dir, "issuers.yaml")
	if err := os.WriteFile(issuers, []byte("issuers: []\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var got authzapp.Config
	orig := runApp
	t.Cleanup(func() { runApp = orig })
	runApp = func(_ context.Context, cfg authzapp.Config, _ *slog.Logger) error {
		got = cfg
		return nil
	}
	policies := "../../internal/authz/testdata/policy"
	var stdout, stderr strings.Builder
	if code := run(context.Background(), []string{"-policies", policies, "-issuers", issuers}, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	want := authzapp.DefaultConfig()
	want.Policies, want.Issuers = policies, issuers
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("flags' defaults:\n%+v\nDefaultConfig:\n%+v", got, want)
	}
}
