package nixcache

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/ulikunitz/xz"

	"github.com/flakegate/flakegate/internal/nixname"
)

// Decoders are pooled across uploads: a decoder left in any state by a
// rejected, truncated or aborted upload must verify the next one exactly.
func TestVerifierPooledDecodersAfterFailures(t *testing.T) {
	for _, c := range []nixname.Compression{nixname.CompressionXZ, nixname.CompressionZstd} {
		t.Run(string(c), func(t *testing.T) {
			compress := func(b []byte) []byte {
				if c == nixname.CompressionXZ {
					return xzOf(t, b)
				}
				return zstdOf(t, b)
			}
			var wg sync.WaitGroup
			errs := make(chan error, 64)
			for g := range 4 {
				wg.Go(func() {
					for i := range 25 {
						nar := regularNAR(fmt.Sprintf("goroutine %d upload %d\n%s", g, i, strings.Repeat("x", i*97)))
						file := compress(nar)
						// A failure first: truncated, garbage or aborted.
						switch i % 3 {
						case 0:
							if _, err := runVerifier(t, c, 0, file[:len(file)/2], 7); err == nil {
								errs <- fmt.Errorf("truncated %s accepted", c)
							}
						case 1:
							if _, err := runVerifier(t, c, 0, []byte("not compressed at all, not a NAR"), 7); err == nil {
								errs <- fmt.Errorf("garbage accepted as %s", c)
							}
						case 2:
							v, err := NewVerifier(c, 0)
							if err != nil {
								errs <- err
								return
							}
							v.Write(file[:len(file)/3])
							v.Abort()
						}
						res, err := runVerifier(t, c, 0, file, 4096)
						if err != nil {
							errs <- fmt.Errorf("valid %s upload after a failure: %v", c, err)
							continue
						}
						nh := sha256.Sum256(nar)
						if !bytes.Equal(res.NarHash, nh[:]) || res.NarSize != int64(len(nar)) {
							errs <- fmt.Errorf("NarHash/NarSize %x/%d, want %x/%d", res.NarHash, res.NarSize, nh, len(nar))
						}
					}
				})
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
		})
	}
}

// xz as written by `xz` for several files concatenated: one NAR split over
// two streams decodes as the whole.
func TestVerifierConcatenatedXZStreams(t *testing.T) {
	nar := richNAR()
	file := append(xzOf(t, nar[:len(nar)/2]), xzOf(t, nar[len(nar)/2:])...)
	res, err := runVerifier(t, nixname.CompressionXZ, 0, file, 1000)
	if err != nil {
		t.Fatal(err)
	}
	if nh := sha256.Sum256(nar); !bytes.Equal(res.NarHash, nh[:]) {
		t.Fatalf("NarHash %x, want %x", res.NarHash, nh)
	}
}

// A stream that declares a dictionary above xzDictMax would make the
// decoder allocate it: refused before that.
func TestVerifierRejectsHugeXZDictionary(t *testing.T) {
	var out bytes.Buffer
	w, err := xz.WriterConfig{DictCap: 2 * xzDictMax}.NewWriter(&out)
	if err != nil {
		t.Fatal(err)
	}
	w.Write(regularNAR("small"))
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	_, err = runVerifier(t, nixname.CompressionXZ, 0, out.Bytes(), 4096)
	if err == nil {
		t.Fatal("a 128 MiB xz dictionary was accepted")
	}
	if !strings.Contains(err.Error(), "dictionary above the 64 MiB limit") {
		t.Fatalf("error %q does not name the limit", err)
	}
}

// WriteBuffer hands the verifier the caller's buffers: same measurements
// as Write, and bad data is reported on a later WriteBuffer or Finish.
func TestVerifierWriteBuffer(t *testing.T) {
	nar := richNAR()
	for _, c := range []nixname.Compression{nixname.CompressionNone, nixname.CompressionZstd} {
		file := nar
		if c == nixname.CompressionZstd {
			file = zstdOf(t, nar)
		}
		v, err := NewVerifier(c, 0)
		if err != nil {
			t.Fatal(err)
		}
		for off := 0; off < len(file); off += 1000 {
			bp := NewBuffer()
			n := copy(*bp, file[off:min(off+1000, len(file))])
			if err := v.WriteBuffer(bp, n); err != nil {
				t.Fatalf("%s: %v", c, err)
			}
		}
		res, err := v.Finish()
		if err != nil {
			t.Fatalf("%s: %v", c, err)
		}
		fh, nh := sha256.Sum256(file), sha256.Sum256(nar)
		if !bytes.Equal(res.FileHash, fh[:]) || !bytes.Equal(res.NarHash, nh[:]) || res.NarSize != int64(len(nar)) {
			t.Fatalf("%s: measured %x %x %d", c, res.FileHash, res.NarHash, res.NarSize)
		}
	}

	v, err := NewVerifier(nixname.CompressionNone, 0)
	if err != nil {
		t.Fatal(err)
	}
	var failed error
	for i := 0; i < 100 && failed == nil; i++ {
		bp := NewBuffer()
		n := copy(*bp, "this is not a NAR, and it goes on and on")
		failed = v.WriteBuffer(bp, n)
	}
	if failed == nil {
		_, failed = v.Finish()
	} else {
		v.Abort()
	}
	if failed == nil || !strings.Contains(failed.Error(), "not a NAR") {
		t.Fatalf("garbage through WriteBuffer: %v", failed)
	}
	if err := v.WriteBuffer(NewBuffer(), 3); err == nil {
		t.Fatal("WriteBuffer after the verifier ended succeeded")
	}
}
