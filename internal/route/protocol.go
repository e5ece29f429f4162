package route

import (
	"strings"

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
// asks for the owners of a union-view object: GET OwnersNarInfoPath +
// store hash, GET OwnersNarPath + NAR file name. Both answer 200 with an
// OwnersResponse (an empty list when nobody owns the object, never 404)
// and 400 for a malformed hash or file name.
const (
	OwnersNarInfoPath = "/owners/narinfo/"
	OwnersNarPath     = "/owners/nar/"
)

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
