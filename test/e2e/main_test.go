// Package e2e runs flakegate as users run it on one machine — the authz and
// blobserver binaries as real processes, the blob server's embedded gate in
// front, a copy of the shipped policies — and drives it with a real Nix
// client and tokens from three test identity providers (GitHub-Actions-shaped,
// GitLab-CI-shaped and user tokens, each issuer with its own keys and JWKS
// endpoint). It also runs the README's quickstart word by word.
//
// The tests skip, saying what to install, when nix-bin is missing.
package e2e

import (
	"os"
	"os/exec"
	"testing"

	"github.com/flakegate/flakegate/test/teststack"
)

// binDir holds cmd/authz and cmd/blobserver, built once by TestMain.
var (
	binDir   string
	buildErr error
)

func TestMain(m *testing.M) {
	// Without Nix every test skips: do not spend a build on them.
	_, err := exec.LookPath("nix")
	os.Exit(teststack.Main(m, "e2e", err == nil, &binDir, &buildErr))
}
