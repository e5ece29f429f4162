package identity

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"
)

// maxJWKSSize bounds a JWKS document.
const maxJWKSSize = 1 << 20

// errUnchanged: the source has not changed since it was last loaded.
var errUnchanged = errors.New("unchanged")

// keySource produces an issuer's JWKS document. Calls are serialized by
// the issuer's refresh lock.
type keySource interface {
	load(ctx context.Context) ([]byte, error)
}

// urlSource fetches a JWKS over HTTP(S).
type urlSource struct {
	url     string
	client  *http.Client
	timeout time.Duration
}

func (s *urlSource) load(ctx context.Context) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.url, nil)
	if err != nil {
		return nil, fmt.Errorf("fetch jwks: %w", err)
	}
	req.Header.Set("Accept", "application/jwk-set+json, application/json")
	resp, err := s.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("fetch jwks: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		return nil, fmt.Errorf("fetch jwks %s: HTTP status %d", s.url, resp.StatusCode)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxJWKSSize+1))
	if err != nil {
		return nil, fmt.Errorf("fetch jwks %s: read body: %w", s.url, err)
	}
	if len(body) > maxJWKSSize {
		return nil, fmt.Errorf("fetch jwks %s: document larger than %d bytes", s.url, maxJWKSSize)
	}
	return body, nil
}

// fileSource reads a JWKS file, and reports errUnchanged while its
// modification time and size stay what they were at the last read (a file
// that did not parse is retried once it changes, not on every check).
type fileSource struct {
	path    string
	modTime time.Time
	size    int64
}

func (s *fileSource) load(context.Context) ([]byte, error) {
	fi, err := os.Stat(s.path)
	if err != nil {
		return nil, fmt.Errorf("read jwks file: %w", err)
	}
	if fi.ModTime().Equal(s.modTime) && fi.Size() == s.size {
		return nil, errUnchanged
	}
	if fi.Size() > maxJWKSSize {
		return nil, fmt.Errorf("read jwks file %s: larger than %d bytes", s.path, maxJWKSSize)
	}
	data, err := os.ReadFile(s.path)
	if err != nil {
		return nil, fmt.Errorf("read jwks file: %w", err)
	}
	// The stat taken before reading: a write racing with the read leaves a
	// newer mtime behind, so the next check reads again.
	s.modTime, s.size = fi.ModTime(), fi.Size()
	return data, nil
}
