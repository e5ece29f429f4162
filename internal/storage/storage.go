// Package storage opens the blob store and the index named by URL flags,
// so that backends plug in here without touching the HTTP handlers:
//
//	blob store: file:///abs/dir or file://rel/dir (default, internal/blob/fs)
//	            s3://bucket/prefix?endpoint=…&region=… (internal/blob/s3)
//	index:      sqlite:///abs/index.db or sqlite://rel/index.db (default, internal/index/sqlite)
//	            postgres://user@host/db?… or postgresql://… (internal/index/postgres)
//
// Other schemes are added as cases of OpenBlob and OpenIndex by their
// backends. URLs in errors go through internal/redact (the one password
// redaction rule).
package storage

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"github.com/flakegate/flakegate/internal/blob"
	blobfs "github.com/flakegate/flakegate/internal/blob/fs"
	blobs3 "github.com/flakegate/flakegate/internal/blob/s3"
	"github.com/flakegate/flakegate/internal/index"
	"github.com/flakegate/flakegate/internal/index/postgres"
	"github.com/flakegate/flakegate/internal/index/sqlite"
	"github.com/flakegate/flakegate/internal/redact"
)

// scheme splits "scheme://rest".
func scheme(u string) (string, string, error) {
	s, rest, ok := strings.Cut(u, "://")
	if !ok || s == "" {
		return "", "", fmt.Errorf("storage URL %s: want scheme://…", redact.URL(u))
	}
	return strings.ToLower(s), rest, nil
}

// OpenBlob opens the blob store named by u.
func OpenBlob(ctx context.Context, u string) (blob.Store, error) {
	s, rest, err := scheme(u)
	if err != nil {
		return nil, err
	}
	switch s {
	case "file":
		if rest == "" {
			return nil, errors.New("blob store URL file://: no directory")
		}
		return blobfs.Open(rest)
	case "s3":
		return blobs3.Open(ctx, u, slog.Default())
	default:
		return nil, fmt.Errorf("blob store URL %q: unsupported scheme %q (supported: file, s3)", redact.URL(u), s)
	}
}

// OpenBlobShared is OpenBlob for a process beside the servers using the
// store (`blobserver gc`): a file store's temporary files, their uploads
// in progress, are left alone, and a file store must exist already.
func OpenBlobShared(ctx context.Context, u string) (blob.Store, error) {
	if s, rest, err := scheme(u); err == nil && s == "file" && rest != "" {
		return blobfs.OpenShared(rest)
	}
	return OpenBlob(ctx, u)
}

// OpenIndex opens the index named by u.
func OpenIndex(ctx context.Context, u string) (index.Index, error) {
	s, rest, err := scheme(u)
	if err != nil {
		return nil, err
	}
	switch s {
	case "sqlite":
		if rest == "" {
			return nil, errors.New("index URL sqlite://: no file")
		}
		return sqlite.Open(ctx, rest)
	case "postgres", "postgresql":
		return postgres.Open(ctx, u)
	default:
		return nil, fmt.Errorf("index URL %q: unsupported scheme %q (supported: sqlite, postgres)", redact.URL(u), s)
	}
}
