package cacheserver

import (
	"sync/atomic"

	lru "github.com/hashicorp/golang-lru/v2"

	"github.com/flakegate/flakegate/internal/index"
	"github.com/flakegate/flakegate/internal/nixname"
)

// hitCache remembers positive index lookups so hot narinfos and NARs are
// served without a database query. Only hits are cached, never "not
// found", and that is safe because what the index answers for a hit never
// changes: a flake's narinfo record and NAR records are immutable,
// ownership only grows, and re-signing happens before a record is cached
// (keys change only with a restart). Entries are per flake (the union view
// composes them). A garbage collector that deletes paths or ownership must
// clear these caches (in every process sharing the index): the server
// watches the index's collection generation and clears them when it
// changes (Server.Maintain). A lookup that started before a clear does
// not add its answer after it (epoch).
type hitCache struct {
	narinfo *lru.Cache[cacheKey, index.Path]
	nar     *lru.Cache[cacheKey, struct{}]
	epoch   atomic.Int64
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
	// lru.New fails only for a size ≤ 0.
	c.narinfo, _ = lru.New[cacheKey, index.Path](n)
	c.nar, _ = lru.New[cacheKey, struct{}](n)
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
	c.epoch.Add(1)
	if c.narinfo != nil {
		c.narinfo.Purge()
		c.nar.Purge()
	}
}

func (c *hitCache) addNarInfo(p index.Path, epoch int64) {
	if c.narinfo != nil && c.epoch.Load() == epoch {
		c.narinfo.Add(cacheKey{p.Flake, p.Hash}, p)
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
	if c.nar != nil && c.epoch.Load() == epoch {
		c.nar.Add(cacheKey{f, file}, struct{}{})
	}
}
