package gate

import (
	"context"
	"encoding/base64"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"sigs.k8s.io/yaml"

	"github.com/flakegate/flakegate/internal/authzapp"
	"github.com/flakegate/flakegate/internal/identity"
	"github.com/flakegate/flakegate/internal/identity/identitytest"
)

// startRealAuthz runs the authz process (authzapp) (real JWT verification against a
// test issuer's JWKS, the shipped policies in /policies) on loopback and
// returns its gRPC address and a function that stops it.
func startRealAuthz(t *testing.T, gh *identitytest.Issuer) (addr string, stop func()) {
	t.Helper()
	dir := t.TempDir()
	b, err := yaml.Marshal(identity.Config{Issuers: []identity.IssuerConfig{gh.Config("github", identity.ClaimsGitHubActions)}})
	if err != nil {
		t.Fatal(err)
	}
	issuers := filepath.Join(dir, "issuers.yaml")
	if err := os.WriteFile(issuers, b, 0o644); err != nil {
		t.Fatal(err)
	}
	owners := httptest.NewServer(http.NotFoundHandler()) // no union reads here
	t.Cleanup(owners.Close)

	cfg := authzapp.DefaultConfig()
	cfg.Listen, cfg.HTTPListen = "127.0.0.1:0", "127.0.0.1:0"
	cfg.Policies, cfg.Issuers, cfg.OwnersURL = "../../policies", issuers, owners.URL
	cfg.ShutdownTimeout = 5 * time.Second
	ctx, cancel := context.WithCancel(context.Background())
	app, err := authzapp.New(ctx, cfg, slog.New(slog.NewJSONHandler(io.Discard, nil)))
	if err != nil {
		cancel()
		t.Fatalf("authzapp.New: %v", err)
	}
	gl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- app.Serve(ctx, gl, hl) }()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("authz did not stop")
		}
	}
	t.Cleanup(stop)
	return gl.Addr().String(), stop
}

// TestGateWithRealAuthz: the embedded gate in front of a handler, asking the
// real authz service with the shipped policies, gives the answers DESIGN.md
// specifies, and 503 once authz is gone.
func TestGateWithRealAuthz(t *testing.T) {
	gh := identitytest.NewIssuer(t)
	addr, stopAuthz := startRealAuthz(t, gh)
	g := newTestGate(t, addr, nil, 5*time.Second)
	up := &upstream{}
	srv := httptest.NewServer(g.Wrap(up))
	defer srv.Close()

	const (
		hash    = "0a9g8mz2ck6lw5yyz3bh3nxa0cacp2v1"
		appInfo = "/omnicorp/app/" + hash + ".narinfo"
	)
	mainTok := gh.Mint(identitytest.GitHubActionsClaims("omnicorp/app", "refs/heads/main"))
	otherTok := gh.Mint(identitytest.GitHubActionsClaims("omnicorp/other", "refs/heads/main"))
	basic := func(tok string) string {
		return "Basic " + base64.StdEncoding.EncodeToString([]byte("flakegate:"+tok))
	}

	tests := []struct {
		name, method, path string
		auth, forged       string
		wantStatus         int
		wantUpstream       bool
		wantSubject        string // x-flakegate-subject the upstream sees (set by authz, never by the client)
		wantAuthenticate   bool
	}{
		{name: "cache info needs no token", method: "GET", path: "/omnicorp/app/nix-cache-info", wantStatus: 200, wantUpstream: true, wantSubject: "anonymous"},
		{name: "cache info with a forged subject header", method: "GET", path: "/omnicorp/app/nix-cache-info", forged: "github:omnicorp/app@refs/heads/main",
			wantStatus: 200, wantUpstream: true, wantSubject: "anonymous"},
		{name: "push by the repository's own job (Bearer)", method: "PUT", path: appInfo, auth: "Bearer " + mainTok,
			wantStatus: 200, wantUpstream: true, wantSubject: "github:omnicorp/app@refs/heads/main"},
		{name: "push with the token as netrc password", method: "PUT", path: appInfo, auth: basic(mainTok),
			wantStatus: 200, wantUpstream: true, wantSubject: "github:omnicorp/app@refs/heads/main"},
		{name: "push by another repository's job", method: "PUT", path: appInfo, auth: "Bearer " + otherTok, wantStatus: 403},
		{name: "read without a token", method: "GET", path: appInfo, wantStatus: 401, wantAuthenticate: true},
		{name: "forged subject header without a token", method: "PUT", path: appInfo, forged: "github:omnicorp/app@refs/heads/main",
			wantStatus: 401, wantAuthenticate: true},
		{name: "invalid token", method: "GET", path: appInfo, auth: "Bearer not.a.jwt", wantStatus: 401, wantAuthenticate: true},
		{name: "read of another org's flake is 404", method: "GET", path: "/evilcorp/tool/" + hash + ".narinfo",
			auth: basic(mainTok), wantStatus: 404},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			up.mu.Lock()
			up.calls, up.header = 0, nil
			up.mu.Unlock()
			req, _ := http.NewRequest(tc.method, srv.URL+tc.path, nil)
			if tc.auth != "" {
				req.Header.Set("Authorization", tc.auth)
			}
			if tc.forged != "" {
				req.Header.Set("X-Flakegate-Subject", tc.forged)
			}
			resp, err := srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.wantStatus {
				t.Fatalf("status %d (%q), want %d", resp.StatusCode, body, tc.wantStatus)
			}
			if got := resp.Header.Get("WWW-Authenticate") != ""; got != tc.wantAuthenticate {
				t.Errorf("WWW-Authenticate present = %v, want %v", got, tc.wantAuthenticate)
			}
			up.mu.Lock()
			defer up.mu.Unlock()
			if (up.calls == 1) != tc.wantUpstream {
				t.Fatalf("upstream called %d times, want called=%v", up.calls, tc.wantUpstream)
			}
			if !tc.wantUpstream {
				return
			}
			if up.header.Get("Authorization") != "" {
				t.Error("the token reached the upstream")
			}
			if got := up.header.Values("X-Flakegate-Subject"); len(got) != 1 || got[0] != tc.wantSubject {
				t.Errorf("upstream x-flakegate-subject = %q, want exactly %q", got, tc.wantSubject)
			}
		})
	}

	stopAuthz()
	resp, err := srv.Client().Get(srv.URL + "/omnicorp/app/nix-cache-info")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("authz stopped: status %d, want 503", resp.StatusCode)
	}
}

var _ authv3.AuthorizationClient = clientFunc(nil)
