package gc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/flakegate/flakegate/internal/blob"
	"github.com/flakegate/flakegate/internal/index"
	"github.com/flakegate/flakegate/internal/nixcache"
	"github.com/flakegate/flakegate/internal/nixname"
)

// Reasons a path goes.
const (
	ReasonExpired       = "expired"         // not used within keep_for (or -older-than)
	ReasonFlakeMaxSize  = "flake_max_size"  // least recently used beyond the flake's max_size
	ReasonGlobalMaxSize = "global_max_size" // least recently used beyond the store's max_size
)

// Config is what a Collector needs.
type Config struct {
	Index index.Index // must implement index.Collectable
	Blob  blob.Store
	// Logger receives the one line per collection (and failures).
	Logger *slog.Logger
	// Metrics, when not nil, are updated by each collection.
	Metrics *Metrics
	// InvalidateDelay is how long a collection waits between removing
	// records from the index (and bumping its generation) and deleting
	// the blobs: long enough for every server sharing the index to notice
	// the new generation and drop its cached answers (they poll it every
	// second), so that none serves a narinfo whose NAR is gone.
	InvalidateDelay time.Duration
	// Now is the clock (tests); nil: time.Now.
	Now func() time.Time
}

// Options are one collection's settings.
type Options struct {
	Retention Retention
	// OlderThan, when set (OverrideKeepFor), replaces every flake's
	// keep_for for this collection (blobserver gc -older-than).
	OlderThan       time.Duration
	OverrideKeepFor bool
	// DryRun computes and reports what would go and changes nothing.
	DryRun bool
	// Verbose lists every path in the report (dry runs print them).
	Verbose bool
}

// Removal is one path a collection removes (or would, in a dry run).
type Removal struct {
	Hash     string
	Size     int64
	LastUsed time.Time
	Reason   string
}

// FlakeReport is what a collection did in one flake.
type FlakeReport struct {
	Flake nixname.Flake
	// Paths and Bytes removed (NAR sizes of the removed paths), by reason.
	Paths   int
	Bytes   int64
	Reasons map[string]int
	// Kept is how many paths stay; Skipped those that were to go but were
	// used (pushed, read, pinned) while the collection ran, kept with
	// their closures.
	Kept, Skipped int
	// NarsReleased is how many NAR files the flake stopped owning (not
	// predicted by a dry run).
	NarsReleased int
	// Files is how many files of each kind (listings, debug info links,
	// realisations, build trace entries) went with the paths and NAR
	// files they need, or — a dry run — would go.
	Files map[nixname.Kind]int64
	// Logs is how many build logs expired (keep_for after their last
	// upload) and were deleted (a log whose blob could not be deleted
	// stays doomed for the next collection and is not counted), or would
	// be; LogBytes the size of their blobs (a log whose blob is already
	// gone counts 0).
	Logs     int
	LogBytes int64
	// Removed lists the paths (Options.Verbose).
	Removed []Removal
}

// Report is what a collection did.
type Report struct {
	Start    time.Time
	Duration time.Duration
	DryRun   bool
	Flakes   []FlakeReport
	// NarsDeleted and BytesFreed count the NAR blobs deleted from storage
	// (owned by no flake any more).
	NarsDeleted int
	BytesFreed  int64
	// GlobalCutoff is the last-use time below which the store's max_size
	// evicted roots (zero: none).
	GlobalCutoff time.Time
	// LogsDeleted counts the build log blobs deleted (dry run: 0; see
	// Logs).
	LogsDeleted int

	logs []flakeLogs // doomed logs whose blobs go after the NARs'
}

// flakeLogs are a flake's doomed build logs.
type flakeLogs struct {
	fr   int // index in Report.Flakes
	logs []index.Log
}

// Paths returns the number of paths removed in every flake.
func (r Report) Paths() (n int) {
	for _, f := range r.Flakes {
		n += f.Paths
	}
	return n
}

// Files returns the number of files removed in every flake.
func (r Report) Files() (n int64) {
	for _, f := range r.Flakes {
		n += f.FileCount()
	}
	return n
}

// Logs returns the number of build logs and their bytes that expired in
// every flake (deleted, or would be in a dry run).
func (r Report) Logs() (n int, bytes int64) {
	for _, f := range r.Flakes {
		n += f.Logs
		bytes += f.LogBytes
	}
	return n, bytes
}

// FileCount returns the number of the flake's files removed, all kinds.
func (f FlakeReport) FileCount() (n int64) {
	for _, k := range f.Files {
		n += k
	}
	return n
}

// FileKinds returns the kinds of files removed, sorted.
func (f FlakeReport) FileKinds() []nixname.Kind {
	return slices.Sorted(maps.Keys(f.Files))
}

// Collector runs collections.
type Collector struct {
	cfg Config
	idx index.Collectable

	// beforeDelete, when set (tests), runs after a flake's scan and
	// before its deletions.
	beforeDelete func(nixname.Flake)
}

// New checks cfg and returns a Collector.
func New(cfg Config) (*Collector, error) {
	var errs []error
	c, ok := cfg.Index.(index.Collectable)
	if cfg.Index == nil || !ok {
		errs = append(errs, fmt.Errorf("garbage collector: index %T cannot be collected", cfg.Index))
	}
	if cfg.Blob == nil {
		errs = append(errs, errors.New("garbage collector: no blob store"))
	}
	if cfg.InvalidateDelay < 0 {
		errs = append(errs, errors.New("garbage collector: negative InvalidateDelay"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Collector{cfg: cfg, idx: c}, nil
}

// Collect runs one collection. A real one (not a dry run) first takes the
// index's collector lock and returns an error wrapping index.ErrBusy when
// another collection holds it.
func (c *Collector) Collect(ctx context.Context, opts Options) (Report, error) {
	start := c.cfg.Now()
	rep := Report{Start: start, DryRun: opts.DryRun}
	if !opts.DryRun {
		unlock, err := c.idx.LockCollector(ctx)
		if err != nil {
			c.cfg.Metrics.observe(rep, err)
			return rep, err
		}
		defer unlock()
	}
	err := c.collect(ctx, opts, &rep)
	rep.Duration = c.cfg.Now().Sub(start)
	if err == nil && !opts.DryRun {
		if usage, uerr := c.idx.Usage(ctx); uerr != nil {
			c.cfg.Logger.WarnContext(ctx, "garbage collection: storage used per flake", "err", uerr)
		} else {
			c.cfg.Metrics.setUsage(usage)
		}
	}
	c.cfg.Metrics.observe(rep, err)
	c.log(ctx, rep, err)
	return rep, err
}

func (c *Collector) log(ctx context.Context, rep Report, err error) {
	logs, logBytes := rep.Logs()
	attrs := []any{"dry_run", rep.DryRun, "duration", rep.Duration.Round(time.Millisecond).String(),
		"paths", rep.Paths(), "nars_deleted", rep.NarsDeleted, "bytes_freed", rep.BytesFreed,
		"files", rep.Files(), "logs", logs, "log_bytes", logBytes, "logs_deleted", rep.LogsDeleted}
	var flakes []string
	for _, f := range rep.Flakes {
		if !f.changed() {
			continue
		}
		line := fmt.Sprintf("%s:paths=%d,bytes=%d,nars_released=%d,skipped=%d,files=%d", f.Flake, f.Paths, f.Bytes, f.NarsReleased, f.Skipped, f.FileCount())
		for _, k := range f.FileKinds() {
			line += fmt.Sprintf(",files_%s=%d", k, f.Files[k])
		}
		flakes = append(flakes, line+fmt.Sprintf(",logs=%d,log_bytes=%d", f.Logs, f.LogBytes))
	}
	attrs = append(attrs, "flakes", flakes)
	if !rep.GlobalCutoff.IsZero() {
		attrs = append(attrs, "global_cutoff", rep.GlobalCutoff)
	}
	if err != nil {
		c.cfg.Logger.ErrorContext(ctx, "garbage collection failed", append(attrs, "err", err)...)
		return
	}
	c.cfg.Logger.InfoContext(ctx, "garbage collection done", attrs...)
}

// changed tells whether the collection did (or would do) anything in the
// flake.
func (f FlakeReport) changed() bool {
	return f.Paths > 0 || f.NarsReleased > 0 || f.Skipped > 0 || f.FileCount() > 0 || f.Logs > 0
}

func (c *Collector) collect(ctx context.Context, opts Options, rep *Report) error {
	ret := opts.Retention
	cutoff := rep.Start.Add(-ret.Grace)
	if ret.MaxSize > 0 {
		t, err := c.globalCutoff(ctx, ret.MaxSize)
		if err != nil {
			return err
		}
		rep.GlobalCutoff = t
	}
	flakes, err := c.idx.CollectableFlakes(ctx)
	if err != nil {
		return err
	}
	for _, f := range flakes {
		pol := ret.For(f)
		if opts.OverrideKeepFor {
			pol.KeepFor = opts.OlderThan
		}
		fr, err := c.collectFlake(ctx, f, pol, rep.Start, cutoff, rep.GlobalCutoff, opts)
		if err == nil {
			var logs []index.Log
			before := logCutoff(pol, opts, rep.Start, cutoff)
			if opts.DryRun {
				logs, err = c.idx.ExpiredLogs(ctx, f, before)
				fr.Logs = len(logs)
				if err == nil {
					for _, n := range c.blobSizes(ctx, logKeys(logs)) {
						fr.LogBytes += n
					}
				}
			} else if logs, err = c.idx.DoomLogs(ctx, f, before); len(logs) > 0 {
				// Counted once deleted.
				rep.logs = append(rep.logs, flakeLogs{len(rep.Flakes), logs})
			}
		}
		rep.Flakes = append(rep.Flakes, fr)
		if err != nil {
			return fmt.Errorf("collect %s: %w", f, err)
		}
	}
	if opts.DryRun {
		return nil
	}
	t := time.Now()
	doomed, err := c.idx.DoomNars(ctx, cutoff)
	if err != nil {
		return err
	}
	c.cfg.Logger.DebugContext(ctx, "garbage collection: doomed NARs", "nars", len(doomed), "took", time.Since(t).String())
	if rep.Paths() == 0 && len(doomed) == 0 && len(rep.logs) == 0 {
		return nil
	}
	// Servers drop cached answers when the generation changes; the blobs
	// go only once they have had time to notice.
	if err := c.idx.BumpGeneration(ctx); err != nil {
		return err
	}
	if len(doomed) == 0 && len(rep.logs) == 0 {
		return nil
	}
	select {
	case <-time.After(c.cfg.InvalidateDelay):
	case <-ctx.Done():
		return ctx.Err()
	}
	var keys []string
	for _, u := range doomed {
		keys = append(keys, "nar/"+u.File)
	}
	goneKeys, err := c.deleteBlobs(ctx, keys)
	var gone []index.NarUse
	for _, u := range doomed {
		if goneKeys["nar/"+u.File] {
			gone = append(gone, u)
		}
	}
	for _, u := range gone {
		rep.NarsDeleted++
		rep.BytesFreed += u.Size
	}
	files := make([]string, len(gone))
	for i, u := range gone {
		files[i] = u.File
	}
	if ferr := c.idx.ForgetNars(ctx, files); ferr != nil {
		err = errors.Join(err, ferr)
	}
	for _, fl := range rep.logs {
		fr := &rep.Flakes[fl.fr]
		keys := logKeys(fl.logs)
		// The sizes, for the report (the index does not record them).
		sizes := c.blobSizes(ctx, keys)
		// With each log, the blobs of its other encodings: a log replaced
		// by one in another encoding left its blob behind, named by no
		// record. Deleted while the record is doomed (no upload of the
		// log can claim it, so none commits under these keys).
		others := otherLogKeys(fr.Flake, fl.logs)
		goneKeys, lerr := c.deleteBlobs(ctx, append(keys, slices.Concat(others...)...))
		var drvs []string
		// Those deleted, every encoding's: a log whose blobs stay is
		// retried next time.
		for i, l := range fl.logs {
			if goneKeys[l.BlobKey] && allGone(goneKeys, others[i]) {
				drvs = append(drvs, l.Drv)
				fr.Logs++
				fr.LogBytes += sizes[l.BlobKey]
			}
		}
		rep.LogsDeleted += len(drvs)
		if ferr := c.idx.ForgetLogs(ctx, fr.Flake, drvs); ferr != nil {
			lerr = errors.Join(lerr, ferr)
		}
		err = errors.Join(err, lerr)
	}
	return err
}

// logCutoff is the upload time before which the flake's build logs
// expire (index.Collectable.DoomLogs' before; zero: none expires, the
// doomed ones are listed). A log is kept for keep_for (or -older-than)
// after its last upload, whatever its paths: logs are looked up by
// derivation, which no path record names reliably, and are not counted in
// max_size. No keep_for: logs stay.
func logCutoff(pol Policy, opts Options, start, cutoff time.Time) time.Time {
	if pol.KeepFor <= 0 && !opts.OverrideKeepFor {
		return time.Time{}
	}
	before := start.Add(-pol.KeepFor)
	if cutoff.Before(before) {
		before = cutoff
	}
	return before
}

// otherLogKeys are, for each log, the blob keys of its derivation's log
// in every other encoding the server accepts.
func otherLogKeys(flake nixname.Flake, logs []index.Log) [][]string {
	encs := append([]string{""}, nixcache.Encodings()...)
	out := make([][]string, len(logs))
	for i, l := range logs {
		for _, enc := range encs {
			if k := nixname.LogBlobKey(flake, enc, l.Drv); k != l.BlobKey {
				out[i] = append(out[i], k)
			}
		}
	}
	return out
}

func allGone(gone map[string]bool, keys []string) bool {
	for _, k := range keys {
		if !gone[k] {
			return false
		}
	}
	return true
}

func logKeys(logs []index.Log) []string {
	keys := make([]string, len(logs))
	for i, l := range logs {
		keys[i] = l.BlobKey
	}
	return keys
}

// blobSizes returns the size of each blob under keys, a few at a time
// (absent: none). The sizes are only reported: a blob whose size cannot be
// read is logged and left out of the bytes, and is still deleted.
func (c *Collector) blobSizes(ctx context.Context, keys []string) map[string]int64 {
	var (
		mu     sync.Mutex
		sizes  = make(map[string]int64, len(keys))
		failed int
		last   error
	)
	c.forEachBlob(keys, func(key string) {
		info, err := c.cfg.Blob.Stat(ctx, key)
		mu.Lock()
		defer mu.Unlock()
		switch {
		case err == nil:
			sizes[key] = info.Size
		case !errors.Is(err, blob.ErrNotFound):
			failed, last = failed+1, fmt.Errorf("size of blob %s: %w", key, err)
		}
	})
	if failed > 0 {
		c.cfg.Logger.WarnContext(ctx, "garbage collection: sizes of expired build logs unknown (they are still deleted; the report's bytes leave them out)",
			"logs", failed, "err", last)
	}
	return sizes
}

// globalCutoff returns the last-use time of the most recently used path
// that no longer fits the store's max size, newest first (zero when all
// fit). Paths used at or before it are not kept as roots.
func (c *Collector) globalCutoff(ctx context.Context, max int64) (time.Time, error) {
	var total int64
	var cut time.Time
	err := c.idx.ScanUsage(ctx, func(t time.Time, size int64) bool {
		total += size
		if total > max {
			cut = t
			return false
		}
		return true
	})
	return cut, err
}

// forEachBlob calls fn for each key, a few at a time (S3 answers each
// request in a round trip), and returns when all returned.
func (c *Collector) forEachBlob(keys []string, fn func(key string)) {
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	for _, key := range keys {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			fn(key)
		}()
	}
	wg.Wait()
}

// deleteBlobs deletes blobs and returns those gone (absent counts as
// gone).
func (c *Collector) deleteBlobs(ctx context.Context, keys []string) (map[string]bool, error) {
	var (
		mu   sync.Mutex
		gone = map[string]bool{}
		errs []error
	)
	c.forEachBlob(keys, func(key string) {
		err := c.cfg.Blob.Delete(ctx, key)
		mu.Lock()
		defer mu.Unlock()
		if err != nil && !errors.Is(err, blob.ErrNotFound) {
			errs = append(errs, fmt.Errorf("delete blob %s: %w", key, err))
			return
		}
		gone[key] = true
	})
	return gone, errors.Join(errs...)
}

// graph is one flake's paths, compactly: ids index the slices.
type graph struct {
	ids    map[string]int32
	hash   []string
	size   []int64
	last   []int64 // unix nanoseconds
	pinned []bool
	seen   []bool // scanned (a reference to a hash never scanned stays false)
	refs   [][]int32
}

func (g *graph) id(h string) int32 {
	if i, ok := g.ids[h]; ok {
		return i
	}
	i := int32(len(g.hash))
	g.ids[h] = i
	g.hash = append(g.hash, h)
	g.size = append(g.size, 0)
	g.last = append(g.last, 0)
	g.pinned = append(g.pinned, false)
	g.seen = append(g.seen, false)
	g.refs = append(g.refs, nil)
	return i
}

// closure marks, in keep, i and every path it references (transitively)
// that is not marked yet, and returns the size it added and the ids it
// marked (appended to marked[:0]).
func (g *graph) closure(i int32, keep []bool, marked []int32) (int64, []int32) {
	var added int64
	marked = marked[:0]
	stack := []int32{i}
	for len(stack) > 0 {
		n := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if keep[n] {
			continue
		}
		keep[n] = true
		marked = append(marked, n)
		added += g.size[n]
		stack = append(stack, g.refs[n]...)
	}
	return added, marked
}

// collectFlake decides which of a flake's paths stay (the closures of its
// pins and of the paths used within keep_for, most recent first while
// they fit max_size) and deletes the others, referrers before their
// references.
func (c *Collector) collectFlake(ctx context.Context, flake nixname.Flake, pol Policy, start, cutoff, globalCut time.Time, opts Options) (FlakeReport, error) {
	fr := FlakeReport{Flake: flake, Reasons: map[string]int{}}
	if !opts.DryRun {
		// What an interrupted collection doomed is decided anew.
		if err := c.idx.SparePaths(ctx, flake, nil); err != nil {
			return fr, err
		}
	}
	g := &graph{ids: map[string]int32{}}
	phase := time.Now()
	step := func(what string, args ...any) {
		c.cfg.Logger.DebugContext(ctx, "garbage collection: "+what, append([]any{"flake", flake.String(), "took", time.Since(phase).String()}, args...)...)
		phase = time.Now()
	}
	var narOf []string // a dry run's: each path's NAR file, by id
	err := c.idx.ScanPaths(ctx, flake, func(u index.PathUse) error {
		i := g.id(u.Hash)
		g.seen[i], g.size[i], g.last[i], g.pinned[i] = true, u.Size, u.LastUsed.UnixNano(), u.Pinned
		refs := make([]int32, 0, len(u.Refs))
		for _, r := range u.Refs {
			refs = append(refs, g.id(r))
		}
		g.refs[i] = refs
		if opts.DryRun {
			narOf = append(narOf, make([]string, len(g.hash)-len(narOf))...)
			narOf[i] = u.NarFile
		}
		return nil
	})
	if err != nil {
		return fr, err
	}
	n := int32(len(g.hash))
	step("scanned", "paths", n)
	keep := make([]bool, n)
	for i := range n {
		keep[i] = !g.seen[i] // a reference never scanned is not ours to delete
	}
	var stack []int32
	var size int64
	var roots []int32
	expiry := int64(-1 << 63)
	if pol.KeepFor > 0 || opts.OverrideKeepFor {
		expiry = start.Add(-pol.KeepFor).UnixNano()
	}
	for i := range n {
		if !g.seen[i] {
			continue
		}
		switch {
		case g.pinned[i]:
			var add int64
			add, stack = g.closure(i, keep, stack)
			size += add
		case g.last[i] >= expiry && (globalCut.IsZero() || g.last[i] > globalCut.UnixNano()):
			roots = append(roots, i)
		}
	}
	// Most recently used first, while they fit.
	slices.SortFunc(roots, func(a, b int32) int {
		if g.last[a] != g.last[b] {
			if g.last[a] > g.last[b] {
				return -1
			}
			return 1
		}
		return 0
	})
	full := false
	for _, r := range roots {
		if keep[r] || full {
			continue
		}
		var add int64
		add, stack = g.closure(r, keep, stack)
		if pol.MaxSize > 0 && size+add > pol.MaxSize {
			// It does not fit: neither it nor anything used less recently.
			for _, m := range stack {
				keep[m] = false
			}
			full = true
			continue
		}
		size += add
	}
	// What goes, and why.
	reason := func(i int32) string {
		switch {
		case g.last[i] < expiry:
			return ReasonExpired
		case !globalCut.IsZero() && g.last[i] <= globalCut.UnixNano():
			return ReasonGlobalMaxSize
		default:
			return ReasonFlakeMaxSize
		}
	}
	cut := cutoff.UnixNano()
	var goes []int32
	for i := range n {
		if !keep[i] {
			goes = append(goes, i)
		}
	}
	step("decided", "to_go", len(goes))
	if c.beforeDelete != nil {
		c.beforeDelete(flake)
	}
	// Doom what goes (in any order: a doomed path can no longer be used),
	// keep the closures of those that were used since the scan (not
	// doomed), then delete the rest.
	doomed := make([]bool, n)
	for chunk := range slices.Chunk(goes, deleteBatch) {
		hashes := make([]string, len(chunk))
		for k, i := range chunk {
			hashes[k] = g.hash[i]
		}
		var got []string
		if opts.DryRun {
			for _, i := range chunk { // what DoomPaths would doom now
				if g.last[i] < cut && !g.pinned[i] {
					got = append(got, g.hash[i])
				}
			}
		} else if got, err = c.idx.DoomPaths(ctx, flake, hashes, cutoff); err != nil {
			return fr, err
		}
		for _, h := range got {
			doomed[g.ids[h]] = true
		}
	}
	step("doomed")
	var spare []string
	for _, i := range goes {
		if doomed[i] {
			continue
		}
		keep[i] = false // re-mark it and its closure
		_, stack = g.closure(i, keep, stack)
		for _, m := range stack {
			if doomed[m] {
				doomed[m] = false
				spare = append(spare, g.hash[m])
			}
		}
	}
	if len(spare) > 0 && !opts.DryRun {
		if err := c.idx.SparePaths(ctx, flake, spare); err != nil {
			return fr, err
		}
	}
	var removed []int32
	for _, i := range goes {
		if doomed[i] {
			removed = append(removed, i)
		}
	}
	if !opts.DryRun {
		if _, err := c.idx.DeleteDoomed(ctx, flake); err != nil {
			return fr, err
		}
		step("deleted", "spared", len(spare))
	}
	toGo := len(goes)
	for _, i := range removed {
		why := reason(i)
		fr.Paths++
		fr.Bytes += g.size[i]
		fr.Reasons[why]++
		if opts.Verbose {
			fr.Removed = append(fr.Removed, Removal{Hash: g.hash[i], Size: g.size[i], LastUsed: time.Unix(0, g.last[i]), Reason: why})
		}
	}
	fr.Skipped = toGo - len(removed)
	fr.Kept = int(countSeen(g)) - fr.Paths
	if opts.DryRun {
		fr.Files, err = c.wouldDrop(ctx, flake, g, narOf, doomed, cutoff)
		return fr, err
	}
	released, err := c.idx.ReleaseNars(ctx, flake, cutoff)
	fr.NarsReleased = len(released)
	step("released NARs", "nars", len(released))
	if err != nil {
		return fr, err
	}
	// Files go with what they need (the paths deleted, the NAR files
	// released), once uploaded before the cutoff.
	fr.Files, err = c.idx.DropFiles(ctx, flake, cutoff)
	step("dropped files", "files", fr.FileCount())
	return fr, err
}

// wouldDrop is a dry run's prediction of what DropFiles(flake, cutoff)
// deletes once the paths in gone are deleted and ReleaseNars has run: a
// file uploaded before the cutoff that the flake does not serve now, or
// whose path goes, or — a debug info link — whose NAR file the flake
// releases (ReleaseNars: an ownership untouched since the cutoff that no
// remaining path names). Mirrors those two index rules; the dry-run tests
// compare it with what a real collection then deletes, on both indexes.
func (c *Collector) wouldDrop(ctx context.Context, flake nixname.Flake, g *graph, narOf []string, gone []bool, cutoff time.Time) (map[nixname.Kind]int64, error) {
	named := map[string]bool{} // NAR files of the paths that stay
	for i, nar := range narOf {
		if g.seen[i] && !gone[i] {
			named[nar] = true
		}
	}
	out := map[nixname.Kind]int64{}
	err := c.idx.ScanFiles(ctx, flake, cutoff, func(u index.FileUse) error {
		drop := !u.Served
		switch {
		case drop:
		case u.Kind == nixname.KindDebugInfo:
			drop = u.NarTouched.Before(cutoff) && !named[u.Needs]
		default:
			i, ok := g.ids[u.Needs]
			drop = ok && gone[i]
		}
		if drop {
			out[u.Kind]++
		}
		return nil
	})
	return out, err
}

func countSeen(g *graph) (n int32) {
	for _, s := range g.seen {
		if s {
			n++
		}
	}
	return n
}

// deleteBatch is how many paths one DoomPaths call marks.
const deleteBatch = 500
