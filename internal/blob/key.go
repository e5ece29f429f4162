package blob

import (
	"errors"
	"fmt"
	"strings"

	"github.com/flakegate/flakegate/internal/nixname"
)

// Key limits. Every key the servers write fits: the longest is a build log,
// "log/" + org (≤100) + "/" + name (≤100) + "/" + "<hash>-<name>.drv" (≤255),
// 461 bytes.
const (
	// MaxKeyLen bounds a whole key. S3 holds object names up to 1024 bytes,
	// which must also fit the store's prefix: 512 leaves 511 bytes for it.
	// On a filesystem the key is below the store's root, far from PATH_MAX
	// (4096).
	MaxKeyLen = 512
	// MaxSegmentLen bounds each segment: a file name on common filesystems
	// (ext4, XFS, btrfs, ZFS, APFS: NAME_MAX) holds 255 bytes.
	MaxSegmentLen = 255
)

// ErrInvalidKey is returned (wrapped) for a key that breaks the key rule
// (see CheckKey). Every Store method taking a key refuses such keys with it
// before touching storage.
var ErrInvalidKey = errors.New("invalid blob key")

// CheckKey is the one key rule every Store enforces: a key is 1 to MaxKeyLen
// bytes of slash-separated relative segments, each 1 to MaxSegmentLen bytes
// of [A-Za-z0-9._+=?-] that does not start with '.'. So a key cannot be
// absolute ("/abs"), have empty segments ("a//b", "a/"), climb out of the
// store ("../x", "a/.."), or name a hidden file ("a/.x") or the stores'
// private ".tmp/" area where uncommitted uploads live. Errors wrap
// ErrInvalidKey.
func CheckKey(key string) error {
	if key == "" {
		return fmt.Errorf("%w: empty", ErrInvalidKey)
	}
	if len(key) > MaxKeyLen {
		return fmt.Errorf("%w: %d bytes, longer than %d", ErrInvalidKey, len(key), MaxKeyLen)
	}
	for seg := range strings.SplitSeq(key, "/") {
		switch {
		case seg == "":
			return fmt.Errorf("%w %q: empty segment (absolute, trailing or double slash)", ErrInvalidKey, key)
		case seg[0] == '.':
			return fmt.Errorf("%w %q: segment %q starts with '.'", ErrInvalidKey, key, seg)
		case len(seg) > MaxSegmentLen:
			return fmt.Errorf("%w %q: segment of %d bytes, longer than %d", ErrInvalidKey, key, len(seg), MaxSegmentLen)
		}
		for i := 0; i < len(seg); i++ {
			if c := seg[i]; !nixname.IsNameChar(c) {
				return fmt.Errorf("%w %q: character %q not allowed", ErrInvalidKey, key, c)
			}
		}
	}
	return nil
}
