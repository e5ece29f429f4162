package ciaction

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func envOf(m map[string]string, stderr *strings.Builder) Env {
	return Env{Getenv: func(k string) string { return m[k] }, Stderr: stderr}
}

func TestHookQueues(t *testing.T) {
	dir := Dir(t.TempDir())
	if err := os.MkdirAll(dir.path(queueDir), 0o755); err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	Hook(dir, envOf(map[string]string{"OUT_PATHS": "/nix/store/a-x /nix/store/b-x", "DRV_PATH": "/nix/store/c-x.drv"}, &stderr))
	Hook(dir, envOf(map[string]string{"OUT_PATHS": "", "DRV_PATH": "/nix/store/d-y.drv"}, &stderr)) // Nix 2.8.0
	Hook(dir, envOf(map[string]string{}, &stderr))                                                  // nothing built: nothing queued
	p := &pusherLoop{dir: dir}
	q := p.queue()
	if len(q) != 2 {
		t.Fatalf("queue %v, want 2 entries", q)
	}
	var all []string
	for _, f := range q {
		b, _ := os.ReadFile(filepath.Join(dir.path(queueDir), f))
		all = append(all, strings.Fields(string(b))...)
	}
	if got := strings.Join(all, " "); got != "/nix/store/a-x /nix/store/b-x drv:/nix/store/d-y.drv" {
		t.Fatalf("queued %q", got)
	}
	if stderr.Len() != 0 {
		t.Fatalf("stderr %q", stderr.String())
	}
}

// TestHookNeverFails: without a queue directory the hook says so and
// returns (the build goes on).
func TestHookNeverFails(t *testing.T) {
	var stderr strings.Builder
	Hook(Dir(filepath.Join(t.TempDir(), "gone")), envOf(map[string]string{"OUT_PATHS": "/nix/store/a-x"}, &stderr))
	if !strings.Contains(stderr.String(), "could not queue 1 paths") {
		t.Fatalf("stderr %q", stderr.String())
	}
}

// TestSetupUnreachableCacheWarns: a cache that cannot be reached is a
// warning (a GitHub annotation and a summary line), never a failure; bad
// usage is an error.
func TestSetupUnreachableCacheWarns(t *testing.T) {
	dir := t.TempDir()
	var stderr strings.Builder
	env := envOf(map[string]string{"GITHUB_ACTIONS": "true", "GITHUB_REPOSITORY": "Omnicorp/App", "FLAKEGATE_ID_TOKEN": "a.b.c"}, &stderr)
	cfg := DefaultSetupConfig()
	cfg.Cache, cfg.StateDir, cfg.NixConf, cfg.Timeout = "http://127.0.0.1:1", dir, NixConfNone, 2*time.Second
	if err := Setup(context.Background(), cfg, env); err != nil {
		t.Fatalf("an unreachable cache failed setup: %v", err)
	}
	if !strings.Contains(stderr.String(), "::warning title=flakegate::flakegate: the cache is not used in this job") {
		t.Fatalf("stderr %q", stderr.String())
	}
	if w := Dir(dir).lines(warningsLog); len(w) != 1 {
		t.Fatalf("warnings.log %v", w)
	}
	if Dir(dir).exists(stateFile) {
		t.Fatal("state saved for a failed setup")
	}
	bad := DefaultSetupConfig()
	bad.StateDir = dir
	if err := Setup(context.Background(), bad, env); err == nil || !strings.Contains(err.Error(), "--cache") {
		t.Fatalf("no cache: %v", err)
	}
	if got := defaultFlake(env.Getenv); got != "omnicorp/app" {
		t.Fatalf("default flake %q", got)
	}
}

func TestSummary(t *testing.T) {
	s := summary(&State{Flake: "omnicorp/app", Cache: "https://c"}, FlushResult{Pushed: []string{"a", "b"}, Warnings: []string{"pusher: 2 built paths not pushed"}})
	for _, want := range []string{"Pushed **2** paths", "`omnicorp/app`", ":warning: 1 warnings", "- 2 built paths not pushed"} {
		if !strings.Contains(s, want) {
			t.Errorf("summary lacks %q:\n%s", want, s)
		}
	}
}

// TestQueueIgnoresOtherUsersEntries: an entry another local user drops in
// the (world-writable) queue is not pushed; a symlink neither.
func TestQueueIgnoresOtherUsersEntries(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root to create a file owned by another user")
	}
	dir := Dir(t.TempDir())
	if err := os.MkdirAll(dir.path(queueDir), 0o755); err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	Hook(dir, envOf(map[string]string{"OUT_PATHS": "/nix/store/a-x"}, &stderr))
	evil := filepath.Join(dir.path(queueDir), "00000000000000000001-evil.paths")
	if err := os.WriteFile(evil, []byte("/nix/store/evil-x\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(evil, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(evil, filepath.Join(dir.path(queueDir), "00000000000000000002-link.paths")); err != nil {
		t.Fatal(err)
	}
	q := (&pusherLoop{dir: dir}).queue()
	if len(q) != 1 || strings.Contains(q[0], "evil") || strings.Contains(q[0], "link") {
		t.Fatalf("queue %v: want only the hook's entry", q)
	}
}
