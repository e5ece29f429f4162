package login

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/lestrrat-go/jwx/v2/jwt"

	"github.com/flakegate/flakegate/internal/testoidc"
)

func TestDeviceFlow(t *testing.T) {
	p := testoidc.Start(t, testoidc.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	tests := []struct {
		name     string
		clientID string
		prompt   func(DevicePrompt) error
		ctx      func() (context.Context, context.CancelFunc)
		wantErr  string
	}{
		{
			name:   "approved at the verification page",
			prompt: func(dp DevicePrompt) error { return p.Visit(ctx, dp.VerificationURIComplete) },
		},
		{
			name: "approved with the user code typed in",
			prompt: func(dp DevicePrompt) error {
				return p.Visit(ctx, dp.VerificationURI+"?user_code="+dp.UserCode)
			},
		},
		{
			name:    "denied",
			prompt:  func(dp DevicePrompt) error { return p.Deny(dp.UserCode) },
			wantErr: "denied",
		},
		{
			name:     "unknown client",
			clientID: "someone-else",
			prompt:   func(DevicePrompt) error { return errors.New("must not prompt") },
			wantErr:  "start device authorization: provider answered 4",
		},
		{
			name:   "never approved, caller gives up",
			prompt: func(DevicePrompt) error { return nil },
			ctx: func() (context.Context, context.CancelFunc) {
				return context.WithTimeout(ctx, 1500*time.Millisecond)
			},
			wantErr: "wait for device approval",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			runCtx, cancel := ctx, func() {}
			if tt.ctx != nil {
				runCtx, cancel = tt.ctx()
			}
			defer cancel()
			clientID := tt.clientID
			if clientID == "" {
				clientID = p.ClientID
			}
			flow := DeviceFlow{Issuer: p.Issuer, ClientID: clientID, Prompt: tt.prompt}
			tok, err := flow.Run(runCtx)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want it to contain %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			// The ID token is the provider's, signed by its published key.
			set, err := jwk.Fetch(ctx, p.Issuer+"/keys")
			if err != nil {
				t.Fatal(err)
			}
			parsed, err := jwt.ParseString(tok, jwt.WithKeySet(set), jwt.WithIssuer(p.Issuer), jwt.WithAudience(p.ClientID))
			if err != nil {
				t.Fatalf("ID token does not verify: %v", err)
			}
			if parsed.Subject() != "alice" {
				t.Errorf("sub = %q, want alice", parsed.Subject())
			}
			if u, _ := parsed.Get("preferred_username"); u != "alice" {
				t.Errorf("preferred_username = %v, want alice", u)
			}
			if org, _ := parsed.Get("org"); org != "omnicorp" {
				t.Errorf("org = %v, want omnicorp", org)
			}
		})
	}
}

func TestDiscoverErrors(t *testing.T) {
	mux := http.NewServeMux()
	srv := httptest.NewServer(mux)
	defer srv.Close()
	mux.HandleFunc("/nodevice/.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"issuer":"` + srv.URL + `/nodevice","token_endpoint":"` + srv.URL + `/token"}`))
	})
	mux.HandleFunc("/liar/.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"issuer":"https://elsewhere.example","device_authorization_endpoint":"x","token_endpoint":"y"}`))
	})
	tests := []struct{ path, want string }{
		{"/nodevice", "does not offer the device authorization grant"},
		{"/liar", "provider calls itself"},
		{"/missing", "answered 404"},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			_, err := Discover(context.Background(), srv.Client(), srv.URL+tt.path, 5*time.Second)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want %q", err, tt.want)
			}
		})
	}
}
