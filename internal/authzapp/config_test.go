package authzapp

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/flakegate/flakegate/internal/identity"
	"github.com/flakegate/flakegate/internal/identity/identitytest"
)

// copyDir copies the regular files of src into a new temp dir.
func copyDir(t *testing.T, src string) string {
	t.Helper()
	dst := t.TempDir()
	entries, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dst, e.Name()), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dst
}

func TestCheckConfig(t *testing.T) {
	iss := identitytest.NewIssuer(t)
	goodIssuers := writeIssuersFile(t, t.TempDir(), iss.Config("github", identity.ClaimsGitHubActions))
	slashCfg := iss.Config("github", identity.ClaimsGitHubActions)
	slashCfg.Issuer += "/"
	slashIssuers := writeIssuersFile(t, t.TempDir(), slashCfg)
	twinCfg := identitytest.WithOrgs(iss.Config("github-twin", identity.ClaimsGitHubActions), "omnicorp")
	twinIssuers := writeIssuersFile(t, t.TempDir(), identitytest.WithOrgs(iss.Config("github", identity.ClaimsGitHubActions), "omnicorp"), twinCfg)
	twin, err := os.ReadFile(twinIssuers)
	if err != nil {
		t.Fatal(err)
	}
	// The second entry's issuer gets a trailing slash.
	twinText := strings.Replace(string(twin), "issuer: "+iss.Issuer()+"\n", "issuer: "+iss.Issuer()+"/\n", 2)
	twinText = strings.Replace(twinText, "issuer: "+iss.Issuer()+"/\n", "issuer: "+iss.Issuer()+"\n", 1)
	if err := os.WriteFile(twinIssuers, []byte(twinText), 0o644); err != nil {
		t.Fatal(err)
	}
	badIssuersDir := t.TempDir()
	badIssuers := filepath.Join(badIssuersDir, "issuers.yaml")
	if err := os.WriteFile(badIssuers, []byte("issuers:\n  - name: github\n    issuer: https://token.actions.githubusercontent.com\n    jwks_url: http://example.com/jwks\n    claims: github-actions\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	brokenRule := copyDir(t, testPolicies)
	if err := os.WriteFile(filepath.Join(brokenRule, "broken.rego"), []byte("package flakegate.authz\n\nallow if {\n\tinput.action ==\n}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	failingTest := copyDir(t, testPolicies)
	if err := os.WriteFile(filepath.Join(failingTest, "wrong_test.rego"), []byte("package flakegate.authz_test\n\nimport data.flakegate.authz\n\ntest_anonymous_may_push if {\n\tauthz.allow with input as {\"action\": \"push\", \"subject\": {\"authenticated\": false}}\n}\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	badDenylist := copyDir(t, testPolicies)
	if err := os.WriteFile(filepath.Join(badDenylist, "denylist.yaml"), []byte("token_id: [abc]\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	// Issuer rules that revoke nothing: the cache's own URL, a trailing
	// slash (review r6, 2026-12-05: accepted in silence). The exact iss
	// is no warning.
	strayIssuer := copyDir(t, testPolicies)
	if err := os.WriteFile(filepath.Join(strayIssuer, "denylist.yaml"), []byte("subjects:\n  - issuer: https://cache.example.com\n  - issuer: "+iss.Issuer()+"/\n  - {issuer: "+iss.Issuer()+", sub: x}\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name      string
		policies  string
		issuers   string
		wantErr   bool
		wantLines []string // substrings of the printed report
	}{
		{name: "denylist issuer rules naming no identity provider: warnings", policies: strayIssuer, issuers: goodIssuers,
			wantLines: []string{"ok   policies", `WARN denylist`, `issuer "https://cache.example.com" revokes nothing`, `issuer "` + iss.Issuer() + `/" revokes nothing`}},
		{name: "good", policies: testPolicies, issuers: goodIssuers,
			wantLines: []string{"ok   issuers", "1 issuer(s): github", "PASS", "ok   policies"}},
		{name: "issuer with a trailing slash: a warning, not a failure", policies: testPolicies, issuers: slashIssuers,
			wantLines: []string{"ok   issuers", "WARN issuers", `issuer "` + iss.Issuer() + `/" ends with a slash; tokens usually say "` + iss.Issuer() + `"`, "ok   policies"}},
		{name: "two issuers that differ only by a trailing slash", policies: testPolicies, issuers: twinIssuers,
			wantLines: []string{"ok   issuers", "2 issuer(s)", "issuers[0] (github) and issuers[1] (github-twin)", "differ only by a trailing slash", "(github-twin): issuer"}},
		{name: "compile error", policies: brokenRule, issuers: goodIssuers, wantErr: true,
			wantLines: []string{"broken.rego:", "FAIL policies"}},
		{name: "failing policy test", policies: failingTest, issuers: goodIssuers, wantErr: true,
			wantLines: []string{"test_anonymous_may_push", "FAIL policies"}},
		{name: "bad issuers file", policies: testPolicies, issuers: badIssuers, wantErr: true,
			wantLines: []string{"FAIL issuers", "audience", "jwks_url", "ok   policies"}},
		{name: "missing policy dir", policies: filepath.Join(t.TempDir(), "nope"), issuers: goodIssuers, wantErr: true,
			wantLines: []string{"FAIL policies", "no such file", "ok   issuers"}},
		{name: "missing issuers file still checks policies", policies: testPolicies, issuers: filepath.Join(t.TempDir(), "nope.yaml"), wantErr: true,
			wantLines: []string{"FAIL issuers", "no such file", "ok   policies"}},
		{name: "malformed denylist", policies: badDenylist, issuers: goodIssuers, wantErr: true,
			wantLines: []string{"ok   policies", "FAIL denylist", `unknown key "token_id"`}},
		{name: "nothing given", wantErr: true,
			wantLines: []string{"-policies is required", "-issuers is required"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.Policies, cfg.Issuers = tt.policies, tt.issuers
			var out strings.Builder
			err := CheckConfig(context.Background(), cfg, &out)
			if (err != nil) != tt.wantErr {
				t.Fatalf("error %v, want error: %v\n%s", err, tt.wantErr, out.String())
			}
			if tt.issuers == goodIssuers && tt.policies != strayIssuer && strings.Contains(out.String(), "WARN") {
				t.Errorf("warnings for a good issuers file:\n%s", out.String())
			}
			if tt.policies == strayIssuer && strings.Count(out.String(), "WARN denylist") != 2 {
				t.Errorf("want two denylist warnings (not the exact iss):\n%s", out.String())
			}
			for _, l := range tt.wantLines {
				if !strings.Contains(out.String(), l) {
					t.Errorf("report lacks %q:\n%s", l, out.String())
				}
			}
		})
	}
}

func TestConfigValidate(t *testing.T) {
	iss := writeIssuersFile(t, t.TempDir(), identitytest.NewIssuer(t).Config("github", identity.ClaimsGitHubActions))
	valid := func() Config {
		c := DefaultConfig()
		c.Policies, c.Issuers = testPolicies, iss
		return c
	}
	tests := []struct {
		name   string
		modify func(*Config)
		want   []string // every problem is reported at once
	}{
		{name: "defaults with files", modify: func(*Config) {}},
		{name: "everything wrong", modify: func(c *Config) {
			c.Listen, c.HTTPListen, c.Policies, c.Issuers = "nohost", "", "", ""
			c.OwnersURL, c.OwnersTimeout, c.LogLevel = "ftp://x", 0, "loud"
			c.PolicyDebounce = -time.Second
			c.Exchange.PublicURL, c.Exchange.Lifetime = "ftp://cache", 48*time.Hour
		}, want: []string{"-listen", "-http-listen", "-policies is required", "-issuers is required", "-owners-url", "owners timeout", "-log-level", "-policy-debounce must be positive",
			`-public-url "ftp://cache"`, "-token-keys is required", "-token-lifetime 48h0m0s exceeds -token-max-lifetime"}},
		{name: "same listen address", modify: func(c *Config) { c.HTTPListen = c.Listen },
			want: []string{"different addresses"}},
		{name: "policies is a file", modify: func(c *Config) { c.Policies = iss },
			want: []string{"not a directory"}},
		{name: "no owners url", modify: func(c *Config) { c.OwnersURL = "" },
			want: []string{"-owners-url is required"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := valid()
			tt.modify(&c)
			err := c.Validate()
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q: %v", w, err)
				}
			}
		})
	}
}

func TestValidateListenUnix(t *testing.T) {
	for _, tc := range []struct {
		listen string
		bad    bool
	}{
		{"127.0.0.1:9001", false},
		{"unix:/run/flakegate/authz.sock", false},
		{"/run/flakegate/authz.sock", false},
		{"authz.sock", true}, // neither host:port nor a socket path
		{"", true},
	} {
		cfg := DefaultConfig()
		cfg.Listen = tc.listen
		err := cfg.Validate()
		bad := err != nil && strings.Contains(err.Error(), "-listen ")
		if bad != tc.bad {
			t.Errorf("Validate with -listen %q: error %v, want a -listen error: %v", tc.listen, err, tc.bad)
		}
	}
}
