package cacheserver

import (
	"hash/maphash"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"

	"github.com/flakegate/flakegate/internal/index"
	"github.com/flakegate/flakegate/internal/nixname"
)

// hitCache remembers positive index lookups so hot narinfos and NARs are
// served without a database query. Only hits are cached here ("not
// found" is missCache's, with its own rules), and that is safe because
// what the index answers for a hit never changes: a flake's narinfo record and NAR records are immutable,
// ownership only grows, and re-signing happens before a record is cached
// (keys change only with a restart). Entries are per flake (the union view
// composes them). A garbage collector that deletes paths or ownership must
// clear these caches (in every process sharing the index): the server
// watches the index's collection generation and clears them when it
// changes (Server.Maintain). A lookup that started before a clear does
// not add its answer after it (epoch).
type hitCache struct {
	narinfo *shardedLRU[index.Path]
	nar     *shardedLRU[struct{}]
	epoch   atomic.Int64
	// addMu orders adds with clear: an add checks the epoch and adds
	// under its read lock, clear moves the epoch on and purges under its
	// write lock. Checked without it, an add whose lookup started before a
	// clear could land after the clear had purged its shard, and the
	// entry (a record the collection deleted) would outlive the clear.
	addMu sync.RWMutex
}

// cacheShards is how many independently locked LRUs a lookup cache is
// split into. An LRU's Get moves the entry to the front, under the cache's
// one mutex: with every narinfo hit taking it (twice, with the read
// tracker), cores queued on it (issue 16: the blob server alone went from
// 0.84× nginx on 2 cores to 0.44× on 8). golang-lru has no sharded cache.
const cacheShards = 32

// shardedLRU is an LRU cache of n entries (rounded up to a multiple of
// cacheShards) split by key hash; recency is per shard.
type shardedLRU[V any] struct {
	seed   maphash.Seed
	shards [cacheShards]*lru.Cache[cacheKey, V]
}

func newShardedLRU[V any](n int) *shardedLRU[V] {
	c := &shardedLRU[V]{seed: maphash.MakeSeed()}
	per := max(1, (n+cacheShards-1)/cacheShards)
	for i := range c.shards {
		c.shards[i], _ = lru.New[cacheKey, V](per) // fails only for a size ≤ 0
	}
	return c
}

func (c *shardedLRU[V]) shard(k cacheKey) *lru.Cache[cacheKey, V] {
	return c.shards[maphash.String(c.seed, k.key)%cacheShards]
}

func (c *shardedLRU[V]) Get(k cacheKey) (V, bool) { return c.shard(k).Get(k) }
func (c *shardedLRU[V]) Remove(k cacheKey)        { c.shard(k).Remove(k) }

// Add adds v under a copy of k (owned): entries outlive the request.
func (c *shardedLRU[V]) Add(k cacheKey, v V) { c.addOwned(k.owned(), v) }

// addOwned adds v under k, whose strings are already its own (owned).
func (c *shardedLRU[V]) addOwned(k cacheKey, v V) { c.shard(k).Add(k, v) }

// owned returns k with strings of its own. route.Parse slices the flake
// and hash from the request path without allocating, and the path shares
// the memory of the whole request line, query included (up to the
// server's MaxHeaderBytes, 1 MiB): a cached key sliced from it would keep
// all of it alive, and a reader asking for absent paths with long queries
// could pin CacheEntries of those (64 GiB by default) through the miss
// cache. One allocation, on adds only (lookups never copy).
func (k cacheKey) owned() cacheKey {
	// Not a + b + c: with two of them empty (the union view's zero flake)
	// that is the third string itself, uncopied.
	var b strings.Builder
	b.Grow(len(k.flake.Org) + len(k.flake.Name) + len(k.key))
	b.WriteString(k.flake.Org)
	b.WriteString(k.flake.Name)
	b.WriteString(k.key)
	buf, org, name := b.String(), len(k.flake.Org), len(k.flake.Org)+len(k.flake.Name)
	return cacheKey{nixname.Flake{Org: buf[:org], Name: buf[org:name]}, buf[name:]}
}

func (c *shardedLRU[V]) Purge() {
	for _, s := range c.shards {
		s.Purge()
	}
}

func (c *shardedLRU[V]) Len() int {
	n := 0
	for _, s := range c.shards {
		n += s.Len()
	}
	return n
}

type cacheKey struct {
	flake nixname.Flake // zero for the union view of a NAR on an ungated server
	key   string        // store hash or NAR file name
}

// newHitCache returns a cache of n entries per kind; n <= 0 disables it
// (blobserver -lookup-cache 0).
func newHitCache(n int) *hitCache {
	c := &hitCache{}
	if n <= 0 {
		return c
	}
	c.narinfo = newShardedLRU[index.Path](n)
	c.nar = newShardedLRU[struct{}](n)
	return c
}

func (c *hitCache) getNarInfo(f nixname.Flake, hash string) (index.Path, bool) {
	if c.narinfo == nil {
		return index.Path{}, false
	}
	return c.narinfo.Get(cacheKey{f, hash})
}

// now returns the epoch to pass to an add after a lookup.
func (c *hitCache) now() int64 { return c.epoch.Load() }

// clear drops every entry; lookups that started before are not added.
func (c *hitCache) clear() {
	c.addMu.Lock()
	defer c.addMu.Unlock()
	c.epoch.Add(1)
	if c.narinfo != nil {
		c.narinfo.Purge()
		c.nar.Purge()
	}
}

func (c *hitCache) addNarInfo(p index.Path, epoch int64) {
	addAt(c, c.narinfo, cacheKey{p.Flake, p.Hash}, p, epoch)
}

// addAt adds v under k to lru (nil: caching off) unless a clear came after
// the lookup that found it, which started at epoch (see addMu).
func addAt[V any](c *hitCache, lru *shardedLRU[V], k cacheKey, v V, epoch int64) {
	if lru == nil {
		return
	}
	c.addMu.RLock()
	defer c.addMu.RUnlock()
	if c.epoch.Load() == epoch {
		lru.Add(k, v)
	}
}

func (c *hitCache) hasNar(f nixname.Flake, file string) bool {
	if c.nar == nil {
		return false
	}
	_, ok := c.nar.Get(cacheKey{f, file})
	return ok
}

func (c *hitCache) addNar(f nixname.Flake, file string, epoch int64) {
	addAt(c, c.nar, cacheKey{f, file}, struct{}{}, epoch)
}

// missCache remembers narinfo lookups that found nothing, per flake (the
// zero flake: the union view of an ungated server, any flake), for ttl, so
// that repeated misses — the common answer to a substituter, which asks
// every cache for every path — are answered without a database query.
//
// Why it is safe (DESIGN.md, "Lookup caches"):
//   - isolation: an entry says only that this flake's own record was absent
//     when looked up; what other flakes hold never enters it, so a miss in
//     flake A for a path only flake B holds is the same miss, cached or not;
//   - freshness: a narinfo recorded through this server forgets the
//     flake's entry (and the union one) before the upload is answered, and
//     a lookup that raced with such an upload does not add its stale "absent"
//     (puts, checked under mu); a record made through another server sharing
//     the index is seen after at most ttl;
//   - garbage collection only removes records, so an entry can never turn
//     into a hit; the cache is cleared with the hit cache anyway;
//   - memory: at most n entries (rounded up to a multiple of cacheShards;
//     about 250 bytes each with the key strings), whatever the size of the index.
type missCache struct {
	ttl  time.Duration
	now  func() time.Time
	miss *shardedLRU[int64] // expiry, unix ns
	// puts counts narinfo records added through this server; an add whose
	// lookup started before one is dropped. mu orders add against forget.
	mu   sync.Mutex
	puts atomic.Uint64
}

// newMissCache returns a cache of n entries kept ttl; n <= 0 or ttl <= 0
// disables it.
func newMissCache(n int, ttl time.Duration) *missCache {
	c := &missCache{ttl: ttl, now: time.Now}
	if n > 0 && ttl > 0 {
		c.miss = newShardedLRU[int64](n)
	}
	return c
}

// absent reports whether flake's record of hash was found absent less
// than ttl ago (and not recorded through this server since).
func (c *missCache) absent(f nixname.Flake, hash string) bool {
	if c.miss == nil {
		return false
	}
	exp, ok := c.miss.Get(cacheKey{f, hash})
	return ok && c.now().UnixNano() < exp
}

// seq returns the value to pass to add, read before the lookup.
func (c *missCache) seq() uint64 { return c.puts.Load() }

// add records that flake's record of hash was absent in a lookup that
// started at seq.
func (c *missCache) add(f nixname.Flake, hash string, seq uint64) {
	if c.miss == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.puts.Load() == seq {
		c.miss.Add(cacheKey{f, hash}, c.now().Add(c.ttl).UnixNano())
	}
}

// forget is called when flake's record of hash was (or may have been)
// added through this server: its entry and the union view's go, and
// lookups in flight add nothing.
func (c *missCache) forget(f nixname.Flake, hash string) {
	if c.miss == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.puts.Add(1)
	c.miss.Remove(cacheKey{f, hash})
	c.miss.Remove(cacheKey{nixname.Flake{}, hash})
}

// clear drops every entry.
func (c *missCache) clear() {
	if c.miss == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.puts.Add(1)
	c.miss.Purge()
}
