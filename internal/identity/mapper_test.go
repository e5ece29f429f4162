package identity_test

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/flakegate/flakegate/internal/identity"
	"github.com/flakegate/flakegate/internal/identity/identitytest"
)

// mapped is the policy-facing part of a Subject.
type mapped struct {
	Provider, Kind, Org, Repo, User, Ref, Environment string
	RefProtected                                      bool
}

func mappedOf(s *identity.Subject) mapped {
	return mapped{s.Provider, s.Kind, s.Org, s.Repo, s.User, s.Ref, s.Environment, s.RefProtected}
}

func edit(base map[string]any, changes map[string]any) map[string]any {
	out := map[string]any{}
	for k, v := range base {
		out[k] = v
	}
	for k, v := range changes {
		out[k] = v
	}
	return out
}

func TestClaimMappers(t *testing.T) {
	gh := identitytest.GitHubActionsClaims("OmniCorp/Dev-Environments", "refs/heads/main")
	gl := identitytest.GitLabCIClaims("Platform/Nix/Dev-Env", "main")
	user := identitytest.OIDCUserClaims("alice", "nix-admins", "eng")
	user["org"] = "OmniCorp"

	cases := []struct {
		name     string
		mapper   string
		orgClaim string
		claims   map[string]any
		want     mapped
		// wantReason: the refusal; "" when the token maps.
		wantReason identity.Reason
	}{
		{"github push to main", identity.ClaimsGitHubActions, "", gh,
			mapped{"github", "ci", "omnicorp", "omnicorp/dev-environments", "octocat", "refs/heads/main", "", true}, ""},
		{"github feature branch, environment", identity.ClaimsGitHubActions, "",
			edit(gh, map[string]any{"ref": "refs/heads/feature", "ref_protected": "false", "environment": "staging", "actor": "bob"}),
			mapped{"github", "ci", "omnicorp", "omnicorp/dev-environments", "bob", "refs/heads/feature", "staging", false}, ""},
		{"github pull request ref", identity.ClaimsGitHubActions, "",
			edit(gh, map[string]any{"ref": "refs/pull/7/merge", "ref_protected": nil}),
			mapped{"github", "ci", "omnicorp", "omnicorp/dev-environments", "octocat", "refs/pull/7/merge", "", false}, ""},
		{"github ref_protected as a JSON bool", identity.ClaimsGitHubActions, "",
			edit(gh, map[string]any{"ref_protected": true}),
			mapped{"github", "ci", "omnicorp", "omnicorp/dev-environments", "octocat", "refs/heads/main", "", true}, ""},
		{"github ref_protected garbage", identity.ClaimsGitHubActions, "", edit(gh, map[string]any{"ref_protected": "yes"}), mapped{}, identity.ReasonClaims},
		{"github ref_protected number", identity.ClaimsGitHubActions, "", edit(gh, map[string]any{"ref_protected": 1}), mapped{}, identity.ReasonClaims},
		{"github repository missing", identity.ClaimsGitHubActions, "", edit(gh, map[string]any{"repository": nil}), mapped{}, identity.ReasonClaims},
		{"github repository_owner missing", identity.ClaimsGitHubActions, "", edit(gh, map[string]any{"repository_owner": nil}), mapped{}, identity.ReasonClaims},
		{"github repository of another owner", identity.ClaimsGitHubActions, "", edit(gh, map[string]any{"repository": "evilcorp/dev-environments"}), mapped{}, identity.ReasonClaims},
		{"github repository with extra slash", identity.ClaimsGitHubActions, "", edit(gh, map[string]any{"repository": "omnicorp/a/b"}), mapped{}, identity.ReasonClaims},
		{"github repository not a string", identity.ClaimsGitHubActions, "", edit(gh, map[string]any{"repository": []string{"omnicorp/x"}}), mapped{}, identity.ReasonClaims},
		{"github actor not a string", identity.ClaimsGitHubActions, "", edit(gh, map[string]any{"actor": 5}), mapped{}, identity.ReasonClaims},

		{"gitlab protected main", identity.ClaimsGitLabCI, "", gl,
			mapped{"gitlab", "ci", "platform/nix", "platform/nix/dev-env", "sample-user", "refs/heads/main", "production", true}, ""},
		{"gitlab tag", identity.ClaimsGitLabCI, "",
			edit(gl, map[string]any{"ref": "v1.2.0", "ref_type": "tag", "ref_path": "refs/tags/v1.2.0", "ref_protected": "false", "environment": nil}),
			mapped{"gitlab", "ci", "platform/nix", "platform/nix/dev-env", "sample-user", "refs/tags/v1.2.0", "", false}, ""},
		{"gitlab without ref_type falls back to ref_path", identity.ClaimsGitLabCI, "",
			edit(gl, map[string]any{"ref_type": nil, "ref_path": "refs/heads/dev"}),
			mapped{"gitlab", "ci", "platform/nix", "platform/nix/dev-env", "sample-user", "refs/heads/dev", "production", true}, ""},
		{"gitlab project outside namespace", identity.ClaimsGitLabCI, "", edit(gl, map[string]any{"project_path": "other/dev-env"}), mapped{}, identity.ReasonClaims},
		{"gitlab namespace prefix is not a namespace", identity.ClaimsGitLabCI, "", edit(gl, map[string]any{"project_path": "platform/nixos/dev-env"}), mapped{}, identity.ReasonClaims},
		{"gitlab namespace_path missing", identity.ClaimsGitLabCI, "", edit(gl, map[string]any{"namespace_path": nil}), mapped{}, identity.ReasonClaims},
		{"gitlab ref_protected garbage", identity.ClaimsGitLabCI, "", edit(gl, map[string]any{"ref_protected": "maybe"}), mapped{}, identity.ReasonClaims},

		{"oidc preferred_username and org claim", identity.ClaimsOIDC, "org", user,
			mapped{"oidc", "user", "omnicorp", "", "alice", "", "", false}, ""},
		{"oidc without org_claim configured", identity.ClaimsOIDC, "", user,
			mapped{"oidc", "user", "", "", "alice", "", "", false}, ""},
		{"oidc email fallback", identity.ClaimsOIDC, "", edit(user, map[string]any{"preferred_username": nil}),
			mapped{"oidc", "user", "", "", "alice@example.com", "", "", false}, ""},
		{"oidc sub fallback", identity.ClaimsOIDC, "", edit(user, map[string]any{"preferred_username": "", "email": nil}),
			mapped{"oidc", "user", "", "", "user-alice", "", "", false}, ""},
		{"oidc org claim absent", identity.ClaimsOIDC, "org", edit(user, map[string]any{"org": nil}),
			mapped{"oidc", "user", "", "", "alice", "", "", false}, ""},
		{"oidc org claim not a string", identity.ClaimsOIDC, "org", edit(user, map[string]any{"org": []string{"a"}}), mapped{}, identity.ReasonClaims},
		{"oidc sub missing", identity.ClaimsOIDC, "", edit(user, map[string]any{"sub": nil}), mapped{}, identity.ReasonClaims},
	}
	clock := newClock()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			iss := identitytest.NewIssuer(t, identitytest.WithAlg("ES256"), identitytest.WithClock(clock.Now))
			cfg := iss.Config("idp", tc.mapper)
			cfg.OrgClaim = tc.orgClaim
			e := newEnv(t, clock, identity.Options{}, cfg)
			tok := iss.Mint(tc.claims)
			if tc.wantReason != "" {
				e.mustRefuse(tok, tc.wantReason)
				return
			}
			s := e.mustVerify(tok)
			if got := mappedOf(s); got != tc.want {
				t.Fatalf("mapped\n got %+v\nwant %+v", got, tc.want)
			}
			if !s.Authenticated || s.Via != "idp" || s.Issuer != iss.Issuer() || s.IssuerName != "idp" {
				t.Errorf("subject %+v", s)
			}
			if s.TokenID == "" || !s.Expiry.Equal(clock.Now().Add(5*time.Minute)) {
				t.Errorf("TokenID %q Expiry %v", s.TokenID, s.Expiry)
			}
			// Every claim is kept, with JSON types.
			for k := range tc.claims {
				if tc.claims[k] != nil {
					if _, ok := s.Claims[k]; !ok {
						t.Errorf("claim %q missing from Claims", k)
					}
				}
			}
			if _, ok := s.Claims["exp"].(float64); !ok {
				t.Errorf("exp is %T, want float64", s.Claims["exp"])
			}
		})
	}
}

// Claim types as the policy sees them: GitHub numeric-looking claims stay
// strings, real JSON numbers are float64, arrays are []any.
func TestClaimTypesPreserved(t *testing.T) {
	clock := newClock()
	gl := identitytest.NewIssuer(t, identitytest.WithClock(clock.Now))
	gh := identitytest.NewIssuer(t, identitytest.WithClock(clock.Now))
	e := newEnv(t, clock, identity.Options{},
		identitytest.WithOrgs(gl.Config("gitlab", identity.ClaimsGitLabCI), "omnicorp"),
		identitytest.WithOrgs(gh.Config("github", identity.ClaimsGitHubActions), "omnicorp"))
	s := e.mustVerify(gh.Mint(ghClaims))
	if v, ok := s.Claims["repository_id"].(string); !ok || v != "681237345" {
		t.Errorf("repository_id = %#v, want the string", s.Claims["repository_id"])
	}
	if v, ok := s.Claims["ref_protected"].(string); !ok || v != "true" {
		t.Errorf("raw ref_protected = %#v, want the string \"true\"", s.Claims["ref_protected"])
	}
	s = e.mustVerify(gl.Mint(identitytest.GitLabCIClaims("omnicorp/app", "main")))
	if v, ok := s.Claims["runner_id"].(float64); !ok || v != 1 {
		t.Errorf("runner_id = %#v, want float64 1", s.Claims["runner_id"])
	}
	if v, ok := s.Claims["groups_direct"].([]any); !ok || len(v) != 1 || v[0] != "omnicorp" {
		t.Errorf("groups_direct = %#v", s.Claims["groups_direct"])
	}
	if s.Claims["ref"] != "main" || s.Ref != "refs/heads/main" {
		t.Errorf("raw ref %v, normalized %q", s.Claims["ref"], s.Ref)
	}
	in := s.Input()
	if in["ref_protected"] != true || in["via"] != "idp" || in["repo"] != "omnicorp/app" {
		t.Errorf("policy input %v", in)
	}
}

func TestCacheClaimsRoundTrip(t *testing.T) {
	orig := &identity.Subject{
		Authenticated: true, Issuer: "https://token.actions.githubusercontent.com", IssuerName: "github",
		Provider: "github", Kind: "ci", Org: "omnicorp", Repo: "omnicorp/app", User: "octocat",
		Ref: "refs/heads/main", RefProtected: true, Environment: "prod", Via: "idp",
		Claims: map[string]any{"repository_id": "681237345", "exp": float64(1780000000), "groups": []any{"a"}},
	}
	raw, err := json.Marshal(orig.CacheClaims())
	if err != nil {
		t.Fatal(err)
	}
	var decoded map[string]any
	if err := json.Unmarshal(raw, &decoded); err != nil {
		t.Fatal(err)
	}
	got, err := identity.SubjectFromCacheClaims(decoded)
	if err != nil {
		t.Fatalf("SubjectFromCacheClaims: %v", err)
	}
	want := *orig
	want.Via, want.IssuerName = "exchange", ""
	if !reflect.DeepEqual(*got, want) {
		t.Fatalf("round trip\n got %+v\nwant %+v", *got, want)
	}
	// Without JSON in between too.
	if got2, err := identity.SubjectFromCacheClaims(orig.CacheClaims()); err != nil || got2.Repo != "omnicorp/app" {
		t.Fatalf("direct round trip: %v %+v", err, got2)
	}
}

// The IdP token's jti travels in the cache token as fg_subject.parent_jti
// and comes back as ParentTokenID (not as the cache token's own TokenID).
func TestCacheClaimsParentTokenID(t *testing.T) {
	idp := func(jti string, claims map[string]any) *identity.Subject {
		return &identity.Subject{Authenticated: true, Issuer: "https://token.actions.githubusercontent.com",
			Provider: "github", Kind: "ci", Org: "omnicorp", Repo: "omnicorp/app", TokenID: jti, Claims: claims}
	}
	roundTrip := func(t *testing.T, c map[string]any) *identity.Subject {
		t.Helper()
		raw, err := json.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		var decoded map[string]any
		if err := json.Unmarshal(raw, &decoded); err != nil {
			t.Fatal(err)
		}
		s, err := identity.SubjectFromCacheClaims(decoded)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}

	c := idp("idp-jti", map[string]any{"jti": "idp-jti"}).CacheClaims()
	if got := c[identity.CacheSubjectClaim].(map[string]any)["parent_jti"]; got != "idp-jti" {
		t.Fatalf("fg_subject.parent_jti = %v, want idp-jti", got)
	}
	if s := roundTrip(t, c); s.ParentTokenID != "idp-jti" || s.TokenID != "" {
		t.Fatalf("parent id %q, id %q; want idp-jti and none", s.ParentTokenID, s.TokenID)
	}

	// An IdP token without jti: no parent_jti, no parent id.
	c = idp("", map[string]any{"sub": "x"}).CacheClaims()
	if _, present := c[identity.CacheSubjectClaim].(map[string]any)["parent_jti"]; present {
		t.Fatal("parent_jti written for an IdP token without jti")
	}
	if s := roundTrip(t, c); s.ParentTokenID != "" {
		t.Fatalf("parent id %q, want none", s.ParentTokenID)
	}

	// A cache token minted before parent_jti existed: the carried IdP
	// claims name the jti.
	c = idp("old-jti", map[string]any{"jti": "old-jti"}).CacheClaims()
	delete(c[identity.CacheSubjectClaim].(map[string]any), "parent_jti")
	if s := roundTrip(t, c); s.ParentTokenID != "old-jti" {
		t.Fatalf("legacy token: parent id %q, want old-jti", s.ParentTokenID)
	}
}

func TestSubjectFromCacheClaimsRejects(t *testing.T) {
	good := func() map[string]any {
		return (&identity.Subject{Issuer: "https://idp", Provider: "oidc", Kind: "user", User: "alice"}).CacheClaims()
	}
	fg := func(change func(m map[string]any)) map[string]any {
		c := good()
		change(c[identity.CacheSubjectClaim].(map[string]any))
		return c
	}
	cases := []struct {
		name   string
		claims map[string]any
		want   string
	}{
		{"no fg_subject", map[string]any{"sub": "x"}, "fg_subject missing"},
		{"fg_subject not an object", map[string]any{"fg_subject": "x"}, "fg_subject missing"},
		{"version missing", fg(func(m map[string]any) { delete(m, "v") }), ".v missing"},
		{"future version", fg(func(m map[string]any) { m["v"] = float64(2) }), "version"},
		{"issuer missing", fg(func(m map[string]any) { m["issuer"] = "" }), "issuer missing"},
		{"provider wrong type", fg(func(m map[string]any) { m["provider"] = 3 }), "provider is not a string"},
		{"kind unknown", fg(func(m map[string]any) { m["kind"] = "admin" }), "kind must be ci or user"},
		{"ref_protected as string", fg(func(m map[string]any) { m["ref_protected"] = "true" }), "ref_protected is not a boolean"},
		{"claims not an object", fg(func(m map[string]any) { m["claims"] = []any{} }), "claims is not an object"},
		{"parent_jti not a string", fg(func(m map[string]any) { m["parent_jti"] = 7 }), "parent_jti is not a string"},
	}
	if _, err := identity.SubjectFromCacheClaims(good()); err != nil {
		t.Fatalf("good claims refused: %v", err)
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := identity.SubjectFromCacheClaims(tc.claims)
			if err == nil || identity.ReasonOf(err) != identity.ReasonClaims || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want bad_claims containing %q", err, tc.want)
			}
		})
	}
}

// A single-company IdP without an org claim: the issuer's fixed org is
// every user's org, and a token cannot claim another one.
func TestOIDCFixedOrg(t *testing.T) {
	clock := newClock()
	iss := identitytest.NewIssuer(t, identitytest.WithAlg("ES256"), identitytest.WithClock(clock.Now))
	cfg := iss.Config("corp", identity.ClaimsOIDC)
	cfg.Org = "OmniCorp"
	e := newEnv(t, clock, identity.Options{}, cfg)
	for _, c := range []struct {
		name   string
		claims map[string]any
	}{
		{"no org claim", identitytest.OIDCUserClaims("alice")},
		{"claims another org", func() map[string]any { c := identitytest.OIDCUserClaims("alice"); c["org"] = "evilcorp"; return c }()},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := e.mustVerify(iss.Mint(c.claims))
			if s.Org != "omnicorp" || s.User != "alice" || s.Kind != "user" {
				t.Fatalf("subject org %q user %q kind %q, want omnicorp alice user", s.Org, s.User, s.Kind)
			}
		})
	}
}

// TestOIDCUserName: the name a policy knows a user by comes from a claim
// the IdP vouches for. An email counts only when email_verified says so: an
// address anyone may type in at sign-up must not pass as the person a
// policy names by it.
func TestOIDCUserName(t *testing.T) {
	base := identitytest.OIDCUserClaims("alice", "nix-admins")
	noName := edit(base, map[string]any{"preferred_username": nil})
	cases := []struct {
		name      string
		userClaim string
		claims    map[string]any
		want      string
		// wantReason: the refusal; "" when the token maps.
		wantReason identity.Reason
	}{
		{"preferred_username first", "", base, "alice", ""},
		{"verified email", "", noName, "alice@example.com", ""},
		{"verified email as a string", "", edit(noName, map[string]any{"email_verified": "true"}), "alice@example.com", ""},
		{"unverified email is not a name", "", edit(noName, map[string]any{"email_verified": false}), "user-alice", ""},
		{"email without email_verified is not a name", "", edit(noName, map[string]any{"email_verified": nil}), "user-alice", ""},
		{"email_verified garbage is refused", "", edit(noName, map[string]any{"email_verified": "yes"}), "", identity.ReasonClaims},
		{"email_verified is not read beside preferred_username", "", edit(base, map[string]any{"email_verified": "yes"}), "alice", ""},
		{"user_claim wins over preferred_username", "oid", edit(base, map[string]any{"oid": "0c4f-77"}), "0c4f-77", ""},
		{"user_claim sub", "sub", base, "user-alice", ""},
		{"user_claim missing is refused, not replaced", "oid", base, "", identity.ReasonClaims},
		{"user_claim empty is refused", "oid", edit(base, map[string]any{"oid": ""}), "", identity.ReasonClaims},
		{"user_claim not a string is refused", "oid", edit(base, map[string]any{"oid": []string{"x"}}), "", identity.ReasonClaims},
	}
	clock := newClock()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			iss := identitytest.NewIssuer(t, identitytest.WithAlg("ES256"), identitytest.WithClock(clock.Now))
			cfg := iss.Config("idp", identity.ClaimsOIDC)
			cfg.UserClaim = tc.userClaim
			e := newEnv(t, clock, identity.Options{}, cfg)
			tok := iss.Mint(tc.claims)
			if tc.wantReason != "" {
				e.mustRefuse(tok, tc.wantReason)
				return
			}
			if got := e.mustVerify(tok).User; got != tc.want {
				t.Fatalf("user %q, want %q", got, tc.want)
			}
		})
	}
}
