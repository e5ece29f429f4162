package nixcache

import (
	"math/rand/v2"
	"testing"

	"github.com/flakegate/flakegate/internal/nixname"
)

// BenchmarkVerifier measures the verification half of a push ingest: hash
// the uploaded bytes and check the NAR structure while streaming, in the
// chunk size the upload handler uses. bench/run.sh's ingest row compares the
// whole upload with `openssl dgst -sha256`; this isolates the verifier.
func BenchmarkVerifier(b *testing.B) {
	contents := make([]byte, 64<<20)
	rand.NewChaCha8([32]byte{1}).Read(contents)
	nar := regularNAR(string(contents))
	cases := []struct {
		name string
		c    nixname.Compression
		data []byte
	}{
		{"none_64MiB", nixname.CompressionNone, nar},
		{"zstd_64MiB", nixname.CompressionZstd, zstdOf(b, nar)},
		// What `nix copy` sends by default: xz, here of text-like contents
		// (hex), in the sizes of a typical and of a larger store path.
		{"xz_64KiB", nixname.CompressionXZ, xzOf(b, hexNAR(64<<10))},
		{"xz_8MiB", nixname.CompressionXZ, xzOf(b, hexNAR(8<<20))},
	}
	const chunk = 256 << 10
	for _, cs := range cases {
		b.Run(cs.name, func(b *testing.B) {
			b.SetBytes(int64(len(cs.data)))
			for b.Loop() {
				v, err := NewVerifier(cs.c, 0)
				if err != nil {
					b.Fatal(err)
				}
				for off := 0; off < len(cs.data); off += chunk {
					if _, err := v.Write(cs.data[off:min(off+chunk, len(cs.data))]); err != nil {
						b.Fatal(err)
					}
				}
				res, err := v.Finish()
				if err != nil {
					b.Fatal(err)
				}
				if res.NarSize == 0 || res.FileSize != int64(len(cs.data)) {
					b.Fatalf("NarSize %d, FileSize %d of %d", res.NarSize, res.FileSize, len(cs.data))
				}
			}
		})
	}
}

// hexNAR is a NAR of one file of n bytes of pseudo-random hex: compressible
// about 2:1, like text and code.
func hexNAR(n int) []byte {
	const digits = "0123456789abcdef"
	r := rand.NewChaCha8([32]byte{2})
	b := make([]byte, n)
	for i := range b {
		b[i] = digits[r.Uint64()&15]
	}
	return regularNAR(string(b))
}
