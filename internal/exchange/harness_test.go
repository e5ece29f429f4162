package exchange_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
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
	"sigs.k8s.io/yaml"

	"github.com/flakegate/flakegate/internal/authzapp"
	"github.com/flakegate/flakegate/internal/exchange"
	"github.com/flakegate/flakegate/internal/identity"
	"github.com/flakegate/flakegate/internal/identity/identitytest"
	"github.com/flakegate/flakegate/internal/login"
	"github.com/flakegate/flakegate/internal/testoidc"

	"github.com/flakegate/flakegate/internal/testutil"
)

// publicURL is the cache's public URL in these tests: iss and aud of cache
// tokens, and the audience CI tokens are minted for.
const publicURL = identitytest.DefaultAudience

// A store path hash and NAR file name for request paths.
const (
	testHash = "0c6kzph7l0dcbfmjap64f0czdafn3b7x"
	testNar  = "1b2m2y4m3wkkqbmy6fzf7zbyibnbg2wklw7i1xpy4xx3bbxdapgm.nar"
)

// stack is a real authz process (authzapp) on loopback — identity verifier
// with real issuers (a GitHub-Actions-like issuer and an OpenID provider
// with device flow), the shipped policies (a copy, so tests can edit the
// denylist), the token exchange on — reached over gRPC (Check) and HTTP
// (exchange).
type stack struct {
	github    *identitytest.Issuer
	idp       *testoidc.Provider
	policyDir string
	keyDir    string
	app       *authzapp.App
	httpURL   string
	grpcAddr  string
	client    authv3.AuthorizationClient
	logs      *testutil.LogBuffer
}

type stackOptions struct {
	lifetime, maxLifetime time.Duration
	scopedMaxLifetime     time.Duration
	keyCheck              time.Duration
	idpTokenLifetime      time.Duration
	// Listeners made beforehand (the blob server must know authz's
	// addresses before authz knows the blob server's); nil: new ones.
	grpcLn, httpLn net.Listener
	ownersURL      string // default: nothing listens (union reads fail)
}

func startStack(t testing.TB, o stackOptions) *stack {
	t.Helper()
	st := &stack{
		github: identitytest.NewIssuer(t, identitytest.WithAlg("ES256")),
		idp:    testoidc.Start(t, testoidc.Options{IDTokenLifetime: o.idpTokenLifetime}),
		logs:   &testutil.LogBuffer{},
	}
	dir := t.TempDir()
	st.policyDir = filepath.Join(dir, "policies")
	testutil.CopyDir(t, "../../policies", st.policyDir)
	st.keyDir = filepath.Join(dir, "keys")

	users := identity.IssuerConfig{Name: "users", Issuer: st.idp.Issuer, JWKSURL: st.idp.Issuer + "/keys",
		Audience: []string{st.idp.ClientID}, Claims: identity.ClaimsOIDC, OrgClaim: "org", Orgs: []string{"omnicorp", "evilcorp"}}
	b, err := yaml.Marshal(identity.Config{Issuers: []identity.IssuerConfig{
		identitytest.WithOrgs(st.github.Config("github", identity.ClaimsGitHubActions, publicURL), "omnicorp", "evilcorp"), users,
	}})
	if err != nil {
		t.Fatal(err)
	}
	issuers := filepath.Join(dir, "issuers.yaml")
	if err := os.WriteFile(issuers, b, 0o644); err != nil {
		t.Fatal(err)
	}

	cfg := authzapp.DefaultConfig()
	cfg.Listen, cfg.HTTPListen = "127.0.0.1:0", "127.0.0.1:0"
	cfg.Policies, cfg.Issuers = st.policyDir, issuers
	cfg.OwnersURL = "http://127.0.0.1:1" // union reads are not used here
	if o.ownersURL != "" {
		cfg.OwnersURL = o.ownersURL
	}
	cfg.ShutdownTimeout = 5 * time.Second
	cfg.Exchange.PublicURL, cfg.Exchange.KeyDir = publicURL, st.keyDir
	cfg.Exchange.KeyCheckInterval = o.keyCheck
	if o.lifetime != 0 {
		cfg.Exchange.Lifetime = o.lifetime
	}
	if o.maxLifetime != 0 {
		cfg.Exchange.MaxLifetime = o.maxLifetime
	}
	if o.scopedMaxLifetime != 0 {
		cfg.Exchange.ScopedMaxLifetime = o.scopedMaxLifetime
	}
	ctx, cancel := context.WithCancel(context.Background())
	log := slog.New(slog.NewJSONHandler(st.logs, nil))
	app, err := authzapp.New(ctx, cfg, log)
	if err != nil {
		cancel()
		t.Fatalf("authzapp.New: %v", err)
	}
	st.app = app

	gl, hl := o.grpcLn, o.httpLn
	if gl == nil {
		gl, hl = loopbackListeners(t)
	}
	st.grpcAddr, st.httpURL = gl.Addr().String(), "http://"+hl.Addr().String()
	done := make(chan error, 1)
	go func() { done <- app.Serve(ctx, gl, hl) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("authz did not stop")
		}
		if t.Failed() {
			t.Logf("authz logs:\n%s", st.logs.String())
		}
	})
	conn, err := grpc.NewClient(st.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	st.client = authv3.NewAuthorizationClient(conn)
	st.waitHTTP(t)
	return st
}

// loopbackListeners opens authz's gRPC and HTTP listeners.
func loopbackListeners(t testing.TB) (grpcLn, httpLn net.Listener) {
	t.Helper()
	gl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		gl.Close()
		t.Fatal(err)
	}
	return gl, hl
}

func (st *stack) waitHTTP(t testing.TB) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get(st.httpURL + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("authz HTTP not healthy: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// check asks authz about a request the way Envoy does and returns the HTTP
// status the client would get (200 when allowed).
func (st *stack) check(t *testing.T, method, path, authorization string) int {
	t.Helper()
	headers := map[string]string{":authority": "cache.example.com"}
	if authorization != "" {
		headers["authorization"] = authorization
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := st.client.Check(ctx, &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Method: method, Path: path, Headers: headers,
		}},
	}})
	if err != nil {
		t.Fatalf("Check: %v", err)
	}
	if resp.GetOkResponse() != nil && resp.GetStatus().GetCode() == 0 {
		return http.StatusOK
	}
	return int(resp.GetDeniedResponse().GetStatus().GetCode())
}

// readFlake is a read of a narinfo in the flake.
func readFlake(flake string) (string, string) {
	return "GET", "/" + flake + "/" + testHash + ".narinfo"
}

// pushFlake is an upload of a narinfo into the flake.
func pushFlake(flake string) (string, string) {
	return "PUT", "/" + flake + "/" + testHash + ".narinfo"
}

type exchangeResult struct {
	status int
	body   map[string]any
	header http.Header
	resp   exchange.Response
}

// exchange posts to the token endpoint with the given Authorization and body.
func (st *stack) exchange(t testing.TB, authorization, body string) exchangeResult {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, st.httpURL+exchange.TokenPath, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if authorization != "" {
		req.Header.Set("Authorization", authorization)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	r := exchangeResult{status: resp.StatusCode, header: resp.Header}
	if err := json.Unmarshal(raw, &r.body); err != nil {
		t.Fatalf("exchange answer (%d) is not JSON: %q", resp.StatusCode, raw)
	}
	if resp.StatusCode == http.StatusOK {
		if err := json.Unmarshal(raw, &r.resp); err != nil {
			t.Fatal(err)
		}
	}
	return r
}

// mustExchange exchanges an IdP token and returns the cache token answer.
func (st *stack) mustExchange(t testing.TB, idpToken string) exchange.Response {
	t.Helper()
	r := st.exchange(t, bearer(idpToken), "")
	if r.status != http.StatusOK {
		t.Fatalf("exchange: %d %v", r.status, r.body)
	}
	return r.resp
}

// writePolicyFile writes a file into the policy directory atomically (as
// an editor or kubectl would).
func (st *stack) writePolicyFile(t *testing.T, name, content string) {
	t.Helper()
	tmp := filepath.Join(st.policyDir, "."+name+".tmp")
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(st.policyDir, name)); err != nil {
		t.Fatal(err)
	}
}

func bearer(tok string) string { return "Bearer " + tok }

func netrcAuth(tok string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte("flakegate:"+tok))
}

// ghToken mints a GitHub Actions token for repo at ref (5-minute life).
func (st *stack) ghToken(repo, ref string, opts ...identitytest.MintOption) string {
	return st.github.Mint(identitytest.GitHubActionsClaims(repo, ref), opts...)
}

// pollStatus re-checks until the status is want or the timeout passes, and
// returns how long it took.
func (st *stack) pollStatus(t *testing.T, timeout time.Duration, want int, method, path, authorization string) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		got := st.check(t, method, path, authorization)
		if got == want {
			return time.Since(start)
		}
		if time.Since(start) > timeout {
			t.Fatalf("%s %s: status %d, still not %d after %s", method, path, got, want, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func readNetrcPassword(t *testing.T, path, machine string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	tok, ok := login.NetrcPassword(string(b), machine)
	if !ok {
		t.Fatalf("netrc %s has no password for %s:\n%s", path, machine, b)
	}
	return tok
}
