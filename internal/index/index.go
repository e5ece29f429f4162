// Package index records what the cache holds and which flake owns what.
// Implementations: sqlite (default) and postgres.
//
// Content (a NAR file, a store path's narinfo) is recorded once; ownership is
// a separate (flake, object) relation, so that a flake only "has" what it
// pushed. All methods are safe for concurrent use, also across processes
// sharing one database.
package index

import (
	"context"
	"errors"
	"time"

	"github.com/flakegate/flakegate/internal/route"
)

// ErrNotFound is returned (wrapped) when the object is absent, or absent for
// the flake asked about.
var ErrNotFound = errors.New("not found in index")

// Nar is a NAR file the server received and verified while streaming.
type Nar struct {
	File        string            // file name below nar/, e.g. "<filehash>.nar.zst"; also the blob key suffix
	Compression route.Compression // from File's extension
	FileHash    string            // "sha256:<nixbase32>" of the file's bytes
	FileSize    int64
	NarHash     string // "sha256:<nixbase32>" of the uncompressed NAR
	NarSize     int64
	CreatedAt   time.Time
}

// Path is a store path's narinfo as uploaded and validated.
type Path struct {
	Hash       string   // 32-char store hash
	StorePath  string   // /nix/store/<hash>-<name>
	NarFile    string   // Nar.File it points to
	References []string // store path base names ("<hash>-<name>"), as in the narinfo
	// NarInfo is the narinfo text as the server serves it (server
	// signatures included, upload signatures dropped).
	NarInfo []byte
	// SignedBy identifies the signing key set whose signatures NarInfo
	// carries (nixcache.KeySet.ID); "" when unknown. The server re-signs a
	// narinfo whose SignedBy is not its current key set before serving it.
	SignedBy  string
	CreatedAt time.Time
}

// NarInfoUpdater is implemented by indexes that can store a re-signed
// narinfo (after a signing key rotation), so that re-signing happens once
// per path, not once per process. Optional: without it the server keeps
// re-signed narinfos in memory only.
type NarInfoUpdater interface {
	// UpdateNarInfo replaces the narinfo text of an existing path and
	// records which key set signed it. An absent hash is not an error.
	UpdateNarInfo(ctx context.Context, hash string, narInfo []byte, signedBy string) error
}

// Index is the cache's catalogue.
type Index interface {
	// PutNar records a verified NAR and that flake owns it. Idempotent.
	PutNar(ctx context.Context, flake route.Flake, n Nar) error
	// GetNar returns a NAR's record; with a non-zero flake only if that flake owns it.
	GetNar(ctx context.Context, flake route.Flake, file string) (Nar, error)

	// PutPath records a path and that flake owns it, in one transaction.
	// Idempotent; re-pushing the same hash keeps the first content.
	PutPath(ctx context.Context, flake route.Flake, p Path) error
	// GetPath returns a path; with a non-zero flake only if that flake owns it.
	GetPath(ctx context.Context, flake route.Flake, hash string) (Path, error)
	// MissingPaths returns those of hashes that flake does not own.
	MissingPaths(ctx context.Context, flake route.Flake, hashes []string) ([]string, error)

	// Owners lists the flakes owning an object: kind is route.KindNarInfo
	// (hash = store hash) or route.KindNar (hash = NAR file name).
	Owners(ctx context.Context, kind route.Kind, hash string) ([]route.Flake, error)

	// PutLog / GetLog record a build log blob key for a flake's derivation.
	PutLog(ctx context.Context, flake route.Flake, drv, blobKey string) error
	GetLog(ctx context.Context, flake route.Flake, drv string) (blobKey string, err error)

	// Stats returns counts for metrics.
	Stats(ctx context.Context) (Stats, error)
	Close() error
}

// Stats are index-wide counts.
type Stats struct {
	Paths, Nars, Flakes int64
}
