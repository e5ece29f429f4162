//go:build linux

package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/flakegate/flakegate/internal/nixtest"
)

// TestQuickstart runs the README's first command, scripts/quickstart.sh
// (detached, in a temporary directory, on free ports), and then, word by
// word, what it prints: the push, the pull, the union-view nix.conf, the
// token exchange, the mint command, and the stop command, after which both
// servers must have exited cleanly.
func TestQuickstart(t *testing.T) {
	requireQuickstart(t)
	dir := t.TempDir()
	port := freePorts(t, 4) // the script uses port … port+3
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	start := exec.CommandContext(ctx, "bash", "../../scripts/quickstart.sh")
	start.Env = append(os.Environ(), "FLAKEGATE_QUICKSTART_DETACH=1", "FLAKEGATE_QUICKSTART_DIR="+dir, "FLAKEGATE_PORT="+strconv.Itoa(port))
	out, err := start.CombinedOutput()
	pids := readPids(t, filepath.Join(dir, "pids"))
	t.Cleanup(func() { stopServers(t, pids) }) // when the test stops before the printed stop command
	if err != nil {
		t.Fatalf("quickstart.sh: %v\n%s", err, out)
	}
	text := string(out)
	q := parseQuickstart(t, text)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("quickstart output:\n%s", text)
		}
	})

	// bash runs one part of the printed text with a fresh Nix cache and home
	// and returns its standard output.
	home := t.TempDir()
	bash := func(t *testing.T, script string, env ...string) string {
		t.Helper()
		cmd := exec.CommandContext(ctx, "bash", "-c", "set -euo pipefail\n"+script)
		cmd.Env = append(os.Environ(), append([]string{"HOME=" + home, "XDG_CACHE_HOME=" + t.TempDir()}, env...)...)
		var stderr strings.Builder
		cmd.Stderr = &stderr
		got, err := cmd.Output()
		if err != nil {
			t.Fatalf("the printed commands failed: %v\n--- commands\n%s\n--- stdout\n%s\n--- stderr\n%s", err, script, got, stderr.String())
		}
		return string(got)
	}

	// Push, then pull back as alice; the pushed path is kept for what follows.
	pathFile := filepath.Join(t.TempDir(), "path")
	got := bash(t, q.push+"\n"+q.pull+"\nprintf '%s' \"$path\" > "+pathFile)
	if !strings.Contains(got, "hello from flakegate") {
		t.Fatalf("the pulled file does not hold what was pushed:\n%s", got)
	}
	b, err := os.ReadFile(pathFile)
	if err != nil {
		t.Fatal(err)
	}
	path := string(b)

	// The union view as a substituter, configured with the printed nix.conf
	// lines (after `substituters =`: this machine has no cache.nixos.org).
	confDir := t.TempDir()
	conf := "substituters =\nexperimental-features = nix-command\n" + q.unionConf + "\n"
	if err := os.WriteFile(filepath.Join(confDir, "nix.conf"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	store := t.TempDir()
	got = bash(t, fmt.Sprintf("nix-store --store %s --realise %s >/dev/null\ncat %s%s", store, path, store, path), "NIX_CONF_DIR="+confDir)
	if !strings.Contains(got, "hello from flakegate") {
		t.Fatalf("substituted through the union view, the file holds:\n%s", got)
	}

	// The token exchange.
	var exchanged struct {
		Token     string `json:"token"`
		ExpiresAt string `json:"expires_at"`
	}
	got = bash(t, q.exchange)
	if err := json.Unmarshal([]byte(got), &exchanged); err != nil || exchanged.Token == "" {
		t.Fatalf("token exchange answered %q (%v), want {\"token\": …}", got, err)
	}
	if _, err := time.Parse(time.RFC3339, exchanged.ExpiresAt); err != nil {
		t.Errorf("expires_at %q: %v", exchanged.ExpiresAt, err)
	}

	// Minting more tokens: one for omnicorp/app reads what was pushed, and so
	// does the exchanged token; the narinfo is signed with the printed key.
	minted := strings.TrimSpace(bash(t, strings.Replace(q.mint, "ORG/REPO", "omnicorp/app", 1)))
	keyName, _, _ := strings.Cut(q.publicKey, ":")
	for name, token := range map[string]string{"minted": minted, "exchanged": exchanged.Token} {
		r := request(t, http.MethodGet, q.cache+"/omnicorp/app/"+nixtest.HashPart(path)+".narinfo", token, "")
		if r.status != http.StatusOK || !strings.Contains(r.body, "\nSig: "+keyName+":") {
			t.Errorf("%s token reads the pushed narinfo: %d\n%s\nwant 200, signed by %s", name, r.status, r.body, keyName)
		}
	}

	// The decisions were made for the identities the quickstart names.
	log, _ := os.ReadFile(filepath.Join(dir, "blobserver.log"))
	for _, subject := range []string{`"subject":"oidc:alice"`, `"subject":"github:omnicorp/app@refs/heads/main"`} {
		if !strings.Contains(string(log), subject) {
			t.Errorf("blobserver.log has no decision for %s", subject)
		}
	}

	// Stop, as printed; the server exits cleanly.
	bash(t, q.stop)
	for _, pid := range pids {
		status, err := reap(pid, 30*time.Second)
		if err != nil {
			t.Errorf("server %d: %v", pid, err)
		} else if !status.Exited() || status.ExitStatus() != 0 {
			t.Errorf("server %d did not exit cleanly after the stop command: %v", pid, status)
		}
	}
	pids = nil
}

// requireQuickstart skips without Nix or in -short, and makes this process
// the subreaper of the detached server the script starts: it outlives the
// script, and this process inherits it, to reap it and check its exit status.
func requireQuickstart(t *testing.T) {
	t.Helper()
	nixtest.Require(t)
	if testing.Short() {
		t.Skip("-short: the quickstart builds its own binaries")
	}
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		t.Fatalf("become child subreaper: %v", err)
	}
}

// quickstart is what the script prints.
type quickstart struct {
	cache, publicKey                            string
	push, pull, unionConf, exchange, mint, stop string
}

func parseQuickstart(t *testing.T, text string) quickstart {
	t.Helper()
	return quickstart{
		cache:     wordAfter(t, text, "cache:"),
		publicKey: wordAfter(t, text, "public key:"),
		push:      commandsBetween(t, text, "Push a store path", "Pull it back"),
		pull:      commandsBetween(t, text, "Pull it back", "Or use the union view"),
		unionConf: commandsBetween(t, text, "Or use the union view", "Exchange a token"),
		exchange:  commandsBetween(t, text, "Exchange a token", "Mint more tokens:"),
		mint:      lineAfter(t, text, "Mint more tokens:"),
		stop:      lineAfter(t, text, "Stop:"),
	}
}

// lineAfter is the rest of the first line of text that starts with label
// (after indentation).
func lineAfter(t *testing.T, text, label string) string {
	t.Helper()
	for _, line := range strings.Split(text, "\n") {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(line), label); ok {
			return strings.TrimSpace(rest)
		}
	}
	t.Fatalf("quickstart output has no %q line:\n%s", label, text)
	return ""
}

// wordAfter is the first word of lineAfter.
func wordAfter(t *testing.T, text, label string) string {
	t.Helper()
	w, _, _ := strings.Cut(lineAfter(t, text, label), " ")
	return w
}

// commandsBetween returns the indented lines between two headings of the
// quickstart's output, continuation lines joined.
func commandsBetween(t *testing.T, text, from, to string) string {
	t.Helper()
	i := strings.Index(text, from)
	j := strings.Index(text[max(i, 0):], to)
	if i < 0 || j < 0 {
		t.Fatalf("quickstart output lacks %q … %q:\n%s", from, to, text)
	}
	var lines []string
	for _, line := range strings.Split(text[i:i+j], "\n")[1:] {
		if strings.HasPrefix(line, "  ") {
			lines = append(lines, strings.TrimSpace(line))
		}
	}
	if len(lines) == 0 {
		t.Fatalf("no commands under %q", from)
	}
	return strings.ReplaceAll(strings.Join(lines, "\n"), "\\\n", " ")
}

// freePorts returns the first of n consecutive loopback ports that were free
// a moment ago. They are taken below the kernel's ephemeral range (32768 and
// up), where the outgoing connections of every process on the machine would
// otherwise take them between this check and the servers' bind.
func freePorts(t *testing.T, n int) int {
	t.Helper()
	for range 200 {
		base := 20000 + rand.IntN(12000-n)
		var held []net.Listener
		for p := base; p < base+n; p++ {
			l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
			if err != nil {
				break
			}
			held = append(held, l)
		}
		for _, l := range held {
			l.Close()
		}
		if len(held) == n {
			return base
		}
	}
	t.Fatalf("no %d consecutive free ports", n)
	return 0
}

func readPids(t *testing.T, file string) []int {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		return nil // the script failed before starting the servers
	}
	var pids []int
	for _, f := range strings.Fields(string(b)) {
		if pid, err := strconv.Atoi(f); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids
}

// stopServers sends SIGTERM to the servers still running and reaps them.
func stopServers(t *testing.T, pids []int) {
	for _, pid := range pids {
		_ = unix.Kill(pid, unix.SIGTERM)
		if _, err := reap(pid, 30*time.Second); err != nil {
			t.Errorf("server %d: %v", pid, err)
		}
	}
}

// reap waits for the exit of pid, a child of this process (see the
// subreaper above), and returns its status.
func reap(pid int, timeout time.Duration) (unix.WaitStatus, error) {
	deadline := time.Now().Add(timeout)
	for {
		var ws unix.WaitStatus
		got, err := unix.Wait4(pid, &ws, unix.WNOHANG, nil)
		switch {
		case errors.Is(err, unix.EINTR):
			continue
		case err != nil:
			return ws, fmt.Errorf("wait: %w", err)
		case got == pid:
			return ws, nil
		}
		if time.Now().After(deadline) {
			_ = unix.Kill(pid, unix.SIGKILL)
			_, _ = unix.Wait4(pid, &ws, 0, nil)
			return ws, fmt.Errorf("still running %s after SIGTERM: killed", timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestQuickstartRefusesSecondInstance starts the quickstart (detached),
// then starts it again while it runs: with the same state directory, and
// with another directory on the same ports. Both refuse with a message
// saying why, before building or writing anything; the first instance
// keeps serving, its pid file and logs untouched (the second used to
// truncate them, overwrite the pid file and report success because its
// readiness check trusted whichever server answered).
func TestQuickstartRefusesSecondInstance(t *testing.T) {
	requireQuickstart(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	quickstart := func(dir string, port int) (string, error) {
		cmd := exec.CommandContext(ctx, "bash", "../../scripts/quickstart.sh")
		cmd.Env = append(os.Environ(), "FLAKEGATE_QUICKSTART_DETACH=1", "FLAKEGATE_QUICKSTART_DIR="+dir, "FLAKEGATE_PORT="+strconv.Itoa(port))
		out, err := cmd.CombinedOutput()
		return string(out), err
	}

	dir, port := t.TempDir(), freePorts(t, 4)
	out, err := quickstart(dir, port)
	pids := readPids(t, filepath.Join(dir, "pids"))
	t.Cleanup(func() { stopServers(t, pids) })
	if err != nil {
		t.Fatalf("first quickstart: %v\n%s", err, out)
	}
	if !strings.Contains(out, "quickstart: built in ") {
		t.Errorf("the build step shows no progress or time:\n%s", out)
	}
	cache := wordAfter(t, out, "cache:")
	type snapshot struct {
		content string
		inode   uint64
	}
	snap := func() map[string]snapshot {
		m := map[string]snapshot{}
		for _, f := range []string{"blobserver.log", "pids", "issuers.yaml"} {
			p := filepath.Join(dir, f)
			b, err := os.ReadFile(p)
			var st unix.Stat_t
			if err != nil || unix.Stat(p, &st) != nil {
				t.Fatalf("%s: %v", f, err)
			}
			m[f] = snapshot{string(b), st.Ino}
		}
		return m
	}
	before := snap()

	for _, c := range []struct {
		name, dir string
		port      int
		why       string
	}{
		{"same state directory", dir, freePorts(t, 4), "another quickstart is already running with " + dir},
		{"same ports", t.TempDir(), port, fmt.Sprintf("port %d on 127.0.0.1 is in use", port)},
	} {
		t.Run(c.name, func(t *testing.T) {
			out, err := quickstart(c.dir, c.port)
			var exit *exec.ExitError
			if !errors.As(err, &exit) || exit.ExitCode() != 1 {
				t.Fatalf("second quickstart: %v, want exit status 1\n%s", err, out)
			}
			if !strings.Contains(out, c.why) || strings.Contains(out, "flakegate is running") || strings.Contains(out, "building") {
				t.Fatalf("second quickstart's output does not refuse (%q) before building:\n%s", c.why, out)
			}
			if c.dir != dir {
				if _, err := os.Stat(filepath.Join(c.dir, "pids")); err == nil {
					t.Error("the refused quickstart wrote a pid file")
				}
			}
		})
	}

	// The first instance: its files untouched (the logs may only have
	// grown), its servers alive and serving.
	after := snap()
	for f, b := range before {
		a := after[f]
		if a.inode != b.inode || !strings.HasPrefix(a.content, b.content) {
			t.Errorf("%s of the running instance was replaced or rewritten", f)
		}
	}
	for _, pid := range pids {
		if unix.Kill(pid, 0) != nil {
			t.Errorf("server %d of the first quickstart is gone", pid)
		}
	}
	resp, err := http.Get(cache + "/nix-cache-info")
	if err != nil {
		t.Fatalf("the first quickstart no longer serves: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("the first quickstart answers nix-cache-info with %d", resp.StatusCode)
	}
}
