// Package teststack starts flakegate as users run it on one machine, for
// the end-to-end and protocol tests (test/…): the authz and blobserver
// binaries as real processes, the blob server's embedded gate in front, a
// copy of the shipped policies, and three test identity providers
// (GitHub-Actions-shaped, GitLab-CI-shaped and user tokens, each with its
// own keys and JWKS endpoint).
package teststack

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/flakegate/flakegate/internal/identity"
	"github.com/flakegate/flakegate/internal/identity/identitytest"
	"github.com/flakegate/flakegate/internal/nixcache"
	"github.com/flakegate/flakegate/internal/testutil"
)

// KeyName names the blob server's narinfo signing key.
const KeyName = "cache.e2e.test-1"

// Packages are the binaries Start runs (Build builds them).
var Packages = []string{"github.com/flakegate/flakegate/cmd/authz", "github.com/flakegate/flakegate/cmd/blobserver",
	"github.com/flakegate/flakegate/cmd/flakegate"}

// Build builds Packages into dir with the go tool, once per test binary
// (TestMain), for Start.
func Build(dir string) error {
	goTool, err := exec.LookPath("go")
	if err != nil {
		return fmt.Errorf("go tool not found: cannot build the binaries under test: %w", err)
	}
	return testutil.GoBuild(goTool, dir, Packages...)
}

// Main is the TestMain of a package of stack tests: it makes a temporary
// directory for the binaries, sets *binDir to it, builds Packages there
// when build is true (a package whose tests all skip without Nix passes
// false then, to spend no build), records the build's failure in
// *buildErr for the tests to report, runs m and removes the directory.
func Main(m *testing.M, name string, build bool, binDir *string, buildErr *error) int {
	flag.Parse()
	dir, err := os.MkdirTemp("", "flakegate-"+name+"-bin-")
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: temporary directory for the binaries: %v\n", name, err)
		return 1
	}
	defer os.RemoveAll(dir)
	*binDir = dir
	if build {
		*buildErr = Build(dir)
	}
	return m.Run()
}

// Mode is how a Stack runs flakegate.
type Mode string

const (
	// SingleHost is one blobserver process running the authorization core
	// in-process (blobserver -policies …): the default on one host.
	SingleHost Mode = "single-host"
	// TwoProcess is authz and blobserver processes, the blob server's
	// embedded gate asking authz over gRPC.
	TwoProcess Mode = "two-process"
)

// Modes are both, for the scenarios run in each.
var Modes = []Mode{SingleHost, TwoProcess}

// Stack is one running flakegate (in either mode), the embedded gate in
// front, and the identity providers whose tokens it trusts.
type Stack struct {
	Mode        Mode
	URL         string // public URL (through the embedded gate)
	Host        string // host:port of the public listener
	InternalURL string // the blob server's internal listener (owners, healthz)
	AuthzHTTP   string // two-process: authz's HTTP listener
	PublicKey   string // the blob server's narinfo signing key
	PolicyDir   string // the policies authz watches (a copy the test may edit)
	// Authz is the process deciding (in single-host mode Blob itself),
	// Blob the one serving the cache.
	Authz, Blob *testutil.Process

	GitHub *identitytest.Issuer // GitHub Actions
	GitLab *identitytest.Issuer // GitLab CI (ES256 keys)
	Users  *identitytest.Issuer // the users' OpenID provider (org claim "org")
}

// policiesDir is the repository's shipped policies directory.
func policiesDir() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "policies")
}

// Options tune StartWith.
type Options struct {
	// TokenLifetime > 0 sets the lifetime and maximum lifetime of cache
	// tokens (-token-lifetime, -token-max-lifetime).
	TokenLifetime time.Duration
	// JobAudience: the GitHub and GitLab issuers also accept ID tokens
	// whose audience is the cache's URL, as CI jobs ask for them.
	JobAudience bool
	// Issuers are trusted besides the three test issuers (a real IdP).
	Issuers []identity.IssuerConfig
}

// Start starts flakegate in mode m from the binaries in binDir (Build),
// on free loopback ports, with the token exchange on, and waits until it is
// healthy. Its processes are stopped with SIGTERM when the test ends, and
// the test fails unless they exit cleanly.
func Start(t *testing.T, binDir string, m Mode) *Stack {
	t.Helper()
	return StartWith(t, binDir, m, Options{})
}

// StartWith is Start with options.
func StartWith(t *testing.T, binDir string, m Mode, o Options) *Stack {
	t.Helper()
	dir := t.TempDir()
	s := &Stack{
		Mode:   m,
		GitHub: identitytest.NewIssuer(t),
		GitLab: identitytest.NewIssuer(t, identitytest.WithAlg("ES256")),
		Users:  identitytest.NewIssuer(t),
	}
	publicAddr, internal := testutil.FreeAddr(t), testutil.FreeAddr(t)
	s.URL, s.Host, s.InternalURL = "http://"+publicAddr, publicAddr, "http://"+internal

	// Every issuer by JWKS URL (each its own httptest server), as in production.
	// Each issuer speaks for the orgs the tests use (required with several
	// issuers: identity.IssuerConfig.Orgs).
	users := identitytest.WithOrgs(s.Users.Config("corp-sso", identity.ClaimsOIDC), testOrgs...)
	users.OrgClaim = "org"
	jobAud := []string{identitytest.DefaultAudience}
	if o.JobAudience {
		jobAud = append(jobAud, s.URL)
	}
	issuers, err := yaml.Marshal(identity.Config{Issuers: append([]identity.IssuerConfig{
		identitytest.WithOrgs(s.GitHub.Config("github", identity.ClaimsGitHubActions, jobAud...), testOrgs...),
		identitytest.WithOrgs(s.GitLab.Config("gitlab", identity.ClaimsGitLabCI, jobAud...), testOrgs...),
		users,
	}, o.Issuers...)})
	if err != nil {
		t.Fatalf("issuers file: %v", err)
	}
	issuersFile := filepath.Join(dir, "issuers.yaml")
	write(t, issuersFile, string(issuers))

	s.PolicyDir = filepath.Join(dir, "policies")
	testutil.CopyDir(t, policiesDir(), s.PolicyDir)

	secret, public, err := nixcache.GenerateKey(KeyName)
	if err != nil {
		t.Fatalf("signing key: %v", err)
	}
	keyFile := filepath.Join(dir, "signing-key.sec")
	write(t, keyFile, secret)
	s.PublicKey = public

	authzFlags := []string{"-policies", s.PolicyDir, "-issuers", issuersFile,
		"-public-url", s.URL, "-token-keys", filepath.Join(dir, "token-keys")}
	if o.TokenLifetime > 0 {
		authzFlags = append(authzFlags, "-token-lifetime", o.TokenLifetime.String(), "-token-max-lifetime", o.TokenLifetime.String())
	}
	blobFlags := []string{"-listen", publicAddr, "-internal-listen", internal,
		"-data-dir", filepath.Join(dir, "data"), "-signing-key-file", keyFile}
	switch m {
	case SingleHost:
		s.Blob = testutil.StartProcess(t, "blobserver", filepath.Join(binDir, "blobserver"), nil,
			append(blobFlags, authzFlags...)...)
		s.Authz = s.Blob
	case TwoProcess:
		grpcAddr, authzHTTP := testutil.FreeAddr(t), testutil.FreeAddr(t)
		s.Authz = testutil.StartProcess(t, "authz", filepath.Join(binDir, "authz"), nil,
			append(authzFlags, "-listen", grpcAddr, "-http-listen", authzHTTP, "-owners-url", s.InternalURL)...)
		s.Blob = testutil.StartProcess(t, "blobserver", filepath.Join(binDir, "blobserver"), nil,
			append(blobFlags, "-ext-authz", grpcAddr, "-authz-http", "http://"+authzHTTP)...)
		s.AuthzHTTP = "http://" + authzHTTP
		s.Authz.WaitHealthy(t, s.AuthzHTTP+"/healthz", 30*time.Second)
	default:
		t.Fatalf("unknown mode %q", m)
	}
	// Single host: 200 only once the authorization core serves too.
	s.Blob.WaitHealthy(t, s.InternalURL+"/healthz", 30*time.Second)
	return s
}

func write(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// CI is a token of a GitHub Actions job of repo at ref (refs/heads/main is
// protected). Each call mints a fresh token (5 minutes, as GitHub's).
func (s *Stack) CI(repo, ref string) string {
	return s.GitHub.Mint(identitytest.GitHubActionsClaims(repo, ref))
}

// testOrgs are the orgs the stack's issuers speak for.
var testOrgs = []string{"omnicorp", "evilcorp", "acme", "initech"}

// User is a token of a person of org signed in with the users' OpenID
// provider.
func (s *Stack) User(name, org string) string {
	c := identitytest.OIDCUserClaims(name)
	c["org"] = org
	return s.Users.Mint(c)
}
