package route

import (
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/flakegate/flakegate/internal/nixname"
)

// What the authorization service, the gate and the blob server must agree
// on besides the URL grammar. Each is defined here once and used by both
// processes.

// SubjectHeader is set by authz (through the gate or Envoy) on an allowed
// request: the subject summary (audit, never a token). The blob server's
// access log records it and limits concurrent uploads per value. A
// client's own x-flakegate-* headers are stripped before authz runs.
const SubjectHeader = "x-flakegate-subject"

// ReadableHeader is set by authz (through the gate or Envoy) on an allowed
// union-view read: the flakes owning the object that the caller may read,
// as FormatFlakes writes them. The blob server serves the union view from
// these flakes' records only. A client's own x-flakegate-* headers are
// stripped before authz runs, so it cannot name flakes itself.
const ReadableHeader = "x-flakegate-readable"

// FormatFlakes writes flakes as ReadableHeader carries them: "org/name"
// separated by single spaces.
func FormatFlakes(flakes []nixname.Flake) string {
	var b strings.Builder
	for i, f := range flakes {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(f.String())
	}
	return b.String()
}

// ParseFlakes reads a ReadableHeader value. Every name must be a valid
// flake; an empty value is an empty (non-nil) list.
func ParseFlakes(s string) ([]nixname.Flake, error) {
	fields := strings.Fields(s)
	out := make([]nixname.Flake, 0, len(fields))
	for _, name := range fields {
		f, err := nixname.ParseFlake(name)
		if err != nil {
			return nil, err
		}
		out = append(out, f)
	}
	return out, nil
}

// The owners endpoints of the blob server's internal listener, which authz
// asks for the owners of a union-view object: GET OwnersPrefix + kind + "/"
// + key (OwnersPath), e.g. /owners/narinfo/<store hash>, /owners/nar/<NAR
// file name>, /owners/listing/<store hash>, /owners/log/<drv>,
// /owners/debuginfo/<build id>, /owners/realisation/<id>,
// /owners/build-trace/<drv>/<output>. Each answers 200 with an
// OwnersResponse (an empty list when nobody owns the object, never 404),
// 404 for a kind without owners and 400 for a malformed key
// (ParseOwnersPath).
const (
	OwnersPrefix      = "/owners/"
	OwnersNarInfoPath = OwnersPrefix + string(KindNarInfo) + "/"
	OwnersNarPath     = OwnersPrefix + string(KindNar) + "/"
)

// ownedKinds are the kinds of union-view objects, with the union URL path
// of the object of a key (how Parse would see it).
var ownedKinds = map[Kind]func(key string) string{
	KindNarInfo:     func(k string) string { return "/" + k + ".narinfo" },
	KindNar:         func(k string) string { return "/nar/" + k },
	KindListing:     func(k string) string { return "/" + k + ".ls" },
	KindLog:         func(k string) string { return "/log/" + k },
	KindDebugInfo:   func(k string) string { return "/debuginfo/" + k },
	KindRealisation: func(k string) string { return "/realisations/" + k + ".doi" },
	KindBuildTrace:  func(k string) string { return "/" + buildTracePrefix + "/" + k + ".doi" },
}

// OwnersKey is the key the owners endpoint of r's kind is asked about:
// the NAR file name for a NAR, Hash for every other kind.
func OwnersKey(r Request) string {
	if r.Kind == KindNar {
		return r.File
	}
	return r.Hash
}

// OwnersPath is the path of the owners endpoint for the object r (a
// union-view read) is about; false for a kind that has no owners.
func OwnersPath(r Request) (string, bool) {
	if _, ok := ownedKinds[r.Kind]; !ok {
		return "", false
	}
	return OwnersPrefix + string(r.Kind) + "/" + OwnersKey(r), true
}

// ParseOwnersPath reads the kind and key of an owners endpoint request
// (the path after OwnersPrefix, split at the first "/"): the key must name
// an object of that kind exactly as a union-view URL would (the rules are
// Parse's). It returns that object's request.
func ParseOwnersPath(kind, key string) (Request, error) {
	mk, ok := ownedKinds[Kind(kind)]
	if !ok {
		return Request{}, errf(http.StatusNotFound, "no owners endpoint for objects of kind %q", kind)
	}
	r, err := Parse(http.MethodGet, mk(key))
	if err != nil {
		return Request{}, errf(http.StatusBadRequest, "%s key %q: %v", kind, key, err)
	}
	if r.Kind != Kind(kind) || OwnersKey(r) != key {
		return Request{}, errf(http.StatusBadRequest, "%q is not a %s key", key, kind)
	}
	return r, nil
}

// OwnersResponse is the JSON answer of the owners endpoints:
// {"flakes":["org/name",…]}, sorted. Flakes is never nil in an answer; a
// decoded answer without a "flakes" list (or with null) leaves it nil.
type OwnersResponse struct {
	Flakes []string `json:"flakes"`
}

// Bodies of answers that must not differ between the processes.
const (
	// BodyNotFound is the body of the blob server's 404 for an absent
	// object, and therefore of authz's denied read: a denial answers
	// exactly like an absent object (same body, same headers) so that it
	// does not reveal that the object exists.
	BodyNotFound = "not found\n"
	// BodyUnavailable is the body of a 503 when authorization cannot be
	// decided (authz failing, or the gate unable to reach it): fail closed.
	BodyUnavailable = "authorization service unavailable, try again later\n"
)

// The closure endpoint of the blob server's internal listener, which authz
// asks for what a scoped (deploy) token may read: GET ClosurePath +
// "{org}/{name}?root=<storehash>&root=…" answers 200 with a
// ClosureResponse: the closure of the roots within that flake, walked
// through the flake's own records' references (a root or reference the
// flake holds no record of is left out, never an error), and 400 for a
// malformed flake or root.
const ClosurePath = "/closure/"

// ClosureResponse is the closure endpoint's JSON answer. Every list is
// sorted and never nil in an answer.
type ClosureResponse struct {
	// Paths are the store hashes of the closure.
	Paths []string `json:"paths"`
	// Nars are the NAR file names the flake's records of those paths name.
	Nars []string `json:"nars"`
	// Derivers are the store hashes of the derivations (Deriver) of those
	// paths: their build logs are part of what the closure exposes.
	Derivers []string `json:"derivers"`
}

// PublicKeysPath is the blob server's list of narinfo signing keys
// (GET, no authentication): a PublicKeysResponse. Every other /_flakegate/
// path is the authorization service's; the embedded gate's proxy and
// Envoy's route send this one to the blob server.
const PublicKeysPath = "/_flakegate/public-keys"

// PublicKeysResponse is the JSON answer of PublicKeysPath:
// {"public_keys":["name:base64",…]}, the keys Nix's trusted-public-keys
// takes, newest (signing) key first.
type PublicKeysResponse struct {
	PublicKeys []string `json:"public_keys"`
}

// WhoamiPath is authz's answer to "who does the cache think I am" (GET,
// the token as for any request): a WhoamiResponse, 401 without a valid
// token. `flakegate status` asks it.
const WhoamiPath = "/_flakegate/whoami"

// WhoamiResponse is the JSON answer of WhoamiPath: the verified subject as
// the policy sees it, and the token's expiry and id.
type WhoamiResponse struct {
	Subject   string    `json:"subject"`  // the summary logged with every decision
	Provider  string    `json:"provider"` // github | gitlab | oidc (the original provider for a cache token)
	Kind      string    `json:"kind"`     // ci | user
	Org       string    `json:"org,omitempty"`
	Repo      string    `json:"repo,omitempty"`
	User      string    `json:"user,omitempty"`
	Ref       string    `json:"ref,omitempty"`
	Via       string    `json:"via"` // idp | exchange
	Issuer    string    `json:"issuer"`
	ExpiresAt time.Time `json:"expires_at"`
	TokenID   string    `json:"token_id,omitempty"`
}

// LoopbackHost reports whether host (a URL's Hostname) is this machine:
// "localhost" or a loopback address. Plain http is allowed only to such a
// host, for the JWKS URLs authz fetches and the cache URL clients send
// tokens to: anywhere else a token (or the keys that verify it) would
// cross the network in clear text.
func LoopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
