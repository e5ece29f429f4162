package policy

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// reloadDeadline is how long a change may take to show in decisions: the
// requirement is 1 s. The race detector slows compilation several times on a
// small shared machine, so it gets more room.
func reloadDeadline() time.Duration {
	if raceEnabled {
		return 5 * time.Second
	}
	return time.Second
}

// settleDeadline bounds the waits that only need to happen eventually (an
// error to be reported, a rescan to run); it is generous so that a busy CI
// machine does not fail them.
const settleDeadline = 10 * time.Second

func testLogger(w io.Writer) *slog.Logger {
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// writeFile writes name in dir directly (an in-place edit).
func writeFile(t testing.TB, dir, name, content string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// writeAtomic writes a dotfile next to name and renames it over name, as
// careful tools (and `kubectl cp`-style deploys) do.
func writeAtomic(t testing.TB, dir, name, content string) {
	t.Helper()
	tmp := filepath.Join(dir, "."+name+".tmp")
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
		t.Fatal(err)
	}
}

// policyDir creates a temp dir holding files.
func policyDir(t testing.TB, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		writeFile(t, dir, name, content)
	}
	return dir
}

// runEngine starts e.Run and stops it when the test ends, failing the test
// if Run returns an error.
func runEngine(t testing.TB, e *Engine) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Error("Run did not return after its context was cancelled")
		}
	})
}

// eventually polls cond every 10ms until it holds or d passes.
func eventually(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		if cond() {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// decide evaluates input and fails the test on an evaluation error.
func decide(t testing.TB, e *Engine, input map[string]any) Decision {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	d, err := e.Evaluate(ctx, input)
	if err != nil {
		t.Fatalf("Evaluate(%v): %v", input, err)
	}
	return d
}

// userPolicy allows users listed in data.users.allowed, with a reason that
// names the rule version, so tests can tell which set decided.
func userPolicy(version string) string {
	return `package flakegate.authz

default allow := false

allow if input.subject.user in data.users.allowed

reason := "` + version + `"
`
}

func userInput(name string) map[string]any {
	return map[string]any{
		"action":  "read",
		"flake":   map[string]any{"org": "omnicorp", "name": "app"},
		"subject": map[string]any{"authenticated": true, "user": name},
	}
}

// metricValue is the value of a single-series collector (a counter or gauge
// child); metricSeries counts the series a collector exports.
func metricValue(t testing.TB, c prometheus.Collector) float64 {
	t.Helper()
	ms := collect(c)
	if len(ms) != 1 {
		t.Fatalf("collector has %d series, want 1", len(ms))
	}
	var m dto.Metric
	if err := ms[0].Write(&m); err != nil {
		t.Fatal(err)
	}
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	}
	t.Fatalf("metric %v is neither counter nor gauge", ms[0].Desc())
	return 0
}

func metricSeries(c prometheus.Collector) int { return len(collect(c)) }

func collect(c prometheus.Collector) []prometheus.Metric {
	ch := make(chan prometheus.Metric, 64)
	go func() { c.Collect(ch); close(ch) }()
	var ms []prometheus.Metric
	for m := range ch {
		ms = append(ms, m)
	}
	return ms
}
