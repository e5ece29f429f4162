package login

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/flakegate/flakegate/internal/nixname"
)

// TokenConfig is what `flakegate token create` was asked to do: mint a
// scoped (deploy) token, read-only for the closure of Closures within
// Flake, and print it as a netrc line for the deployed machine. The
// minter signs in as for a login (Login: --ci in a CI job that may push
// the flake, or the device flow for a user the policy lists).
type TokenConfig struct {
	Login    Config
	Flake    string
	Closures []string // store paths, or links to them (./result)
}

// Validate reports every problem of the config at once.
func (c *TokenConfig) Validate() error {
	var errs []error
	if err := c.Login.Validate(); err != nil {
		errs = append(errs, err)
	}
	if _, err := nixname.ParseFlake(c.Flake); err != nil {
		errs = append(errs, fmt.Errorf("--flake %q: %w", c.Flake, err))
	}
	if len(c.Closures) == 0 {
		errs = append(errs, errors.New("--closure is required (a store path, or a link to one such as ./result)"))
	}
	return errors.Join(errs...)
}

// StorePathOf resolves a closure argument to the store path it is or
// points to: "/nix/store/<hash>-<name>" as given, a path below one (its
// store path), or a link such as ./result resolved on this machine.
func StorePathOf(arg string) (string, error) {
	p := arg
	if !strings.HasPrefix(p, nixname.StoreDir+"/") {
		resolved, err := filepath.EvalSymlinks(arg)
		if err != nil {
			return "", fmt.Errorf("--closure %q: not a store path, and it cannot be resolved: %w", arg, err)
		}
		p = resolved
	}
	rest, ok := strings.CutPrefix(p, nixname.StoreDir+"/")
	if !ok {
		return "", fmt.Errorf("--closure %q: %s is not in %s", arg, p, nixname.StoreDir)
	}
	base, _, _ := strings.Cut(rest, "/")
	sp := nixname.StoreDir + "/" + base
	if _, ok := nixname.StorePathBase(sp); !ok {
		return "", fmt.Errorf("--closure %q: %s is not a store path", arg, sp)
	}
	return sp, nil
}

// CreateToken mints a scoped token and prints one netrc line for the cache
// on env.Stdout (the token is the only secret printed; nothing is written
// to the minter's own netrc). Progress and the token id go to env.Stderr.
func CreateToken(ctx context.Context, cfg TokenConfig, env Env) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	env = env.withDefaults()
	cache, _ := CacheBase(cfg.Login.Cache) // validated above
	scope := Scope{Flake: strings.ToLower(cfg.Flake)}
	for _, c := range cfg.Closures {
		sp, err := StorePathOf(c)
		if err != nil {
			return err
		}
		scope.Roots = append(scope.Roots, sp)
	}
	idpToken, err := cfg.Login.idpToken(ctx, env, cache)
	if err != nil {
		return err
	}
	tok, err := ExchangeScoped(ctx, env.HTTPClient, cache, idpToken, scope, cfg.Login.Lifetime, cfg.Login.Timeout)
	if err != nil {
		return err
	}
	fmt.Fprintf(env.Stderr, "flakegate: scoped token for the closure of %s in %s (read-only; valid until %s; token id %s, revoke it in denylist.yaml)\n",
		strings.Join(scope.Roots, ", "), scope.Flake, tok.ExpiresAt.Local().Format(time.RFC3339), tok.TokenID)
	_, err = fmt.Fprintf(env.Stdout, "machine %s login %s password %s\n", cache.Hostname(), NetrcLogin, tok.Token)
	return err
}

// ParseLifetime reads a lifetime as a Go duration ("36h") or in days
// ("90d").
func ParseLifetime(s string) (time.Duration, error) {
	if d, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.ParseUint(d, 10, 16)
		if err != nil || n == 0 {
			return 0, fmt.Errorf("lifetime %q: want a positive number of days (90d) or a duration (36h)", s)
		}
		return time.Duration(n) * 24 * time.Hour, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("lifetime %q: want a positive number of days (90d) or a duration (36h)", s)
	}
	return d, nil
}
