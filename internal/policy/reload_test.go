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

const usersYAML = "allowed: [alice]\n"

func TestReloadRuleChange(t *testing.T) {
	tests := []struct {
		name  string
		write func(t testing.TB, dir, name, content string)
	}{
		{"in-place write", writeFile},
		{"atomic rename", writeAtomic},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := policyDir(t, map[string]string{"flakegate.rego": userPolicy("v1"), "users.yaml": usersYAML})
			reg := prometheus.NewRegistry()
			// No periodic rescan: only fsnotify can deliver this change.
			e, err := NewEngine(dir, Options{Logger: testLogger(&testutil.LogBuffer{}), Registerer: reg, Debounce: 20 * time.Millisecond, Rescan: -1})
			if err != nil {
				t.Fatal(err)
			}
			swaps := e.Subscribe()
			runEngine(t, e)
			rev1 := e.Revision()
			if d := decide(t, e, userInput("bob")); d.Allow || d.Reason != "v1" || d.Revision != rev1 {
				t.Fatalf("before: %+v, want deny by v1 at %s", d, rev1)
			}

			// The new rule lets everyone in.
			tc.write(t, dir, "flakegate.rego", strings.Replace(userPolicy("v2"), "default allow := false", "default allow := true", 1))
			eventually(t, reloadDeadline(), "bob allowed by v2", func() bool {
				d := decide(t, e, userInput("bob"))
				return d.Allow && d.Reason == "v2"
			})
			if e.Revision() == rev1 {
				t.Errorf("revision unchanged after a rule change: %s", rev1)
			}
			if d := decide(t, e, userInput("bob")); d.Revision != e.Revision() {
				t.Errorf("decision revision %s, engine revision %s", d.Revision, e.Revision())
			}
			select {
			case <-swaps:
			default:
				t.Error("no swap notification")
			}
			if got := metricValue(t, e.metrics.reloads.WithLabelValues("success")); got != 2 {
				t.Errorf("successful loads = %v, want 2 (start + reload)", got)
			}
			if got := metricValue(t, e.metrics.revision.WithLabelValues(e.Revision())); got != 1 {
				t.Errorf("revision info for %s = %v, want 1", e.Revision(), got)
			}
			if n := metricSeries(e.metrics.revision); n != 1 {
				t.Errorf("revision info has %d series, want only the active one", n)
			}
		})
	}
}

func TestReloadBrokenPolicyKeepsServing(t *testing.T) {
	tests := []struct {
		name     string
		file     string
		content  string
		wantErrs []string // substrings of LastError
	}{
		{
			name:     "parse error",
			file:     "flakegate.rego",
			content:  "package flakegate.authz\n\ndefault allow := false\n\nallow if input.a === 1\n\nreason := \"x\"\n",
			wantErrs: []string{"flakegate.rego:5", "rego_parse_error"},
		},
		{
			name:     "unsafe variable",
			file:     "flakegate.rego",
			content:  "package flakegate.authz\n\ndefault allow := false\n\nallow if x == 1\n",
			wantErrs: []string{"flakegate.rego:5", "var x is unsafe"},
		},
		{
			name:     "new file with a compile error",
			file:     "extra.rego",
			content:  "package flakegate.authz\n\nhelper := y\n",
			wantErrs: []string{"extra.rego:3", "rego_"},
		},
		{
			name:     "broken data file",
			file:     "users.yaml",
			content:  "allowed: [alice\nother: 1\n",
			wantErrs: []string{"users.yaml:", "invalid YAML"},
		},
		{
			name:     "policy without allow",
			file:     "flakegate.rego",
			content:  "package flakegate.authz\n\nreason := \"no allow here\"\n",
			wantErrs: []string{"flakegate.rego", "defines no allow rule"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := policyDir(t, map[string]string{"flakegate.rego": userPolicy("v1"), "users.yaml": usersYAML})
			logs := &testutil.LogBuffer{}
			e, err := NewEngine(dir, Options{Logger: testLogger(logs), Registerer: prometheus.NewRegistry(), Debounce: 20 * time.Millisecond, Rescan: 50 * time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			runEngine(t, e)
			rev := e.Revision()

			writeAtomic(t, dir, tc.file, tc.content)
			eventually(t, settleDeadline, "the reload error is reported", func() bool { return e.LastError() != nil })
			for _, want := range tc.wantErrs {
				if !strings.Contains(e.LastError().Error(), want) {
					t.Errorf("LastError = %q, want it to mention %q", e.LastError(), want)
				}
			}
			var le *LoadError
			if !errors.As(e.LastError(), &le) || len(le.Problems) == 0 {
				t.Errorf("LastError is %T, want *LoadError with problems", e.LastError())
			}
			// The last good set keeps deciding.
			if d := decide(t, e, userInput("alice")); !d.Allow || d.Reason != "v1" || d.Revision != rev {
				t.Errorf("after a broken write: %+v, want allow by v1 at %s", d, rev)
			}
			if e.Revision() != rev {
				t.Errorf("revision moved to %s on a broken set", e.Revision())
			}
			if got := metricValue(t, e.metrics.reloads.WithLabelValues("error")); got != 1 {
				t.Errorf("failed loads = %v, want 1", got)
			}
			if got := metricValue(t, e.metrics.healthy); got != 0 {
				t.Errorf("last reload success gauge = %v, want 0", got)
			}
			if !strings.Contains(logs.String(), `"msg":"policy reload failed`) || !strings.Contains(logs.String(), tc.wantErrs[0]) {
				t.Errorf("the failure is not logged with its location:\n%s", logs)
			}

			// Rescans of the same broken set are not reported again.
			time.Sleep(200 * time.Millisecond)
			if got := metricValue(t, e.metrics.reloads.WithLabelValues("error")); got != 1 {
				t.Errorf("failed loads after rescans of the same set = %v, want 1", got)
			}

			// Putting the good content back clears the error.
			if tc.file == "extra.rego" {
				if err := os.Remove(filepath.Join(dir, tc.file)); err != nil {
					t.Fatal(err)
				}
			} else {
				original := map[string]string{"flakegate.rego": userPolicy("v1"), "users.yaml": usersYAML}[tc.file]
				writeAtomic(t, dir, tc.file, original)
			}
			eventually(t, settleDeadline, "the error clears when the good set is back", func() bool { return e.LastError() == nil })
			if e.Revision() != rev {
				t.Errorf("revision %s after restoring, want %s", e.Revision(), rev)
			}
			if got := metricValue(t, e.metrics.healthy); got != 1 {
				t.Errorf("last reload success gauge = %v after restoring, want 1", got)
			}
		})
	}
}

func TestReloadDataFileChange(t *testing.T) {
	dir := policyDir(t, map[string]string{"flakegate.rego": userPolicy("v1"), "users.yaml": usersYAML})
	logs := &testutil.LogBuffer{}
	e, err := NewEngine(dir, Options{Logger: testLogger(logs), Debounce: 20 * time.Millisecond, Rescan: -1})
	if err != nil {
		t.Fatal(err)
	}
	runEngine(t, e)
	if d := decide(t, e, userInput("bob")); d.Allow {
		t.Fatalf("bob allowed before being listed: %+v", d)
	}
	writeFile(t, dir, "users.yaml", "allowed: [alice, bob]\n")
	eventually(t, reloadDeadline(), "bob allowed once listed", func() bool { return decide(t, e, userInput("bob")).Allow })
	users, ok := e.Data()["users"].(map[string]any)
	if !ok || fmt.Sprint(users["allowed"]) != "[alice bob]" {
		t.Errorf("Data()[users] = %#v, want allowed: [alice bob]", e.Data()["users"])
	}

	// Removing the data file is a legitimate change too: nobody is listed.
	if err := os.Remove(filepath.Join(dir, "users.yaml")); err != nil {
		t.Fatal(err)
	}
	eventually(t, settleDeadline, "alice denied once the data file is gone", func() bool { return !decide(t, e, userInput("alice")).Allow })
	if _, ok := e.Data()["users"]; ok {
		t.Error("Data() still holds users after users.yaml was removed")
	}
	// Activated or not, a reload that drops a file of the active set says so.
	if !strings.Contains(logs.String(), `"msg":"policy reload removes data file users.yaml, which the active revision has"`) {
		t.Errorf("the removal of users.yaml is not logged:\n%s", logs)
	}
}

func TestReloadIgnoresUnchangedContentAndOtherFiles(t *testing.T) {
	dir := policyDir(t, map[string]string{"flakegate.rego": userPolicy("v1"), "users.yaml": usersYAML})
	reg := prometheus.NewRegistry()
	e, err := NewEngine(dir, Options{Logger: testLogger(&testutil.LogBuffer{}), Registerer: reg, Debounce: 20 * time.Millisecond, Rescan: 30 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	swaps := e.Subscribe()
	runEngine(t, e)
	rev := e.Revision()

	writeFile(t, dir, "flakegate.rego", userPolicy("v1"))               // same bytes
	writeFile(t, dir, ".hidden.rego", "not rego at all")                // dotfile
	writeFile(t, dir, "flakegate.rego~", "editor backup, not rego")     // backup
	writeFile(t, dir, "#flakegate.rego#", "emacs autosave, not rego")   // autosave
	writeFile(t, dir, "notes.txt", "not a policy file")                 // other extension
	writeFile(t, dir, "flakegate_test.rego", "test files are not live") // tests only run by Check
	if err := os.Mkdir(filepath.Join(dir, "sub.rego"), 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "sub.rego"), "deep.rego", "not read: the directory is not recursive")

	time.Sleep(300 * time.Millisecond) // several debounces and rescans
	if e.Revision() != rev || e.LastError() != nil {
		t.Errorf("revision %s (was %s), LastError %v: ignored files changed the set", e.Revision(), rev, e.LastError())
	}
	select {
	case <-swaps:
		t.Error("swap notified for unchanged content")
	default:
	}
	if got := metricValue(t, e.metrics.reloads.WithLabelValues("success")); got != 1 {
		t.Errorf("successful loads = %v, want only the initial one", got)
	}
}

// makeConfigMap lays dir out like a Kubernetes ConfigMap volume: the files
// live in a timestamped directory, ..data points at it, and each visible
// name is a symlink through ..data.
func makeConfigMap(t *testing.T, dir, stamp string, files map[string]string) {
	t.Helper()
	tsDir := filepath.Join(dir, stamp)
	if err := os.Mkdir(tsDir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, content := range files {
		writeFile(t, tsDir, name, content)
	}
	// Swap ..data atomically: new symlink, renamed over the old one.
	if err := os.Symlink(stamp, filepath.Join(dir, "..data_tmp")); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	for name := range files {
		link := filepath.Join(dir, name)
		if _, err := os.Lstat(link); err == nil {
			continue
		}
		if err := os.Symlink(filepath.Join("..data", name), link); err != nil {
			t.Fatal(err)
		}
	}
}

func TestReloadConfigMapSymlinkSwap(t *testing.T) {
	tests := []struct {
		name string
		opts Options
	}{
		{"fsnotify", Options{Debounce: 20 * time.Millisecond, Rescan: -1}},
		{"rescan only", Options{Debounce: 20 * time.Millisecond, Rescan: 50 * time.Millisecond}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			makeConfigMap(t, dir, "..2026_01_01_00_00_00.1", map[string]string{"flakegate.rego": userPolicy("v1"), "users.yaml": usersYAML})
			opts := tc.opts
			opts.Logger = testLogger(&testutil.LogBuffer{})
			e, err := NewEngine(dir, opts)
			if err != nil {
				t.Fatal(err)
			}
			if tc.opts.Rescan > 0 {
				// Prove the rescan alone suffices: no watcher in this variant.
				e.noWatch = true
			}
			runEngine(t, e)
			if d := decide(t, e, userInput("bob")); d.Allow || d.Reason != "v1" {
				t.Fatalf("before: %+v", d)
			}

			makeConfigMap(t, dir, "..2026_01_01_00_05_00.2", map[string]string{"flakegate.rego": userPolicy("v2"), "users.yaml": "allowed: [bob]\n"})
			if err := os.RemoveAll(filepath.Join(dir, "..2026_01_01_00_00_00.1")); err != nil {
				t.Fatal(err)
			}
			eventually(t, settleDeadline, "the swapped ConfigMap decides", func() bool {
				d := decide(t, e, userInput("bob"))
				return d.Allow && d.Reason == "v2"
			})
			if d := decide(t, e, userInput("alice")); d.Allow {
				t.Errorf("alice still allowed after the swap: %+v", d)
			}
			if e.LastError() != nil {
				t.Errorf("LastError after a clean swap: %v", e.LastError())
			}
		})
	}
}

// A policy file symlinked to a directory that is not watched changes
// without any event in the policy directory: only the rescan sees it.
func TestRescanCatchesChangesOutsideTheWatchedDirectory(t *testing.T) {
	real := policyDir(t, map[string]string{"flakegate.rego": userPolicy("v1")})
	dir := t.TempDir()
	if err := os.Symlink(filepath.Join(real, "flakegate.rego"), filepath.Join(dir, "flakegate.rego")); err != nil {
		t.Fatal(err)
	}
	e, err := NewEngine(dir, Options{Logger: testLogger(&testutil.LogBuffer{}), Debounce: 20 * time.Millisecond, Rescan: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	runEngine(t, e)
	writeFile(t, real, "flakegate.rego", userPolicy("v2"))
	eventually(t, settleDeadline, "the rescan picks up the edited target", func() bool { return decide(t, e, userInput("x")).Reason == "v2" })
}

func TestManualReload(t *testing.T) {
	dir := policyDir(t, map[string]string{"flakegate.rego": userPolicy("v1")})
	e, err := NewEngine(dir, Options{Logger: testLogger(&testutil.LogBuffer{}), Rescan: -1})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := e.Reload(ctx); err != nil {
		t.Fatalf("Reload of an unchanged dir: %v", err)
	}
	writeFile(t, dir, "flakegate.rego", userPolicy("v2"))
	if err := e.Reload(ctx); err != nil {
		t.Fatalf("Reload: %v", err)
	}
	if d := decide(t, e, userInput("x")); d.Reason != "v2" {
		t.Errorf("after Reload: %+v, want v2", d)
	}
	writeFile(t, dir, "flakegate.rego", "package flakegate.authz\nallow if {")
	var le *LoadError
	if err := e.Reload(ctx); !errors.As(err, &le) {
		t.Fatalf("Reload of a broken set = %v, want *LoadError", err)
	}
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	if err := e.Reload(ctx); err == nil || !strings.Contains(err.Error(), "read policy directory") {
		t.Errorf("Reload of a removed dir = %v, want a read error", err)
	}
	if d := decide(t, e, userInput("x")); d.Reason != "v2" {
		t.Errorf("after failed reloads: %+v, want v2 still serving", d)
	}
}

// versionPolicy is version i of a one-file policy: it allows only user
// u<i> and gives reason v<i>, so every decision shows which set made it.
func versionPolicy(i int) string {
	return fmt.Sprintf("package flakegate.authz\n\ndefault allow := false\n\nallow if input.subject.user == \"u%d\"\n\nreason := \"v%d\"\n", i, i)
}

// Decisions made while the set is swapped again and again are each
// consistent with the revision they report: no torn state. Run with -race.
func TestEvaluateWhileReloading(t *testing.T) {
	dir := policyDir(t, map[string]string{"flakegate.rego": versionPolicy(0)})
	e, err := NewEngine(dir, Options{Logger: testLogger(&testutil.LogBuffer{}), Debounce: time.Millisecond, Rescan: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	runEngine(t, e)

	var revisions sync.Map // revision → version, as seen by any evaluation
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var evaluations atomic.Int64
	errs := make(chan error, 4)
	for w := range 3 {
		wg.Go(func() {
			for i := 0; ctx.Err() == nil; i++ {
				runtime.Gosched() // leave the reloader room on a small machine
				probe := fmt.Sprintf("u%d", (i+w)%4)
				d, err := e.Evaluate(ctx, userInput(probe))
				if err != nil {
					if ctx.Err() == nil {
						errs <- err
					}
					return
				}
				evaluations.Add(1)
				var version int
				if _, err := fmt.Sscanf(d.Reason, "v%d", &version); err != nil {
					errs <- fmt.Errorf("reason %q", d.Reason)
					return
				}
				if d.Allow != (probe == fmt.Sprintf("u%d", version)) {
					errs <- fmt.Errorf("decision %+v for %s is not version %d's", d, probe, version)
					return
				}
				if v, loaded := revisions.LoadOrStore(d.Revision, version); loaded && v.(int) != version {
					errs <- fmt.Errorf("revision %s decided as v%d and as v%d", d.Revision, version, v)
					return
				}
			}
		})
	}
	for v := 1; v <= 5; v++ {
		writeAtomic(t, dir, "flakegate.rego", versionPolicy(v))
		eventually(t, settleDeadline, fmt.Sprintf("version %d active", v), func() bool {
			return decide(t, e, userInput("x")).Reason == fmt.Sprintf("v%d", v)
		})
	}
	cancel()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if evaluations.Load() == 0 {
		t.Error("no evaluation ran")
	}
}

func TestRunStopsWithContext(t *testing.T) {
	dir := policyDir(t, map[string]string{"flakegate.rego": userPolicy("v1")})
	e, err := NewEngine(dir, Options{Logger: testLogger(&testutil.LogBuffer{})})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx) }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run = %v, want nil on cancellation", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not stop")
	}
}

// A change of data files only reuses the compiled modules (the bulk of a
// reload's cost); decisions still follow the new data, a data file that
// now overlaps a package is still refused, and a .rego change recompiles.
func TestReloadDataOnlyReusesCompiledModules(t *testing.T) {
	dir := policyDir(t, map[string]string{"flakegate.rego": userPolicy("v1"), "users.yaml": usersYAML})
	e, err := NewEngine(dir, Options{Logger: testLogger(&testutil.LogBuffer{}), Rescan: -1})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	first := e.active.Load()

	writeFile(t, dir, "users.yaml", "allowed: [alice, bob]\n")
	if err := e.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	second := e.active.Load()
	if second.Revision == first.Revision || second.compiler != first.compiler {
		t.Fatalf("data-only change: revision %s → %s, compiler reused %v; want a new revision on the same compiler",
			first.Revision, second.Revision, second.compiler == first.compiler)
	}
	if d := decide(t, e, userInput("bob")); !d.Allow || d.Revision != second.Revision {
		t.Fatalf("bob after being listed: %+v", d)
	}

	writeFile(t, dir, "flakegate.yaml", "x: 1\n") // would cover package flakegate.authz
	var le *LoadError
	if err := e.Reload(ctx); !errors.As(err, &le) || !strings.Contains(err.Error(), "overlap") {
		t.Fatalf("overlapping data file with reused modules: %v", err)
	}
	if err := os.Remove(filepath.Join(dir, "flakegate.yaml")); err != nil {
		t.Fatal(err)
	}

	writeFile(t, dir, "flakegate.rego", userPolicy("v2"))
	if err := e.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	third := e.active.Load()
	if third.compiler == second.compiler {
		t.Fatal("a .rego change reused the old compiler")
	}
	if d := decide(t, e, userInput("bob")); !d.Allow || d.Reason != "v2" {
		t.Fatalf("after the rule change: %+v, want allow by v2", d)
	}
}

// --- the settle rule (settle.go) ---

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
	// The directory changes before every read the engine makes (the hook),
	// with a new modification time in the future each time: the settle rule
	// then activates a snapshot only when the very same file stamps are
	// seen again a debounce later, which never happens, however long any
	// goroutine stalls. (A writer goroutine rewriting every 2 ms made this
	// depend on the scheduler: a stall of a debounce let the directory
	// settle, correctly, and the test failed on a loaded machine.)
	const d = 20 * time.Millisecond
	churn := func(dir string) func() {
		far := time.Now().Add(24 * time.Hour)
		i := 0
		return func() {
			i++
			path := filepath.Join(dir, "users.yaml")
			_ = os.WriteFile(path, fmt.Appendf(nil, "allowed: [alice, u%d]\n", i), 0o644)
			ts := far.Add(time.Duration(i) * time.Second)
			_ = os.Chtimes(path, ts, ts)
		}
	}
	dir := policyDir(t, map[string]string{"flakegate.rego": userPolicy("v1"), "users.yaml": usersYAML})
	e, err := NewEngine(dir, Options{Logger: testLogger(&testutil.LogBuffer{}), Registerer: prometheus.NewRegistry(), Debounce: d, Rescan: -1})
	if err != nil {
		t.Fatal(err)
	}
	rev := e.Revision()
	e.opts.beforeRead = churn(dir) // no reload runs yet: Run was not started

	start := time.Now()
	err = e.Reload(context.Background())
	if !errors.Is(err, ErrUnsettled) {
		t.Errorf("Reload of a directory that never settles = %v, want ErrUnsettled", err)
	}
	if took := time.Since(start); took < d || took > time.Minute {
		t.Errorf("Reload gave up after %v", took)
	}
	if e.Revision() != rev || e.LastError() != nil {
		t.Errorf("revision %s (was %s), LastError %v: an unsettled directory changed the engine's state", e.Revision(), rev, e.LastError())
	}
	if got := metricValue(t, e.metrics.reloads.WithLabelValues("error")); got != 0 {
		t.Errorf("an unsettled directory counted as %v failed loads, want 0", got)
	}

	busy := policyDir(t, map[string]string{"flakegate.rego": userPolicy("v1")})
	if _, err := NewEngine(busy, Options{Logger: testLogger(&testutil.LogBuffer{}), Debounce: d, Rescan: -1, beforeRead: churn(busy)}); !errors.Is(err, ErrUnsettled) {
		t.Errorf("NewEngine on a directory that never settles = %v, want ErrUnsettled (fail closed)", err)
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
	if raceDetector {
		t.Skip("timing-based (a writer must not stall for a debounce period; the race detector slows it 5-10x): runs in the pass without -race")
	}
	// The settle rule activates a file left unchanged for the debounce
	// period: a writer pausing longer than that mid-write is, by the rule,
	// done. The pauses below (10 ms between lines, debounce/2 between the
	// prefix and the rest) must stay well under the debounce even when the
	// scheduler stretches a sleep on a loaded 2-core machine (a 40 ms
	// debounce failed there at load average 20: sleeps of 10–20 ms took
	// over 40 ms).
	const (
		debounce = 250 * time.Millisecond
		churn    = 3 * time.Second
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
