// Package authzproxy forwards flakegate's own endpoints (/_flakegate/…: the
// token exchange and its JWKS) from the blob server to authz's HTTP
// listener, for setups without Envoy (blobserver -authz-http URL). It plays
// Envoy's "/_flakegate/ → authz_http" route: the embedded gate has already
// checked the request when it gets here, and authz verifies it again.
package authzproxy

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"time"

	"github.com/flakegate/flakegate/internal/route"
)

// Prefix is the path prefix forwarded to authz.
const Prefix = "/_flakegate/"

// Options tune the proxy. The zero value is usable.
type Options struct {
	Logger *slog.Logger
	// Timeout bounds the wait for authz's answer headers (default 30s, as
	// Envoy's route timeout).
	Timeout time.Duration
}

// New returns a handler that forwards requests to the authz HTTP listener
// at target (http://host:port).
func New(target string, opts Options) (http.Handler, error) {
	u, err := url.Parse(target)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || strings.Trim(u.Path, "/") != "" {
		return nil, fmt.Errorf("authz HTTP URL %q: want http://host:port", target)
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	timeout := opts.Timeout
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	transport := &http.Transport{
		Proxy:                 nil, // authz is a sibling: never through an HTTP proxy
		DialContext:           (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConnsPerHost:   16,
		IdleConnTimeout:       90 * time.Second,
		ResponseHeaderTimeout: timeout,
		TLSHandshakeTimeout:   5 * time.Second,
	}
	return &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(u)
			r.SetXForwarded()
		},
		Transport: transport,
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			log.Error("forward to authz failed", "path", r.URL.Path, "error", err)
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("Cache-Control", "no-store")
			w.WriteHeader(http.StatusServiceUnavailable)
			_ = json.NewEncoder(w).Encode(map[string]string{"error": "token service unavailable, try again later"})
		},
	}, nil
}

// Route sends /_flakegate/… to authz and everything else (with
// route.PublicKeysPath, the blob server's) to next.
func Route(authz, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, Prefix) && r.URL.Path != route.PublicKeysPath {
			authz.ServeHTTP(w, r)
			return
		}
		next.ServeHTTP(w, r)
	})
}
