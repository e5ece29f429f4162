package revoke

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/flakegate/flakegate/internal/identity"
)

// Source is where the denylist comes from: the policy engine, whose hot
// reload delivers denylist.yaml as data.denylist with a new Revision.
type Source interface {
	Data() map[string]any
	Revision() string
}

// Checker checks subjects against the denylist of the active policy
// revision. The list is parsed once per revision; checking is a map lookup
// and a short scan. Safe for concurrent use.
type Checker struct {
	src Source
	log *slog.Logger

	state atomic.Pointer[state]
	mu    sync.Mutex // serializes rebuilds
}

type state struct {
	revision string
	list     *List // last good list; nil if none ever parsed
	err      error // parse error of this revision, if any
}

// NewChecker reads the denylist from src. A malformed denylist is logged;
// the last good one stays in force, and with none every token is refused
// (fail closed) until it is fixed. A denylist that disappears or turns
// empty (null, `{}`, `token_ids:`) after one with entries was in force is
// treated as malformed: only an explicit empty list (`token_ids: []`) lifts
// revocations. The engine judges the same rule for every set it activates
// (CheckData, given as policy.Options.CheckData); this is the second line.
func NewChecker(src Source, log *slog.Logger) *Checker {
	if log == nil {
		log = slog.Default()
	}
	c := &Checker{src: src, log: log.With("component", "revoke")}
	c.current()
	return c
}

func (c *Checker) current() *state {
	rev := c.src.Revision()
	if st := c.state.Load(); st != nil && st.revision == rev {
		return st
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	prev := c.state.Load()
	if prev != nil && prev.revision == rev {
		return prev
	}
	// Revision first, data second: if a swap happens in between, the next
	// call sees a newer revision and parses again.
	doc := c.src.Data()[DataKey]
	list, err := Parse(doc)
	if err == nil && !explicitEmpty(doc) && prev != nil && prev.list != nil && isEmpty(list) {
		// A deleted, blank or comment-only denylist.yaml (caught between a
		// truncate and a write, say) must not lift every revocation: the
		// running list stays. Clearing it takes an explicit empty list.
		if ids, subjects := prev.list.Len(); ids+subjects > 0 {
			err = fmt.Errorf("denylist.yaml is missing or empty: the %d token ids and %d subjects revoked so far stay revoked (write `token_ids: []` to clear them)", ids, subjects)
		}
	}
	st := &state{revision: rev, list: list, err: err}
	if err != nil {
		if prev != nil {
			st.list = prev.list // keep the last good list
		}
		c.log.Error("denylist not applied: keeping the previous one", "policy_revision", rev, "error", err,
			"fail_closed", st.list == nil)
	} else {
		ids, subjects := list.Len()
		c.log.Info("denylist loaded", "policy_revision", rev, "token_ids", ids, "subjects", subjects)
	}
	c.state.Store(st)
	return st
}

// CheckData is the policy engine's Options.CheckData: a set whose denylist
// does not parse is refused, and so is one whose denylist is missing, null,
// `{}` or lists nothing without an explicit empty list (`token_ids: []`)
// while the active set's revokes something. Judged at every activation, so a
// list in force that no request happened to see is kept too.
func CheckData(next, active map[string]any) error {
	doc := next[DataKey]
	l, err := Parse(doc)
	if err != nil {
		return err
	}
	if ids, subjects := l.Len(); ids+subjects > 0 || explicitEmpty(doc) || active == nil {
		return nil
	}
	prev, err := Parse(active[DataKey])
	if err != nil {
		return nil // the active set's list was refused itself; nothing in force to keep
	}
	if ids, subjects := prev.Len(); ids+subjects > 0 {
		return fmt.Errorf("denylist: missing or empty: the %d token ids and %d subjects revoked now would be lifted (write `token_ids: []` to clear them on purpose)", ids, subjects)
	}
	return nil
}

// explicitEmpty reports whether doc holds a key with an explicit empty list.
func explicitEmpty(doc any) bool {
	m, _ := doc.(map[string]any)
	for _, v := range m {
		if l, ok := v.([]any); ok && len(l) == 0 {
			return true
		}
	}
	return false
}

func isEmpty(l *List) bool {
	ids, subjects := l.Len()
	return ids+subjects == 0
}

// Err is the current denylist's parse error (nil when it is in force).
func (c *Checker) Err() error { return c.current().err }

// Check returns an error matching ErrRevoked when s is revoked (or when no
// usable denylist was ever loaded). It fits authz.Checker.SubjectCheck.
func (c *Checker) Check(_ context.Context, s *identity.Subject) error {
	st := c.current()
	if st.list == nil {
		return fmt.Errorf("%w: revocation list unusable, refusing all tokens", ErrRevoked)
	}
	if why, revoked := st.list.Revoked(s); revoked {
		return fmt.Errorf("%w: %s", ErrRevoked, why)
	}
	return nil
}
