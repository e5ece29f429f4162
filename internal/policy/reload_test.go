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
