package policy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/prometheus/client_golang/prometheus"
)

// Options configures an Engine. The zero value is usable.
type Options struct {
	Logger     *slog.Logger          // default slog.Default()
	Registerer prometheus.Registerer // nil: metrics are not exported
	// Debounce is how long the directory and every policy and data file
	// must have been unchanged (by their modification and change times)
	// before a snapshot of them is activated, by any path: a change event,
	// the rescan, Reload, the catch-up at Run start and NewEngine. Editors,
	// cp and deploy scripts write in several steps; a prefix of a data file
	// can be valid YAML that lacks the entries restricting access. A file
	// that changes while it is read is never activated either (settle.go).
	Debounce time.Duration // default 100ms
	// Rescan is the period of a full rescan that catches what fsnotify
	// misses (files symlinked from elsewhere, a recreated directory).
	// Negative disables it.
	Rescan time.Duration // default 10s
	// CacheSize bounds the decision cache of the active set (see
	// decisionCache: decisions are cached by the input fields the policy
	// reads, when that is sound). Negative disables it.
	CacheSize int // default 4096
	// CheckData, when set, judges the data of every set before it is
	// activated (active is the data of the set in force, nil at start): an
	// error refuses the set like one that does not compile, and the active
	// set keeps serving. It is how a rule spanning two revisions is kept
	// (revoke.CheckData: a denylist with entries is not lifted by one that
	// went missing or blank), judged for every set the engine activates,
	// not only for those a request happened to see.
	CheckData func(next, active map[string]any) error

	// beforeRead (tests) runs before every read of the directory.
	beforeRead func()
}

const (
	defaultDebounce = 100 * time.Millisecond
	defaultRescan   = 10 * time.Second
	// buildTimeout bounds one compile of the policy set.
	buildTimeout = time.Minute
)

// Engine evaluates the policy set of one directory and hot-reloads it. All
// methods are safe for concurrent use; Evaluate never waits for a reload.
type Engine struct {
	dir     string
	opts    Options
	log     *slog.Logger
	metrics *metrics
	noWatch bool // tests: rely on the periodic rescan alone

	active atomic.Pointer[policySet] // never nil after NewEngine

	reloadMu sync.Mutex // serializes reloads; guards seenKey and seenAt
	seenKey  string     // settleWait's fallback for file times in the future
	seenAt   time.Time

	mu        sync.Mutex // guards the fields below
	lastErr   error
	failedRev string // revision of the last set that did not compile
	subs      []chan struct{}
}

var _ Evaluator = (*Engine)(nil)

// NewEngine loads the policy directory. The initial load must succeed; its
// error (a *LoadError for policy problems) names file and line.
//
// Like every reload, the initial load waits until the directory has settled
// (no file of the set changed for Debounce, see settle.go), for at most
// 10 × Debounce + 1 s, and then fails with ErrUnsettled. It does not accept
// an unsettled directory: there is no previous revision to keep, and a
// half-written flakes.yaml that happens to be valid YAML would serve wider
// access until the next reload. So a directory written just before the
// start (tests, an init container) costs at most Debounce of start-up time,
// and one that never settles fails closed: authz does not start.
func NewEngine(dir string, opts Options) (*Engine, error) {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Debounce <= 0 {
		opts.Debounce = defaultDebounce
	}
	if opts.Rescan == 0 {
		opts.Rescan = defaultRescan
	}
	if opts.CacheSize == 0 {
		opts.CacheSize = defaultCacheSize
	}
	dir = filepath.Clean(dir)
	e := &Engine{
		dir:     dir,
		opts:    opts,
		log:     opts.Logger.With("component", "policy", "dir", dir),
		metrics: newMetrics(opts.Registerer),
	}
	ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
	defer cancel()
	start := time.Now()
	var snap *snapshot
	for deadline := start.Add(e.settleLimit()); ; {
		s, wait, err := e.read(time.Now())
		if err != nil {
			e.metrics.failed(time.Since(start).Seconds())
			return nil, fmt.Errorf("load policies: %w", err)
		}
		if wait == 0 {
			snap = s
			break
		}
		if time.Until(deadline) < wait {
			e.metrics.failed(time.Since(start).Seconds())
			return nil, fmt.Errorf("load policies: %w: %s changed less than %v ago, again and again for %v", ErrUnsettled, dir, e.opts.Debounce, time.Since(start).Round(time.Millisecond))
		}
		time.Sleep(wait)
	}
	set, err := build(ctx, dir, snap, e.opts.CacheSize, nil)
	if err == nil {
		err = e.checkData(set, nil)
	}
	if err != nil {
		e.metrics.failed(time.Since(start).Seconds())
		return nil, fmt.Errorf("load policies: %w", err)
	}
	e.activate(set, "start", time.Since(start))
	return e, nil
}

// Revision is the short content hash of the active policy set.
func (e *Engine) Revision() string { return e.active.Load().Revision }

// Data is the active data document (data files by base name). It is shared:
// callers must not modify it. Numbers are json.Number.
func (e *Engine) Data() map[string]any { return e.active.Load().Data }

// LastError is the error of the last failed reload, nil once a reload
// succeeds (or the directory returns to the active set).
func (e *Engine) LastError() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.lastErr
}

// Subscribe returns a channel that receives a value after each swap to a new
// revision. It has a buffer of one: a slow reader sees at least one
// notification after the latest swap, not one per swap.
func (e *Engine) Subscribe() <-chan struct{} {
	ch := make(chan struct{}, 1)
	e.mu.Lock()
	e.subs = append(e.subs, ch)
	e.mu.Unlock()
	return ch
}

// Evaluate decides one input with the active policy set. A policy that
// leaves allow undefined or non-boolean denies, with a Reason that names the
// problem; an evaluation error (conflicting rule values, a builtin error,
// ctx done) is returned and must be treated as a deny by the caller.
func (e *Engine) Evaluate(ctx context.Context, input map[string]any) (Decision, error) {
	set := e.active.Load()
	var buf [512]byte // most keys fit: no allocation for a cache hit
	var key []byte
	cached := false
	if set.cache != nil {
		if key, cached = set.cache.key(buf[:0], input); cached {
			if d, ok := set.cache.get(key); ok {
				e.metrics.cacheHits.Inc()
				return d, nil
			}
			e.metrics.cacheMisses.Inc()
		}
	}
	v, err := toValue(input)
	if err != nil {
		return Decision{Revision: set.Revision}, fmt.Errorf("policy input: %w", err)
	}
	d, err := set.evaluate(ctx, v)
	if err == nil && cached {
		set.cache.put(key, d)
	}
	return d, err
}

// Reload reads the directory now and activates it if it changed. It returns
// the reason when the directory's current set cannot be activated (the
// previous one keeps serving). Callers may use it for a forced reload
// (SIGHUP); Run does the same on changes.
//
// A directory that changed less than Debounce ago is not activated yet:
// Reload waits until it has settled and reads it again, for at most
// 10 × Debounce + 1 s (and until ctx is done), then returns an error wrapping
// ErrUnsettled. That is not a policy problem and is not recorded as one
// (LastError and the reload metrics are unchanged); a running Run activates
// the directory once it is quiet.
func (e *Engine) Reload(ctx context.Context) error {
	deadline := time.Now().Add(e.settleLimit())
	for {
		wait, err := e.reload(ctx, "manual")
		if wait == 0 {
			return err
		}
		if time.Until(deadline) < wait {
			return fmt.Errorf("reload %s: %w (it must be unchanged for %v); the active revision %s keeps serving", e.dir, ErrUnsettled, e.opts.Debounce, e.Revision())
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

// Run watches the directory (fsnotify, debounced) and rescans it
// periodically until ctx is done, reloading on every change. It returns nil
// when ctx is done, or an error if it can neither watch nor rescan.
func (e *Engine) Run(ctx context.Context) error {
	watcher, err := fsnotify.NewWatcher()
	if e.noWatch && err == nil {
		_ = watcher.Close()
		watcher, err = nil, errors.New("watching disabled")
	}
	if err != nil {
		if e.opts.Rescan < 0 {
			return fmt.Errorf("watch policy directory %s: %w", e.dir, err)
		}
		e.log.Warn("cannot watch the policy directory; relying on the periodic rescan", "error", err.Error(), "rescan", e.opts.Rescan.String())
	} else {
		defer func() { _ = watcher.Close() }()
	}
	watching, warned := false, false
	watch := func() {
		if watcher == nil || watching {
			return
		}
		if err := watcher.Add(e.dir); err != nil {
			if !warned { // retried at every rescan, reported once
				e.log.Warn("cannot watch the policy directory; relying on the periodic rescan", "error", err.Error())
				warned = true
			}
			return
		}
		watching, warned = true, false
	}
	watch()
	// A directory named through a symlink (current -> releases/v7, swapped
	// with ln -sfn and mv -T) is watched where the link pointed when added;
	// the link's own directory is watched too, so that a swap re-adds the
	// watch at once instead of at the next rescan.
	link := ""
	if fi, err := os.Lstat(e.dir); err == nil && fi.Mode()&os.ModeSymlink != 0 && watcher != nil {
		if err := watcher.Add(filepath.Dir(e.dir)); err != nil {
			e.log.Warn("the policy directory is a symlink and its parent cannot be watched; a swap of the link is seen at the next rescan", "error", err.Error())
		} else {
			link = e.dir
		}
	}
	if !watching && e.opts.Rescan < 0 {
		return fmt.Errorf("watch policy directory %s: not watchable and rescan disabled", e.dir)
	}
	// One timer for the debounce after events and for the retry of a
	// directory that had not settled yet (reload's wait).
	debounce := time.NewTimer(time.Hour)
	debounce.Stop()
	defer debounce.Stop()
	var pending time.Time // the first event the debounce waits after
	reload := func(trigger string) {
		if wait, _ := e.reload(ctx, trigger); wait > 0 {
			debounce.Reset(wait)
		}
	}
	// Catch up with changes made between NewEngine and the watch.
	reload("watch")

	var events <-chan fsnotify.Event
	var watchErrs <-chan error
	if watcher != nil {
		events, watchErrs = watcher.Events, watcher.Errors
	}
	var rescan <-chan time.Time
	if e.opts.Rescan > 0 {
		t := time.NewTicker(e.opts.Rescan)
		defer t.Stop()
		rescan = t.C
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-events:
			if !ok {
				events = nil
				continue
			}
			if ev.Name == e.dir && ev.Has(fsnotify.Remove|fsnotify.Rename) {
				watching = false // the directory itself went away; re-added on rescan
			}
			if link != "" && filepath.Dir(ev.Name) == filepath.Dir(link) {
				if ev.Name != link {
					continue // another entry beside the link
				}
				// The link was replaced: watch its new target.
				_ = watcher.Remove(link)
				watching = false
				watch()
			} else if !eventMatters(e.dir, ev.Name) {
				continue // an editor's swap file rewritten as the admin types must not postpone reloads
			}
			// An event may matter (ConfigMap swaps rename dot-entries), and
			// an unchanged set costs only a read and a hash. The slack lets
			// the files' own times (see settleWait) agree that they settled.
			// Events keep pushing the reload back only up to maxPostpone
			// debounces after the first: a file written without pause
			// cannot hold an older set in force (reload refuses what has
			// not settled, so an early read costs only the read).
			if pending.IsZero() {
				pending = time.Now()
			}
			if time.Since(pending) < maxPostpone*e.opts.Debounce {
				debounce.Reset(e.opts.Debounce + timestampSlack)
			}
		case err, ok := <-watchErrs:
			if !ok {
				watchErrs = nil
				continue
			}
			// Usually an inotify queue overflow: events were lost.
			e.log.Warn("policy directory watch error; rescanning", "error", err.Error())
			debounce.Reset(e.opts.Debounce + timestampSlack)
		case <-debounce.C:
			pending = time.Time{}
			reload("change")
		case <-rescan:
			watch()
			reload("rescan")
		}
	}
}

// read reads the directory once. A nil error with wait > 0 means it has not
// settled (see settle.go): snap is nil if the read itself was disturbed by
// a writer, otherwise snap is what is there now, not to be activated before
// wait has passed and a new read finds it unchanged.
func (e *Engine) read(now time.Time) (snap *snapshot, wait time.Duration, err error) {
	if e.opts.beforeRead != nil {
		e.opts.beforeRead()
	}
	snap, err = readDir(e.dir, false)
	var u *unsettledError
	switch {
	case errors.As(err, &u):
		e.log.Debug("policy directory changed while it was read; retrying", "reason", u.what)
		return nil, e.opts.Debounce, nil
	case err != nil:
		// An error in a directory that changed a moment ago (a ConfigMap
		// swap leaves links dangling for a moment) is judged once it is
		// quiet: it may well be gone by then.
		if fi, serr := os.Stat(e.dir); serr == nil {
			if w := e.changedWithin(fi, now); w > 0 {
				e.log.Debug("policy directory changed a moment ago and cannot be read yet; retrying", "error", err.Error(), "retry_in", w.String())
				return nil, w, nil
			}
		}
		return nil, 0, err
	}
	return snap, e.settleWait(snap, now), nil
}

// reload is the one place a new set is read, compiled and swapped in. It
// returns wait > 0 (and no error) when the directory has not settled yet:
// nothing was judged, and the caller retries after wait.
func (e *Engine) reload(ctx context.Context, trigger string) (wait time.Duration, err error) {
	e.reloadMu.Lock()
	defer e.reloadMu.Unlock()

	start := time.Now()
	cur := e.active.Load()
	snap, wait, err := e.read(start)
	if err != nil {
		e.fail(err, "", trigger, time.Since(start))
		return 0, err
	}
	if snap == nil {
		return wait, nil
	}
	if snap.Revision == cur.Revision {
		e.mu.Lock()
		restored := e.lastErr != nil
		e.lastErr, e.failedRev = nil, ""
		e.mu.Unlock()
		if restored {
			e.metrics.healthy.Set(1)
			e.log.Info("policy directory is back to the active revision", "revision", cur.Revision, "trigger", trigger)
		}
		return 0, nil
	}
	e.mu.Lock()
	known, lastErr := snap.Revision == e.failedRev, e.lastErr
	e.mu.Unlock()
	if known {
		return 0, lastErr // already reported; wait for the next change
	}
	if wait > 0 {
		e.log.Debug("policy directory changed less than the debounce period ago; not activated yet",
			"trigger", trigger, "revision", snap.Revision, "retry_in", wait.String())
		return wait, nil
	}
	e.warnRemoved(cur, snap, trigger)

	bctx, cancel := context.WithTimeout(ctx, buildTimeout)
	defer cancel()
	set, err := build(bctx, e.dir, snap, e.opts.CacheSize, cur)
	if err == nil {
		err = e.checkData(set, cur)
	}
	if err != nil {
		if ctx.Err() != nil {
			return 0, ctx.Err() // shutting down: not the policy's fault
		}
		e.fail(err, snap.Revision, trigger, time.Since(start))
		return 0, err
	}
	e.activate(set, trigger, time.Since(start))
	return 0, nil
}

// checkData runs Options.CheckData on set (cur: the active set, nil at
// start).
func (e *Engine) checkData(set, cur *policySet) error {
	if e.opts.CheckData == nil {
		return nil
	}
	var active map[string]any
	if cur != nil {
		active = cur.Data
	}
	if err := e.opts.CheckData(set.Data, active); err != nil {
		return &LoadError{Dir: e.dir, Problems: []Problem{{Message: err.Error()}}}
	}
	return nil
}

// warnRemoved logs each file of the active set that snap, about to be
// judged, no longer has: removing a data file often widens access (its
// entries restrict it), and whether or not the policy then refuses the set,
// an admin should see that a file went away.
func (e *Engine) warnRemoved(cur *policySet, snap *snapshot, trigger string) {
	have := snap.Names()
	for _, name := range cur.Files {
		if slices.Contains(have, name) {
			continue
		}
		kind := "data file"
		if classify(name) == kindPolicy {
			kind = "policy file"
		}
		e.log.Warn(fmt.Sprintf("policy reload removes %s %s, which the active revision has", kind, name),
			"file", name, "trigger", trigger, "active_revision", cur.Revision, "new_revision", snap.Revision)
	}
}

// fail records a reload that could not be activated. revision is that of
// the broken set, "" when the directory could not even be read. Metrics and
// log come before LastError changes, so whoever sees the error sees them.
func (e *Engine) fail(err error, revision, trigger string, took time.Duration) {
	e.mu.Lock()
	repeated := revision == "" && e.lastErr != nil && e.lastErr.Error() == err.Error()
	e.mu.Unlock()
	if !repeated { // the same unreadable directory at every rescan is reported once
		e.metrics.failed(took.Seconds())
		attrs := []any{
			"trigger", trigger,
			"active_revision", e.active.Load().Revision,
			"error", err.Error(),
		}
		if revision != "" {
			attrs = append(attrs, "rejected_revision", revision)
		}
		var le *LoadError
		if errors.As(err, &le) {
			problems := make([]string, len(le.Problems))
			for i, p := range le.Problems {
				problems[i] = p.String()
			}
			attrs = append(attrs, "problems", problems)
		}
		e.log.Error("policy reload failed; the active revision keeps serving", attrs...)
	}
	e.mu.Lock()
	e.lastErr, e.failedRev = err, revision
	e.mu.Unlock()
}

// activate swaps set in and tells subscribers. Metrics and log come first,
// so that whoever sees the new revision also sees them.
func (e *Engine) activate(set *policySet, trigger string, took time.Duration) {
	e.metrics.succeeded(set.Revision, took.Seconds())
	attrs := []any{"revision", set.Revision, "files", set.Files, "trigger", trigger, "duration_ms", took.Milliseconds()}
	if set.cache != nil {
		attrs = append(attrs, "decision_cache", "on", "input_paths", describePaths(set.cache.paths))
	} else {
		attrs = append(attrs, "decision_cache", "off: "+set.noCache)
	}
	if prev := e.active.Load(); prev != nil {
		attrs = append(attrs, "previous_revision", prev.Revision)
	}
	e.log.Info("policy loaded", attrs...)
	e.active.Store(set)
	e.mu.Lock()
	e.lastErr, e.failedRev = nil, ""
	subs := e.subs
	e.mu.Unlock()
	for _, ch := range subs {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// evaluate runs the prepared decision query.
func (s *policySet) evaluate(ctx context.Context, input ast.Value) (Decision, error) {
	d := Decision{Revision: s.Revision}
	rs, err := s.query.Eval(ctx, rego.EvalParsedInput(input))
	if err != nil {
		return d, fmt.Errorf("evaluate policy %s: %w", s.Revision, err)
	}
	if len(rs) != 1 {
		return d, fmt.Errorf("evaluate policy %s: %d results, want 1", s.Revision, len(rs))
	}
	out, ok := rs[0].Bindings[string(decisionVar)].(map[string]any)
	if !ok {
		return d, fmt.Errorf("evaluate policy %s: decision is %T", s.Revision, rs[0].Bindings[string(decisionVar)])
	}
	allow, defined := out["allow"]
	switch a := allow.(type) {
	case bool:
		d.Allow = a
	case nil:
		if !defined {
			d.Reason = "policy left allow undefined for this input (add `default allow := false`)"
		} else {
			d.Reason = "policy's allow is null, not a boolean"
		}
		return d, nil
	default:
		d.Reason = fmt.Sprintf("policy's allow is %s, not a boolean", jsonType(a))
		return d, nil
	}
	switch r := out["reason"].(type) {
	case nil:
	case string:
		d.Reason = r
	default:
		d.Reason = fmt.Sprintf("policy's reason is %s, not a string", jsonType(r))
	}
	return d, nil
}

func jsonType(v any) string {
	switch v.(type) {
	case string:
		return "a string"
	case map[string]any:
		return "an object"
	case []any:
		return "an array"
	case bool:
		return "a boolean"
	case nil:
		return "null"
	}
	return "a number"
}
