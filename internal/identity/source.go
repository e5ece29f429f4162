package identity

import (
	"context"
	"crypto/sha256"
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

// fileSource reads a JWKS file, and reports errUnchanged while its content
// stays what it was at the last read (a file that did not parse is retried
// once it changes, not on every check). The content, not size and time: a
// JWKS replaced in place by one of the same size with its time kept (RSA
// keys of one size; cp -p, rsync -t) was never reloaded, so a removed key
// went on verifying (review r6, 2026-12-05, on the token key files).
type fileSource struct {
	path string
	sum  [sha256.Size]byte
	read bool
}

func (s *fileSource) load(context.Context) ([]byte, error) {
	fi, err := os.Stat(s.path)
	if err != nil {
		return nil, fmt.Errorf("read jwks file: %w", err)
	}
	if fi.Size() > maxJWKSSize {
		return nil, fmt.Errorf("read jwks file %s: larger than %d bytes", s.path, maxJWKSSize)
	}
	data, err := os.ReadFile(s.path)
	if err != nil {
		return nil, fmt.Errorf("read jwks file: %w", err)
	}
	if len(data) > maxJWKSSize {
		return nil, fmt.Errorf("read jwks file %s: larger than %d bytes", s.path, maxJWKSSize)
	}
	sum := sha256.Sum256(data)
	if s.read && sum == s.sum {
		return nil, errUnchanged
	}
	s.sum, s.read = sum, true
	return data, nil
}
