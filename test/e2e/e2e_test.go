// Package e2e runs flakegate as users run it on one machine — the authz and
// blobserver binaries as real processes, the blob server's embedded gate in
// front, the shipped policies — and drives it with a real Nix client and
// tokens from test identity providers (GitHub-Actions-shaped, GitLab-CI-shaped
// and user tokens, each issuer with its own keys and JWKS endpoint).
package e2e

import (
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/flakegate/flakegate/internal/identity"
	"github.com/flakegate/flakegate/internal/identity/identitytest"
	"github.com/flakegate/flakegate/internal/nixcache"
	"github.com/flakegate/flakegate/internal/nixtest"
	"github.com/flakegate/flakegate/internal/testutil"
)

// stack is one running flakegate.
type stack struct {
	url       string // public URL (through the embedded gate)
	host      string // host:port, for netrc
	publicKey string // the blob server's narinfo signing key
	policyDir string
	authz     *testutil.Process
	blob      *testutil.Process
	github    *identitytest.Issuer
	gitlab    *identitytest.Issuer
	users     *identitytest.Issuer
}

func startStack(t *testing.T) *stack {
	t.Helper()
	bin := testutil.BuildCommands(t, "github.com/flakegate/flakegate/cmd/authz", "github.com/flakegate/flakegate/cmd/blobserver")
	dir := t.TempDir()
	s := &stack{
		github: identitytest.NewIssuer(t),
		gitlab: identitytest.NewIssuer(t, identitytest.WithAlg("ES256")),
		users:  identitytest.NewIssuer(t),
	}

	// Issuers by JWKS URL, as in production.
	users := s.users.Config("corp-sso", identity.ClaimsOIDC)
	users.OrgClaim = "org"
	issuers, err := yaml.Marshal(identity.Config{Issuers: []identity.IssuerConfig{
		s.github.Config("github", identity.ClaimsGitHubActions),
		s.gitlab.Config("gitlab", identity.ClaimsGitLabCI),
		users,
	}})
	if err != nil {
		t.Fatal(err)
	}
	issuersFile := filepath.Join(dir, "issuers.yaml")
	writeFile(t, issuersFile, string(issuers))

	// A copy of the shipped policies, so the test can edit them.
	s.policyDir = filepath.Join(dir, "policies")
	testutil.CopyDir(t, "../../policies", s.policyDir)

	secret, public, err := nixcache.GenerateKey("cache.e2e.test-1")
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(dir, "signing-key.sec")
	writeFile(t, keyFile, secret)
	s.publicKey = public

	publicAddr, internal, grpcAddr, authzHTTP := testutil.FreeAddr(t), testutil.FreeAddr(t), testutil.FreeAddr(t), testutil.FreeAddr(t)
	s.url, s.host = "http://"+publicAddr, publicAddr
	s.authz = testutil.StartProcess(t, "authz", filepath.Join(bin, "authz"), nil,
		"-listen", grpcAddr, "-http-listen", authzHTTP,
		"-policies", s.policyDir, "-issuers", issuersFile,
		"-owners-url", "http://"+internal)
	s.blob = testutil.StartProcess(t, "blobserver", filepath.Join(bin, "blobserver"), nil,
		"-listen", publicAddr, "-internal-listen", internal,
		"-data-dir", filepath.Join(dir, "data"), "-signing-key-file", keyFile,
		"-ext-authz", grpcAddr, "-authz-http", "http://"+authzHTTP)
	s.authz.WaitHealthy(t, "http://"+authzHTTP+"/healthz", 30*time.Second)
	s.blob.WaitHealthy(t, "http://"+internal+"/healthz", 30*time.Second)
	return s
}

// Tokens of the cast.

func (s *stack) ci(t *testing.T, repo, ref string) string {
	return s.github.Mint(identitytest.GitHubActionsClaims(repo, ref))
}

func (s *stack) gitlabCI(t *testing.T, project, branch string) string {
	return s.gitlab.Mint(identitytest.GitLabCIClaims(project, branch))
}

func (s *stack) user(t *testing.T, name, org string) string {
	c := identitytest.OIDCUserClaims(name)
	c["org"] = org
	return s.users.Mint(c)
}

// netrc makes Nix send token as the Basic password, as users configure it.
func (s *stack) netrc(t *testing.T, token string) nixtest.Options {
	host, _, _ := strings.Cut(s.host, ":")
	return nixtest.Options{Netrc: nixtest.WriteNetrc(t, host, "flakegate", token), TrustedKeys: []string{s.publicKey}}
}

// status sends one request with an optional bearer token.
func (s *stack) status(t *testing.T, method, path, token string, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, s.url+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	client := &http.Client{Timeout: 30 * time.Second}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func hashOf(storePath string) string {
	return strings.TrimPrefix(storePath, "/nix/store/")[:32]
}

func TestEndToEnd(t *testing.T) {
	nixtest.Require(t)
	s := startStack(t)

	src := nixtest.NewStore(t)
	appPath := src.MakeClosure(6, "app")
	devPath := src.MakeClosure(4, "devenv")
	securePath := src.MakeClosure(3, "secure")
	glPath := src.MakeClosure(3, "gitlab")
	appHash := hashOf(appPath)

	ciApp := s.ci(t, "omnicorp/app", "refs/heads/main")
	alice := s.user(t, "alice", "omnicorp")     // trusted for super-duper-secure
	mallory := s.user(t, "mallory", "omnicorp") // an ordinary omnicorp user
	carol := s.user(t, "carol", "acme")         // reads acme's flakes only
	eve := s.user(t, "eve", "initech")          // reads nothing of ours

	// pullable reports whether Nix, with opts, copies path from cache into a
	// fresh store; on success the contents must equal the source's.
	pullable := func(t *testing.T, opts nixtest.Options, cache, path string) bool {
		t.Helper()
		dst := nixtest.NewStore(t)
		if err := dst.CopyFrom(opts, cache, path); err != nil {
			return false
		}
		if got, want := dst.Closure(path), src.Closure(path); !sameContents(got, want) {
			t.Fatalf("pulled closure differs from the pushed one:\n got %v\nwant %v", got, want)
		}
		return true
	}

	t.Run("CI of omnicorp/app pushes to omnicorp/app", func(t *testing.T) {
		if err := src.CopyTo(s.netrc(t, ciApp), s.url+"/omnicorp/app?compression=zstd", appPath); err != nil {
			t.Fatalf("push refused: %v", err)
		}
		if code, _ := s.status(t, "GET", "/omnicorp/app/"+appHash+".narinfo", ciApp, ""); code != 200 {
			t.Fatalf("pushed narinfo: %d, want 200", code)
		}
	})

	t.Run("CI of omnicorp/app cannot push to omnicorp/other", func(t *testing.T) {
		if err := src.CopyTo(s.netrc(t, ciApp), s.url+"/omnicorp/other", appPath); err == nil {
			t.Fatal("nix copy to another flake succeeded")
		}
		code, body := s.status(t, "PUT", "/omnicorp/other/"+appHash+".narinfo", ciApp, "StorePath: x\n")
		if code != http.StatusForbidden {
			t.Fatalf("PUT into omnicorp/other: %d %q, want 403", code, body)
		}
	})

	t.Run("CI on an unprotected ref cannot push", func(t *testing.T) {
		feature := s.ci(t, "omnicorp/app", "refs/heads/feature")
		if err := src.CopyTo(s.netrc(t, feature), s.url+"/omnicorp/app", devPath); err == nil {
			t.Fatal("push from an unprotected ref succeeded")
		}
		if code, body := s.status(t, "PUT", "/omnicorp/app/"+hashOf(devPath)+".narinfo", feature, "x"); code != http.StatusForbidden {
			t.Fatalf("PUT from unprotected ref: %d %q, want 403", code, body)
		}
	})

	t.Run("a user token cannot push", func(t *testing.T) {
		if code, body := s.status(t, "PUT", "/omnicorp/app/"+appHash+".narinfo", alice, "x"); code != http.StatusForbidden {
			t.Fatalf("user PUT: %d %q, want 403", code, body)
		}
	})

	t.Run("no token is 401", func(t *testing.T) {
		for _, r := range []struct{ method, path string }{
			{"GET", "/omnicorp/app/" + appHash + ".narinfo"},
			{"GET", "/" + appHash + ".narinfo"},
			{"PUT", "/omnicorp/app/" + appHash + ".narinfo"},
		} {
			req, _ := http.NewRequest(r.method, s.url+r.path, strings.NewReader("x"))
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusUnauthorized || resp.Header.Get("WWW-Authenticate") == "" {
				t.Errorf("%s %s without token: %d (WWW-Authenticate %q), want 401 with a challenge", r.method, r.path, resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
			}
		}
		if pullable(t, nixtest.Options{TrustedKeys: []string{s.publicKey}}, s.url+"/omnicorp/app", appPath) {
			t.Error("Nix pulled without a token")
		}
	})

	t.Run("an omnicorp user pulls dev-environments via its flake URL and the union URL", func(t *testing.T) {
		ci := s.ci(t, "omnicorp/dev-environments", "refs/heads/main")
		if err := src.CopyTo(s.netrc(t, ci), s.url+"/omnicorp/dev-environments?compression=xz", devPath); err != nil {
			t.Fatalf("push: %v", err)
		}
		if !pullable(t, s.netrc(t, mallory), s.url+"/omnicorp/dev-environments", devPath) {
			t.Error("flake URL: pull refused")
		}
		if !pullable(t, s.netrc(t, mallory), s.url, devPath) {
			t.Error("union URL: pull refused")
		}
		if pullable(t, s.netrc(t, eve), s.url, devPath) {
			t.Error("a user of another org pulled dev-environments")
		}
	})

	t.Run("super-duper-secure: trusted user pulls, untrusted user cannot", func(t *testing.T) {
		ci := s.ci(t, "omnicorp/super-duper-secure", "refs/heads/main")
		if err := src.CopyTo(s.netrc(t, ci), s.url+"/omnicorp/super-duper-secure", securePath); err != nil {
			t.Fatalf("push: %v", err)
		}
		if pullable(t, s.netrc(t, mallory), s.url+"/omnicorp/super-duper-secure", securePath) {
			t.Error("untrusted user pulled super-duper-secure through its flake URL")
		}
		if pullable(t, s.netrc(t, mallory), s.url, securePath) {
			t.Error("untrusted user pulled super-duper-secure through the union URL")
		}
		// What Nix saw: the same 404 as for a path that does not exist.
		code, body := s.status(t, "GET", "/omnicorp/super-duper-secure/"+hashOf(securePath)+".narinfo", mallory, "")
		absentCode, absentBody := s.status(t, "GET", "/omnicorp/super-duper-secure/"+strings.Repeat("0", 32)+".narinfo", alice, "")
		if code != 404 || code != absentCode || body != absentBody {
			t.Errorf("denied read answered %d %q; an absent path answers %d %q: they must be identical", code, body, absentCode, absentBody)
		}
		if !pullable(t, s.netrc(t, alice), s.url+"/omnicorp/super-duper-secure", securePath) {
			t.Error("trusted user alice could not pull")
		}
	})

	t.Run("a path owned by two flakes is readable via the union view by a reader of either", func(t *testing.T) {
		acmeCI := s.ci(t, "acme/tools", "refs/heads/main")
		if err := src.CopyTo(s.netrc(t, acmeCI), s.url+"/acme/tools", appPath); err != nil {
			t.Fatalf("push of the same closure into acme/tools: %v", err)
		}
		if !pullable(t, s.netrc(t, carol), s.url, appPath) {
			t.Error("acme reader could not pull the shared path via the union view")
		}
		if !pullable(t, s.netrc(t, mallory), s.url, appPath) {
			t.Error("omnicorp reader could not pull the shared path via the union view")
		}
		if pullable(t, s.netrc(t, eve), s.url, appPath) {
			t.Error("a reader of neither flake pulled the shared path")
		}
		// carol reads through acme/tools only; omnicorp/app stays closed to her.
		if code, _ := s.status(t, "GET", "/omnicorp/app/"+appHash+".narinfo", carol, ""); code != 404 {
			t.Errorf("acme reader on omnicorp/app: %d, want 404", code)
		}
	})

	t.Run("an expired token is refused", func(t *testing.T) {
		c := identitytest.GitHubActionsClaims("omnicorp/app", "refs/heads/main")
		now := time.Now()
		c["iat"], c["nbf"], c["exp"] = now.Add(-20*time.Minute).Unix(), now.Add(-20*time.Minute).Unix(), now.Add(-10*time.Minute).Unix()
		expired := s.github.Mint(c)
		if code, _ := s.status(t, "GET", "/omnicorp/app/"+appHash+".narinfo", expired, ""); code != http.StatusUnauthorized {
			t.Errorf("expired token read: %d, want 401", code)
		}
		if err := src.CopyTo(s.netrc(t, expired), s.url+"/omnicorp/app", glPath); err == nil {
			t.Error("push with an expired token succeeded")
		}
	})

	t.Run("a GitLab CI token works for its project", func(t *testing.T) {
		gl := s.gitlabCI(t, "omnicorp/gl-app", "main")
		if err := src.CopyTo(s.netrc(t, gl), s.url+"/omnicorp/gl-app", glPath); err != nil {
			t.Fatalf("GitLab push to its project: %v", err)
		}
		if !pullable(t, s.netrc(t, gl), s.url+"/omnicorp/gl-app", glPath) {
			t.Error("GitLab job could not pull its project's flake")
		}
		if code, _ := s.status(t, "PUT", "/omnicorp/app/"+hashOf(glPath)+".narinfo", gl, "x"); code != http.StatusForbidden {
			t.Errorf("GitLab push to another project: %d, want 403", code)
		}
	})

	t.Run("editing a policy file changes the next decision without a restart", func(t *testing.T) {
		authzPid, blobPid := s.authz.Pid(), s.blob.Pid()
		path := "/omnicorp/super-duper-secure/" + hashOf(securePath) + ".narinfo"
		if code, _ := s.status(t, "GET", path, mallory, ""); code != 404 {
			t.Fatalf("before the edit mallory gets %d, want 404", code)
		}
		flakes := filepath.Join(s.policyDir, "flakes.yaml")
		b, err := os.ReadFile(flakes)
		if err != nil {
			t.Fatal(err)
		}
		edited := strings.Replace(string(b), "users: [alice, bob]", "users: [alice, bob, mallory]", 1)
		if edited == string(b) {
			t.Fatal("flakes.yaml no longer has the line this test edits")
		}
		writeFile(t, flakes, edited)
		deadline := time.Now().Add(10 * time.Second)
		for {
			code, _ := s.status(t, "GET", path, mallory, "")
			if code == 200 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("10 s after the edit mallory still gets %d", code)
			}
			time.Sleep(100 * time.Millisecond)
		}
		if !pullable(t, s.netrc(t, mallory), s.url, securePath) {
			t.Error("after the edit, Nix still cannot pull as mallory")
		}
		if !s.authz.Running() || !s.blob.Running() || s.authz.Pid() != authzPid || s.blob.Pid() != blobPid {
			t.Error("a process was restarted or died")
		}
	})
}

// sameContents compares closures by path, NAR hash and references (not by
// signatures, which the cache replaces with its own).
func sameContents(a, b []nixtest.PathInfo) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Path != b[i].Path || a[i].NarHash != b[i].NarHash || strings.Join(a[i].References, " ") != strings.Join(b[i].References, " ") {
			return false
		}
	}
	return true
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}
