package main

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/flakegate/flakegate/internal/authz"
	"github.com/flakegate/flakegate/internal/exchange"
	"github.com/flakegate/flakegate/internal/identity"
	"github.com/flakegate/flakegate/internal/identity/identitytest"
	"github.com/flakegate/flakegate/internal/login"
	"github.com/flakegate/flakegate/internal/policy"
	"github.com/flakegate/flakegate/internal/route"
	"github.com/flakegate/flakegate/internal/tokens"
)

// cacheServer serves the real exchange handler (real verifier, shipped
// policies, real signing keys) the way authz does.
func cacheServer(t *testing.T, gh *identitytest.Issuer) (*httptest.Server, identity.Verifier) {
	t.Helper()
	srv := httptest.NewUnstartedServer(nil)
	audience := "http://" + srv.Listener.Addr().String() // CI jobs ask for the cache URL
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	log := slog.New(slog.DiscardHandler)
	v, err := identity.NewVerifier(ctx, &identity.Config{Issuers: []identity.IssuerConfig{
		gh.Config("github", identity.ClaimsGitHubActions, audience),
	}}, identity.Options{Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(v.Close)
	engine, err := policy.NewEngine("../../policies", policy.Options{Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	keyDir := t.TempDir()
	if _, _, err := tokens.GenerateKey(keyDir, tokens.AlgEdDSA, time.Now()); err != nil {
		t.Fatal(err)
	}
	keys, err := tokens.LoadKeyRing(keyDir)
	if err != nil {
		t.Fatal(err)
	}
	const self = "https://cache.flakegate.test"
	minter, err := tokens.NewMinter(keys, tokens.Config{Issuer: self})
	if err != nil {
		t.Fatal(err)
	}
	if err := v.AddIssuer(identity.IssuerConfig{Name: "flakegate", Issuer: self, Audience: []string{self}, Claims: identity.ClaimsFlakegate}, keys.PublicSet()); err != nil {
		t.Fatal(err)
	}
	checker := &authz.Checker{Verifier: v, Policy: engine, Logger: log}
	h := &exchange.Handler{Checker: checker, Minter: minter, Keys: keys, Logger: log}
	mux := http.NewServeMux()
	h.Register(mux)
	mux.Handle(route.WhoamiPath, exchange.Whoami(checker, log))
	srv.Config.Handler = mux
	srv.Start()
	t.Cleanup(srv.Close)
	return srv, v
}

// githubTokenService plays the Actions runtime's OIDC token endpoint.
func githubTokenService(t *testing.T, gh *identitytest.Issuer, requestToken string) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "bearer "+requestToken {
			http.Error(w, `{"message":"bad request token"}`, http.StatusUnauthorized)
			return
		}
		claims := identitytest.GitHubActionsClaims("omnicorp/app", "refs/heads/main")
		claims["aud"] = r.URL.Query().Get("audience")
		_ = json.NewEncoder(w).Encode(map[string]string{"value": gh.Mint(claims)})
	}))
	t.Cleanup(srv.Close)
	return srv
}

func TestRun(t *testing.T) {
	gh := identitytest.NewIssuer(t)
	ghService := githubTokenService(t, gh, "runtime-secret")
	cache, verifier := cacheServer(t, gh)
	gitlabToken := func() string {
		claims := identitytest.GitHubActionsClaims("omnicorp/app", "refs/heads/main")
		claims["aud"] = cache.URL
		return gh.Mint(claims)
	}

	tests := []struct {
		name       string
		args       []string
		env        map[string]string
		wantCode   int
		wantStderr string
		wantNetrc  bool
		wantLife   time.Duration // cache token lifetime; default 1h
	}{
		{name: "no command", args: nil, wantCode: 2, wantStderr: "usage"},
		{name: "unknown command", args: []string{"frobnicate"}, wantCode: 2, wantStderr: `unknown command "frobnicate"`},
		{name: "help", args: []string{"login", "-h"}, wantCode: 0},
		{name: "no cache", args: []string{"login", "--ci"}, wantCode: 2, wantStderr: "--cache is required"},
		{name: "interactive without issuer", args: []string{"login", "--cache", "https://c.example"}, wantCode: 2, wantStderr: "--issuer is required"},
		{name: "cache URL with a path", args: []string{"login", "--ci", "--cache", "https://c.example/omnicorp/app"}, wantCode: 2, wantStderr: "only the cache's base URL"},
		{name: "ci without a token", args: []string{"login", "--ci", "--cache", "CACHE"}, wantCode: 1, wantStderr: "no job token found"},
		{
			name: "github actions", args: []string{"login", "--ci", "--cache", "CACHE"},
			env: map[string]string{
				"ACTIONS_ID_TOKEN_REQUEST_URL":   ghService.URL + "/token?api-version=2.0",
				"ACTIONS_ID_TOKEN_REQUEST_TOKEN": "runtime-secret",
			},
			wantCode: 0, wantNetrc: true,
		},
		{
			name: "github actions, wrong runtime token", args: []string{"login", "--ci", "--cache", "CACHE"},
			env: map[string]string{
				"ACTIONS_ID_TOKEN_REQUEST_URL":   ghService.URL + "/token?api-version=2.0",
				"ACTIONS_ID_TOKEN_REQUEST_TOKEN": "wrong",
			},
			wantCode: 1, wantStderr: "GitHub Actions token service answered 401",
		},
		{
			name: "gitlab id_tokens variable", args: []string{"login", "--ci", "--cache", "CACHE"},
			env: map[string]string{"FLAKEGATE_ID_TOKEN": "GITLAB"}, wantCode: 0, wantNetrc: true,
		},
		{
			name: "longer lifetime asked", args: []string{"login", "--ci", "--lifetime", "3h", "--cache", "CACHE"},
			env: map[string]string{"FLAKEGATE_ID_TOKEN": "GITLAB"}, wantCode: 0, wantNetrc: true, wantLife: 3 * time.Hour,
		},
		{name: "negative lifetime", args: []string{"login", "--ci", "--lifetime", "-1h", "--cache", "CACHE"}, wantCode: 2, wantStderr: "--lifetime must be positive"},
		{
			name: "named variable", args: []string{"login", "--ci", "--token-env", "MY_TOKEN", "--cache", "CACHE"},
			env: map[string]string{"MY_TOKEN": "GITLAB"}, wantCode: 0, wantNetrc: true,
		},
		{
			name: "token refused by the cache", args: []string{"login", "--ci", "--cache", "CACHE"},
			env: map[string]string{"FLAKEGATE_ID_TOKEN": "not.a.jwt"}, wantCode: 1, wantStderr: "the cache answered 401",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			netrc := filepath.Join(t.TempDir(), "netrc")
			args := append([]string{}, tt.args...)
			for i, a := range args {
				if a == "CACHE" {
					args[i] = cache.URL
				}
			}
			if tt.args != nil && tt.args[0] == "login" && !contains(args, "-h") {
				args = append(args, "--netrc", netrc)
			}
			// The process environment, with only what the case sets of
			// what login reads (a CI runner's own variables cleared).
			for _, k := range []string{"ACTIONS_ID_TOKEN_REQUEST_URL", "ACTIONS_ID_TOKEN_REQUEST_TOKEN", "FLAKEGATE_ID_TOKEN", "MY_TOKEN"} {
				v := tt.env[k]
				if v == "GITLAB" {
					v = gitlabToken()
				}
				t.Setenv(k, v)
			}
			var stdout, stderr strings.Builder
			code := run(context.Background(), args, &stdout, &stderr)
			if code != tt.wantCode {
				t.Fatalf("exit %d, want %d; stderr:\n%s", code, tt.wantCode, stderr.String())
			}
			if !strings.Contains(stderr.String(), tt.wantStderr) {
				t.Errorf("stderr %q lacks %q", stderr.String(), tt.wantStderr)
			}
			if !tt.wantNetrc {
				if _, err := os.Stat(netrc); err == nil {
					t.Error("netrc written on failure")
				}
				return
			}
			b, err := os.ReadFile(netrc)
			if err != nil {
				t.Fatal(err)
			}
			tok, ok := login.NetrcPassword(string(b), "127.0.0.1")
			if !ok {
				t.Fatalf("no netrc entry for 127.0.0.1:\n%s", b)
			}
			s, err := verifier.Verify(context.Background(), tok)
			if err != nil {
				t.Fatalf("netrc token does not verify: %v", err)
			}
			if s.Via != "exchange" || s.Repo != "omnicorp/app" {
				t.Errorf("netrc token subject: via=%s repo=%s", s.Via, s.Repo)
			}
			wantLife := tt.wantLife
			if wantLife == 0 {
				wantLife = time.Hour
			}
			if life := time.Until(s.Expiry); life < wantLife-time.Minute || life > wantLife {
				t.Errorf("cache token lives %s, want %s", life.Round(time.Second), wantLife)
			}
			if !strings.Contains(stdout.String(), "netrc-file = "+netrc) {
				t.Errorf("stdout lacks the netrc-file line:\n%s", stdout.String())
			}
		})
	}
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// flakegate token create: its argument errors, before any request.
func TestTokenCreateUsage(t *testing.T) {
	for _, c := range []struct {
		args       []string
		wantStderr string
	}{
		{[]string{"token"}, `want "token create"`},
		{[]string{"token", "create", "--ci", "--cache", "https://c.example", "--closure", "/nix/store/0c6kzph7l0dcbfmjap64f0czdafn3b7x-x"}, "--flake"},
		{[]string{"token", "create", "--ci", "--cache", "https://c.example", "--flake", "omnicorp/app"}, "--closure is required"},
		{[]string{"token", "create", "--ci", "--cache", "https://c.example", "--flake", "omnicorp/app", "--closure", "/nix/store/0c6kzph7l0dcbfmjap64f0czdafn3b7x-x", "--lifetime", "90 days"}, `lifetime "90 days"`},
		{[]string{"token", "create", "--ci", "--flake", "omnicorp/app", "--closure", "/nix/store/0c6kzph7l0dcbfmjap64f0czdafn3b7x-x"}, "--cache is required"},
	} {
		var stdout, stderr strings.Builder
		if code := run(context.Background(), c.args, &stdout, &stderr); code != 2 || !strings.Contains(stderr.String(), c.wantStderr) || stdout.Len() != 0 {
			t.Errorf("%v: exit %d, stderr %q, stdout %q; want 2 and %q", c.args, code, stderr.String(), stdout.String(), c.wantStderr)
		}
	}
}

// TestTokenFileStatusLogout: a person with an ID token logs in with
// --token-file, status names the subject the cache sees, logout removes
// the token (other netrc entries kept) and status then fails.
func TestTokenFileStatusLogout(t *testing.T) {
	gh := identitytest.NewIssuer(t)
	cache, _ := cacheServer(t, gh)
	dir := t.TempDir()
	netrc := filepath.Join(dir, "netrc")
	if err := os.WriteFile(netrc, []byte("machine other.example login me password keep\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	claims := identitytest.GitHubActionsClaims("omnicorp/app", "refs/heads/main")
	claims["aud"] = cache.URL
	idFile := filepath.Join(dir, "id.jwt")
	if err := os.WriteFile(idFile, []byte(gh.Mint(claims)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	garbage := filepath.Join(dir, "garbage")
	if err := os.WriteFile(garbage, []byte("not a token"), 0o600); err != nil {
		t.Fatal(err)
	}
	do := func(args ...string) (int, string, string) {
		var stdout, stderr strings.Builder
		code := run(context.Background(), append(args, "--cache", cache.URL, "--netrc", netrc), &stdout, &stderr)
		return code, stdout.String(), stderr.String()
	}
	if code, _, stderr := do("login", "--token-file", garbage); code != 1 || !strings.Contains(stderr, "does not hold one ID token") {
		t.Fatalf("garbage token file: %d %s", code, stderr)
	}
	if code, _, stderr := do("login", "--token-file", idFile); code != 0 {
		t.Fatalf("login --token-file: %d %s", code, stderr)
	}
	code, stdout, stderr := do("status")
	if code != 0 || !strings.Contains(stdout, "as github:omnicorp/app@refs/heads/main") || !strings.Contains(stdout, "token from exchange") || !strings.Contains(stdout, "token id ") {
		t.Fatalf("status: %d\n%s%s", code, stdout, stderr)
	}
	if code, stdout, _ := do("logout"); code != 0 || !strings.Contains(stdout, "removed the token") {
		t.Fatalf("logout: %d %s", code, stdout)
	}
	b, _ := os.ReadFile(netrc)
	if string(b) != "machine other.example login me password keep\n" {
		t.Fatalf("netrc after logout: %q", b)
	}
	if code, _, stderr := do("status"); code != 1 || !strings.Contains(stderr, "run flakegate login") {
		t.Fatalf("status after logout: %d %s", code, stderr)
	}
	if code, stdout, _ := do("logout"); code != 0 || !strings.Contains(stdout, "no token for") {
		t.Fatalf("second logout: %d %s", code, stdout)
	}
}
