package login

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// DeviceGrantType is the grant_type of the RFC 8628 token request.
const DeviceGrantType = "urn:ietf:params:oauth:grant-type:device_code"

// DeviceFlow signs a user in at an OpenID provider with the OAuth 2.0
// device authorization grant (RFC 8628) and returns the ID token.
type DeviceFlow struct {
	Issuer       string   // the provider's issuer URL (discovery at /.well-known/openid-configuration)
	ClientID     string   // a public client allowed the device grant
	ClientSecret string   // only for providers that insist on one
	Scopes       []string // default: openid profile email
	HTTPClient   *http.Client
	// Prompt tells the user where to go; it is called once, before polling.
	Prompt func(DevicePrompt) error
	// RequestTimeout bounds each HTTP call; default 30s.
	RequestTimeout time.Duration
	// MinInterval is the smallest wait between polls whatever the provider
	// says (tests may lower it); default 1s. RFC 8628 default is 5s when the
	// provider names none.
	MinInterval time.Duration
}

// DevicePrompt is what the user has to do to approve this device.
type DevicePrompt struct {
	VerificationURI         string
	VerificationURIComplete string // may be empty
	UserCode                string
	ExpiresAt               time.Time
}

// Discovery is the part of the provider metadata the sign-in flows need.
type Discovery struct {
	Issuer                      string `json:"issuer"`
	DeviceAuthorizationEndpoint string `json:"device_authorization_endpoint"`
	AuthorizationEndpoint       string `json:"authorization_endpoint"`
	TokenEndpoint               string `json:"token_endpoint"`
}

// Discover fetches the provider's OpenID configuration and requires the
// device authorization grant.
func Discover(ctx context.Context, hc *http.Client, issuer string, timeout time.Duration) (*Discovery, error) {
	d, err := DiscoverProvider(ctx, hc, issuer, timeout)
	if err != nil {
		return nil, err
	}
	if d.DeviceAuthorizationEndpoint == "" {
		return nil, fmt.Errorf("discover %s: the provider does not offer the device authorization grant (no device_authorization_endpoint)", issuer)
	}
	return d, nil
}

// DiscoverProvider fetches the provider's OpenID configuration (issuer and
// token endpoint checked; the grant endpoints may be absent).
func DiscoverProvider(ctx context.Context, hc *http.Client, issuer string, timeout time.Duration) (*Discovery, error) {
	u := strings.TrimSuffix(issuer, "/") + "/.well-known/openid-configuration"
	req, err := http.NewRequest(http.MethodGet, u, nil)
	if err != nil {
		return nil, fmt.Errorf("discover %s: %w", issuer, err)
	}
	req.Header.Set("Accept", "application/json")
	var d Discovery
	status, err := doJSON(ctx, hc, req, timeout, &d)
	if err != nil {
		return nil, fmt.Errorf("discover %s: %w", issuer, err)
	}
	if status != http.StatusOK {
		return nil, fmt.Errorf("discover %s: %s answered %d", issuer, u, status)
	}
	if strings.TrimSuffix(d.Issuer, "/") != strings.TrimSuffix(issuer, "/") {
		return nil, fmt.Errorf("discover %s: provider calls itself %q", issuer, d.Issuer)
	}
	if d.TokenEndpoint == "" {
		return nil, fmt.Errorf("discover %s: no token_endpoint in the provider metadata", issuer)
	}
	return &d, nil
}

type deviceAuthResponse struct {
	DeviceCode              string `json:"device_code"`
	UserCode                string `json:"user_code"`
	VerificationURI         string `json:"verification_uri"`
	VerificationURIComplete string `json:"verification_uri_complete"`
	VerificationURL         string `json:"verification_url"` // Google's pre-RFC name
	ExpiresIn               int    `json:"expires_in"`
	Interval                int    `json:"interval"`
}

type tokenResponse struct {
	IDToken          string `json:"id_token"`
	AccessToken      string `json:"access_token"`
	Error            string `json:"error"`
	ErrorDescription string `json:"error_description"`
}

// oauthError is an RFC 6749 error answer.
type oauthError struct {
	Code        string `json:"error"`
	Description string `json:"error_description"`
}

// Run performs the device flow and returns the ID token.
func (f *DeviceFlow) Run(ctx context.Context) (string, error) {
	if f.Issuer == "" || f.ClientID == "" {
		return "", errors.New("device login needs an issuer and a client id")
	}
	hc := f.HTTPClient
	if hc == nil {
		hc = http.DefaultClient
	}
	timeout := f.RequestTimeout
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	minInterval := f.MinInterval
	if minInterval <= 0 {
		minInterval = time.Second
	}
	scopes := f.Scopes
	if len(scopes) == 0 {
		scopes = []string{"openid", "profile", "email"}
	}

	d, err := Discover(ctx, hc, f.Issuer, timeout)
	if err != nil {
		return "", err
	}

	form := url.Values{"client_id": {f.ClientID}, "scope": {strings.Join(scopes, " ")}}
	if f.ClientSecret != "" {
		form.Set("client_secret", f.ClientSecret)
	}
	var auth deviceAuthResponse
	var authErr oauthError
	status, err := postForm(ctx, hc, d.DeviceAuthorizationEndpoint, form, timeout, &auth, &authErr)
	if err != nil {
		return "", fmt.Errorf("start device authorization: %w", err)
	}
	if status != http.StatusOK {
		return "", fmt.Errorf("start device authorization: provider answered %d: %s", status, authErr.text())
	}
	if auth.VerificationURI == "" {
		auth.VerificationURI = auth.VerificationURL
	}
	if auth.DeviceCode == "" || auth.UserCode == "" || auth.VerificationURI == "" {
		return "", errors.New("start device authorization: provider answer lacks device_code, user_code or verification_uri")
	}
	expiresIn := time.Duration(auth.ExpiresIn) * time.Second
	if expiresIn <= 0 {
		expiresIn = 10 * time.Minute
	}
	deadline := time.Now().Add(expiresIn)
	interval := time.Duration(auth.Interval) * time.Second
	if auth.Interval <= 0 {
		interval = 5 * time.Second // RFC 8628 §3.2 default
	}
	interval = max(interval, minInterval)

	if f.Prompt != nil {
		if err := f.Prompt(DevicePrompt{
			VerificationURI:         auth.VerificationURI,
			VerificationURIComplete: auth.VerificationURIComplete,
			UserCode:                auth.UserCode,
			ExpiresAt:               deadline,
		}); err != nil {
			return "", fmt.Errorf("device authorization prompt: %w", err)
		}
	}

	ctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	poll := url.Values{"grant_type": {DeviceGrantType}, "device_code": {auth.DeviceCode}, "client_id": {f.ClientID}}
	if f.ClientSecret != "" {
		poll.Set("client_secret", f.ClientSecret)
	}
	timer := time.NewTimer(interval)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) && time.Now().After(deadline) {
				return "", errors.New("device authorization expired before it was approved: run login again")
			}
			return "", fmt.Errorf("wait for device approval: %w", ctx.Err())
		case <-timer.C:
		}
		var tok tokenResponse
		var tokErr oauthError
		status, err := postForm(ctx, hc, d.TokenEndpoint, poll, timeout, &tok, &tokErr)
		if err != nil {
			return "", fmt.Errorf("poll token endpoint: %w", err)
		}
		if status == http.StatusOK {
			if tok.IDToken == "" {
				return "", errors.New("the provider issued no ID token: the client must be allowed the openid scope")
			}
			return tok.IDToken, nil
		}
		switch tokErr.Code {
		case "authorization_pending":
		case "slow_down":
			interval += 5 * time.Second // RFC 8628 §3.5
		case "access_denied":
			return "", errors.New("the sign-in was denied at the provider")
		case "expired_token":
			return "", errors.New("device authorization expired before it was approved: run login again")
		default:
			return "", fmt.Errorf("poll token endpoint: provider answered %d: %s", status, tokErr.text())
		}
		timer.Reset(interval)
	}
}

func (e oauthError) text() string {
	switch {
	case e.Code == "":
		return "no error detail"
	case e.Description == "":
		return e.Code
	}
	return e.Code + ": " + e.Description
}

func postForm(ctx context.Context, hc *http.Client, endpoint string, form url.Values, timeout time.Duration, okDst, errDst any) (int, error) {
	req, err := http.NewRequest(http.MethodPost, endpoint, strings.NewReader(form.Encode()))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	return doJSONOr(ctx, hc, req, timeout, okDst, errDst)
}

func doJSON(ctx context.Context, hc *http.Client, req *http.Request, timeout time.Duration, dst any) (int, error) {
	return doJSONOr(ctx, hc, req, timeout, dst, nil)
}

// maxBody bounds what is read from any server answer.
const maxBody = 1 << 20

// doJSONOr sends req with a timeout; a 2xx body is decoded into okDst, any
// other JSON body into errDst (when non-nil). It returns the status.
func doJSONOr(ctx context.Context, hc *http.Client, req *http.Request, timeout time.Duration, okDst, errDst any) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	resp, err := hc.Do(req.WithContext(ctx))
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil {
		return 0, fmt.Errorf("read answer from %s: %w", req.URL.Host, err)
	}
	isJSON := false
	if mt, _, err := mime.ParseMediaType(resp.Header.Get("Content-Type")); err == nil {
		isJSON = mt == "application/json" || strings.HasSuffix(mt, "+json")
	}
	if resp.StatusCode/100 == 2 {
		if err := json.Unmarshal(body, okDst); err != nil {
			return resp.StatusCode, fmt.Errorf("decode answer from %s (HTTP %d): %w", req.URL.Host, resp.StatusCode, err)
		}
		return resp.StatusCode, nil
	}
	if text, ok := errDst.(*string); ok {
		*text = firstLine(body)
		return resp.StatusCode, nil
	}
	if errDst != nil && (isJSON || json.Valid(body)) {
		_ = json.Unmarshal(body, errDst) // best effort: the status is what counts
	}
	return resp.StatusCode, nil
}

// firstLine is the first line of a text answer, trimmed and kept short.
func firstLine(b []byte) string {
	s, _, _ := strings.Cut(string(b), "\n")
	s = strings.TrimSpace(s)
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	return s
}
