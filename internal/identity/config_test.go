package identity_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/flakegate/flakegate/internal/identity"
)

func TestParseIssuersValidation(t *testing.T) {
	const good = `
  - name: github
    issuer: https://token.actions.githubusercontent.com
    jwks_url: https://token.actions.githubusercontent.com/.well-known/jwks
    audience: [https://cache.example.com]
    claims: github-actions
`
	cases := []struct {
		name string
		yaml string
		// wantErr lists substrings the error must contain; none means valid.
		wantErr []string
	}{
		{"valid", "issuers:" + good, nil},
		{"valid gitlab with jwks_file and oidc with org_claim", `issuers:
  - name: gitlab
    issuer: https://gitlab.example.com
    jwks_file: keys/gitlab.json
    audience: [https://cache.example.com, flakegate]
    claims: gitlab-ci
    orgs: [eng]
  - name: sso
    issuer: https://sso.example.com/realms/eng
    jwks_url: https://sso.example.com/realms/eng/protocol/openid-connect/certs
    audience: [flakegate]
    claims: oidc
    org_claim: org
    orgs: [eng, partner]
`, nil},
		{"two issuers naming their own orgs need orgs", `issuers:
  - {name: github, issuer: "https://token.actions.githubusercontent.com", jwks_url: "https://a.example/jwks", audience: [x], claims: github-actions}
  - {name: gitlab, issuer: "https://gitlab.com", jwks_url: "https://b.example/jwks", audience: [x], claims: gitlab-ci, orgs: [omnicorp]}
  - {name: corp, issuer: "https://idp.example.com", jwks_url: "https://c.example/jwks", audience: [x], claims: oidc, org: omnicorp}
  - {name: partner, issuer: "https://partner.example.com", jwks_url: "https://d.example/jwks", audience: [x], claims: oidc, org_claim: org}
`, []string{"issuers[0] (github): orgs: required when more than one issuer", "issuers[3] (partner): orgs: required"}},
		{"one CI issuer and flakegate's own need no orgs", `issuers:
  - {name: github, issuer: "https://token.actions.githubusercontent.com", jwks_url: "https://a.example/jwks", audience: [x], claims: github-actions}
  - {name: cache, issuer: "https://cache.example.com", jwks_url: "https://cache.example.com/_flakegate/jwks", audience: [x], claims: flakegate}
`, nil},
		{"orgs where tokens do not name an org", `issuers:
  - {name: corp, issuer: "https://idp.example.com", jwks_url: "https://c.example/jwks", audience: [x], claims: oidc, org: omnicorp, orgs: [omnicorp]}
  - {name: gh, issuer: "https://token.actions.githubusercontent.com", jwks_url: "https://a.example/jwks", audience: [x], claims: github-actions, orgs: ["Omni Corp"]}
`, []string{"issuers[0] (corp): orgs: only valid with", `issuers[1] (gh): orgs: "Omni Corp" is not a flake org`}},
		{"http jwks on loopback is fine", `issuers:
  - {name: dev, issuer: "http://127.0.0.1:8080", jwks_url: "http://localhost:8080/jwks", audience: [x], claims: oidc}
  - {name: dev6, issuer: "http://[::1]:9", jwks_url: "http://[::1]:9/jwks", audience: [x], claims: oidc}
`, nil},
		{"no issuers", "issuers: []", []string{"at least one issuer"}},
		{"empty file", "", []string{"at least one issuer"}},
		{"unknown field", "issuers:" + good + "    jwks_uri: https://x\n", []string{"unknown field", "jwks_uri"}},
		{"unknown top-level field", "issuer:" + good, []string{"unknown field"}},
		{"audience as a string", strings.Replace("issuers:"+good, "audience: [https://cache.example.com]", "audience: https://cache.example.com", 1), []string{"parse"}},
		{"duplicate name", "issuers:" + good + strings.Replace(good, "https://token.actions", "https://other.actions", 1), []string{"issuers[1] (github): name: duplicate of issuers[0]"}},
		{"duplicate issuer", "issuers:" + good + strings.Replace(good, "name: github", "name: github2", 1), []string{"issuers[1] (github2): issuer: duplicate of issuers[0]"}},
		{"missing name", `issuers:
  - {issuer: "https://a.example", jwks_url: "https://a.example/jwks", audience: [x], claims: oidc}`, []string{"issuers[0]: name: required"}},
		{"bad name", `issuers:
  - {name: "has space", issuer: "https://a.example", jwks_url: "https://a.example/jwks", audience: [x], claims: oidc}`, []string{"name: must be"}},
		{"missing issuer", `issuers:
  - {name: a, jwks_url: "https://a.example/jwks", audience: [x], claims: oidc}`, []string{"issuers[0] (a): issuer: required"}},
		{"issuer with a space", `issuers:
  - {name: a, issuer: "https://a.example ", jwks_url: "https://a.example/jwks", audience: [x], claims: oidc}`, []string{"issuers[0] (a): issuer: must be a printable string"}},
		{"http issuer with https keys", `issuers:
  - {name: a, issuer: "http://cache.lan:8080", jwks_url: "https://a.example/jwks", audience: [x], claims: flakegate}`, nil},
		{"neither jwks_url nor jwks_file", `issuers:
  - {name: a, issuer: "https://a.example", audience: [x], claims: oidc}`, []string{"issuers[0] (a): jwks_url: one of jwks_url or jwks_file is required"}},
		{"both jwks_url and jwks_file", `issuers:
  - {name: a, issuer: "https://a.example", jwks_url: "https://a.example/jwks", jwks_file: k.json, audience: [x], claims: oidc}`, []string{"issuers[0] (a): jwks_file: set only one"}},
		{"http jwks_url on a public host", `issuers:
  - {name: a, issuer: "https://a.example", jwks_url: "http://a.example/jwks", audience: [x], claims: oidc}`, []string{"issuers[0] (a): jwks_url: must use https (http is allowed only for loopback hosts)"}},
		{"ftp jwks_url", `issuers:
  - {name: a, issuer: "https://a.example", jwks_url: "ftp://a.example/jwks", audience: [x], claims: oidc}`, []string{"jwks_url: must use https"}},
		{"jwks_url with credentials", `issuers:
  - {name: a, issuer: "https://a.example", jwks_url: "https://u:p@a.example/jwks", audience: [x], claims: oidc}`, []string{"jwks_url: must be an absolute https URL without credentials"}},
		{"http host that only starts with localhost", `issuers:
  - {name: a, issuer: "https://a.example", jwks_url: "http://localhost.evil.example/jwks", audience: [x], claims: oidc}`, []string{"jwks_url: must use https"}},
		{"empty audience", `issuers:
  - {name: a, issuer: "https://a.example", jwks_url: "https://a.example/jwks", audience: [], claims: oidc}`, []string{"issuers[0] (a): audience: at least one"}},
		{"blank audience value", `issuers:
  - {name: a, issuer: "https://a.example", jwks_url: "https://a.example/jwks", audience: [" "], claims: oidc}`, []string{"audience: empty audience value"}},
		{"missing claims", `issuers:
  - {name: a, issuer: "https://a.example", jwks_url: "https://a.example/jwks", audience: [x]}`, []string{"issuers[0] (a): claims: required"}},
		{"unknown claims mapper", `issuers:
  - {name: a, issuer: "https://a.example", jwks_url: "https://a.example/jwks", audience: [x], claims: github}`, []string{`claims: unknown mapper "github"`}},
		{"org_claim outside oidc", `issuers:
  - {name: a, issuer: "https://a.example", jwks_url: "https://a.example/jwks", audience: [x], claims: gitlab-ci, org_claim: org}`, []string{"org_claim: only valid with claims: oidc"}},
		{"user_claim outside oidc", `issuers:
  - {name: a, issuer: "https://a.example", jwks_url: "https://a.example/jwks", audience: [x], claims: github-actions, user_claim: sub}`, []string{"user_claim: only valid with claims: oidc"}},
		{"org_ids outside github-actions", `issuers:
  - {name: a, issuer: "https://a.example", jwks_url: "https://a.example/jwks", audience: [x], claims: gitlab-ci, org_ids: {omnicorp: "1"}}`, []string{"org_ids: only valid with claims: github-actions"}},
		{"org_ids of an unlisted org, twice, not digits", `issuers:
  - {name: a, issuer: "https://a.example", jwks_url: "https://a.example/jwks", audience: [x], claims: github-actions, orgs: [omnicorp], org_ids: {acme: "1", omnicorp: "x1", OmniCorp: "2"}}`, []string{`org_ids: "acme" is not one of this issuer's orgs`, `org_ids: "omnicorp" is listed twice`, `org_ids: omnicorp: "x1" is not a GitHub account ID`}},
		{"org_ids on both GitHub issuers listing the org", `issuers:
  - {name: github, issuer: "https://token.actions.githubusercontent.com", jwks_url: "https://a.example/jwks", audience: [x], claims: github-actions, orgs: [omnicorp], org_ids: {omnicorp: "1"}}
  - {name: ghes, issuer: "https://ghes.example.com/_services/token", jwks_url: "https://b.example/jwks", audience: [x], claims: github-actions, orgs: [omnicorp], org_ids: {OmniCorp: "7"}}`, nil},
		{"org_ids on one of two GitHub issuers listing the org", `issuers:
  - {name: github, issuer: "https://token.actions.githubusercontent.com", jwks_url: "https://a.example/jwks", audience: [x], claims: github-actions, orgs: [omnicorp], org_ids: {omnicorp: "1"}}
  - {name: ghes, issuer: "https://ghes.example.com/_services/token", jwks_url: "https://b.example/jwks", audience: [x], claims: github-actions, orgs: [OmniCorp]}`, []string{`issuers[1] (ghes): org_ids: org "omnicorp" is pinned to its GitHub account by issuer github but not here`}},
		{"user_claim email, a reserved claim; org_ids with a leading zero", `issuers:
  - {name: a, issuer: "https://a.example", jwks_url: "https://a.example/jwks", audience: [x], claims: oidc, user_claim: email}
  - {name: b, issuer: "https://b.example", jwks_url: "https://b.example/jwks", audience: [x], claims: oidc, user_claim: exp}
  - {name: c, issuer: "https://c.example", jwks_url: "https://c.example/jwks", audience: [x], claims: github-actions, orgs: [omnicorp], org_ids: {omnicorp: "090316721"}}`, []string{"(a): user_claim: email would name users", `(b): user_claim: "exp" is a token claim`, `(c): org_ids: omnicorp: "090316721" is not a GitHub account ID`}},
		{"org outside oidc", `issuers:
  - {name: a, issuer: "https://a.example", jwks_url: "https://a.example/jwks", audience: [x], claims: github-actions, org: omnicorp}`, []string{"org: only valid with claims: oidc"}},
		{"org and org_claim", `issuers:
  - {name: a, issuer: "https://a.example", jwks_url: "https://a.example/jwks", audience: [x], claims: oidc, org: omnicorp, org_claim: org}`, []string{"org: set org (one org for every user of the issuer) or org_claim"}},
		{"org not a flake org", `issuers:
  - {name: a, issuer: "https://a.example", jwks_url: "https://a.example/jwks", audience: [x], claims: oidc, org: "omni/corp"}`, []string{`org: "omni/corp" is not a flake org`}},
		{"every problem reported at once", `issuers:
  - {name: a, issuer: "https://a.example", audience: [], claims: nope}
  - {name: a, issuer: "https://a.example", jwks_url: "http://b.example", audience: [x], claims: oidc}`, []string{
			"issuers[0] (a): jwks_url: one of", "issuers[0] (a): audience:", "issuers[0] (a): claims: unknown",
			"issuers[1] (a): name: duplicate", "issuers[1] (a): issuer: duplicate", "issuers[1] (a): jwks_url: must use https"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := identity.ParseIssuers([]byte(tc.yaml))
			if len(tc.wantErr) == 0 {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				if len(cfg.Issuers) == 0 {
					t.Fatal("no issuers parsed")
				}
				return
			}
			if err == nil {
				t.Fatalf("accepted; want error containing %q", tc.wantErr)
			}
			for _, want := range tc.wantErr {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q\ndoes not contain %q", err, want)
				}
			}
		})
	}
}

func TestLoadIssuersFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "issuers.yaml")
	content := `issuers:
  - name: github
    issuer: https://token.actions.githubusercontent.com
    jwks_url: https://token.actions.githubusercontent.com/.well-known/jwks
    audience: [https://cache.example.com]
    claims: github-actions
    orgs: [omnicorp]
  - name: local
    issuer: https://idp.internal.example
    jwks_file: keys/local.json
    audience: [https://cache.example.com]
    claims: oidc
  - name: abs
    issuer: https://abs.internal.example
    jwks_file: /etc/flakegate/abs.json
    audience: [https://cache.example.com]
    claims: oidc
`
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := identity.LoadIssuersFile(path)
	if err != nil {
		t.Fatalf("LoadIssuersFile: %v", err)
	}
	if got := cfg.Issuers[0]; got.Name != "github" || got.Claims != identity.ClaimsGitHubActions ||
		got.Audience[0] != "https://cache.example.com" || got.JWKSURL == "" {
		t.Errorf("issuer 0 = %+v", got)
	}
	if got, want := cfg.Issuers[1].JWKSFile, filepath.Join(dir, "keys/local.json"); got != want {
		t.Errorf("relative jwks_file = %q, want %q", got, want)
	}
	if got := cfg.Issuers[2].JWKSFile; got != "/etc/flakegate/abs.json" {
		t.Errorf("absolute jwks_file = %q", got)
	}

	if _, err := identity.LoadIssuersFile(filepath.Join(dir, "missing.yaml")); err == nil || !strings.Contains(err.Error(), "read issuers file") {
		t.Errorf("missing file: err = %v", err)
	}
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("issuers:\n  - name: x\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := identity.LoadIssuersFile(bad); err == nil || !strings.Contains(err.Error(), bad) || !strings.Contains(err.Error(), "issuers[0] (x)") {
		t.Errorf("invalid file: err = %v, want it to name the file and the entry", err)
	}
}
