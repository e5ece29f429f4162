package nixcache

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/flakegate/flakegate/internal/nixname"
)

func runVerifier(t *testing.T, c nixname.Compression, max int64, data []byte, chunk int) (NarResult, error) {
	t.Helper()
	v, err := NewVerifier(c, max)
	if err != nil {
		t.Fatal(err)
	}
	for len(data) > 0 {
		n := min(chunk, len(data))
		if _, err := v.Write(data[:n]); err != nil {
			// The verifier already knows the data is bad; Finish reports the same.
			_, ferr := v.Finish()
			if ferr == nil || ferr.Error() != err.Error() {
				t.Fatalf("Write error %v but Finish error %v", err, ferr)
			}
			return NarResult{}, err
		}
		data = data[n:]
	}
	return v.Finish()
}

func TestVerifierAccepts(t *testing.T) {
	rich := richNAR()
	bz, err := os.ReadFile("testdata/regular.nar.bz2")
	if err != nil {
		t.Fatal(err)
	}
	plain, err := os.ReadFile("testdata/regular.nar")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		c    nixname.Compression
		file []byte
		nar  []byte
	}{
		{"none regular", nixname.CompressionNone, regularNAR("hello\n"), regularNAR("hello\n")},
		{"none empty file", nixname.CompressionNone, regularNAR(""), regularNAR("")},
		{"none rich", nixname.CompressionNone, rich, rich},
		{"xz rich", nixname.CompressionXZ, xzOf(t, rich), rich},
		{"zstd rich", nixname.CompressionZstd, zstdOf(t, rich), rich},
		{"bzip2 regular", nixname.CompressionBzip2, bz, plain},
		{"empty directory", nixname.CompressionNone, dirNAR(nil, ""), dirNAR(nil, "")},
	}
	for _, tt := range tests {
		for _, chunk := range []int{1, 7, 1 << 20} {
			res, err := runVerifier(t, tt.c, 0, tt.file, chunk)
			if err != nil {
				t.Fatalf("%s (chunk %d): %v", tt.name, chunk, err)
			}
			fh := sha256.Sum256(tt.file)
			nh := sha256.Sum256(tt.nar)
			if !bytes.Equal(res.FileHash, fh[:]) || res.FileSize != int64(len(tt.file)) {
				t.Errorf("%s: file hash/size %x/%d, want %x/%d", tt.name, res.FileHash, res.FileSize, fh, len(tt.file))
			}
			if !bytes.Equal(res.NarHash, nh[:]) || res.NarSize != int64(len(tt.nar)) {
				t.Errorf("%s: nar hash/size %x/%d, want %x/%d", tt.name, res.NarHash, res.NarSize, nh, len(tt.nar))
			}
		}
	}
}

func TestVerifierRejects(t *testing.T) {
	rich := richNAR()
	xzRich := xzOf(t, rich)
	zstdRich := zstdOf(t, rich)
	badPad := regularNAR("abc")
	badPad[len(badPad)-16-1] = 1 // last padding byte of "abc"
	var unknownType narBuf
	unknownType.strs("nix-archive-1", "(", "type", "fifo", ")")
	var badName narBuf
	badName.strs("nix-archive-1", "(", "type", "directory", "entry", "(", "name", "a/b", "node", "(", "type", "regular", "contents", "", ")", ")", ")")
	var emptyTarget narBuf
	emptyTarget.strs("nix-archive-1", "(", "type", "symlink", "target", "", ")")
	var hugeString bytes.Buffer
	hugeString.Write(regularNAR("")[:24])
	hugeString.Write([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f})

	tests := []struct {
		name string
		c    nixname.Compression
		max  int64
		data []byte
		want string
	}{
		{"empty", nixname.CompressionNone, 0, nil, "not a NAR"},
		{"not a nar", nixname.CompressionNone, 0, []byte("hello world, this is no NAR at all"), "not a NAR"},
		{"truncated none", nixname.CompressionNone, 0, rich[:len(rich)-9], "truncated"},
		{"truncated in contents", nixname.CompressionNone, 0, rich[:len(rich)/2], "truncated"},
		{"trailing data none", nixname.CompressionNone, 0, append(regularNAR("x"), 0), "trailing data"},
		{"unsorted entries", nixname.CompressionNone, 0, dirNAR([]string{"b", "a"}, "x"), "not sorted"},
		{"duplicate entries", nixname.CompressionNone, 0, dirNAR([]string{"a", "a"}, "x"), "not sorted"},
		{"dot entry", nixname.CompressionNone, 0, dirNAR([]string{".."}, "x"), "invalid entry name"},
		{"slash in name", nixname.CompressionNone, 0, badName.Bytes(), "invalid entry name"},
		{"non-zero padding", nixname.CompressionNone, 0, badPad, "padding"},
		{"unknown node type", nixname.CompressionNone, 0, unknownType.Bytes(), "unknown node type"},
		{"empty symlink target", nixname.CompressionNone, 0, emptyTarget.Bytes(), "symlink target"},
		{"huge token", nixname.CompressionNone, 0, hugeString.Bytes(), "at most"},
		{"truncated xz", nixname.CompressionXZ, 0, xzRich[:len(xzRich)-20], ""},
		{"xz declared, plain sent", nixname.CompressionXZ, 0, rich, "xz"},
		{"zstd declared, xz sent", nixname.CompressionZstd, 0, xzRich, "zstd"},
		{"truncated zstd", nixname.CompressionZstd, 0, zstdRich[:len(zstdRich)/2], ""},
		{"trailing garbage after xz", nixname.CompressionXZ, 0, append(append([]byte{}, xzRich...), []byte("garbage!")...), ""},
		{"bzip2 declared, plain sent", nixname.CompressionBzip2, 0, rich, "bzip2"},
		{"nar too large", nixname.CompressionXZ, 1000, xzRich, "exceeds 1000 bytes"},
		{"uncompressed nar too large", nixname.CompressionNone, 1000, rich, "exceeds 1000 bytes"},
		{"uncompressed, truncated in skipped contents", nixname.CompressionNone, 0, regularNAR(strings.Repeat("y", 300<<10))[:200<<10], "truncated"},
		{"xz of a non-NAR", nixname.CompressionXZ, 0, xzOf(t, []byte("just text")), "not a NAR"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := runVerifier(t, tt.c, tt.max, tt.data, 4096)
			if err == nil {
				t.Fatal("accepted")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %q does not mention %q", err, tt.want)
			}
			if tt.max > 0 && !errors.Is(err, ErrTooLarge) {
				t.Fatalf("error %v is not ErrTooLarge", err)
			}
		})
	}
}

func TestVerifierAbort(t *testing.T) {
	v, err := NewVerifier(nixname.CompressionXZ, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.Write(xzOf(t, richNAR())[:100]); err != nil {
		t.Fatal(err)
	}
	v.Abort() // must return: the goroutine ends
	if _, err := v.Write([]byte("x")); err == nil {
		t.Fatal("write after abort succeeded")
	}
}

func TestNewVerifierUnknownCompression(t *testing.T) {
	if _, err := NewVerifier("br", 0); err == nil {
		t.Fatal("accepted compression br")
	}
}
