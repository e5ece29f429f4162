package push

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/cenkalti/backoff/v4"
)

// netrcLogin is the login Nix sends with a netrc entry; the cache ignores it.
const netrcLogin = "flakegate"

// statusError is a non-success answer of the cache.
type statusError struct {
	status int
	body   string
}

func (e *statusError) Error() string {
	msg := strings.TrimSpace(e.body)
	if msg == "" {
		msg = http.StatusText(e.status)
	}
	hint := ""
	switch e.status {
	case http.StatusUnauthorized:
		hint = " (no valid cache token: run flakegate login)"
	case http.StatusForbidden:
		hint = " (the token may not push to this flake)"
	}
	return fmt.Sprintf("the cache answered %d: %s%s", e.status, msg, hint)
}

// transient reports whether an answer is worth retrying.
func transient(status int) bool {
	return status == http.StatusRequestTimeout || status == http.StatusTooManyRequests || status >= 500
}

// do sends one request (method, path below the flake) with the token,
// retrying transient failures; it returns the final status.
func (p *pusher) do(ctx context.Context, method, path string, body opener, size int64, contentType string) (int, error) {
	var status int
	op := func() error {
		st, err := p.attempt(ctx, method, path, body, size, contentType)
		status = st
		return err // transient ones are retried, backoff.Permanent ones not
	}
	bo := backoff.NewExponentialBackOff()
	bo.InitialInterval = 250 * time.Millisecond
	bo.MaxInterval = 10 * time.Second
	bo.MaxElapsedTime = 0
	retry := backoff.WithContext(backoff.WithMaxRetries(bo, uint64(p.cfg.Retries)), ctx)
	err := backoff.RetryNotify(op, retry, func(err error, wait time.Duration) {
		p.env.Log.Warn("retrying", "request", method+" "+path, "error", err, "in", wait.Round(time.Millisecond))
	})
	return status, err
}

// attempt sends the request once. A transient answer is an error (so it
// is retried); any other answer is returned as a status.
func (p *pusher) attempt(ctx context.Context, method, path string, body opener, size int64, contentType string) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, p.cfg.Timeout)
	defer cancel()
	var rd io.ReadCloser
	if body != nil {
		r, err := body()
		if err != nil {
			return 0, backoff.Permanent(err)
		}
		rd = r
		defer r.Close()
	}
	req, err := http.NewRequestWithContext(ctx, method, p.base+path, rd)
	if err != nil {
		return 0, backoff.Permanent(err)
	}
	if body != nil {
		req.ContentLength = size
		req.Header.Set("Content-Type", contentType)
	}
	tok, err := p.env.Token(ctx)
	if err != nil {
		return 0, fmt.Errorf("get the cache token: %w", err)
	}
	if tok != "" {
		req.SetBasicAuth(netrcLogin, tok)
	}
	resp, err := p.env.HTTPClient.Do(req)
	if err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil && errors.Is(err, context.Canceled) {
			return 0, backoff.Permanent(err)
		}
		return 0, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if transient(resp.StatusCode) {
		return resp.StatusCode, &statusError{status: resp.StatusCode, body: string(b)}
	}
	if resp.StatusCode >= 400 && resp.StatusCode != http.StatusNotFound {
		return resp.StatusCode, backoff.Permanent(&statusError{status: resp.StatusCode, body: string(b)})
	}
	return resp.StatusCode, nil
}

// hasNarInfo reports whether the flake serves the narinfo of hash.
func (p *pusher) hasNarInfo(ctx context.Context, hash string) (bool, error) {
	status, err := p.do(ctx, http.MethodHead, hash+".narinfo", nil, 0, "")
	if err != nil {
		return false, fmt.Errorf("check whether the cache has it: %w", err)
	}
	return status == http.StatusOK, nil
}

// put uploads a body; 200 and 201 are success.
func (p *pusher) put(ctx context.Context, path string, body opener, size int64, contentType string) error {
	status, err := p.do(ctx, http.MethodPut, path, body, size, contentType)
	if err != nil {
		return err
	}
	if status != http.StatusOK && status != http.StatusCreated && status != http.StatusNoContent {
		return &statusError{status: status}
	}
	return nil
}
