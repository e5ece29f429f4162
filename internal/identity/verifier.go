package identity

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/prometheus/client_golang/prometheus"
)

// Defaults of Options.
const (
	DefaultSkew              = 60 * time.Second
	DefaultCacheSize         = 10000
	DefaultCacheTTL          = 10 * time.Minute
	DefaultRefreshInterval   = 15 * time.Minute
	DefaultFileCheckInterval = 10 * time.Second
	DefaultEarlyRefreshGap   = 30 * time.Second
	DefaultFetchTimeout      = 10 * time.Second
	// maxRetryBackoff caps the retry delay after a failed JWKS refresh.
	maxRetryBackoff = 5 * time.Minute
)

// Options tune a MultiVerifier. Zero values take the defaults.
type Options struct {
	Logger     *slog.Logger          // default slog.Default()
	HTTPClient *http.Client          // for JWKS fetches; default a client with a 30s timeout
	Registerer prometheus.Registerer // nil: metrics are kept but not registered
	Now        func() time.Time      // default time.Now (tests)

	// Skew is the clock tolerance for exp, nbf and iat (default 60s).
	Skew time.Duration
	// CacheSize bounds the verified-token cache (default 10000; negative
	// disables the cache).
	CacheSize int
	// CacheTTL caps how long a verified token stays cached (default 10m);
	// entries never outlive the token's exp.
	CacheTTL time.Duration
	// RefreshInterval is how often JWKS URLs are fetched again (default 15m).
	// A token with an unknown kid triggers an early fetch, at most once per
	// EarlyRefreshGap per issuer.
	RefreshInterval time.Duration
	// FileCheckInterval is how often jwks_file mtimes are checked (default 10s).
	FileCheckInterval time.Duration
	// EarlyRefreshGap is the minimum time between two unknown-kid refreshes
	// of one issuer (default 30s).
	EarlyRefreshGap time.Duration
	// FetchTimeout bounds one JWKS fetch (default 10s).
	FetchTimeout time.Duration
}

func (o *Options) fill() {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.HTTPClient == nil {
		o.HTTPClient = &http.Client{Timeout: 30 * time.Second}
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Skew == 0 {
		o.Skew = DefaultSkew
	}
	if o.CacheSize == 0 {
		o.CacheSize = DefaultCacheSize
	}
	if o.CacheTTL <= 0 {
		o.CacheTTL = DefaultCacheTTL
	}
	if o.RefreshInterval <= 0 {
		o.RefreshInterval = DefaultRefreshInterval
	}
	if o.FileCheckInterval <= 0 {
		o.FileCheckInterval = DefaultFileCheckInterval
	}
	if o.EarlyRefreshGap <= 0 {
		o.EarlyRefreshGap = DefaultEarlyRefreshGap
	}
	if o.FetchTimeout <= 0 {
		o.FetchTimeout = DefaultFetchTimeout
	}
}

// issuer is one configured issuer and its current keys.
type issuer struct {
	cfg    IssuerConfig
	mapper mapper
	keys   atomic.Pointer[keySet] // nil until first loaded: tokens get 503
	src    keySource              // nil for static keys
	// health is the outcome of the last load of src (nil: none yet, the
	// issuer is degraded). See IssuerStatus.
	health atomic.Pointer[keysHealth]

	refreshMu sync.Mutex // serializes loads of src
	lastEarly time.Time  // guarded by refreshMu
}

// keysHealth is the outcome of an issuer's last key load.
type keysHealth struct {
	ok    bool
	err   string    // the failure (no secrets: a URL or path and a status)
	since time.Time // when ok last changed
}

// MultiVerifier verifies tokens of several issuers. It implements Verifier
// and is safe for concurrent use.
type MultiVerifier struct {
	opts    Options
	log     *slog.Logger
	metrics *metrics
	cache   *tokenCache

	mu      sync.Mutex                         // serializes AddIssuer
	issuers atomic.Pointer[map[string]*issuer] // by iss; copy on write

	ctx       context.Context
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	closeOnce sync.Once
}

var _ Verifier = (*MultiVerifier)(nil)

// NewVerifier validates cfg, loads every issuer's keys and starts their
// refresh. A jwks_file that cannot be loaded is an error. A jwks_url that
// cannot be fetched is not: it is logged and counted, the issuer is
// degraded (IssuerStatus, flakegate_identity_issuer_keys_ok 0), retried in
// the background, and its tokens fail with ErrKeysUnavailable until keys
// arrive (fail closed, 503).
// ctx bounds the initial fetches and the background refresh; Close stops
// the latter too.
func NewVerifier(ctx context.Context, cfg *Config, opts Options) (*MultiVerifier, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	opts.fill()
	v := &MultiVerifier{
		opts:    opts,
		log:     opts.Logger.With("component", "identity"),
		metrics: newMetrics(opts.Registerer),
		cache:   newTokenCache(opts.CacheSize),
	}
	v.issuers.Store(&map[string]*issuer{})
	v.ctx, v.cancel = context.WithCancel(ctx)

	var added []*issuer
	for _, ic := range cfg.Issuers {
		is, err := v.newIssuer(ic)
		if err != nil {
			v.cancel()
			return nil, err
		}
		added = append(added, is)
	}
	// Initial loads run in parallel: one slow IdP does not delay the others.
	errs := make([]error, len(added))
	var wg sync.WaitGroup
	for i, is := range added {
		wg.Go(func() { errs[i] = v.refresh(v.ctx, is, "start") })
	}
	wg.Wait()
	for i, is := range added {
		if _, isFile := is.src.(*fileSource); isFile && errs[i] != nil {
			v.cancel()
			return nil, fmt.Errorf("issuer %s: %w", is.cfg.Name, errs[i])
		}
	}
	for _, is := range added {
		v.install(is)
		v.startRefresh(is)
	}
	return v, nil
}

// AddIssuer registers one more issuer after start (the token exchange adds
// flakegate's own issuer this way). With keys non-nil the issuer uses that
// static key set (cfg.JWKSURL and cfg.JWKSFile must be empty; replace the
// keys later with SetIssuerKeys); with keys nil, cfg's jwks_url or
// jwks_file is loaded and refreshed as in NewVerifier.
func (v *MultiVerifier) AddIssuer(cfg IssuerConfig, keys jwk.Set) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	if ps := cfg.problems(keys != nil); len(ps) > 0 {
		return fmt.Errorf("add issuer %s: %s: %s", cfg.Name, ps[0].field, ps[0].msg)
	}
	for _, is := range *v.issuers.Load() {
		if is.cfg.Name == cfg.Name || is.cfg.Issuer == cfg.Issuer {
			return fmt.Errorf("add issuer %s: name or issuer %s already configured", cfg.Name, cfg.Issuer)
		}
	}
	is, err := v.newIssuer(cfg)
	if err != nil {
		return err
	}
	if keys != nil {
		if err := v.setKeys(is, keys, "static"); err != nil {
			return fmt.Errorf("add issuer %s: %w", cfg.Name, err)
		}
	} else if err := v.refresh(v.ctx, is, "start"); err != nil {
		if _, isFile := is.src.(*fileSource); isFile {
			return fmt.Errorf("add issuer %s: %w", cfg.Name, err)
		}
	}
	v.installLocked(is)
	v.startRefresh(is)
	return nil
}

// SetIssuerKeys replaces the keys of an issuer added with static keys (key
// rotation of flakegate's own issuer). Cached tokens of the issuer are
// dropped when the keys change.
func (v *MultiVerifier) SetIssuerKeys(name string, keys jwk.Set) error {
	for _, is := range *v.issuers.Load() {
		if is.cfg.Name == name {
			if is.src != nil {
				return fmt.Errorf("set keys of issuer %s: its keys come from %s", name, describeSource(is.cfg))
			}
			return v.setKeys(is, keys, "static")
		}
	}
	return fmt.Errorf("set keys of issuer %s: no such issuer", name)
}

// Refresh reloads every issuer's keys now (all errors joined); issuers whose
// load fails keep their old keys.
func (v *MultiVerifier) Refresh(ctx context.Context) error {
	var errs []error
	for _, is := range *v.issuers.Load() {
		if is.src == nil {
			continue
		}
		if err := v.refresh(ctx, is, "manual"); err != nil {
			errs = append(errs, fmt.Errorf("issuer %s: %w", is.cfg.Name, err))
		}
	}
	return errors.Join(errs...)
}

// Close stops the background refreshes. Verify keeps working with the keys
// loaded so far.
func (v *MultiVerifier) Close() {
	v.closeOnce.Do(func() {
		v.cancel()
		v.wg.Wait()
	})
}

func (v *MultiVerifier) newIssuer(ic IssuerConfig) (*issuer, error) {
	m, ok := mappers[ic.Claims]
	if !ok {
		return nil, fmt.Errorf("issuer %s: unknown claims mapper %q", ic.Name, ic.Claims)
	}
	ic.Audience = append([]string(nil), ic.Audience...)
	is := &issuer{cfg: ic, mapper: m}
	switch {
	case ic.JWKSURL != "":
		is.src = &urlSource{url: ic.JWKSURL, client: v.opts.HTTPClient, timeout: v.opts.FetchTimeout}
	case ic.JWKSFile != "":
		is.src = &fileSource{path: ic.JWKSFile}
	}
	return is, nil
}

func (v *MultiVerifier) install(is *issuer) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.installLocked(is)
}

func (v *MultiVerifier) installLocked(is *issuer) {
	old := *v.issuers.Load()
	next := make(map[string]*issuer, len(old)+1)
	for k, e := range old {
		next[k] = e
	}
	next[is.cfg.Issuer] = is
	v.issuers.Store(&next)
}

func (v *MultiVerifier) startRefresh(is *issuer) {
	if is.src == nil {
		return
	}
	interval := v.opts.RefreshInterval
	if _, isFile := is.src.(*fileSource); isFile {
		interval = v.opts.FileCheckInterval
	}
	v.wg.Go(func() { v.refreshLoop(is, interval) })
}

// refreshLoop reloads is every interval; after a failure it retries sooner,
// backing off from 1s up to the interval (at most 5 minutes).
func (v *MultiVerifier) refreshLoop(is *issuer, interval time.Duration) {
	backoff := time.Second
	wait := interval
	if is.keys.Load() == nil {
		wait = backoff
	}
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for {
		select {
		case <-v.ctx.Done():
			return
		case <-timer.C:
		}
		if err := v.refresh(v.ctx, is, "periodic"); err != nil && v.ctx.Err() == nil {
			wait = min(backoff, interval, maxRetryBackoff)
			backoff = min(2*backoff, maxRetryBackoff)
		} else {
			wait, backoff = interval, time.Second
		}
		timer.Reset(wait)
	}
}

// refresh loads is's source and installs the keys if they changed. A
// failure is logged and counted and leaves the old keys in place.
func (v *MultiVerifier) refresh(ctx context.Context, is *issuer, why string) error {
	is.refreshMu.Lock()
	defer is.refreshMu.Unlock()
	return v.refreshLocked(ctx, is, why)
}

func (v *MultiVerifier) refreshLocked(ctx context.Context, is *issuer, why string) error {
	data, err := is.src.load(ctx)
	if errors.Is(err, errUnchanged) {
		return nil // the health of the last load stands
	}
	if err == nil {
		var ks *keySet
		var notes []string
		ks, notes, err = parseKeySet(data)
		for _, n := range notes {
			v.log.Warn("jwks key skipped", "issuer", is.cfg.Name, "detail", n)
		}
		if err == nil {
			v.swapKeys(is, ks, why)
			return nil
		}
	}
	if ctx.Err() != nil && v.ctx.Err() != nil {
		return err // shutting down: not a refresh failure
	}
	v.setHealth(is, err)
	v.metrics.refreshFailures.WithLabelValues(is.cfg.Name).Inc()
	kept := 0
	if ks := is.keys.Load(); ks != nil {
		kept = len(ks.all)
	}
	v.log.Warn("jwks refresh failed", "issuer", is.cfg.Name, "source", describeSource(is.cfg),
		"trigger", why, "kept_keys", kept, "error", err)
	return err
}

// setKeys installs a static key set.
func (v *MultiVerifier) setKeys(is *issuer, set jwk.Set, why string) error {
	ks, notes, err := newKeySet(set)
	for _, n := range notes {
		v.log.Warn("jwks key skipped", "issuer", is.cfg.Name, "detail", n)
	}
	if err != nil {
		return fmt.Errorf("load keys: %w", err)
	}
	is.refreshMu.Lock()
	defer is.refreshMu.Unlock()
	v.swapKeys(is, ks, why)
	return nil
}

// swapKeys installs ks unless it equals the current set; cached tokens of
// the issuer go with the old set.
func (v *MultiVerifier) swapKeys(is *issuer, ks *keySet, why string) {
	v.metrics.lastRefresh.WithLabelValues(is.cfg.Name).SetToCurrentTime()
	v.setHealth(is, nil)
	if cur := is.keys.Load(); cur != nil && cur.digest == ks.digest {
		return
	}
	is.keys.Store(ks)
	v.cache.dropIssuer(is)
	v.metrics.keys.WithLabelValues(is.cfg.Name).Set(float64(len(ks.all)))
	v.log.Info("jwks loaded", "issuer", is.cfg.Name, "trigger", why, "kids", ks.kids())
}

// setHealth records the outcome of a key load of is (err nil: loaded) for
// IssuerStatus and flakegate_identity_issuer_keys_ok, and logs the change
// between degraded and healthy.
func (v *MultiVerifier) setHealth(is *issuer, err error) {
	now := v.opts.Now()
	h := &keysHealth{ok: err == nil, since: now}
	if err != nil {
		h.err = err.Error()
	}
	old := is.health.Load()
	if old != nil && old.ok == h.ok {
		h.since = old.since
	}
	is.health.Store(h)
	ok := 0.0
	if h.ok {
		ok = 1
	}
	v.metrics.keysOK.WithLabelValues(is.cfg.Name).Set(ok)
	switch {
	case h.ok && old != nil && !old.ok:
		v.log.Info("issuer keys available again", "issuer", is.cfg.Name)
	case !h.ok && (old == nil || old.ok):
		v.log.Warn("issuer degraded: keys cannot be fetched; its tokens get 503 unless their key is already loaded",
			"issuer", is.cfg.Name, "source", describeSource(is.cfg), "error", err)
	}
}

// keysOK says whether the last load of is's keys succeeded.
func (is *issuer) keysOK() bool {
	h := is.health.Load()
	return h != nil && h.ok
}

// IssuerStatus is the health of one issuer's keys (authz's /healthz lists
// the degraded ones).
type IssuerStatus struct {
	Name   string `json:"name"`
	Issuer string `json:"issuer"`
	// KeysOK: the last fetch (or load) of the issuer's keys succeeded.
	// False while its JWKS cannot be fetched (the old keys, if any, stay in
	// use) and before the first successful fetch.
	KeysOK bool `json:"keys_ok"`
	// Keys is the number of usable keys loaded.
	Keys int `json:"keys"`
	// Error is why the last fetch failed (no secrets: URL and status).
	Error string `json:"error,omitempty"`
	// Since is when KeysOK last changed (zero: never loaded nor failed).
	Since time.Time `json:"since,omitzero"`
}

// Issuers reports the health of every issuer's keys, sorted by name.
func (v *MultiVerifier) Issuers() []IssuerStatus {
	all := *v.issuers.Load()
	out := make([]IssuerStatus, 0, len(all))
	for _, is := range all {
		st := IssuerStatus{Name: is.cfg.Name, Issuer: is.cfg.Issuer}
		if ks := is.keys.Load(); ks != nil {
			st.Keys = len(ks.all)
		}
		if h := is.health.Load(); h != nil {
			st.KeysOK, st.Error, st.Since = h.ok, h.err, h.since.UTC()
		}
		out = append(out, st)
	}
	slices.SortFunc(out, func(a, b IssuerStatus) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// DegradedIssuers is Issuers less the healthy ones.
func (v *MultiVerifier) DegradedIssuers() []IssuerStatus {
	var out []IssuerStatus
	for _, st := range v.Issuers() {
		if !st.KeysOK {
			out = append(out, st)
		}
	}
	return out
}

// earlyRefresh reloads is's keys for a token whose kid is unknown, unless
// that was done less than EarlyRefreshGap ago. It reports whether the keys
// may have changed.
func (v *MultiVerifier) earlyRefresh(ctx context.Context, is *issuer, seen *keySet) bool {
	if is.src == nil {
		return false
	}
	is.refreshMu.Lock()
	defer is.refreshMu.Unlock()
	if is.keys.Load() != seen {
		return true // someone else refreshed while we waited
	}
	now := v.opts.Now()
	if !is.lastEarly.IsZero() && now.Sub(is.lastEarly) < v.opts.EarlyRefreshGap {
		return false
	}
	is.lastEarly = now
	// Detached from the request's cancellation (one client hanging up must
	// not fail the refresh for everyone) but bounded by FetchTimeout.
	_ = v.refreshLocked(context.WithoutCancel(ctx), is, "unknown kid")
	return is.keys.Load() != seen
}

func describeSource(ic IssuerConfig) string {
	switch {
	case ic.JWKSURL != "":
		return ic.JWKSURL
	case ic.JWKSFile != "":
		return ic.JWKSFile
	}
	return "static keys"
}

// Verify checks a raw token and returns its Subject. Errors match
// ErrInvalidToken (see TokenError for the reason) and never contain the
// token. The returned Subject may be shared with other callers (it comes
// from the cache): treat it as read-only.
func (v *MultiVerifier) Verify(ctx context.Context, raw string) (*Subject, error) {
	if raw == "" {
		v.metrics.result(ReasonEmpty)
		return nil, invalid(ReasonEmpty, "")
	}
	if len(raw) > MaxTokenSize {
		v.metrics.result(ReasonTooLarge)
		return nil, invalid(ReasonTooLarge, "")
	}
	now := v.opts.Now()
	key := hashToken(raw)
	if s, ok := v.cache.get(key, now.UnixNano()); ok {
		v.metrics.cacheHits.Inc()
		v.metrics.ok.Inc()
		return s, nil
	}
	s, is, ks, err := v.verify(ctx, raw, now)
	if err != nil {
		var te *TokenError
		if errors.As(err, &te) {
			if is != nil {
				te.Issuer = is.cfg.Name
			}
			v.metrics.result(te.Reason)
		}
		return nil, err
	}
	v.metrics.ok.Inc()
	s.seal() // shared from here on: render its policy input once
	expires := min(s.Expiry.UnixNano(), now.Add(v.opts.CacheTTL).UnixNano())
	v.cache.put(key, &cacheEntry{subject: s, expires: expires, iss: is, keys: ks}, now.UnixNano())
	return s, nil
}

// verify does the uncached work. It returns the issuer (once known) and the
// key set the token verified with.
func (v *MultiVerifier) verify(ctx context.Context, raw string, now time.Time) (*Subject, *issuer, *keySet, error) {
	t, err := parseJWS(raw)
	if err != nil {
		return nil, nil, nil, err
	}
	iss, ok := t.claims["iss"].(string)
	if !ok || iss == "" {
		return nil, nil, nil, invalid(ReasonUnknownIssuer, "iss missing or not a string")
	}
	issuers := *v.issuers.Load()
	is := issuers[iss]
	if is == nil {
		// iss is a public claim: naming it (sanitized) tells the caller
		// which token it sent. Issuers must match exactly (OIDC): a
		// spelling that differs only by a trailing slash is refused too,
		// but said so (authz -check warns about such configurations).
		detail := ClaimText(iss)
		if issuers[toggleTrailingSlash(iss)] != nil {
			detail += " (a configured issuer differs only by a trailing slash; issuers must match exactly)"
		}
		return nil, nil, nil, invalid(ReasonUnknownIssuer, detail)
	}
	ks, key, err := v.selectKey(ctx, is, t)
	if err != nil {
		return nil, is, nil, err
	}
	if !key.verify(t.spec, t.input, t.sig) {
		return nil, is, nil, invalid(ReasonBadSignature, "")
	}
	exp, err := checkTimes(t.claims, now, v.opts.Skew)
	if err != nil {
		return nil, is, nil, err
	}
	if !audienceAccepted(t.claims["aud"], is.cfg.Audience) {
		// Only for a token the issuer signed: what it should have asked for.
		return nil, is, nil, invalid(ReasonAudience, audienceDetail(t.claims["aud"], is.cfg.Audience))
	}
	s := &Subject{
		Authenticated: true,
		Issuer:        iss,
		IssuerName:    is.cfg.Name,
		Via:           "idp",
		Claims:        t.claims,
		Expiry:        exp,
	}
	if jti, ok := t.claims["jti"].(string); ok {
		s.TokenID = jti
	}
	if err := is.mapper(t.claims, &is.cfg, s); err != nil {
		return nil, is, nil, err
	}
	// The org binding of the issuer that verified the subject: for a
	// flakegate cache token (or scoped token), the IdP its subject came
	// from, as configured now — a token exchanged before its org was
	// bound, or before its issuer was removed, must not outlive that
	// (TestCacheTokenFollowsTheOrgBinding).
	bound := &is.cfg
	if is.cfg.Claims == ClaimsFlakegate {
		orig := issuers[s.Issuer]
		if orig == nil || orig.cfg.Claims == ClaimsFlakegate {
			return nil, is, nil, invalid(ReasonClaims, fmt.Sprintf("the token's subject comes from issuer %s, which is not configured", ClaimText(s.Issuer)))
		}
		bound = &orig.cfg
	}
	if !bound.allowsOrg(s.Org) || !bound.admitsMappedOrg(s.Org) {
		return nil, is, nil, invalid(ReasonClaims, fmt.Sprintf("org %s is not one of issuer %s's orgs", ClaimText(s.Org), bound.Name))
	}
	if why := bound.ownerMatches(s.Org, s.Claims); why != "" {
		return nil, is, nil, invalid(ReasonClaims, why)
	}
	// A cache token's user is named again from the IdP claims it carries,
	// as its IdP's entry names users now (user_claim, a verified email):
	// one exchanged when an unverified email still named its user must not
	// act as that address for hours, or a scoped token for 90 days (review
	// of the fixes, 2026-12-05); after a user_claim change it acts under
	// the new name, which the policy's lists then name.
	if is.cfg.Claims == ClaimsFlakegate && bound.Claims == ClaimsOIDC {
		sub, _ := s.Claims["sub"].(string)
		if sub == "" {
			return nil, is, nil, invalid(ReasonClaims, "the token's IdP claims have no sub")
		}
		if s.User, err = oidcUser(s.Claims, bound, sub); err != nil {
			return nil, is, nil, err
		}
	}
	return s, is, ks, nil
}

// selectKey finds the one key that may verify t: the key with t's kid, or,
// for a token without kid, the only key of the issuer that fits t's alg.
// An unknown kid (or no keys yet) triggers a rate-limited early refresh.
// Never more than one key is tried.
func (v *MultiVerifier) selectKey(ctx context.Context, is *issuer, t *jws) (*keySet, *verifyKey, error) {
	ks := is.keys.Load()
	for attempt := 0; ; attempt++ {
		var key *verifyKey
		if ks != nil {
			if t.hasKID {
				key = ks.byKID[t.kid]
			} else {
				var candidates []*verifyKey
				for _, k := range ks.all {
					if k.fits(t.alg, t.spec) == "" {
						candidates = append(candidates, k)
					}
				}
				if len(candidates) != 1 {
					return nil, nil, invalid(ReasonAmbiguousKey, fmt.Sprintf("%d keys fit %s", len(candidates), t.alg))
				}
				key = candidates[0]
			}
		}
		if key != nil {
			if why := key.fits(t.alg, t.spec); why != "" {
				return nil, nil, invalid(ReasonKeyMismatch, why)
			}
			return ks, key, nil
		}
		if attempt > 0 || !v.earlyRefresh(ctx, is, ks) {
			// No keys, or a kid not in the keys we have while the last
			// fetch failed (the IdP may have rotated to a key we cannot
			// fetch): an outage, not the token's fault. A kid missing from
			// a freshly fetched set is.
			switch {
			case ks == nil:
				return nil, nil, invalid(ReasonNoKeys, "none loaded yet")
			case !is.keysOK():
				return nil, nil, invalid(ReasonNoKeys, "key id not in the last keys fetched, and fetching them again fails")
			}
			return nil, nil, invalid(ReasonUnknownKeyID, "")
		}
		ks = is.keys.Load()
	}
}

// toggleTrailingSlash is iss with its trailing slash removed, or with one
// added when it has none.
func toggleTrailingSlash(iss string) string {
	if strings.HasSuffix(iss, "/") {
		return strings.TrimSuffix(iss, "/")
	}
	return iss + "/"
}

// audienceDetail says which audiences the issuer accepts (configuration,
// not a secret: clients must ask their IdP for one of them) and what the
// token has (sanitized).
func audienceDetail(aud any, accepted []string) string {
	want := make([]string, len(accepted))
	for i, a := range accepted {
		want[i] = strconv.Quote(a)
	}
	got := "none"
	switch v := aud.(type) {
	case string:
		got = ClaimText(v)
	case []any:
		var parts []string
		for _, a := range v {
			if s, ok := a.(string); ok && len(parts) < 3 {
				parts = append(parts, ClaimText(s))
			}
		}
		if len(parts) > 0 {
			got = strings.Join(parts, ", ")
		}
	}
	return "want aud " + strings.Join(want, " or ") + ", token has " + got
}
