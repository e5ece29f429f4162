package cacheserver

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/flakegate/flakegate/internal/index"
	"github.com/flakegate/flakegate/internal/nixname"
)

// readTracker records narinfo reads for retention (keep_for counts from a
// path's last push or read) coarsely: a flake's path is recorded at most
// once per interval, and records are written in batches (flush), never one
// write per GET. Memory is bounded: maxTracked recent entries, maxPending
// unwritten ones, of which one flake may hold maxPendingPerFlake. A full
// budget asks for an early flush (full); until it is done, further reads
// (of that flake, or of every flake when the whole budget is used) are not
// recorded. The per-flake share keeps one flake's reads (a pusher reading
// its own paths by the hundred thousand) from crowding out another's,
// which a collection would then count as unread (adversarial review,
// 2026-12-05; TestOneFlakesReadsCannotCrowdOutAnothers).
type readTracker struct {
	every  time.Duration
	now    func() time.Time
	mu     sync.Mutex
	recent *shardedLRU[int64] // when last recorded (unix ns); added under mu
	// pending are the reads to write at the next flush, per flake.
	pending map[nixname.Flake][]string
	n       int
	full    chan struct{} // a value when a budget filled: flush early
}

const (
	maxTracked         = 1 << 18
	maxPending         = 1 << 17
	maxPendingPerFlake = maxPending / 4
)

// newReadTracker records each path at most once per every; every <= 0
// switches recording off (nil tracker).
func newReadTracker(every time.Duration) *readTracker {
	if every <= 0 {
		return nil
	}
	return &readTracker{every: every, now: time.Now, recent: newShardedLRU[int64](maxTracked), pending: map[nixname.Flake][]string{},
		full: make(chan struct{}, 1)}
}

// record notes a read of flake's path.
func (t *readTracker) record(flake nixname.Flake, hash string) {
	if t == nil || flake.IsZero() {
		return
	}
	k := cacheKey{flake, hash}
	now := t.now().UnixNano()
	// Most reads were recorded less than every ago: answered by the
	// sharded cache without the tracker's lock (every hit would take it).
	if at, ok := t.recent.Get(k); ok && now-at < int64(t.every) {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	// Again under the lock: two first reads at once record once.
	if at, ok := t.recent.Get(k); ok && now-at < int64(t.every) {
		return
	}
	if t.n >= maxPending || len(t.pending[k.flake]) >= maxPendingPerFlake {
		select {
		case t.full <- struct{}{}:
		default: // already asked
		}
		return
	}
	k = k.owned() // pending outlives the request too
	t.recent.addOwned(k, now)
	t.pending[k.flake] = append(t.pending[k.flake], k.key)
	t.n++
}

// take returns and clears the pending reads.
func (t *readTracker) take() map[nixname.Flake][]string {
	t.mu.Lock()
	defer t.mu.Unlock()
	p := t.pending
	t.pending, t.n = map[nixname.Flake][]string{}, 0
	return p
}

// flushReads writes the pending reads to the index (a batch per flake).
func (s *Server) flushReads(ctx context.Context) {
	c, ok := s.idx.(index.Collectable)
	if !ok || s.reads == nil {
		return
	}
	now := s.reads.now()
	for flake, hashes := range s.reads.take() {
		for chunk := range slices.Chunk(hashes, 5000) {
			if err := c.TouchPaths(ctx, flake, chunk, now); err != nil {
				s.log.WarnContext(ctx, "record reads for retention (lost: the paths count as read at their previous use)", "flake", flake.String(), "paths", len(chunk), "err", err)
			}
		}
	}
}

// flushReadsDetached writes the pending reads within 10 s, whether or not
// ctx (the server's) is done meanwhile.
func (s *Server) flushReadsDetached(ctx context.Context) {
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	s.flushReads(fctx)
}

// InvalidateCaches drops the in-memory lookup caches (after a garbage
// collection in this process).
func (s *Server) InvalidateCaches() {
	s.hits.clear()
	s.misses.clear()
}

// Maintain runs the server's background work until ctx is done: it writes
// recorded reads every ReadFlushInterval and polls the index's collection
// generation every GenerationPoll, clearing the lookup caches when a
// collection (in any process sharing the index) removed something. On
// return it writes the reads still pending.
func (s *Server) Maintain(ctx context.Context) {
	c, ok := s.idx.(index.Collectable)
	if !ok {
		return
	}
	gen, err := c.Generation(ctx)
	if err != nil {
		s.log.WarnContext(ctx, "read the garbage collection generation", "err", err)
	}
	poll := time.NewTicker(s.genPoll)
	defer poll.Stop()
	flush := time.NewTicker(s.readFlush)
	defer flush.Stop()
	var full <-chan struct{}
	if s.reads != nil {
		full = s.reads.full
	}
	for {
		select {
		case <-ctx.Done():
			s.flushReadsDetached(ctx)
			return
		case <-full:
			s.flushReadsDetached(ctx)
		case <-flush.C:
			// Not cancelled with the server: a flush under way when it
			// stops has taken the pending reads, and the final flush
			// would find none.
			s.flushReadsDetached(ctx)
		case <-poll.C:
			g, err := c.Generation(ctx)
			if err != nil {
				s.log.WarnContext(ctx, "read the garbage collection generation", "err", err)
				continue
			}
			if g != gen {
				s.InvalidateCaches()
				s.log.InfoContext(ctx, "garbage collection removed objects: lookup caches cleared", "generation", g)
				gen = g
			}
		}
	}
}
