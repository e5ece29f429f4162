package authz

import (
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"

	"github.com/flakegate/flakegate/internal/nixname"
	"github.com/flakegate/flakegate/internal/route"
)

// WWWAuthenticate is sent with every 401; Nix (netrc) and curl answer the
// Basic challenge, token-aware clients the Bearer one. The headers authz
// sets on the proxied request (route.SubjectHeader, route.ReadableHeader)
// and the bodies it shares with the blob server and the gate
// (route.BodyNotFound: a denied read answers exactly like an absent object;
// route.BodyUnavailable) are route's.
const WWWAuthenticate = `Basic realm="flakegate", Bearer realm="flakegate"`

// Retry-After of authz's 503s: a 503 is temporary, and says when to come
// back. The gate keeps the value (it adds its own "1" only to the 503s it
// makes itself, when authz cannot be asked).
const (
	// RetryAfterUnavailable is the default: authz or what it asks (the
	// policy, the owners lookup) failing.
	RetryAfterUnavailable = 5 * time.Second
	// RetryAfterKeysUnavailable: an identity provider's keys cannot be
	// fetched. The verifier retries the fetch in the background and at
	// most every 30 s for a token that needs it (identity's
	// EarlyRefreshGap), so asking sooner cannot help.
	RetryAfterKeysUnavailable = 30 * time.Second
)

// Outcome is a decision on one request: everything Respond needs to answer
// Envoy and the decision log needs to record it.
type Outcome struct {
	Allow bool
	// Status is the HTTP status of a denied request (200 when allowed).
	Status int
	// Message is the one-line text sent to the client for a denied
	// request (never a secret; for a denied read it is route.BodyNotFound).
	Message string
	// Reason explains the decision for the decision log: the policy's
	// reason, or what failed.
	Reason string
	// SubjectSummary is the verified subject's Summary ("anonymous"
	// without a token), sent upstream in route.SubjectHeader.
	SubjectSummary string
	// Readable lists, for an allowed union read, the owning flakes the
	// caller may read: sent upstream in route.ReadableHeader, the blob
	// server serves the object from these flakes' records only.
	Readable []nixname.Flake
	// KeepAuthorization leaves the Authorization header on the proxied
	// request: only for authz's own endpoints (/_flakegate/…), which need
	// the token. The blob server never sees it.
	KeepAuthorization bool
	// RetryAfter is the Retry-After of a 503 (0: RetryAfterUnavailable);
	// ignored for any other status.
	RetryAfter time.Duration
}

// RetryAfterHeader is the Retry-After value (whole seconds) of a denied
// Outcome: "" unless its status is 503.
func (o Outcome) RetryAfterHeader() string {
	if o.Allow || o.Status != http.StatusServiceUnavailable {
		return ""
	}
	d := o.RetryAfter
	if d <= 0 {
		d = RetryAfterUnavailable
	}
	return strconv.Itoa(int((d + time.Second - 1) / time.Second))
}

// Respond renders an Outcome as the CheckResponse Envoy applies. It is pure.
func Respond(o Outcome) *authv3.CheckResponse {
	if o.Allow {
		return respondAllow(o)
	}

	status := o.Status
	if status < 400 || status > 599 {
		// An Outcome without a valid deny status is a bug: fail closed.
		status = http.StatusServiceUnavailable
	}
	msg := o.Message
	if msg == "" {
		msg = http.StatusText(status) + "\n"
	}
	// The same headers as the blob server's own error answers, so that a
	// denied read cannot be told from an absent object.
	headers := []*corev3.HeaderValueOption{
		setHeader("content-type", "text/plain; charset=utf-8"),
		setHeader("x-content-type-options", "nosniff"),
	}
	switch status {
	case http.StatusUnauthorized:
		headers = append(headers, setHeader("www-authenticate", WWWAuthenticate))
	case http.StatusServiceUnavailable:
		o.Status = status // an invalid status became 503: it gets a Retry-After too
		headers = append(headers, setHeader("retry-after", o.RetryAfterHeader()))
	}
	return &authv3.CheckResponse{
		Status: &rpcstatus.Status{Code: int32(grpcCode(status)), Message: http.StatusText(status)},
		HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{
			Status:  &typev3.HttpStatus{Code: typev3.StatusCode(status)},
			Headers: headers,
			Body:    msg,
		}},
	}
}

// allowBlock holds every message of an allowing CheckResponse, so that
// respondAllow makes one allocation instead of eight (hand-written for a
// measured reason: an allow is the answer to nearly every Check, issue 16).
// Nothing in it is shared with another response.
type allowBlock struct {
	resp    authv3.CheckResponse
	status  rpcstatus.Status
	wrap    authv3.CheckResponse_OkResponse
	ok      authv3.OkHttpResponse
	headers [2]*corev3.HeaderValueOption
	opts    [2]corev3.HeaderValueOption
	values  [2]corev3.HeaderValue
	remove  [1]string
}

func respondAllow(o Outcome) *authv3.CheckResponse {
	b := &allowBlock{}
	b.status.Code = int32(codes.OK)
	b.resp.Status = &b.status
	b.wrap.OkResponse = &b.ok
	b.resp.HttpResponse = &b.wrap
	n := 1
	b.values[0] = corev3.HeaderValue{Key: route.SubjectHeader, Value: headerSafe(o.SubjectSummary)}
	if len(o.Readable) > 0 {
		b.values[1] = corev3.HeaderValue{Key: route.ReadableHeader, Value: route.FormatFlakes(o.Readable)}
		n = 2
	}
	for i := range n {
		b.opts[i].Header = &b.values[i]
		b.opts[i].AppendAction = corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD
		b.headers[i] = &b.opts[i]
	}
	b.ok.Headers = b.headers[:n:n]
	if !o.KeepAuthorization {
		b.remove[0] = "authorization"
		b.ok.HeadersToRemove = b.remove[:1:1]
	}
	return &b.resp
}

// grpcCode is the gRPC status reported to Envoy alongside a denied HTTP
// status. Envoy only distinguishes OK from not OK; the code helps reading
// Envoy's logs and stats.
func grpcCode(status int) codes.Code {
	switch status {
	case http.StatusUnauthorized:
		return codes.Unauthenticated
	case http.StatusForbidden:
		return codes.PermissionDenied
	case http.StatusNotFound:
		return codes.NotFound
	case http.StatusServiceUnavailable:
		return codes.Unavailable
	case http.StatusBadRequest, http.StatusMethodNotAllowed:
		return codes.InvalidArgument
	}
	if status >= 500 {
		return codes.Internal
	}
	return codes.PermissionDenied
}

// headerSafe makes an audit value (built from token claims) safe as an
// HTTP header value and as a protobuf string: control characters and
// invalid UTF-8 become '?', and it is capped at 256 bytes without cutting
// a character in two (a cut character would be invalid UTF-8, which a
// CheckResponse cannot carry over gRPC).
func headerSafe(s string) string {
	const max = 256
	s = strings.ToValidUTF8(s, "?")
	if len(s) > max {
		cut := max
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut]
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] == 0x7f {
			b := []byte(s)
			for j := i; j < len(b); j++ {
				if b[j] < 0x20 || b[j] == 0x7f {
					b[j] = '?'
				}
			}
			return string(b)
		}
	}
	return s
}

func setHeader(key, value string) *corev3.HeaderValueOption {
	return &corev3.HeaderValueOption{
		Header:       &corev3.HeaderValue{Key: key, Value: value},
		AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD,
	}
}
