package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/flakegate/flakegate/internal/nixtest"
	"github.com/flakegate/flakegate/internal/testutil"
)

// TestQuickstart runs the README's first set-up command, scripts/quickstart.sh,
// and then runs, word by word, the push and pull commands it prints.
func TestQuickstart(t *testing.T) {
	nixtest.Require(t)
	if testing.Short() {
		t.Skip("-short: the quickstart builds the binaries again")
	}
	dir := t.TempDir()
	_, port, _ := strings.Cut(testutil.FreeAddr(t), ":")
	// The script uses port..port+3; take a base unlikely to collide.
	base, _ := strconv.Atoi(port)
	if base > 60000 {
		base -= 5000
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "../../scripts/quickstart.sh")
	cmd.Env = append(os.Environ(), "FLAKEGATE_QUICKSTART_DETACH=1", "FLAKEGATE_QUICKSTART_DIR="+dir, "FLAKEGATE_PORT="+strconv.Itoa(base))
	out, err := cmd.CombinedOutput()
	t.Cleanup(func() { stopPids(t, filepath.Join(dir, "pids")) })
	if err != nil {
		t.Fatalf("quickstart.sh: %v\n%s", err, out)
	}
	text := string(out)

	push := commandsBetween(t, text, "Push a store path", "Pull it back")
	pull := commandsBetween(t, text, "Pull it back", "Or use the union view")
	script := "set -euo pipefail\nexport XDG_CACHE_HOME=" + t.TempDir() + "\n" + push + "\n" + pull
	run := exec.CommandContext(ctx, "bash", "-c", script)
	got, err := run.CombinedOutput()
	if err != nil {
		t.Fatalf("the printed commands failed: %v\n--- script\n%s\n--- output\n%s\n--- quickstart output\n%s", err, script, got, text)
	}
	if !strings.Contains(string(got), "hello from flakegate") {
		t.Fatalf("pulled file does not hold what was pushed:\n%s", got)
	}
	// The pull went through the gate with alice's token and the cache's key.
	log, _ := os.ReadFile(filepath.Join(dir, "authz.log"))
	if !strings.Contains(string(log), `"subject":"oidc:alice"`) || !strings.Contains(string(log), `"subject":"github:omnicorp/app@refs/heads/main"`) {
		t.Errorf("authz did not decide for both the CI push and alice's pull:\n%s", log)
	}
}

// commandsBetween returns the indented command lines between two headings
// of the quickstart's output, continuation lines joined.
func commandsBetween(t *testing.T, text, from, to string) string {
	t.Helper()
	i, j := strings.Index(text, from), strings.Index(text, to)
	if i < 0 || j < i {
		t.Fatalf("quickstart output lacks %q … %q:\n%s", from, to, text)
	}
	var cmds []string
	for _, line := range strings.Split(text[i:j], "\n")[1:] {
		if strings.HasPrefix(line, "  ") {
			cmds = append(cmds, strings.TrimSpace(line))
		}
	}
	if len(cmds) == 0 {
		t.Fatalf("no commands under %q", from)
	}
	return strings.ReplaceAll(strings.Join(cmds, "\n"), "\\\n", " ")
}

func stopPids(t *testing.T, file string) {
	b, err := os.ReadFile(file)
	if err != nil {
		return
	}
	for _, f := range strings.Fields(string(b)) {
		if pid, err := strconv.Atoi(f); err == nil {
			_ = syscall.Kill(pid, syscall.SIGTERM)
		}
	}
}
