package authz

import (
	"net/http"
	"strings"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/flakegate/flakegate/internal/identity"
	"github.com/flakegate/flakegate/internal/route"
)

// Request is what authz reads from an Envoy CheckRequest: the HTTP method,
// the path without its query string, what the path means, and the
// Authorization header (never logged).
type Request struct {
	Method string
	Path   string
	Route  route.Request
	// RouteErr is set when the path is not one the cache serves; the
	// request is then denied with route.StatusOf(RouteErr).
	RouteErr error
	// Authorization is the raw Authorization header ("" when absent).
	Authorization string
	// Scope is the scope a token exchange asks for (nil: an unscoped
	// token); the policy input shows it as "scope", with its flake as
	// "flake". Set by the exchange, never read from a Check.
	Scope *identity.Scope
}

// ParseCheckRequest extracts the request authz decides on. It is pure.
// Envoy lower-cases header names; header_map (sent instead of headers when
// Envoy's encode_raw_headers is on) is read too.
func ParseCheckRequest(req *authv3.CheckRequest) Request {
	h := req.GetAttributes().GetRequest().GetHttp()
	return NewRequest(h.GetMethod(), h.GetPath(), header(h, "authorization"))
}

// NewRequest is ParseCheckRequest from the three values it reads: what the
// gRPC server decodes from the wire (wireCheckRequest), and what the token
// exchange reads from its HTTP request. It is pure.
func NewRequest(method, path, authorization string) Request {
	r := Request{Method: method, Path: path}
	if i := strings.IndexAny(r.Path, "?#"); i >= 0 {
		r.Path = r.Path[:i]
	}
	if r.Method == "" || r.Path == "" {
		r.RouteErr = &route.Error{Status: http.StatusBadRequest, Msg: "malformed check request: no HTTP method or path"}
		return r
	}
	r.Route, r.RouteErr = route.Parse(r.Method, r.Path)
	r.Authorization = authorization
	return r
}

// header returns the value of the lower-case header name. In header_map
// (Envoy's encode_raw_headers: true, which envoy/envoy.yaml and the embedded
// gate use) a repeated header comes as one entry per value: the values are
// joined with "," as Envoy joins them in the headers map, so that two
// Authorization headers are refused alike in both shapes.
func header(h *authv3.AttributeContext_HttpRequest, name string) string {
	if v, ok := h.GetHeaders()[name]; ok {
		return v
	}
	v, found := "", false
	for _, hv := range h.GetHeaderMap().GetHeaders() {
		if !strings.EqualFold(hv.GetKey(), name) {
			continue
		}
		val := hv.GetValue()
		if val == "" {
			val = string(hv.GetRawValue())
		}
		if found {
			v += "," + val
		} else {
			v, found = val, true
		}
	}
	return v
}
