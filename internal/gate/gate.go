// Package gate is the embedded gate: where no Envoy runs in front of the
// blob server, it makes for every request the same ext_authz v3 Check call
// that Envoy's ext_authz filter would make (see envoy/envoy.yaml) and
// applies the answer as Envoy would.
//
// For each request the gate
//  1. strips the client's x-flakegate-* headers (and, like Envoy's
//     headers_with_underscores_action: DROP_HEADER, headers with underscores),
//  2. normalizes the path like Envoy's connection manager (400 for escaped
//     slashes),
//  3. sends one Check with the attributes Envoy sends (CheckRequestFromHTTP;
//     never the body, which streams to the handler untouched),
//  4. on OK mutates the request's headers and query as asked and calls the
//     next handler; on denial writes the service's status, headers and body;
//     when the service is unreachable, slow or failing writes 503 with
//     Retry-After: 1 (at once, without a Check, while Options.Unavailable
//     reports the service down).
//
// An answer of the gate's own (denial, 503, 400) goes out at once whatever
// the request body does: when the request has a body, that body is never
// read and, over HTTP/1, the response carries "Connection: close"
// (internal/abandon: the answer is not held back by the body, and a client
// still sending it can still read the answer).
package gate

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"

	"github.com/flakegate/flakegate/internal/abandon"
	"github.com/flakegate/flakegate/internal/promutil"
	"github.com/flakegate/flakegate/internal/route"
)

// DefaultTimeout bounds one Check (Envoy's grpc_service timeout in
// envoy/envoy.yaml is the same).
const DefaultTimeout = 2 * time.Second

// MaxHeaderBytes is the most request header bytes (the request target,
// header names and values) the gate checks: Envoy's default
// max_request_headers_kb (60 KiB), which it answers with 431 too. Every header travels in the CheckRequest, and gRPC
// caps a message at 1 MiB: without this bound a request with more headers
// could not be checked over gRPC but could in-process.
const MaxHeaderBytes = 60 << 10

// headerBytes is the size of h's names and values.
func headerBytes(h http.Header) int {
	n := 0
	for k, vs := range h {
		for _, v := range vs {
			n += len(k) + len(v)
		}
	}
	return n
}

// Options configure a Gate. The zero value is usable.
type Options struct {
	// Logger receives check failures (warn) and denials (debug). Default slog.Default().
	Logger *slog.Logger
	// Timeout bounds one Check call. Default DefaultTimeout.
	Timeout time.Duration
	// Registerer, if set, receives the gate's metrics:
	// flakegate_gate_checks_total{result="ok|denied|error"} and
	// flakegate_gate_check_duration_seconds{result}.
	Registerer prometheus.Registerer
	// Unavailable, if set, is asked before each Check: while it reports
	// true (the service is known to be unreachable) the gate answers 503
	// at once instead of waiting up to Timeout for a connection. Use
	// ChannelDown for a connection made by Dial.
	Unavailable func() bool
}

// Gate authorizes HTTP requests with an ext_authz v3 service.
type Gate struct {
	client  authv3.AuthorizationClient
	log     *slog.Logger
	timeout time.Duration
	down    func() bool
	pool    sync.Pool
	checks  *prometheus.CounterVec
	latency *prometheus.HistogramVec
	// byOutcome holds the labelled series, resolved once.
	byOutcome [3]struct {
		checks  prometheus.Counter
		latency prometheus.Observer
	}
}

// New returns a gate that asks client before every request.
func New(client authv3.AuthorizationClient, opts Options) *Gate {
	g := &Gate{client: client, log: opts.Logger, timeout: opts.Timeout, down: opts.Unavailable}
	if g.log == nil {
		g.log = slog.Default()
	}
	if g.timeout <= 0 {
		g.timeout = DefaultTimeout
	}
	g.pool.New = func() any { return newCheckBuf() }
	g.checks = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "flakegate_gate_checks_total",
		Help: "ext_authz checks made by the embedded gate, by result (ok, denied, error).",
	}, []string{"result"})
	g.latency = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "flakegate_gate_check_duration_seconds",
		Help:    "Duration of the embedded gate's ext_authz Check calls, by result.",
		Buckets: []float64{.0002, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
	}, []string{"result"})
	if opts.Registerer != nil {
		g.checks = promutil.Register(opts.Registerer, g.checks)
		g.latency = promutil.Register(opts.Registerer, g.latency)
	}
	for _, o := range []outcome{outcomeOK, outcomeDenied, outcomeError} {
		g.byOutcome[o].checks = g.checks.WithLabelValues(o.String())
		g.byOutcome[o].latency = g.latency.WithLabelValues(o.String())
	}
	return g
}

// Wrap returns a handler that authorizes each request before next sees it.
func (g *Gate) Wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header == nil {
			r.Header = http.Header{}
		}
		StripClientHeaders(r.Header)
		// The request target counts, as in Envoy's limit: a URL of up to
		// net/http's 1 MiB was checked, quoted back in the 400 and logged
		// several times (TestLongURLIsRefusedBeforeTheCheck).
		if len(r.RequestURI)+headerBytes(r.Header) > MaxHeaderBytes {
			abandon.Request(w, r)
			http.Error(w, "request headers too large (the URL counts)", http.StatusRequestHeaderFieldsTooLarge)
			return
		}
		if err := canonicalizeRequest(r); err != nil {
			abandon.Request(w, r)
			http.Error(w, "bad request: "+err.Error(), http.StatusBadRequest)
			return
		}
		if r.Header.Get("X-Request-Id") == "" {
			r.Header.Set("X-Request-Id", newRequestID())
		}

		if g.down != nil && g.down() {
			g.byOutcome[outcomeError].checks.Inc() // no Check made: no latency
			g.log.Warn("ext_authz unreachable: answering 503 without a check",
				"method", r.Method, "path", route.LogPath(r.URL.Path))
			writeUnavailable(w, r)
			return
		}

		b := g.pool.Get().(*checkBuf)
		start := time.Now()
		b.fill(r, rand.Uint64(), start)
		ctx, cancel := context.WithTimeout(r.Context(), g.timeout)
		resp, err := g.client.Check(ctx, &b.req)
		elapsed := time.Since(start)
		cancel()
		if err == nil {
			// Only an answered request goes back to the pool: after an
			// error (a time-out) an in-process server (InProcess) may still
			// be reading it.
			b.reset()
			g.pool.Put(b)
		}

		if err != nil {
			g.observe(outcomeError, elapsed)
			if r.Context().Err() == nil {
				g.log.Warn("ext_authz check failed: answering 503",
					"method", r.Method, "path", route.LogPath(r.URL.Path), "error", err.Error())
			}
			writeUnavailable(w, r)
			return
		}
		w2, out := apply(resp, w, r)
		g.observe(out, elapsed)
		switch out {
		case outcomeOK:
			next.ServeHTTP(w2, r)
			if hw, ok := w2.(*headerWriter); ok {
				hw.apply() // the handler wrote nothing: headers go out after it returns
			}
		case outcomeDenied:
			g.log.Debug("request denied by ext_authz", "method", r.Method, "path", route.LogPath(r.URL.Path),
				"status", resp.GetDeniedResponse().GetStatus().GetCode())
		default:
			g.log.Warn("ext_authz answered with an error", "method", r.Method, "path", route.LogPath(r.URL.Path),
				"grpc_code", resp.GetStatus().GetCode(), "message", resp.GetStatus().GetMessage())
		}
	})
}

func (g *Gate) observe(o outcome, d time.Duration) {
	g.byOutcome[o].checks.Inc()
	g.byOutcome[o].latency.Observe(d.Seconds())
}

// newRequestID is a random UUID (version 4) for x-request-id, which Envoy
// generates for requests that come without one.
func newRequestID() string {
	const hex = "0123456789abcdef"
	var b [16]byte
	hi, lo := rand.Uint64(), rand.Uint64()
	for i := 0; i < 8; i++ {
		b[i], b[8+i] = byte(hi>>(8*i)), byte(lo>>(8*i))
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	var s [36]byte
	j := 0
	for i, c := range b {
		if i == 4 || i == 6 || i == 8 || i == 10 {
			s[j] = '-'
			j++
		}
		s[j], s[j+1] = hex[c>>4], hex[c&0xf]
		j += 2
	}
	return string(s[:])
}

// Dial connects to the ext_authz service at addr: "host:port", ":port"
// (localhost), "unix:/path" or an absolute socket path. The connection is
// plaintext (meant for loopback or a unix socket; pass
// grpc.WithTransportCredentials in extra for TLS), pings the service every
// 30s, and is made in the background: Dial never blocks. A Check waits
// (within the gate's timeout) while the connection is being made; pass
// ChannelDown(conn) as Options.Unavailable to answer 503 at once while
// connection attempts fail.
func Dial(ctx context.Context, addr string, extra ...grpc.DialOption) (*grpc.ClientConn, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("dial ext_authz %s: %w", addr, err)
	}
	target := addr
	switch {
	case addr == "":
		return nil, errors.New("dial ext_authz: empty address")
	case strings.HasPrefix(addr, "/"):
		target = "unix:" + addr
	case strings.HasPrefix(addr, ":"):
		target = "localhost" + addr
	}
	opts := append([]grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		// Ping an idle connection too, so a dead authz (or a half-open
		// connection after its restart) is noticed before the next request
		// waits on it. cmd/authz permits pings every 10s without streams.
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 30 * time.Second, Timeout: 10 * time.Second, PermitWithoutStream: true}),
		// A Check waits (within the gate's per-check timeout) for the
		// connection to come up instead of failing at once while the channel
		// is in its reconnect backoff: otherwise every request in the seconds
		// after authz (re)starts would get a 503 although authz is serving.
		// Still fail closed: the timeout bounds the wait and answers 503.
		// While connection attempts fail (TRANSIENT_FAILURE) a gate given
		// ChannelDown(conn) answers 503 at once instead of waiting.
		grpc.WithDefaultCallOptions(grpc.WaitForReady(true)),
		// Reconnect quickly after an authz restart (gRPC's default backoff
		// grows to two minutes, which a cache would spend answering 503).
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 2 * time.Second},
			MinConnectTimeout: 2 * time.Second,
		}),
	}, extra...)
	conn, err := grpc.NewClient(target, opts...)
	if err != nil {
		return nil, fmt.Errorf("dial ext_authz %s: %w", addr, err)
	}
	conn.Connect()
	return conn, nil
}
