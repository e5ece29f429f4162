package nixname

import "strings"

// Compression of a NAR file, as Nix names it in a narinfo.
type Compression string

const (
	CompressionNone  Compression = "none"
	CompressionXZ    Compression = "xz"
	CompressionZstd  Compression = "zstd"
	CompressionBzip2 Compression = "bzip2"
)

// compressions is the one list of supported compressions, each with the
// extension of its NAR files.
var compressions = [...]struct {
	c   Compression
	ext string
}{
	{CompressionNone, ".nar"},
	{CompressionXZ, ".nar.xz"},
	{CompressionZstd, ".nar.zst"},
	{CompressionBzip2, ".nar.bz2"},
}

// Compressions returns the compressions the cache supports, in the order
// none, xz, zstd, bzip2.
func Compressions() []Compression {
	out := make([]Compression, len(compressions))
	for i, e := range compressions {
		out[i] = e.c
	}
	return out
}

// Supported reports whether c is one of Compressions().
func (c Compression) Supported() bool { return c.Ext() != "" }

// Ext returns the extension of c's NAR files (".nar", ".nar.xz", …), or ""
// for an unsupported compression.
func (c Compression) Ext() string {
	for _, e := range compressions {
		if e.c == c {
			return e.ext
		}
	}
	return ""
}

// NarFileName is the file name Nix uses for a NAR with this file hash
// (nixbase32) and compression; an unsupported compression gets ".nar".
func NarFileName(fileHash string, c Compression) string {
	if ext := c.Ext(); ext != "" {
		return fileHash + ext
	}
	return fileHash + ".nar"
}

// ParseNarFile splits a NAR file name, "<filehash>.nar[.xz|.zst|.bz2]",
// into its file hash (52 nixbase32 characters: Nix uses the SHA-256 file
// hash; shorter hashes are refused) and compression. ok is false for any
// other name.
func ParseNarFile(name string) (fileHash string, c Compression, ok bool) {
	for _, e := range compressions {
		if h, found := strings.CutSuffix(name, e.ext); found {
			if !isNixBase32(h, FileHashLen) {
				return "", "", false
			}
			return h, e.c, true
		}
	}
	return "", "", false
}

// NarExtSyntax describes the extensions ParseNarFile accepts, for
// messages: ".nar[.xz|.zst|.bz2]".
func NarExtSyntax() string { return narExtSyntax }

var narExtSyntax = func() string {
	var exts []string
	for _, e := range compressions {
		if ext := strings.TrimPrefix(e.ext, ".nar"); ext != "" {
			exts = append(exts, ext)
		}
	}
	return ".nar[" + strings.Join(exts, "|") + "]"
}()
