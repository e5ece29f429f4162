package main

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/flakegate/flakegate/internal/blobserverapp"
)

func TestGCFlags(t *testing.T) {
	var got blobserverapp.GCConfig
	runGCApp = func(_ context.Context, cfg blobserverapp.GCConfig, _ io.Writer, _ *slog.Logger) error {
		got = cfg
		return nil
	}
	t.Cleanup(func() { runGCApp = blobserverapp.RunGC })
	dir := t.TempDir()
	ret := filepath.Join(dir, "retention.yaml")
	os.WriteFile(ret, []byte("default: {keep_for: 30d}\n"), 0o600)
	if code, stderr := runArgs(t, "gc", "-data-dir", dir, "-retention", ret, "-dry-run", "-older-than", "7d"); code != 0 {
		t.Fatalf("gc: %d %s", code, stderr)
	}
	if !got.DryRun || !got.OverrideKeepFor || got.OlderThan != 7*24*time.Hour || got.DataDir != dir || got.RetentionFile != ret {
		t.Errorf("gc configuration = %+v", got)
	}
	got = blobserverapp.GCConfig{}
	if code, _ := runArgs(t, "gc", "-data-dir", dir); code != 0 || got.OverrideKeepFor {
		t.Errorf("without -older-than every flake keeps its keep_for: %+v", got)
	}
	for _, c := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"gc", "-data-dir", dir, "-older-than", "soon"}, 2, "-older-than"},
		{[]string{"gc"}, 1, "-data-dir is required"},
		{[]string{"gc", "-check"}, 1, "-check needs -retention"},
		{[]string{"gc", "-data-dir", dir, "-retention", filepath.Join(dir, "absent.yaml")}, 1, "retention file"},
		{[]string{"gc", "-bogus"}, 2, "bogus"},
	} {
		if code, stderr := runArgs(t, c.args...); code != c.code || !strings.Contains(stderr, c.want) {
			t.Errorf("%v: %d %q, want %d naming %q", c.args, code, stderr, c.code, c.want)
		}
	}
	// -check prints the file and runs nothing else.
	runGCApp = blobserverapp.RunGC
	var stdout, stderr strings.Builder
	if code := run(context.Background(), []string{"gc", "-check", "-retention", ret}, &stdout, &stderr); code != 0 || !strings.Contains(stdout.String(), "keep_for 720h0m0s") {
		t.Errorf("gc -check: %d %q %q", code, stdout.String(), stderr.String())
	}
}

func TestServerRefusesBadRetention(t *testing.T) {
	dir := t.TempDir()
	ret := filepath.Join(dir, "retention.yaml")
	os.WriteFile(ret, []byte("default: {keep_for: forever}\n"), 0o600)
	if code, stderr := runArgs(t, "-data-dir", dir, "-retention", ret, "-gc-interval", "-1s"); code != 1 || !strings.Contains(stderr, "keep_for") || !strings.Contains(stderr, "-gc-interval") {
		t.Fatalf("bad retention and interval: %d %s", code, stderr)
	}
}
