package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/flakegate/flakegate/internal/identity/identitytest"
	"github.com/flakegate/flakegate/internal/nixtest"
	"github.com/flakegate/flakegate/internal/route"
	"github.com/flakegate/flakegate/internal/testutil"
	"github.com/flakegate/flakegate/test/teststack"
)

// keyName names the blob server's narinfo signing key.
const keyName = teststack.KeyName

// mode is how the stack runs flakegate (teststack.Mode).
type mode = teststack.Mode

const (
	singleHost = teststack.SingleHost
	twoProcess = teststack.TwoProcess
)

// modes are both, for the scenarios run in each.
var modes = teststack.Modes

// stack is one running flakegate (in either mode), the embedded gate in
// front, and the identity providers whose tokens it trusts.
type stack struct {
	mode        mode
	url         string // public URL (through the embedded gate)
	host        string // host:port of the public listener
	internalURL string // the blob server's internal listener (owners, healthz)
	authzHTTP   string // two-process: authz's HTTP listener
	publicKey   string // the blob server's narinfo signing key
	policyDir   string // the policies authz watches (a copy the test may edit)
	// authz is the process deciding (in single-host mode blob itself),
	// blob the one serving the cache.
	authz *testutil.Process
	blob  *testutil.Process

	github *identitytest.Issuer // GitHub Actions
	gitlab *identitytest.Issuer // GitLab CI (ES256 keys)
	users  *identitytest.Issuer // the users' OpenID provider

	src *nixtest.Store // where the pushed paths are built
}

// startStack starts flakegate in mode m from the binaries TestMain built,
// on free loopback ports, with the token exchange on, and waits until it is
// healthy. Its processes are stopped with SIGTERM when the test ends, and
// the test fails unless they exit cleanly.
func startStack(t *testing.T, m mode) *stack {
	t.Helper()
	return startStackWith(t, m, teststack.Options{})
}

// startStackWith is startStack with options (token lifetime, CI jobs'
// audience, more issuers).
func startStackWith(t *testing.T, m mode, o teststack.Options) *stack {
	t.Helper()
	nixtest.Require(t)
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	ts := teststack.StartWith(t, binDir, m, o)
	return &stack{
		mode: ts.Mode, url: ts.URL, host: ts.Host, internalURL: ts.InternalURL, authzHTTP: ts.AuthzHTTP,
		publicKey: ts.PublicKey, policyDir: ts.PolicyDir, authz: ts.Authz, blob: ts.Blob,
		github: ts.GitHub, gitlab: ts.GitLab, users: ts.Users,
		src: nixtest.NewStore(t),
	}
}

// Tokens of the cast. Each call mints a fresh token (5 minutes, as GitHub's).

// ci is a GitHub Actions job of repo at ref (refs/heads/main is protected).
func (s *stack) ci(repo, ref string) string { return s.ts().CI(repo, ref) }

// ts is s as a teststack.Stack, for its token helpers.
func (s *stack) ts() *teststack.Stack {
	return &teststack.Stack{GitHub: s.github, GitLab: s.gitlab, Users: s.users}
}

// gitlabCI is a GitLab CI job of project on branch (main is protected).
func (s *stack) gitlabCI(project, branch string) string {
	return s.gitlab.Mint(identitytest.GitLabCIClaims(project, branch))
}

// user is a person of org signed in with the users' OpenID provider.
func (s *stack) user(name, org string) string { return s.ts().User(name, org) }

// expired is a GitHub Actions token of omnicorp/app that expired ten minutes ago.
func (s *stack) expired() string {
	c := identitytest.GitHubActionsClaims("omnicorp/app", "refs/heads/main")
	past := time.Now().Add(-20 * time.Minute)
	c["iat"], c["nbf"], c["exp"] = past.Unix(), past.Unix(), past.Add(10*time.Minute).Unix()
	return s.github.Mint(c)
}

// forged is a well-formed token of omnicorp/app signed by a key the GitHub
// issuer never published.
func (s *stack) forged(t *testing.T) string {
	return s.github.Mint(identitytest.GitHubActionsClaims("omnicorp/app", "refs/heads/main"),
		identitytest.SignWith(identitytest.NewKey(t, "RS256")))
}

// nixOptions makes Nix send token ("" for none) as the netrc password, as
// users configure it, and trust only the cache's key.
func (s *stack) nixOptions(t *testing.T, token string) nixtest.Options {
	opts := nixtest.Options{TrustedKeys: []string{s.publicKey}}
	if token != "" {
		host, _, _ := strings.Cut(s.host, ":")
		opts.Netrc = nixtest.WriteNetrc(t, host, "flakegate", token)
	}
	return opts
}

// push copies the closure of path from the source store into flake
// ("org/name") with `nix copy`, as the holder of token.
func (s *stack) push(t *testing.T, token, flake, path string) error {
	t.Helper()
	return s.src.CopyTo(s.nixOptions(t, token), s.url+"/"+flake+"?compression=zstd", path)
}

// mustPush is push that must succeed: a scenario's precondition. Pushing
// what the flake already has is a no-op, so scenarios call it freely.
func (s *stack) mustPush(t *testing.T, token, flake, path string) {
	t.Helper()
	if err := s.push(t, token, flake, path); err != nil {
		t.Fatalf("push %s to %s: %v", path, flake, err)
	}
}

// pull copies the closure of path from cacheURL into a fresh store with
// `nix copy`, as the holder of token, trusting only the cache's key. When
// Nix succeeds, pull asserts that the pulled closure is the pushed one
// (paths, NAR hashes, references), that every path carries the cache's
// signature, and that `nix store verify` re-hashes it clean.
func (s *stack) pull(t *testing.T, token, cacheURL, path string) error {
	t.Helper()
	dst := nixtest.NewStore(t)
	if err := dst.CopyFrom(s.nixOptions(t, token), cacheURL, path); err != nil {
		return err
	}
	got, want := dst.Closure(path), s.src.Closure(path)
	if !slices.Equal(nixtest.Comparable(got), nixtest.Comparable(want)) {
		t.Fatalf("pulled closure differs from the pushed one:\n got %v\nwant %v", nixtest.Comparable(got), nixtest.Comparable(want))
	}
	for _, pi := range got {
		if !slices.ContainsFunc(pi.Signatures, func(sig string) bool { return strings.HasPrefix(sig, keyName+":") }) {
			t.Fatalf("%s pulled without the cache's signature: %v", pi.Path, pi.Signatures)
		}
	}
	if err := dst.Verify([]string{s.publicKey}, path); err != nil {
		t.Fatalf("nix store verify of the pulled closure: %v", err)
	}
	return nil
}

// unavailable reports whether err is Nix saying that no substituter has
// path: what a denied read looks like to Nix (the gate answers 404, as for
// an absent path).
func unavailable(err error, path string) bool {
	return err != nil && strings.Contains(err.Error(), path) && strings.Contains(err.Error(), "no substituter")
}

// response is what a direct HTTP request got.
type response struct {
	status    int
	challenge string // WWW-Authenticate
	body      string
}

// do sends one request to the public listener with token ("" for none) as
// a Bearer token.
func (s *stack) do(t *testing.T, method, path, token, body string) response {
	t.Helper()
	return request(t, method, s.url+path, token, body)
}

// request sends one request with token ("" for none) as a Bearer token.
func request(t *testing.T, method, url, token, body string) response {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, url, strings.NewReader(body))
	if err != nil {
		t.Fatalf("request %s %s: %v", method, url, err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, b := testutil.Do(t, req)
	return response{status: resp.StatusCode, challenge: resp.Header.Get("WWW-Authenticate"), body: b}
}

// owners asks the blob server's internal listener which flakes own the
// store path.
func (s *stack) owners(t *testing.T, storePath string) []string {
	t.Helper()
	r := request(t, http.MethodGet, s.internalURL+"/owners/narinfo/"+nixtest.HashPart(storePath), "", "")
	var or route.OwnersResponse
	if r.status != http.StatusOK {
		t.Fatalf("owners of %s: %d %s", storePath, r.status, r.body)
	}
	if err := json.Unmarshal([]byte(r.body), &or); err != nil {
		t.Fatalf("owners of %s: %v", storePath, err)
	}
	slices.Sort(or.Flakes)
	return or.Flakes
}

// narinfoPath is the URL path of path's narinfo in flake ("" for the union view).
func narinfoPath(flake, storePath string) string {
	if flake == "" {
		return "/" + nixtest.HashPart(storePath) + ".narinfo"
	}
	return fmt.Sprintf("/%s/%s.narinfo", flake, nixtest.HashPart(storePath))
}

// waitFor polls cond every 100 ms until it holds or timeout passes.
func waitFor(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// writeFile replaces path atomically (write a temporary file, rename), as
// editors and config management do.
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
