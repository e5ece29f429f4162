package gate

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"net/textproto"
	"slices"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"golang.org/x/net/http/httpguts"
	"google.golang.org/grpc/codes"

	"github.com/flakegate/flakegate/internal/abandon"
	"github.com/flakegate/flakegate/internal/route"
)

// outcome is what a CheckResponse made of a request.
type outcome int

const (
	outcomeOK     outcome = iota // forwarded to the handler
	outcomeDenied                // the authorization service's denied response was sent
	outcomeError                 // 503 (or the error_response) was sent
)

func (o outcome) String() string {
	switch o {
	case outcomeOK:
		return "ok"
	case outcomeDenied:
		return "denied"
	default:
		return "error"
	}
}

const (
	// statusOnError is envoy.yaml's ext_authz status_on_error.
	statusOnError = http.StatusServiceUnavailable
	// statusDenied is Envoy's status for a denial without a status.
	statusDenied = http.StatusForbidden
)

// apply applies resp to the request the way Envoy's ext_authz HTTP filter
// does. On outcomeOK it has mutated r (headers, query) and returns the
// writer to hand to the next handler (wrapped only when the service asked
// for response headers); otherwise it has written the whole response.
//
//   - status.code OK (also an absent status, as in Envoy): ok_response's
//     headers are added per their append action, headers_to_remove are
//     removed (never pseudo-headers or host), query parameters set then
//     removed, response_headers_to_add applied to the response.
//   - status.code not OK with error_response: its status (default 503),
//     headers and body; counted as an error.
//   - status.code not OK otherwise: denied_response's status (default 403),
//     headers and body ("text/plain" unless the service set a type).
func apply(resp *authv3.CheckResponse, w http.ResponseWriter, r *http.Request) (http.ResponseWriter, outcome) {
	if codes.Code(resp.GetStatus().GetCode()) == codes.OK {
		ok := resp.GetOkResponse()
		if ok == nil {
			return w, outcomeOK
		}
		mutateHeaders(r.Header, ok.GetHeaders())
		for _, name := range ok.GetHeadersToRemove() {
			if removableHeader(name) {
				r.Header.Del(name)
			}
		}
		applyQuery(r, ok)
		if len(ok.GetResponseHeadersToAdd()) > 0 {
			return newHeaderWriter(w, ok.GetResponseHeadersToAdd()), outcomeOK
		}
		return w, outcomeOK
	}
	if er := resp.GetErrorResponse(); er != nil {
		abandon.Request(w, r)
		writeLocalReply(w, statusOr(int(er.GetStatus().GetCode()), statusOnError), er.GetHeaders(), er.GetBody(), route.BodyUnavailable)
		return nil, outcomeError
	}
	d := resp.GetDeniedResponse()
	abandon.Request(w, r)
	writeLocalReply(w, statusOr(int(d.GetStatus().GetCode()), statusDenied), d.GetHeaders(), d.GetBody(), "")
	return nil, outcomeDenied
}

// writeUnavailable is the answer when the Check itself failed. Its body,
// also that of an error_response without one, is route.BodyUnavailable, as
// authz's own 503 (Envoy's is empty; a line of text tells a Nix user more).
func writeUnavailable(w http.ResponseWriter, r *http.Request) {
	abandon.Request(w, r)
	writeLocalReply(w, statusOnError, nil, "", route.BodyUnavailable)
}

// statusOr is code when it is a final HTTP status Go can write, else def.
func statusOr(code, def int) int {
	if code < 200 || code > 599 {
		return def
	}
	return code
}

// writeLocalReply sends a reply of the gate's own, as Envoy's
// sendLocalReply does: the service's headers replace any of the same name
// (all values of a repeated name are kept, e.g. WWW-Authenticate), and a
// body gets "text/plain" unless the service set a content type.
func writeLocalReply(w http.ResponseWriter, status int, headers []*corev3.HeaderValueOption, body, defaultBody string) {
	h := w.Header()
	for _, o := range headers {
		if k, _, ok := headerOption(o); ok {
			h.Del(k)
		}
	}
	for _, o := range headers {
		if k, v, ok := headerOption(o); ok {
			h.Add(k, v)
		}
	}
	if body == "" {
		body = defaultBody
	}
	if body != "" && h.Get("Content-Type") == "" {
		h.Set("Content-Type", "text/plain; charset=utf-8")
	}
	h.Del("Content-Length")
	if status == http.StatusServiceUnavailable && h.Get("Retry-After") == "" {
		// A 503 is temporary: tell clients (Nix retries) when to come back.
		h.Set("Retry-After", "1")
	}
	w.WriteHeader(status)
	if body != "" {
		_, _ = io.WriteString(w, body) // the client may be gone; nothing left to do
	}
}

// headerOption extracts a usable (canonical key, value) from o; invalid
// names or values (CR, LF, NUL…) and pseudo-headers are skipped.
func headerOption(o *corev3.HeaderValueOption) (key, value string, ok bool) {
	hv := o.GetHeader()
	key, value = hv.GetKey(), hv.GetValue()
	if value == "" && len(hv.GetRawValue()) > 0 {
		value = string(hv.GetRawValue())
	}
	if !httpguts.ValidHeaderFieldName(key) || !httpguts.ValidHeaderFieldValue(value) {
		return "", "", false
	}
	if k, ok := canonicalAuthzHeaders[key]; ok {
		return k, value, true
	}
	return textproto.CanonicalMIMEHeaderKey(key), value, true
}

// canonicalAuthzHeaders are the canonical forms of the header names
// flakegate's authz sets (lower-case, as Envoy expects them): canonicalizing
// a name that is not one of net/textproto's common headers allocates, for
// every request (hand-written for a measured reason, issue 16).
var canonicalAuthzHeaders = func() map[string]string {
	m := map[string]string{}
	for _, k := range []string{
		route.SubjectHeader, route.ReadableHeader, "content-type", "x-content-type-options",
		"www-authenticate", "retry-after", "authorization",
	} {
		m[k] = textproto.CanonicalMIMEHeaderKey(k)
	}
	return m
}()

// mutateHeaders applies header options to h with Envoy's semantics:
//   - deprecated append=true: join to the existing value with "," (add if absent);
//   - deprecated append=false: overwrite or add;
//   - append_action APPEND_IF_EXISTS_OR_ADD (the default): add one more value;
//   - ADD_IF_ABSENT: add only when the header is absent;
//   - OVERWRITE_IF_EXISTS_OR_ADD: overwrite or add;
//   - OVERWRITE_IF_EXISTS: overwrite only when present;
//   - an unknown action: overwrite or add (as Envoy treats it).
//
// Host cannot be changed this way (Go keeps it in Request.Host).
func mutateHeaders(h http.Header, opts []*corev3.HeaderValueOption) {
	for _, o := range opts {
		k, v, ok := headerOption(o)
		if !ok || k == "Host" {
			continue
		}
		_, present := h[k]
		if a := o.GetAppend(); a != nil {
			switch {
			case !a.GetValue():
				h.Set(k, v)
			case present && len(h[k]) > 0:
				// A new slice: a handler may have set a value slice it
				// shares with every response (cacheserver's header values).
				vals := slices.Clone(h[k])
				vals[len(vals)-1] += "," + v
				h[k] = vals
			default:
				h.Add(k, v)
			}
			continue
		}
		switch o.GetAppendAction() {
		case corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD:
			h.Add(k, v)
		case corev3.HeaderValueOption_ADD_IF_ABSENT:
			if !present {
				h.Set(k, v)
			}
		case corev3.HeaderValueOption_OVERWRITE_IF_EXISTS:
			if present {
				h.Set(k, v)
			}
		default: // OVERWRITE_IF_EXISTS_OR_ADD, unknown
			h.Set(k, v)
		}
	}
}

// removableHeader mirrors Envoy: pseudo-headers and host are never removed.
func removableHeader(name string) bool {
	return name != "" && !strings.HasPrefix(name, ":") && !strings.EqualFold(name, "host")
}

// applyQuery sets then removes query parameters as the service asked.
func applyQuery(r *http.Request, ok *authv3.OkHttpResponse) {
	set, del := ok.GetQueryParametersToSet(), ok.GetQueryParametersToRemove()
	if (len(set) == 0 && len(del) == 0) || r.URL == nil {
		return
	}
	q := r.URL.Query()
	for _, p := range set {
		if p.GetKey() != "" {
			q.Set(p.GetKey(), p.GetValue())
		}
	}
	for _, k := range del {
		q.Del(k)
	}
	r.URL.RawQuery = q.Encode()
	r.RequestURI = r.URL.RequestURI()
}

// headerWriter applies response_headers_to_add just before the response
// headers are sent, as Envoy's encodeHeaders does, so they win over or add
// to the handler's. It keeps io.ReaderFrom (sendfile) and Flush working.
type headerWriter struct {
	http.ResponseWriter
	opts []*corev3.HeaderValueOption
	done bool
}

func newHeaderWriter(w http.ResponseWriter, opts []*corev3.HeaderValueOption) *headerWriter {
	return &headerWriter{ResponseWriter: w, opts: opts}
}

func (hw *headerWriter) apply() {
	if !hw.done {
		hw.done = true
		mutateHeaders(hw.ResponseWriter.Header(), hw.opts)
	}
}

func (hw *headerWriter) WriteHeader(code int) {
	if code >= 200 || code == http.StatusSwitchingProtocols {
		hw.apply()
	}
	hw.ResponseWriter.WriteHeader(code)
}

func (hw *headerWriter) Write(p []byte) (int, error) {
	hw.apply()
	return hw.ResponseWriter.Write(p)
}

func (hw *headerWriter) ReadFrom(src io.Reader) (int64, error) {
	hw.apply()
	if rf, ok := hw.ResponseWriter.(io.ReaderFrom); ok {
		return rf.ReadFrom(src)
	}
	return io.Copy(struct{ io.Writer }{hw.ResponseWriter}, src)
}

func (hw *headerWriter) Flush() {
	hw.apply()
	_ = http.NewResponseController(hw.ResponseWriter).Flush()
}

func (hw *headerWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	return http.NewResponseController(hw.ResponseWriter).Hijack()
}

// Unwrap lets http.ResponseController reach the server's writer.
func (hw *headerWriter) Unwrap() http.ResponseWriter { return hw.ResponseWriter }
