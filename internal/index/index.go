// Package index records what the cache holds and which flake owns what.
// Implementations: sqlite (default) and postgres.
//
// A NAR file is recorded once (its name is its content's hash) with a
// separate (flake, file) ownership relation; a store path's narinfo is
// recorded per flake (Path), so that a flake only "has" what it pushed and
// serves exactly what its pushers pushed. All methods are safe for concurrent use, also across processes
// sharing one database.
package index

import (
	"context"
	"errors"
	"slices"
	"time"

	"github.com/flakegate/flakegate/internal/nixname"
)

// ErrNotFound is returned (wrapped) when the object is absent, or absent for
// the flake asked about.
var ErrNotFound = errors.New("not found in index")

// Nar is a NAR file the server received and verified while streaming.
type Nar struct {
	File        string              // file name below nar/, e.g. "<filehash>.nar.zst"; also the blob key suffix
	Compression nixname.Compression // from File's extension
	FileHash    string              // "sha256:<nixbase32>" of the file's bytes
	FileSize    int64
	NarHash     string // "sha256:<nixbase32>" of the uncompressed NAR
	NarSize     int64
	CreatedAt   time.Time
}

// Path is one flake's narinfo of a store path, as that flake's pusher
// uploaded it and the server validated it. Each flake has its own: two
// flakes may hold different contents for one store path (a
// non-reproducible build, or a pusher of one flake pre-empting a predicted
// path), and neither can change, block or see the other's.
type Path struct {
	// Flake is the flake whose record this is (set by GetPath and PathsOf;
	// PutPath records under its flake argument and ignores it).
	Flake      nixname.Flake
	Hash       string   // 32-char store hash
	StorePath  string   // /nix/store/<hash>-<name>
	NarFile    string   // Nar.File it points to (the flake owns it)
	NarHash    string   // "sha256:<nixbase32>" of the uncompressed NAR
	References []string // store path base names ("<hash>-<name>"), sorted, as in the narinfo
	// NarInfo is the narinfo text as the server serves it (server
	// signatures included, upload signatures dropped).
	NarInfo []byte
	// SignedBy identifies the signing key set whose signatures NarInfo
	// carries (nixcache.KeySet.ID); "" when unknown. The server re-signs a
	// narinfo whose SignedBy is not its current key set before serving it.
	SignedBy  string
	CreatedAt time.Time
}

// SameContent reports whether p and q describe the same store path
// contents: the same store path (hash and name), the same NAR (by NarHash)
// and the same references. The NAR file (compression), deriver and
// signatures may differ.
func (p Path) SameContent(q Path) bool {
	return p.StorePath == q.StorePath && p.Hash == q.Hash && p.NarHash == q.NarHash && slices.Equal(p.References, q.References)
}

// NarInfoUpdater is implemented by indexes that can store a re-signed
// narinfo (after a signing key rotation), so that re-signing happens once
// per path, not once per process. Optional: without it the server keeps
// re-signed narinfos in memory only.
type NarInfoUpdater interface {
	// UpdateNarInfo replaces the narinfo text of a flake's existing path
	// and records which key set signed it. An absent path is not an error.
	UpdateNarInfo(ctx context.Context, flake nixname.Flake, hash string, narInfo []byte, signedBy string) error
}

// PathsGetter is implemented by indexes that read many of a flake's
// records in one query; Closure uses it to read a closure one level at a
// time instead of one path at a time. Optional.
type PathsGetter interface {
	// GetPaths returns flake's records of those of hashes it holds, in no
	// particular order; absent ones are left out (not an error).
	GetPaths(ctx context.Context, flake nixname.Flake, hashes []string) ([]Path, error)
}

// Kind is the kind of object whose owners Owners lists (nixname.Kind: the
// one spelling, with IsFile and KeepsFirst).
type Kind = nixname.Kind

// File is one flake's copy of a small JSON file Nix keeps beside narinfos:
// a NAR listing, a debug info link, a realisation or a build trace entry.
// Each flake has its own, as it has its own narinfos, and a file is
// served (GetFile, Owners) only while its flake owns what it Needs, so
// that it never names what the flake does not hold.
type File struct {
	// Flake is the flake whose file this is (set by GetFile; PutFile
	// records under its flake argument).
	Flake nixname.Flake
	Kind  Kind   // one of the File kinds (Kind.IsFile)
	Key   string // as route names it: store hash, build id, output id, "<drv>/<output>"
	// Needs is what the flake must own for the file to be served: a store
	// hash (its narinfo) for listings, realisations and build traces, a
	// NAR file name for a debug info link.
	Needs string
	// Encoding is the Content-Encoding Data was uploaded with ("" for
	// none); Data is stored as uploaded and served with it.
	Encoding string
	Data     []byte
	// Digest is what the union view compares of two flakes' files of one
	// key, computed by the server at upload so that a read compares
	// stored keys instead of decoding every copy: for a listing the
	// SHA-256 of its decoded bytes, for a realisation or build trace
	// entry nixcache.Realisation.Agreement; "" for a debug info link
	// (compared by its NAR's NarHash) and for a file recorded before
	// digests were (Size -1).
	Digest string
	// Size is the number of bytes Data decodes to, so that it can be
	// served decoded as a stream; -1 for a file recorded before sizes
	// were (FileDigestUpdater completes it).
	Size      int64
	CreatedAt time.Time
}

// FileDigestUpdater is implemented by indexes that can complete a file
// recorded before File.Digest and File.Size were: the server computes
// them on the first read and stores them, so that the file is decoded
// once, not on every read. Optional: without it they are computed on each
// read of such a file.
type FileDigestUpdater interface {
	// UpdateFileDigest sets the Digest and Size of flake's file of kind
	// and key, if it is still the file that was read (created at
	// createdAt) and still has no size (-1): a file replaced meanwhile
	// keeps its own. An absent file is not an error.
	UpdateFileDigest(ctx context.Context, flake nixname.Flake, kind Kind, key string, createdAt time.Time, digest string, size int64) error
}

// Log is a flake's build log: the blob holding it and the
// Content-Encoding it was uploaded with ("" for none).
type Log struct {
	Drv      string
	BlobKey  string
	Encoding string
	// UploadedAt is when the flake's current log was uploaded (its last
	// upload: a new one replaces the log), as GetLog reads it; PutLog
	// ignores it and records the index's now. The union view serves the
	// earliest (cacheserver).
	UploadedAt time.Time
}

// Index is the cache's catalogue.
type Index interface {
	// PutNar records a verified NAR and that flake owns it. Idempotent.
	PutNar(ctx context.Context, flake nixname.Flake, n Nar) error
	// GetNar returns a NAR's record; with a non-zero flake only if that flake owns it.
	GetNar(ctx context.Context, flake nixname.Flake, file string) (Nar, error)

	// PutPath records flake's narinfo of p.Hash, unless the flake has one
	// already: a flake's first content of a path is kept (read it back with
	// GetPath to tell a re-push of the same content from a conflict). Other
	// flakes' records of the same path are neither read nor changed.
	PutPath(ctx context.Context, flake nixname.Flake, p Path) error
	// GetPath returns flake's record of a path. The flake must not be zero.
	GetPath(ctx context.Context, flake nixname.Flake, hash string) (Path, error)
	// PathsOf returns the records of a path held by the given flakes (by
	// every flake when flakes is nil), sorted by flake; none is not an error.
	PathsOf(ctx context.Context, hash string, flakes []nixname.Flake) ([]Path, error)
	// MissingPaths returns those of hashes that flake does not own.
	MissingPaths(ctx context.Context, flake nixname.Flake, hashes []string) ([]string, error)

	// Owners lists the flakes owning an object, sorted: kind is
	// nixname.KindNarInfo (hash = store hash), nixname.KindNar (hash = NAR file name),
	// nixname.KindLog (derivation file name) or a File kind (its key; only flakes
	// that own what the file needs); other kinds are an error. Nobody
	// owning it is not an error.
	Owners(ctx context.Context, kind Kind, hash string) ([]nixname.Flake, error)

	// PutLog records a flake's build log (replacing an older one); GetLog
	// returns it.
	PutLog(ctx context.Context, flake nixname.Flake, l Log) error
	GetLog(ctx context.Context, flake nixname.Flake, drv string) (Log, error)

	// PutFile records flake's file f: it replaces the flake's earlier file
	// of that kind and key, unless f.Kind.KeepsFirst, when the first is
	// kept (read it back with GetFile to tell a re-push of the same
	// content from a conflict). Other flakes' files are neither read nor
	// changed.
	PutFile(ctx context.Context, flake nixname.Flake, f File) error
	// GetFile returns flake's file of kind and key, ErrNotFound when the
	// flake holds none or does not own what it needs. The flake must not
	// be zero.
	GetFile(ctx context.Context, flake nixname.Flake, kind Kind, key string) (File, error)

	// Stats returns counts for metrics.
	Stats(ctx context.Context) (Stats, error)
	Close() error
}

// Stats are index-wide counts: distinct store paths (whatever the number of
// flakes holding each), NAR files, and flakes owning a path or a NAR.
type Stats struct {
	Paths, Nars, Flakes int64
}
