package nixcache

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/nix-community/go-nix/pkg/narinfo"
	"github.com/nix-community/go-nix/pkg/nixbase32"

	"github.com/flakegate/flakegate/internal/nixname"
	"github.com/flakegate/flakegate/internal/route"
)

// FuzzParseNarInfo: the parser never panics, whatever it accepts renders
// to a narinfo that parses back to the same content, and a CA it keeps is
// a fixed:r:sha256 that matches NarHash and StorePath.
func FuzzParseNarInfo(f *testing.F) {
	f.Add([]byte(nixosNarInfo))
	f.Add([]byte(noneNarInfo))
	f.Add([]byte(edit(nixosNarInfo, "CA", "CA: fixed:r:sha256:1b4sb93wp679q4zx9k1ignby1yna3z7c4c2ri3wphylbc2dwsys0")))
	f.Add([]byte(caRefsNarInfo))
	f.Add([]byte(caSelfNarInfo))
	f.Add([]byte(caTextNarInfo))
	f.Add([]byte("StorePath: /nix/store/\nURL: nar/\n"))
	k, err := ParseSecretKey(test1SecretKey)
	if err != nil {
		f.Fatal(err)
	}
	ks, err := NewKeySet(k)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		n, err := ParseNarInfo(data)
		if err != nil {
			return
		}
		if !nixname.IsStoreHash(n.Hash) || !ValidStorePathBase(n.Base()) {
			t.Fatalf("accepted bad store path %q", n.StorePath)
		}
		if _, err := route.Parse("GET", "/"+n.URL()); err != nil {
			t.Fatalf("accepted URL %q the router refuses: %v", n.URL(), err)
		}
		if len(n.NarHash) != sha256.Size || len(n.FileHash) != sha256.Size {
			t.Fatalf("accepted digests of %d and %d bytes", len(n.NarHash), len(n.FileHash))
		}
		if n.CA != "" && (n.CA != "fixed:r:sha256:"+nixbase32.EncodeToString(n.NarHash) ||
			slices.Contains(n.References, n.Base()) ||
			fixedOutputPathNAR(n.Base()[33:], n.NarHash, n.References) != n.StorePath) {
			t.Fatalf("kept unchecked CA %q", n.CA)
		}
		out := ks.SignedNarInfo(n)
		m, err := ParseNarInfo(out)
		if err != nil {
			t.Fatalf("rendering does not parse: %v\n%s", err, out)
		}
		if ok, err := VerifyNarInfo(out, []string{test1PublicKey}); !ok || err != nil {
			t.Fatalf("server signature does not verify (%v):\n%s", err, out)
		}
		if m.Fingerprint() != n.Fingerprint() || m.File != n.File || m.Compression != n.Compression ||
			m.FileSize != n.FileSize || !bytes.Equal(m.FileHash, n.FileHash) || !slices.Equal(m.References, n.References) ||
			m.Deriver != n.Deriver || m.CA != n.CA || m.System != n.System {
			t.Fatalf("round trip changed the narinfo:\n%s\n---\n%s", data, out)
		}
	})
}

// FuzzCheckNAR: the NAR checker never panics or hangs on any input.
func FuzzCheckNAR(f *testing.F) {
	f.Add(regularNAR("hello"))
	f.Add(richNAR())
	f.Add(dirNAR([]string{"a", "b"}, "x"))
	f.Fuzz(func(t *testing.T, data []byte) {
		err := checkNAR(bufio.NewReader(bytes.NewReader(data)))
		if err == nil && !bytes.HasPrefix(data, regularNAR("")[:24]) {
			t.Fatal("accepted data without the NAR header")
		}
		// Skipping file contents in the underlying reader (as uploads do)
		// decides exactly as reading them through the buffer does, also
		// with the smallest buffer, where every skip crosses its edge.
		under := &sliceSkipper{data: data}
		skipErr := checkNARSkipping(bufio.NewReaderSize(under, 16), under)
		if fmt.Sprint(skipErr) != fmt.Sprint(err) {
			t.Fatalf("skipping checker says %v, reading checker %v", skipErr, err)
		}
	})
}

// sliceSkipper reads and skips over a byte slice.
type sliceSkipper struct {
	data []byte
	off  int
}

func (s *sliceSkipper) Read(p []byte) (int, error) {
	if s.off == len(s.data) {
		return 0, io.EOF
	}
	n := copy(p, s.data[s.off:])
	s.off += n
	return n, nil
}

func (s *sliceSkipper) Skip(n int64) (int64, error) {
	k := min(n, int64(len(s.data)-s.off))
	s.off += int(k)
	if k < n {
		return k, io.EOF
	}
	return k, nil
}

// FuzzParsedFields holds parsedFields (which avoids narinfo.Parse's 1 MiB
// buffer per call) to go-nix's narinfo.Parse on every set of lines
// ParseNarInfo's line checks accept: same fields, same errors.
func FuzzParsedFields(f *testing.F) {
	f.Add([]byte(nixosNarInfo))
	f.Add([]byte(noneNarInfo))
	f.Add([]byte(caRefsNarInfo))
	f.Add([]byte(caSelfNarInfo))
	f.Add([]byte(caTextNarInfo))
	f.Add([]byte(edit(nixosNarInfo, "Deriver", "Deriver: unknown-deriver")))
	f.Add([]byte(edit(nixosNarInfo, "References", "References: ")))
	f.Add([]byte(edit(nixosNarInfo, "Compression", "")))
	f.Fuzz(func(t *testing.T, data []byte) {
		kept, _, err := checkLines(data)
		if err != nil {
			return
		}
		want, werr := narinfo.Parse(strings.NewReader(strings.Join(kept, "\n")))
		got, gerr := parsedFields(kept)
		if (werr == nil) != (gerr == nil) {
			t.Fatalf("narinfo.Parse: %v, parsedFields: %v", werr, gerr)
		}
		if werr == nil && !reflect.DeepEqual(want, got) {
			t.Fatalf("narinfo.Parse: %+v\nparsedFields: %+v", want, got)
		}
	})
}
