package cacheserver

import (
	"encoding/json"
	"net/http"
	"slices"
	"testing"

	"github.com/flakegate/flakegate/internal/route"
)

// TestPublicKeys: the public-keys endpoint lists every signing key,
// without authentication, and refuses writes.
func TestPublicKeys(t *testing.T) {
	second, secondPublic := mustKey("test-cache-2")
	ts := newTestServer(t, "", keySet(t, second, testKeySecret), nil)
	status, body, hdr, err := send(http.MethodGet, ts.URL+route.PublicKeysPath, nil)
	if err != nil {
		t.Fatal(err)
	}
	if status != http.StatusOK || hdr.Get("Content-Type") != "application/json" {
		t.Fatalf("GET public keys: %d %s %q", status, hdr.Get("Content-Type"), body)
	}
	var got route.PublicKeysResponse
	if err := json.Unmarshal([]byte(body), &got); err != nil {
		t.Fatal(err)
	}
	if want := []string{secondPublic, testKeyPublic}; !slices.Equal(got.PublicKeys, want) {
		t.Fatalf("public keys %v, want %v", got.PublicKeys, want)
	}
	if status, _, _, _ := send(http.MethodPut, ts.URL+route.PublicKeysPath, []byte("x")); status != http.StatusMethodNotAllowed {
		t.Fatalf("PUT public keys: %d, want 405", status)
	}
}
