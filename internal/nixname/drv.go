package nixname

import "strings"

// Names of derivation outputs and debug info, as Nix writes them in
// binary-cache file names.

// IsBuildID reports whether s is an ELF build id as Nix names debug info
// links: 40 lower-case hex digits (debuginfo/<2 digits><38 digits>, from
// lib/debug/.build-id/<2>/<38>.debug).
func IsBuildID(s string) bool {
	if len(s) != 40 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !(s[i] >= '0' && s[i] <= '9' || s[i] >= 'a' && s[i] <= 'f') {
			return false
		}
	}
	return true
}

// IsOutputName reports whether s may name a derivation output: 1 to 255
// store path name characters, not starting with '.'.
func IsOutputName(s string) bool {
	if s == "" || len(s) > 255 || s[0] == '.' {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !IsNameChar(s[i]) {
			return false
		}
	}
	return true
}

// IsDrvOutputID reports whether s is a derivation output id as Nix ≤ 2.33
// writes it (DrvOutput::to_string): "sha256:<64 lower-case hex digits>!<output>".
func IsDrvOutputID(s string) bool {
	h, out, ok := strings.Cut(s, "!")
	if !ok || !IsOutputName(out) {
		return false
	}
	hex, ok := strings.CutPrefix(h, "sha256:")
	if !ok || len(hex) != 64 {
		return false
	}
	for i := 0; i < len(hex); i++ {
		if !(hex[i] >= '0' && hex[i] <= '9' || hex[i] >= 'a' && hex[i] <= 'f') {
			return false
		}
	}
	return true
}

// LogBlobKey is the blob key of flake's build log of drv uploaded with
// Content-Encoding enc ("" for none): log/<org>/<name>/[<enc>/]<drv>. The
// encoding is a directory, which no drv file name can be: as a suffix, a
// plain log named <drv>.zstd shared the zstd log's blob. The blob server
// writes under it and the garbage collector removes every encoding's.
func LogBlobKey(flake Flake, enc, drv string) string {
	dir := "log/" + flake.Org + "/" + flake.Name + "/"
	if enc != "" {
		dir += enc + "/"
	}
	return dir + drv
}
