package nixcache

import (
	"math/rand/v2"
	"testing"

	"github.com/flakegate/flakegate/internal/route"
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
		c    route.Compression
		data []byte
	}{
		{"none_64MiB", route.CompressionNone, nar},
		{"zstd_64MiB", route.CompressionZstd, zstdOf(b, nar)},
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
				if res.NarSize != int64(len(nar)) {
					b.Fatalf("NarSize %d, want %d", res.NarSize, len(nar))
				}
			}
		})
	}
}
