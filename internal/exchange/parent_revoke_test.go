package exchange_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/flakegate/flakegate/internal/identity"
	"github.com/flakegate/flakegate/internal/identity/identitytest"
)

// Revoking the jti of an IdP token ends the cache tokens exchanged from it
// (they carry it as fg_subject.parent_jti), not only the IdP token itself.
func TestRevokingIdPTokenIDEndsItsCacheTokens(t *testing.T) {
	st := startStack(t, stackOptions{})
	method, path := readFlake("omnicorp/app")
	claims := identitytest.GitHubActionsClaims("omnicorp/app", "refs/heads/main")
	claims["jti"] = "idp-jti-leaked"
	leaked := st.github.Mint(claims)
	first := st.mustExchange(t, leaked)
	second := st.mustExchange(t, leaked)
	// Same subject, another IdP token: not revoked by the leaked token's id.
	other := st.mustExchange(t, st.ghToken("omnicorp/app", "refs/heads/main"))

	v, err := st.app.Verifier().Verify(context.Background(), first.Token)
	if err != nil {
		t.Fatal(err)
	}
	if v.ParentTokenID != "idp-jti-leaked" || v.TokenID != first.TokenID {
		t.Fatalf("cache token: parent id %q, id %q; want idp-jti-leaked, %s", v.ParentTokenID, v.TokenID, first.TokenID)
	}
	for _, tok := range []string{leaked, first.Token, second.Token, other.Token} {
		if got := st.check(t, method, path, netrcAuth(tok)); got != http.StatusOK {
			t.Fatalf("before revocation: %d", got)
		}
	}

	st.writePolicyFile(t, "denylist.yaml", "token_ids:\n  - idp-jti-leaked\n")
	took := st.pollStatus(t, 2*time.Second, http.StatusUnauthorized, method, path, netrcAuth(first.Token))
	t.Logf("cache token revoked after %s", took)
	for name, auth := range map[string]string{
		"second cache token (netrc)":  netrcAuth(second.Token),
		"second cache token (Bearer)": bearer(second.Token),
		"the IdP token":               netrcAuth(leaked),
	} {
		if got := st.check(t, method, path, auth); got != http.StatusUnauthorized {
			t.Errorf("%s after revoking the IdP token id: %d, want 401", name, got)
		}
	}
	if r := st.exchange(t, bearer(leaked), ""); r.status != http.StatusUnauthorized || !strings.Contains(r.body["error"].(string), "revoked") {
		t.Errorf("exchange of the revoked IdP token: %d %v", r.status, r.body)
	}
	if got := st.check(t, method, path, netrcAuth(other.Token)); got != http.StatusOK {
		t.Errorf("cache token from another IdP token of the same subject: %d, want 200", got)
	}
	if !strings.Contains(st.logs.String(), "exchanged from") {
		t.Error("the refusal does not say that the parent token id is revoked")
	}
}

// The parent token id is read only from flakegate-signed cache tokens: an
// IdP token that carries parent_jti or a whole fg_subject claim of its own
// is not a child of that id, and the cache token exchanged from it names
// the IdP token's real jti.
func TestParentTokenIDCannotBeForged(t *testing.T) {
	st := startStack(t, stackOptions{})
	ctx := context.Background()
	method, path := readFlake("omnicorp/app")

	claims := identitytest.GitHubActionsClaims("omnicorp/app", "refs/heads/main")
	claims["jti"] = "own-jti"
	claims["parent_jti"] = "claimed-parent"
	claims[identity.CacheSubjectClaim] = (&identity.Subject{Issuer: st.github.Issuer(), Provider: "github", Kind: "ci",
		Org: "omnicorp", Repo: "omnicorp/app", TokenID: "claimed-parent"}).CacheClaims()[identity.CacheSubjectClaim]
	idpTok := st.github.Mint(claims)

	s, err := st.app.Verifier().Verify(ctx, idpTok)
	if err != nil {
		t.Fatal(err)
	}
	if s.Via != "idp" || s.ParentTokenID != "" || s.TokenID != "own-jti" {
		t.Fatalf("IdP token: via %q, parent id %q, id %q; want idp, none, own-jti", s.Via, s.ParentTokenID, s.TokenID)
	}
	cache := st.mustExchange(t, idpTok)
	cs, err := st.app.Verifier().Verify(ctx, cache.Token)
	if err != nil {
		t.Fatal(err)
	}
	if cs.ParentTokenID != "own-jti" {
		t.Fatalf("cache token parent id %q, want the IdP token's own jti", cs.ParentTokenID)
	}

	// Revoking the claimed parent touches neither token. A probe token
	// listed beside it shows when the new denylist is in force.
	probeClaims := identitytest.GitHubActionsClaims("omnicorp/app", "refs/heads/main")
	probeClaims["jti"] = "probe-jti"
	probe := st.github.Mint(probeClaims)
	st.writePolicyFile(t, "denylist.yaml", "token_ids:\n  - claimed-parent\n  - probe-jti\n")
	st.pollStatus(t, 2*time.Second, http.StatusUnauthorized, method, path, netrcAuth(probe))
	for name, tok := range map[string]string{"IdP token": idpTok, "cache token": cache.Token} {
		if got := st.check(t, method, path, netrcAuth(tok)); got != http.StatusOK {
			t.Errorf("%s after revoking the id it claims as parent: %d, want 200", name, got)
		}
	}

	// Its real jti ends both.
	st.writePolicyFile(t, "denylist.yaml", "token_ids:\n  - own-jti\n")
	st.pollStatus(t, 2*time.Second, http.StatusUnauthorized, method, path, netrcAuth(cache.Token))
	if got := st.check(t, method, path, netrcAuth(idpTok)); got != http.StatusUnauthorized {
		t.Errorf("IdP token after revoking its jti: %d, want 401", got)
	}
}

// An IdP token without a jti is still exchanged; its cache token has no
// parent id and is revoked by its own token id (or by subject).
func TestExchangeOfIdPTokenWithoutID(t *testing.T) {
	st := startStack(t, stackOptions{})
	method, path := readFlake("omnicorp/app")
	claims := identitytest.GitHubActionsClaims("omnicorp/app", "refs/heads/main")
	claims["jti"] = nil // Mint drops nil claims
	cache := st.mustExchange(t, st.github.Mint(claims))
	cs, err := st.app.Verifier().Verify(context.Background(), cache.Token)
	if err != nil {
		t.Fatal(err)
	}
	if cs.ParentTokenID != "" || cs.TokenID != cache.TokenID {
		t.Fatalf("cache token: parent id %q, id %q; want none, %s", cs.ParentTokenID, cs.TokenID, cache.TokenID)
	}
	if got := st.check(t, method, path, netrcAuth(cache.Token)); got != http.StatusOK {
		t.Fatalf("cache token: %d", got)
	}
	st.writePolicyFile(t, "denylist.yaml", "token_ids:\n  - "+cache.TokenID+"\n")
	st.pollStatus(t, 2*time.Second, http.StatusUnauthorized, method, path, netrcAuth(cache.Token))
}
