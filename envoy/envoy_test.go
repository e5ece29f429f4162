package envoy

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	streamv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/stream/v3"
	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	headermutationv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/header_mutation/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	upstreamhttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"
	"sigs.k8s.io/yaml"
)

// Every extension type envoy.yaml packs in an Any. Naming them here links
// their descriptors in, so protojson can resolve the type URLs; a type that
// is used but missing from this list makes the decode fail.
var extensionTypes = []proto.Message{
	&hcmv3.HttpConnectionManager{},
	&headermutationv3.HeaderMutation{},
	&extauthzv3.ExtAuthz{},
	&extauthzv3.ExtAuthzPerRoute{},
	&routerv3.Router{},
	&upstreamhttpv3.HttpProtocolOptions{},
	&streamv3.StdoutAccessLog{},
}

type validator interface{ ValidateAll() error }

// loadBootstrap decodes envoy.yaml strictly (unknown fields are errors) and
// validates the Bootstrap with protoc-gen-validate's rules.
func loadBootstrap(t *testing.T) *bootstrapv3.Bootstrap {
	t.Helper()
	js, err := yaml.YAMLToJSON(Bootstrap)
	if err != nil {
		t.Fatalf("envoy.yaml is not valid YAML: %v", err)
	}
	var bs bootstrapv3.Bootstrap
	if err := (protojson.UnmarshalOptions{}).Unmarshal(js, &bs); err != nil {
		t.Fatalf("envoy.yaml does not decode into envoy.config.bootstrap.v3.Bootstrap: %v", err)
	}
	if err := bs.ValidateAll(); err != nil {
		t.Fatalf("Bootstrap validation: %v", err)
	}
	return &bs
}

// walkAnys calls visit for every Any in m, at any depth (lists, maps and
// the contents of Anys included), with a readable field path.
func walkAnys(m protoreflect.Message, path string, visit func(path string, a *anypb.Any) proto.Message) {
	if a, ok := m.Interface().(*anypb.Any); ok {
		inner := visit(path, a)
		if inner != nil {
			walkAnys(inner.ProtoReflect(), path+"<"+a.GetTypeUrl()+">", visit)
		}
		return
	}
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		p := path + "." + string(fd.Name())
		switch {
		case fd.IsList() && fd.Message() != nil:
			for i := 0; i < v.List().Len(); i++ {
				walkAnys(v.List().Get(i).Message(), fmt.Sprintf("%s[%d]", p, i), visit)
			}
		case fd.IsMap() && fd.MapValue().Message() != nil:
			v.Map().Range(func(k protoreflect.MapKey, mv protoreflect.Value) bool {
				walkAnys(mv.Message(), fmt.Sprintf("%s[%s]", p, k.String()), visit)
				return true
			})
		case !fd.IsList() && !fd.IsMap() && fd.Message() != nil:
			walkAnys(v.Message(), p, visit)
		}
		return true
	})
}

// TestBootstrapValid: envoy.yaml decodes into a Bootstrap, and it and every
// message inside an Any pass validation.
func TestBootstrapValid(t *testing.T) {
	if len(extensionTypes) == 0 {
		t.Fatal("no extension types linked")
	}
	bs := loadBootstrap(t)
	seen := map[string]int{}
	walkAnys(bs.ProtoReflect(), "bootstrap", func(path string, a *anypb.Any) proto.Message {
		inner, err := a.UnmarshalNew()
		if err != nil {
			t.Errorf("%s: cannot unpack %s: %v", path, a.GetTypeUrl(), err)
			return nil
		}
		v, ok := inner.(validator)
		if !ok {
			t.Errorf("%s: %s has no validation rules", path, a.GetTypeUrl())
			return inner
		}
		if err := v.ValidateAll(); err != nil {
			t.Errorf("%s: %v", path, err)
		}
		seen[string(inner.ProtoReflect().Descriptor().FullName())]++
		return inner
	})
	for _, want := range extensionTypes {
		name := string(want.ProtoReflect().Descriptor().FullName())
		if name == "envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute" {
			continue // linked for completeness; envoy.yaml needs no per-route override
		}
		if seen[name] == 0 {
			t.Errorf("no %s found in envoy.yaml (walker broken or config changed)", name)
		}
	}
}

// A broken config must fail the walk: the test above is not vacuous.
func TestWalkerCatchesInvalidAny(t *testing.T) {
	bad, err := anypb.New(&extauthzv3.ExtAuthz{StatusOnError: &typev3.HttpStatus{Code: 42}})
	if err != nil {
		t.Fatal(err)
	}
	f := &hcmv3.HttpFilter{Name: "x", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: bad}}
	var errs []error
	walkAnys(f.ProtoReflect(), "f", func(_ string, a *anypb.Any) proto.Message {
		inner, err := a.UnmarshalNew()
		if err != nil {
			errs = append(errs, err)
			return nil
		}
		if err := inner.(validator).ValidateAll(); err != nil {
			errs = append(errs, err)
		}
		return inner
	})
	if len(errs) == 0 {
		t.Fatal("an ext_authz status_on_error of 42 passed validation")
	}
}

// hcm returns the single HTTP connection manager of the config.
func hcm(t *testing.T, bs *bootstrapv3.Bootstrap) *hcmv3.HttpConnectionManager {
	t.Helper()
	ls := bs.GetStaticResources().GetListeners()
	if len(ls) != 1 || len(ls[0].GetFilterChains()) != 1 || len(ls[0].GetFilterChains()[0].GetFilters()) != 1 {
		t.Fatalf("want one listener with one filter chain and one network filter")
	}
	var m hcmv3.HttpConnectionManager
	if err := ls[0].GetFilterChains()[0].GetFilters()[0].GetTypedConfig().UnmarshalTo(&m); err != nil {
		t.Fatalf("network filter is not an HttpConnectionManager: %v", err)
	}
	return &m
}

func TestBootstrapSettings(t *testing.T) {
	bs := loadBootstrap(t)
	m := hcm(t, bs)

	if a := bs.GetAdmin().GetAddress().GetSocketAddress().GetAddress(); a != "127.0.0.1" {
		t.Errorf("admin listens on %q, want loopback only", a)
	}

	// Connection manager: canonical paths, edge behaviour, no whole-request deadline.
	if !m.GetUseRemoteAddress().GetValue() {
		t.Error("use_remote_address is not true")
	}
	if !m.GetNormalizePath().GetValue() || !m.GetMergeSlashes() {
		t.Error("normalize_path and merge_slashes must be on")
	}
	if m.GetPathWithEscapedSlashesAction() != hcmv3.HttpConnectionManager_REJECT_REQUEST {
		t.Errorf("path_with_escaped_slashes_action = %v, want REJECT_REQUEST", m.GetPathWithEscapedSlashesAction())
	}
	if d := m.GetRequestTimeout(); d != nil && d.AsDuration() != 0 {
		t.Errorf("request_timeout = %v: a multi-GB upload would be cut", d.AsDuration())
	}
	if d := m.GetStreamIdleTimeout().AsDuration(); d < time.Minute {
		t.Errorf("stream_idle_timeout = %v, want at least a minute (and set)", d)
	}
	if d := m.GetCommonHttpProtocolOptions().GetIdleTimeout().AsDuration(); d <= 0 {
		t.Error("connection idle_timeout not set")
	}
	if m.GetCommonHttpProtocolOptions().GetHeadersWithUnderscoresAction() == corev3.HttpProtocolOptions_ALLOW {
		t.Error("headers with underscores are allowed: x_flakegate_subject could pass for x-flakegate-subject upstream")
	}
	for _, al := range m.GetAccessLog() {
		if strings.Contains(strings.ToLower(protojson.Format(al)), "authorization") {
			t.Error("the access log records the Authorization header (the token)")
		}
	}

	// Filter order: strip, authorize, route.
	filters := m.GetHttpFilters()
	var names []string
	for _, f := range filters {
		names = append(names, f.GetName())
	}
	want := []string{"envoy.filters.http.header_mutation", "envoy.filters.http.ext_authz", "envoy.filters.http.router"}
	if strings.Join(names, ",") != strings.Join(want, ",") {
		t.Fatalf("http filters = %v, want %v (stripping must come before ext_authz, router last)", names, want)
	}

	// 1. x-flakegate-* stripped from every request.
	var hm headermutationv3.HeaderMutation
	if err := filters[0].GetTypedConfig().UnmarshalTo(&hm); err != nil {
		t.Fatal(err)
	}
	stripped := false
	for _, mut := range hm.GetMutations().GetRequestMutations() {
		km := mut.GetRemoveOnMatch().GetKeyMatcher()
		if km.GetPrefix() == "x-flakegate-" && km.GetIgnoreCase() {
			stripped = true
		}
	}
	if !stripped {
		t.Error("no request mutation removes headers with the prefix x-flakegate- (ignoring case)")
	}
	if len(hm.GetMutations().GetResponseMutations()) != 0 {
		t.Error("unexpected response mutations")
	}

	// 2. ext_authz: gRPC v3 to cluster authz, fail closed with 503, no body.
	var ea extauthzv3.ExtAuthz
	if err := filters[1].GetTypedConfig().UnmarshalTo(&ea); err != nil {
		t.Fatal(err)
	}
	if ea.GetFailureModeAllow() {
		t.Error("failure_mode_allow is true: requests would pass when authz is down")
	}
	if ea.GetStatusOnError().GetCode() != typev3.StatusCode_ServiceUnavailable {
		t.Errorf("status_on_error = %v, want 503", ea.GetStatusOnError().GetCode())
	}
	if ea.GetWithRequestBody() != nil {
		t.Error("with_request_body is set: Envoy would buffer uploads for authz")
	}
	if ea.GetTransportApiVersion() != corev3.ApiVersion_V3 {
		t.Errorf("transport_api_version = %v, want V3", ea.GetTransportApiVersion())
	}
	if c := ea.GetGrpcService().GetEnvoyGrpc().GetClusterName(); c != "authz" {
		t.Errorf("ext_authz cluster = %q, want authz", c)
	}
	if d := ea.GetGrpcService().GetTimeout().AsDuration(); d < time.Second {
		t.Errorf("ext_authz timeout = %v: a cold JWKS fetch needs more than the 200ms default", d)
	}
	if ea.GetIncludePeerCertificate() {
		t.Error("include_peer_certificate is on")
	}
	if !ea.GetEncodeRawHeaders() {
		t.Error("encode_raw_headers is off: the embedded gate sends header_map, Envoy must send the same shape")
	}
	var router routerv3.Router
	if err := filters[2].GetTypedConfig().UnmarshalTo(&router); err != nil {
		t.Fatal(err)
	}
	if !router.GetSuppressEnvoyHeaders() {
		t.Error("router suppress_envoy_headers is off: x-envoy-upstream-service-time on the blob server's 404 would tell a denied read from an absent one")
	}

	// Routes: /_flakegate/ → authz_http, everything else → blobserver with
	// no route timeout. ext_authz is never disabled on any route.
	vhs := m.GetRouteConfig().GetVirtualHosts()
	if len(vhs) != 1 {
		t.Fatalf("%d virtual hosts, want 1", len(vhs))
	}
	clusterOf := map[string]*routev3.RouteAction{}
	for _, r := range vhs[0].GetRoutes() {
		clusterOf[r.GetMatch().GetPrefix()] = r.GetRoute()
		if _, ok := r.GetTypedPerFilterConfig()["envoy.filters.http.ext_authz"]; ok {
			t.Errorf("route %q overrides ext_authz: every request must be checked", r.GetMatch().GetPrefix())
		}
	}
	if _, ok := vhs[0].GetTypedPerFilterConfig()["envoy.filters.http.ext_authz"]; ok {
		t.Error("the virtual host overrides ext_authz")
	}
	if len(vhs[0].GetRequestHeadersToRemove()) > 0 || len(m.GetRouteConfig().GetRequestHeadersToRemove()) > 0 {
		t.Error("route-level request_headers_to_remove run after ext_authz and could drop its headers; strip in the header_mutation filter")
	}
	if ra := clusterOf["/_flakegate/"]; ra.GetCluster() != "authz_http" {
		t.Errorf("/_flakegate/ goes to %q, want authz_http", ra.GetCluster())
	}
	blob := clusterOf["/"]
	if blob.GetCluster() != "blobserver" {
		t.Fatalf("/ goes to %q, want blobserver", blob.GetCluster())
	}
	if blob.GetTimeout() == nil || blob.GetTimeout().AsDuration() != 0 {
		t.Errorf("blobserver route timeout = %v, want explicitly 0s (Envoy's default 15s cuts NAR transfers)", blob.GetTimeout())
	}
	if blob.GetIdleTimeout().AsDuration() <= 0 {
		t.Error("blobserver route has no idle_timeout: stalled transfers would hang forever")
	}
	routes := vhs[0].GetRoutes()
	if routes[len(routes)-1].GetMatch().GetPrefix() != "/" {
		t.Error("the catch-all / route must come last")
	}

	// Clusters.
	clusters := map[string]*clusterv3.Cluster{}
	for _, c := range bs.GetStaticResources().GetClusters() {
		clusters[c.GetName()] = c
	}
	for name, wantAddr := range map[string]string{"authz": "authz:9001", "authz_http": "authz:9002", "blobserver": "blobserver:8080"} {
		c := clusters[name]
		if c == nil {
			t.Errorf("cluster %s missing", name)
			continue
		}
		if c.GetType() != clusterv3.Cluster_STRICT_DNS {
			t.Errorf("cluster %s type %v, want STRICT_DNS", name, c.GetType())
		}
		eps := c.GetLoadAssignment().GetEndpoints()
		if len(eps) != 1 || len(eps[0].GetLbEndpoints()) != 1 {
			t.Errorf("cluster %s: want exactly one endpoint", name)
			continue
		}
		sa := eps[0].GetLbEndpoints()[0].GetEndpoint().GetAddress().GetSocketAddress()
		if got := sa.GetAddress() + ":" + strconv.Itoa(int(sa.GetPortValue())); got != wantAddr {
			t.Errorf("cluster %s → %s, want %s", name, got, wantAddr)
		}
	}
	var po upstreamhttpv3.HttpProtocolOptions
	anyPO := clusters["authz"].GetTypedExtensionProtocolOptions()["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
	if anyPO == nil || anyPO.UnmarshalTo(&po) != nil || po.GetExplicitHttpConfig().GetHttp2ProtocolOptions() == nil {
		t.Error("cluster authz does not speak HTTP/2 (gRPC needs it)")
	}
}

// TestComposeMountsThisFile: examples/compose.yaml runs the official Envoy
// image (>= 1.36, for remove_on_match) with this very envoy.yaml mounted,
// not a copy that could drift from what the tests above validate.
func TestComposeMountsThisFile(t *testing.T) {
	const composePath = "../examples/compose.yaml"
	raw, err := os.ReadFile(composePath)
	if err != nil {
		t.Fatal(err)
	}
	var compose struct {
		Services map[string]struct {
			Image   string `json:"image"`
			Volumes []any  `json:"volumes"`
			Command any    `json:"command"`
		} `json:"services"`
	}
	if err := yaml.Unmarshal(raw, &compose); err != nil {
		t.Fatalf("compose.yaml: %v", err)
	}
	svc, ok := compose.Services["envoy"]
	if !ok {
		t.Fatal("compose.yaml has no envoy service")
	}
	m := regexp.MustCompile(`^envoyproxy/envoy:v1\.(\d+)`).FindStringSubmatch(svc.Image)
	if m == nil {
		t.Fatalf("envoy image %q is not the official envoyproxy/envoy:v1.x", svc.Image)
	}
	if minor, _ := strconv.Atoi(m[1]); minor < 36 {
		t.Errorf("envoy image %q: envoy.yaml needs v1.36 or later (remove_on_match)", svc.Image)
	}

	target := ""
	for _, v := range svc.Volumes {
		var src, dst string
		switch v := v.(type) {
		case string:
			parts := strings.Split(v, ":")
			if len(parts) < 2 {
				continue
			}
			src, dst = parts[0], parts[1]
		case map[string]any:
			src, _ = v["source"].(string)
			dst, _ = v["target"].(string)
		}
		if src == "" || !strings.HasPrefix(src, ".") && !strings.HasPrefix(src, "/") {
			continue // a named volume
		}
		srcInfo, err := os.Stat(filepath.Join(filepath.Dir(composePath), src))
		if err != nil {
			continue
		}
		ours, err := os.Stat("envoy.yaml")
		if err != nil {
			t.Fatal(err)
		}
		if os.SameFile(srcInfo, ours) {
			target = dst
		}
	}
	if target == "" {
		t.Fatal("the envoy service does not bind-mount envoy/envoy.yaml")
	}
	cmd := fmt.Sprint(svc.Command)
	if target != "/etc/envoy/envoy.yaml" && !strings.Contains(cmd, target) {
		t.Errorf("envoy.yaml is mounted at %s, which neither the image's default (/etc/envoy/envoy.yaml) nor the command (%s) reads", target, cmd)
	}
}

// TestRealEnvoyValidate asks a real Envoy to validate envoy.yaml.
func TestRealEnvoyValidate(t *testing.T) {
	bin, err := exec.LookPath("envoy")
	if err != nil {
		t.Skip("envoy not on PATH: real-Envoy validation skipped; the proto validation above still ran")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, "--mode", "validate", "-c", "envoy.yaml", "--log-level", "warn").CombinedOutput()
	if err != nil {
		t.Fatalf("envoy --mode validate: %v\n%s", err, out)
	}
	t.Logf("envoy --mode validate: %s", strings.TrimSpace(string(out)))
}

// TestClusters: Clusters reports what the Bootstrap proto decoding of the
// same file holds: every static cluster, in order, with its type and the
// address of its first endpoint.
func TestClusters(t *testing.T) {
	bs := loadBootstrap(t)
	got, err := Clusters()
	if err != nil {
		t.Fatal(err)
	}
	want := bs.GetStaticResources().GetClusters()
	if len(got) != len(want) || len(got) == 0 {
		t.Fatalf("Clusters() lists %d clusters, the Bootstrap %d", len(got), len(want))
	}
	for i, c := range want {
		sa := c.GetLoadAssignment().GetEndpoints()[0].GetLbEndpoints()[0].GetEndpoint().GetAddress().GetSocketAddress()
		w := Cluster{Name: c.GetName(), Type: c.GetType().String(), Host: sa.GetAddress(), Port: int(sa.GetPortValue())}
		if got[i] != w {
			t.Errorf("cluster %d = %+v, want %+v", i, got[i], w)
		}
	}
}
