package nixcache

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"strings"
	"testing"

	"github.com/flakegate/flakegate/internal/nixname"
)

// zstdPadded is data as one zstd frame of raw blocks, emptyBlocks empty
// ones (3 bytes each, no output) first: a valid stream of any size.
func zstdPadded(data []byte, emptyBlocks int) []byte {
	var b bytes.Buffer
	b.Write([]byte{0x28, 0xb5, 0x2f, 0xfd}) // magic
	b.WriteByte(0x00)                       // no content size, no checksum, window descriptor follows
	b.WriteByte(7 << 3)                     // window 2^(10+7) = 128 KiB
	for range emptyBlocks {
		b.Write([]byte{0, 0, 0}) // raw block, size 0, not last
	}
	for len(data) > 0 {
		n := min(len(data), 128<<10)
		h := uint32(n) << 3 // raw
		if n == len(data) {
			h |= 1 // last
		}
		var hb [4]byte
		binary.LittleEndian.PutUint32(hb[:], h)
		b.Write(hb[:3])
		b.Write(data[:n])
		data = data[n:]
	}
	return b.Bytes()
}

// A compressed NAR file may not be much larger than its NAR: padded with
// empty zstd blocks, a NAR of 2 KiB could be stored as a file of
// -max-nar-size and served in the union view for a path several flakes
// hold (adversarial review, 2026-12-05). Incompressible data stored raw, the
// compressors' worst case, is accepted.
func TestVerifierRefusesBloatedFiles(t *testing.T) {
	nar := regularNAR(strings.Repeat("hello\n", 300))
	bloated := zstdPadded(nar, 100_000)
	_, err := runVerifier(t, nixname.CompressionZstd, 0, bloated, 1<<20)
	if err == nil || !strings.Contains(err.Error(), "more than any compressor makes") {
		t.Errorf("a %d-byte zstd file of a %d-byte NAR: %v, want refused", len(bloated), len(nar), err)
	}
	// Just inside the bound: accepted.
	fits := zstdPadded(nar, int(MaxFileSize(int64(len(nar)))-int64(len(zstdPadded(nar, 0))))/3)
	if _, err := runVerifier(t, nixname.CompressionZstd, 0, fits, 1<<20); err != nil {
		t.Errorf("a %d-byte zstd file of a %d-byte NAR (bound %d): %v", len(fits), len(nar), MaxFileSize(int64(len(nar))), err)
	}
	random := make([]byte, 3<<20)
	if _, err := rand.Read(random); err != nil {
		t.Fatal(err)
	}
	big := regularNAR(string(random))
	for name, file := range map[string][]byte{
		"zstd raw blocks": zstdPadded(big, 0),
		"zstd":            zstdOf(t, big),
		"xz":              xzOf(t, big),
	} {
		c := nixname.CompressionZstd
		if name == "xz" {
			c = nixname.CompressionXZ
		}
		if _, err := runVerifier(t, c, 0, file, 1<<20); err != nil {
			t.Errorf("incompressible NAR of %d bytes as %s (%d bytes): %v", len(big), name, len(file), err)
		}
	}
}
