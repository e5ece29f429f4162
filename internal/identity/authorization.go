package identity

import (
	"encoding/base64"
	"strings"
)

// MaxTokenSize bounds the length of a token (and so the work spent on one).
// Real IdP tokens are 1-2 KiB.
const MaxTokenSize = 16 << 10

// TokenFromAuthorization extracts the token from an Authorization header
// value. Accepted forms:
//
//	Bearer <token>
//	Basic base64(<login>:<token>)   what Nix sends from netrc; login ignored
//
// Scheme names are case-insensitive. An empty header, or Basic credentials
// with an empty password, give ErrNoToken. Anything else that is not one of
// the forms above — another scheme, bad base64, no ':', an empty Bearer
// token, characters outside the RFC 6750 token alphabet — is an error
// matching ErrInvalidToken with reason ReasonMalformedHeader. The error
// never contains the header.
func TokenFromAuthorization(header string) (string, error) {
	h := strings.Trim(header, " \t")
	if h == "" {
		return "", ErrNoToken
	}
	// base64 grows by 4/3; leave room for the login and the scheme.
	if len(h) > 2*MaxTokenSize {
		return "", invalid(ReasonTooLarge, "authorization header")
	}
	scheme, rest, _ := strings.Cut(h, " ")
	rest = strings.TrimLeft(rest, " \t")
	switch {
	case strings.EqualFold(scheme, "Bearer"):
		if rest == "" {
			return "", invalid(ReasonMalformedHeader, "empty bearer token")
		}
		if !isTokenText(rest) {
			return "", invalid(ReasonMalformedHeader, "bearer token has characters outside the token alphabet")
		}
		return rest, nil
	case strings.EqualFold(scheme, "Basic"):
		if rest == "" {
			return "", invalid(ReasonMalformedHeader, "empty basic credentials")
		}
		raw, err := decodeBasic(rest)
		if err != nil {
			return "", invalid(ReasonMalformedHeader, "basic credentials are not base64")
		}
		_, password, ok := strings.Cut(string(raw), ":")
		if !ok {
			return "", invalid(ReasonMalformedHeader, "basic credentials have no ':'")
		}
		if password == "" {
			return "", ErrNoToken
		}
		if !isTokenText(password) {
			return "", invalid(ReasonMalformedHeader, "basic password has characters outside the token alphabet")
		}
		return password, nil
	default:
		return "", invalid(ReasonMalformedHeader, "unsupported scheme (want Bearer or Basic)")
	}
}

// decodeBasic decodes standard base64, with or without padding.
func decodeBasic(s string) ([]byte, error) {
	if strings.HasSuffix(s, "=") {
		return base64.StdEncoding.Strict().DecodeString(s)
	}
	return base64.RawStdEncoding.Strict().DecodeString(s)
}

// isTokenText reports whether s uses only the RFC 6750 b64token alphabet
// (letters, digits, - . _ ~ + / and =), which covers every JWT. A table
// lookup per byte: the token is ≈ 1 KiB on every request, and a chain of
// range tests per byte was 3 % of authz's CPU under load.
func isTokenText(s string) bool {
	for i := 0; i < len(s); i++ {
		if !tokenAlphabet[s[i]] {
			return false
		}
	}
	return true
}

var tokenAlphabet = func() (t [256]bool) {
	for c := 'a'; c <= 'z'; c++ {
		t[c], t[c-'a'+'A'] = true, true
	}
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for _, c := range "-._~+/=" {
		t[c] = true
	}
	return t
}()
