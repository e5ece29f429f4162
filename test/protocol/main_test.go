// Package protocol replays, request by request, what Nix 2.35 sends to an
// HTTP binary cache — `nix copy --to` with every optional file and a
// substitution — against flakegate as users run it (test/teststack: authz
// and blobserver processes, the embedded gate, the shipped policies), and
// checks each answer the way Nix's own code handles it. The requests,
// headers and status handling are taken from Nix 2.35.2's sources, cited at
// each step. It needs no Nix and no network.
package protocol

import (
	"os"
	"testing"

	"github.com/flakegate/flakegate/test/teststack"
)

// binDir holds cmd/authz and cmd/blobserver, built once by TestMain.
var (
	binDir   string
	buildErr error
)

func TestMain(m *testing.M) {
	os.Exit(teststack.Main(m, "protocol", true, &binDir, &buildErr))
}

// inModes runs test against a stack in each mode (teststack.Modes).
func inModes(t *testing.T, test func(t *testing.T, s *teststack.Stack)) {
	for _, m := range teststack.Modes {
		t.Run(string(m), func(t *testing.T) {
			if buildErr != nil {
				t.Fatal(buildErr)
			}
			test(t, teststack.Start(t, binDir, m))
		})
	}
}
