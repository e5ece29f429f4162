package main

import (
	"bufio"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"

	"github.com/nix-community/go-nix/pkg/nixbase32"

	"github.com/flakegate/flakegate/internal/bytesize"
)

// runNar writes a NAR holding one regular file of pseudo-random bytes (so
// no compression helps) and prints its cache file name and size.
func runNar(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("nar", flag.ContinueOnError)
	size := bytesize.Size(256 * bytesize.MiB)
	fs.Var(&size, "size", "bytes of file contents in the NAR (with an optional unit: 16M = 16,000,000, 16MiB = 16,777,216)")
	out := fs.String("out", "", "output file")
	seed := fs.Uint64("seed", 1, "seed of the contents (same seed, same NAR)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *out == "" {
		return errors.New("nar needs -out and -size")
	}
	name, n, err := writeNar(*out, size.Int64(), *seed)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s %d\n", name, n)
	return nil
}

func writeNar(path string, size int64, seed uint64) (name string, n int64, err error) {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".nar-*")
	if err != nil {
		return "", 0, fmt.Errorf("create NAR: %w", err)
	}
	defer os.Remove(tmp.Name())
	h := sha256.New()
	cw := &countWriter{w: io.MultiWriter(tmp, h)}
	w := bufio.NewWriterSize(cw, 1<<20)
	str := func(s string) {
		var l [8]byte
		binary.LittleEndian.PutUint64(l[:], uint64(len(s)))
		w.Write(l[:])
		w.WriteString(s)
		w.Write(make([]byte, (8-len(s)%8)%8))
	}
	for _, tok := range []string{"nix-archive-1", "(", "type", "regular", "contents"} {
		str(tok)
	}
	var l [8]byte
	binary.LittleEndian.PutUint64(l[:], uint64(size))
	w.Write(l[:])
	src := rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8), byte(seed >> 16), byte(seed >> 24)})
	buf := make([]byte, 1<<20)
	for left := size; left > 0; {
		chunk := buf[:min(int64(len(buf)), left)]
		src.Read(chunk)
		w.Write(chunk)
		left -= int64(len(chunk))
	}
	w.Write(make([]byte, (8-size%8)%8))
	str(")")
	if err := w.Flush(); err != nil {
		tmp.Close()
		return "", 0, fmt.Errorf("write NAR: %w", err)
	}
	if err := tmp.Chmod(0o644); err != nil { // nginx workers read it too
		tmp.Close()
		return "", 0, fmt.Errorf("write NAR: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return "", 0, fmt.Errorf("write NAR: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return "", 0, fmt.Errorf("write NAR: %w", err)
	}
	return nixbase32.EncodeToString(h.Sum(nil)) + ".nar", cw.n, nil
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// runHashes prints n random store hashes (paths no generated index holds:
// bench/run.sh's miss row).
func runHashes(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("hashes", flag.ContinueOnError)
	n := fs.Int("n", 1000, "how many")
	if err := fs.Parse(args); err != nil {
		return err
	}
	w := bufio.NewWriter(stdout)
	for _, h := range fakeStoreHashes(*n) {
		fmt.Fprintln(w, h)
	}
	return w.Flush()
}

// fakeStoreHashes returns n distinct random store path hashes.
// (Distinct by sorting, not a set: a set of 10M strings would double the
// memory of the index benchmark's generator.)
func fakeStoreHashes(n int) []string {
	out := make([]string, 0, n)
	var b [20]byte
	for len(out) < n {
		for len(out) < n {
			for i := range b {
				b[i] = byte(rand.Uint32())
			}
			out = append(out, nixbase32.EncodeToString(b[:]))
		}
		slices.Sort(out)
		out = slices.Compact(out)
	}
	rand.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	return out
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }
