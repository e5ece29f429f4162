package blob

import (
	"errors"
	"strings"
	"testing"
)

func TestCheckKey(t *testing.T) {
	seg := func(n int) string { return strings.Repeat("a", n) }
	cases := []struct {
		key string
		ok  bool
	}{
		{"nar/0m4ky3j1mxsh6y0fgwdnp0vnhz5sl8xaqh1qn3vrr5xqhmbg8c7q.nar.xz", true},
		{"log/omnicorp/app/7a5d1c1f0f4c9a0bd1i7i1d4fd0c3b3c-hello-2.12.drv", true},
		{"a+b=c?d", true},
		{"a/B/c-d_e.f+g=h?i/9", true},
		{"x", true},
		{"a.", true},
		{"a/..b.", false},
		{"", false},
		{"/abs", false},
		{"../x", false},
		{"..", false},
		{".", false},
		{"a/../b", false},
		{"a/..", false},
		{"a/./b", false},
		{"a//b", false},
		{"a/", false},
		{".tmp/x", false},
		{".tmp", false},
		{"a/.x", false},
		{"nar/.hidden", false},
		{"a b", false},
		{"a%2fb", false},
		{"a\\b", false},
		{"a/b\x00c", false},
		{"ünïcode", false},
		// The longest log key the server writes: org and name of 100
		// bytes, a 255-byte derivation file name.
		{"log/" + seg(100) + "/" + seg(100) + "/" + seg(255), true},
		{seg(255) + "/" + seg(255), true},
		{seg(256), false},
		{"a/" + seg(256), false},
		{seg(200) + "/" + seg(200) + "/" + seg(MaxKeyLen-402), true},
		{seg(200) + "/" + seg(200) + "/" + seg(MaxKeyLen-401), false},
		{seg(901), false},
	}
	for _, c := range cases {
		err := CheckKey(c.key)
		if (err == nil) != c.ok {
			t.Errorf("CheckKey(%q) = %v, want ok=%v", c.key, err, c.ok)
		}
		if err != nil && !errors.Is(err, ErrInvalidKey) {
			t.Errorf("CheckKey(%q) = %v, does not wrap ErrInvalidKey", c.key, err)
		}
	}
}

func TestCheckKeyErrorIsShort(t *testing.T) {
	err := CheckKey(strings.Repeat("a", 100_000))
	if err == nil || len(err.Error()) > 100 {
		t.Fatalf("error for a 100 kB key: %.200v", err)
	}
}
