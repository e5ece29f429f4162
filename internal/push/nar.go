package push

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"

	"github.com/klauspost/compress/zstd"
	"github.com/nix-community/go-nix/pkg/nar"
	"github.com/nix-community/go-nix/pkg/nixbase32"

	"github.com/flakegate/flakegate/internal/nixcache"
	"github.com/flakegate/flakegate/internal/nixname"
)

// preparedNar is one path's compressed NAR, ready to upload (in memory,
// or spilled to a temporary file when large).
type preparedNar struct {
	file     string // NAR file name below nar/
	size     int64  // compressed size
	fileHash []byte
	narHash  []byte
	narSize  int64
	comp     nixname.Compression
	buf      []byte
	tmp      string
}

func (n *preparedNar) open() (io.ReadCloser, error) {
	if n.tmp != "" {
		return os.Open(n.tmp)
	}
	return io.NopCloser(bytes.NewReader(n.buf)), nil
}

func (n *preparedNar) Close() error {
	if n.tmp != "" {
		return os.Remove(n.tmp)
	}
	return nil
}

// narInfo renders the narinfo to upload for pi, in Nix's format
// (nixcache renders the cache's narinfos too).
func (n *preparedNar) narInfo(pi PathInfo) []byte {
	ni := nixcache.NarInfo{
		StorePath: pi.Path, File: n.file, Compression: n.comp,
		FileHash: n.fileHash, FileSize: n.size, NarHash: n.narHash, NarSize: n.narSize,
		CA: pi.CA,
	}
	for _, r := range pi.References {
		ni.References = append(ni.References, filepath.Base(r))
	}
	if pi.Deriver != "" {
		ni.Deriver = filepath.Base(pi.Deriver)
	}
	return ni.Render(nil)
}

// memLimit is how much of a compressed NAR is kept in memory before it is
// spilled to a temporary file.
const memLimit = 16 << 20

// spill is a writer that keeps up to memLimit bytes in memory, then moves
// everything to a temporary file.
type spill struct {
	buf bytes.Buffer
	f   *os.File
}

func (s *spill) Write(p []byte) (int, error) {
	if s.f == nil && s.buf.Len()+len(p) > memLimit {
		f, err := os.CreateTemp("", "flakegate-push-*.nar")
		if err != nil {
			return 0, fmt.Errorf("spill a large NAR to a temporary file: %w", err)
		}
		s.f = f
		if _, err := f.Write(s.buf.Bytes()); err != nil {
			return 0, err
		}
		s.buf = bytes.Buffer{}
	}
	if s.f != nil {
		return s.f.Write(p)
	}
	return s.buf.Write(p)
}

var encoders = sync.Pool{New: func() any {
	// One goroutine per encoder: paths are compressed in parallel already.
	e, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedDefault), zstd.WithEncoderConcurrency(1))
	if err != nil {
		panic(err) // only for invalid options
	}
	return e
}}

// prepare serializes pi's NAR, checks it against Nix's NarHash and
// NarSize, and compresses it.
func (p *pusher) prepare(ctx context.Context, pi PathInfo) (*preparedNar, error) {
	wantHash, err := nixcache.ParseHash(pi.NarHash)
	if err != nil {
		return nil, fmt.Errorf("narHash from nix: %w", err)
	}
	out := &spill{}
	fileHasher := sha256.New()
	fileSize := &countWriter{}
	dst := io.MultiWriter(out, fileHasher, fileSize)
	var comp io.WriteCloser = nopWriteCloser{dst}
	var enc *zstd.Encoder
	if p.cfg.Compression == nixname.CompressionZstd {
		enc = encoders.Get().(*zstd.Encoder)
		enc.Reset(dst)
		comp = enc
	}
	narHasher := sha256.New()
	narSize := &countWriter{}
	w := io.MultiWriter(comp, narHasher, narSize)
	dumpErr := p.dump(ctx, w, pi.Path)
	closeErr := comp.Close()
	if enc != nil {
		encoders.Put(enc)
	}
	n := &preparedNar{comp: p.cfg.Compression}
	if out.f != nil {
		n.tmp = out.f.Name()
		if err := out.f.Close(); err != nil && dumpErr == nil {
			dumpErr = err
		}
	} else {
		n.buf = out.buf.Bytes()
	}
	if err := errors.Join(dumpErr, closeErr); err != nil {
		n.Close()
		return nil, fmt.Errorf("serialize NAR: %w", err)
	}
	n.narHash, n.narSize = narHasher.Sum(nil), narSize.n
	if !bytes.Equal(n.narHash, wantHash) || n.narSize != pi.NarSize {
		n.Close()
		return nil, fmt.Errorf("the NAR read from the store (%s, %d bytes) differs from what Nix recorded (%s, %d bytes): the store path was modified; run nix store verify",
			nixcache.FormatHash(n.narHash), n.narSize, nixcache.FormatHash(wantHash), pi.NarSize)
	}
	n.fileHash, n.size = fileHasher.Sum(nil), fileSize.n
	n.file = nixname.NarFileName(nixbase32.EncodeToString(n.fileHash), p.cfg.Compression)
	return n, nil
}

// dump writes path's NAR to w. A local store's files are read directly
// (go-nix's NAR writer, no process per path); any other store goes
// through `nix store dump-path`.
func (p *pusher) dump(ctx context.Context, w io.Writer, path string) error {
	store := p.cfg.Store
	switch {
	case store == "" || store == "auto" || store == "local" || store == "daemon":
		return nar.DumpPath(w, path)
	case filepath.IsAbs(store) && !strings.Contains(store, "?"):
		return nar.DumpPath(w, filepath.Join(store, path))
	}
	cmd := exec.CommandContext(ctx, p.cfg.Nix, nixArgs(store, "store", "dump-path", "--", path)...)
	cmd.Stdout = w
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("nix store dump-path: %w: %s", err, strings.TrimSpace(stderr.String()))
	}
	return nil
}

type countWriter struct{ n int64 }

func (c *countWriter) Write(p []byte) (int, error) { c.n += int64(len(p)); return len(p), nil }

type nopWriteCloser struct{ io.Writer }

func (nopWriteCloser) Close() error { return nil }
