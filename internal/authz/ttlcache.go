package authz

import (
	"context"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"
)

// lookupCache remembers the answers of a lookup by key for a fixed time,
// and lets concurrent lookups of one key share one fetch: the owners
// lookup (OwnersClient) and the closure lookup (ClosureClient) use it.
// Failures are not remembered (the caller fails closed and asks again).
//
// With stale > 0, an answer up to stale past its expiry is still returned
// while one fetch refreshes it in the background (stale-while-revalidate):
// only for lookups whose older answers are still correct, if smaller (a
// closure only grows while a flake's records are immutable).
type lookupCache[V any] struct {
	ttl   time.Duration
	stale time.Duration
	max   int
	now   func() time.Time
	// observe, when set, is told each lookup's result: "hit" (cache),
	// "miss" (fetched), "stale" (served while refreshed) or "error".
	observe func(result string)
	group   singleflight.Group

	mu      sync.Mutex
	entries map[string]lookupEntry[V]
}

type lookupEntry[V any] struct {
	v      V
	stored time.Time
}

func newLookupCache[V any](ttl time.Duration, max int, observe func(string)) *lookupCache[V] {
	return &lookupCache[V]{ttl: ttl, max: max, now: time.Now, observe: observe, entries: make(map[string]lookupEntry[V])}
}

// get returns key's answer, from the cache or from fetch. fetch runs with
// ctx detached from the caller's cancellation (it is shared); it must
// bound itself.
func (c *lookupCache[V]) get(ctx context.Context, key string, fetch func(context.Context) (V, error)) (V, error) {
	v, result, err := c.lookup(ctx, key, fetch)
	if c.observe != nil {
		c.observe(result)
	}
	return v, err
}

func (c *lookupCache[V]) lookup(ctx context.Context, key string, fetch func(context.Context) (V, error)) (v V, result string, err error) {
	v, age, ok := c.cached(key)
	switch {
	case ok && age < c.ttl:
		return v, "hit", nil
	case ok && age < c.ttl+c.stale:
		// Serve the older answer; one flight refreshes it in the
		// background (a failed refresh is retried by the next caller).
		c.group.DoChan(key, func() (any, error) { return c.refresh(ctx, key, fetch) })
		return v, "stale", nil
	}
	res, err, _ := c.group.Do(key, func() (any, error) {
		// A lookup that just finished may have filled the cache between
		// our check and this flight.
		if v, age, ok := c.cached(key); ok && age < c.ttl {
			return v, nil
		}
		return c.refresh(ctx, key, fetch)
	})
	if err != nil {
		return v, "error", err
	}
	return res.(V), "miss", nil
}

// refresh fetches key's answer and stores it.
func (c *lookupCache[V]) refresh(ctx context.Context, key string, fetch func(context.Context) (V, error)) (any, error) {
	v, err := fetch(context.WithoutCancel(ctx))
	if err != nil {
		return nil, err
	}
	c.store(key, v)
	return v, nil
}

// cached returns key's answer and its age.
func (c *lookupCache[V]) cached(key string) (v V, age time.Duration, ok bool) {
	now := c.now()
	c.mu.Lock()
	e, ok := c.entries[key]
	c.mu.Unlock()
	if !ok {
		return v, 0, false
	}
	return e.v, now.Sub(e.stored), true
}

func (c *lookupCache[V]) store(key string, v V) {
	now := c.now()
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.entries) >= c.max {
		for k, e := range c.entries {
			if now.Sub(e.stored) >= c.ttl+c.stale {
				delete(c.entries, k)
			}
		}
		// Still full of live entries: drop arbitrary ones (map order)
		// until there is room; they are refetched when needed.
		for k := range c.entries {
			if len(c.entries) < c.max {
				break
			}
			delete(c.entries, k)
		}
	}
	c.entries[key] = lookupEntry[V]{v: v, stored: now}
}

func (c *lookupCache[V]) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.entries)
}
