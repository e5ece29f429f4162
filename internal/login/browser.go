package login

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"html"
	"io"
	"net"
	"net/http"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"time"

	"golang.org/x/oauth2"
)

// BrowserFlow signs a user in with the OAuth 2.0 authorization code grant
// and PKCE (RFC 7636) through the user's browser, with a loopback redirect
// (RFC 8252 §7.3), as `gh` and `gcloud` do: for providers without the
// device grant. It returns the ID token.
type BrowserFlow struct {
	Issuer       string
	ClientID     string // a public (native) client with a loopback redirect URI
	ClientSecret string // only for providers that insist on one
	Scopes       []string
	HTTPClient   *http.Client
	// Open shows the sign-in URL to the user: by default the URL is
	// printed to Stderr and a browser is started when possible (tests
	// drive the flow with an HTTP client instead).
	Open   func(url string) error
	Stderr io.Writer
	// Port of the loopback redirect (http://127.0.0.1:<port>/callback);
	// 0: a free one (RFC 8252 requires providers to accept any port).
	Port int
	// RequestTimeout bounds each HTTP call; default 30s. The whole sign-in
	// is bounded by ctx (the user may take minutes).
	RequestTimeout time.Duration
}

// CallbackPath is the loopback redirect's path.
const CallbackPath = "/callback"

// Run performs the flow and returns the ID token.
func (f *BrowserFlow) Run(ctx context.Context) (string, error) {
	if f.Issuer == "" || f.ClientID == "" {
		return "", errors.New("browser login needs an issuer and a client id")
	}
	hc := f.HTTPClient
	if hc == nil {
		hc = http.DefaultClient
	}
	timeout := f.RequestTimeout
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	scopes := f.Scopes
	if len(scopes) == 0 {
		scopes = []string{"openid", "profile", "email"}
	}
	d, err := DiscoverProvider(ctx, hc, f.Issuer, timeout)
	if err != nil {
		return "", err
	}
	if d.AuthorizationEndpoint == "" {
		return "", fmt.Errorf("discover %s: no authorization_endpoint in the provider metadata", f.Issuer)
	}

	ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(f.Port)))
	if err != nil {
		return "", fmt.Errorf("listen for the sign-in redirect on 127.0.0.1:%d: %w", f.Port, err)
	}
	defer ln.Close()
	conf := &oauth2.Config{
		ClientID: f.ClientID, ClientSecret: f.ClientSecret, Scopes: scopes,
		Endpoint:    oauth2.Endpoint{AuthURL: d.AuthorizationEndpoint, TokenURL: d.TokenEndpoint},
		RedirectURL: "http://" + ln.Addr().String() + CallbackPath,
	}
	verifier := oauth2.GenerateVerifier()
	state, nonce := randomString(), randomString()
	authURL := conf.AuthCodeURL(state, oauth2.S256ChallengeOption(verifier), oauth2.SetAuthURLParam("nonce", nonce))

	type result struct {
		code string
		err  error
	}
	results := make(chan result, 1)
	srv := &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != CallbackPath {
			http.NotFound(w, r)
			return
		}
		q := r.URL.Query()
		var res result
		switch {
		case q.Get("state") != state:
			// Not our request (a stale tab, or a forged redirect): ignored,
			// the flow keeps waiting for the real one.
			http.Error(w, "unknown sign-in request (state does not match)", http.StatusBadRequest)
			return
		case q.Get("error") != "":
			// Quoted: the redirect may come from anyone who read the state
			// in the browser's command line (ps), and the text goes to the
			// user's terminal, where control characters would act (review
			// r6, 2026-12-05).
			res.err = fmt.Errorf("the provider refused the sign-in: %q %q", q.Get("error"), q.Get("error_description"))
		case q.Get("code") == "":
			res.err = errors.New("the provider's redirect carries no code")
		default:
			res.code = q.Get("code")
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		msg := "Signed in to flakegate. You can close this window."
		if res.err != nil {
			msg = "Sign-in failed: " + res.err.Error()
		}
		fmt.Fprintf(w, "<!doctype html><title>flakegate</title><p>%s</p>\n", html.EscapeString(msg))
		select {
		case results <- res:
		default:
		}
	})}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()

	open := f.Open
	if open == nil {
		open = func(u string) error {
			if f.Stderr != nil {
				fmt.Fprintf(f.Stderr, "To sign in, open this URL in a browser (waiting for the redirect to %s):\n%s\n", conf.RedirectURL, u)
			}
			return openBrowser(u)
		}
	}
	if err := open(authURL); err != nil && f.Stderr != nil {
		fmt.Fprintf(f.Stderr, "flakegate: could not start a browser (%v); open the URL above yourself\n", err)
	}

	var res result
	select {
	case res = <-results:
	case <-ctx.Done():
		return "", fmt.Errorf("waiting for the browser sign-in: %w", ctx.Err())
	}
	if res.err != nil {
		return "", res.err
	}
	tctx, cancel := context.WithTimeout(context.WithValue(ctx, oauth2.HTTPClient, hc), timeout)
	defer cancel()
	tok, err := conf.Exchange(tctx, res.code, oauth2.VerifierOption(verifier))
	if err != nil {
		return "", fmt.Errorf("redeem the authorization code: %w", err)
	}
	idToken, _ := tok.Extra("id_token").(string)
	if idToken == "" {
		return "", errors.New("the provider returned no ID token (is the openid scope allowed for this client?)")
	}
	if got := unverifiedClaim(idToken, "nonce"); got != nonce {
		return "", errors.New("the ID token's nonce does not match this sign-in: refusing it")
	}
	return idToken, nil
}

func randomString() string {
	var b [24]byte
	_, _ = rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// unverifiedClaim reads a string claim of a JWT without checking its
// signature: only to bind the token to this sign-in (the cache verifies it).
func unverifiedClaim(jwt, name string) string {
	parts := strings.Split(jwt, ".")
	if len(parts) != 3 {
		return ""
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return ""
	}
	var claims map[string]any
	if json.Unmarshal(b, &claims) != nil {
		return ""
	}
	s, _ := claims[name].(string)
	return s
}

// openBrowser starts the desktop's browser on u, when there is one.
func openBrowser(u string) error {
	var cmd *exec.Cmd
	switch runtime.GOOS {
	case "darwin":
		cmd = exec.Command("open", u)
	case "windows":
		cmd = exec.Command("rundll32", "url.dll,FileProtocolHandler", u)
	default:
		cmd = exec.Command("xdg-open", u)
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	go func() { _ = cmd.Wait() }()
	return nil
}
