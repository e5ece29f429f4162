// Package authz is flakegate's Envoy ext_authz v3 service: it maps a
// CheckRequest to the policy input (DESIGN.md "Policy contract"), verifies
// the caller's token, evaluates the Rego policy (once per owning flake for a
// union read) and answers with the CheckResponse Envoy — or the blob server's
// embedded gate — applies.
//
// The core is pure and tested from JSON fixtures: ParseCheckRequest (what
// the request is), BuildInput (the policy input) and Respond (the answer).
// Checker ties them to a Verifier, a policy Evaluator, an OwnersLookup and
// the revocation check, and records every decision (decision log line,
// metrics); it is the one check path: Envoy's and the embedded gate's
// Checks (Server, over gRPC) and the token exchange (internal/exchange) ask
// it alike. OwnersClient is the owners lookup over HTTP. The process that
// serves all this (configuration, listeners, health) is internal/authzapp.
//
// Status codes (DESIGN.md): a missing, invalid, expired or revoked token
// where one is needed → 401 with WWW-Authenticate and a one-line body that
// says what to do; a denied read → 404 with the same body as an absent
// object; a denied push or exchange → 403; owners lookup, verifier or
// policy failure, or an identity provider whose keys cannot be fetched →
// 503 with Retry-After (fail closed). An invalid token is never treated as
// anonymous.
package authz

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/flakegate/flakegate/internal/identity"
	"github.com/flakegate/flakegate/internal/nixname"
	"github.com/flakegate/flakegate/internal/policy"
	"github.com/flakegate/flakegate/internal/route"
)

// OwnersLookup answers which flakes own a union-view object (narinfo by
// store hash, NAR by file name). Implemented by OwnersClient.
type OwnersLookup interface {
	Owners(ctx context.Context, r route.Request) ([]nixname.Flake, error)
}

// Checker decides requests. Its fields are set when it is built, before
// its first use (internal/authzapp builds the process's one Checker); it is
// safe for concurrent use.
type Checker struct {
	Verifier identity.Verifier
	Policy   policy.Evaluator
	Owners   OwnersLookup
	// Closures answers what a scoped token may read; without it every
	// read with a scoped token is 503 (fail closed).
	Closures ClosureLookup
	// SubjectCheck, when set, is called with every verified subject before
	// the policy; an error rejects the request with 401 and its text as the
	// reason. authzapp always sets it to the revocation list
	// (revoke.Checker.Check). It must not block for long.
	SubjectCheck func(ctx context.Context, s *identity.Subject) error
	Logger       *slog.Logger // decision log; nil: slog.Default()
	Metrics      *Metrics     // nil: no metrics
}

// Result is a decision with everything the decision log records.
type Result struct {
	Outcome
	Request  Request
	Subject  *identity.Subject // nil when anonymous
	Revision string            // policy revision that decided ("" if not evaluated)
	// UnionOwner is the first owning flake whose evaluation allowed a union
	// read (Outcome.Readable lists them all).
	UnionOwner nixname.Flake
	// Err is the internal failure behind a 503 (logged, never sent).
	Err error
}

// Check decides req, records the decision (log line, metrics) and returns
// the response for Envoy. It never returns nil.
func (c *Checker) Check(ctx context.Context, req *authv3.CheckRequest) *authv3.CheckResponse {
	return c.CheckRequest(ctx, ParseCheckRequest(req))
}

// CheckRequest is Check for a request already parsed.
func (c *Checker) CheckRequest(ctx context.Context, r Request) *authv3.CheckResponse {
	return Respond(c.Authorize(ctx, r).Outcome)
}

// Authorize decides a parsed request and records the decision (decision
// log line, metrics): what Check does, for a caller that answers the
// client itself (the token exchange) and needs the verified subject.
func (c *Checker) Authorize(ctx context.Context, r Request) Result {
	start := time.Now()
	res := c.Decide(ctx, r)
	c.record(ctx, res, time.Since(start))
	return res
}

// Decide decides a parsed request. It does no logging.
func (c *Checker) Decide(ctx context.Context, r Request) Result {
	res := Result{Request: r}
	res.SubjectSummary = (*identity.Subject)(nil).Summary()
	if r.RouteErr != nil {
		status := route.StatusOf(r.RouteErr)
		return deny(res, status, r.RouteErr.Error()+"\n", r.RouteErr.Error())
	}
	// authz's own token endpoints need the caller's Authorization header;
	// nothing else does, and the public endpoints (the blob server serves
	// public-keys) must not receive it: tokens never reach the blob server.
	res.KeepAuthorization = r.Route.Action == route.ActionExchange || r.Route.Action == route.ActionWhoami
	if r.Route.Action == route.ActionPublic {
		res.Allow, res.Status, res.Reason = true, http.StatusOK, "public endpoint"
		return res
	}

	subject, failed := c.authenticate(ctx, &res)
	if r.Route.Action == route.ActionWhoami {
		// Who the token says the caller is: authentication only, the
		// policy is not asked (it decides on flakes, and this names none).
		switch {
		case failed:
			return res
		case subject == nil:
			return deny(res, http.StatusUnauthorized, "authentication required: send a token\n", "whoami without a token")
		}
		res.Subject, res.SubjectSummary = subject, subject.Summary()
		return allow(res, "whoami: authenticated")
	}
	ignored := ""
	if failed {
		if r.Route.Action != route.ActionInfo {
			return res
		}
		// nix-cache-info holds no secret, and Nix fetches it before anything
		// else: refused, Nix gives up on the whole cache ("does not appear to
		// be a binary cache") and never shows why. So a token that cannot be
		// used (expired, revoked, malformed, its issuer down) is ignored here
		// and the request decided as anonymous; the first narinfo, NAR or
		// upload request answers 401 or 503 with the reason, which Nix prints.
		ignored = res.Reason
		res = Result{Request: r}
		res.SubjectSummary = (*identity.Subject)(nil).Summary()
		subject = nil
	}
	res.Subject = subject
	res.SubjectSummary = subject.Summary()

	if subject != nil && subject.Scope != nil && r.Route.Action != route.ActionInfo {
		return c.decideScoped(ctx, res)
	}
	if r.Route.Union() && r.Route.Kind != route.KindCacheInfo {
		return c.decideUnion(ctx, res)
	}
	in := BuildInput(r, subject, nil)
	d, err := c.evaluate(ctx, in)
	if err != nil {
		return unavailable(res, fmt.Errorf("evaluate policy for %s %s: %w", r.Route.Action, r.Route.Flake, err))
	}
	res.Revision = d.Revision
	if ignored != "" {
		d.Reason = strings.TrimSpace(d.Reason + " (token ignored for cache info: " + ignored + ")")
	}
	if d.Allow {
		return allow(res, d.Reason)
	}
	return denyByPolicy(res, d.Reason)
}

// authenticate verifies the request's token. failed reports that res now
// holds a deny (401 or 503).
func (c *Checker) authenticate(ctx context.Context, res *Result) (subject *identity.Subject, failed bool) {
	raw, err := identity.TokenFromAuthorization(res.Request.Authorization)
	if errors.Is(err, identity.ErrNoToken) {
		return nil, false
	}
	if err != nil {
		*res = deny(*res, http.StatusUnauthorized, tokenMessage(err), err.Error())
		return nil, true
	}
	if c.Verifier == nil {
		*res = unavailable(*res, errors.New("no token verifier configured"))
		return nil, true
	}
	subject, err = c.Verifier.Verify(ctx, raw)
	if err != nil {
		// Every refused token matches ErrInvalidToken (401); keys that
		// cannot be fetched are the identity provider's outage (503, with
		// its own body); anything else is the verifier failing (503, fail
		// closed).
		if errors.Is(err, identity.ErrKeysUnavailable) {
			*res = keysUnavailable(*res, err)
			return nil, true
		}
		if !errors.Is(err, identity.ErrInvalidToken) {
			*res = unavailable(*res, fmt.Errorf("verify token: %w", err))
			return nil, true
		}
		*res = deny(*res, http.StatusUnauthorized, tokenMessage(err), err.Error())
		return nil, true
	}
	if subject == nil || !subject.Authenticated {
		*res = unavailable(*res, errors.New("verifier returned no authenticated subject for a valid token"))
		return nil, true
	}
	if c.SubjectCheck != nil {
		if err := c.SubjectCheck(ctx, subject); err != nil {
			res.Subject, res.SubjectSummary = subject, subject.Summary()
			*res = deny(*res, http.StatusUnauthorized, tokenMessage(err), "subject check: "+err.Error())
			return nil, true
		}
	}
	return subject, false
}

// decideScoped decides a request with a scoped (deploy) token, before and
// besides the policy: such a token only reads, and only objects of the
// closure of its roots within its flake (Closure.Allows); anything else
// answers what a denial answers for its action (a read: the 404 of an
// absent object, whether or not the object exists elsewhere; a push or an
// exchange: 403). Within the closure the policy is asked as for any read,
// for the scope's flake (a union read names it as the only readable
// owner), and sees the scope in subject.scope.
func (c *Checker) decideScoped(ctx context.Context, res Result) Result {
	scope, rt := res.Subject.Scope, res.Request.Route
	switch rt.Action {
	case route.ActionRead:
	case route.ActionPush:
		return denyByPolicy(res, "a scoped token is read-only")
	case route.ActionExchange:
		return denyByPolicy(res, "a scoped token cannot mint tokens")
	default:
		return denyByPolicy(res, "a scoped token may only read")
	}
	if !rt.Flake.IsZero() && rt.Flake != scope.Flake {
		return denyByPolicy(res, "outside the token's scope: another flake")
	}
	if c.Closures == nil {
		return unavailable(res, errors.New("scoped token: no closure lookup configured"))
	}
	closure, err := c.Closures.Closure(ctx, scope)
	if err != nil {
		return unavailable(res, fmt.Errorf("scoped token: %w", err))
	}
	if !closure.Allows(rt) {
		return denyByPolicy(res, "outside the token's scope: not in the closure of its roots")
	}
	var owners []nixname.Flake
	if rt.Union() {
		owners = []nixname.Flake{scope.Flake}
	}
	in := BuildInput(res.Request, res.Subject, owners)
	SetFlake(in, scope.Flake)
	d, err := c.evaluate(ctx, in)
	if err != nil {
		return unavailable(res, fmt.Errorf("evaluate policy for scoped read of %s: %w", scope.Flake, err))
	}
	res.Revision = d.Revision
	if !d.Allow {
		return denyByPolicy(res, d.Reason)
	}
	if rt.Union() {
		res.UnionOwner, res.Readable = scope.Flake, owners
	}
	return allow(res, d.Reason)
}

// paddingFlake is the flake a union read of an object nobody owns is
// evaluated for, its decision unused: see decideUnion. The name cannot be
// pushed to (nixname.ParseFlake refuses "_"), so it is never a real owner.
var paddingFlake = nixname.Flake{Org: "_flakegate", Name: "_absent"}

// decideUnion evaluates a union read once per owning flake and allows it
// when at least one allows; Outcome.Readable lists every owner that
// allows, the flakes the blob server may serve the object from.
//
// A denied read of an object that exists must cost what a read of an
// absent one costs, or its time tells the caller that it exists: both make
// the same owners lookup (cached alike, OwnersClient), and an object nobody
// owns is evaluated once for paddingFlake, as an object with one owner is
// evaluated once. Objects with several owners cost one evaluation more per
// owner (a few µs with the decision cache).
func (c *Checker) decideUnion(ctx context.Context, res Result) Result {
	if c.Owners == nil {
		return unavailable(res, errors.New("union read: no owners lookup configured"))
	}
	owners, err := c.Owners.Owners(ctx, res.Request.Route)
	if err != nil {
		return unavailable(res, fmt.Errorf("union read: %w", err))
	}
	in := BuildInput(res.Request, res.Subject, owners)
	if len(owners) == 0 {
		SetFlake(in, paddingFlake)
		_, _ = c.evaluate(ctx, in) // equal work; the object is absent whatever it says
		return denyByPolicy(res, "no flake owns this object")
	}
	var readable []nixname.Flake
	denial, grant := "", ""
	grantRev, denialRev := "", ""
	for _, owner := range owners {
		SetFlake(in, owner)
		d, err := c.evaluate(ctx, in)
		if err != nil {
			return unavailable(res, fmt.Errorf("evaluate policy for union read via %s: %w", owner, err))
		}
		switch {
		case d.Allow:
			if len(readable) == 0 {
				res.UnionOwner, grant, grantRev = owner, d.Reason, d.Revision
			}
			readable = append(readable, owner)
		case denial == "":
			denial, denialRev = d.Reason, d.Revision
		}
	}
	// The revision logged is the one that decided what the log line says
	// (the grant's, else the first denial's): a reload between two owners'
	// evaluations must not name a revision that denies the grant
	// (TestUnionReadNamesTheGrantingRevision).
	if len(readable) > 0 {
		res.Readable, res.Revision = readable, grantRev
		return allow(res, grant)
	}
	res.Revision = denialRev
	if denial == "" {
		denial = fmt.Sprintf("no owning flake (of %d) allows it", len(owners))
	}
	return denyByPolicy(res, denial)
}

func (c *Checker) evaluate(ctx context.Context, in map[string]any) (policy.Decision, error) {
	if c.Policy == nil {
		return policy.Decision{}, errors.New("no policy configured")
	}
	return c.Policy.Evaluate(ctx, in)
}

func allow(res Result, reason string) Result {
	if reason == "" {
		reason = "allowed by policy"
	}
	res.Allow, res.Status, res.Reason = true, http.StatusOK, reason
	return res
}

// denyByPolicy answers a policy deny: 401 for an anonymous caller (a token
// might help), 404 for a read (no existence leak), 403 for push/exchange.
func denyByPolicy(res Result, reason string) Result {
	if reason == "" {
		reason = "denied by policy"
	}
	if res.Subject == nil {
		return deny(res, http.StatusUnauthorized,
			"authentication required: send a token as Bearer or as the netrc password\n", reason)
	}
	switch res.Request.Route.Action {
	case route.ActionRead, route.ActionInfo:
		return deny(res, http.StatusNotFound, route.BodyNotFound, reason)
	}
	return deny(res, http.StatusForbidden, "forbidden: "+oneLine(reason)+"\n", reason)
}

func deny(res Result, status int, message, reason string) Result {
	res.Allow, res.Status, res.Message, res.Reason = false, status, message, reason
	return res
}

// unavailable answers 503 (Retry-After: RetryAfterUnavailable) for a
// failure of authz or of what it asks; err is logged, never sent.
func unavailable(res Result, err error) Result {
	res = deny(res, http.StatusServiceUnavailable, route.BodyUnavailable, "internal error")
	res.RetryAfter = RetryAfterUnavailable
	res.Err = err
	return res
}

// keysUnavailable answers 503 (Retry-After: RetryAfterKeysUnavailable) for
// a token whose issuer's keys cannot be fetched: the identity provider's
// outage, not a bad token, so the client should retry rather than log in
// again.
func keysUnavailable(res Result, err error) Result {
	msg := "identity provider keys unavailable"
	var te *identity.TokenError
	if errors.As(err, &te) && te.Issuer != "" {
		msg += " (issuer " + te.Issuer + ")"
	}
	msg += ": the token cannot be verified right now, try again later"
	res = deny(res, http.StatusServiceUnavailable, oneLine(msg)+"\n", "identity provider keys unavailable")
	res.RetryAfter = RetryAfterKeysUnavailable
	res.Err = err
	return res
}

// Hints of the 401 bodies: what the client should do.
const (
	hintLogin    = "run flakegate login (or, in CI, exchange a fresh job token: flakegate login --ci)"
	hintNewToken = "get a fresh token: flakegate login (in CI: flakegate login --ci)"
	hintSend     = "send the token as Bearer or as the netrc password (flakegate login writes the netrc)"
)

// tokenHints are the 401 hints by refusal reason.
var tokenHints = map[identity.Reason]string{
	identity.ReasonMalformedHeader: hintSend,
	identity.ReasonEmpty:           hintSend,
	identity.ReasonTooLarge:        hintSend,
	identity.ReasonMalformed:       hintSend,
	identity.ReasonAlgorithm:       "the token must be signed by its identity provider; " + hintNewToken,
	identity.ReasonForbiddenHeader: "the token must be signed by its identity provider; " + hintNewToken,
	identity.ReasonUnknownIssuer:   "this cache does not trust that issuer; log in with an identity provider it trusts (flakegate login)",
	identity.ReasonUnknownKeyID:    "its key is not among the issuer's published keys; " + hintNewToken,
	identity.ReasonAmbiguousKey:    "the token names no key id; " + hintNewToken,
	identity.ReasonKeyMismatch:     "its key does not match its algorithm; " + hintNewToken,
	identity.ReasonBadSignature:    "it was not signed by its issuer's published keys; " + hintNewToken,
	identity.ReasonExpired:         hintLogin,
	identity.ReasonNotYetValid:     "check the clocks of this machine and of the identity provider, or " + hintNewToken,
	identity.ReasonIssuedInFuture:  "check the clocks of this machine and of the identity provider, or " + hintNewToken,
	identity.ReasonAudience:        "request the token for that audience (flakegate login does)",
	identity.ReasonClaims:          "the token lacks claims this cache needs; " + hintNewToken,
}

// tokenMessage is the 401 body for a refused token: the reason (which
// never contains the token; a claim it quotes, the unknown iss or the aud,
// is sanitized by identity) and what to do about it. A refusal that is no
// TokenError is the subject check's: a revoked token.
func tokenMessage(err error) string {
	msg := err.Error()
	if !strings.HasPrefix(msg, "invalid token") {
		msg = "invalid token: " + msg
	}
	hint := "do not retry with this token; ask the cache's administrators"
	var te *identity.TokenError
	if errors.As(err, &te) {
		hint = tokenHints[te.Reason]
	}
	if hint != "" {
		msg += ": " + hint
	}
	return oneLineMax(msg, maxTokenMessage) + "\n"
}

// maxTokenMessage bounds a 401 body: room for a quoted iss (identity cuts
// it at 200 bytes) and the hint.
const maxTokenMessage = 512

// oneLine keeps a client message on one line and short.
func oneLine(s string) string { return oneLineMax(s, 200) }

// oneLineMax keeps s on one line and at most max bytes, never cutting a
// UTF-8 sequence.
func oneLineMax(s string, max int) string {
	b := make([]byte, 0, min(len(s), max))
	for _, r := range s {
		if r == '\n' || r == '\r' || r == '\t' {
			r = ' '
		}
		if len(b)+utf8.RuneLen(r) > max {
			break
		}
		b = utf8.AppendRune(b, r)
	}
	return string(b)
}
