package identity

import (
	"errors"
	"strconv"
	"strings"
	"unicode"
)

// ErrInvalidToken is matched (errors.Is) by every verification failure that
// is the token's: the request gets 401. errors.As with *TokenError gives the
// reason.
var ErrInvalidToken = errors.New("invalid token")

// ErrKeysUnavailable is matched (errors.Is) instead of ErrInvalidToken when
// the token could not be verified because its issuer's keys could not be
// fetched (the JWKS endpoint is down, or has not answered since start, or a
// key id the token names might be in a key set we cannot fetch): an outage,
// not a bad token. The request gets 503 with Retry-After. Its *TokenError
// has ReasonNoKeys.
var ErrKeysUnavailable = errors.New("identity provider keys unavailable")

// Reason is a short, stable code for why a token was refused. It is also the
// "result" label of flakegate_token_verifications_total.
type Reason string

// Reasons a token is refused.
const (
	ReasonMalformedHeader Reason = "malformed_authorization" // Authorization header not Bearer/Basic or unparsable
	ReasonEmpty           Reason = "empty"                   // empty token
	ReasonTooLarge        Reason = "too_large"               // token longer than MaxTokenSize
	ReasonMalformed       Reason = "malformed"               // not a compact JWS with JSON header and claims
	ReasonAlgorithm       Reason = "algorithm_not_allowed"   // none, HS*, or anything not asymmetric
	ReasonForbiddenHeader Reason = "forbidden_header"        // jku, x5u, jwk, x5c, crit, b64
	ReasonUnknownIssuer   Reason = "unknown_issuer"          // iss not in the issuers file
	ReasonNoKeys          Reason = "issuer_keys_unavailable" // the issuer's JWKS cannot be fetched (an outage: 503, not 401)
	ReasonUnknownKeyID    Reason = "unknown_key_id"          // kid not in the issuer's JWKS
	ReasonAmbiguousKey    Reason = "ambiguous_key"           // no kid and not exactly one candidate key
	ReasonKeyMismatch     Reason = "key_mismatch"            // the kid's key does not fit the alg
	ReasonBadSignature    Reason = "bad_signature"           // signature does not verify
	ReasonExpired         Reason = "expired"                 // exp in the past (beyond skew)
	ReasonNotYetValid     Reason = "not_yet_valid"           // nbf in the future (beyond skew)
	ReasonIssuedInFuture  Reason = "issued_in_future"        // iat in the future (beyond skew)
	ReasonAudience        Reason = "audience_not_accepted"   // no aud value is configured for the issuer
	ReasonClaims          Reason = "bad_claims"              // a claim the mapper needs is missing or mistyped
	reasonOK              Reason = "ok"                      // metrics only: verified
)

var reasonMessages = map[Reason]string{
	ReasonMalformedHeader: "malformed Authorization header",
	ReasonEmpty:           "empty token",
	ReasonTooLarge:        "token too large",
	ReasonMalformed:       "malformed token",
	ReasonAlgorithm:       "signing algorithm not allowed",
	ReasonForbiddenHeader: "forbidden token header",
	ReasonUnknownIssuer:   "unknown issuer",
	ReasonNoKeys:          "identity provider keys unavailable",
	ReasonUnknownKeyID:    "unknown key id",
	ReasonAmbiguousKey:    "no key id and no single matching key",
	ReasonKeyMismatch:     "key does not match the signing algorithm",
	ReasonBadSignature:    "signature invalid",
	ReasonExpired:         "token expired",
	ReasonNotYetValid:     "token not yet valid",
	ReasonIssuedInFuture:  "token issued in the future",
	ReasonAudience:        "audience not accepted",
	ReasonClaims:          "missing or invalid claims",
}

// allReasons lists every failure reason (metrics pre-create their series).
func allReasons() []Reason {
	rs := make([]Reason, 0, len(reasonMessages))
	for r := range reasonMessages {
		rs = append(rs, r)
	}
	return rs
}

// Message is the human form of the reason ("token expired").
func (r Reason) Message() string {
	if m, ok := reasonMessages[r]; ok {
		return m
	}
	return string(r)
}

// TokenError is a refused token. Its text never contains the token; Detail
// holds only secret-free context (an issuer name, a claim name, the token's
// own iss or aud, sanitized by ClaimText, the audiences an issuer accepts).
// With ReasonNoKeys it is not the token's fault: it matches
// ErrKeysUnavailable, not ErrInvalidToken.
type TokenError struct {
	Reason Reason
	Detail string
	// Issuer is the issuers-file name of the token's issuer, when known.
	Issuer string
}

func (e *TokenError) Error() string {
	s := "invalid token: " + e.Reason.Message()
	if e.Reason == ReasonNoKeys {
		s = "cannot verify token: " + e.Reason.Message()
	}
	if e.Detail != "" {
		s += ": " + e.Detail
	}
	if e.Issuer != "" {
		s += " (issuer " + e.Issuer + ")"
	}
	return s
}

// Is makes errors.Is(err, ErrInvalidToken) true, or, for ReasonNoKeys,
// errors.Is(err, ErrKeysUnavailable).
func (e *TokenError) Is(target error) bool {
	if e.Reason == ReasonNoKeys {
		return target == ErrKeysUnavailable
	}
	return target == ErrInvalidToken
}

func invalid(r Reason, detail string) *TokenError { return &TokenError{Reason: r, Detail: detail} }

// ReasonOf returns the reason of a verification error ("" if err is not a
// *TokenError).
func ReasonOf(err error) Reason {
	var te *TokenError
	if errors.As(err, &te) {
		return te.Reason
	}
	return ""
}

// maxClaimText bounds a claim value quoted in an error (and so in a 401
// body or a log line).
const maxClaimText = 200

// ClaimText makes a public claim value of a token (iss, aud) fit to quote
// in an error: control characters (and other non-printable runes) are
// dropped, it is cut to 200 bytes (on a rune boundary, marked with "…"),
// and it is returned quoted.
func ClaimText(s string) string {
	var b strings.Builder
	for _, r := range s {
		if !unicode.IsPrint(r) || r == unicode.ReplacementChar {
			continue
		}
		if b.Len()+len(string(r)) > maxClaimText {
			b.WriteString("…")
			break
		}
		b.WriteRune(r)
	}
	return strconv.Quote(b.String())
}
