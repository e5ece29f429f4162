package authz

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/flakegate/flakegate/internal/identity"
	"github.com/flakegate/flakegate/internal/nixname"
	"github.com/flakegate/flakegate/internal/route"
)

// ClosureLookup answers what a scoped token may read: the closure of its
// roots within its flake. Implemented by ClosureClient.
type ClosureLookup interface {
	Closure(ctx context.Context, scope *identity.Scope) (*Closure, error)
}

// Closure is the closure of a scope's roots within its flake, as sets.
type Closure struct {
	Paths    map[string]struct{} // store hashes
	Nars     map[string]struct{} // NAR file names
	Derivers map[string]struct{} // store hashes of the paths' derivations
}

// Allows reports whether the closure covers the object r is about, by the
// object's store hash (route.Request.Hash): a NAR by its file name, a
// build log by its derivation's store hash (a deriver of a closure path),
// and every other kind whose Hash is a store path hash (narinfo, and the
// kinds keyed by the store path like listings) by membership in Paths.
// Anything else is not covered (fail closed).
func (c *Closure) Allows(r route.Request) bool {
	if c == nil {
		return false
	}
	switch r.Kind {
	case route.KindNar:
		_, ok := c.Nars[r.File]
		return ok
	case route.KindLog:
		if len(r.Hash) < nixname.StoreHashLen {
			return false
		}
		_, ok := c.Derivers[r.Hash[:nixname.StoreHashLen]]
		return ok
	}
	if !nixname.IsStoreHash(r.Hash) {
		return false
	}
	_, ok := c.Paths[r.Hash]
	return ok
}

// ClosureOptions configures a ClosureClient. Zero fields take the defaults.
type ClosureOptions struct {
	HTTPClient *http.Client // default: a client with no redirects
	// Timeout per lookup, default 10s: a closure of thousands of paths
	// takes one index read per path, once per TTL.
	Timeout time.Duration
	// TTL is the cache lifetime of a closure, default 60s. A flake's record
	// of a path never changes once pushed, so a closure only grows when a
	// root or reference that was missing is pushed: it shows within TTL.
	TTL time.Duration
	// Stale is how long past TTL a cached closure is still used while one
	// lookup refreshes it in the background, default 1h (a closure only
	// grows: an older one allows less, never more), so that only the first
	// request of a scope waits for its closure, not one per TTL. Negative:
	// never.
	Stale      time.Duration
	MaxEntries int // cache bound (scopes), default 1000
	Metrics    *Metrics
}

// Defaults of ClosureOptions.
const (
	DefaultClosureTTL     = 60 * time.Second
	DefaultClosureTimeout = 10 * time.Second
	DefaultClosureStale   = time.Hour
)

// maxClosureAnswer bounds a closure answer (about 100 bytes a path).
const maxClosureAnswer = 64 << 20

// ClosureClient asks the blob server's internal listener for the closure
// of a scope (route.ClosurePath, route.ClosureResponse) and caches it by
// (flake, roots) for TTL (then refreshed in the background for Stale), so that a scoped token's requests cost a map
// lookup, never a walk of the graph; concurrent lookups of one scope share
// one request. Any failure is an error: the caller fails closed (503).
type ClosureClient struct {
	base   string
	client *http.Client
	opts   ClosureOptions
	cache  *lookupCache[*Closure]
}

// NewClosureClient returns a client for the blob server's internal
// listener at baseURL (e.g. "http://127.0.0.1:8081").
func NewClosureClient(baseURL string, opts ClosureOptions) *ClosureClient {
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultClosureTimeout
	}
	if opts.TTL <= 0 {
		opts.TTL = DefaultClosureTTL
	}
	if opts.MaxEntries <= 0 {
		opts.MaxEntries = 1000
	}
	switch {
	case opts.Stale == 0:
		opts.Stale = DefaultClosureStale
	case opts.Stale < 0:
		opts.Stale = 0
	}
	client := opts.HTTPClient
	if client == nil {
		client = &http.Client{
			Transport:     &http.Transport{MaxIdleConnsPerHost: 8, IdleConnTimeout: 90 * time.Second},
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
	}
	c := &ClosureClient{
		base: strings.TrimRight(baseURL, "/"), client: client, opts: opts,
		cache: newLookupCache[*Closure](opts.TTL, opts.MaxEntries, opts.Metrics.closureLookup),
	}
	c.cache.stale = opts.Stale
	return c
}

// closureKey is the endpoint path and query of a scope, also its cache key.
func closureKey(scope *identity.Scope) string {
	q := url.Values{"root": scope.RootHashes()}
	return route.ClosurePath + scope.Flake.String() + "?" + q.Encode()
}

// Closure returns the closure of scope's roots within its flake.
func (c *ClosureClient) Closure(ctx context.Context, scope *identity.Scope) (*Closure, error) {
	if scope == nil || scope.Flake.IsZero() || len(scope.Roots) == 0 {
		return nil, errors.New("closure lookup: empty scope")
	}
	key := closureKey(scope)
	return c.cache.get(ctx, key, func(ctx context.Context) (*Closure, error) {
		return c.fetch(ctx, key)
	})
}

func (c *ClosureClient) fetch(ctx context.Context, key string) (*Closure, error) {
	var cr route.ClosureResponse
	if err := getJSON(ctx, c.client, c.base, key, c.opts.Timeout, maxClosureAnswer, &cr); err != nil {
		return nil, fmt.Errorf("closure lookup %s: %w", key, err)
	}
	if cr.Paths == nil || cr.Nars == nil || cr.Derivers == nil {
		return nil, errors.New("closure lookup " + key + `: answer lacks "paths", "nars" or "derivers"`)
	}
	return &Closure{Paths: set(cr.Paths), Nars: set(cr.Nars), Derivers: set(cr.Derivers)}, nil
}

func set(list []string) map[string]struct{} {
	m := make(map[string]struct{}, len(list))
	for _, s := range list {
		m[s] = struct{}{}
	}
	return m
}
