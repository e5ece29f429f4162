package identity_test

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"maps"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/flakegate/flakegate/internal/identity"
	"github.com/flakegate/flakegate/internal/identity/identitytest"
)

func b64(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

// craft builds a compact JWS from literal JSON and a literal signature.
func craft(header, claims, sig string) string {
	return b64(header) + "." + b64(claims) + "." + sig
}

// TestAttackSuite: every token here must be refused (401) with the stated
// reason, and nothing may ever fetch keys named by a token.
func TestAttackSuite(t *testing.T) {
	clock := newClock()
	gh := identitytest.NewIssuer(t, identitytest.WithClock(clock.Now))
	other := identitytest.NewIssuer(t, identitytest.WithAlg("ES256"), identitytest.WithClock(clock.Now))
	unconfigured := identitytest.NewIssuer(t, identitytest.WithClock(clock.Now))
	// The attacker runs an IdP of their own and wants us to trust it.
	attacker := identitytest.NewIssuer(t, identitytest.WithIssuer(gh.Issuer()), identitytest.WithClock(clock.Now))
	stray := identitytest.NewKey(t, "RS256")

	e := newEnv(t, clock, identity.Options{},
		identitytest.WithOrgs(gh.Config("github", identity.ClaimsGitHubActions), "omnicorp"),
		identitytest.WithOrgs(other.Config("other", identity.ClaimsGitHubActions), "omnicorp"))

	claims := identitytest.GitHubActionsClaims("omnicorp/app", "refs/heads/main")
	with := func(extra map[string]any) map[string]any {
		c := map[string]any{}
		for k, v := range claims {
			c[k] = v
		}
		for k, v := range extra {
			c[k] = v
		}
		return c
	}
	now := clock.Now()
	valid := gh.Mint(claims)
	parts := strings.Split(valid, ".")
	hdr := `{"alg":"RS256","typ":"JWT","kid":"` + gh.KeyID() + `"}`
	okClaims := `{"iss":"` + gh.Issuer() + `","aud":"` + identitytest.DefaultAudience +
		`","exp":` + itoa(now.Add(time.Hour).Unix()) + `,"repository":"omnicorp/app","repository_owner":"omnicorp"}`

	// Positive controls: the suite is meaningless if valid tokens fail.
	e.mustVerify(valid)
	e.mustVerify(gh.Mint(with(map[string]any{"exp": now.Add(-30 * time.Second).Unix()}))) // within skew

	pubPEM := gh.PublicKeyPEM()
	hs256 := func(secret []byte) string {
		in := b64(`{"alg":"HS256","typ":"JWT","kid":"`+gh.KeyID()+`"}`) + "." + b64(okClaims)
		m := hmac.New(sha256.New, secret)
		m.Write([]byte(in))
		return in + "." + base64.RawURLEncoding.EncodeToString(m.Sum(nil))
	}
	attackerJWK, err := identitytest.PublicJWK(attacker.Current().Public())
	if err != nil {
		t.Fatal(err)
	}
	attackerJWK["kid"] = attacker.KeyID()

	cases := []struct {
		name   string
		token  string
		reason identity.Reason
	}{
		{"empty", "", identity.ReasonEmpty},
		{"garbage", "this is not a token", identity.ReasonMalformed},
		{"garbage dots", "a.b.c", identity.ReasonMalformed},
		{"two parts", parts[0] + "." + parts[1], identity.ReasonMalformed},
		{"four parts", valid + ".x", identity.ReasonMalformed},
		{"JWE five parts", parts[0] + ".." + parts[1] + ".." + parts[2], identity.ReasonMalformed},
		{"header not JSON", b64("nope") + "." + parts[1] + "." + parts[2], identity.ReasonMalformed},
		{"header JSON array", craft(`["alg","RS256"]`, okClaims, parts[2]), identity.ReasonMalformed},
		{"padded base64", parts[0] + "=." + parts[1] + "." + parts[2], identity.ReasonMalformed},
		{"signature stripped", parts[0] + "." + parts[1] + ".", identity.ReasonMalformed},
		{"duplicate alg in header", craft(`{"alg":"RS256","kid":"`+gh.KeyID()+`","alg":"none"}`, okClaims, parts[2]), identity.ReasonMalformed},
		{"duplicate iss in claims", craft(hdr, `{"iss":"`+gh.Issuer()+`","iss":"https://evil.example"}`, parts[2]), identity.ReasonMalformed},
		{"kid not a string", craft(`{"alg":"RS256","kid":7}`, okClaims, parts[2]), identity.ReasonMalformed},
		{"too large", strings.Repeat("a", identity.MaxTokenSize+1), identity.ReasonTooLarge},

		{"alg none", gh.Mint(claims, identitytest.Unsigned()), identity.ReasonAlgorithm},
		{"alg none with signature", craft(`{"alg":"none","kid":"`+gh.KeyID()+`"}`, okClaims, parts[2]), identity.ReasonAlgorithm},
		{"alg NoNe", craft(`{"alg":"NoNe"}`, okClaims, parts[2]), identity.ReasonAlgorithm},
		{"alg missing", craft(`{"kid":"`+gh.KeyID()+`"}`, okClaims, parts[2]), identity.ReasonMalformed},
		{"HS256 with public key PEM", gh.Mint(claims, identitytest.HMAC(pubPEM)), identity.ReasonAlgorithm},
		{"HS256 hand-made with public key PEM", hs256(pubPEM), identity.ReasonAlgorithm},
		{"HS256 with public key JWKS", hs256(gh.JWKS()), identity.ReasonAlgorithm},
		{"HS512", craft(`{"alg":"HS512"}`, okClaims, parts[2]), identity.ReasonAlgorithm},

		{"unknown kid", gh.Mint(claims, identitytest.Header("kid", "no-such-key")), identity.ReasonUnknownKeyID},
		{"kid path traversal", gh.Mint(claims, identitytest.Header("kid", "../../../../../../dev/null")), identity.ReasonUnknownKeyID},
		{"kid absolute path", gh.Mint(claims, identitytest.Header("kid", "/etc/passwd")), identity.ReasonUnknownKeyID},
		{"kid NUL byte", gh.Mint(claims, identitytest.Header("kid", gh.KeyID()+"\x00")), identity.ReasonUnknownKeyID},
		{"kid SQL injection", gh.Mint(claims, identitytest.Header("kid", "x' UNION SELECT 'secret' --")), identity.ReasonUnknownKeyID},
		{"kid URL", gh.Mint(claims, identitytest.Header("kid", attacker.JWKSURL())), identity.ReasonUnknownKeyID},
		{"kid far too long", gh.Mint(claims, identitytest.Header("kid", strings.Repeat("k", 1000))), identity.ReasonMalformed},

		{"jku to attacker JWKS", attacker.Mint(claims, identitytest.Header("jku", attacker.JWKSURL())), identity.ReasonForbiddenHeader},
		{"jku with real kid", gh.Mint(claims, identitytest.Header("jku", attacker.JWKSURL())), identity.ReasonForbiddenHeader},
		{"x5u", attacker.Mint(claims, identitytest.Header("x5u", attacker.URL()+"/cert.pem")), identity.ReasonForbiddenHeader},
		{"embedded jwk", attacker.Mint(claims, identitytest.Header("jwk", attackerJWK)), identity.ReasonForbiddenHeader},
		{"embedded x5c", attacker.Mint(claims, identitytest.Header("x5c", []string{"MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8A"})), identity.ReasonForbiddenHeader},
		{"crit", gh.Mint(claims, identitytest.Header("crit", []string{"exp"})), identity.ReasonForbiddenHeader},

		{"expired", gh.Mint(with(map[string]any{"exp": now.Add(-2 * time.Hour).Unix(), "iat": now.Add(-3 * time.Hour).Unix(), "nbf": now.Add(-3 * time.Hour).Unix()})), identity.ReasonExpired},
		{"expired just beyond skew", gh.Mint(with(map[string]any{"exp": now.Add(-61 * time.Second).Unix()})), identity.ReasonExpired},
		{"exp missing", gh.Mint(with(map[string]any{"exp": nil})), identity.ReasonClaims},
		{"exp as string", gh.Mint(with(map[string]any{"exp": itoa(now.Add(time.Hour).Unix())})), identity.ReasonClaims},
		{"not yet valid", gh.Mint(with(map[string]any{"nbf": now.Add(time.Hour).Unix()})), identity.ReasonNotYetValid},
		{"issued in the future", gh.Mint(with(map[string]any{"iat": now.Add(time.Hour).Unix(), "nbf": nil})), identity.ReasonIssuedInFuture},

		{"wrong iss, kid of the signer", gh.Mint(with(map[string]any{"iss": other.Issuer()})), identity.ReasonUnknownKeyID},
		{"wrong iss, kid of that issuer", gh.Mint(with(map[string]any{"iss": other.Issuer()}), identitytest.Header("kid", other.KeyID()), identitytest.Header("alg", "ES256")), identity.ReasonBadSignature},
		{"iss missing", gh.Mint(with(map[string]any{"iss": nil})), identity.ReasonUnknownIssuer},
		{"iss not a string", gh.Mint(with(map[string]any{"iss": 42})), identity.ReasonUnknownIssuer},
		{"issuer not configured", unconfigured.Mint(claims), identity.ReasonUnknownIssuer},
		{"iss with trailing slash", gh.Mint(with(map[string]any{"iss": gh.Issuer() + "/"})), identity.ReasonUnknownIssuer},

		{"wrong aud", gh.Mint(with(map[string]any{"aud": "https://other.example"})), identity.ReasonAudience},
		{"wrong aud list", gh.Mint(with(map[string]any{"aud": []string{"a", "b"}})), identity.ReasonAudience},
		{"aud missing", gh.Mint(with(map[string]any{"aud": nil})), identity.ReasonAudience},
		{"aud as object", gh.Mint(with(map[string]any{"aud": map[string]any{"x": identitytest.DefaultAudience}})), identity.ReasonAudience},

		{"signature of another key, real kid", gh.Mint(claims, identitytest.SignWith(stray), identitytest.Header("kid", gh.KeyID())), identity.ReasonBadSignature},
		{"attacker key, real kid", attacker.Mint(claims, identitytest.Header("kid", gh.KeyID())), identity.ReasonBadSignature},
		{"claims tampered after signing", parts[0] + "." + b64(strings.Replace(mustDecode(t, parts[1]), "omnicorp/app", "omnicorp/prod", 1)) + "." + parts[2], identity.ReasonBadSignature},
		{"signature of another token", parts[0] + "." + parts[1] + "." + strings.Split(gh.Mint(with(map[string]any{"actor": "mallory"})), ".")[2], identity.ReasonBadSignature},
		{"alg ES256 on an RSA key", gh.Mint(claims, identitytest.Header("alg", "ES256")), identity.ReasonKeyMismatch},
		{"alg PS256 on an RS256 key", gh.Mint(claims, identitytest.Header("alg", "PS256")), identity.ReasonKeyMismatch},

		{"mapper: repository missing", gh.Mint(with(map[string]any{"repository": nil})), identity.ReasonClaims},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			sub := &env{t: t, clock: e.clock, reg: e.reg, logs: e.logs, v: e.v}
			sub.mustRefuse(tc.token, tc.reason)
		})
	}

	if n := attacker.JWKSRequests(); n != 0 {
		t.Errorf("the attacker's JWKS was fetched %d times", n)
	}
	if n := unconfigured.JWKSRequests(); n != 0 {
		t.Errorf("an unconfigured issuer's JWKS was fetched %d times", n)
	}
	// Each unknown-kid case may refresh github's keys, but at most once per
	// 30 s: the whole suite runs at one instant of the fake clock.
	if n := gh.JWKSRequests(); n != 2 {
		t.Errorf("github JWKS fetched %d times, want 2 (start + one rate-limited early refresh)", n)
	}
	logs := e.logs.String()
	for _, tc := range cases {
		assertNoSecret(t, "logs", logs, tc.token)
	}
	assertNoSecret(t, "logs", logs, valid)
	if got := e.metric("flakegate_token_verifications_total", "result", string(identity.ReasonAlgorithm)); got < 6 {
		t.Errorf("algorithm_not_allowed counter = %v, want >= 6", got)
	}
}

func mustDecode(t *testing.T, s string) string {
	t.Helper()
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

// The details of a refusal the client can act on: an unknown issuer is
// named (sanitized and cut: iss is the caller's own public claim), a wrong
// audience says which audiences the issuer accepts.
func TestRefusalDetails(t *testing.T) {
	clock := newClock()
	gh := identitytest.NewIssuer(t, identitytest.WithClock(clock.Now))
	e := newEnv(t, clock, identity.Options{}, gh.Config("github", identity.ClaimsGitHubActions, "https://cache.example.com"))
	claims := identitytest.GitHubActionsClaims("omnicorp/app", "refs/heads/main")
	with := func(extra map[string]any) map[string]any {
		c := maps.Clone(claims)
		c["aud"] = "https://cache.example.com"
		maps.Copy(c, extra)
		return c
	}

	err := e.mustRefuse(gh.Mint(with(map[string]any{"iss": "https://idp.example.net"})), identity.ReasonUnknownIssuer)
	if want := `invalid token: unknown issuer: "https://idp.example.net"`; err.Error() != want {
		t.Errorf("unknown issuer: %q, want %q", err, want)
	}
	err = e.mustRefuse(gh.Mint(with(map[string]any{"iss": "https://evil.example\r\nX-Injected: 1\x00" + strings.Repeat("a", 500)})), identity.ReasonUnknownIssuer)
	if msg := err.Error(); strings.ContainsAny(msg, "\r\n\x00") || !strings.Contains(msg, `"https://evil.exampleX-Injected: 1aaa`) || len(msg) > 260 || !strings.Contains(msg, `…"`) {
		t.Errorf("unknown issuer with control characters, too long: %q (%d bytes)", msg, len(msg))
	}
	err = e.mustRefuse(gh.Mint(with(map[string]any{"iss": gh.Issuer() + "/"})), identity.ReasonUnknownIssuer)
	if !strings.Contains(err.Error(), strconv.Quote(gh.Issuer()+"/")) || !strings.Contains(err.Error(), "only by a trailing slash") {
		t.Errorf("iss with a trailing slash: %q", err)
	}

	err = e.mustRefuse(gh.Mint(with(map[string]any{"aud": "sigstore"})), identity.ReasonAudience)
	if want := `invalid token: audience not accepted: want aud "https://cache.example.com", token has "sigstore" (issuer github)`; err.Error() != want {
		t.Errorf("wrong audience: %q, want %q", err, want)
	}
}
