package authz

import (
	"net/http"
	"strings"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

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
}

// ParseCheckRequest extracts the request authz decides on. It is pure.
// Envoy lower-cases header names; header_map (sent instead of headers when
// Envoy's encode_raw_headers is on) is read too.
func ParseCheckRequest(req *authv3.CheckRequest) Request {
	h := req.GetAttributes().GetRequest().GetHttp()
	r := Request{Method: h.GetMethod(), Path: h.GetPath()}
	if i := strings.IndexAny(r.Path, "?#"); i >= 0 {
		r.Path = r.Path[:i]
	}
	if h == nil || r.Method == "" || r.Path == "" {
		r.RouteErr = &route.Error{Status: http.StatusBadRequest, Msg: "malformed check request: no HTTP method or path"}
		return r
	}
	r.Route, r.RouteErr = route.Parse(r.Method, r.Path)
	r.Authorization = header(h, "authorization")
	return r
}

// header returns the value of the lower-case header name.
func header(h *authv3.AttributeContext_HttpRequest, name string) string {
	if v, ok := h.GetHeaders()[name]; ok {
		return v
	}
	for _, hv := range h.GetHeaderMap().GetHeaders() {
		if strings.EqualFold(hv.GetKey(), name) {
			if hv.GetValue() != "" {
				return hv.GetValue()
			}
			return string(hv.GetRawValue())
		}
	}
	return ""
}
