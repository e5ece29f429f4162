package nixname

import "strings"

// StoreDir is the only store directory the cache serves.
const StoreDir = "/nix/store"

// maxNameLen is the longest store path name Nix accepts.
const maxNameLen = 211

// ValidStorePathBase reports whether s is a store path base name,
// "<32-char nixbase32 hash>-<name>", with a name Nix would accept: 1 to
// 211 of the name characters, not starting with '.'.
func ValidStorePathBase(s string) bool {
	if len(s) < 34 || !IsStoreHash(s[:32]) || s[32] != '-' {
		return false
	}
	name := s[33:]
	if len(name) > maxNameLen || name[0] == '.' {
		return false
	}
	for i := 0; i < len(name); i++ {
		if !IsNameChar(name[i]) {
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
