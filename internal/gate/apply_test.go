package gate

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"reflect"
	"strings"
	"testing"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/encoding/protojson"
)

// applyCase is one entry of testdata/apply_cases.json: a request, the
// CheckResponse the authorization service answers (protojson), and what
// Envoy would make of it.
type applyCase struct {
	Name    string `json:"name"`
	Request struct {
		Method  string              `json:"method"`
		Path    string              `json:"path"`
		Headers map[string][]string `json:"headers"`
	} `json:"request"`
	Response json.RawMessage `json:"response"`
	Want     struct {
		Outcome              string              `json:"outcome"`
		Status               int                 `json:"status"`
		Body                 *string             `json:"body"`
		Host                 string              `json:"host"`
		RequestHeaders       map[string][]string `json:"request_headers"`
		RequestHeadersAbsent []string            `json:"request_headers_absent"`
		ResponseHeaders      map[string][]string `json:"response_headers"`
		RawQuery             *string             `json:"raw_query"`
		RequestURI           string              `json:"request_uri"`
	} `json:"want"`
}

func loadApplyCases(t *testing.T) []applyCase {
	t.Helper()
	raw, err := os.ReadFile("testdata/apply_cases.json")
	if err != nil {
		t.Fatal(err)
	}
	var cases []applyCase
	if err := json.Unmarshal(raw, &cases); err != nil {
		t.Fatalf("parse apply_cases.json: %v", err)
	}
	if len(cases) == 0 {
		t.Fatal("no cases in apply_cases.json")
	}
	return cases
}

func TestApplyFixtures(t *testing.T) {
	for _, tc := range loadApplyCases(t) {
		t.Run(tc.Name, func(t *testing.T) {
			var resp authv3.CheckResponse
			if err := protojson.Unmarshal(tc.Response, &resp); err != nil {
				t.Fatalf("response fixture: %v", err)
			}
			r := httptest.NewRequest(tc.Request.Method, tc.Request.Path, nil)
			for k, vs := range tc.Request.Headers {
				for _, v := range vs {
					r.Header.Add(k, v)
				}
			}
			rec := httptest.NewRecorder()

			var seen *http.Request
			upstream := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				seen = r
				w.Header().Set("X-Up", "1")
				_, _ = io.WriteString(w, "upstream")
			})
			w2, out := apply(&resp, rec, r)
			if out == outcomeOK {
				upstream.ServeHTTP(w2, r)
			}

			if out.String() != tc.Want.Outcome {
				t.Fatalf("outcome = %s, want %s", out, tc.Want.Outcome)
			}
			if (seen != nil) != (out == outcomeOK) {
				t.Fatalf("upstream called = %v for outcome %s", seen != nil, out)
			}
			if rec.Code != tc.Want.Status {
				t.Errorf("status = %d, want %d", rec.Code, tc.Want.Status)
			}
			if tc.Want.Body != nil && rec.Body.String() != *tc.Want.Body {
				t.Errorf("body = %q, want %q", rec.Body.String(), *tc.Want.Body)
			}
			for k, want := range tc.Want.ResponseHeaders {
				if got := rec.Result().Header.Values(k); !reflect.DeepEqual(got, want) {
					t.Errorf("response header %s = %q, want %q", k, got, want)
				}
			}
			if seen == nil {
				return
			}
			for k, want := range tc.Want.RequestHeaders {
				if got := seen.Header.Values(k); !reflect.DeepEqual(got, want) {
					t.Errorf("upstream request header %s = %q, want %q", k, got, want)
				}
			}
			for _, k := range tc.Want.RequestHeadersAbsent {
				if v, ok := seen.Header[http.CanonicalHeaderKey(k)]; ok {
					t.Errorf("upstream request header %s = %q, want it absent", k, v)
				}
			}
			for k := range seen.Header {
				if strings.ContainsAny(k, "\r\n :") {
					t.Errorf("invalid header name %q reached the upstream", k)
				}
			}
			if tc.Want.Host != "" && seen.Host != tc.Want.Host {
				t.Errorf("upstream Host = %q, want %q", seen.Host, tc.Want.Host)
			}
			if tc.Want.RawQuery != nil && seen.URL.RawQuery != *tc.Want.RawQuery {
				t.Errorf("upstream query = %q, want %q", seen.URL.RawQuery, *tc.Want.RawQuery)
			}
			if tc.Want.RequestURI != "" && seen.RequestURI != tc.Want.RequestURI {
				t.Errorf("upstream RequestURI = %q, want %q", seen.RequestURI, tc.Want.RequestURI)
			}
		})
	}
}

// TestHeaderWriterKeepsReaderFrom checks that response_headers_to_add do
// not cost the blob server its sendfile path: the wrapper still offers
// io.ReaderFrom and http.ResponseController can reach the real writer.
func TestHeaderWriterKeepsReaderFrom(t *testing.T) {
	var resp authv3.CheckResponse
	if err := protojson.Unmarshal([]byte(`{"okResponse":{"responseHeadersToAdd":[{"header":{"key":"x-a","value":"1"}}]}}`), &resp); err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	w2, out := apply(&resp, rec, httptest.NewRequest("GET", "/x", nil))
	if out != outcomeOK {
		t.Fatalf("outcome %s", out)
	}
	rf, ok := w2.(io.ReaderFrom)
	if !ok {
		t.Fatal("wrapped writer lost io.ReaderFrom")
	}
	n, err := rf.ReadFrom(strings.NewReader("nar bytes"))
	if err != nil || n != 9 {
		t.Fatalf("ReadFrom = %d, %v", n, err)
	}
	if got := rec.Header().Get("X-A"); got != "1" {
		t.Errorf("X-A = %q after ReadFrom, want 1", got)
	}
	if rec.Body.String() != "nar bytes" {
		t.Errorf("body %q", rec.Body.String())
	}
	if err := http.NewResponseController(w2).Flush(); err != nil {
		t.Errorf("Flush through the wrapper: %v", err)
	}
}

// clientFunc is an in-process AuthorizationClient.
type clientFunc func(context.Context, *authv3.CheckRequest) (*authv3.CheckResponse, error)

func (f clientFunc) Check(ctx context.Context, in *authv3.CheckRequest, _ ...grpc.CallOption) (*authv3.CheckResponse, error) {
	return f(ctx, in)
}

// TestResponseHeadersWhenHandlerWritesNothing: Envoy adds
// response_headers_to_add to every response, also an implicit empty 200.
func TestResponseHeadersWhenHandlerWritesNothing(t *testing.T) {
	var resp authv3.CheckResponse
	if err := protojson.Unmarshal([]byte(`{"okResponse":{"responseHeadersToAdd":[{"header":{"key":"x-audit","value":"1"}}]}}`), &resp); err != nil {
		t.Fatal(err)
	}
	g := New(clientFunc(func(context.Context, *authv3.CheckRequest) (*authv3.CheckResponse, error) { return &resp, nil }), Options{})
	srv := httptest.NewServer(g.Wrap(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {})))
	defer srv.Close()
	res, err := srv.Client().Get(srv.URL + "/x")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 200 || res.Header.Get("X-Audit") != "1" {
		t.Errorf("status %d, X-Audit %q: want 200 with the header", res.StatusCode, res.Header.Get("X-Audit"))
	}
}

// TestAppendedHeaderLeavesTheHandlersValuesAlone: the cache server sets
// some response header values as shared, never-modified slices (one per
// process, for every narinfo and 404: cacheserver's headerNarInfoCache…).
// A response_headers_to_add with the deprecated append=true joins its
// value to the handler's: it must do so in a new slice, not in the
// handler's, or every later response of the process carries the value
// (once more per request) and requests race on it.
func TestAppendedHeaderLeavesTheHandlersValuesAlone(t *testing.T) {
	var resp authv3.CheckResponse
	if err := protojson.Unmarshal([]byte(`{"okResponse":{"responseHeadersToAdd":[{"header":{"key":"cache-control","value":"private"},"append":true}]}}`), &resp); err != nil {
		t.Fatal(err)
	}
	shared := []string{"public, max-age=3600"}
	g := New(clientFunc(func(context.Context, *authv3.CheckRequest) (*authv3.CheckResponse, error) { return &resp, nil }), Options{})
	srv := httptest.NewServer(g.Wrap(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header()["Cache-Control"] = shared
		io.WriteString(w, "narinfo")
	})))
	defer srv.Close()
	for range 3 {
		res, err := srv.Client().Get(srv.URL + "/x")
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if got := res.Header.Values("Cache-Control"); !reflect.DeepEqual(got, []string{"public, max-age=3600,private"}) {
			t.Errorf("Cache-Control %q, want the handler's value with private appended once", got)
		}
	}
	if !reflect.DeepEqual(shared, []string{"public, max-age=3600"}) {
		t.Errorf("the handler's shared header value became %q", shared)
	}
}
