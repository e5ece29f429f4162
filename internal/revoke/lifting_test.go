package revoke

// A denylist in force must not be lifted by one that went missing or blank,
// whether or not a request saw it in force (the engine judges every set it
// activates: CheckData). First written by an adversarial review
// (2026-12-05) against the code before the fix.

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/flakegate/flakegate/internal/identity"
	"github.com/flakegate/flakegate/internal/policy"
)

const denyAllPolicy = "package flakegate.authz\n\ndefault allow := false\n"

// liftEngine is a real engine on a real directory, with the checks authz
// gives it.
func liftEngine(t *testing.T, files map[string]string) (*policy.Engine, string) {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	e, err := policy.NewEngine(dir, policy.Options{Logger: slog.New(slog.DiscardHandler), Rescan: -1,
		Debounce: 10 * time.Millisecond, CheckData: CheckData})
	if err != nil {
		t.Fatal(err)
	}
	return e, dir
}

// setDenylist writes denylist.yaml in place (remove: deletes it) and
// reloads the engine; it returns the reload's error.
func setDenylist(t *testing.T, e *policy.Engine, dir, content string, remove bool) error {
	t.Helper()
	path := filepath.Join(dir, "denylist.yaml")
	if remove {
		if err := os.Remove(path); err != nil {
			t.Fatal(err)
		}
	} else if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return e.Reload(context.Background())
}

// The Checker parses the denylist on the first Check after a revision
// change; before CheckData it judged "went missing or blank after a list
// with entries" against the last revision it had parsed, so a list that was
// in force while no request came (a quiet night) was lifted by a blank one.
func TestListInForceIsNotLiftedUnseen(t *testing.T) {
	ctx := context.Background()
	alice := &identity.Subject{Authenticated: true, Provider: "oidc", User: "alice", TokenID: "t1"}
	for _, blank := range []struct {
		name    string
		content string
		remove  bool
	}{
		{"blank", "", false},
		{"comment only", "# revoked tokens\n", false},
		{"null list", "token_ids:\n", false},
		{"empty map", "{}\n", false},
		{"deleted", "", true},
	} {
		for _, seen := range []bool{true, false} {
			name := blank.name + "/list seen by a request"
			if !seen {
				name = blank.name + "/list in force but not seen by any request"
			}
			t.Run(name, func(t *testing.T) {
				e, dir := liftEngine(t, map[string]string{"flakegate.rego": denyAllPolicy})
				c := NewChecker(e, slog.New(slog.DiscardHandler))
				if err := c.Check(ctx, alice); err != nil {
					t.Fatalf("no denylist yet: %v", err)
				}
				if err := setDenylist(t, e, dir, "token_ids:\n  - t1\n  - t2\n", false); err != nil {
					t.Fatal(err)
				}
				if seen {
					if err := c.Check(ctx, alice); !errors.Is(err, ErrRevoked) {
						t.Fatalf("t1 not revoked: %v", err)
					}
				}
				rev := e.Revision()
				err := setDenylist(t, e, dir, blank.content, blank.remove)
				if err == nil || !strings.Contains(err.Error(), "would lift what is revoked now") {
					t.Errorf("reload with a %s denylist: %v, want it refused", blank.name, err)
				}
				if e.Revision() != rev {
					t.Errorf("the set with a %s denylist was activated", blank.name)
				}
				if err := c.Check(ctx, alice); !errors.Is(err, ErrRevoked) {
					t.Errorf("t1 is no longer revoked after a %s denylist: %v", blank.name, err)
				}
			})
		}
	}
}

// Clearing the list on purpose takes an explicit empty list, and a
// malformed denylist refuses the whole set (the policy files changed with
// it wait too), reported as the engine's error.
func TestExplicitEmptyListLiftsAndMalformedIsRefused(t *testing.T) {
	ctx := context.Background()
	alice := &identity.Subject{Authenticated: true, Provider: "oidc", User: "alice", TokenID: "t1"}
	e, dir := liftEngine(t, map[string]string{"flakegate.rego": denyAllPolicy, "denylist.yaml": "token_ids: [t1]\n"})
	c := NewChecker(e, slog.New(slog.DiscardHandler))
	if err := c.Check(ctx, alice); !errors.Is(err, ErrRevoked) {
		t.Fatalf("t1 not revoked: %v", err)
	}
	rev := e.Revision()
	if err := setDenylist(t, e, dir, "token_ids: t1\n", false); err == nil || !strings.Contains(err.Error(), "want a list") {
		t.Errorf("malformed denylist: reload = %v, want it refused", err)
	}
	if e.Revision() != rev || e.LastError() == nil {
		t.Errorf("malformed denylist: revision %s (was %s), LastError %v", e.Revision(), rev, e.LastError())
	}
	if err := setDenylist(t, e, dir, "token_ids: []\n", false); err != nil {
		t.Fatalf("explicit empty list: %v", err)
	}
	if err := c.Check(ctx, alice); err != nil {
		t.Errorf("t1 still revoked after `token_ids: []`: %v", err)
	}
	// With nothing in force, a blank or deleted denylist is fine.
	if err := setDenylist(t, e, dir, "", true); err != nil {
		t.Errorf("deleting an empty denylist: %v", err)
	}
}

// A malformed denylist at start refuses to start (fail closed, and said at
// once) instead of running with every token refused.
func TestMalformedDenylistAtStartIsRefused(t *testing.T) {
	dir := t.TempDir()
	for name, content := range map[string]string{"flakegate.rego": denyAllPolicy, "denylist.yaml": "token_ids: [t1]\nsubject: [x]\n"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	_, err := policy.NewEngine(dir, policy.Options{Logger: slog.New(slog.DiscardHandler), Rescan: -1,
		Debounce: 10 * time.Millisecond, CheckData: CheckData})
	if err == nil || !strings.Contains(err.Error(), `unknown key "subject"`) {
		t.Errorf("NewEngine with a malformed denylist: %v", err)
	}
}

// A key gone null is a truncated write, whatever the other key holds:
// `subjects: []` beside a `token_ids:` gone null lifted every revoked token
// id (review of the fixes, 2026-12-05).
func TestEachKeyIsClearedOnlyExplicitly(t *testing.T) {
	ctx := context.Background()
	alice := &identity.Subject{Authenticated: true, Provider: "oidc", User: "alice", TokenID: "t1"}
	for _, next := range []string{
		"subjects: []\ntoken_ids:\n",
		"subjects: [\"oidc:mallory\"]\ntoken_ids:\n",
	} {
		e, dir := liftEngine(t, map[string]string{"flakegate.rego": denyAllPolicy,
			"denylist.yaml": "subjects: []\ntoken_ids:\n  - t1\n  - t2\n"})
		c := NewChecker(e, slog.New(slog.DiscardHandler))
		if err := c.Check(ctx, alice); !errors.Is(err, ErrRevoked) {
			t.Fatalf("t1 not revoked: %v", err)
		}
		if err := setDenylist(t, e, dir, next, false); err == nil || !strings.Contains(err.Error(), "token_ids: []") {
			t.Errorf("%q: reload = %v, want refused", next, err)
		}
		if err := c.Check(ctx, alice); !errors.Is(err, ErrRevoked) {
			t.Errorf("%q: t1 is no longer revoked: %v", next, err)
		}
	}
	// An edit that clears one key on purpose, or rewrites the file
	// without it (revoking a subject instead of token ids), is taken.
	for _, next := range []string{"token_ids: []\nsubjects: [\"oidc:mallory\"]\n", "subjects: [\"oidc:mallory\"]\n"} {
		e, dir := liftEngine(t, map[string]string{"flakegate.rego": denyAllPolicy, "denylist.yaml": "token_ids: [t1]\n"})
		if err := setDenylist(t, e, dir, next, false); err != nil {
			t.Errorf("%q after token_ids: [t1]: %v", next, err)
		}
	}
}
