package policy

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/flakegate/flakegate/internal/testutil"
)

// The settle rule itself, on synthetic snapshots.
func TestSettleWait(t *testing.T) {
	const d = 100 * time.Millisecond
	e := &Engine{opts: Options{Debounce: d}}
	now := time.Now()
	tests := []struct {
		name     string
		modified time.Time
		want     time.Duration
	}{
		{"changed now", now, d + timestampSlack},
		{"changed half a debounce ago", now.Add(-d / 2), d/2 + timestampSlack},
		{"changed a debounce ago", now.Add(-d - timestampSlack), 0},
		{"changed long ago", now.Add(-time.Hour), 0},
	}
	for _, tc := range tests {
		if got := e.settleWait(&snapshot{Modified: tc.modified, stampKey: "k"}, now); got != tc.want {
			t.Errorf("%s: wait %v, want %v", tc.name, got, tc.want)
		}
	}

	// A change time in the future (a clock ahead of ours): the same stat
	// state must be seen again a debounce later, by our own clock.
	future := &snapshot{Modified: now.Add(time.Hour), stampKey: "a"}
	if got := e.settleWait(future, now); got != d {
		t.Errorf("future, first seen: wait %v, want %v", got, d)
	}
	if got := e.settleWait(future, now.Add(d/4)); got != d*3/4 {
		t.Errorf("future, seen again a quarter debounce later: wait %v, want %v", got, d*3/4)
	}
	if got := e.settleWait(future, now.Add(d)); got != 0 {
		t.Errorf("future, unchanged for a debounce: wait %v, want 0", got)
	}
	other := &snapshot{Modified: now.Add(time.Hour), stampKey: "b"} // written again meanwhile
	if got := e.settleWait(other, now.Add(d)); got != d {
		t.Errorf("future, stat state changed: wait %v, want a new full %v", got, d)
	}
	if got := e.settleWait(future, now.Add(2*d)); got != d {
		t.Errorf("future, back to an old stat state: wait %v, want a new full %v", got, d)
	}
}

// A file changed "now" is not activated by any path until Debounce later:
// NewEngine waits for it, reload defers it, Reload waits and retries.
func TestFreshFileIsActivatedOnlyDebounceLater(t *testing.T) {
	const d = 200 * time.Millisecond
	ctx := context.Background()
	logs := &testutil.LogBuffer{}
	reg := prometheus.NewRegistry()

	written := time.Now()
	dir := policyDir(t, map[string]string{"flakegate.rego": userPolicy("v1")})
	e, err := NewEngine(dir, Options{Logger: testLogger(logs), Registerer: reg, Debounce: d, Rescan: -1})
	if err != nil {
		t.Fatal(err)
	}
	if took := time.Since(written); took < d {
		t.Errorf("NewEngine activated a directory written %v ago, want it to wait for the %v debounce", took, d)
	}

	// reload (what Run's change, rescan and catch-up paths call) defers a
	// set whose file changed now, and says how long to wait.
	written = time.Now()
	writeFile(t, dir, "flakegate.rego", userPolicy("v2"))
	wait, err := e.reload(ctx, "test")
	if err != nil || wait <= 0 || wait > d+timestampSlack {
		t.Fatalf("reload right after a write = %v, %v; want a wait in (0, %v]", wait, err, d+timestampSlack)
	}
	if r := decide(t, e, userInput("x")).Reason; r != "v1" {
		t.Fatalf("a file written now was activated: reason %q", r)
	}
	time.Sleep(wait)
	if wait, err := e.reload(ctx, "test"); wait != 0 || err != nil {
		t.Fatalf("reload after the wait = %v, %v; want it activated", wait, err)
	}
	if r := decide(t, e, userInput("x")).Reason; r != "v2" {
		t.Fatalf("after the debounce: reason %q, want v2", r)
	}
	if took := time.Since(written); took < d {
		t.Errorf("activated %v after the write, before the %v debounce", took, d)
	}
	if got := metricValue(t, e.metrics.reloads.WithLabelValues("error")); got != 0 {
		t.Errorf("deferred reloads counted as %v errors, want 0", got)
	}

	// A copy that keeps an old mtime (cp -p, tar) is still recent by its ctime.
	writeFile(t, dir, "flakegate.rego", userPolicy("v3"))
	old := time.Now().Add(-time.Hour)
	if err := os.Chtimes(filepath.Join(dir, "flakegate.rego"), old, old); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(filepath.Join(dir, "flakegate.rego")); err != nil {
		t.Fatal(err)
	} else if !changeTime(fi).IsZero() {
		if wait, err := e.reload(ctx, "test"); wait <= 0 || err != nil {
			t.Errorf("reload of a file with an old mtime written now = %v, %v; want it deferred by its ctime", wait, err)
		}
	}

	// Reload waits for the debounce itself.
	written = time.Now()
	writeFile(t, dir, "flakegate.rego", userPolicy("v4"))
	if err := e.Reload(ctx); err != nil {
		t.Fatalf("Reload: %v", err)
	}
	if r := decide(t, e, userInput("x")).Reason; r != "v4" {
		t.Fatalf("after Reload: reason %q, want v4", r)
	}
	if took := time.Since(written); took < d {
		t.Errorf("Reload activated a file %v after it was written, before the %v debounce", took, d)
	}

	// A modification time in the future (a clock ahead of ours) does not
	// block reloads until that time: the same state seen a debounce apart is
	// enough.
	writeFile(t, dir, "flakegate.rego", userPolicy("v5"))
	ahead := time.Now().Add(time.Hour)
	if err := os.Chtimes(filepath.Join(dir, "flakegate.rego"), ahead, ahead); err != nil {
		t.Fatal(err)
	}
	written = time.Now()
	if err := e.Reload(ctx); err != nil {
		t.Fatalf("Reload of a file dated an hour ahead: %v", err)
	}
	if r := decide(t, e, userInput("x")).Reason; r != "v5" {
		t.Fatalf("after Reload: reason %q, want v5", r)
	}
	if took := time.Since(written); took < d {
		t.Errorf("a file dated in the future was activated after %v, before being seen unchanged for %v", took, d)
	}
}

// A directory that keeps changing is never activated: Reload and NewEngine
// give up with ErrUnsettled, without recording a policy error, and the
// active revision keeps serving.
func TestUnsettledDirectoryIsNotActivated(t *testing.T) {
	// The writer rewrites a file every 2 ms; a debounce of 100 ms leaves a
	// busy machine a lot of room to stall it without the directory settling.
	const d = 100 * time.Millisecond
	dir := policyDir(t, map[string]string{"flakegate.rego": userPolicy("v1"), "users.yaml": usersYAML})
	e, err := NewEngine(dir, Options{Logger: testLogger(&testutil.LogBuffer{}), Registerer: prometheus.NewRegistry(), Debounce: d, Rescan: -1})
	if err != nil {
		t.Fatal(err)
	}
	rev := e.Revision()

	busy := t.TempDir() // a second directory, for NewEngine
	writeFile(t, busy, "flakegate.rego", userPolicy("v1"))
	stop := make(chan struct{})
	started := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := 0; ; i++ {
			_ = os.WriteFile(filepath.Join(dir, "users.yaml"), fmt.Appendf(nil, "allowed: [alice, u%d]\n", i), 0o644)
			_ = os.WriteFile(filepath.Join(busy, "users.yaml"), fmt.Appendf(nil, "allowed: [u%d]\n", i), 0o644)
			if i == 0 {
				close(started)
			}
			select {
			case <-stop:
				return
			case <-time.After(2 * time.Millisecond):
			}
		}
	})
	stopWriter := sync.OnceFunc(func() { close(stop) })
	defer func() { stopWriter(); wg.Wait() }()
	<-started // the directory now differs from the active revision

	var newErr error
	wg.Go(func() {
		_, newErr = NewEngine(busy, Options{Logger: testLogger(&testutil.LogBuffer{}), Debounce: d, Rescan: -1})
	})
	start := time.Now()
	err = e.Reload(context.Background())
	if !errors.Is(err, ErrUnsettled) {
		t.Errorf("Reload of a directory that never settles = %v, want ErrUnsettled", err)
	}
	if took := time.Since(start); took < d || took > 10*time.Second {
		t.Errorf("Reload gave up after %v", took)
	}
	if e.Revision() != rev || e.LastError() != nil {
		t.Errorf("revision %s (was %s), LastError %v: an unsettled directory changed the engine's state", e.Revision(), rev, e.LastError())
	}
	if got := metricValue(t, e.metrics.reloads.WithLabelValues("error")); got != 0 {
		t.Errorf("an unsettled directory counted as %v failed loads, want 0", got)
	}
	stopWriter()
	wg.Wait()
	if !errors.Is(newErr, ErrUnsettled) {
		t.Errorf("NewEngine on a directory that never settles = %v, want ErrUnsettled (fail closed)", newErr)
	}
}

// secureRead is a read of omnicorp/super-duper-secure, whose entry in the
// shipped flakes.yaml restricts read to alice and bob, by user of omnicorp.
func secureRead(user string) map[string]any {
	return map[string]any{
		"action": "read",
		"flake":  map[string]any{"org": "omnicorp", "name": "super-duper-secure"},
		"subject": map[string]any{
			"authenticated": true, "kind": "user", "provider": "oidc",
			"org": "omnicorp", "user": user, "via": "idp",
		},
	}
}

// The red team's attack on hot reload: while readers hammer a denied read
// (mallory, an omnicorp member not among super-duper-secure's readers),
// flakes.yaml is deleted, emptied, written slowly in small chunks, and left
// as a valid-YAML prefix that lacks the read restriction. No evaluation may
// ever allow the read.
func TestHotReloadNeverWidensUnderChurn(t *testing.T) {
	const (
		debounce = 40 * time.Millisecond
		churn    = 2500 * time.Millisecond
	)
	dir := t.TempDir()
	testutil.CopyDir(t, "../../policies", dir)
	flakesPath := filepath.Join(dir, "flakes.yaml")
	original := testutil.ReadFile(t, flakesPath)
	cut := strings.Index(original, "  read:\n    users: [alice, bob]")
	if cut < 0 {
		t.Fatal("policies/flakes.yaml no longer restricts super-duper-secure with read.users: [alice, bob]")
	}
	prefix := original[:cut] // valid YAML: the entry with its description, without read

	// Control: the prefix, had it been activated, would widen the read. So
	// the attack below is a real one.
	{
		ctl := t.TempDir()
		testutil.CopyDir(t, dir, ctl)
		writeFile(t, ctl, "flakes.yaml", prefix)
		ce, err := NewEngine(ctl, Options{Logger: testLogger(&testutil.LogBuffer{}), Debounce: debounce, Rescan: -1})
		if err != nil {
			t.Fatalf("control: the prefix does not load (%v); the test needs a dangerous prefix", err)
		}
		if !decide(t, ce, secureRead("mallory")).Allow {
			t.Fatal("control: the prefix does not allow mallory; the test needs a dangerous prefix")
		}
	}

	logs := &testutil.LogBuffer{}
	e, err := NewEngine(dir, Options{Logger: testLogger(logs), Registerer: prometheus.NewRegistry(), Debounce: debounce, Rescan: 15 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	rev := e.Revision()
	if decide(t, e, secureRead("mallory")).Allow || !decide(t, e, secureRead("alice")).Allow {
		t.Fatal("before the churn: want mallory denied and alice allowed")
	}
	runEngine(t, e)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var evaluations, widened atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, 3)
	var widenedAt sync.Map // revision → reason, of allowed reads
	for range 3 {
		wg.Go(func() {
			input := secureRead("mallory")
			for ctx.Err() == nil {
				runtime.Gosched() // leave the reloader room on a small machine
				d, err := e.Evaluate(ctx, input)
				if err != nil {
					if ctx.Err() == nil {
						errs <- err
					}
					return
				}
				evaluations.Add(1)
				if d.Allow {
					widened.Add(1)
					widenedAt.Store(d.Revision, d.Reason)
				}
			}
		})
	}

	write := func(content string) { writeFile(t, dir, "flakes.yaml", content) }
	pause := func(d time.Duration) { time.Sleep(d) }
	scenarios := []func(){
		func() { // (a) flakes.yaml deleted for half a second
			if err := os.Remove(flakesPath); err != nil {
				t.Fatal(err)
			}
			pause(500 * time.Millisecond)
			writeAtomic(t, dir, "flakes.yaml", original)
		},
		func() { // (b) emptied (it loads as null), then restored in place
			write("")
			pause(300 * time.Millisecond)
			write(original)
		},
		func() {
			// (c) written in place, a line at a time, 10 ms apart: for a
			// moment the file holds each prefix, some of them valid YAML
			// without the entry's read restriction.
			f, err := os.OpenFile(flakesPath, os.O_WRONLY|os.O_TRUNC, 0)
			if err != nil {
				t.Fatal(err)
			}
			for _, line := range strings.SplitAfter(original, "\n") {
				if _, err := f.WriteString(line); err != nil {
					t.Fatal(err)
				}
				pause(10 * time.Millisecond)
			}
			if err := f.Close(); err != nil {
				t.Fatal(err)
			}
		},
		func() { // (d) the dangerous prefix, left for half a debounce, then completed
			for range 3 {
				write(prefix)
				pause(debounce / 2)
				write(original)
				pause(2 * debounce)
			}
		},
	}
	start := time.Now()
	for i := 0; i < len(scenarios) || time.Since(start) < churn; i++ {
		scenarios[i%len(scenarios)]()
		pause(2 * debounce) // let the engine see the restored file, too
	}
	writeAtomic(t, dir, "flakes.yaml", original) // the last word: the original
	churned := time.Since(start)

	// After the churn the engine serves the original revision.
	eventually(t, settleDeadline, "the original revision serves again", func() bool {
		return e.Revision() == rev && e.LastError() == nil
	})
	cancel()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("Evaluate: %v", err)
	}

	n, w := evaluations.Load(), widened.Load()
	t.Logf("%d evaluations during %v of churn, %d allowed; %d reloads refused, %d deferred until settled",
		n, churned.Round(time.Millisecond), w, strings.Count(logs.String(), `"msg":"policy reload failed`),
		strings.Count(logs.String(), "not activated yet")+strings.Count(logs.String(), "changed while it was read"))
	if w != 0 {
		widenedAt.Range(func(rev, reason any) bool {
			t.Errorf("revision %v allowed mallory: %v", rev, reason)
			return true
		})
		t.Errorf("%d of %d reads by mallory were allowed while flakes.yaml churned: hot reload failed open", w, n)
	}
	if n < 500 {
		t.Errorf("only %d evaluations ran during the churn; want hundreds", n)
	}
	if d := decide(t, e, secureRead("mallory")); d.Allow || d.Revision != rev {
		t.Errorf("after the churn mallory: %+v, want denied by revision %s", d, rev)
	}
	if d := decide(t, e, secureRead("alice")); !d.Allow || d.Revision != rev {
		t.Errorf("after the churn alice: %+v, want allowed by revision %s", d, rev)
	}

	// The deletion and the emptying were judged (and refused by the policy's
	// config_errors), not merely missed, and the removal was called out.
	log := logs.String()
	for _, want := range []string{
		"policy reload removes data file flakes.yaml, which the active revision has",
		"flakes.yaml is missing",
		"flakes.yaml is empty",
	} {
		if !strings.Contains(log, want) {
			t.Errorf("the log does not mention %q", want)
		}
	}
}
