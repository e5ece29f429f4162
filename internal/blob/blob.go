// Package blob stores the cache's large immutable files (NARs, build logs)
// by key. Implementations: fs (default) and s3.
//
// A blob is never visible half-written: Create returns a Writer whose bytes
// become visible under a key only when Commit returns nil.
//
// Keys: CheckKey is the one key rule (segments of [A-Za-z0-9._+=?-], none
// empty or starting with '.', at most MaxKeyLen bytes); every backend calls
// it, and the conformance suite (blobtest) checks that each one refuses and
// accepts the same keys.
package blob

import (
	"context"
	"errors"
	"io"
	"net/url"
	"time"
)

// ErrNotFound is returned (wrapped) when a key has no blob.
var ErrNotFound = errors.New("blob not found")

// Info describes a stored blob.
type Info struct {
	Key     string
	Size    int64
	ModTime time.Time
}

// Reader is an open blob. For the filesystem store it is backed by an
// *os.File (see File) so that HTTP can serve it with sendfile.
type Reader interface {
	io.ReadSeekCloser
	Info() Info
}

// Writer receives a new blob's bytes. Exactly one of Commit or Abort must be
// called; after a failed Write, call Abort.
type Writer interface {
	io.Writer
	// Commit makes the bytes durable and then visible under key. Committing
	// over an existing key is allowed (content-addressed keys hold the same
	// bytes) and must leave a complete blob under key at every instant.
	Commit(ctx context.Context, key string) error
	// Abort discards the bytes written so far.
	Abort() error
}

// Store is a blob store. Keys are slash-separated relative paths made of
// segments of the name characters of nixname.IsNameChar ([A-Za-z0-9._+=?-],
// e.g. "nar/<filehash>.nar.zst"); every method taking a key refuses, with
// an error wrapping ErrInvalidKey, any key CheckKey refuses, so all stores
// accept exactly the same keys.
type Store interface {
	Create(ctx context.Context) (Writer, error)
	Open(ctx context.Context, key string) (Reader, error)
	Stat(ctx context.Context, key string) (Info, error)
	Delete(ctx context.Context, key string) error
	Close() error
}

// Holder is implemented by stores where replacing a blob costs freeing the
// old one's space at once (a filesystem: a rename over a file frees its
// blocks when its last reference goes). Hold keeps the blob now under key
// alive until the returned Closer is closed (nil when the key has none), so
// that a Commit over it returns without that cost, which the caller then
// pays when it closes — after answering its client, so that the answer's
// time does not tell whether the blob existed.
type Holder interface {
	Hold(key string) (io.Closer, error)
}

// Presigner is implemented by stores whose blobs a client can read
// directly, without the server, through a URL that grants exactly one
// method on one blob for a limited time (S3 presigned URLs). Presign must
// cost no request to the storage: it only signs, locally.
type Presigner interface {
	// Presign returns a URL that lets whoever holds it send method (GET
	// or HEAD) for key until expiry has passed. It does not check that
	// the blob exists.
	Presign(ctx context.Context, method, key string, expiry time.Duration) (*url.URL, error)
}
