package cacheserver

import (
	"strconv"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/flakegate/flakegate/internal/index"
	"github.com/flakegate/flakegate/internal/nixname"
)

// A lookup that started before a clear (a garbage collection removed
// records) never adds its answer after the clear returned, also when it
// adds while the clear runs: otherwise the hit cache keeps serving a
// narinfo whose record, and soon NAR, the collection deleted. Each adder
// tags its entry with the epoch its lookup started at; right after a clear
// no entry may carry an older tag.
func TestHitCacheAddRacingClearIsDropped(t *testing.T) {
	c := newHitCache(1 << 10)
	f := nixname.Flake{Org: "omnicorp", Name: "app"}
	const keys = 64
	var stop atomic.Bool
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			for i := 0; !stop.Load(); i++ {
				e := c.now()
				c.addNarInfo(index.Path{Flake: f, Hash: strconv.Itoa(i % keys), NarFile: strconv.FormatInt(e, 10)}, e)
			}
		})
	}
	defer func() { stop.Store(true); wg.Wait() }()
	for range 5000 {
		c.clear()
		now := c.now()
		for k := range keys {
			p, ok := c.getNarInfo(f, strconv.Itoa(k))
			if !ok {
				continue
			}
			if e, _ := strconv.ParseInt(p.NarFile, 10, 64); e < now {
				t.Fatalf("after the clear to epoch %d the cache holds an entry of a lookup from epoch %d", now, e)
			}
		}
	}
}
