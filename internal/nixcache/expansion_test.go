package nixcache

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/flakegate/flakegate/internal/nixname"
)

// runVerifierOpts is runVerifier with options.
func runVerifierOpts(t *testing.T, c nixname.Compression, data []byte, opts ...VerifierOption) (NarResult, error) {
	t.Helper()
	v, err := NewVerifier(c, 0, opts...)
	if err != nil {
		t.Fatal(err)
	}
	for len(data) > 0 {
		n := min(64<<10, len(data))
		if _, err := v.Write(data[:n]); err != nil {
			v.Abort()
			return NarResult{}, err
		}
		data = data[n:]
	}
	return v.Finish()
}

// A decompression bomb (64 MiB of zeros in a valid NAR, a few KiB
// compressed) is refused by MaxExpansion long before it is decompressed,
// while ordinary NARs, small very compressible ones and uncompressed ones
// pass.
func TestVerifierMaxExpansion(t *testing.T) {
	zeros := make([]byte, 64<<20)
	bomb := regularNAR(string(zeros))
	for _, c := range []nixname.Compression{nixname.CompressionZstd, nixname.CompressionXZ} {
		t.Run(string(c), func(t *testing.T) {
			var file []byte
			if c == nixname.CompressionZstd {
				file = zstdOf(t, bomb)
			} else {
				file = xzOf(t, bomb)
			}
			t.Logf("bomb: %d bytes of %s expanding to %d", len(file), c, len(bomb))
			start := time.Now()
			_, err := runVerifierOpts(t, c, file, MaxExpansion(DefaultMaxExpansion))
			elapsed := time.Since(start)
			if !errors.Is(err, ErrTooLarge) || !strings.Contains(err.Error(), "times its compressed size") {
				t.Fatalf("bomb: err %v, want ErrTooLarge for its expansion", err)
			}
			var got, in int64
			if _, serr := fmt.Sscanf(err.Error()[strings.Index(err.Error(), "(over"):], "(over %d bytes from the first %d compressed bytes)", &got, &in); serr != nil {
				t.Fatalf("bomb: unexpected message %q: %v", err, serr)
			}
			limit := DefaultMaxExpansion*int64(len(file)) + ExpansionFloor
			if got > limit+1<<20 || got >= int64(len(bomb)) {
				t.Fatalf("bomb decompressed to %d bytes before it was refused (limit %d)", got, limit)
			}
			t.Logf("refused after %d decompressed bytes in %v", got, elapsed)

			// Without the option the same bytes are a valid NAR.
			if _, err := runVerifierOpts(t, c, file); err != nil {
				t.Fatalf("bomb without MaxExpansion: %v", err)
			}
			// Normal and small NARs pass.
			for name, nar := range map[string][]byte{
				"rich":          richNAR(),
				"512KiB zeros":  regularNAR(string(zeros[:512<<10])),
				"text 3MiB":     regularNAR(wordSoup(3 << 20)),
				"directory nar": dirNAR([]string{"a", "b", "c"}, "contents"),
			} {
				var f []byte
				if c == nixname.CompressionZstd {
					f = zstdOf(t, nar)
				} else {
					f = xzOf(t, nar)
				}
				res, err := runVerifierOpts(t, c, f, MaxExpansion(DefaultMaxExpansion))
				if err != nil || res.NarSize != int64(len(nar)) {
					t.Errorf("%s (%d bytes, %d compressed): %+v %v", name, len(nar), len(f), res, err)
				}
			}
		})
	}
	t.Run("none", func(t *testing.T) {
		nar := regularNAR(string(zeros[:8<<20]))
		if _, err := runVerifierOpts(t, nixname.CompressionNone, nar, MaxExpansion(1)); err != nil {
			t.Fatalf("uncompressed NAR with MaxExpansion(1): %v", err)
		}
	})
}

// wordSoup is n bytes of pseudo-random words: compressible like text.
func wordSoup(n int) string {
	words := []string{"store", "path", "nix", "flake", "build", "derivation", "output", "hash", "cache", "lib", "bin", "share"}
	r := rand.New(rand.NewPCG(1, 2))
	var b strings.Builder
	for b.Len() < n {
		b.WriteString(words[r.IntN(len(words))])
		if r.IntN(8) == 0 {
			b.WriteByte('\n')
		} else {
			b.WriteByte(' ')
		}
	}
	return b.String()[:n]
}

// Expands is the one ratio rule of NARs and encoded build logs: up to
// ExpansionFloor always, then ratio × encoded + ExpansionFloor; off at a
// ratio ≤ 0; no overflow for huge encoded counts.
func TestExpands(t *testing.T) {
	for _, c := range []struct {
		decoded, encoded, ratio int64
		want                    bool
	}{
		{ExpansionFloor, 0, 1000, false},
		{ExpansionFloor + 1, 0, 1000, true},
		{1000*100 + ExpansionFloor, 100, 1000, false},
		{1000*100 + ExpansionFloor + 1, 100, 1000, true},
		{1 << 40, 100, 0, false},
		{1 << 40, 100, -1, false},
		{1<<63 - 1, 1 << 62, 1000, false},
	} {
		if got := Expands(c.decoded, c.encoded, c.ratio); got != c.want {
			t.Errorf("Expands(%d, %d, %d) = %v, want %v", c.decoded, c.encoded, c.ratio, got, c.want)
		}
	}
}
