package login

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/flakegate/flakegate/internal/netrc"

	"github.com/flakegate/flakegate/internal/fsutil"
	"github.com/flakegate/flakegate/internal/route"
)

// readTokenFile reads an ID token from a file ("-": r, standard input).
func readTokenFile(path string, r io.Reader) (string, error) {
	var b []byte
	var err error
	if path == "-" {
		if r == nil {
			r = os.Stdin
		}
		b, err = io.ReadAll(io.LimitReader(r, 64<<10))
	} else {
		b, err = os.ReadFile(path)
	}
	if err != nil {
		return "", fmt.Errorf("read the ID token from %s: %w", path, err)
	}
	t := strings.TrimSpace(string(b))
	if t == "" || strings.ContainsAny(t, " \t\r\n") || strings.Count(t, ".") != 2 {
		return "", fmt.Errorf("%s does not hold one ID token (a JWT: header.payload.signature)", path)
	}
	return t, nil
}

// registerDeterminate makes Determinate Nix's daemon read netrcPath: its
// daemon ignores netrc-file and reads the files listed in
// authentication.additionalNetrcSources of its config.json. As root the
// file is updated; otherwise the exact change is printed.
func registerDeterminate(env Env, netrcPath string) {
	path := env.DeterminateConfig
	if path == "" {
		path = DeterminateConfig
	}
	old, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return
	}
	if err != nil {
		fmt.Fprintf(env.Stderr, "flakegate: Determinate Nix: read %s: %v\n", path, err)
		return
	}
	updated, changed, err := AddNetrcSource(old, netrcPath)
	if err != nil {
		fmt.Fprintf(env.Stderr, "flakegate: Determinate Nix: %v\n", err)
		return
	}
	if !changed {
		return
	}
	if err := fsutil.WriteFileAtomic(path, updated, 0o644); err == nil {
		fmt.Fprintf(env.Stderr, "flakegate: Determinate Nix: %s now lists %s in authentication.additionalNetrcSources; restart its daemon (sudo systemctl restart determinate-nixd)\n", path, netrcPath)
		return
	}
	fmt.Fprintf(env.Stderr, "flakegate: Determinate Nix reads netrc files only from %s: as root, add\n"+
		"  \"authentication\": { \"additionalNetrcSources\": [ %q ] }\n"+
		"to it (keeping the other settings), e.g. with\n"+
		"  sudo flakegate login … (again), or by hand; then restart its daemon.\n", path, netrcPath)
}

// Logout removes the cache's entry from the netrc file and reports
// whether there was one. The token itself stays valid until it expires
// (an administrator revokes it by its token id).
func Logout(netrcPath string, cache string) (bool, error) {
	base, err := CacheBase(cache)
	if err != nil {
		return false, err
	}
	old, err := os.ReadFile(netrcPath)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("read netrc %s: %w", netrcPath, err)
	}
	updated, removed := netrc.RemoveEntry(string(old), base.Hostname())
	if !removed {
		return false, nil
	}
	target := netrcPath
	if resolved, err := filepath.EvalSymlinks(netrcPath); err == nil {
		target = resolved
	}
	if err := fsutil.WriteFileAtomic(target, []byte(updated), 0o600); err != nil {
		return false, err
	}
	return true, nil
}

// Status asks the cache's whoami endpoint who the netrc token is.
func Status(ctx context.Context, hc *http.Client, cache, netrcPath string, timeout time.Duration) (*route.WhoamiResponse, error) {
	base, err := SecureCacheBase(cache) // it sends the token
	if err != nil {
		return nil, err
	}
	tok, err := netrc.ReadToken(netrcPath, base.Hostname())
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequest(http.MethodGet, base.JoinPath(route.WhoamiPath).String(), nil)
	if err != nil {
		return nil, err
	}
	req.SetBasicAuth(NetrcLogin, tok)
	var who route.WhoamiResponse
	var errText string
	status, err := doJSONOr(ctx, hc, req, timeout, &who, &errText)
	if err != nil {
		return nil, fmt.Errorf("ask %s who the token is: %w", base.Host, err)
	}
	if status != http.StatusOK {
		return nil, fmt.Errorf("the cache answered %d: %s (run flakegate login)", status, strings.TrimSpace(errText))
	}
	return &who, nil
}
