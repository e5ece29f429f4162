package identity

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"strings"
	"time"
)

// maxKIDLength bounds the kid header; real ones are short identifiers.
const maxKIDLength = 256

// forbiddenHeaders are JWS header parameters that point at or carry key
// material (or change how the signature is computed). flakegate never
// fetches or trusts keys named by a token, so a token carrying any of them
// is refused outright rather than having the parameter ignored.
var forbiddenHeaders = []string{"jku", "x5u", "jwk", "x5c", "crit", "b64"}

// jws is a compact JWS split and decoded, signature not yet checked.
type jws struct {
	alg    string
	spec   algSpec
	kid    string
	hasKID bool
	input  string // "header.payload": the signed bytes
	sig    []byte
	claims map[string]any
}

var b64url = base64.RawURLEncoding.Strict()

// parseJWS splits and decodes a compact JWS and checks its header: an
// allowed asymmetric alg, a string kid if any, no forbidden parameters.
func parseJWS(raw string) (*jws, error) {
	first := strings.IndexByte(raw, '.')
	last := strings.LastIndexByte(raw, '.')
	if first < 0 || first == last || strings.IndexByte(raw[first+1:last], '.') >= 0 {
		return nil, invalid(ReasonMalformed, "not a compact JWS (three dot-separated parts)")
	}
	hb, err := b64url.DecodeString(raw[:first])
	if err != nil {
		return nil, invalid(ReasonMalformed, "header is not base64url")
	}
	header, err := decodeObject(hb)
	if err != nil {
		return nil, invalid(ReasonMalformed, "header: "+err.Error())
	}
	for _, name := range forbiddenHeaders {
		if _, ok := header[name]; ok {
			return nil, invalid(ReasonForbiddenHeader, "header "+name+" is not accepted")
		}
	}
	t := &jws{input: raw[:last]}
	alg, ok := header["alg"].(string)
	if !ok {
		return nil, invalid(ReasonMalformed, "header alg missing or not a string")
	}
	spec, ok := allowedAlgs[alg]
	if !ok {
		return nil, invalid(ReasonAlgorithm, fmt.Sprintf("alg %.20q", alg))
	}
	t.alg, t.spec = alg, spec
	if v, present := header["kid"]; present {
		kid, ok := v.(string)
		if !ok || kid == "" || len(kid) > maxKIDLength {
			return nil, invalid(ReasonMalformed, "header kid is not a non-empty short string")
		}
		t.kid, t.hasKID = kid, true
	}
	if t.sig, err = b64url.DecodeString(raw[last+1:]); err != nil || len(t.sig) == 0 {
		return nil, invalid(ReasonMalformed, "signature is not base64url")
	}
	cb, err := b64url.DecodeString(raw[first+1 : last])
	if err != nil {
		return nil, invalid(ReasonMalformed, "claims are not base64url")
	}
	if t.claims, err = decodeObject(cb); err != nil {
		return nil, invalid(ReasonMalformed, "claims: "+err.Error())
	}
	return t, nil
}

// decodeObject decodes a JSON object, refusing duplicate member names (two
// parsers that pick different duplicates is a classic JWT confusion) and
// trailing data. Numbers decode as float64.
func decodeObject(data []byte) (map[string]any, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil, errors.New("not a JSON object")
	}
	out := map[string]any{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, errors.New("invalid JSON")
		}
		name, ok := tok.(string)
		if !ok {
			return nil, errors.New("invalid JSON")
		}
		if _, dup := out[name]; dup {
			return nil, fmt.Errorf("duplicate member %.40q", name)
		}
		var v any
		if err := dec.Decode(&v); err != nil {
			return nil, errors.New("invalid JSON")
		}
		out[name] = v
	}
	if tok, err := dec.Token(); err != nil || tok != json.Delim('}') {
		return nil, errors.New("invalid JSON")
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("trailing data after JSON object")
	}
	return out, nil
}

// numericDate reads a NumericDate claim (seconds since the epoch).
// present=false when absent; an error when present but not a finite number.
func numericDate(claims map[string]any, name string) (t time.Time, present bool, err error) {
	v, ok := claims[name]
	if !ok {
		return time.Time{}, false, nil
	}
	f, ok := v.(float64)
	if !ok || math.IsNaN(f) || math.IsInf(f, 0) || math.Abs(f) > 1e12 {
		return time.Time{}, true, invalid(ReasonClaims, name+" is not a number")
	}
	sec, frac := math.Modf(f)
	return time.Unix(int64(sec), int64(frac*1e9)), true, nil
}

// checkTimes applies exp (required), nbf and iat with skew.
func checkTimes(claims map[string]any, now time.Time, skew time.Duration) (time.Time, error) {
	exp, ok, err := numericDate(claims, "exp")
	if err != nil {
		return time.Time{}, err
	}
	if !ok {
		return time.Time{}, invalid(ReasonClaims, "exp missing")
	}
	if !now.Before(exp.Add(skew)) {
		return time.Time{}, invalid(ReasonExpired, "")
	}
	if nbf, ok, err := numericDate(claims, "nbf"); err != nil {
		return time.Time{}, err
	} else if ok && now.Add(skew).Before(nbf) {
		return time.Time{}, invalid(ReasonNotYetValid, "")
	}
	if iat, ok, err := numericDate(claims, "iat"); err != nil {
		return time.Time{}, err
	} else if ok && now.Add(skew).Before(iat) {
		return time.Time{}, invalid(ReasonIssuedInFuture, "")
	}
	return exp, nil
}

// audienceAccepted reports whether aud (a string or an array of strings)
// names one of accepted.
func audienceAccepted(aud any, accepted []string) bool {
	match := func(a string) bool {
		for _, want := range accepted {
			if a == want {
				return true
			}
		}
		return false
	}
	switch v := aud.(type) {
	case string:
		return match(v)
	case []any:
		for _, a := range v {
			if s, ok := a.(string); ok && match(s) {
				return true
			}
		}
	}
	return false
}
