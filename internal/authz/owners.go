package authz

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

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
	base   string
	client *http.Client
	opts   OwnersOptions
	cache  *lookupCache[[]nixname.Flake]
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
		base:   strings.TrimRight(baseURL, "/"),
		client: client,
		opts:   opts,
		cache:  newLookupCache[[]nixname.Flake](opts.TTL, opts.MaxEntries, opts.Metrics.ownersLookup),
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
	return c.cache.get(ctx, key, func(ctx context.Context) ([]nixname.Flake, error) {
		return c.fetch(ctx, key)
	})
}

func (c *OwnersClient) fetch(ctx context.Context, key string) ([]nixname.Flake, error) {
	var or route.OwnersResponse
	if err := getJSON(ctx, c.client, c.base, key, c.opts.Timeout, 1<<20, &or); err != nil {
		return nil, fmt.Errorf("owners lookup %s: %w", key, err)
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

// getJSON asks the blob server's internal listener at base for pathAndQuery
// and decodes its 200 answer (at most limit bytes) into v, within timeout.
// The shared lookups that call it are not cut short by the first caller's
// cancellation (lookupCache detaches ctx); the timeout bounds them.
func getJSON(ctx context.Context, client *http.Client, base, pathAndQuery string, timeout time.Duration, limit int64, v any) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+pathAndQuery, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return fmt.Errorf("read answer: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s answered %s", base, resp.Status)
	}
	if int64(len(body)) > limit {
		return fmt.Errorf("answer larger than %d bytes", limit)
	}
	if err := json.Unmarshal(body, v); err != nil {
		return fmt.Errorf("decode answer: %w", err)
	}
	return nil
}
