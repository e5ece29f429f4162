package login

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/flakegate/flakegate/internal/nixname"
)

// PinConfig is what `flakegate pin` / `flakegate unpin` were asked to do:
// pin a store path of a flake under a name (its closure is kept by the
// cache's garbage collection whatever the retention), or remove the pin.
type PinConfig struct {
	Cache     string // cache base URL
	Flake     string // org/name
	Name      string // the pin's name
	StorePath string // /nix/store/<hash>-<name> (pin only)
	Unpin     bool
	// Netrc holds the cache token (flakegate login writes it); default
	// DefaultNetrcPath.
	Netrc   string
	Timeout time.Duration // default 30s
}

// Validate reports every problem at once.
func (c *PinConfig) Validate() error {
	var errs []error
	if _, err := SecureCacheBase(c.Cache); err != nil {
		errs = append(errs, err)
	}
	if f, err := nixname.ParseFlake(c.Flake); err != nil || f.String() != c.Flake {
		errs = append(errs, fmt.Errorf("--flake %q: want a lower-case org/name", c.Flake))
	}
	if err := nixname.CheckPinName(c.Name); err != nil {
		errs = append(errs, err)
	}
	if !c.Unpin && !strings.HasPrefix(c.StorePath, "/nix/store/") {
		errs = append(errs, fmt.Errorf("store path %q: want /nix/store/<hash>-<name>", c.StorePath))
	}
	return errors.Join(errs...)
}

// Pin sets (or with Unpin removes) a pin, authenticated with the cache
// token stored in the netrc file for the cache's host, and writes the
// cache's answer to env.Stdout.
func Pin(ctx context.Context, cfg PinConfig, env Env) error {
	base, err := CacheBase(cfg.Cache)
	if err != nil {
		return err
	}
	path := cfg.Netrc
	if path == "" {
		if path, err = DefaultNetrcPath(env.Getenv); err != nil {
			return err
		}
	}
	content, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read the cache token: %w (run flakegate login first)", err)
	}
	token, ok := NetrcPassword(string(content), base.Hostname())
	if !ok || token == "" {
		return fmt.Errorf("no token for %s in %s: run flakegate login first", base.Hostname(), path)
	}
	timeout := cfg.Timeout
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	method, body := http.MethodPut, []byte(cfg.StorePath+"\n")
	if cfg.Unpin {
		method, body = http.MethodDelete, nil
	}
	u := base.String() + "/" + cfg.Flake + "/_pins/" + cfg.Name
	req, err := http.NewRequestWithContext(ctx, method, u, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := env.HTTPClient.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, u, err)
	}
	defer resp.Body.Close()
	answer, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s %s: %s: %s", method, u, resp.Status, firstLine(answer))
	}
	if cfg.Unpin {
		fmt.Fprintf(env.Stdout, "unpinned %s in %s\n", cfg.Name, cfg.Flake)
		return nil
	}
	fmt.Fprintf(env.Stdout, "pinned %s in %s: %s", cfg.Name, cfg.Flake, answer)
	return nil
}
