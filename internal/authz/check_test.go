package authz

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"unicode/utf8"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/flakegate/flakegate/internal/authz/authztest"
	"github.com/flakegate/flakegate/internal/identity"
	"github.com/flakegate/flakegate/internal/nixname"
	"github.com/flakegate/flakegate/internal/policy"
	"github.com/flakegate/flakegate/internal/route"
)

// tokenVerifier accepts one token and yields a fixed subject.
type tokenVerifier struct {
	token   string
	subject *identity.Subject
	err     error
}

func (v tokenVerifier) Verify(_ context.Context, raw string) (*identity.Subject, error) {
	if v.err != nil {
		return nil, v.err
	}
	if raw != v.token {
		return nil, &identity.TokenError{Reason: identity.ReasonBadSignature}
	}
	return v.subject, nil
}

// failingEvaluator fails after `after` successful evaluations (which deny).
type failingEvaluator struct {
	after int
	calls int
}

func (f *failingEvaluator) Evaluate(context.Context, map[string]any) (policy.Decision, error) {
	f.calls++
	if f.calls > f.after {
		return policy.Decision{Revision: "r1"}, errors.New("eval_conflict_error: complete rules must not produce multiple outputs")
	}
	return policy.Decision{Revision: "r1", Reason: "not this one"}, nil
}

type staticOwners []nixname.Flake

func (s staticOwners) Owners(context.Context, route.Request) ([]nixname.Flake, error) { return s, nil }

var ciSubject = &identity.Subject{
	Authenticated: true, Provider: "github", Kind: "ci", Org: "omnicorp", Repo: "omnicorp/app",
	Ref: "refs/heads/main", RefProtected: true, Via: "idp", Claims: map[string]any{"repository": "omnicorp/app"},
}

const secretToken = "eyJhbGciOiJSUzI1NiJ9.c2VjcmV0LXBheWxvYWQ.c2VjcmV0LXNpZ25hdHVyZQ"

func TestCheckerFailures(t *testing.T) {
	narinfo := "/omnicorp/app/" + testHash + ".narinfo"
	union := "/" + testHash + ".narinfo"
	twoOwners := staticOwners{{Org: "omnicorp", Name: "a"}, {Org: "omnicorp", Name: "b"}}
	tests := []struct {
		name       string
		checker    Checker
		req        *authv3.CheckRequest
		wantStatus int
		wantReason string // substring of the decision's reason or error
	}{
		{name: "policy evaluation error", req: authztest.CheckRequest("GET", narinfo, "Bearer "+secretToken),
			checker:    Checker{Verifier: tokenVerifier{token: secretToken, subject: ciSubject}, Policy: &failingEvaluator{}},
			wantStatus: 503, wantReason: "eval_conflict_error"},
		{name: "policy error on the second owner of a union read", req: authztest.CheckRequest("GET", union, "Bearer "+secretToken),
			checker:    Checker{Verifier: tokenVerifier{token: secretToken, subject: ciSubject}, Policy: &failingEvaluator{after: 1}, Owners: twoOwners},
			wantStatus: 503, wantReason: "via omnicorp/b"},
		{name: "union read without an owners lookup", req: authztest.CheckRequest("GET", union, "Bearer "+secretToken),
			checker:    Checker{Verifier: tokenVerifier{token: secretToken, subject: ciSubject}, Policy: &failingEvaluator{after: 9}},
			wantStatus: 503, wantReason: "no owners lookup"},
		{name: "no policy configured", req: authztest.CheckRequest("GET", narinfo, ""),
			checker:    Checker{},
			wantStatus: 503, wantReason: "no policy configured"},
		{name: "no verifier configured", req: authztest.CheckRequest("GET", narinfo, "Bearer "+secretToken),
			checker:    Checker{Policy: &failingEvaluator{after: 9}},
			wantStatus: 503, wantReason: "no token verifier"},
		{name: "verifier yields no subject", req: authztest.CheckRequest("GET", narinfo, "Bearer "+secretToken),
			checker:    Checker{Verifier: tokenVerifier{token: secretToken}, Policy: &failingEvaluator{after: 9}},
			wantStatus: 503, wantReason: "no authenticated subject"},
		{name: "verifier deadline", req: authztest.CheckRequest("GET", narinfo, "Bearer "+secretToken),
			checker:    Checker{Verifier: tokenVerifier{err: context.DeadlineExceeded}, Policy: &failingEvaluator{after: 9}},
			wantStatus: 503, wantReason: "deadline"},
		{name: "revoked subject", req: authztest.CheckRequest("GET", narinfo, "Bearer "+secretToken),
			checker: Checker{Verifier: tokenVerifier{token: secretToken, subject: ciSubject}, Policy: &failingEvaluator{after: 9},
				SubjectCheck: func(context.Context, *identity.Subject) error { return errors.New("token revoked") }},
			wantStatus: 401, wantReason: "token revoked"},
		{name: "empty check request", req: &authv3.CheckRequest{},
			checker:    Checker{Policy: &failingEvaluator{after: 9}},
			wantStatus: 400, wantReason: "malformed check request"},
		{name: "nil check request", req: nil,
			checker:    Checker{Policy: &failingEvaluator{after: 9}},
			wantStatus: 400, wantReason: "malformed check request"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var logs bytes.Buffer
			c := tt.checker
			c.Logger = slog.New(slog.NewJSONHandler(&logs, nil))
			resp := c.Check(context.Background(), tt.req)
			d := resp.GetDeniedResponse()
			if d == nil {
				t.Fatalf("want denied, got %v", resp)
			}
			if got := int(d.GetStatus().GetCode()); got != tt.wantStatus {
				t.Errorf("status %d, want %d", got, tt.wantStatus)
			}
			if tt.wantStatus == 503 && d.GetBody() != route.BodyUnavailable {
				t.Errorf("503 body %q leaks detail; want %q", d.GetBody(), route.BodyUnavailable)
			}
			var line map[string]any
			if err := json.Unmarshal(logs.Bytes(), &line); err != nil {
				t.Fatalf("decision log %q: %v", logs.String(), err)
			}
			if !strings.Contains(line["reason"].(string)+" "+stringField(line, "error"), tt.wantReason) {
				t.Errorf("decision log reason/error %v, want %q", line, tt.wantReason)
			}
			if tt.wantStatus == 503 && line["level"] != "ERROR" {
				t.Errorf("a 503 is logged at %v, want ERROR", line["level"])
			}
			if strings.Contains(logs.String(), "c2VjcmV0") {
				t.Error("the decision log contains the token")
			}
		})
	}
}

func stringField(m map[string]any, k string) string {
	s, _ := m[k].(string)
	return s
}

func TestRespondFailsClosed(t *testing.T) {
	for _, status := range []int{0, 200, 302, 700} {
		resp := Respond(Outcome{Allow: false, Status: status})
		d := resp.GetDeniedResponse()
		if d == nil || d.GetStatus().GetCode() != http.StatusServiceUnavailable || resp.GetStatus().GetCode() == 0 {
			t.Errorf("deny with status %d answered %v, want a 503 deny", status, resp)
		}
	}
}

func TestBuildInputDoesNotShareState(t *testing.T) {
	r := ParseCheckRequest(authztest.CheckRequest("GET", "/"+testHash+".narinfo", ""))
	owners := []nixname.Flake{{Org: "a", Name: "x"}, {Org: "b", Name: "y"}}
	in1 := BuildInput(r, ciSubject, owners)
	in2 := BuildInput(r, ciSubject, owners)
	SetFlake(in1, owners[0])
	if _, ok := in2["flake"]; ok {
		t.Fatal("inputs share state")
	}
	if got := in1["owners"].([]any); len(got) != 2 || got[0] != "a/x" || got[1] != "b/y" {
		t.Errorf("owners %v", got)
	}
	if in1["subject"].(map[string]any)["repo"] != "omnicorp/app" {
		t.Errorf("subject %v", in1["subject"])
	}
}

func TestSubjectHeaderIsSafe(t *testing.T) {
	tests := []struct {
		summary, want string
	}{
		{"github:omnicorp/app@refs/heads/main", "github:omnicorp/app@refs/heads/main"},
		{"oidc:eve\r\nx-flakegate-admin: yes", "oidc:eve??x-flakegate-admin: yes"},
		{"oidc:" + strings.Repeat("a", 300), "oidc:" + strings.Repeat("a", 251)},
		{"oidc:jos\u00e9", "oidc:jos\u00e9"},
	}
	for _, tt := range tests {
		resp := Respond(Outcome{Allow: true, Status: 200, SubjectSummary: tt.summary})
		if got := authztest.HeaderValue(resp.GetOkResponse().GetHeaders(), route.SubjectHeader); got != tt.want {
			t.Errorf("summary %q sent as %q, want %q", tt.summary, got, tt.want)
		}
	}
}

// TestTokenStatusMessages: a refused token answers 401 with a one-line
// body that says what to do; an issuer whose keys cannot be fetched
// answers 503 with Retry-After, not 401.
func TestTokenStatusMessages(t *testing.T) {
	narinfo := "/omnicorp/app/" + testHash + ".narinfo"
	longIss := identity.ClaimText("https://idp.example/" + strings.Repeat("\u00e9", 300) + "\r\n")
	tests := []struct {
		name       string
		err        error
		check      func(context.Context, *identity.Subject) error
		wantStatus int
		wantBody   []string // substrings
		wantRetry  string
	}{
		{name: "expired", err: &identity.TokenError{Reason: identity.ReasonExpired, Issuer: "github"}, wantStatus: 401,
			wantBody: []string{"invalid token: token expired (issuer github): run flakegate login (or, in CI, exchange a fresh job token"}},
		{name: "unknown issuer, long iss", err: &identity.TokenError{Reason: identity.ReasonUnknownIssuer, Detail: longIss}, wantStatus: 401,
			wantBody: []string{`unknown issuer: "https://idp.example/`, "…\": this cache does not trust that issuer"}},
		{name: "bad signature", err: &identity.TokenError{Reason: identity.ReasonBadSignature, Issuer: "github"}, wantStatus: 401,
			wantBody: []string{"signature invalid (issuer github): it was not signed by its issuer's published keys; get a fresh token"}},
		{name: "revoked", check: func(context.Context, *identity.Subject) error {
			return errors.New("token revoked: subject oidc:eve is revoked")
		},
			wantStatus: 401, wantBody: []string{"invalid token: token revoked: subject oidc:eve is revoked: do not retry with this token; ask the cache's administrators"}},
		{name: "issuer keys unavailable", err: fmt.Errorf("wrapped: %w", &identity.TokenError{Reason: identity.ReasonNoKeys, Issuer: "github"}),
			wantStatus: 503, wantRetry: "30", wantBody: []string{"identity provider keys unavailable (issuer github): the token cannot be verified right now, try again later"}},
		{name: "verifier failing", err: context.DeadlineExceeded, wantStatus: 503, wantRetry: "5", wantBody: []string{route.BodyUnavailable}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var logs bytes.Buffer
			c := Checker{Verifier: tokenVerifier{token: secretToken, subject: ciSubject, err: tt.err}, Policy: &failingEvaluator{after: 9},
				SubjectCheck: tt.check, Logger: slog.New(slog.NewJSONHandler(&logs, nil))}
			d := c.Check(context.Background(), authztest.CheckRequest("GET", narinfo, "Bearer "+secretToken)).GetDeniedResponse()
			if got := int(d.GetStatus().GetCode()); got != tt.wantStatus {
				t.Fatalf("status %d, want %d (body %q)", got, tt.wantStatus, d.GetBody())
			}
			body := d.GetBody()
			for _, want := range tt.wantBody {
				if !strings.Contains(body, want) {
					t.Errorf("body %q does not contain %q", body, want)
				}
			}
			if !strings.HasSuffix(body, "\n") || strings.Count(body, "\n") != 1 || strings.Contains(body, "\r") || !utf8.ValidString(body) || len(body) > 513 {
				t.Errorf("body %q (%d bytes) is not one short valid line", body, len(body))
			}
			if got := authztest.HeaderValue(d.GetHeaders(), "retry-after"); got != tt.wantRetry {
				t.Errorf("retry-after %q, want %q", got, tt.wantRetry)
			}
			if got := authztest.HeaderValue(d.GetHeaders(), "www-authenticate"); (got != "") != (tt.wantStatus == 401) {
				t.Errorf("www-authenticate %q with status %d", got, tt.wantStatus)
			}
			if tt.wantStatus == 503 && !strings.Contains(logs.String(), `"level":"ERROR"`) {
				t.Errorf("a 503 is not logged as an error: %s", logs.String())
			}
		})
	}
}
