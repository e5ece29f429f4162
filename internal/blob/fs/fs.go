// Package fs is the default blob.Store: blobs are files below a root
// directory, keyed by their relative path.
//
// Writes go to a temporary file in <root>/.tmp; Commit fsyncs it, renames it
// into place and fsyncs the directory, so a blob is either absent or
// complete, also after a crash. Open removes whatever a crash left in
// <root>/.tmp. Keys follow blob.CheckKey (the store has no key rule of its
// own). Readers are backed by *os.File (see Reader.File) so HTTP can
// serve blobs with sendfile.
package fs

import (
	"context"
	"errors"
	"fmt"
	"io"
	iofs "io/fs"
	"os"
	"path/filepath"
	"syscall"

	"github.com/flakegate/flakegate/internal/blob"
)

// tmpDir is the directory below the root that holds uncommitted writes.
// No key can name it: blob.CheckKey refuses segments starting with '.'.
const tmpDir = ".tmp"

// Store is a filesystem blob store.
type Store struct {
	root string
	tmp  string
}

var (
	_ blob.Store  = (*Store)(nil)
	_ blob.Holder = (*Store)(nil)
)

// Open opens (creating if needed) the store rooted at dir and removes
// leftover temporary files of interrupted writes.
func Open(dir string) (*Store, error) {
	root, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("blob store %s: %w", dir, err)
	}
	s := &Store{root: root, tmp: filepath.Join(root, tmpDir)}
	if err := os.MkdirAll(s.tmp, 0o755); err != nil {
		return nil, fmt.Errorf("create blob store %s: %w", root, err)
	}
	if _, err := s.CleanTemp(); err != nil {
		return nil, err
	}
	return s, nil
}

// OpenShared opens the store rooted at dir for a process that runs beside
// the server owning it (`blobserver gc`): it removes no temporary files,
// since they may be the server's uploads in progress (review, 2026-12-05:
// a collection, even a dry run, made them fail). The directory must exist.
func OpenShared(dir string) (*Store, error) {
	root, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("blob store %s: %w", dir, err)
	}
	if _, err := os.Stat(root); err != nil {
		return nil, fmt.Errorf("blob store %s: %w", root, err)
	}
	return &Store{root: root, tmp: filepath.Join(root, tmpDir)}, nil
}

// Root is the store's directory.
func (s *Store) Root() string { return s.root }

// CleanTemp removes every temporary file (writes that were never committed)
// and returns how many it removed. Open calls it; call it again only when no
// write is in progress.
func (s *Store) CleanTemp() (int, error) {
	entries, err := os.ReadDir(s.tmp)
	if err != nil {
		return 0, fmt.Errorf("list blob temp dir: %w", err)
	}
	n := 0
	for _, e := range entries {
		if err := os.RemoveAll(filepath.Join(s.tmp, e.Name())); err != nil {
			return n, fmt.Errorf("remove stale temp file %s: %w", e.Name(), err)
		}
		n++
	}
	return n, nil
}

// path maps a key to a file path below the root. blob.CheckKey refuses
// every key that could escape it or reach tmpDir (no segment starts with
// '.').
func (s *Store) path(key string) (string, error) {
	if err := blob.CheckKey(key); err != nil {
		return "", err
	}
	return filepath.Join(s.root, filepath.FromSlash(key)), nil
}

// notFound maps "no such file" (also "a path component is a file") to
// blob.ErrNotFound.
func notFound(key string, err error) error {
	if errors.Is(err, iofs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
		return fmt.Errorf("blob %s: %w", key, blob.ErrNotFound)
	}
	return fmt.Errorf("blob %s: %w", key, err)
}

// Reader is an open blob.
type Reader struct {
	f    *os.File
	info blob.Info
}

func (r *Reader) Read(p []byte) (int, error)                { return r.f.Read(p) }
func (r *Reader) ReadAt(p []byte, off int64) (int, error)   { return r.f.ReadAt(p, off) }
func (r *Reader) Seek(off int64, whence int) (int64, error) { return r.f.Seek(off, whence) }
func (r *Reader) Close() error                              { return r.f.Close() }

// Info describes the blob.
func (r *Reader) Info() blob.Info { return r.info }

// File is the underlying file: hand it to http.ServeContent so the kernel
// copies the bytes (sendfile). Closing the Reader closes it.
func (r *Reader) File() *os.File { return r.f }

// Hold opens the file under key, if any (blob.Holder): a Commit over it
// then only unlinks it, and its blocks are freed when the Closer closes.
func (s *Store) Hold(key string) (io.Closer, error) {
	p, err := s.path(key)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(p)
	if errors.Is(err, iofs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("hold blob %s: %w", key, err)
	}
	return f, nil
}

// Open opens the blob under key.
func (s *Store) Open(ctx context.Context, key string) (blob.Reader, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	p, err := s.path(key)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(p)
	if err != nil {
		return nil, notFound(key, err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("stat blob %s: %w", key, err)
	}
	if !st.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("blob %s: %w", key, blob.ErrNotFound)
	}
	return &Reader{f: f, info: blob.Info{Key: key, Size: st.Size(), ModTime: st.ModTime()}}, nil
}

// Stat describes the blob under key.
func (s *Store) Stat(ctx context.Context, key string) (blob.Info, error) {
	if err := ctx.Err(); err != nil {
		return blob.Info{}, err
	}
	p, err := s.path(key)
	if err != nil {
		return blob.Info{}, err
	}
	st, err := os.Stat(p)
	if err != nil {
		return blob.Info{}, notFound(key, err)
	}
	if !st.Mode().IsRegular() {
		return blob.Info{}, fmt.Errorf("blob %s: %w", key, blob.ErrNotFound)
	}
	return blob.Info{Key: key, Size: st.Size(), ModTime: st.ModTime()}, nil
}

// Delete removes the blob under key.
func (s *Store) Delete(ctx context.Context, key string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	p, err := s.path(key)
	if err != nil {
		return err
	}
	if err := os.Remove(p); err != nil {
		return notFound(key, err)
	}
	return syncDir(filepath.Dir(p))
}

// Close releases nothing: the store holds no open files.
func (s *Store) Close() error { return nil }

// Create starts a new blob in a temporary file.
func (s *Store) Create(ctx context.Context) (blob.Writer, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	f, err := os.CreateTemp(s.tmp, "upload-*")
	if err != nil {
		return nil, fmt.Errorf("create blob temp file: %w", err)
	}
	return &writer{s: s, f: f}, nil
}

type writer struct {
	s    *Store
	f    *os.File
	done bool
}

func (w *writer) Write(p []byte) (int, error) {
	if w.done {
		return 0, errors.New("write to a committed or aborted blob")
	}
	n, err := w.f.Write(p)
	if err != nil {
		return n, fmt.Errorf("write blob temp file: %w", err)
	}
	return n, nil
}

// Commit fsyncs the temporary file, renames it to key and fsyncs the
// directory. On error the temporary file is removed.
func (w *writer) Commit(ctx context.Context, key string) error {
	if w.done {
		return errors.New("commit of a committed or aborted blob")
	}
	// A failed Commit is final too: the temporary file goes with it, the
	// early failures included (a request cancelled before the commit left
	// the file and its descriptor until the next start: review r5).
	w.done = true
	fail := func(err error) error {
		w.f.Close()
		os.Remove(w.f.Name())
		return err
	}
	dst, err := w.s.path(key)
	if err != nil {
		return fail(err)
	}
	if err := ctx.Err(); err != nil {
		return fail(err)
	}
	if err := w.f.Sync(); err != nil {
		return fail(fmt.Errorf("sync blob %s: %w", key, err))
	}
	if err := w.f.Chmod(0o644); err != nil {
		return fail(fmt.Errorf("chmod blob %s: %w", key, err))
	}
	if err := w.f.Close(); err != nil {
		return fail(fmt.Errorf("close blob %s: %w", key, err))
	}
	dir := filepath.Dir(dst)
	if err := mkdirAllSync(w.s.root, dir); err != nil {
		return fail(fmt.Errorf("create directory for blob %s: %w", key, err))
	}
	if err := os.Rename(w.f.Name(), dst); err != nil {
		return fail(fmt.Errorf("install blob %s: %w", key, err))
	}
	if err := syncDir(dir); err != nil {
		return fmt.Errorf("sync directory of blob %s: %w", key, err)
	}
	return nil
}

func (w *writer) Abort() error {
	if w.done {
		return nil
	}
	w.done = true
	w.f.Close()
	if err := os.Remove(w.f.Name()); err != nil && !errors.Is(err, iofs.ErrNotExist) {
		return fmt.Errorf("remove blob temp file: %w", err)
	}
	return nil
}

// mkdirAllSync creates dir (below root) and fsyncs the parent of every
// directory it creates, so the new directory entries survive a crash.
func mkdirAllSync(root, dir string) error {
	if st, err := os.Stat(dir); err == nil && st.IsDir() {
		return nil
	}
	if dir == root || len(dir) <= len(root) {
		return fmt.Errorf("blob store root %s is missing", root)
	}
	parent := filepath.Dir(dir)
	if err := mkdirAllSync(root, parent); err != nil {
		return err
	}
	if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, iofs.ErrExist) {
		return err
	}
	return syncDir(parent)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return err
	}
	return nil
}
