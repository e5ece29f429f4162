package gate

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/encoding/protojson"
)

func TestCheckRequestFromHTTP(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 123456789, time.UTC)
	tests := []struct {
		name    string
		build   func() *http.Request
		id      uint64
		method  string
		path    string
		host    string
		scheme  string
		proto   string
		size    int64
		headers map[string][]string // exact header_map, values in order
		src     string              // "ip:port" or "pipe:path"
		dst     string
		princ   string
	}{
		{
			name: "GET narinfo with netrc credentials",
			build: func() *http.Request {
				r := httptest.NewRequest("GET", "/omnicorp/app/0a9g8mz2ck6lw5yyz3bh3nxa0cacp2v1.narinfo", nil)
				r.Host = "cache.example.com"
				r.RemoteAddr = "192.0.2.7:51234"
				r.Header.Set("Authorization", "Basic Zmxha2VnYXRlOnRvaw==")
				r.Header.Set("User-Agent", "curl/8.5 Nix/2.24")
				r.Header["Accept"] = []string{"text/plain", "*/*"}
				r.Header["X-Custom-Thing"] = []string{"v"}
				return r
			},
			id: 42, method: "GET", path: "/omnicorp/app/0a9g8mz2ck6lw5yyz3bh3nxa0cacp2v1.narinfo",
			host: "cache.example.com", scheme: "http", proto: "HTTP/1.1", size: 0,
			headers: map[string][]string{
				":authority": {"cache.example.com"}, ":method": {"GET"}, ":scheme": {"http"},
				":path":          {"/omnicorp/app/0a9g8mz2ck6lw5yyz3bh3nxa0cacp2v1.narinfo"},
				"authorization":  {"Basic Zmxha2VnYXRlOnRvaw=="},
				"user-agent":     {"curl/8.5 Nix/2.24"},
				"accept":         {"text/plain", "*/*"},
				"x-custom-thing": {"v"},
			},
			src: "192.0.2.7:51234",
		},
		{
			name: "chunked PUT over HTTP/2 with TLS and a client certificate, query kept in path",
			build: func() *http.Request {
				r := httptest.NewRequest("PUT", "https://cache.example.com/omnicorp/app/nar/x.nar?compression=zstd", strings.NewReader("body"))
				r.ContentLength = -1
				r.TransferEncoding = []string{"chunked"}
				r.ProtoMajor, r.ProtoMinor, r.Proto = 2, 0, "HTTP/2.0"
				r.RemoteAddr = "[2001:db8::1]:443"
				u, _ := url.Parse("spiffe://example.com/ci")
				r.TLS = &tls.ConnectionState{PeerCertificates: []*x509.Certificate{{URIs: []*url.URL{u}, DNSNames: []string{"ci.example.com"}}}}
				ctx := context.WithValue(r.Context(), http.LocalAddrContextKey, &net.TCPAddr{IP: net.ParseIP("10.0.0.2"), Port: 8443})
				return r.WithContext(ctx)
			},
			id: 7, method: "PUT", path: "/omnicorp/app/nar/x.nar?compression=zstd",
			host: "cache.example.com", scheme: "https", proto: "HTTP/2", size: -1,
			headers: map[string][]string{
				":authority": {"cache.example.com"}, ":method": {"PUT"}, ":scheme": {"https"},
				":path":             {"/omnicorp/app/nar/x.nar?compression=zstd"},
				"transfer-encoding": {"chunked"},
			},
			src: "2001:db8::1:443", dst: "10.0.0.2:8443", princ: "spiffe://example.com/ci",
		},
		{
			name: "HTTP/1.0 over a unix socket, DNS SAN principal, known size",
			build: func() *http.Request {
				r := httptest.NewRequest("PUT", "/omnicorp/app/log/0a9g8mz2ck6lw5yyz3bh3nxa0cacp2v1-hello.drv", strings.NewReader("12345"))
				r.ProtoMajor, r.ProtoMinor = 1, 0
				r.RemoteAddr = "@"
				r.Header.Set("Content-Length", "5")
				r.TLS = &tls.ConnectionState{PeerCertificates: []*x509.Certificate{{DNSNames: []string{"builder.example.com"}, Subject: pkix.Name{CommonName: "x"}}}}
				ctx := context.WithValue(r.Context(), http.LocalAddrContextKey, &net.UnixAddr{Name: "/run/flakegate.sock", Net: "unix"})
				return r.WithContext(ctx)
			},
			method: "PUT", path: "/omnicorp/app/log/0a9g8mz2ck6lw5yyz3bh3nxa0cacp2v1-hello.drv",
			host: "example.com", scheme: "https", proto: "HTTP/1.0", size: 5,
			headers: map[string][]string{
				":authority": {"example.com"}, ":method": {"PUT"}, ":scheme": {"https"},
				":path":          {"/omnicorp/app/log/0a9g8mz2ck6lw5yyz3bh3nxa0cacp2v1-hello.drv"},
				"content-length": {"5"},
			},
			src: "pipe:@", dst: "pipe:/run/flakegate.sock", princ: "builder.example.com",
		},
		{
			name: "non-canonical header spellings are sent under one lower-case name",
			build: func() *http.Request {
				r := httptest.NewRequest("GET", "/nix-cache-info", nil)
				r.Header["x-mixed"] = []string{"a"}
				r.Header["X-Mixed"] = []string{"b"}
				r.RemoteAddr = ""
				return r
			},
			method: "GET", path: "/nix-cache-info", host: "example.com", scheme: "http", proto: "HTTP/1.1",
			headers: map[string][]string{
				":authority": {"example.com"}, ":method": {"GET"}, ":scheme": {"http"}, ":path": {"/nix-cache-info"},
				"x-mixed": {"a", "b"},
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cr := CheckRequestFromHTTP(tc.build(), tc.id, now)
			h := cr.GetAttributes().GetRequest().GetHttp()
			if got := h.GetId(); got != strconvU(tc.id) {
				t.Errorf("id = %q, want %d", got, tc.id)
			}
			check := func(field, got, want string) {
				if got != want {
					t.Errorf("%s = %q, want %q", field, got, want)
				}
			}
			check("method", h.GetMethod(), tc.method)
			check("path", h.GetPath(), tc.path)
			check("host", h.GetHost(), tc.host)
			check("scheme", h.GetScheme(), tc.scheme)
			check("protocol", h.GetProtocol(), tc.proto)
			if h.GetSize() != tc.size {
				t.Errorf("size = %d, want %d", h.GetSize(), tc.size)
			}
			if h.GetBody() != "" || len(h.GetRawBody()) != 0 {
				t.Error("a body was put in the CheckRequest")
			}
			if len(h.GetHeaders()) != 0 {
				t.Errorf("headers map = %v, want header_map only (encode_raw_headers)", h.GetHeaders())
			}
			got := headerMapValues(t, h.GetHeaderMap())
			if _, ok := tc.headers["x-mixed"]; ok {
				// Map order decides which spelling comes first.
				if v := got["x-mixed"]; len(v) != 2 || v[0]+v[1] != "ab" && v[0]+v[1] != "ba" {
					t.Errorf("x-mixed = %q, want both values", v)
				}
				delete(got, "x-mixed")
				delete(tc.headers, "x-mixed")
			}
			if !reflect.DeepEqual(got, tc.headers) {
				t.Errorf("header_map =\n%v\nwant\n%v", got, tc.headers)
			}
			for i, hv := range h.GetHeaderMap().GetHeaders()[:4] {
				if want := []string{":authority", ":method", ":path", ":scheme"}[i]; hv.GetKey() != want {
					t.Errorf("header_map[%d] = %q, want the pseudo-headers first (%q)", i, hv.GetKey(), want)
				}
			}
			if ts := cr.GetAttributes().GetRequest().GetTime().AsTime(); !ts.Equal(now) {
				t.Errorf("time = %v, want %v", ts, now)
			}
			check("source", addrString(cr.GetAttributes().GetSource().GetAddress()), tc.src)
			check("destination", addrString(cr.GetAttributes().GetDestination().GetAddress()), tc.dst)
			check("source principal", cr.GetAttributes().GetSource().GetPrincipal(), tc.princ)

			// What goes on the wire must be a valid message.
			if _, err := protojson.Marshal(cr); err != nil {
				t.Errorf("marshal: %v", err)
			}
			if err := cr.ValidateAll(); err != nil {
				t.Errorf("validate: %v", err)
			}
		})
	}
}

// TestCheckBufReuse proves a pooled buffer carries nothing of the previous
// request into the next one.
func TestCheckBufReuse(t *testing.T) {
	b := newCheckBuf()
	r1 := httptest.NewRequest("GET", "/a", nil)
	r1.Header.Set("Authorization", "Bearer secret")
	r1.TLS = &tls.ConnectionState{PeerCertificates: []*x509.Certificate{{DNSNames: []string{"peer"}}}}
	b.fill(r1, 1, time.Now())
	b.reset()
	r2 := httptest.NewRequest("GET", "/b", nil)
	r2.RemoteAddr = ""
	b.fill(r2, 2, time.Now())
	h := b.req.GetAttributes().GetRequest().GetHttp()
	if v := headerMapValues(t, h.GetHeaderMap())["authorization"]; v != nil {
		t.Errorf("authorization header %q leaked from the previous request", v)
	}
	if p := b.req.GetAttributes().GetSource().GetPrincipal(); p != "" {
		t.Errorf("principal %q leaked from the previous request", p)
	}
	if a := b.req.GetAttributes().GetSource().GetAddress(); a != nil {
		t.Errorf("source address %v leaked from the previous request", a)
	}
	if h.GetPath() != "/b" || h.GetId() != "2" {
		t.Errorf("path/id = %q/%q", h.GetPath(), h.GetId())
	}
}

func TestStripClientHeaders(t *testing.T) {
	h := http.Header{
		"X-Flakegate-Subject": {"forged"},
		"x-flakegate-other":   {"forged"},
		"X-FLAKEGATE-LOUD":    {"forged"},
		"X-Flakegate":         {"kept: no dash suffix"},
		"X-Flakegates-Thing":  {"kept"},
		"Authorization":       {"kept"},
		"X_flakegate_subject": {"dropped: underscore"},
		"User_agent":          {"dropped: underscore"},
	}
	StripClientHeaders(h)
	want := []string{"Authorization", "X-Flakegate", "X-Flakegates-Thing"}
	var got []string
	for k := range h {
		got = append(got, k)
	}
	if len(got) != len(want) {
		t.Fatalf("left %v, want %v", got, want)
	}
	for _, k := range want {
		if _, ok := h[k]; !ok {
			t.Errorf("%s was removed", k)
		}
	}
}

// headerMapValues collects a header_map into name → values (in order),
// checking every entry the way Envoy's raw mode writes it: a lower-case
// name and the value in raw_value only.
func headerMapValues(t *testing.T, hm *corev3.HeaderMap) map[string][]string {
	t.Helper()
	got := map[string][]string{}
	for _, hv := range hm.GetHeaders() {
		if k := hv.GetKey(); k != strings.ToLower(k) {
			t.Errorf("header name %q is not lower-case", k)
		}
		if hv.GetValue() != "" {
			t.Errorf("header %q has value %q, want it in raw_value only", hv.GetKey(), hv.GetValue())
		}
		got[hv.GetKey()] = append(got[hv.GetKey()], string(hv.GetRawValue()))
	}
	return got
}

func strconvU(u uint64) string { return strconv.FormatUint(u, 10) }

func addrString(a *corev3.Address) string {
	if a == nil {
		return ""
	}
	if p := a.GetPipe(); p != nil {
		return "pipe:" + p.GetPath()
	}
	s := a.GetSocketAddress()
	return s.GetAddress() + ":" + strconvU(uint64(s.GetPortValue()))
}

// A reused buffer remembers the last addresses it formatted: each request
// still gets its own, whatever the order of connections.
func TestCheckBufReuseAddresses(t *testing.T) {
	b := newCheckBuf()
	local1 := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 8080}
	local2 := &net.TCPAddr{IP: net.ParseIP("::1"), Port: 9090}
	for i, c := range []struct {
		remote   string
		local    net.Addr
		src, dst string
	}{
		{"10.0.0.7:51234", local1, "10.0.0.7:51234", "127.0.0.1:8080"},
		{"10.0.0.7:51234", local1, "10.0.0.7:51234", "127.0.0.1:8080"},
		{"10.0.0.8:51234", local1, "10.0.0.8:51234", "127.0.0.1:8080"},
		{"10.0.0.8:51235", local2, "10.0.0.8:51235", "::1:9090"},
		{"[::ffff:10.0.0.9]:1", local2, "10.0.0.9:1", "::1:9090"},
		{"@", &net.UnixAddr{Name: "/run/fg.sock", Net: "unix"}, "pipe:@", "pipe:/run/fg.sock"},
		{"10.0.0.7:51234", local1, "10.0.0.7:51234", "127.0.0.1:8080"},
		// The same hosts on other ports (another connection; another
		// listener on the same IP): the cached IP text, each its own port.
		{"10.0.0.7:61000", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 8081}, "10.0.0.7:61000", "127.0.0.1:8081"},
		{"10.0.0.7:99999", local1, "pipe:10.0.0.7:99999", "127.0.0.1:8080"}, // not a port: what ParseAddrPort makes of it
		{"10.0.0.70:1", &net.TCPAddr{IP: net.ParseIP("127.0.0.1").To16(), Port: 8080}, "10.0.0.70:1", "127.0.0.1:8080"},
		{"[::1]:2", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2), Port: 8080}, "::1:2", "127.0.0.2:8080"},
		{"[::1]:3", local1, "::1:3", "127.0.0.1:8080"},
	} {
		r := httptest.NewRequest("GET", "/a", nil)
		r.RemoteAddr = c.remote
		r = r.WithContext(context.WithValue(r.Context(), http.LocalAddrContextKey, c.local))
		b.fill(r, uint64(i), time.Now())
		attr := b.req.GetAttributes()
		if got := addrString(attr.GetSource().GetAddress()); got != c.src {
			t.Errorf("request %d: source %s, want %s", i, got, c.src)
		}
		if got := addrString(attr.GetDestination().GetAddress()); got != c.dst {
			t.Errorf("request %d: destination %s, want %s", i, got, c.dst)
		}
		b.reset()
	}
}

// FuzzAddrBufReuse: a pooled buffer, whatever addresses it converted
// before (it caches the last IP's text by value), converts each address
// exactly as a fresh buffer does: remote addresses (RemoteAddr text:
// ports such as "0080", "+1", "", 99999; zones; IPv4-mapped; unix socket
// names) and local ones (net.TCPAddr with 4- or 16-byte IPs).
func FuzzAddrBufReuse(f *testing.F) {
	f.Add("10.0.0.7:1\n10.0.0.7:0080\n10.0.0.7:+1\n10.0.0.7:\n10.0.0.7:99999\n[::1]:2\n[::1%eth0]:2\n[::ffff:10.0.0.7]:3\n@\n/run/x.sock:1", []byte{4, 127, 0, 0, 1, 16, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 127, 0, 0, 1, 4, 127, 0, 0, 2})
	f.Add("[fe80::1%eth0]:80\n[fe80::1%eth1]:80\n[fe80::1%eth0]:81\n1.2.3.4:5\n1.2.3.4:05", []byte{0, 16, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1})
	f.Fuzz(func(t *testing.T, remotes string, locals []byte) {
		var reused addrBuf
		convertRemotes := func() {
			for _, s := range strings.Split(remotes, "\n") {
				var fresh addrBuf
				if got, want := addrString(reused.fromRemote(s)), addrString(fresh.fromRemote(s)); got != want {
					t.Fatalf("remote %q: reused buffer %q, fresh %q", s, got, want)
				}
			}
		}
		convertRemotes()
		defer convertRemotes() // after the local ones too
		for port := 1; len(locals) > 0; port++ {
			n := min(int(locals[0]), len(locals)-1) // the IP's length, then its bytes
			a := &net.TCPAddr{IP: net.IP(locals[1 : 1+n]), Port: port}
			locals = locals[1+n:]
			var fresh addrBuf
			if got, want := addrString(reused.fromNetAddr(a)), addrString(fresh.fromNetAddr(a)); got != want {
				t.Fatalf("local %v: reused buffer %q, fresh %q", a, got, want)
			}
		}
	})
}
