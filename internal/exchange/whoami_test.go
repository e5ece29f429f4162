package exchange_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/flakegate/flakegate/internal/route"
)

func (st *stack) whoami(t *testing.T, method, authorization string) (int, route.WhoamiResponse, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, st.httpURL+route.WhoamiPath, nil)
	if err != nil {
		t.Fatal(err)
	}
	if authorization != "" {
		req.Header.Set("Authorization", authorization)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var w route.WhoamiResponse
	if resp.StatusCode == http.StatusOK {
		if err := json.Unmarshal(b, &w); err != nil {
			t.Fatalf("whoami answer %q: %v", b, err)
		}
	}
	return resp.StatusCode, w, string(b)
}

// TestWhoami: the endpoint names the verified subject of an IdP token and
// of a cache token (via exchange, with its expiry and id), refuses what
// every request refuses (no token, an expired or revoked one), and the gate
// lets it through (route action whoami keeps Authorization, no policy).
func TestWhoami(t *testing.T) {
	st := startStack(t, stackOptions{})
	ci := st.ghToken("omnicorp/app", "refs/heads/main")
	status, w, body := st.whoami(t, http.MethodGet, bearer(ci))
	if status != 200 || w.Subject != "github:omnicorp/app@refs/heads/main" || w.Via != "idp" || w.Provider != "github" || w.Repo != "omnicorp/app" || w.ExpiresAt.IsZero() {
		t.Fatalf("IdP token: %d %+v %s", status, w, body)
	}

	tok := st.mustExchange(t, ci)
	status, w, body = st.whoami(t, http.MethodGet, netrcAuth(tok.Token))
	if status != 200 || w.Via != "exchange" || w.TokenID != tok.TokenID || !w.ExpiresAt.Equal(tok.ExpiresAt) || w.Subject != "github:omnicorp/app@refs/heads/main" {
		t.Fatalf("cache token: %d %+v %s (want token id %s, expiry %s)", status, w, body, tok.TokenID, tok.ExpiresAt)
	}

	if status, _, body := st.whoami(t, http.MethodGet, ""); status != 401 {
		t.Fatalf("no token: %d %s", status, body)
	}
	if status, _, body := st.whoami(t, http.MethodGet, bearer(ci+"x")); status != 401 {
		t.Fatalf("tampered token: %d %s", status, body)
	}
	if status, _, body := st.whoami(t, http.MethodPost, bearer(ci)); status != 405 {
		t.Fatalf("POST: %d %s", status, body)
	}
	// Through the gate (Check): allowed with a token, 401 without.
	if got := st.check(t, http.MethodGet, route.WhoamiPath, netrcAuth(tok.Token)); got != 200 {
		t.Fatalf("gate check with a token: %d", got)
	}
	if got := st.check(t, http.MethodGet, route.WhoamiPath, ""); got != 401 {
		t.Fatalf("gate check without a token: %d", got)
	}

	st.writePolicyFile(t, "denylist.yaml", "token_ids:\n  - "+tok.TokenID+"\n")
	deadline := time.Now().Add(5 * time.Second)
	for {
		status, _, _ = st.whoami(t, http.MethodGet, netrcAuth(tok.Token))
		if status == 401 || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if status != 401 {
		t.Fatalf("revoked cache token: %d, want 401", status)
	}
}
