package hostapp

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/flakegate/flakegate/internal/identity"
	"github.com/flakegate/flakegate/internal/identity/identitytest"
	"github.com/flakegate/flakegate/internal/route"
	"github.com/flakegate/flakegate/internal/testutil"
)

// start runs the single-host process with the shipped policies and one
// users' issuer until the test ends; internal says whether the internal
// listener is on. It returns the public and internal URLs and a user token.
func start(t *testing.T, internal bool) (public, internalURL, token string, logs *testutil.LogBuffer) {
	t.Helper()
	dir := t.TempDir()
	users := identitytest.NewIssuer(t)
	ic := users.Config("sso", identity.ClaimsOIDC)
	ic.OrgClaim = "org"
	cfg := testConfig(t, dir, ic)
	if internal {
		cfg.Blob.InternalListen = "127.0.0.1:0"
	}
	public, internalURL, logs = run(t, cfg)
	c := identitytest.OIDCUserClaims("alice")
	c["org"] = "omnicorp"
	return public, internalURL, users.Mint(c), logs
}

// testConfig is the single host on a data directory in dir, internal
// listener off, the shipped policies and these issuers.
func testConfig(t *testing.T, dir string, issuers ...identity.IssuerConfig) Config {
	t.Helper()
	b, err := yaml.Marshal(identity.Config{Issuers: issuers})
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "issuers.yaml")
	if err := os.WriteFile(file, b, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.Blob.DataDir = filepath.Join(dir, "data")
	cfg.Blob.Listen, cfg.Blob.InternalListen = "127.0.0.1:0", ""
	cfg.Authz.Policies, cfg.Authz.Issuers = "../../policies", file
	return cfg
}

// run runs the single host until the test ends and returns its URLs.
func run(t *testing.T, cfg Config) (public, internalURL string, logs *testutil.LogBuffer) {
	t.Helper()
	ready := make(chan [2]string, 1)
	cfg.Blob.OnListen = func(p, i string) { ready <- [2]string{p, i} }
	logs = &testutil.LogBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, cfg, slog.New(slog.NewJSONHandler(logs, nil))) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("stopped with %v", err)
		}
	})
	select {
	case a := <-ready:
		public = "http://" + a[0]
		if a[1] != "" {
			internalURL = "http://" + a[1]
		}
	case err := <-done:
		t.Fatalf("did not start: %v\n%s", err, logs.String())
	case <-time.After(30 * time.Second):
		t.Fatal("did not start within 30s")
	}
	return public, internalURL, logs
}

func get(t *testing.T, url, token string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, body := testutil.Do(t, req)
	return resp.StatusCode, body
}

// A union read needs the owners lookup, which the single host serves from
// the blob server's handler in memory: it works with the internal listener
// off (an absent path is the plain 404, not a 503 of a failed lookup), and
// the decision is logged in the process's one log.
func TestUnionReadWithoutInternalListener(t *testing.T) {
	public, internal, token, logs := start(t, false)
	if internal != "" {
		t.Fatalf("internal listener on at %s", internal)
	}
	const absent = "0a9g8mz2ck6lw5yyz3bh3nxa0cacp2v1"
	if st, body := get(t, public+"/"+absent+".narinfo", token); st != http.StatusNotFound || body != route.BodyNotFound {
		t.Fatalf("union read of an absent path: %d %q, want 404 %q", st, body, route.BodyNotFound)
	}
	if st, _ := get(t, public+"/"+absent+".narinfo", ""); st != http.StatusUnauthorized {
		t.Fatalf("union read without a token: %d, want 401", st)
	}
	if st, _ := get(t, public+"/omnicorp/app/nix-cache-info", "garbage"); st != http.StatusOK {
		t.Fatalf("nix-cache-info with a garbage token: %d, want 200", st)
	}
	if !strings.Contains(logs.String(), `"log":"decision"`) || !strings.Contains(logs.String(), `"path":"/`+absent+`.narinfo"`) {
		t.Errorf("no decision log line for the union read:\n%s", logs.String())
	}
}

// The internal listener serves both parts: /healthz (200 while both
// serve), authz's own health under /authz/, one /metrics with the blob
// server's, the gate's and authz's series; the public listener serves none
// of authz's HTTP handler but /_flakegate/.
func TestInternalListenerServesBothParts(t *testing.T) {
	public, internal, token, _ := start(t, true)
	get(t, public+"/omnicorp/app/"+strings.Repeat("0", 32)+".narinfo", token)
	if st, body := get(t, internal+"/healthz", ""); st != http.StatusOK {
		t.Errorf("/healthz: %d %q", st, body)
	}
	if st, body := get(t, internal+"/authz/healthz", ""); st != http.StatusOK || !strings.Contains(body, `"policy_revision"`) {
		t.Errorf("/authz/healthz: %d %q", st, body)
	}
	_, metrics := get(t, internal+"/metrics", "")
	for _, m := range []string{"flakegate_authz_decisions_total", "flakegate_gate_checks_total", "flakegate_blobserver_requests_total", "flakegate_policy_", "go_goroutines"} {
		if !strings.Contains(metrics, m) {
			t.Errorf("%s missing from /metrics", m)
		}
	}
	for _, path := range []string{"/metrics", "/healthz", "/authz/healthz"} {
		if st, body := get(t, public+path, token); st == http.StatusOK {
			t.Errorf("public listener serves %s: %d %q", path, st, body)
		}
	}
}

// A scoped (deploy) token on the single host: its closure is asked from the
// blob server's handler in memory (internal listener off), so a read in its
// flake is decided (404 for a path outside the closure, not the 503 of a
// failed lookup), another flake is the same 404, and a push is 403.
func TestScopedTokenInProcess(t *testing.T) {
	dir := t.TempDir()
	gh := identitytest.NewIssuer(t)
	cfg := testConfig(t, dir, gh.Config("github", identity.ClaimsGitHubActions))
	cfg.Authz.Exchange.PublicURL, cfg.Authz.Exchange.KeyDir = identitytest.DefaultAudience, filepath.Join(dir, "keys")
	public, _, logs := run(t, cfg)
	const root, outside = "0a9g8mz2ck6lw5yyz3bh3nxa0cacp2v1", "1a9g8mz2ck6lw5yyz3bh3nxa0cacp2v1"
	req, err := http.NewRequest(http.MethodPost, public+"/_flakegate/token",
		strings.NewReader(`{"scope": {"flake": "omnicorp/app", "closure": "/nix/store/`+root+`-system"}}`))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+gh.Mint(identitytest.GitHubActionsClaims("omnicorp/app", "refs/heads/main")))
	resp, body := testutil.Do(t, req)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("mint a scoped token: %d %s", resp.StatusCode, body)
	}
	var tok struct{ Token string }
	if err := json.Unmarshal([]byte(body), &tok); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		method, path string
		want         int
	}{
		{"GET", "/omnicorp/app/" + root + ".narinfo", 404}, // in scope, not pushed
		{"GET", "/" + outside + ".narinfo", 404},
		{"GET", "/omnicorp/other/" + root + ".narinfo", 404},
		{"PUT", "/omnicorp/app/" + root + ".narinfo", 403},
	} {
		req, _ := http.NewRequest(c.method, public+c.path, strings.NewReader("x"))
		req.Header.Set("Authorization", "Bearer "+tok.Token)
		resp, body := testutil.Do(t, req)
		if resp.StatusCode != c.want || (c.want == 404 && body != route.BodyNotFound) {
			t.Errorf("%s %s with the scoped token: %d %q, want %d", c.method, c.path, resp.StatusCode, body, c.want)
		}
	}
	if !strings.Contains(logs.String(), `"reason":"outside the token's scope: not in the closure of its roots"`) {
		t.Errorf("no decision made on the closure:\n%s", logs.String())
	}
}
