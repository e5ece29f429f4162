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
type lookupCache[V any] struct {
	ttl time.Duration
	max int
	now func() time.Time
	// observe, when set, is told each lookup's result: "hit" (cache),
	// "miss" (fetched) or "error".
	observe func(result string)
	group   singleflight.Group

	mu      sync.Mutex
	entries map[string]lookupEntry[V]
}

type lookupEntry[V any] struct {
	v       V
	expires time.Time
}

func newLookupCache[V any](ttl time.Duration, max int, observe func(string)) *lookupCache[V] {
	return &lookupCache[V]{ttl: ttl, max: max, now: time.Now, observe: observe, entries: make(map[string]lookupEntry[V])}
}

// get returns key's answer, from the cache or from fetch. fetch runs with
// ctx detached from the caller's cancellation (it is shared); it must
// bound itself.
func (c *lookupCache[V]) get(ctx context.Context, key string, fetch func(context.Context) (V, error)) (V, error) {
	v, hit, err := c.lookup(ctx, key, fetch)
	if c.observe != nil {
		switch {
		case err != nil:
			c.observe("error")
		case hit:
			c.observe("hit")
		default:
			c.observe("miss")
		}
	}
	return v, err
}

func (c *lookupCache[V]) lookup(ctx context.Context, key string, fetch func(context.Context) (V, error)) (v V, hit bool, err error) {
	if v, ok := c.cached(key); ok {
		return v, true, nil
	}
	res, err, _ := c.group.Do(key, func() (any, error) {
		// A lookup that just finished may have filled the cache between
		// our check and this flight.
		if v, ok := c.cached(key); ok {
			return v, nil
		}
		v, err := fetch(context.WithoutCancel(ctx))
		if err != nil {
			return nil, err
		}
		c.store(key, v)
		return v, nil
	})
	if err != nil {
		return v, false, err
	}
	return res.(V), false, nil
}

func (c *lookupCache[V]) cached(key string) (V, bool) {
	now := c.now()
	c.mu.Lock()
	e, ok := c.entries[key]
	c.mu.Unlock()
	if !ok || !now.Before(e.expires) {
		var zero V
		return zero, false
	}
	return e.v, true
}

func (c *lookupCache[V]) store(key string, v V) {
	now := c.now()
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.entries) >= c.max {
		for k, e := range c.entries {
			if !now.Before(e.expires) {
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
	c.entries[key] = lookupEntry[V]{v: v, expires: now.Add(c.ttl)}
}

func (c *lookupCache[V]) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.entries)
}
