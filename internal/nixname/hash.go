package nixname

import "github.com/nix-community/go-nix/pkg/nixbase32"

const (
	// StoreHashLen is the length of a store path hash in nixbase32.
	StoreHashLen = 32
	// FileHashLen is the length of a NAR file hash (SHA-256) in nixbase32.
	FileHashLen = 52
)

// IsStoreHash reports whether s is a 32-character nixbase32 store path hash.
func IsStoreHash(s string) bool { return isNixBase32(s, StoreHashLen) }

// isNixBase32 reports whether s is n characters of the nixbase32 alphabet.
func isNixBase32(s string, n int) bool {
	if len(s) != n {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !nixbase32.Is(s[i]) {
			return false
		}
	}
	return true
}

// IsNameChar reports whether c may appear in a store path name:
// [A-Za-z0-9+-._?=], the set Nix accepts. It is the one definition of the
// name character class; store path names, derivation file names and blob
// keys are made of it.
func IsNameChar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
		c == '+' || c == '-' || c == '.' || c == '_' || c == '?' || c == '='
}
