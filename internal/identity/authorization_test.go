package identity_test

import (
	"encoding/base64"
	"errors"
	"strings"
	"testing"

	"github.com/flakegate/flakegate/internal/identity"
)

const sampleJWT = "eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJodHRwczovL2V4YW1wbGUifQ.c2lnbmF0dXJl"

func basic(userpass string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(userpass))
}

func TestTokenFromAuthorization(t *testing.T) {
	cases := []struct {
		name   string
		header string
		want   string
		// wantErr: nil for success; identity.ErrNoToken or identity.ErrInvalidToken.
		wantErr error
	}{
		{"bearer", "Bearer " + sampleJWT, sampleJWT, nil},
		{"bearer lower-case scheme", "bearer " + sampleJWT, sampleJWT, nil},
		{"bearer upper-case scheme", "BEARER " + sampleJWT, sampleJWT, nil},
		{"bearer extra spaces", "  Bearer    " + sampleJWT + "  ", sampleJWT, nil},
		{"bearer opaque token alphabet", "Bearer abc-._~+/=", "abc-._~+/=", nil},
		{"basic from netrc", basic("ci:" + sampleJWT), sampleJWT, nil},
		{"basic login ignored", basic("anything-at-all:" + sampleJWT), sampleJWT, nil},
		{"basic empty login", basic(":" + sampleJWT), sampleJWT, nil},
		{"basic lower-case scheme", "basic " + base64.StdEncoding.EncodeToString([]byte("u:"+sampleJWT)), sampleJWT, nil},
		{"basic without padding", "Basic " + base64.RawStdEncoding.EncodeToString([]byte("u:"+sampleJWT+"x")), sampleJWT + "x", nil},
		{"basic password with colon is malformed token text", basic("u:a:b"), "", identity.ErrInvalidToken},

		{"empty", "", "", identity.ErrNoToken},
		{"only spaces", "   ", "", identity.ErrNoToken},
		{"basic empty password", basic("login:"), "", identity.ErrNoToken},

		{"bearer without token", "Bearer", "", identity.ErrInvalidToken},
		{"bearer with only spaces", "Bearer    ", "", identity.ErrInvalidToken},
		{"bearer with inner space", "Bearer abc def", "", identity.ErrInvalidToken},
		{"bearer with control char", "Bearer abc\x00def", "", identity.ErrInvalidToken},
		{"bearer with quotes", `Bearer "abc"`, "", identity.ErrInvalidToken},
		{"bearer with non-ASCII", "Bearer abcé", "", identity.ErrInvalidToken},
		{"scheme glued to token", "Bearer" + sampleJWT, "", identity.ErrInvalidToken},
		{"unknown scheme", "Token " + sampleJWT, "", identity.ErrInvalidToken},
		{"digest scheme", `Digest username="x"`, "", identity.ErrInvalidToken},
		{"no scheme", sampleJWT, "", identity.ErrInvalidToken},
		{"basic not base64", "Basic !!!", "", identity.ErrInvalidToken},
		{"basic without colon", basic(sampleJWT), "", identity.ErrInvalidToken},
		{"basic without credentials", "Basic", "", identity.ErrInvalidToken},
		{"basic password with space", basic("u:abc def"), "", identity.ErrInvalidToken},
		{"basic password with newline", basic("u:" + sampleJWT + "\n"), "", identity.ErrInvalidToken},
		{"basic bad padding", "Basic " + base64.StdEncoding.EncodeToString([]byte("u:"+sampleJWT)) + "==", "", identity.ErrInvalidToken},
		{"too large", "Bearer " + strings.Repeat("a", 2*identity.MaxTokenSize), "", identity.ErrInvalidToken},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := identity.TokenFromAuthorization(tc.header)
			switch {
			case tc.wantErr == nil && err != nil:
				t.Fatalf("error %v, want token", err)
			case tc.wantErr != nil && !errors.Is(err, tc.wantErr):
				t.Fatalf("error %v, want %v", err, tc.wantErr)
			}
			if got != tc.want {
				t.Fatalf("token = %q, want %q", got, tc.want)
			}
			if err != nil {
				assertNoSecret(t, "error", err.Error(), sampleJWT)
				if errors.Is(err, identity.ErrInvalidToken) && identity.ReasonOf(err) == "" {
					t.Errorf("invalid-token error %v has no reason", err)
				}
			}
		})
	}
}

// FuzzTokenFromAuthorization: never panics; a returned token is non-empty,
// bounded, in the token alphabet, and really came from the header (it
// round-trips through the scheme it was sent with).
func FuzzTokenFromAuthorization(f *testing.F) {
	for _, seed := range []string{
		"", "Bearer " + sampleJWT, basic("u:" + sampleJWT), "Basic", "Bearer", "Basic =", "bearer  x",
		basic("u:"), basic("no-colon"), "Negotiate abc", "Basic " + strings.Repeat("A", 100),
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, header string) {
		tok, err := identity.TokenFromAuthorization(header)
		if err != nil {
			if tok != "" {
				t.Fatalf("token %q returned with error %v", tok, err)
			}
			if !errors.Is(err, identity.ErrNoToken) && !errors.Is(err, identity.ErrInvalidToken) {
				t.Fatalf("error %v is neither ErrNoToken nor ErrInvalidToken", err)
			}
			if len(header) > 0 && len(header) >= 24 && strings.Contains(err.Error(), header) {
				t.Fatalf("error quotes the header")
			}
			return
		}
		if tok == "" || len(tok) > 2*identity.MaxTokenSize {
			t.Fatalf("bad token length %d", len(tok))
		}
		for _, c := range []byte(tok) {
			if c <= ' ' || c >= 0x7f || c == ':' || c == '"' {
				t.Fatalf("token %q has byte %q", tok, c)
			}
		}
		h := strings.Trim(header, " \t")
		scheme, rest, _ := strings.Cut(h, " ")
		rest = strings.TrimLeft(rest, " \t")
		switch strings.ToLower(scheme) {
		case "bearer":
			if rest != tok {
				t.Fatalf("bearer token %q, header rest %q", tok, rest)
			}
		case "basic":
			raw, err := base64.StdEncoding.DecodeString(rest)
			if err != nil {
				raw, err = base64.RawStdEncoding.DecodeString(rest)
			}
			if err != nil {
				t.Fatalf("accepted basic credentials that do not decode: %v", err)
			}
			if _, pw, ok := strings.Cut(string(raw), ":"); !ok || pw != tok {
				t.Fatalf("basic password %q, decoded %q", tok, raw)
			}
		default:
			t.Fatalf("token from scheme %q", scheme)
		}
	})
}

// TestTokenAlphabet checks isTokenText's table against RFC 6750's b64token
// alphabet, byte by byte.
func TestTokenAlphabet(t *testing.T) {
	const alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~+/="
	for c := 0; c < 256; c++ {
		want := strings.IndexByte(alphabet, byte(c)) >= 0
		if got := identity.IsTokenText("ab" + string([]byte{byte(c)}) + "cd"); got != want {
			t.Errorf("byte %#02x: isTokenText = %v, want %v", c, got, want)
		}
	}
	if !identity.IsTokenText("") {
		t.Error("empty text refused (the caller checks emptiness itself)")
	}
}
