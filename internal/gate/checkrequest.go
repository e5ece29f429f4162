package gate

import (
	"crypto/x509"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// ClientHeaderPrefix is the prefix of the headers flakegate's gate and
// authorization service talk with (x-flakegate-subject, …). A client never
// gets to send them: they are stripped before the Check, as Envoy's config
// does with its header_mutation filter.
const ClientHeaderPrefix = "x-flakegate-"

// StripClientHeaders removes from h what envoy/envoy.yaml removes before
// ext_authz runs: every x-flakegate-* header (names compared
// case-insensitively) and every header whose name holds an underscore
// (headers_with_underscores_action: DROP_HEADER), so that no
// x_flakegate_subject can pass for x-flakegate-subject behind a proxy that
// treats the two alike.
func StripClientHeaders(h http.Header) {
	for k := range h {
		if strings.IndexByte(k, '_') >= 0 ||
			len(k) >= len(ClientHeaderPrefix) && strings.EqualFold(k[:len(ClientHeaderPrefix)], ClientHeaderPrefix) {
			delete(h, k)
		}
	}
}

// CheckRequestFromHTTP builds the CheckRequest that Envoy's ext_authz HTTP
// filter (gRPC, no request body buffering) sends for r:
//
//   - attributes.request.http: id, method, path with query, host, scheme,
//     protocol ("HTTP/1.1", "HTTP/2"…), size, and header_map: the headers
//     with lower-cased names, the pseudo-headers :authority, :method, :path
//     and :scheme first, each value as raw_value and a repeated header as
//     one entry per value, as Envoy sends them with encode_raw_headers: true
//     (set in envoy/envoy.yaml, and what Envoy recommends; the headers map
//     of the default mode costs several times more to encode and decode).
//   - attributes.request.time is now.
//   - attributes.source / destination: the peer and local socket addresses
//     (a pipe address for unix sockets); source.principal is the client
//     certificate's URI SAN, else DNS SAN, else subject, as Envoy sets it.
//
// size is the Content-Length, or -1 when unknown (the proto's convention;
// Envoy reports the bytes it has buffered, which is 0 without buffering).
// The body is never read. Callers strip x-flakegate-* headers first.
func CheckRequestFromHTTP(r *http.Request, id uint64, now time.Time) *authv3.CheckRequest {
	b := newCheckBuf()
	b.fill(r, id, now)
	return &b.req
}

// checkBuf holds every message of one CheckRequest so that the gate can
// reuse them (sync.Pool) instead of allocating a dozen objects per request.
type checkBuf struct {
	req     authv3.CheckRequest
	attr    authv3.AttributeContext
	request authv3.AttributeContext_Request
	http    authv3.AttributeContext_HttpRequest
	time    timestamppb.Timestamp
	src     authv3.AttributeContext_Peer
	dst     authv3.AttributeContext_Peer
	srcAddr addrBuf
	dstAddr addrBuf
	headers corev3.HeaderMap
	// hvals backs the header_map entries (headers.Headers points into it);
	// arena holds their raw values.
	hvals []corev3.HeaderValue
	arena []byte
}

// addrBuf is a reusable corev3.Address with both of its oneof shapes.
type addrBuf struct {
	addr     corev3.Address
	sockWrap corev3.Address_SocketAddress
	sock     corev3.SocketAddress
	port     corev3.SocketAddress_PortValue
	pipeWrap corev3.Address_Pipe
	pipe     corev3.Pipe
	// The IP of the last address converted, as its text in RemoteAddr
	// (lastHost) or as a local net.IP (lastLocal), and formatted (lastIP):
	// requests from one client host, or to one listener, share the IP,
	// and formatting it allocates. Compared by value, not per connection:
	// the buffer is pooled, and 64 connections from 127.0.0.1 still share
	// one IP (hand-written for a measured reason, issue 16: two
	// allocations per request). Addresses are not secret.
	lastHost  string
	lastLocal net.IP
	lastIP    string
}

func newCheckBuf() *checkBuf {
	b := &checkBuf{}
	b.req.Attributes = &b.attr
	b.attr.Source = &b.src
	b.attr.Destination = &b.dst
	b.attr.Request = &b.request
	b.request.Time = &b.time
	b.request.Http = &b.http
	b.http.HeaderMap = &b.headers
	return b
}

// reset drops every reference to request data (and zeroes the copied
// header values) so a pooled buffer keeps nothing of a finished request.
func (b *checkBuf) reset() {
	for i := range b.hvals {
		b.hvals[i].Key, b.hvals[i].RawValue = "", nil
	}
	clear(b.headers.Headers)
	b.headers.Headers = b.headers.Headers[:0]
	clear(b.arena) // no token stays behind in a pooled buffer
	b.arena = b.arena[:0]
	b.http.Id, b.http.Method, b.http.Path, b.http.Host = "", "", "", ""
	b.http.Scheme, b.http.Protocol = "", ""
	b.http.Size = 0
	b.src.Principal, b.dst.Principal = "", ""
	b.src.Address, b.dst.Address = nil, nil
	b.srcAddr.sock.Address, b.dstAddr.sock.Address = "", ""
	b.srcAddr.pipe.Path, b.dstAddr.pipe.Path = "", ""
}

func (b *checkBuf) fill(r *http.Request, id uint64, now time.Time) {
	h := &b.http
	h.Id = strconv.FormatUint(id, 10)
	h.Method = r.Method
	h.Path = requestPath(r)
	h.Host = r.Host
	h.Scheme = "http"
	if r.TLS != nil {
		h.Scheme = "https"
	}
	h.Protocol = protocolString(r)
	h.Size = r.ContentLength // -1 when unknown (chunked)

	b.time.Seconds = now.Unix()
	b.time.Nanos = int32(now.Nanosecond())

	// Size the entries and the value arena first, so that no entry or raw
	// value moves while the list is built.
	n, size := 4, len(r.Host)+len(r.Method)+len(h.Path)+len(h.Scheme)
	for _, vs := range r.Header {
		n += len(vs)
		for _, v := range vs {
			size += len(v)
		}
	}
	if len(r.TransferEncoding) > 0 {
		n++
		size += len("chunked") * len(r.TransferEncoding)
	}
	if len(b.hvals) < n {
		b.hvals = make([]corev3.HeaderValue, n)
	}
	if cap(b.arena) < size {
		b.arena = make([]byte, 0, size)
	}
	b.add(":authority", r.Host)
	b.add(":method", r.Method)
	b.add(":path", h.Path)
	b.add(":scheme", h.Scheme)
	for k, vs := range r.Header {
		lk := lowerHeader(k)
		if strings.HasPrefix(lk, ":") {
			continue // pseudo-headers come from the request line, never from a header
		}
		for _, v := range vs {
			b.add(lk, v)
		}
	}
	if len(r.TransferEncoding) > 0 {
		b.add("transfer-encoding", strings.Join(r.TransferEncoding, ","))
	}

	b.src.Address = b.srcAddr.fromRemote(r.RemoteAddr)
	b.dst.Address = nil
	if la, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok {
		b.dst.Address = b.dstAddr.fromNetAddr(la)
	}
	if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
		b.src.Principal = certPrincipal(r.TLS.PeerCertificates[0])
	}
}

// add appends one header_map entry. Its value is copied into the arena
// (proto's raw_value is bytes). fill sized both for the request; should
// they fall short, the entry is allocated and the arena grows (earlier
// values keep the old array).
func (b *checkBuf) add(key, value string) {
	var hv *corev3.HeaderValue
	if i := len(b.headers.Headers); i < len(b.hvals) {
		hv = &b.hvals[i]
	} else {
		hv = &corev3.HeaderValue{}
	}
	start := len(b.arena)
	b.arena = append(b.arena, value...)
	hv.Key, hv.RawValue = key, b.arena[start:len(b.arena):len(b.arena)]
	b.headers.Headers = append(b.headers.Headers, hv)
}

// requestPath is the path and query as they appear in the request line
// (origin form, also for absolute-form requests).
func requestPath(r *http.Request) string {
	if r.URL == nil {
		return r.RequestURI
	}
	return r.URL.RequestURI()
}

func protocolString(r *http.Request) string {
	switch {
	case r.ProtoMajor == 3:
		return "HTTP/3"
	case r.ProtoMajor == 2:
		return "HTTP/2"
	case r.ProtoMajor == 1 && r.ProtoMinor == 0:
		return "HTTP/1.0"
	default:
		return "HTTP/1.1"
	}
}

func (a *addrBuf) socket(ip string, port uint32) *corev3.Address {
	a.sock.Address = ip
	a.port.PortValue = port
	a.sock.PortSpecifier = &a.port
	a.sockWrap.SocketAddress = &a.sock
	a.addr.Address = &a.sockWrap
	return &a.addr
}

func (a *addrBuf) pipePath(path string) *corev3.Address {
	a.pipe.Path = path
	a.pipeWrap.Pipe = &a.pipe
	a.addr.Address = &a.pipeWrap
	return &a.addr
}

// fromRemote converts http.Request.RemoteAddr ("ip:port", or a unix socket
// name) into an Envoy address; nil when there is none.
func (a *addrBuf) fromRemote(s string) *corev3.Address {
	if s == "" {
		return nil
	}
	if i := strings.LastIndexByte(s, ':'); i > 0 && a.lastHost != "" && s[:i] == a.lastHost {
		// The port as netip.ParseAddrPort reads it.
		if p, err := strconv.ParseUint(s[i+1:], 10, 16); err == nil {
			return a.socket(a.lastIP, uint32(p))
		}
	}
	if ap, err := netip.ParseAddrPort(s); err == nil {
		a.lastHost, a.lastLocal = s[:strings.LastIndexByte(s, ':')], nil
		a.lastIP = ap.Addr().Unmap().String()
		return a.socket(a.lastIP, uint32(ap.Port()))
	}
	return a.pipePath(s)
}

func (a *addrBuf) fromNetAddr(na net.Addr) *corev3.Address {
	switch v := na.(type) {
	case *net.TCPAddr:
		if a.lastLocal != nil && a.lastLocal.Equal(v.IP) {
			return a.socket(a.lastIP, uint32(v.Port))
		}
		ip, _ := netip.AddrFromSlice(v.IP)
		a.lastHost, a.lastLocal = "", v.IP
		a.lastIP = ip.Unmap().String()
		return a.socket(a.lastIP, uint32(v.Port))
	case *net.UnixAddr:
		return a.pipePath(v.Name)
	default:
		return a.fromRemote(na.String())
	}
}

// certPrincipal is the URI SAN, else the DNS SAN, else the subject of a
// client certificate: the order Envoy uses for source.principal.
func certPrincipal(c *x509.Certificate) string {
	if len(c.URIs) > 0 {
		return c.URIs[0].String()
	}
	if len(c.DNSNames) > 0 {
		return c.DNSNames[0]
	}
	return c.Subject.String()
}

// commonHeaders maps canonical header names a Nix client or proxy sends to
// their lower-case form, so the hot path does not allocate for them.
var commonHeaders = func() map[string]string {
	m := map[string]string{}
	for _, k := range []string{
		"Accept", "Accept-Encoding", "Accept-Language", "Authorization", "Cache-Control",
		"Connection", "Content-Length", "Content-Type", "Content-Encoding", "Cookie", "Expect",
		"If-Modified-Since", "If-None-Match", "Range", "User-Agent", "X-Forwarded-For",
		"X-Forwarded-Proto", "X-Forwarded-Host", "X-Real-Ip", "X-Request-Id", "Te",
		"Traceparent", "Tracestate", "Upgrade", "Via", "Pragma", "Origin", "Referer",
	} {
		m[k] = strings.ToLower(k)
	}
	return m
}()

func lowerHeader(k string) string {
	if l, ok := commonHeaders[k]; ok {
		return l
	}
	return strings.ToLower(k) // returns k itself when already lower-case
}
