package authz

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/flakegate/flakegate/internal/gate"
	"github.com/flakegate/flakegate/internal/identity"
	"github.com/flakegate/flakegate/internal/policy"
	"github.com/flakegate/flakegate/internal/route"
	"github.com/flakegate/flakegate/internal/testutil"
)

// TestInProcessMatchesGRPC runs every fixture's request through the
// embedded gate twice — asking the Checker over gRPC (the two-process
// embedded gate: NewGRPCServer, wire decoding, gate.Dial) and in-process
// (gate.InProcess, the single-host blob server) — and requires the same
// CheckResponse, the same answer to the client (status, headers, body)
// and, when allowed, the same request reaching the handler behind the gate
// (headers the Checker added or removed included).
func TestInProcessMatchesGRPC(t *testing.T) {
	engine := newTestEngine(t)
	statuses := map[int]int{}
	for _, file := range fixtureFiles(t) {
		fx, req := readFixture(t, file)
		hreq := httpRequestOf(req)
		if hreq == nil {
			continue // not expressible as an HTTP request (no method or path)
		}
		name := strings.TrimSuffix(file[strings.LastIndex(file, "/")+1:], ".json")
		t.Run(name, func(t *testing.T) {
			checker := func() *Checker {
				return &Checker{
					Verifier: &fixtureVerifier{t: t, fx: &fx},
					Policy:   engine,
					Owners:   &fixtureOwners{t: t, fx: &fx},
					Logger:   discardLogger(),
				}
			}
			viaGRPC, _ := bothWays(t, checker, hreq, 5*time.Second)
			statuses[viaGRPC.status]++
		})
	}
	// The comparison means something only if the table decides every way.
	for _, want := range []int{200, 401, 403, 404, 503} {
		if statuses[want] == 0 {
			t.Errorf("no fixture answered %d through the gate (answers: %v): the comparison does not cover it", want, statuses)
		}
	}
}

// bothWays sends r through the gate over gRPC and in-process, each with a
// Checker of its own from checker, and requires the same outcome.
func bothWays(t *testing.T, checker func() *Checker, hreq *http.Request, timeout time.Duration) (viaGRPC, inProcess gateResult) {
	t.Helper()
	viaGRPC = throughGate(t, grpcClient(t, checker()), hreq, timeout)
	inProcess = throughGate(t, gate.InProcess(&Server{Checker: checker()}), hreq, timeout)
	if !proto.Equal(viaGRPC.response, inProcess.response) {
		t.Errorf("CheckResponse differs:\n gRPC       %v\n in-process %v", viaGRPC.response, inProcess.response)
	}
	if viaGRPC.status != inProcess.status || viaGRPC.body != inProcess.body {
		t.Errorf("answer differs: gRPC %d %q, in-process %d %q", viaGRPC.status, viaGRPC.body, inProcess.status, inProcess.body)
	}
	if !equalHeaders(viaGRPC.header, inProcess.header) {
		t.Errorf("answer headers differ:\n gRPC       %v\n in-process %v", viaGRPC.header, inProcess.header)
	}
	if !equalHeaders(viaGRPC.upstream, inProcess.upstream) {
		t.Errorf("request behind the gate differs:\n gRPC       %v\n in-process %v", viaGRPC.upstream, inProcess.upstream)
	}
	return viaGRPC, inProcess
}

// slowEvaluator allows after sleeping, ignoring the context (as a policy
// evaluation or a JWKS fetch may).
type slowEvaluator struct{ sleep time.Duration }

func (e slowEvaluator) Evaluate(context.Context, map[string]any) (policy.Decision, error) {
	time.Sleep(e.sleep)
	return policy.Decision{Allow: true, Reason: "slow", Revision: "r"}, nil
}

// panickingEvaluator panics: a bug in the decision path.
type panickingEvaluator struct{}

func (panickingEvaluator) Evaluate(context.Context, map[string]any) (policy.Decision, error) {
	panic("evaluator bug")
}

// Requests that once went different ways in-process and over gRPC (the
// single-host review): each must now be answered alike, and as stated.
func TestInProcessMatchesGRPCEdgeCases(t *testing.T) {
	base := "/omnicorp/app/" + testHash + ".narinfo"
	longRef := *ciSubject
	longRef.Ref = "refs/heads/" + strings.Repeat("é", 200)
	for _, tc := range []struct {
		name    string
		subject *identity.Subject
		eval    policy.Evaluator
		timeout time.Duration
		edit    func(*http.Request)
		want    int
	}{
		{name: "invalid UTF-8 in the query", edit: func(r *http.Request) {
			r.URL.RawQuery, r.RequestURI = "\xff", base+"?\xff"
		}, want: http.StatusBadRequest},
		{name: "1 MiB of headers", edit: func(r *http.Request) {
			r.Header.Set("X-Junk", strings.Repeat("a", 1<<20-100))
		}, want: http.StatusRequestHeaderFieldsTooLarge},
		{name: "headers just under the bound", edit: func(r *http.Request) {
			r.Header.Set("X-Junk", strings.Repeat("a", gate.MaxHeaderBytes-1000))
		}, want: http.StatusOK},
		{name: "a subject summary longer than a header may carry, not ASCII", subject: &longRef, want: http.StatusOK},
		{name: "a Checker slower than the gate's timeout", eval: slowEvaluator{300 * time.Millisecond}, timeout: 50 * time.Millisecond,
			want: http.StatusServiceUnavailable},
	} {
		t.Run(tc.name, func(t *testing.T) {
			subject, eval, timeout := ciSubject, tc.eval, tc.timeout
			if tc.subject != nil {
				subject = tc.subject
			}
			if eval == nil {
				eval = slowEvaluator{}
			}
			if timeout == 0 {
				timeout = 5 * time.Second
			}
			checker := func() *Checker {
				return &Checker{Verifier: tokenVerifier{token: secretToken, subject: subject}, Policy: eval, Owners: staticOwners{}, Logger: discardLogger()}
			}
			r := httptest.NewRequest("GET", base, nil)
			r.Header.Set("Authorization", "Bearer "+secretToken)
			if tc.edit != nil {
				tc.edit(r)
			}
			viaGRPC, _ := bothWays(t, checker, r, timeout)
			if viaGRPC.status != tc.want {
				t.Errorf("answered %d %q, want %d", viaGRPC.status, viaGRPC.body, tc.want)
			}
			if sub := viaGRPC.upstream.Get(route.SubjectHeader); viaGRPC.status == http.StatusOK && (!utf8.ValidString(sub) || len(sub) > 256 || sub == "") {
				t.Errorf("subject header %q: want valid UTF-8, at most 256 bytes", sub)
			}
		})
	}
}

// A panic in the decision path is a 503 in-process, as a crashed authz
// process is for the two-process gate; the process keeps serving.
func TestInProcessPanicIsUnavailable(t *testing.T) {
	c := &Checker{Verifier: tokenVerifier{token: secretToken, subject: ciSubject}, Policy: panickingEvaluator{}, Owners: staticOwners{}, Logger: discardLogger()}
	r := httptest.NewRequest("GET", "/omnicorp/app/"+testHash+".narinfo", nil)
	r.Header.Set("Authorization", "Bearer "+secretToken)
	for range 2 {
		res := throughGate(t, gate.InProcess(&Server{Checker: c}), r, time.Second)
		if res.status != http.StatusServiceUnavailable || res.upstream != nil || strings.Contains(res.body, "goroutine") {
			t.Fatalf("panicking Checker: %d %q (upstream reached: %v), want 503 with a plain body", res.status, res.body, res.upstream != nil)
		}
	}
}

// gateResult is what one request through the gate gave.
type gateResult struct {
	response *authv3.CheckResponse // what the Checker answered
	status   int
	header   http.Header // the answer's headers, Date dropped
	body     string
	upstream http.Header // the request's headers behind the gate; nil when not reached
}

// throughGate sends r through a gate asking client within timeout, with a
// handler behind it that records the request and answers 200.
func throughGate(t *testing.T, client authv3.AuthorizationClient, r *http.Request, timeout time.Duration) gateResult {
	t.Helper()
	var res gateResult
	rec := &recordingClient{AuthorizationClient: client}
	g := gate.New(rec, gate.Options{Logger: discardLogger(), Timeout: timeout})
	h := g.Wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		res.upstream = r.Header.Clone()
		res.upstream.Del("X-Request-Id") // random per request
		_, _ = io.WriteString(w, "upstream\n")
	}))
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r.Clone(context.Background()))
	res.response, res.status, res.body = rec.last, w.Code, w.Body.String()
	res.header = w.Header().Clone()
	res.header.Del("Date")
	return res
}

// recordingClient keeps the last CheckResponse.
type recordingClient struct {
	authv3.AuthorizationClient
	mu   sync.Mutex
	last *authv3.CheckResponse
}

func (c *recordingClient) Check(ctx context.Context, req *authv3.CheckRequest, opts ...grpc.CallOption) (*authv3.CheckResponse, error) {
	resp, err := c.AuthorizationClient.Check(ctx, req, opts...)
	c.mu.Lock()
	c.last = resp
	c.mu.Unlock()
	return resp, err
}

// grpcClient serves checker over gRPC on loopback, as cmd/authz does, and
// returns a client connected as the gate connects (gate.Dial).
func grpcClient(t *testing.T, checker *Checker) authv3.AuthorizationClient {
	t.Helper()
	gs, hs := NewGRPCServer(checker)
	SetServing(hs, true)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = gs.Serve(ln) }()
	t.Cleanup(gs.Stop)
	conn, err := gate.Dial(context.Background(), ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return authv3.NewAuthorizationClient(conn)
}

// httpRequestOf is the HTTP request a fixture's CheckRequest describes
// (method, path, headers; pseudo-headers dropped), or nil when it has no
// method or path.
func httpRequestOf(req *authv3.CheckRequest) *http.Request {
	h := req.GetAttributes().GetRequest().GetHttp()
	if h.GetMethod() == "" || h.GetPath() == "" || !strings.HasPrefix(h.GetPath(), "/") {
		return nil
	}
	r := httptest.NewRequest(h.GetMethod(), "http://cache.example.com"+h.GetPath(), nil)
	for k, v := range h.GetHeaders() {
		if !strings.HasPrefix(k, ":") {
			r.Header.Add(k, v)
		}
	}
	for _, kv := range h.GetHeaderMap().GetHeaders() {
		v := kv.GetValue()
		if v == "" {
			v = string(kv.GetRawValue())
		}
		if !strings.HasPrefix(kv.GetKey(), ":") {
			r.Header.Add(kv.GetKey(), v)
		}
	}
	return r
}

func equalHeaders(a, b http.Header) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if !slices.Equal(v, b[k]) {
			return false
		}
	}
	return true
}

// BenchmarkGateCheck is one narinfo GET through the embedded gate (a
// handler behind it that answers 204), the Checker with a real verifier
// (token cached), the shipped-shape test policy and the decision log: asked
// in-process (single host) and over gRPC on a unix socket (two processes,
// both sides on this machine). The difference is what the single-host
// process saves per request.
func BenchmarkGateCheck(b *testing.B) {
	c, tok := benchChecker(b, staticOwners{{Org: "omnicorp", Name: "app"}})
	sock := "unix:" + b.TempDir() + "/authz.sock"
	ln, err := net.Listen("unix", strings.TrimPrefix(sock, "unix:"))
	if err != nil {
		b.Fatal(err)
	}
	gs, _ := NewGRPCServer(c)
	go func() { _ = gs.Serve(ln) }()
	b.Cleanup(gs.Stop)
	conn, err := gate.Dial(context.Background(), sock)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { conn.Close() })

	for _, bc := range []struct {
		name   string
		client authv3.AuthorizationClient
	}{
		{"in-process", gate.InProcess(&Server{Checker: c})},
		{"grpc-unix", authv3.NewAuthorizationClient(conn)},
	} {
		g := gate.New(bc.client, gate.Options{Logger: discardLogger()})
		h := g.Wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) }))
		req := httptest.NewRequest("GET", "/omnicorp/app/"+testHash+".narinfo", nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		req.Header.Set("User-Agent", "curl/8.5.0 Nix/2.24.10")
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			stop := testutil.ReportCPU(b)
			for b.Loop() {
				w := httptest.NewRecorder()
				h.ServeHTTP(w, req.Clone(context.Background()))
				if w.Code != http.StatusNoContent {
					b.Fatalf("status %d", w.Code)
				}
			}
			stop() // for gRPC: both sides
		})
	}
}
