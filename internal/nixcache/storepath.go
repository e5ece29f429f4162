package nixcache

import (
	"strings"

	"github.com/flakegate/flakegate/internal/route"
)

// StoreDir is the only store directory the cache serves.
const StoreDir = "/nix/store"

// maxNameLen is the longest store path name Nix accepts.
const maxNameLen = 211

// ValidStorePathBase reports whether s is a store path base name,
// "<32-char nixbase32 hash>-<name>", with a name Nix would accept.
func ValidStorePathBase(s string) bool {
	if len(s) < 34 || !route.IsStoreHash(s[:32]) || s[32] != '-' {
		return false
	}
	name := s[33:]
	if len(name) > maxNameLen || name[0] == '.' {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("+-._?=", c) >= 0) {
			return false
		}
	}
	return true
}

// StorePathBase returns the base name of an absolute store path
// ("/nix/store/<hash>-<name>" → "<hash>-<name>") and whether it is valid.
func StorePathBase(p string) (string, bool) {
	base, ok := strings.CutPrefix(p, StoreDir+"/")
	if !ok || !ValidStorePathBase(base) {
		return "", false
	}
	return base, true
}
