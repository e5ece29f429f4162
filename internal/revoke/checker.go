package revoke

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
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
	// issuers are the configured identity providers' iss values: an issuer
	// rule naming none of them is logged as revoking nothing.
	issuers []string

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
func NewChecker(src Source, log *slog.Logger, issuers ...string) *Checker {
	if log == nil {
		log = slog.Default()
	}
	c := &Checker{src: src, log: log.With("component", "revoke"), issuers: issuers}
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
	if err == nil && prev != nil && prev.list != nil {
		// A deleted, blank or comment-only denylist.yaml (caught between a
		// truncate and a write, say), or a key gone null, must not lift
		// revocations: the running list stays. Clearing takes an explicit
		// empty list under that key.
		err = lifts(prev.list, doc, list)
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
		if len(c.issuers) > 0 {
			for _, iss := range list.UnknownIssuers(c.issuers) {
				c.log.Warn("denylist: this issuer rule revokes nothing: no configured identity provider has that iss (a cache token carries its IdP's iss, not the cache's URL; spelling and trailing slash count)", "policy_revision", rev, "issuer", iss)
			}
		}
	}
	c.state.Store(st)
	return st
}

// CheckData is the policy engine's Options.CheckData: a set whose denylist
// does not parse is refused, and so is one that would lift revocations in
// force without saying so (lifts). Judged at every activation, so a list in
// force that no request happened to see is kept too.
func CheckData(next, active map[string]any) error {
	doc := next[DataKey]
	l, err := Parse(doc)
	if err != nil || active == nil {
		return err
	}
	prev, err := Parse(active[DataKey])
	if err != nil {
		return nil // the active set's list was refused itself; nothing in force to keep
	}
	return lifts(prev, doc, l)
}

// lifts is an error when next (parsed from doc) would lift what prev
// revokes in a shape a truncated write leaves rather than an admin's edit:
// a denylist with no entries at all and no explicit empty list (a missing
// file, null, `{}`), or a key that had entries now present with no value
// (`token_ids:` gone null, even beside `subjects: []`). Clearing takes an
// explicit empty list under that key; rewriting the file without the key
// (revoking subjects instead of token ids) is an edit and is taken.
func lifts(prev *List, doc any, next *List) error {
	m, _ := doc.(map[string]any)
	cleared := func(key string) bool {
		l, ok := m[key].([]any)
		return ok && len(l) == 0
	}
	nulled := func(key string) bool {
		v, ok := m[key]
		return ok && v == nil
	}
	pIDs, pSubjects := prev.Len()
	nIDs, nSubjects := next.Len()
	var kept []string
	empty := nIDs+nSubjects == 0 && !cleared("token_ids") && !cleared("subjects")
	if pIDs > 0 && nIDs == 0 && (empty || nulled("token_ids")) {
		kept = append(kept, fmt.Sprintf("%d token ids (write `token_ids: []` to clear them)", pIDs))
	}
	if pSubjects > 0 && nSubjects == 0 && (empty || nulled("subjects")) {
		kept = append(kept, fmt.Sprintf("%d subjects (write `subjects: []` to clear them)", pSubjects))
	}
	if len(kept) > 0 {
		return fmt.Errorf("denylist: would lift what is revoked now without an explicit empty list: %s stay revoked", strings.Join(kept, " and "))
	}
	return nil
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
