package policy_test

// Fail closed under change: data files read one way only, builtin errors,
// reloads that must not be postponed or missed. Each test was first written
// by an adversarial review (2026-12-05) against the code before its fix.

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/flakegate/flakegate/internal/policy"
)

// failOpts: each directory was just written, a short debounce keeps
// NewEngine's settle wait short; no watcher needed.
var failOpts = policy.Options{Rescan: -1, Debounce: 10 * time.Millisecond}

func writeFile(t *testing.T, dir, name, content string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// A data file with more than one YAML document ("---" or "...") loads
// only its first document; the rest is dropped without a word. A flakes.yaml
// assembled from parts (cat a.yaml b.yaml, a generator that emits one
// document per flake, a trailing "..." pasted from a Kubernetes manifest)
// loses every read restriction after the separator, and the shipped policy
// falls back to the org-wide read default for those flakes: carol (omnicorp,
// not a listed reader) reads omnicorp/super-duper-secure.
func TestDataFileOfSeveralDocumentsIsRefused(t *testing.T) {
	flakes := "omnicorp/dev-environments:\n  description: shared shells\n" +
		"---\n" +
		"omnicorp/super-duper-secure:\n  description: signing\n  read:\n    users: [alice, bob]\n"
	for name, content := range map[string]string{
		"--- separator":  flakes,
		"... terminator": strings.Replace(flakes, "---\n", "...\n", 1),
	} {
		t.Run(name, func(t *testing.T) {
			dir := copyPolicies(t, func(string) string { return content })
			e, err := policy.NewEngine(dir, failOpts)
			if err == nil {
				d, _ := e.Evaluate(context.Background(), pull("omnicorp/super-duper-secure", "omnicorp", "carol"))
				t.Fatalf("a flakes.yaml of two documents was loaded (data.flakes = %v; carol may read super-duper-secure: %v)", e.Data()["flakes"], d.Allow)
			}
			if want := "flakes.yaml:3: more than one YAML document"; !strings.Contains(err.Error(), want) {
				t.Errorf("NewEngine: %v, want it to say %q", err, want)
			}
		})
	}
}

// The same for denylist.yaml: the subjects after a "---" would not be
// revoked. (revoke.CheckDir, `authz -check`, reads it through the same
// parser: internal/revoke TestCheckDirRefusesSeveralDocuments.)
func TestDenylistOfSeveralDocumentsIsRefused(t *testing.T) {
	dir := copyPolicies(t, func(s string) string { return s })
	writeFile(t, dir, "denylist.yaml", "token_ids: [t1]\n---\nsubjects: [\"oidc:mallory\"]\n")
	e, err := policy.NewEngine(dir, failOpts)
	if err == nil {
		t.Fatalf("a denylist.yaml of two documents was loaded: data.denylist = %v", e.Data()["denylist"])
	}
	if want := "denylist.yaml:2: more than one YAML document"; !strings.Contains(err.Error(), want) {
		t.Errorf("NewEngine: %v, want it to say %q", err, want)
	}
	// A lone leading "---" (or a trailing one) is one document.
	writeFile(t, dir, "denylist.yaml", "---\ntoken_ids: [t1]\n---\n")
	if _, err := policy.NewEngine(dir, failOpts); err != nil {
		t.Errorf("one document between separators: %v", err)
	}
}

// JSON data files refuse duplicate keys as YAML ones do: a flakes.json
// whose second entry for a flake lacks the read list would widen the read
// to the whole org (encoding/json keeps the last).
func TestDuplicateKeyInJSONDataFileIsRefused(t *testing.T) {
	const flakesJSON = `{
  "omnicorp/super-duper-secure": {"read": {"users": ["alice", "bob"]}},
  "omnicorp/super-duper-secure": {"description": "signing tooling"}
}`
	// As YAML (JSON is YAML): refused.
	ydir := copyPolicies(t, func(string) string { return flakesJSON })
	if _, err := policy.NewEngine(ydir, failOpts); err == nil || !strings.Contains(err.Error(), "already set") {
		t.Fatalf("flakes.yaml with a duplicate key: NewEngine = %v, want a duplicate-key refusal", err)
	}
	// As JSON: refused too, naming the key and its line; nested objects
	// and arrays of objects are walked, and equal keys in different
	// objects are fine.
	jdir := copyPolicies(t, func(s string) string { return s })
	if err := os.Remove(filepath.Join(jdir, "flakes.yaml")); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ json, want string }{
		{flakesJSON, `flakes.json:3: invalid JSON: key "omnicorp/super-duper-secure" already set`},
		{`{"a": {"read": {"users": ["x"], "users": []}}}`, `key "users" already set`},
		{`{"a": [{"k": 1}, {"k": 2, "k": 3}]}`, `key "k" already set`},
		{`{"a": {"k": 1}, "b": {"k": 1}, "c": [{"k": [1, {"k": 2}]}]}`, ""},
	} {
		writeFile(t, jdir, "flakes.json", c.json)
		_, err := policy.NewEngine(jdir, failOpts)
		switch {
		case c.want == "" && err != nil && strings.Contains(err.Error(), "already set"):
			t.Errorf("%s: %v", c.json, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%s: NewEngine = %v, want %q", c.json, err, c.want)
		}
	}
}

// A builtin that fails is an evaluation error (authz answers 503), not an
// undefined expression: in OPA's default mode `not rule_that_errs` is true,
// so a deny-style rule whose builtin fails (a typo in a data file, an
// unexpected claim value) allowed.
func TestBuiltinErrorsFailClosed(t *testing.T) {
	const rules = `package flakegate.authz

default allow := false

# Pushes from any CI job, except from the refs the admins deny.
allow if {
	input.action == "push"
	input.subject.kind == "ci"
	not ref_denied
}

ref_denied if {
	some pattern in data.rules.denied_refs
	glob.match(pattern, ["/"], input.subject.ref)
}

# Tokens issued before the cutoff are refused.
allow if {
	input.action == "read"
	input.subject.authenticated
	not too_old
}

too_old if to_number(input.subject.claims.iat) < data.rules.cutoff
`
	dir := t.TempDir()
	writeFile(t, dir, "flakegate.rego", rules)
	// A typo in the glob: "[" not closed (meant: refs/heads/wip-[0-9]*).
	writeFile(t, dir, "rules.yaml", "cutoff: 1700000000\ndenied_refs: [\"refs/heads/wip-[0-9*\"]\n")
	e, err := policy.NewEngine(dir, failOpts)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	push := map[string]any{"action": "push", "flake": map[string]any{"org": "o", "name": "a"},
		"subject": map[string]any{"authenticated": true, "kind": "ci", "ref": "refs/heads/wip-1"}}
	d, err := e.Evaluate(ctx, push)
	if err == nil || !strings.Contains(err.Error(), "glob.match") {
		t.Errorf("push from refs/heads/wip-1 with a malformed glob in the deny rule: %+v, %v; want an evaluation error naming glob.match", d, err)
	}
	read := map[string]any{"action": "read", "flake": map[string]any{"org": "o", "name": "a"},
		"subject": map[string]any{"authenticated": true, "kind": "user", "claims": map[string]any{"iat": "not-a-number"}}}
	d, err = e.Evaluate(ctx, read)
	if err == nil || !strings.Contains(err.Error(), "to_number") {
		t.Errorf("read with a non-numeric iat: %+v, %v; want an evaluation error naming to_number", d, err)
	}
	// The same rule with a valid value decides as written.
	read["subject"].(map[string]any)["claims"] = map[string]any{"iat": 1600000000}
	if d, err := e.Evaluate(ctx, read); err != nil || d.Allow {
		t.Errorf("read with an old token: %+v, %v; want denied", d, err)
	}
}

// The policy directory given as a symlink to a release directory
// (`current -> releases/v1`, swapped with `ln -sfn` + `mv -T`): fsnotify
// watches the target it resolved when added, so a swap was seen only by the
// periodic rescan (disabled here); the link's directory is watched too.
func TestSymlinkedDirectorySwapIsSeen(t *testing.T) {
	root := t.TempDir()
	v1, v2 := filepath.Join(root, "v1"), filepath.Join(root, "v2")
	for _, d := range []string{v1, v2} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	allowAll := "package flakegate.authz\n\ndefault allow := false\n\nallow if input.subject.user != \"mallory\"\n"
	denyAll := "package flakegate.authz\n\ndefault allow := false\n"
	writeFile(t, v1, "flakegate.rego", allowAll)
	writeFile(t, v2, "flakegate.rego", denyAll) // v2 revokes everyone
	cur := filepath.Join(root, "current")
	if err := os.Symlink("v1", cur); err != nil {
		t.Fatal(err)
	}
	e, err := policy.NewEngine(cur, policy.Options{Rescan: -1, Debounce: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx) }()
	defer func() { cancel(); <-done }()
	time.Sleep(100 * time.Millisecond) // Run has added its watch
	rev1 := e.Revision()
	tmp := filepath.Join(root, "current.tmp")
	if err := os.Symlink("v2", tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, cur); err != nil {
		t.Fatal(err)
	}
	rev2 := waitRevision(t, e, rev1, "swapping the policy directory's symlink")
	writeFile(t, v2, "flakegate.rego", denyAll+"\n# touched\n") // an edit in the new target
	waitRevision(t, e, rev2, "editing the new target")
}

// waitRevision waits (up to 10 s, far beyond any debounce here) for the
// engine to leave revision rev, and returns the new one.
func waitRevision(t *testing.T, e *policy.Engine, rev, after string) string {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if r := e.Revision(); r != rev {
			return r
		}
	}
	t.Fatalf("10 s after %s the engine still serves %s (rescan disabled)", after, rev)
	return ""
}

// Every fsnotify event restarted the debounce timer, including events of
// files the engine ignores: a file changing more often than the debounce
// (an editor's swap file, a sidecar's status file, .git) postponed every
// event-driven reload until the periodic rescan (disabled here).
func TestIgnoredFileChurnDoesNotPostponeReloads(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "flakegate.rego", "package flakegate.authz\n\ndefault allow := true\n")
	e, err := policy.NewEngine(dir, policy.Options{Rescan: -1, Debounce: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx) }()
	stop := make(chan struct{})
	churned := make(chan struct{})
	go func() { // an editor's swap file, rewritten every 20 ms
		defer close(churned)
		for i := 0; ; i++ {
			_ = os.WriteFile(filepath.Join(dir, ".flakegate.rego.swp"), []byte{byte(i)}, 0o644)
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	defer func() { close(stop); <-churned; cancel(); <-done }()
	time.Sleep(200 * time.Millisecond)
	rev1 := e.Revision()
	// The admin revokes everyone (atomic write).
	tmp := filepath.Join(dir, ".new.tmp")
	writeFile(t, dir, ".new.tmp", "package flakegate.authz\n\ndefault allow := false\n")
	if err := os.Rename(tmp, filepath.Join(dir, "flakegate.rego")); err != nil {
		t.Fatal(err)
	}
	waitRevision(t, e, rev1, "an atomic policy change while a swap file churns")
}

// A malformed push.refs glob in flakes.yaml refuses the set at load (the
// shipped config_errors compiles every pattern), instead of loading and
// making every unprotected-ref push of that flake a 503 under strict
// builtin errors (review of the fixes, 2026-12-05). A valid glob loads.
func TestMalformedPushRefGlobIsRefusedAtLoad(t *testing.T) {
	for _, c := range []struct{ glob, want string }{
		{"refs/heads/release-[0-9*", "glob.match"},
		{"refs/heads/release-[0-9]*", ""},
	} {
		dir := copyPolicies(t, func(s string) string {
			return s + "\nomnicorp/app:\n  push:\n    refs: [\"" + c.glob + "\"]\n"
		})
		_, err := policy.NewEngine(dir, failOpts)
		switch {
		case c.want == "" && err != nil:
			t.Errorf("push.refs %q: %v", c.glob, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("push.refs %q: NewEngine = %v, want a refusal naming %s", c.glob, err, c.want)
		}
	}
}

// YAML keys that differ only in type become one JSON key; which value won
// changed from load to load (review of the fixes, 2026-12-05).
func TestYAMLKeysEqualAsJSONAreRefused(t *testing.T) {
	dir := copyPolicies(t, func(s string) string { return s })
	for _, c := range []string{
		"release-managers: [alice]\n2024: [alice]\n\"2024\": [mallory]\n",
		"true: [alice]\n\"true\": [mallory]\n",
		"team:\n  nested:\n    1: [a]\n    \"1\": [b]\n",
	} {
		writeFile(t, dir, "groups.yaml", c)
		if _, err := policy.NewEngine(dir, failOpts); err == nil || !strings.Contains(err.Error(), "differ only in type") {
			t.Errorf("groups.yaml %q: NewEngine = %v, want refused", c, err)
		}
	}
	// Float keys become JSON keys at 32-bit precision (0.1 and
	// 0.1000000001 would be one): refused.
	writeFile(t, dir, "groups.yaml", "0.1: [alice]\n0.1000000001: [mallory]\n")
	if _, err := policy.NewEngine(dir, failOpts); err == nil || !strings.Contains(err.Error(), "a number with a fraction") {
		t.Errorf("groups.yaml with float keys: NewEngine = %v, want refused", err)
	}
}
