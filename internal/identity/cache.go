package identity

import (
	"crypto/sha256"
	"sync"
	"unsafe"
)

// tokenKey is the cache key: sha256 of the raw token. Raw tokens are never
// stored.
type tokenKey [sha256.Size]byte

func hashToken(raw string) tokenKey {
	// sha256.Sum256 only reads its argument; viewing the string's bytes in
	// place saves copying a ~1 KiB token on every request (the hot path).
	return sha256.Sum256(unsafe.Slice(unsafe.StringData(raw), len(raw)))
}

// cacheEntry is a verified token. It is valid until expires (unix nanos)
// and only while its issuer still has the key set it was verified with.
type cacheEntry struct {
	subject *Subject
	expires int64
	iss     *issuer
	keys    *keySet
}

func (e *cacheEntry) live(nowNano int64) bool {
	return nowNano < e.expires && e.iss.keys.Load() == e.keys
}

// tokenCache is a bounded map of verified tokens with random eviction.
// Lookups take only a read lock.
type tokenCache struct {
	max int
	mu  sync.RWMutex
	m   map[tokenKey]*cacheEntry
}

func newTokenCache(max int) *tokenCache {
	return &tokenCache{max: max, m: make(map[tokenKey]*cacheEntry)}
}

func (c *tokenCache) get(k tokenKey, nowNano int64) (*Subject, bool) {
	if c.max <= 0 {
		return nil, false
	}
	c.mu.RLock()
	e := c.m[k]
	c.mu.RUnlock()
	if e == nil || !e.live(nowNano) {
		return nil, false
	}
	return e.subject, true
}

// evictScan is how many entries put looks at for a stale one to evict
// before it evicts a live one.
const evictScan = 8

func (c *tokenCache) put(k tokenKey, e *cacheEntry, nowNano int64) {
	if c.max <= 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.m[k]; !ok && len(c.m) >= c.max {
		// Map iteration starts at a random entry: prefer a stale entry
		// among the first few, else drop the first one seen.
		var victim tokenKey
		n := 0
		for key, old := range c.m {
			if n == 0 {
				victim = key
			}
			if !old.live(nowNano) {
				victim = key
				break
			}
			if n++; n >= evictScan {
				break
			}
		}
		delete(c.m, victim)
	}
	c.m[k] = e
}

// dropIssuer removes the entries of one issuer (its keys changed).
func (c *tokenCache) dropIssuer(is *issuer) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for k, e := range c.m {
		if e.iss == is {
			delete(c.m, k)
		}
	}
}

func (c *tokenCache) len() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.m)
}
