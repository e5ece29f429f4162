package authz

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/flakegate/flakegate/internal/identity"
	"github.com/flakegate/flakegate/internal/nixname"
	"github.com/flakegate/flakegate/internal/policy"
	"github.com/flakegate/flakegate/internal/route"
)

var update = flag.Bool("update", false, "rewrite want_inputs and want_response of the fixtures from the current behaviour (review the diff!)")

// fixture is one testdata/fixtures/*.json case: a CheckRequest in, what the
// verifier and owners lookup yield, and the policy inputs and CheckResponse
// expected out. Policies are the real Rego of testdata/policy.
type fixture struct {
	Description string          `json:"description"`
	Request     json.RawMessage `json:"request"` // CheckRequest, protojson
	// WantToken is the raw token the verifier must be called with.
	WantToken string          `json:"want_token,omitempty"`
	Subject   *fixtureSubject `json:"subject,omitempty"`
	// VerifyError makes the verifier refuse the token: an identity Reason
	// (401), or "internal" for a failure that is not the token's (503).
	VerifyError string `json:"verify_error,omitempty"`
	// VerifyDetail and VerifyIssuer fill the refusal's Detail and Issuer.
	VerifyDetail string `json:"verify_detail,omitempty"`
	VerifyIssuer string `json:"verify_issuer,omitempty"`
	// Owners is what the owners lookup answers for a union read; nil means
	// the lookup must not be called.
	Owners      *[]string `json:"owners,omitempty"`
	OwnersError string    `json:"owners_error,omitempty"`

	WantInputs   []any           `json:"want_inputs"`   // every policy input evaluated, in order
	WantResponse json.RawMessage `json:"want_response"` // CheckResponse, protojson
}

type fixtureSubject struct {
	Authenticated bool           `json:"authenticated"`
	Issuer        string         `json:"issuer"`
	Provider      string         `json:"provider"`
	Kind          string         `json:"kind"`
	Org           string         `json:"org"`
	Repo          string         `json:"repo"`
	User          string         `json:"user"`
	Ref           string         `json:"ref"`
	RefProtected  bool           `json:"ref_protected"`
	Environment   string         `json:"environment"`
	Via           string         `json:"via"`
	Claims        map[string]any `json:"claims"`
}

func (s *fixtureSubject) subject() *identity.Subject {
	return &identity.Subject{
		Authenticated: s.Authenticated, Issuer: s.Issuer, Provider: s.Provider, Kind: s.Kind,
		Org: s.Org, Repo: s.Repo, User: s.User, Ref: s.Ref, RefProtected: s.RefProtected,
		Environment: s.Environment, Via: s.Via, Claims: s.Claims,
	}
}

// fixtureVerifier yields the fixture's subject or error, and checks the
// token it is given.
type fixtureVerifier struct {
	t     *testing.T
	fx    *fixture
	calls int
}

func (v *fixtureVerifier) Verify(_ context.Context, raw string) (*identity.Subject, error) {
	v.calls++
	if v.fx.WantToken != "" && raw != v.fx.WantToken {
		v.t.Errorf("verifier got token %q, want %q", raw, v.fx.WantToken)
	}
	switch {
	case v.fx.VerifyError == "internal":
		return nil, errors.New("issuer cache: internal failure")
	case v.fx.VerifyError != "":
		return nil, &identity.TokenError{Reason: identity.Reason(v.fx.VerifyError), Detail: v.fx.VerifyDetail, Issuer: v.fx.VerifyIssuer}
	case v.fx.Subject == nil:
		v.t.Fatalf("verifier called but the fixture has no subject")
	}
	return v.fx.Subject.subject(), nil
}

type fixtureOwners struct {
	t     *testing.T
	fx    *fixture
	calls int
}

func (o *fixtureOwners) Owners(_ context.Context, r route.Request) ([]nixname.Flake, error) {
	o.calls++
	if !r.Union() {
		o.t.Errorf("owners lookup for a non-union request %+v", r)
	}
	if o.fx.OwnersError != "" {
		return nil, errors.New(o.fx.OwnersError)
	}
	if o.fx.Owners == nil {
		o.t.Fatalf("owners lookup called but the fixture has no owners")
	}
	flakes := make([]nixname.Flake, 0, len(*o.fx.Owners))
	for _, s := range *o.fx.Owners {
		f, err := nixname.ParseFlake(s)
		if err != nil {
			o.t.Fatalf("fixture owner: %v", err)
		}
		flakes = append(flakes, f)
	}
	return flakes, nil
}

// recordingEvaluator evaluates with a real policy engine and keeps a JSON
// copy of every input (the checker reuses the map between owners).
type recordingEvaluator struct {
	policy.Evaluator
	t      *testing.T
	mu     sync.Mutex
	inputs []any
}

func (r *recordingEvaluator) Evaluate(ctx context.Context, in map[string]any) (policy.Decision, error) {
	r.mu.Lock()
	r.inputs = append(r.inputs, jsonValue(r.t, in))
	r.mu.Unlock()
	return r.Evaluator.Evaluate(ctx, in)
}

// jsonValue round-trips v through JSON so that it compares with a value
// decoded from a fixture.
func jsonValue(t testing.TB, v any) any {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatalf("marshal %T: %v", v, err)
	}
	var out any
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatalf("unmarshal: %v", err)
	}
	return out
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

var (
	testEngineOnce sync.Once
	testEngine     *policy.Engine
	testEngineErr  error
)

// newTestEngine loads testdata/policy with the real policy engine (shared:
// it is read-only here).
func newTestEngine(t testing.TB) *policy.Engine {
	t.Helper()
	testEngineOnce.Do(func() {
		testEngine, testEngineErr = policy.NewEngine("testdata/policy", policy.Options{Rescan: -1, Logger: discardLogger()})
	})
	if testEngineErr != nil {
		t.Fatalf("load testdata/policy: %v", testEngineErr)
	}
	return testEngine
}

func TestFixtures(t *testing.T) {
	files := fixtureFiles(t)
	engine := newTestEngine(t)
	for _, file := range files {
		name := strings.TrimSuffix(filepath.Base(file), ".json")
		t.Run(name, func(t *testing.T) {
			fx, req := readFixture(t, file)

			verifier := &fixtureVerifier{t: t, fx: &fx}
			owners := &fixtureOwners{t: t, fx: &fx}
			eval := &recordingEvaluator{Evaluator: engine, t: t}
			c := &Checker{Verifier: verifier, Policy: eval, Owners: owners, Logger: discardLogger()}
			got := c.Check(context.Background(), req)

			if (fx.Owners != nil || fx.OwnersError != "") != (owners.calls > 0) {
				t.Errorf("owners lookups: %d; fixture owners %v / error %q", owners.calls, fx.Owners, fx.OwnersError)
			}
			if fx.WantToken == "" && fx.VerifyError == "" && verifier.calls > 0 {
				t.Errorf("verifier called %d times for a request without a usable token", verifier.calls)
			}
			if fx.WantToken != "" && verifier.calls != 1 {
				t.Errorf("verifier called %d times, want once", verifier.calls)
			}

			// The invariants hold whatever the golden values say, also
			// when -update rewrites them: a regression cannot be blessed.
			checkResponseInvariants(t, &fx, got)
			if *update {
				if t.Failed() {
					t.Fatal("not updated: the response breaks an invariant")
				}
				fx.WantInputs = eval.inputs
				fx.WantResponse = marshalProto(t, got)
				writeFixture(t, file, &fx)
				return
			}
			if fx.WantResponse == nil {
				t.Fatal("fixture has no want_response (run with -update and review)")
			}
			wantInputs := jsonValue(t, append([]any{}, fx.WantInputs...))
			gotInputs := jsonValue(t, append([]any{}, eval.inputs...))
			if !reflect.DeepEqual(gotInputs, wantInputs) {
				t.Errorf("policy inputs:\n got %s\nwant %s", pretty(t, gotInputs), pretty(t, wantInputs))
			}
			var want authv3.CheckResponse
			if err := protojson.Unmarshal(fx.WantResponse, &want); err != nil {
				t.Fatalf("fixture want_response: %v", err)
			}
			if !proto.Equal(got, &want) {
				t.Errorf("response:\n got %s\nwant %s", marshalProto(t, got), marshalProto(t, &want))
			}
		})
	}
}

// fixtureFiles are the fixtures' paths.
func fixtureFiles(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob("testdata/fixtures/*.json")
	if err != nil || len(files) == 0 {
		t.Fatalf("no fixtures: %v", err)
	}
	return files
}

// readFixture reads one fixture and its CheckRequest.
func readFixture(t *testing.T, file string) (fixture, *authv3.CheckRequest) {
	t.Helper()
	raw, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var fx fixture
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&fx); err != nil {
		t.Fatalf("decode fixture: %v", err)
	}
	var req authv3.CheckRequest
	if err := protojson.Unmarshal(fx.Request, &req); err != nil {
		t.Fatalf("fixture request: %v", err)
	}
	return fx, &req
}

// checkResponseInvariants asserts the rules every response follows,
// independently of the golden values.
func checkResponseInvariants(t *testing.T, fx *fixture, resp *authv3.CheckResponse) {
	t.Helper()
	text := string(marshalProto(t, resp))
	if fx.WantToken != "" && strings.Contains(text, fx.WantToken) {
		t.Errorf("response contains the token %q", fx.WantToken)
	}
	var req authv3.CheckRequest
	_ = protojson.Unmarshal(fx.Request, &req)
	if ok := resp.GetOkResponse(); ok != nil {
		if resp.GetStatus().GetCode() != 0 {
			t.Errorf("ok response with gRPC status %d", resp.GetStatus().GetCode())
		}
		for _, v := range allowViolations(req.GetAttributes().GetRequest().GetHttp().GetPath(), ok) {
			t.Error(v)
		}
		return
	}
	d := resp.GetDeniedResponse()
	if d == nil {
		t.Fatalf("response is neither ok nor denied: %s", text)
	}
	if resp.GetStatus().GetCode() == 0 {
		t.Error("denied response with gRPC status OK")
	}
	status := int(d.GetStatus().GetCode())
	hasChallenge, hasRetryAfter := false, false
	for _, h := range d.GetHeaders() {
		switch h.GetHeader().GetKey() {
		case "www-authenticate":
			hasChallenge = true
		case "retry-after":
			hasRetryAfter = true
		}
	}
	if hasChallenge != (status == 401) {
		t.Errorf("status %d with www-authenticate=%v", status, hasChallenge)
	}
	if hasRetryAfter != (status == 503) {
		t.Errorf("status %d with retry-after=%v", status, hasRetryAfter)
	}
	if !strings.HasSuffix(d.GetBody(), "\n") || strings.Count(d.GetBody(), "\n") != 1 {
		t.Errorf("body %q is not one line", d.GetBody())
	}
	method := req.GetAttributes().GetRequest().GetHttp().GetMethod()
	if status == 404 && fx.Subject != nil && (method == "GET" || method == "HEAD") && d.GetBody() != route.BodyNotFound {
		t.Errorf("denied read answers %q, want the absent-object body %q", d.GetBody(), route.BodyNotFound)
	}
}

// allowViolations: an allowed request reaches the blob server with exactly
// one subject header, set over anything the client sent, and without the
// client's token (authorization removed, never added); only authz's own
// endpoints (/_flakegate/: the token exchange reads the token) keep it.
func allowViolations(path string, ok *authv3.OkHttpResponse) []string {
	var vs []string
	subjects := 0
	for _, h := range append(append([]*corev3.HeaderValueOption{}, ok.GetHeaders()...), ok.GetResponseHeadersToAdd()...) {
		switch strings.ToLower(h.GetHeader().GetKey()) {
		case route.SubjectHeader:
			subjects++
			if h.GetHeader().GetValue() == "" || h.GetAppendAction() != corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD {
				vs = append(vs, fmt.Sprintf("subject header %q with append action %v: want a value that overwrites the client's", h.GetHeader().GetValue(), h.GetAppendAction()))
			}
		case "authorization", "proxy-authorization":
			vs = append(vs, "allow adds the header "+h.GetHeader().GetKey())
		}
	}
	if subjects != 1 {
		vs = append(vs, fmt.Sprintf("allow sets %d %s headers, want exactly one", subjects, route.SubjectHeader))
	}
	removed := slices.ContainsFunc(ok.GetHeadersToRemove(), func(h string) bool { return strings.EqualFold(h, "authorization") })
	if !strings.HasPrefix(path, "/_flakegate/") && !removed {
		vs = append(vs, "allow of "+path+" forwards the client's authorization header upstream")
	}
	return vs
}

// The invariants catch what a blessed golden file would not.
func TestAllowInvariantsCatchRegressions(t *testing.T) {
	subject := func(v string, a corev3.HeaderValueOption_HeaderAppendAction) *corev3.HeaderValueOption {
		return &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: route.SubjectHeader, Value: v}, AppendAction: a}
	}
	overwrite := corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD
	good := &authv3.OkHttpResponse{Headers: []*corev3.HeaderValueOption{subject("oidc:alice", overwrite)}, HeadersToRemove: []string{"authorization"}}
	if vs := allowViolations("/omnicorp/app/nix-cache-info", good); len(vs) != 0 {
		t.Fatalf("a good allow: %v", vs)
	}
	for name, c := range map[string]struct {
		path string
		ok   *authv3.OkHttpResponse
		want string
	}{
		"token forwarded": {"/omnicorp/app/nix-cache-info", &authv3.OkHttpResponse{Headers: good.Headers}, "forwards the client's authorization"},
		"no subject":      {"/omnicorp/app/nix-cache-info", &authv3.OkHttpResponse{HeadersToRemove: []string{"authorization"}}, "sets 0 x-flakegate-subject"},
		"two subjects": {"/x/y/nix-cache-info", &authv3.OkHttpResponse{Headers: []*corev3.HeaderValueOption{subject("a", overwrite), subject("b", overwrite)},
			HeadersToRemove: []string{"authorization"}}, "sets 2 x-flakegate-subject"},
		"appended subject": {"/x/y/nix-cache-info", &authv3.OkHttpResponse{Headers: []*corev3.HeaderValueOption{subject("a", corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD)},
			HeadersToRemove: []string{"authorization"}}, "want a value that overwrites"},
		"authorization added": {"/_flakegate/token", &authv3.OkHttpResponse{Headers: []*corev3.HeaderValueOption{subject("a", overwrite),
			{Header: &corev3.HeaderValue{Key: "Authorization", Value: "Bearer x"}}}}, "adds the header Authorization"},
	} {
		vs := allowViolations(c.path, c.ok)
		if !slices.ContainsFunc(vs, func(v string) bool { return strings.Contains(v, c.want) }) {
			t.Errorf("%s: violations %v, want one with %q", name, vs, c.want)
		}
	}
}

func marshalProto(t *testing.T, m proto.Message) json.RawMessage {
	t.Helper()
	b, err := protojson.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := json.Indent(&buf, b, "", "  "); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func pretty(t *testing.T, v any) string {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func writeFixture(t *testing.T, file string, fx *fixture) {
	t.Helper()
	if fx.WantInputs == nil {
		fx.WantInputs = []any{}
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(fx); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(file, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}
