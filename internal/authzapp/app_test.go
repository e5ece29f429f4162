package authzapp

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"sigs.k8s.io/yaml"

	"github.com/flakegate/flakegate/internal/authz"
	"github.com/flakegate/flakegate/internal/authz/authztest"
	"github.com/flakegate/flakegate/internal/identity"
	"github.com/flakegate/flakegate/internal/identity/identitytest"
	"github.com/flakegate/flakegate/internal/route"
	"github.com/flakegate/flakegate/internal/serve"

	"github.com/flakegate/flakegate/internal/testutil"
)

// testService is a real App on loopback with real issuers (JWKS over
// HTTP), the authz testdata policy and a fake owners endpoint.
type testService struct {
	github, idp *identitytest.Issuer
	app         *App
	grpcAddr    string
	httpURL     string
	client      authv3.AuthorizationClient
	health      healthpb.HealthClient
	logs        *testutil.LogBuffer
	stop        context.CancelFunc
	done        chan error
	httpTLS     serve.TLSFiles // set by a setup function: HTTP listener over TLS
	idpOrg      string         // set by a setup function: the idp's fixed org (no org_claim)
}

const (
	testHash   = "0c6kzph7l0dcbfmjap64f0czdafn3b7x"
	testFile   = "1w1fff338fvdw53sqgamddn1b2xgds473pv6y13gizdbqjv4i5p3.nar.zst"
	secondHash = "1c6kzph7l0dcbfmjap64f0czdafn3b7x" // owners endpoint fails for it

	// testPolicies is the authz core's test policy.
	testPolicies = "../authz/testdata/policy"
)

func writeIssuersFile(t *testing.T, dir string, entries ...identity.IssuerConfig) string {
	t.Helper()
	b, err := yaml.Marshal(identity.Config{Issuers: entries})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "issuers.yaml")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func startService(t *testing.T) *testService {
	t.Helper()
	return startServiceWith(t, testPolicies)
}

// startServiceWith starts the service with the policies; setup, if
// given, runs before it starts (with the test issuers made).
func startServiceWith(t *testing.T, policies string, setup ...func(*testService)) *testService {
	t.Helper()
	ts := &testService{
		github: identitytest.NewIssuer(t),
		idp:    identitytest.NewIssuer(t, identitytest.WithAlg("ES256")),
		logs:   &testutil.LogBuffer{},
		done:   make(chan error, 1),
	}
	for _, f := range setup {
		f(ts)
	}
	idpCfg := ts.idp.Config("idp", identity.ClaimsOIDC)
	idpCfg.OrgClaim, idpCfg.Orgs = "org", []string{"omnicorp", "evilcorp"}
	if ts.idpOrg != "" {
		idpCfg.Orgs = nil
		idpCfg.OrgClaim, idpCfg.Org = "", ts.idpOrg
	}
	issuers := writeIssuersFile(t, t.TempDir(), identitytest.WithOrgs(ts.github.Config("github", identity.ClaimsGitHubActions), "omnicorp", "evilcorp"), idpCfg)
	owners := authztest.NewFakeOwners(t, map[string][]string{
		"/owners/narinfo/" + testHash: {"evilcorp/tool", "omnicorp/app"},
		"/owners/nar/" + testFile:     {},
	})

	cfg := DefaultConfig()
	cfg.Listen, cfg.HTTPListen = "127.0.0.1:0", "127.0.0.1:0"
	cfg.Policies, cfg.Issuers, cfg.OwnersURL = policies, issuers, owners.URL
	cfg.ShutdownTimeout = 5 * time.Second
	cfg.HTTPTLS = ts.httpTLS
	ctx, cancel := context.WithCancel(context.Background())
	ts.stop = cancel
	log := slog.New(slog.NewJSONHandler(ts.logs, nil))
	app, err := New(ctx, cfg, log)
	if err != nil {
		cancel()
		t.Fatalf("New: %v", err)
	}
	ts.app = app
	gl, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		t.Fatal(err)
	}
	hl, err := net.Listen("tcp", cfg.HTTPListen)
	if err != nil {
		t.Fatal(err)
	}
	ts.grpcAddr, ts.httpURL = gl.Addr().String(), "http://"+hl.Addr().String()
	if cfg.HTTPTLS.Enabled() {
		ts.httpURL = "https://" + hl.Addr().String()
	}
	go func() { ts.done <- app.Serve(ctx, gl, hl) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-ts.done:
		case <-time.After(10 * time.Second):
			t.Error("service did not stop")
		}
	})

	conn, err := grpc.NewClient(ts.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	ts.client = authv3.NewAuthorizationClient(conn)
	ts.health = healthpb.NewHealthClient(conn)
	ts.waitServing(t)
	return ts
}

func (ts *testService) waitServing(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		resp, err := ts.health.Check(ctx, &healthpb.HealthCheckRequest{Service: authz.AuthorizationService})
		cancel()
		if err == nil && resp.GetStatus() == healthpb.HealthCheckResponse_SERVING {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("service not SERVING: %v %v", resp, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// check asks the service over gRPC about one request, failing the test if
// the call itself fails.
func (ts *testService) check(t *testing.T, method, path, authorization string) *authv3.CheckResponse {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := ts.client.Check(ctx, authztest.CheckRequest(method, path, authorization))
	if err != nil {
		t.Fatalf("Check %s %s: %v", method, path, err)
	}
	return resp
}

func TestServiceGRPC(t *testing.T) {
	ts := startService(t)
	ciMain := ts.github.Mint(identitytest.GitHubActionsClaims("omnicorp/app", "refs/heads/main"))
	ciFeature := ts.github.Mint(identitytest.GitHubActionsClaims("omnicorp/app", "refs/heads/feature"))
	mallory := ts.github.Mint(identitytest.GitHubActionsClaims("evilcorp/tool", "refs/heads/main"))
	alice := ts.idp.Mint(func() map[string]any {
		c := identitytest.OIDCUserClaims("alice", "trusted")
		c["org"] = "omnicorp"
		return c
	}())
	expired := ts.github.Mint(identitytest.GitHubActionsClaims("omnicorp/app", "refs/heads/main"),
		identitytest.Lifetime(-10*time.Minute))
	foreignKey := ts.github.Mint(identitytest.GitHubActionsClaims("omnicorp/app", "refs/heads/main"),
		identitytest.SignWith(identitytest.NewKey(t, "RS256")))
	netrc := func(tok string) string {
		return "Basic " + base64.StdEncoding.EncodeToString([]byte("nix:"+tok))
	}
	narinfo := "/omnicorp/app/" + testHash + ".narinfo"

	tests := []struct {
		name        string
		method      string
		path        string
		auth        string
		wantStatus  int // 200 = allowed
		wantSubject string
		wantBody    string // substring of a denied body
	}{
		{"push by the flake's CI on main", "PUT", narinfo, "Bearer " + ciMain, 200, "github:omnicorp/app@refs/heads/main", ""},
		{"push NAR by the flake's CI via netrc", "PUT", "/omnicorp/app/nar/" + testFile, netrc(ciMain), 200, "github:omnicorp/app@refs/heads/main", ""},
		{"push from an unprotected ref", "PUT", narinfo, "Bearer " + ciFeature, 403, "", "push requires a protected ref"},
		{"read by another org", "GET", narinfo, "Bearer " + mallory, 404, "", "not found"},
		{"read without a token", "HEAD", narinfo, "", 401, "", "authentication required"},
		{"expired token", "GET", narinfo, "Bearer " + expired, 401, "", "token expired (issuer github): run flakegate login (or, in CI, exchange a fresh job token"},
		{"token signed by a foreign key", "GET", narinfo, "Bearer " + foreignKey, 401, "", "invalid token"},
		{"garbage token", "GET", narinfo, "Bearer not.a.jwt", 401, "", "invalid token"},
		{"user of a second issuer reads a readers-only flake", "GET", "/omnicorp/super-duper-secure/" + testHash + ".narinfo", netrc(alice), 200, "oidc:alice", ""},
		{"CI of the org cannot read a readers-only flake", "GET", "/omnicorp/super-duper-secure/" + testHash + ".narinfo", "Bearer " + ciMain, 404, "", "not found"},
		{"union read allowed via the second owner", "GET", "/" + testHash + ".narinfo", "Bearer " + alice, 200, "oidc:alice", ""},
		{"union read of an owner-less NAR", "GET", "/nar/" + testFile, "Bearer " + alice, 404, "", "not found"},
		{"union read while the owners lookup fails", "GET", "/" + secondHash + ".narinfo", "Bearer " + alice, 503, "", "unavailable"},
		{"unknown path", "GET", "/robots.txt", "", 404, "", "no such resource"},
		{"public JWKS", "GET", "/_flakegate/jwks", "", 200, "anonymous", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := ts.check(t, tt.method, tt.path, tt.auth)
			if tt.wantStatus == 200 {
				ok := resp.GetOkResponse()
				if ok == nil || resp.GetStatus().GetCode() != 0 {
					t.Fatalf("want allowed, got %v", resp)
				}
				if got := authztest.HeaderValue(ok.GetHeaders(), route.SubjectHeader); got != tt.wantSubject {
					t.Errorf("%s = %q, want %q", route.SubjectHeader, got, tt.wantSubject)
				}
				return
			}
			d := resp.GetDeniedResponse()
			if d == nil || resp.GetStatus().GetCode() == 0 {
				t.Fatalf("want denied %d, got %v", tt.wantStatus, resp)
			}
			if got := int(d.GetStatus().GetCode()); got != tt.wantStatus {
				t.Errorf("status %d, want %d (body %q)", got, tt.wantStatus, d.GetBody())
			}
			if !strings.Contains(d.GetBody(), tt.wantBody) {
				t.Errorf("body %q, want it to contain %q", d.GetBody(), tt.wantBody)
			}
			if challenge := authztest.HeaderValue(d.GetHeaders(), "www-authenticate"); (challenge != "") != (tt.wantStatus == 401) {
				t.Errorf("www-authenticate %q on a %d", challenge, tt.wantStatus)
			}
		})
	}

	t.Run("decision log", func(t *testing.T) {
		lines := decisionLines(t, ts.logs.String())
		if len(lines) < len(tests) {
			t.Fatalf("%d decision lines for %d checks", len(lines), len(tests))
		}
		for _, tok := range []string{ciMain, ciFeature, mallory, alice, expired, foreignKey} {
			sig := tok[strings.LastIndex(tok, ".")+1:]
			if strings.Contains(ts.logs.String(), sig) {
				t.Fatal("the log contains a token")
			}
		}
		var union map[string]any
		for _, l := range lines {
			if l["path"] == "/"+testHash+".narinfo" && l["allow"] == true {
				union = l
			}
			for _, k := range []string{"subject", "provider", "action", "flake", "kind", "allow", "status", "reason", "policy_revision", "latency_us", "union_owner"} {
				if _, ok := l[k]; !ok {
					t.Errorf("decision line without %q: %v", k, l)
				}
			}
		}
		if union == nil {
			t.Fatal("no decision line for the allowed union read")
		}
		if union["union_owner"] != "omnicorp/app" || union["subject"] != "oidc:alice" || union["provider"] != "oidc" ||
			union["policy_revision"] != ts.app.PolicyRevision() || union["status"] != float64(200) {
			t.Errorf("union decision line: %v", union)
		}
	})

	t.Run("metrics and healthz", func(t *testing.T) {
		body := httpGet(t, ts.httpURL+"/metrics", 200)
		for _, want := range []string{
			`flakegate_authz_decisions_total{action="push",result="allow"} 2`,
			`flakegate_authz_decisions_total{action="read",result="unauthenticated"} 4`,
			`flakegate_authz_decisions_total{action="read",result="error"} 1`,
			`flakegate_authz_check_duration_seconds_count{action="read"}`,
			`flakegate_authz_owners_lookups_total{result="error"} 1`,
		} {
			if !strings.Contains(body, want) {
				t.Errorf("/metrics lacks %s", want)
			}
		}
		var h healthAnswer
		if err := json.Unmarshal([]byte(httpGet(t, ts.httpURL+"/healthz", 200)), &h); err != nil {
			t.Fatal(err)
		}
		if h.Status != "serving" || h.PolicyRevision == "" || h.PolicyRevision != ts.app.PolicyRevision() {
			t.Errorf("healthz %+v", h)
		}
	})

	t.Run("health service", func(t *testing.T) {
		for _, svc := range []string{"", authz.AuthorizationService} {
			resp, err := ts.health.Check(context.Background(), &healthpb.HealthCheckRequest{Service: svc})
			if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
				t.Errorf("health %q: %v %v", svc, resp, err)
			}
		}
	})
}

// TestServiceShippedPolicies runs the omnicorp scenario of DESIGN.md through
// the real service with the shipped policies/ (so the input authz builds is
// the one those policies are written for).
func TestServiceShippedPolicies(t *testing.T) {
	const shipped = "../../policies"
	if _, err := os.Stat(filepath.Join(shipped, "flakegate.rego")); err != nil {
		t.Skipf("shipped policies not found: %v", err)
	}
	ts := startServiceWith(t, shipped)
	user := func(name string) string {
		c := identitytest.OIDCUserClaims(name)
		c["org"] = "omnicorp"
		return "Bearer " + ts.idp.Mint(c)
	}
	ci := func(repo, ref string) string {
		return "Bearer " + ts.github.Mint(identitytest.GitHubActionsClaims(repo, ref))
	}
	secure := "/omnicorp/super-duper-secure/" + testHash + ".narinfo"
	devenv := "/omnicorp/dev-environments/nar/" + testFile
	tests := []struct {
		name       string
		method     string
		path, auth string
		wantStatus int
	}{
		{"trusted user alice pulls super-duper-secure", "GET", secure, user("alice"), 200},
		{"omnicorp user carol may not pull super-duper-secure", "GET", secure, user("carol"), 404},
		{"omnicorp CI of another repo may not pull super-duper-secure", "GET", secure, ci("omnicorp/app", "refs/heads/main"), 404},
		{"omnicorp user carol pulls dev-environments", "GET", devenv, user("carol"), 200},
		{"another org's CI may not pull dev-environments", "GET", devenv, ci("evilcorp/tool", "refs/heads/main"), 404},
		{"anonymous pull", "GET", devenv, "", 401},
		{"dev-environments CI pushes from main", "PUT", devenv, ci("omnicorp/dev-environments", "refs/heads/main"), 200},
		{"dev-environments CI may not push from a feature branch", "PUT", devenv, ci("omnicorp/dev-environments", "refs/heads/feature"), 403},
		{"a user may not push", "PUT", devenv, user("alice"), 403},
		{"nix-cache-info for everyone", "GET", "/nix-cache-info", "", 200},
		{"union read via omnicorp/app by an omnicorp user", "GET", "/" + testHash + ".narinfo", user("carol"), 200},
		{"token exchange by a user", "POST", "/_flakegate/token", user("alice"), 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := ts.check(t, tt.method, tt.path, tt.auth)
			got := 200
			if d := resp.GetDeniedResponse(); d != nil {
				got = int(d.GetStatus().GetCode())
			}
			if got != tt.wantStatus {
				t.Errorf("status %d, want %d: %v", got, tt.wantStatus, resp)
			}
		})
	}
}

func TestServiceGracefulStop(t *testing.T) {
	ts := startService(t)
	ts.stop()
	select {
	case err := <-ts.done:
		if err != nil {
			t.Fatalf("Serve returned %v after a clean stop", err)
		}
		ts.done <- nil // for the cleanup
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return after cancel")
	}
	if c, err := net.DialTimeout("tcp", ts.grpcAddr, time.Second); err == nil {
		c.Close()
		t.Error("gRPC listener still accepts connections after stop")
	}
	if !strings.Contains(ts.logs.String(), `"msg":"authz stopped"`) {
		t.Error("no stop log line")
	}
}

func decisionLines(t *testing.T, logs string) []map[string]any {
	t.Helper()
	var out []map[string]any
	sc := bufio.NewScanner(strings.NewReader(logs))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("log line is not JSON: %q", sc.Text())
		}
		if m["msg"] == "decision" {
			out = append(out, m)
		}
	}
	return out
}

func httpGet(t *testing.T, url string, wantStatus int) string {
	t.Helper()
	status, body := testutil.Get(t, url, 10*time.Second)
	if status != wantStatus {
		t.Fatalf("GET %s: %d %s, want %d: %s", url, status, http.StatusText(status), wantStatus, body)
	}
	return body
}

// Revocation is wired whatever else is configured: without the token
// exchange, denylist.yaml in the policy directory still refuses a revoked
// subject (401), and the exchange's paths answer that it is off.
func TestRevocationWithoutExchange(t *testing.T) {
	dir := copyDir(t, testPolicies)
	if err := os.WriteFile(filepath.Join(dir, "denylist.yaml"), []byte("subjects:\n  - github:omnicorp/app\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	ts := startServiceWith(t, dir)
	revoked := ts.github.Mint(identitytest.GitHubActionsClaims("omnicorp/app", "refs/heads/main"))
	other := ts.github.Mint(identitytest.GitHubActionsClaims("omnicorp/web", "refs/heads/main"))
	narinfo := "/omnicorp/app/" + testHash + ".narinfo"

	d := ts.check(t, "GET", narinfo, "Bearer "+revoked).GetDeniedResponse()
	if d == nil || d.GetStatus().GetCode() != 401 || !strings.Contains(d.GetBody(), "revoked") {
		t.Fatalf("revoked subject: %v", d)
	}
	if resp := ts.check(t, "GET", "/omnicorp/web/"+testHash+".narinfo", "Bearer "+other); resp.GetOkResponse() == nil {
		t.Fatalf("another subject: %v", resp)
	}
	for _, path := range []string{"/_flakegate/token", "/_flakegate/jwks"} {
		if body := httpGet(t, ts.httpURL+path, http.StatusNotFound); !strings.Contains(body, "not enabled") {
			t.Errorf("%s with the exchange off: %s", path, body)
		}
	}
}

// TestIdentityProviderOutage: while an IdP's JWKS endpoint is down, a
// valid token of that IdP gets 503 with Retry-After 30 (not 401: it is an
// outage, not a bad token), /healthz (still 200) names the issuer as
// degraded and flakegate_identity_issuer_keys_ok is 0; once the endpoint
// answers again (the background retry), the same token is decided
// normally and the issuer is healthy again.
func TestIdentityProviderOutage(t *testing.T) {
	ts := startServiceWith(t, testPolicies, func(ts *testService) { ts.github.FailJWKS(http.StatusServiceUnavailable) })
	tok := ts.github.Mint(identitytest.GitHubActionsClaims("omnicorp/app", "refs/heads/main"))
	narinfo := "/omnicorp/app/" + testHash + ".narinfo"

	d := ts.check(t, "PUT", narinfo, "Bearer "+tok).GetDeniedResponse()
	if d.GetStatus().GetCode() != 503 || authztest.HeaderValue(d.GetHeaders(), "retry-after") != "30" ||
		authztest.HeaderValue(d.GetHeaders(), "www-authenticate") != "" ||
		d.GetBody() != "identity provider keys unavailable (issuer github): the token cannot be verified right now, try again later\n" {
		t.Fatalf("token of an IdP whose JWKS is down: %v", d)
	}
	health := func() healthAnswer {
		var h healthAnswer
		if err := json.Unmarshal([]byte(httpGet(t, ts.httpURL+"/healthz", 200)), &h); err != nil {
			t.Fatal(err)
		}
		return h
	}
	h := health()
	if h.Status != "serving" || len(h.DegradedIssuers) != 1 || h.DegradedIssuers[0].Name != "github" ||
		h.DegradedIssuers[0].Issuer != ts.github.Issuer() || h.DegradedIssuers[0].KeysOK || !strings.Contains(h.DegradedIssuers[0].Error, "503") {
		t.Errorf("healthz during the outage: %+v", h)
	}
	metrics := httpGet(t, ts.httpURL+"/metrics", 200)
	for _, want := range []string{`flakegate_identity_issuer_keys_ok{issuer="github"} 0`, `flakegate_identity_issuer_keys_ok{issuer="idp"} 1`} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}

	ts.github.FailJWKS(0)
	deadline := time.Now().Add(15 * time.Second)
	for len(health().DegradedIssuers) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("issuer still degraded after the JWKS endpoint recovered: %+v", health())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if resp := ts.check(t, "PUT", narinfo, "Bearer "+tok); resp.GetOkResponse() == nil {
		t.Errorf("after the recovery: %v", resp)
	}
	if raw := httpGet(t, ts.httpURL+"/healthz", 200); strings.Contains(raw, "degraded_issuers") {
		t.Errorf("healthz names degraded issuers after the recovery: %s", raw)
	}
	if metrics := httpGet(t, ts.httpURL+"/metrics", 200); !strings.Contains(metrics, `flakegate_identity_issuer_keys_ok{issuer="github"} 1`) {
		t.Error("flakegate_identity_issuer_keys_ok of github is not 1 after the recovery")
	}
}

// With -tls-cert/-tls-key the HTTP listener (token exchange, /healthz)
// speaks TLS and HTTP/2 only.
func TestServiceHTTPOverTLS(t *testing.T) {
	dir := t.TempDir()
	files := serve.TLSFiles{Cert: filepath.Join(dir, "tls.crt"), Key: filepath.Join(dir, "tls.key")}
	ca := testutil.NewCA(t, "authz test CA")
	ca.Issue(t, files.Cert, files.Key, "127.0.0.1")
	ts := startServiceWith(t, testPolicies, func(ts *testService) { ts.httpTLS = files })
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool()}, ForceAttemptHTTP2: true}}
	resp, err := c.Get(ts.httpURL + "/healthz")
	if err != nil {
		t.Fatalf("healthz over TLS: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.ProtoMajor != 2 {
		t.Fatalf("healthz over TLS: %d HTTP/%d, want 200 over HTTP/2", resp.StatusCode, resp.ProtoMajor)
	}
	if resp, err := http.Get("http://" + strings.TrimPrefix(ts.httpURL, "https://") + "/healthz"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == 200 {
			t.Fatal("plain HTTP answered 200 on the TLS listener")
		}
	}
}

// A single-company IdP whose tokens carry no org claim, with a fixed org in
// the issuers file (examples/issuers.yaml's corp entry): under the shipped
// default policy its users read their org's flakes and no other org's,
// and a token that claims another org changes nothing.
func TestServiceSingleCompanyIdP(t *testing.T) {
	const shipped = "../../policies"
	ts := startServiceWith(t, shipped, func(ts *testService) { ts.idpOrg = "omnicorp" })
	noOrg := "Bearer " + ts.idp.Mint(identitytest.OIDCUserClaims("carol"))
	claimsEvil := identitytest.OIDCUserClaims("carol")
	claimsEvil["org"] = "evilcorp"
	evil := "Bearer " + ts.idp.Mint(claimsEvil)
	for _, c := range []struct {
		name, path, auth string
		want             int
	}{
		{"user without org claim reads her org's flake", "/omnicorp/dev-environments/nar/" + testFile, noOrg, 200},
		{"user without org claim reads nothing of another org", "/evilcorp/tool/nar/" + testFile, noOrg, 404},
		{"a token claiming another org reads nothing of it", "/evilcorp/tool/nar/" + testFile, evil, 404},
		{"a token claiming another org is still of the fixed org", "/omnicorp/dev-environments/nar/" + testFile, evil, 200},
	} {
		t.Run(c.name, func(t *testing.T) {
			resp := ts.check(t, "GET", c.path, c.auth)
			got := 200
			if d := resp.GetDeniedResponse(); d != nil {
				got = int(d.GetStatus().GetCode())
			}
			if got != c.want {
				t.Errorf("status %d, want %d: %v", got, c.want, resp)
			}
		})
	}
}
