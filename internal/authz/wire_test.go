package authz

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/flakegate/flakegate/internal/identity"
	"github.com/flakegate/flakegate/internal/policy"
	"github.com/flakegate/flakegate/internal/serve"
)

// fixtureRequests are the wire bytes of every fixture's CheckRequest.
func fixtureRequests(t testing.TB) map[string][]byte {
	t.Helper()
	files, err := filepath.Glob("testdata/fixtures/*.json")
	if err != nil || len(files) == 0 {
		t.Fatalf("no fixtures: %v", err)
	}
	out := map[string][]byte{}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var fx fixture
		if err := json.Unmarshal(data, &fx); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		var req authv3.CheckRequest
		if err := protojson.Unmarshal(fx.Request, &req); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		b, err := proto.Marshal(&req)
		if err != nil {
			t.Fatal(err)
		}
		out[filepath.Base(f)] = b
	}
	return out
}

// compareWire checks the wire decoder against proto.Unmarshal +
// ParseCheckRequest on the same bytes: when proto accepts the bytes, the
// decoder must accept them and read the same request; the decoder may
// only refuse bytes proto refuses too. It reports whether proto accepted.
func compareWire(t *testing.T, b []byte) bool {
	t.Helper()
	var req authv3.CheckRequest
	protoErr := proto.Unmarshal(b, &req)
	var w wireCheckRequest
	wireErr := w.decode(b)
	switch {
	case protoErr == nil && wireErr != nil:
		t.Fatalf("wire decoder refused what proto accepts: %v\nbytes %x", wireErr, b)
	case protoErr == nil:
		if got, want := w.request(), ParseCheckRequest(&req); !reflect.DeepEqual(got, want) {
			t.Fatalf("wire decoder read\n%+v\nproto + ParseCheckRequest read\n%+v\nbytes %x", got, want, b)
		}
	}
	return protoErr == nil
}

func TestWireCheckRequestFixtures(t *testing.T) {
	for name, b := range fixtureRequests(t) {
		t.Run(name, func(t *testing.T) {
			if !compareWire(t, b) {
				t.Fatal("fixture does not decode")
			}
		})
	}
}

// wireEdgeCase is a hand-made wire shape Envoy does not send but a
// message may hold; valid says whether proto.Unmarshal accepts it.
type wireEdgeCase struct {
	name     string
	b        []byte
	wantAuth string
	valid    bool
}

func wireEdgeCases() []wireEdgeCase {
	str := func(num protowire.Number, s string) []byte {
		return protowire.AppendString(protowire.AppendTag(nil, num, protowire.BytesType), s)
	}
	msg := func(num protowire.Number, parts ...[]byte) []byte {
		var body []byte
		for _, p := range parts {
			body = append(body, p...)
		}
		return protowire.AppendBytes(protowire.AppendTag(nil, num, protowire.BytesType), body)
	}
	varint := func(num protowire.Number, v uint64) []byte {
		return protowire.AppendVarint(protowire.AppendTag(nil, num, protowire.VarintType), v)
	}
	// wrap puts HttpRequest fields into CheckRequest.attributes.request.http.
	wrap := func(http ...[]byte) []byte {
		return msg(fieldCheckAttributes, msg(fieldAttrRequest, msg(fieldRequestHTTP, http...)))
	}
	entry := func(k, v string) []byte {
		return msg(fieldHTTPHeaders, str(fieldHeaderKey, k), str(fieldHeaderValue, v))
	}
	hv := func(k, v, raw string) []byte {
		parts := [][]byte{str(fieldHeaderKey, k)}
		if v != "" {
			parts = append(parts, str(fieldHeaderValue, v))
		}
		if raw != "" {
			parts = append(parts, protowire.AppendBytes(protowire.AppendTag(nil, fieldHeaderRawValue, protowire.BytesType), []byte(raw)))
		}
		return msg(fieldHeaderMapHeaders, parts...)
	}
	get := str(fieldHTTPMethod, "GET")
	path := str(fieldHTTPPath, "/omnicorp/app/0c6kzph7l0dcbfmjap64f0czdafn3b7x.narinfo")
	cat := func(parts ...[]byte) []byte {
		var b []byte
		for _, p := range parts {
			b = append(b, p...)
		}
		return b
	}
	return []wireEdgeCase{
		{"empty message", nil, "", true},
		{"attributes sent twice are merged", cat(wrap(get), wrap(path, entry("authorization", "Bearer a"))), "Bearer a", true},
		{"last method wins", wrap(str(fieldHTTPMethod, "PUT"), get, path), "", true},
		{"last map entry for a key wins", wrap(get, path, entry("authorization", "Bearer a"), entry("authorization", "Bearer b")), "Bearer b", true},
		{"map entry without value is empty", wrap(get, path, msg(fieldHTTPHeaders, str(fieldHeaderKey, "authorization"))), "", true},
		{"map wins over header_map", wrap(get, path, msg(fieldHTTPHeaderMap, hv("authorization", "", "Bearer raw")), entry("authorization", "Bearer map")), "Bearer map", true},
		{"header_map entries joined in order, any case", wrap(get, path, msg(fieldHTTPHeaderMap, hv("Authorization", "", "Bearer a")), msg(fieldHTTPHeaderMap, hv("authorization", "Bearer b", "ignored"))), "Bearer a,Bearer b", true},
		{"header_map value before raw_value", wrap(get, path, msg(fieldHTTPHeaderMap, hv("authorization", "v", "raw"))), "v", true},
		{"wrong wire type for method is an unknown field", wrap(varint(fieldHTTPMethod, 7), path), "", true},
		{"wrong wire type for attributes is an unknown field", cat(varint(fieldCheckAttributes, 1), wrap(get, path)), "", true},
		{"unknown fields and groups are skipped", cat(varint(99, 1), protowire.AppendTag(nil, 50, protowire.StartGroupType), varint(1, 2), protowire.AppendTag(nil, 50, protowire.EndGroupType), wrap(get, path)), "", true},
		{"invalid UTF-8 in the method", wrap(str(fieldHTTPMethod, "G\xffT"), path), "", false},
		{"invalid UTF-8 in a header name", wrap(get, path, entry("x-\xff", "v")), "", false},
		{"invalid UTF-8 in a header_map value", wrap(get, path, msg(fieldHTTPHeaderMap, hv("x", "\xff", ""))), "", false},
		{"truncated", wrap(get, path)[:10], "", false},
		{"field number zero", cat(varint(0, 1)), "", false},
		{"stray end group", protowire.AppendTag(nil, 5, protowire.EndGroupType), "", false},
	}
}

func TestWireCheckRequestEdgeCases(t *testing.T) {
	for _, tc := range wireEdgeCases() {
		t.Run(tc.name, func(t *testing.T) {
			if got := compareWire(t, tc.b); got != tc.valid {
				t.Fatalf("proto accepts the bytes: %v, want %v (the case is mis-built)", got, tc.valid)
			}
			var w wireCheckRequest
			err := w.decode(tc.b)
			if (err == nil) != tc.valid {
				t.Fatalf("decode error = %v, want valid=%v", err, tc.valid)
			}
			if r := w.request(); tc.wantAuth != "" && (r.RouteErr != nil || r.Authorization != tc.wantAuth) {
				t.Errorf("authorization = %q (route error %v), want %q", r.Authorization, r.RouteErr, tc.wantAuth)
			}
		})
	}
}

// FuzzWireCheckRequest holds the wire decoder to proto.Unmarshal +
// ParseCheckRequest on arbitrary bytes (seeded with every fixture).
func FuzzWireCheckRequest(f *testing.F) {
	for _, b := range fixtureRequests(f) {
		f.Add(b)
	}
	for _, tc := range wireEdgeCases() {
		f.Add(tc.b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		compareWire(t, b)
	})
}

// TestWireCheckOverGRPC sends both header shapes through the server
// NewGRPCServer builds (checkCodec and the Check handler) and checks the
// decision, and that the health service (proto codec) still answers.
func TestWireCheckOverGRPC(t *testing.T) {
	c := &Checker{
		Verifier: oneTokenVerifier{"tok-alice": {Authenticated: true, Issuer: "https://idp", Provider: "oidc", Kind: "user", Org: "omnicorp", User: "alice", Via: "idp"}},
		Policy:   allowAuthenticated{},
		Logger:   discardLogger(),
	}
	ln, err := serve.Listen("unix:" + filepath.Join(t.TempDir(), "authz.sock"))
	if err != nil {
		t.Fatal(err)
	}
	gs, hs := NewGRPCServer(c)
	SetServing(hs, true)
	go gs.Serve(ln)
	t.Cleanup(gs.Stop)
	conn, err := grpc.NewClient("unix:"+ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	client := authv3.NewAuthorizationClient(conn)
	path := "/omnicorp/app/" + testHash + ".narinfo"
	for _, tc := range []struct {
		name string
		req  *authv3.CheckRequest
		want int32 // HTTP status of the answer (200: OK response)
	}{
		{"headers map, valid token", envoyCheckRequest("GET", path, "Bearer tok-alice", false), 200},
		{"header_map, valid token", envoyCheckRequest("GET", path, "Bearer tok-alice", true), 200},
		{"header_map, other token", envoyCheckRequest("GET", path, "Bearer tok-bob", true), 401},
		{"header_map, two Authorization headers", func() *authv3.CheckRequest {
			r := envoyCheckRequest("GET", path, "Bearer tok-alice", true)
			hm := r.GetAttributes().GetRequest().GetHttp().GetHeaderMap()
			hm.Headers = append(hm.Headers, &corev3.HeaderValue{Key: "authorization", RawValue: []byte("Bearer tok-bob")})
			return r
		}(), 401},
		{"no method or path", &authv3.CheckRequest{}, 400},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := client.Check(context.Background(), tc.req)
			if err != nil {
				t.Fatal(err)
			}
			got := int32(200)
			if d := resp.GetDeniedResponse(); d != nil {
				got = int32(d.GetStatus().GetCode())
			}
			if got != tc.want {
				t.Errorf("status %d, want %d (response %v)", got, tc.want, resp)
			}
		})
	}
}

// oneTokenVerifier knows some tokens; every other one is refused (401).
type oneTokenVerifier map[string]*identity.Subject

func (v oneTokenVerifier) Verify(_ context.Context, raw string) (*identity.Subject, error) {
	if s, ok := v[raw]; ok {
		return s, nil
	}
	return nil, &identity.TokenError{Reason: identity.ReasonUnknownIssuer}
}

// allowAuthenticated allows every authenticated subject.
type allowAuthenticated struct{}

func (allowAuthenticated) Evaluate(_ context.Context, in map[string]any) (policy.Decision, error) {
	sub, _ := in["subject"].(map[string]any)
	return policy.Decision{Allow: sub["authenticated"] == true}, nil
}
