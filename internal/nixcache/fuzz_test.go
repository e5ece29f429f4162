package nixcache

import (
	"bufio"
	"bytes"
	"slices"
	"testing"

	"github.com/flakegate/flakegate/internal/route"
)

// FuzzParseNarInfo: the parser never panics, and whatever it accepts renders
// to a narinfo that parses back to the same content.
func FuzzParseNarInfo(f *testing.F) {
	f.Add([]byte(nixosNarInfo))
	f.Add([]byte(noneNarInfo))
	f.Add([]byte(edit(nixosNarInfo, "CA", "CA: fixed:r:sha256:1b4sb93wp679q4zx9k1ignby1yna3z7c4c2ri3wphylbc2dwsys0")))
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
		if !route.IsStoreHash(n.Hash) || !ValidStorePathBase(n.Base()) {
			t.Fatalf("accepted bad store path %q", n.StorePath)
		}
		if _, err := route.Parse("GET", "/"+n.URL()); err != nil {
			t.Fatalf("accepted URL %q the router refuses: %v", n.URL(), err)
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
	})
}
