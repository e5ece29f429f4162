package cacheserver

import (
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
// clear these caches (in every process sharing the index).
type hitCache struct {
	narinfo *lru.Cache[cacheKey, index.Path]
	nar     *lru.Cache[cacheKey, struct{}]
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

func (c *hitCache) addNarInfo(p index.Path) {
	if c.narinfo != nil {
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

func (c *hitCache) addNar(f nixname.Flake, file string) {
	if c.nar != nil {
		c.nar.Add(cacheKey{f, file}, struct{}{})
	}
}
