package gate

// Attacks on authentication and on the request → decision mapping, through
// the single-host decision path. First written by an adversarial review
// (2026-12-05); the first four failed on the code before their fixes.

import (
	"bufio"
	"context"
	"encoding/base64"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/flakegate/flakegate/internal/authzapp"
	"github.com/flakegate/flakegate/internal/identity"
	"github.com/flakegate/flakegate/internal/identity/identitytest"
	"github.com/flakegate/flakegate/internal/route"
)

// attackStack is the single-host decision path: the embedded gate asking the
// real authorization core (authzapp: JWT verification, revocation, the
// shipped policies) in-process, in front of a recording upstream.
type attackStack struct {
	srv *httptest.Server
	up  *upstream
	app *authzapp.App

	mu   sync.Mutex
	seen []string // method and r.URL.Path of each request that reached the upstream
}

func newAttackStack(t *testing.T, policies string, issuers ...identity.IssuerConfig) *attackStack {
	t.Helper()
	dir := t.TempDir()
	b, err := yaml.Marshal(identity.Config{Issuers: issuers})
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "issuers.yaml")
	if err := os.WriteFile(file, b, 0o644); err != nil {
		t.Fatal(err)
	}
	owners := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"flakes":[]}`)
	}))
	t.Cleanup(owners.Close)
	cfg := authzapp.DefaultConfig()
	cfg.Policies, cfg.Issuers, cfg.OwnersURL = policies, file, owners.URL
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	app, err := authzapp.New(ctx, cfg, slog.New(slog.NewJSONHandler(io.Discard, nil)))
	if err != nil {
		t.Fatalf("authzapp.New: %v", err)
	}
	t.Cleanup(app.Close)
	g := New(InProcess(app.AuthorizationServer()), Options{Logger: slog.New(slog.DiscardHandler), Timeout: 5 * time.Second})
	st := &attackStack{up: &upstream{}, app: app}
	st.srv = httptest.NewServer(g.Wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		st.mu.Lock()
		st.seen = append(st.seen, r.Method+" "+r.URL.Path)
		st.mu.Unlock()
		st.up.ServeHTTP(w, r)
	})))
	t.Cleanup(st.srv.Close)
	return st
}

// do sends one request and reports the status and whether the upstream
// (the blob server) was reached.
func (s *attackStack) do(t *testing.T, method, path, auth string) (status int, reached bool) {
	t.Helper()
	s.up.mu.Lock()
	s.up.calls = 0
	s.up.mu.Unlock()
	req, _ := http.NewRequest(method, s.srv.URL+path, nil)
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := s.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	s.up.mu.Lock()
	defer s.up.mu.Unlock()
	return resp.StatusCode, s.up.calls > 0
}

// TestNamespaceOfAnotherProviderIsRefused: GitHub Actions and gitlab.com
// CI trusted together (examples/issuers.yaml), the shipped policies. A
// gitlab.com project whose path merely spells a GitHub repository's
// "org/name" was treated as that repository's CI job: it pushed into the
// GitHub org's flake and read the flake restricted to alice and bob
// (gitlab.com namespaces are first come, first served). Each issuer now
// speaks for the orgs it lists (identity.IssuerConfig.Orgs, required with
// several issuers).
func TestNamespaceOfAnotherProviderIsRefused(t *testing.T) {
	gh := identitytest.NewIssuer(t) // stands for https://token.actions.githubusercontent.com
	gl := identitytest.NewIssuer(t) // stands for https://gitlab.com
	s := newAttackStack(t, "../../policies",
		identitytest.WithOrgs(gh.Config("github", identity.ClaimsGitHubActions), "omnicorp"),
		identitytest.WithOrgs(gl.Config("gitlab", identity.ClaimsGitLabCI), "someoneelse"))

	const hash = "0a9g8mz2ck6lw5yyz3bh3nxa0cacp2v1"
	// The squatter's gitlab.com project omnicorp/super-duper-secure, pipeline
	// on its own (protected by default) main branch.
	squat := "Bearer " + gl.Mint(identitytest.GitLabCIClaims("omnicorp/super-duper-secure", "main"))
	// Control: the same squatter with a project of another name.
	other := "Bearer " + gl.Mint(identitytest.GitLabCIClaims("someoneelse/super-duper-secure", "main"))

	for _, tc := range []struct {
		name, method, path, auth string
	}{
		{"push into the GitHub org's restricted flake", "PUT", "/omnicorp/super-duper-secure/" + hash + ".narinfo", squat},
		{"read the flake readable only by alice and bob", "GET", "/omnicorp/super-duper-secure/" + hash + ".narinfo", squat},
		{"read another flake of the GitHub org (org-wide default)", "GET", "/omnicorp/dev-environments/" + hash + ".narinfo", squat},
		{"control: same job under another gitlab namespace", "PUT", "/omnicorp/super-duper-secure/" + hash + ".narinfo", other},
	} {
		status, reached := s.do(t, tc.method, tc.path, tc.auth)
		t.Logf("%-60s %s %s -> %d (upstream reached: %v)", tc.name, tc.method, tc.path, status, reached)
		if reached {
			t.Errorf("%s: a gitlab.com job of a squatted namespace reached the blob server (status %d): flakes are not bound to the identity provider that owns the namespace", tc.name, status)
		}
	}
}

// TestSecondIssuerCannotImpersonateOrgUser: a partner's IdP, trusted so
// that read.orgs: [partner] works, named its user "alice" of org omnicorp
// and read what only omnicorp's alice may.
func TestSecondIssuerCannotImpersonateOrgUser(t *testing.T) {
	corp := identitytest.NewIssuer(t)
	partner := identitytest.NewIssuer(t)
	corpCfg := corp.Config("corp", identity.ClaimsOIDC)
	corpCfg.Org = "omnicorp"
	partnerCfg := identitytest.WithOrgs(partner.Config("partner", identity.ClaimsOIDC), "partner")
	partnerCfg.OrgClaim = "org"
	s := newAttackStack(t, "../../policies", corpCfg, partnerCfg)

	const hash = "0a9g8mz2ck6lw5yyz3bh3nxa0cacp2v1"
	path := "/omnicorp/super-duper-secure/" + hash + ".narinfo"
	realAlice := "Bearer " + corp.Mint(identitytest.OIDCUserClaims("alice"))
	corpCarol := "Bearer " + corp.Mint(identitytest.OIDCUserClaims("carol"))
	fakeAlice := "Bearer " + partner.Mint(map[string]any{
		"sub": "partner-user-1", "preferred_username": "alice", "org": "omnicorp",
	})
	for _, tc := range []struct {
		name, auth string
		want       bool
	}{
		{"company IdP's alice (listed)", realAlice, true},
		{"company IdP's carol (not listed): control", corpCarol, false},
		{"partner IdP's user calling herself alice of omnicorp", fakeAlice, false},
	} {
		s.expectReached(t, tc.name, "GET", path, tc.auth, tc.want)
	}
}

// TestNextOwnerOfAFreedGitHubNameIsRefused: the GitHub organization
// omnicorp was renamed; an attacker registered the freed name and ran a job
// in a repository named like the restricted flake. The issuers file's
// org_ids pins the name to the old account's ID (repo-jacking, left open
// by the second review).
func TestNextOwnerOfAFreedGitHubNameIsRefused(t *testing.T) {
	gh := identitytest.NewIssuer(t)
	cfg := identitytest.WithOrgs(gh.Config("github", identity.ClaimsGitHubActions), "omnicorp")
	cfg.OrgIDs = map[string]string{"omnicorp": "90316721"}
	s := newAttackStack(t, "../../policies", cfg)

	const hash = "0a9g8mz2ck6lw5yyz3bh3nxa0cacp2v1"
	job := func(ownerID string) string {
		c := identitytest.GitHubActionsClaims("omnicorp/super-duper-secure", "refs/heads/main")
		c["repository_owner_id"] = ownerID
		return "Bearer " + gh.Mint(c)
	}
	for _, tc := range []struct {
		name, method, ownerID string
		want                  bool
	}{
		{"the org's own job pushes: control", "PUT", "90316721", true},
		{"the name's next owner pushes", "PUT", "171717", false},
		{"the name's next owner reads", "GET", "171717", false},
	} {
		path := "/omnicorp/super-duper-secure/" + hash + ".narinfo"
		s.expectReached(t, tc.name, tc.method, path, job(tc.ownerID), tc.want)
	}
}

// TestUnverifiedEmailDoesNotNameAUser: an IdP that lets anyone sign up
// with any address (email_verified false), and a policy listing a user by
// email. The sign-up named itself after the listed address and read the
// flake (the email named the user whatever email_verified said).
func TestUnverifiedEmailDoesNotNameAUser(t *testing.T) {
	dir := shippedPolicyWith(t, "omnicorp/secret:\n  read:\n    users: [cto@omnicorp.example]\n")
	idp := identitytest.NewIssuer(t)
	cfg := idp.Config("corp", identity.ClaimsOIDC)
	cfg.Org = "omnicorp"
	s := newAttackStack(t, dir, cfg)

	const hash = "0a9g8mz2ck6lw5yyz3bh3nxa0cacp2v1"
	path := "/omnicorp/secret/" + hash + ".narinfo"
	user := func(sub string, verified bool) string {
		return "Bearer " + idp.Mint(map[string]any{"sub": sub, "email": "cto@omnicorp.example", "email_verified": verified})
	}
	for _, tc := range []struct {
		name, auth string
		want       bool
	}{
		{"the CTO, verified address: control", user("u-cto", true), true},
		{"a sign-up typing the CTO's address", user("u-eve", false), false},
	} {
		s.expectReached(t, tc.name, "GET", path, tc.auth, tc.want)
	}
}

// TestGitLabUnprotectedEnvironmentDoesNotPush: a flake that lets jobs of
// its "production" deployment environment push from any ref
// (push.environments) trusted the environment's name alone; any developer
// ran a job on an unprotected branch with `environment: production` (an
// unprotected environment of that name, created by the job itself). The
// shipped policy now requires GitLab's environment_protected claim.
func TestGitLabUnprotectedEnvironmentDoesNotPush(t *testing.T) {
	dir := shippedPolicyWith(t, "omnicorp/app:\n  push:\n    environments: [production]\n")
	gl := identitytest.NewIssuer(t)
	s := newAttackStack(t, dir, gl.Config("gitlab", identity.ClaimsGitLabCI))

	const hash = "0a9g8mz2ck6lw5yyz3bh3nxa0cacp2v1"
	path := "/omnicorp/app/" + hash + ".narinfo"
	mint := func(protectedEnv bool) string {
		c := identitytest.GitLabCIClaims("omnicorp/app", "feature-x") // unprotected branch
		c["environment_protected"] = map[bool]string{true: "true", false: "false"}[protectedEnv]
		return "Bearer " + gl.Mint(c)
	}
	noEnv := identitytest.GitLabCIClaims("omnicorp/app", "feature-x")
	for _, k := range []string{"environment", "environment_protected", "deployment_tier", "environment_action"} {
		delete(noEnv, k)
	}
	for _, tc := range []struct {
		name, auth string
		want       bool
	}{
		{"unprotected branch, no environment: control", "Bearer " + gl.Mint(noEnv), false},
		{"unprotected branch, protected environment production", mint(true), true},
		{"unprotected branch, UNprotected environment production", mint(false), false},
	} {
		s.expectReached(t, tc.name, "PUT", path, tc.auth, tc.want)
	}
}

// TestTokenNeverReachesBlobServer: the public endpoints kept the caller's
// Authorization header, and the blob server serves public-keys.
func TestTokenNeverReachesBlobServer(t *testing.T) {
	gh := identitytest.NewIssuer(t)
	s := newAttackStack(t, "../../policies", gh.Config("github", identity.ClaimsGitHubActions))
	tok := "Bearer " + gh.Mint(identitytest.GitHubActionsClaims("omnicorp/app", "refs/heads/main"))
	for _, path := range []string{"/_flakegate/public-keys", "/omnicorp/app/nix-cache-info"} {
		status, reached := s.do(t, "GET", path, tok)
		s.up.mu.Lock()
		got := s.up.header.Get("Authorization")
		s.up.mu.Unlock()
		t.Logf("GET %-28s -> %d (upstream reached: %v), Authorization seen upstream: %q", path, status, reached, trimTok(got))
		if reached && got != "" {
			t.Errorf("GET %s: the caller's token reached the blob server", path)
		}
	}
}

func trimTok(s string) string {
	if len(s) > 24 {
		return s[:24] + "…"
	}
	return s
}

// TestRequestTargetTricksHold sends raw HTTP/1.1 request targets and
// headers meant to make the gate decide on one flake while the handler
// serves another (a CI job of omnicorp/app may push only omnicorp/app and
// may not read omnicorp/super-duper-secure). It passes when every request
// that reaches the handler is one the token may make there.
func TestRequestTargetTricksHold(t *testing.T) {
	gh := identitytest.NewIssuer(t)
	s := newAttackStack(t, "../../policies", gh.Config("github", identity.ClaimsGitHubActions))
	tok := gh.Mint(identitytest.GitHubActionsClaims("omnicorp/app", "refs/heads/main"))
	basic := "Basic " + base64.StdEncoding.EncodeToString([]byte("flakegate:"+tok))
	const H = "0a9g8mz2ck6lw5yyz3bh3nxa0cacp2v1"
	const F = "1b3vc2hcrpjbxkj6qsmkkr5x3ahd2qkmqw3bzwaqwy4mw0smi0dd"
	reqs := []struct{ line, extra string }{
		{"PUT /omnicorp/other/" + H + ".narinfo", ""}, // control
		{"PUT /omnicorp/app/../other/" + H + ".narinfo", ""},
		{"PUT /omnicorp/app/%2e%2e/other/" + H + ".narinfo", ""},
		{"PUT /omnicorp/app/%2E%2E%2Fother/" + H + ".narinfo", ""},
		{"PUT /omnicorp/app/%252e%252e/other/" + H + ".narinfo", ""},
		{"PUT /omnicorp/app/%C0%AE%C0%AE/other/" + H + ".narinfo", ""},
		{"PUT //omnicorp//other//" + H + ".narinfo", ""},
		{"PUT /OmniCorp/Other/" + H + ".narinfo", ""},
		{"PUT /omnicorp/other/" + H + ".narinfo/", ""},
		{"PUT /omnicorp/other;app/" + H + ".narinfo", ""},
		{"PUT /omnicorp/app;/../other/" + H + ".narinfo", ""},
		{"PUT http://cache.example.com/omnicorp/other/" + H + ".narinfo", ""},
		{"PUT http://cache.example.com/omnicorp/app/../other/" + H + ".narinfo", ""},
		{"PUT http:/omnicorp/other/" + H + ".narinfo", ""},
		{"PUT http:omnicorp/other/" + H + ".narinfo", ""},
		{"PUT /omnicorp/app/" + H + ".narinfo%23/../../../other/" + H + ".narinfo", ""},
		{"PUT /omnicorp/other/" + H + ".narinfo#/../../app/" + H + ".narinfo", ""},
		{"PUT /omnicorp/other/" + H + ".narinfo%3F/../../app/" + H + ".narinfo", ""},
		{"PUT /omnicorp/app/" + H + ".narinfo?/../../other/" + H + ".narinfo", ""},
		{"PUT /omnicorp/app\\..\\other/" + H + ".narinfo", ""},
		{"PUT /omnicorp/app/nar/../../other/nar/" + F + ".nar", ""},
		{"PUT /nar/" + F + ".nar", ""},
		{"put /omnicorp/app/" + H + ".narinfo", ""},
		{"PUT /omnicorp/other/" + H + ".narinfo", "X-Flakegate-Subject: github:omnicorp/other@refs/heads/main\r\nx_flakegate_readable: omnicorp/other\r\n"},
		{"PUT /omnicorp/other/" + H + ".narinfo", "X-Forwarded-Host: omnicorp-app.example.com\r\nX-Original-URL: /omnicorp/app/" + H + ".narinfo\r\n"},
		{"GET /omnicorp/super-duper-secure/" + H + ".narinfo", ""}, // control
		{"GET /omnicorp/app/../super-duper-secure/" + H + ".narinfo", ""},
		{"GET /Omnicorp/Super-Duper-Secure/" + H + ".narinfo", ""},
		{"GET /omnicorp/super-duper-secure%2F" + H + ".narinfo", ""},
		{"GET /omnicorp/%73uper-duper-secure/" + H + ".narinfo", ""},
	}
	for _, auth := range []string{"Authorization: " + basic, "authorization: bearer " + tok, "Authorization:   Bearer " + tok + "  "} {
		for _, rq := range reqs {
			s.mu.Lock()
			s.seen = nil
			s.mu.Unlock()
			status := rawRequest(t, s.srv.Listener.Addr().String(), rq.line+" HTTP/1.1\r\nHost: cache.example.com\r\n"+auth+"\r\n"+rq.extra+"Content-Length: 0\r\nConnection: close\r\n\r\n")
			s.mu.Lock()
			seen := append([]string(nil), s.seen...)
			s.mu.Unlock()
			t.Logf("%-100.100s -> %s reached=%q", rq.line, status, seen)
			for _, got := range seen {
				method, path, _ := strings.Cut(got, " ")
				rt, err := route.Parse(method, path)
				switch {
				case err != nil:
					// the handler answers its own 4xx
				case rt.Action == route.ActionPush && rt.Flake.String() != "omnicorp/app":
					t.Errorf("%s: a push reached the handler for %s", rq.line, rt.Flake)
				case rt.Action == route.ActionRead && rt.Flake.String() == "omnicorp/super-duper-secure":
					t.Errorf("%s: a read reached the handler for %s", rq.line, rt.Flake)
				}
			}
		}
	}
	// Two Authorization headers: never read as the first one.
	for _, two := range []string{
		"Authorization: Bearer " + tok + "\r\nAuthorization: Bearer x\r\n",
		"Authorization: \r\nAuthorization: Bearer " + tok + "\r\n",
	} {
		status := rawRequest(t, s.srv.Listener.Addr().String(), "PUT /omnicorp/app/"+H+".narinfo HTTP/1.1\r\nHost: c\r\n"+two+"Content-Length: 0\r\nConnection: close\r\n\r\n")
		t.Logf("two Authorization headers -> %s", status)
		if !strings.Contains(status, " 401 ") {
			t.Errorf("two Authorization headers: %s, want 401", status)
		}
	}
}

// rawRequest writes req on a fresh connection and returns the status line.
func rawRequest(t *testing.T, addr, req string) string {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return "no answer: " + err.Error()
	}
	return strings.TrimSpace(line)
}

// expectReached sends the request and fails the test unless it reached
// the blob server exactly when want says (logging what happened).
func (s *attackStack) expectReached(t *testing.T, name, method, path, auth string, want bool) {
	t.Helper()
	status, reached := s.do(t, method, path, auth)
	t.Logf("%-55s %s %s -> %d (upstream reached: %v)", name, method, path, status, reached)
	if reached != want {
		t.Errorf("%s: reached the blob server = %v, want %v", name, reached, want)
	}
}

// shippedPolicyWith is a policy directory of the shipped rules (and their
// tests) with flakes as its flakes.yaml.
func shippedPolicyWith(t *testing.T, flakes string) string {
	t.Helper()
	dir := t.TempDir()
	for _, f := range []string{"flakegate.rego", "flakegate_test.rego"} {
		b, err := os.ReadFile(filepath.Join("../../policies", f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, f), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "flakes.yaml"), []byte(flakes), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}
