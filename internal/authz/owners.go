package authz

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/flakegate/flakegate/internal/nixname"
	"github.com/flakegate/flakegate/internal/route"
)

// OwnersOptions configures an OwnersClient. Zero fields take the defaults.
type OwnersOptions struct {
	HTTPClient *http.Client  // default: a client with no redirects
	Timeout    time.Duration // per lookup, default 2s
	// TTL is the cache lifetime of an answer, default 2s. Empty and
	// non-empty answers are cached alike: otherwise the time of a denied
	// union read would tell an object that exists from an absent one.
	TTL        time.Duration
	MaxEntries int // cache bound, default 10000
	Metrics    *Metrics
}

// OwnersClient asks the blob server's internal listener which flakes own a
// union-view object (the endpoints and their answer are route's:
// route.OwnersPath, route.OwnersResponse):
//
//	GET {base}/owners/narinfo/{storehash}  → 200 {"flakes":["org/name",…]}
//	GET {base}/owners/nar/{file}           → 200 {"flakes":[…]}
//	GET {base}/owners/{kind}/{key}         → likewise for listings, logs,
//	                                         debug info, realisations
//
// Answers are cached briefly, empty or not (a push into another flake
// becomes visible in the union view within TTL); concurrent lookups of one
// object share one request. Any failure is an error: the caller fails
// closed.
type OwnersClient struct {
	base    string
	client  *http.Client
	opts    OwnersOptions
	group   singleflight.Group
	mu      sync.Mutex
	entries map[string]ownersEntry
	now     func() time.Time
}

type ownersEntry struct {
	flakes  []nixname.Flake
	expires time.Time
}

// NewOwnersClient returns a client for the owners endpoint at baseURL
// (e.g. "http://127.0.0.1:8081").
func NewOwnersClient(baseURL string, opts OwnersOptions) *OwnersClient {
	if opts.Timeout <= 0 {
		opts.Timeout = 2 * time.Second
	}
	if opts.TTL <= 0 {
		opts.TTL = 2 * time.Second
	}
	if opts.MaxEntries <= 0 {
		opts.MaxEntries = 10000
	}
	client := opts.HTTPClient
	if client == nil {
		client = &http.Client{
			Transport: &http.Transport{
				MaxIdleConnsPerHost: 64,
				IdleConnTimeout:     90 * time.Second,
			},
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
	}
	return &OwnersClient{
		base:    strings.TrimRight(baseURL, "/"),
		client:  client,
		opts:    opts,
		entries: make(map[string]ownersEntry),
		now:     time.Now,
	}
}

// ownersKey is the path of r's owners endpoint (route.OwnersPath), also
// its cache key.
func ownersKey(r route.Request) (string, error) {
	if p, ok := route.OwnersPath(r); ok {
		return p, nil
	}
	return "", fmt.Errorf("owners lookup: no owners for a %s", r.Kind)
}

// Owners returns the flakes owning the union-view object r is about.
func (c *OwnersClient) Owners(ctx context.Context, r route.Request) ([]nixname.Flake, error) {
	key, err := ownersKey(r)
	if err != nil {
		return nil, err
	}
	if flakes, ok := c.cached(key); ok {
		c.opts.Metrics.ownersLookup("hit")
		return flakes, nil
	}
	v, err, _ := c.group.Do(key, func() (any, error) {
		// A lookup that just finished may have filled the cache between
		// our check and this flight.
		if flakes, ok := c.cached(key); ok {
			return flakes, nil
		}
		flakes, err := c.fetch(ctx, key)
		if err != nil {
			return nil, err
		}
		c.store(key, flakes)
		return flakes, nil
	})
	if err != nil {
		c.opts.Metrics.ownersLookup("error")
		return nil, err
	}
	c.opts.Metrics.ownersLookup("miss")
	return v.([]nixname.Flake), nil
}

func (c *OwnersClient) cached(key string) ([]nixname.Flake, bool) {
	now := c.now()
	c.mu.Lock()
	e, ok := c.entries[key]
	c.mu.Unlock()
	if !ok || !now.Before(e.expires) {
		return nil, false
	}
	return e.flakes, true
}

func (c *OwnersClient) store(key string, flakes []nixname.Flake) {
	ttl := c.opts.TTL
	now := c.now()
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.entries) >= c.opts.MaxEntries {
		for k, e := range c.entries {
			if !now.Before(e.expires) {
				delete(c.entries, k)
			}
		}
		// Still full of live entries: drop arbitrary ones (map order)
		// until there is room; they are refetched when needed.
		for k := range c.entries {
			if len(c.entries) < c.opts.MaxEntries {
				break
			}
			delete(c.entries, k)
		}
	}
	c.entries[key] = ownersEntry{flakes: flakes, expires: now.Add(ttl)}
}

func (c *OwnersClient) fetch(ctx context.Context, key string) ([]nixname.Flake, error) {
	// The shared lookup must not be cut short by the first caller's
	// cancellation; it has its own timeout.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.opts.Timeout)
	defer cancel()
	url := c.base + key
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, fmt.Errorf("owners lookup %s: %w", key, err)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := c.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("owners lookup %s: %w", key, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20+1))
	if err != nil {
		return nil, fmt.Errorf("owners lookup %s: read answer: %w", key, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("owners lookup %s: %s answered %s", key, c.base, resp.Status)
	}
	if len(body) > 1<<20 {
		return nil, fmt.Errorf("owners lookup %s: answer larger than 1 MiB", key)
	}
	var or route.OwnersResponse
	if err := json.Unmarshal(body, &or); err != nil {
		return nil, fmt.Errorf("owners lookup %s: decode answer: %w", key, err)
	}
	if or.Flakes == nil { // no "flakes", or null; [] decodes to an empty list
		return nil, errors.New("owners lookup " + key + `: answer has no "flakes" list`)
	}
	flakes := make([]nixname.Flake, 0, len(or.Flakes))
	for _, s := range or.Flakes {
		f, err := nixname.ParseFlake(s)
		if err != nil {
			return nil, fmt.Errorf("owners lookup %s: %w", key, err)
		}
		flakes = append(flakes, f)
	}
	return flakes, nil
}
