package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/flakegate/flakegate/internal/identity"
	"github.com/flakegate/flakegate/internal/login"
	"github.com/flakegate/flakegate/internal/nixtest"
	"github.com/flakegate/flakegate/internal/testutil"
	"github.com/flakegate/flakegate/test/teststack"
)

// hydraVersion is the Ory Hydra the browser-login test runs against: a
// real OpenID provider without the device grant.
const hydraVersion = "v2.3.0"

// hydraBinary returns the cached Hydra binary, building it (test/hydra,
// its own Go module, so the main module does not carry Hydra's
// dependencies) when FLAKEGATE_BUILD_HYDRA=1 — about 8 minutes on 2 cores
// and a large module download, so never implicitly (not even with
// CI=true). Otherwise a missing binary skips the test, saying how to build it.
func hydraBinary(t *testing.T) string {
	t.Helper()
	home, err := os.UserHomeDir()
	if err != nil {
		t.Skipf("no home directory for the Hydra cache: %v", err)
	}
	bin := filepath.Join(home, ".cache", "flakegate", "hydra-"+hydraVersion)
	if _, err := os.Stat(bin); err == nil {
		return bin
	}
	if os.Getenv("FLAKEGATE_BUILD_HYDRA") != "1" {
		t.Skipf("Ory Hydra %s is not built (%s): run `cd test/hydra && go build -tags sqlite,sqlite_omit_load_extension -o %s github.com/ory/hydra/v2` (about 8 minutes on 2 cores), or set FLAKEGATE_BUILD_HYDRA=1 to build it here", hydraVersion, bin, bin)
	}
	t.Logf("building Ory Hydra %s into %s (FLAKEGATE_BUILD_HYDRA=1)", hydraVersion, bin)
	if err := os.MkdirAll(filepath.Dir(bin), 0o755); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "build", "-tags", "sqlite,sqlite_omit_load_extension", "-o", bin+".tmp", "github.com/ory/hydra/v2")
	cmd.Dir = "../hydra"
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build Hydra: %v\n%s", err, out)
	}
	if err := os.Rename(bin+".tmp", bin); err != nil {
		t.Fatal(err)
	}
	return bin
}

// hydra is a running Hydra with a login and consent app that signs in
// whoever the test says, with an org claim in the ID token.
type hydra struct {
	issuer   string // as Hydra names itself (with the trailing slash)
	public   string
	admin    string
	clientID string
}

func startHydra(t *testing.T, user, org string) *hydra {
	t.Helper()
	bin := hydraBinary(t)
	pub, adm := testutil.FreeAddr(t), testutil.FreeAddr(t)
	h := &hydra{public: "http://" + pub, admin: "http://" + adm, clientID: "flakegate-cli"}

	// The login and consent app: accepts every login as user, grants
	// every requested scope, and puts the org claim in the ID token.
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var redirect string
		var err error
		switch r.URL.Path {
		case "/login":
			redirect, err = h.accept(r.Context(), "login", r.URL.Query().Get("login_challenge"),
				map[string]any{"subject": user, "remember": false})
		case "/consent":
			challenge := r.URL.Query().Get("consent_challenge")
			var req struct {
				RequestedScope    []string `json:"requested_scope"`
				RequestedAudience []string `json:"requested_access_token_audience"`
			}
			if err = h.adminJSON(r.Context(), http.MethodGet, "/admin/oauth2/auth/requests/consent?consent_challenge="+url.QueryEscape(challenge), nil, &req); err == nil {
				redirect, err = h.accept(r.Context(), "consent", challenge, map[string]any{
					"grant_scope": req.RequestedScope, "grant_access_token_audience": req.RequestedAudience,
					"session": map[string]any{"id_token": map[string]any{
						"preferred_username": user, "email": user + "@" + org + ".test", "org": org,
					}},
				})
			}
		default:
			http.NotFound(w, r)
			return
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		http.Redirect(w, r, redirect, http.StatusFound)
	}))
	t.Cleanup(app.Close)

	proc := testutil.StartProcess(t, "hydra", bin, []string{
		"DSN=memory", "SECRETS_SYSTEM=flakegate-e2e-hydra-system-secret-0123456789",
		"URLS_SELF_ISSUER=" + h.public + "/", "URLS_LOGIN=" + app.URL + "/login", "URLS_CONSENT=" + app.URL + "/consent",
		"SERVE_PUBLIC_HOST=127.0.0.1", "SERVE_PUBLIC_PORT=" + strings.Split(pub, ":")[1],
		"SERVE_ADMIN_HOST=127.0.0.1", "SERVE_ADMIN_PORT=" + strings.Split(adm, ":")[1],
		"LOG_LEVEL=warn",
	}, "serve", "all", "--dev")
	proc.WaitHealthy(t, h.admin+"/health/ready", 60*time.Second)
	h.issuer = h.public + "/"
	// Hydra makes RSA-4096 signing keys on first use: tens of seconds on a
	// busy 2-core machine, past its own write timeout, and again for every
	// concurrent first request. Give it ES256 key sets first (the ID token
	// is signed with the set's key), then check they are served.
	for _, set := range []string{"hydra.openid.id-token", "hydra.jwt.access-token"} {
		if err := h.adminJSON(context.Background(), http.MethodPost, "/admin/keys/"+set,
			map[string]any{"alg": "ES256", "use": "sig", "kid": set + "-es256"}, nil); err != nil {
			t.Fatalf("create Hydra's %s keys: %v", set, err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	for _, path := range []string{"/.well-known/jwks.json", "/.well-known/openid-configuration"} {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, h.public+path, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("warm up Hydra (%s): %v", path, err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("warm up Hydra (%s): %d", path, resp.StatusCode)
		}
	}

	// A public native client: PKCE, loopback redirect (any port).
	if err := h.adminJSON(context.Background(), http.MethodPost, "/admin/clients", map[string]any{
		"client_id": h.clientID, "token_endpoint_auth_method": "none",
		"grant_types": []string{"authorization_code"}, "response_types": []string{"code"},
		"scope": "openid profile email", "redirect_uris": []string{"http://127.0.0.1" + login.CallbackPath},
	}, nil); err != nil {
		t.Fatalf("create the Hydra client: %v", err)
	}
	return h
}

// accept accepts a login or consent challenge and returns where Hydra
// sends the browser next.
func (h *hydra) accept(ctx context.Context, kind, challenge string, body map[string]any) (string, error) {
	var out struct {
		RedirectTo string `json:"redirect_to"`
	}
	path := fmt.Sprintf("/admin/oauth2/auth/requests/%s/accept?%s_challenge=%s", kind, kind, url.QueryEscape(challenge))
	if err := h.adminJSON(ctx, http.MethodPut, path, body, &out); err != nil {
		return "", err
	}
	return out.RedirectTo, nil
}

func (h *hydra) adminJSON(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, h.admin+path, body)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s %s: %d %s", method, path, resp.StatusCode, b)
	}
	if out != nil {
		return json.Unmarshal(b, out)
	}
	return nil
}

// browser plays the user's browser: a cookie jar, following every
// redirect from the sign-in URL through Hydra and the login and consent
// app to flakegate's loopback callback.
func browser(t *testing.T) func(string) error {
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	hc := &http.Client{Jar: jar, Timeout: 30 * time.Second}
	return func(u string) error {
		resp, err := hc.Get(u)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(b), "Signed in") {
			return fmt.Errorf("the browser ended at %s with %d: %s", resp.Request.URL, resp.StatusCode, b)
		}
		return nil
	}
}

// TestLoginWithHydraBrowserFlow: a user of Ory Hydra (no device grant)
// logs in with `flakegate login` (authorization code + PKCE, loopback
// redirect, the browser driven by an HTTP client), then Nix pulls through
// the union URL with the netrc login wrote; status names the user.
func TestLoginWithHydraBrowserFlow(t *testing.T) {
	nixtest.Require(t)
	h := startHydra(t, "alice", "omnicorp")
	s := startStackWith(t, singleHost, teststack.Options{Issuers: []identity.IssuerConfig{{
		Name: "hydra", Issuer: h.issuer, JWKSURL: h.public + "/.well-known/jwks.json",
		Audience: []string{h.clientID}, Claims: identity.ClaimsOIDC, OrgClaim: "org", Orgs: []string{"omnicorp"},
	}}})
	top := s.src.MakeClosure(3, "hydra")
	s.mustPush(t, s.ci("omnicorp/app", "refs/heads/main"), "omnicorp/app", top)

	netrc := filepath.Join(t.TempDir(), "netrc")
	var stderr bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	err := login.Run(ctx, login.Config{
		Cache: s.url, Issuer: h.issuer, ClientID: h.clientID, Scopes: []string{"openid", "profile", "email"},
		Netrc: netrc, Timeout: 30 * time.Second,
	}, login.Env{HTTPClient: &http.Client{}, Getenv: func(string) string { return "" }, Stderr: &stderr, OpenBrowser: browser(t),
		DeterminateConfig: filepath.Join(t.TempDir(), "absent.json")})
	if err != nil {
		t.Fatalf("flakegate login against Hydra: %v\n%s", err, stderr.String())
	}
	if !strings.Contains(stderr.String(), "through the browser") {
		t.Fatalf("login did not choose the browser flow for a provider without the device grant:\n%s", stderr.String())
	}

	who, err := login.Status(ctx, &http.Client{}, s.url, netrc, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if who.User != "alice" || who.Org != "omnicorp" || who.Via != "exchange" || who.Kind != "user" {
		t.Fatalf("status: %+v", who)
	}

	dst := nixtest.NewStore(t)
	if err := dst.CopyFrom(nixtest.Options{Netrc: netrc, TrustedKeys: []string{s.publicKey}}, s.url, top); err != nil {
		t.Fatalf("nix copy --from the union URL with the netrc login wrote: %v", err)
	}
	if got, want := nixtest.Comparable(dst.Closure(top)), nixtest.Comparable(s.src.Closure(top)); !slices.Equal(got, want) {
		t.Fatalf("pulled closure differs:\n got %v\nwant %v", got, want)
	}
}
