package exchange_test

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

// Store paths for scopes (the closure lookup is not reached by these tests
// unless said).
const (
	rootPath  = "/nix/store/" + testHash + "-system"
	otherRoot = "/nix/store/1c6kzph7l0dcbfmjap64f0czdafn3b7x-other"
)

func scopeBody(flake string, roots ...string) string {
	b, _ := json.Marshal(map[string]any{"scope": map[string]any{"flake": flake, "closure": roots[0], "roots": roots[1:]}})
	return string(b)
}

// mintScoped mints a scoped token as the CI job of flake.
func (st *stack) mintScoped(t testing.TB, flake string, roots ...string) exchangeResult {
	t.Helper()
	r := st.exchange(t, bearer(st.ghToken(flake, "refs/heads/main")), scopeBody(flake, roots...))
	if r.status != http.StatusOK {
		t.Fatalf("mint a scoped token for %s: %d %v", flake, r.status, r.body)
	}
	return r
}

// Who may mint a scoped token, and that a scoped token cannot mint another
// one, widen its scope or push.
func TestScopedTokenMinting(t *testing.T) {
	st := startStack(t, stackOptions{scopedMaxLifetime: 30 * 24 * time.Hour})
	r := st.mintScoped(t, "omnicorp/app", rootPath)
	if got := r.resp.Scope["flake"]; got != "omnicorp/app" {
		t.Errorf("answer's scope = %v", r.resp.Scope)
	}
	if left := time.Until(r.resp.ExpiresAt); left < 29*24*time.Hour || left > 30*24*time.Hour {
		t.Errorf("scoped token without a lifetime lives %s, want the scoped cap (30 days)", left)
	}
	scopedTok := r.resp.Token

	for _, c := range []struct {
		name, auth, body string
		want             int
	}{
		{"CI of the flake on an unprotected ref", bearer(st.ghToken("omnicorp/app", "refs/heads/feature")), scopeBody("omnicorp/app", rootPath), 403},
		{"CI of another flake of the org (may read, not push)", bearer(st.ghToken("omnicorp/tools", "refs/heads/main")), scopeBody("omnicorp/app", rootPath), 403},
		{"CI asking for a flake it cannot push", bearer(st.ghToken("omnicorp/app", "refs/heads/main")), scopeBody("omnicorp/other", rootPath), 403},
		{"the scoped token, unscoped", bearer(scopedTok), "", 403},
		{"the scoped token, same scope", bearer(scopedTok), scopeBody("omnicorp/app", rootPath), 403},
		{"the scoped token, wider roots", netrcAuth(scopedTok), scopeBody("omnicorp/app", rootPath, otherRoot), 403},
		{"the scoped token, another flake", bearer(scopedTok), scopeBody("omnicorp/other", rootPath), 403},
		{"no token", "", scopeBody("omnicorp/app", rootPath), 401},
		{"not a store path", bearer(st.ghToken("omnicorp/app", "refs/heads/main")), scopeBody("omnicorp/app", "/etc/passwd"), 400},
		{"a path below a store path", bearer(st.ghToken("omnicorp/app", "refs/heads/main")), scopeBody("omnicorp/app", rootPath+"/bin/sh"), 400},
		{"not a flake", bearer(st.ghToken("omnicorp/app", "refs/heads/main")), scopeBody("omnicorp", rootPath), 400},
		{"too many roots", bearer(st.ghToken("omnicorp/app", "refs/heads/main")), scopeBody("omnicorp/app", manyRoots(65)...), 400},
		{"unknown scope key", bearer(st.ghToken("omnicorp/app", "refs/heads/main")), `{"scope": {"flake": "omnicorp/app", "closure": "` + rootPath + `", "write": true}}`, 400},
	} {
		t.Run(c.name, func(t *testing.T) {
			got := st.exchange(t, c.auth, c.body)
			if got.status != c.want {
				t.Errorf("status %d %v, want %d", got.status, got.body, c.want)
			}
		})
	}

	// A scoped token asks for 200 days: capped at 30.
	long := st.exchange(t, bearer(st.ghToken("omnicorp/app", "refs/heads/main")),
		fmt.Sprintf(`{"lifetime_seconds": %d, "scope": {"flake": "omnicorp/app", "closure": %q}}`, 200*86400, rootPath))
	if long.status != 200 || time.Until(long.resp.ExpiresAt) > 30*24*time.Hour {
		t.Errorf("200-day scoped token: %d, expires %s; want capped at 30 days", long.status, long.resp.ExpiresAt)
	}
	// An unscoped token is still capped by -token-max-lifetime (12h).
	plain := st.exchange(t, bearer(st.ghToken("omnicorp/app", "refs/heads/main")), fmt.Sprintf(`{"lifetime_seconds": %d}`, 200*86400))
	if plain.status != 200 || time.Until(plain.resp.ExpiresAt) > 12*time.Hour {
		t.Errorf("unscoped token asking 200 days: %d, expires %s; want at most 12h", plain.status, plain.resp.ExpiresAt)
	}

	// What it may do through the gate, decided before any closure lookup.
	auth := netrcAuth(scopedTok)
	for _, c := range []struct {
		method, path string
		want         int
	}{
		{"GET", "/omnicorp/other/" + testHash + ".narinfo", 404}, // another flake its minter may read
		{"GET", "/omnicorp/other/nar/" + testNar, 404},
		{"GET", "/omnicorp/other/log/" + testHash + "-x.drv", 404},
		{"HEAD", "/omnicorp/tools/" + testHash + ".narinfo", 404},
		{"PUT", "/omnicorp/app/" + testHash + ".narinfo", 403},
		{"PUT", "/omnicorp/app/nar/" + testNar, 403},
		{"GET", "/nix-cache-info", 200},
		{"GET", "/omnicorp/app/nix-cache-info", 200},
		// Within its flake the closure lookup decides; here it cannot be
		// reached (nothing listens at the owners URL): fail closed.
		{"GET", "/omnicorp/app/" + testHash + ".narinfo", 503},
		{"GET", "/" + testHash + ".narinfo", 503},
	} {
		if got := st.check(t, c.method, c.path, auth); got != c.want {
			t.Errorf("%s %s with the scoped token: %d, want %d", c.method, c.path, got, c.want)
		}
	}
}

// The scope lives in the token only as signed claims: changing, widening or
// removing it breaks the signature (401), whatever else the token holds.
func TestScopedTokenTampering(t *testing.T) {
	st := startStack(t, stackOptions{})
	tok := st.mintScoped(t, "omnicorp/app", rootPath).resp.Token
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("token has %d parts", len(parts))
	}
	raw, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	tamper := func(edit func(c map[string]any)) string {
		var c map[string]any
		if err := json.Unmarshal(raw, &c); err != nil {
			t.Fatal(err)
		}
		edit(c)
		b, err := json.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		return parts[0] + "." + base64.RawURLEncoding.EncodeToString(b) + "." + parts[2]
	}
	m, p := readFlake("omnicorp/other")
	for name, forged := range map[string]string{
		"scope removed": tamper(func(c map[string]any) { delete(c, "fg_scope") }),
		"other flake":   tamper(func(c map[string]any) { c["fg_scope"].(map[string]any)["flake"] = "omnicorp/other" }),
		"wider roots": tamper(func(c map[string]any) {
			c["fg_scope"].(map[string]any)["roots"] = []any{rootPath, otherRoot}
		}),
	} {
		t.Run(name, func(t *testing.T) {
			if got := st.check(t, m, p, netrcAuth(forged)); got != http.StatusUnauthorized {
				t.Errorf("tampered token: %d, want 401", got)
			}
			if got := st.exchange(t, bearer(forged), ""); got.status != http.StatusUnauthorized {
				t.Errorf("tampered token at the exchange: %d, want 401", got.status)
			}
		})
	}
	// The untampered token: another flake is the 404 of an absent object.
	if got := st.check(t, m, p, netrcAuth(tok)); got != http.StatusNotFound {
		t.Errorf("genuine scoped token on another flake: %d, want 404", got)
	}
}

func manyRoots(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("/nix/store/%s-p%d", testHash, i)
	}
	return out
}
