package login

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParseLifetime(t *testing.T) {
	for in, want := range map[string]time.Duration{"90d": 90 * 24 * time.Hour, "1d": 24 * time.Hour, "36h": 36 * time.Hour, "90m": 90 * time.Minute} {
		if got, err := ParseLifetime(in); err != nil || got != want {
			t.Errorf("ParseLifetime(%q) = %s, %v; want %s", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "0d", "-1d", "d", "1.5d", "0s", "-3h", "ninety", "99999999d"} {
		if _, err := ParseLifetime(bad); err == nil {
			t.Errorf("ParseLifetime(%q): no error", bad)
		}
	}
}

func TestStorePathOf(t *testing.T) {
	const sp = "/nix/store/0c6kzph7l0dcbfmjap64f0czdafn3b7x-system"
	for in, want := range map[string]string{sp: sp, sp + "/bin/switch": sp} {
		if got, err := StorePathOf(in); err != nil || got != want {
			t.Errorf("StorePathOf(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	// A link (./result) is resolved; one leading outside the store is refused.
	dir := t.TempDir()
	outside := filepath.Join(dir, "result")
	if err := os.Symlink(dir, outside); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{outside, "/nix/store/nothash-x", "/etc/passwd", filepath.Join(dir, "missing")} {
		if _, err := StorePathOf(bad); err == nil || !strings.Contains(err.Error(), "--closure") {
			t.Errorf("StorePathOf(%q): %v, want an error naming --closure", bad, err)
		}
	}
}
