// Package testoidc runs a real OpenID Provider in-process for tests: it is
// built on github.com/zitadel/oidc/v3/pkg/op (discovery, JWKS, token endpoint
// and the OAuth 2.0 device authorization grant of RFC 8628) over a small
// in-memory storage. It is test-only code: one public client, a fixed set of
// users, and a device verification page that approves (or denies) a user
// code as soon as it is visited, standing in for the user's browser.
package testoidc

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"
)

// DevicePath is where the verification page lives (verification_uri).
const DevicePath = "/device"

// User is an account at the provider.
type User struct {
	Subject           string // sub; defaults to the map key
	PreferredUsername string // defaults to the map key
	Email             string
	Org               string   // emitted as the "org" claim when set
	Groups            []string // emitted as the "groups" claim when set
}

// Options configure a Provider. The zero value is usable.
type Options struct {
	// ClientID of the single public (native) client; default "flakegate-cli".
	ClientID string
	// IDTokenLifetime is the lifetime of issued ID tokens; default 5 minutes,
	// like a GitHub Actions token.
	IDTokenLifetime time.Duration
	// Users by login name; default: alice in org omnicorp.
	Users map[string]User
	// ApproveAs is the user a visited verification page approves as; default "alice".
	ApproveAs string
}

// Provider is a running OpenID Provider.
type Provider struct {
	// Issuer is the provider's issuer URL (http://127.0.0.1:port).
	Issuer string
	// ClientID is the public client to use for the device flow.
	ClientID string

	srv     *httptest.Server
	storage *storage
}

// Start starts a provider on loopback; it is shut down when the test ends.
func Start(t testing.TB, opts Options) *Provider {
	t.Helper()
	p, err := New(opts)
	if err != nil {
		t.Fatalf("start test OIDC provider: %v", err)
	}
	t.Cleanup(p.Close)
	return p
}

// New starts a provider on loopback. Close it when done.
func New(opts Options) (*Provider, error) {
	if opts.ClientID == "" {
		opts.ClientID = "flakegate-cli"
	}
	if opts.IDTokenLifetime == 0 {
		opts.IDTokenLifetime = 5 * time.Minute
	}
	if opts.Users == nil {
		opts.Users = map[string]User{"alice": {Email: "alice@omnicorp.example", Org: "omnicorp"}}
	}
	if opts.ApproveAs == "" {
		opts.ApproveAs = "alice"
	}
	users := make(map[string]User, len(opts.Users))
	for login, u := range opts.Users {
		if u.Subject == "" {
			u.Subject = login
		}
		if u.PreferredUsername == "" {
			u.PreferredUsername = login
		}
		users[u.Subject] = u
	}
	approve, ok := opts.Users[opts.ApproveAs]
	if !ok {
		return nil, fmt.Errorf("ApproveAs %q is not among the users", opts.ApproveAs)
	}
	approveSub := approve.Subject
	if approveSub == "" {
		approveSub = opts.ApproveAs
	}

	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate signing key: %w", err)
	}
	st := &storage{
		key:      key,
		kid:      keyID(key),
		client:   &client{id: opts.ClientID, idTokenLifetime: opts.IDTokenLifetime},
		users:    users,
		devices:  map[string]*op.DeviceAuthorizationState{},
		byUser:   map[string]string{},
		approver: approveSub,
	}

	srv := httptest.NewUnstartedServer(nil)
	issuer := "http://" + srv.Listener.Addr().String()
	var cryptoKey [32]byte
	if _, err := rand.Read(cryptoKey[:]); err != nil {
		return nil, fmt.Errorf("generate crypto key: %w", err)
	}
	provider, err := op.NewOpenIDProvider(issuer, &op.Config{
		CryptoKey:       cryptoKey,
		CodeMethodS256:  true,
		SupportedScopes: []string{oidc.ScopeOpenID, oidc.ScopeProfile, oidc.ScopeEmail},
		DeviceAuthorization: op.DeviceAuthorizationConfig{
			Lifetime:     5 * time.Minute,
			PollInterval: time.Second,
			UserFormPath: DevicePath,
			UserCode:     op.UserCodeBase20,
		},
	}, st, op.WithAllowInsecure())
	if err != nil {
		return nil, fmt.Errorf("create OpenID provider: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+DevicePath, st.serveVerification)
	mux.Handle("/", provider)
	srv.Config.Handler = mux
	srv.Start()
	return &Provider{Issuer: issuer, ClientID: opts.ClientID, srv: srv, storage: st}, nil
}

// Close stops the provider.
func (p *Provider) Close() { p.srv.Close() }

// Visit plays the user's browser: it opens a verification URL (with
// ?user_code=…, or with the code appended when given separately), which
// approves the pending device authorization as the configured user.
func (p *Provider) Visit(ctx context.Context, verificationURL string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, verificationURL, nil)
	if err != nil {
		return fmt.Errorf("visit verification page: %w", err)
	}
	resp, err := p.srv.Client().Do(req)
	if err != nil {
		return fmt.Errorf("visit verification page: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("visit verification page: %s", resp.Status)
	}
	return nil
}

// Deny denies the pending device authorization with this user code.
func (p *Provider) Deny(userCode string) error { return p.storage.finish(userCode, "", true) }

// DeviceRequests counts device authorizations started so far.
func (p *Provider) DeviceRequests() int {
	p.storage.mu.Lock()
	defer p.storage.mu.Unlock()
	return p.storage.started
}

// SigningKeyID is the kid of the provider's signing key.
func (p *Provider) SigningKeyID() string { return p.storage.kid }

func keyID(k *ecdsa.PrivateKey) string {
	b, _ := k.PublicKey.Bytes() // P-256 keys always encode
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:8])
}

type storage struct {
	key      *ecdsa.PrivateKey
	kid      string
	client   *client
	users    map[string]User // by subject
	approver string

	mu      sync.Mutex
	devices map[string]*op.DeviceAuthorizationState // by device code
	byUser  map[string]string                       // user code → device code
	started int
	tokens  int
}

func (s *storage) serveVerification(w http.ResponseWriter, r *http.Request) {
	code := r.URL.Query().Get("user_code")
	if code == "" {
		http.Error(w, "enter your code: add ?user_code=XXXX-XXXX", http.StatusBadRequest)
		return
	}
	if err := s.finish(code, s.approver, false); err != nil {
		http.Error(w, err.Error(), http.StatusNotFound)
		return
	}
	fmt.Fprintf(w, "device approved for %s\n", s.users[s.approver].PreferredUsername)
}

func (s *storage) finish(userCode, subject string, deny bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	st, ok := s.devices[s.byUser[userCode]]
	if !ok || time.Now().After(st.Expires) {
		return errors.New("unknown or expired user code")
	}
	if deny {
		st.Denied = true
		return nil
	}
	st.Done, st.Subject, st.AuthTime, st.AMR = true, subject, time.Now(), []string{"pwd"}
	return nil
}

// StoreDeviceAuthorization implements op.DeviceAuthorizationStorage.
func (s *storage) StoreDeviceAuthorization(_ context.Context, clientID, deviceCode, userCode string, expires time.Time, scopes []string) error {
	if clientID != s.client.id {
		return errors.New("unknown client")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, dup := s.byUser[userCode]; dup {
		return op.ErrDuplicateUserCode
	}
	s.devices[deviceCode] = &op.DeviceAuthorizationState{ClientID: clientID, Scopes: scopes, Expires: expires}
	s.byUser[userCode] = deviceCode
	s.started++
	return nil
}

// GetDeviceAuthorizatonState implements op.DeviceAuthorizationStorage. A
// completed authorization is handed out once: the device code is then spent.
func (s *storage) GetDeviceAuthorizatonState(ctx context.Context, clientID, deviceCode string) (*op.DeviceAuthorizationState, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	st, ok := s.devices[deviceCode]
	if !ok || st.ClientID != clientID {
		return nil, errors.New("device code not found for client")
	}
	cp := *st
	cp.Scopes = append([]string(nil), st.Scopes...)
	if st.Done || st.Denied {
		delete(s.devices, deviceCode)
	}
	return &cp, nil
}

func (s *storage) GetClientByClientID(_ context.Context, clientID string) (op.Client, error) {
	if clientID != s.client.id {
		return nil, oidc.ErrInvalidClient().WithDescription("unknown client")
	}
	return s.client, nil
}

func (s *storage) AuthorizeClientIDSecret(context.Context, string, string) error {
	return errors.New("client secrets are not supported")
}

func (s *storage) CreateAccessToken(context.Context, op.TokenRequest) (string, time.Time, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tokens++
	return fmt.Sprintf("at-%d", s.tokens), time.Now().Add(s.client.idTokenLifetime), nil
}

func (s *storage) SetUserinfoFromScopes(context.Context, *oidc.UserInfo, string, string, []string) error {
	return nil
}

// SetUserinfoFromRequest implements op.CanSetUserinfoFromRequest: the ID
// token carries the user's profile claims.
func (s *storage) SetUserinfoFromRequest(_ context.Context, info *oidc.UserInfo, req op.IDTokenRequest, _ []string) error {
	return s.fillUserinfo(info, req.GetSubject())
}

func (s *storage) SetUserinfoFromToken(_ context.Context, info *oidc.UserInfo, _, subject, _ string) error {
	return s.fillUserinfo(info, subject)
}

func (s *storage) fillUserinfo(info *oidc.UserInfo, subject string) error {
	u, ok := s.users[subject]
	if !ok {
		return fmt.Errorf("unknown user %q", subject)
	}
	info.Subject = u.Subject
	info.PreferredUsername = u.PreferredUsername
	if u.Email != "" {
		info.Email = u.Email
		info.EmailVerified = true
	}
	if u.Org != "" {
		info.AppendClaims("org", u.Org)
	}
	if len(u.Groups) > 0 {
		info.AppendClaims("groups", u.Groups)
	}
	return nil
}

func (s *storage) SigningKey(context.Context) (op.SigningKey, error) {
	return signingKey{s.kid, s.key}, nil
}

func (s *storage) SignatureAlgorithms(context.Context) ([]jose.SignatureAlgorithm, error) {
	return []jose.SignatureAlgorithm{jose.ES256}, nil
}

func (s *storage) KeySet(context.Context) ([]op.Key, error) {
	return []op.Key{publicKey{s.kid, &s.key.PublicKey}}, nil
}

func (s *storage) Health(context.Context) error { return nil }

// The rest of op.Storage is not used by the device flow.
var errUnsupported = errors.New("not supported by the test provider")

func (s *storage) CreateAuthRequest(context.Context, *oidc.AuthRequest, string) (op.AuthRequest, error) {
	return nil, errUnsupported
}
func (s *storage) AuthRequestByID(context.Context, string) (op.AuthRequest, error) {
	return nil, errUnsupported
}
func (s *storage) AuthRequestByCode(context.Context, string) (op.AuthRequest, error) {
	return nil, errUnsupported
}
func (s *storage) SaveAuthCode(context.Context, string, string) error { return errUnsupported }
func (s *storage) DeleteAuthRequest(context.Context, string) error    { return errUnsupported }
func (s *storage) CreateAccessAndRefreshTokens(context.Context, op.TokenRequest, string) (string, string, time.Time, error) {
	return "", "", time.Time{}, errUnsupported
}
func (s *storage) TokenRequestByRefreshToken(context.Context, string) (op.RefreshTokenRequest, error) {
	return nil, errUnsupported
}
func (s *storage) TerminateSession(context.Context, string, string) error { return errUnsupported }
func (s *storage) RevokeToken(context.Context, string, string, string) *oidc.Error {
	return oidc.ErrUnsupportedGrantType()
}
func (s *storage) GetRefreshTokenInfo(context.Context, string, string) (string, string, error) {
	return "", "", op.ErrInvalidRefreshToken
}
func (s *storage) SetIntrospectionFromToken(context.Context, *oidc.IntrospectionResponse, string, string, string) error {
	return errUnsupported
}
func (s *storage) GetPrivateClaimsFromScopes(context.Context, string, string, []string) (map[string]any, error) {
	return nil, nil
}
func (s *storage) GetKeyByIDAndClientID(context.Context, string, string) (*jose.JSONWebKey, error) {
	return nil, errUnsupported
}
func (s *storage) ValidateJWTProfileScopes(context.Context, string, []string) ([]string, error) {
	return nil, errUnsupported
}

type signingKey struct {
	id  string
	key *ecdsa.PrivateKey
}

func (k signingKey) SignatureAlgorithm() jose.SignatureAlgorithm { return jose.ES256 }
func (k signingKey) Key() any                                    { return k.key }
func (k signingKey) ID() string                                  { return k.id }

type publicKey struct {
	id  string
	key *ecdsa.PublicKey
}

func (k publicKey) ID() string                         { return k.id }
func (k publicKey) Algorithm() jose.SignatureAlgorithm { return jose.ES256 }
func (k publicKey) Use() string                        { return "sig" }
func (k publicKey) Key() any                           { return k.key }

// client is the single public native client allowed the device grant.
type client struct {
	id              string
	idTokenLifetime time.Duration
}

func (c *client) GetID() string                       { return c.id }
func (c *client) RedirectURIs() []string              { return nil }
func (c *client) PostLogoutRedirectURIs() []string    { return nil }
func (c *client) ApplicationType() op.ApplicationType { return op.ApplicationTypeNative }
func (c *client) AuthMethod() oidc.AuthMethod         { return oidc.AuthMethodNone }
func (c *client) ResponseTypes() []oidc.ResponseType  { return nil }
func (c *client) GrantTypes() []oidc.GrantType        { return []oidc.GrantType{oidc.GrantTypeDeviceCode} }
func (c *client) LoginURL(string) string              { return "" }
func (c *client) AccessTokenType() op.AccessTokenType { return op.AccessTokenTypeBearer }
func (c *client) IDTokenLifetime() time.Duration      { return c.idTokenLifetime }
func (c *client) DevMode() bool                       { return true }
func (c *client) RestrictAdditionalIdTokenScopes() func([]string) []string {
	return func(s []string) []string { return s }
}
func (c *client) RestrictAdditionalAccessTokenScopes() func([]string) []string {
	return func(s []string) []string { return s }
}
func (c *client) IsScopeAllowed(string) bool           { return false }
func (c *client) IDTokenUserinfoClaimsAssertion() bool { return true }
func (c *client) ClockSkew() time.Duration             { return 0 }
