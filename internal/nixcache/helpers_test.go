package nixcache

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

// narBuf writes NAR tokens; tests use it to build valid and broken NARs.
type narBuf struct{ bytes.Buffer }

func (b *narBuf) str(s string) *narBuf {
	var n [8]byte
	binary.LittleEndian.PutUint64(n[:], uint64(len(s)))
	b.Write(n[:])
	b.WriteString(s)
	b.Write(make([]byte, (8-len(s)%8)%8))
	return b
}

func (b *narBuf) strs(ss ...string) *narBuf {
	for _, s := range ss {
		b.str(s)
	}
	return b
}

// regularNAR is a NAR of a single file.
func regularNAR(contents string) []byte {
	var b narBuf
	b.strs("nix-archive-1", "(", "type", "regular", "contents", contents, ")")
	return b.Bytes()
}

// dirNAR is a NAR of a directory holding the named files, in the order
// given (a valid NAR needs them sorted).
func dirNAR(names []string, contents string) []byte {
	var b narBuf
	b.strs("nix-archive-1", "(", "type", "directory")
	for _, n := range names {
		b.strs("entry", "(", "name", n, "node", "(", "type", "regular", "contents", contents, ")", ")")
	}
	b.strs(")")
	return b.Bytes()
}

// richNAR has nested directories, an executable and a symlink.
func richNAR() []byte {
	var b narBuf
	b.strs("nix-archive-1", "(", "type", "directory",
		"entry", "(", "name", "bin", "node", "(", "type", "directory",
		"entry", "(", "name", "hello", "node", "(", "type", "regular", "executable", "", "contents", "#!/bin/sh\necho hello\n", ")", ")",
		")", ")",
		"entry", "(", "name", "lib", "node", "(", "type", "symlink", "target", "bin", ")", ")",
		"entry", "(", "name", "share", "node", "(", "type", "regular", "contents", string(bytes.Repeat([]byte("abcdefgh"), 5000)), ")", ")",
		")")
	return b.Bytes()
}

func xzOf(t testing.TB, b []byte) []byte {
	t.Helper()
	var out bytes.Buffer
	w, err := xz.NewWriter(&out)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

func zstdOf(t testing.TB, b []byte) []byte {
	t.Helper()
	enc, err := zstd.NewWriter(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer enc.Close()
	return enc.EncodeAll(b, nil)
}
