package ciaction

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/flakegate/flakegate/internal/login"
)

// Where a multi-user Nix keeps its configuration.
var (
	systemNixConf  = "/etc/nix/nix.conf"
	daemonSocket   = "/nix/var/nix/daemon-socket/socket"
	determinateCfg = login.DeterminateConfig
)

// applyNixConf makes the job's later Nix commands use conf.
func applyNixConf(ctx context.Context, mode string, dir Dir, conf string, env Env, w warner) error {
	if mode == NixConfAuto {
		mode = NixConfEnv
		if _, err := os.Stat(daemonSocket); err == nil && canWriteSystem(ctx) {
			mode = NixConfSystem
		}
	}
	switch mode {
	case NixConfNone:
		return nil
	case NixConfEnv:
		return exportNixConfig(env, conf)
	case NixConfSystem:
		return systemConf(ctx, dir, env, w)
	}
	return fmt.Errorf("unknown --nix-conf %q", mode)
}

// exportNixConfig adds conf to NIX_CONFIG for the job's later steps:
// through $GITHUB_ENV on GitHub, else as an export line on stdout (GitLab:
// eval "$(flakegate ci setup …)").
func exportNixConfig(env Env, conf string) error {
	value := conf
	if old := env.Getenv("NIX_CONFIG"); old != "" {
		value = strings.TrimRight(old, "\n") + "\n" + conf
	}
	if ghEnv := env.Getenv("GITHUB_ENV"); ghEnv != "" {
		delim := "FLAKEGATE_EOF"
		for strings.Contains(value, delim) {
			delim += "_"
		}
		f, err := os.OpenFile(ghEnv, os.O_APPEND|os.O_WRONLY, 0)
		if err != nil {
			return fmt.Errorf("set NIX_CONFIG through $GITHUB_ENV: %w", err)
		}
		_, err = fmt.Fprintf(f, "NIX_CONFIG<<%s\n%s\n%s\n", delim, strings.TrimRight(value, "\n"), delim)
		return errors.Join(err, f.Close())
	}
	_, err := fmt.Fprintf(env.Stdout, "export NIX_CONFIG=%s\n", shellQuote(value))
	return err
}

// canWriteSystem reports whether /etc/nix/nix.conf can be changed: as root,
// or with password-less sudo.
func canWriteSystem(ctx context.Context) bool {
	if os.Geteuid() == 0 {
		return true
	}
	return exec.CommandContext(ctx, "sudo", "-n", "true").Run() == nil
}

// confMarker precedes each include line setup adds to the system nix.conf.
const confMarker = "# flakegate ci setup"

// withoutIncludes removes from a system nix.conf the include lines setup
// added (each after confMarker) for which drop says so.
func withoutIncludes(conf string, drop func(path string) bool) string {
	lines := strings.Split(conf, "\n")
	out := make([]string, 0, len(lines))
	for i := 0; i < len(lines); i++ {
		if lines[i] == confMarker && i+1 < len(lines) {
			if path, ok := strings.CutPrefix(lines[i+1], "!include "); ok && drop(path) {
				i++
				continue
			}
		}
		out = append(out, lines[i])
	}
	return strings.Join(out, "\n")
}

// stale reports whether an include setup added names a file that is not a
// live job's of this user: gone, or in a directory that is not this
// user's alone (checkStateDir), or not a regular file of this user. Once a
// job's directory is gone, any local user may make that path again (a
// file, a symlink, a directory of theirs) for the daemon to read as root
// at its next start; a file in a directory this user owns and no one else
// may write is another job's of this runner, running (reviews of the
// fixes, 2026-12-05).
func stale(path string) bool {
	if checkStateDir(filepath.Dir(path)) != nil {
		return true
	}
	fi, err := os.Lstat(path)
	if err != nil || !fi.Mode().IsRegular() {
		return true
	}
	uid, ok := ownerOf(fi)
	return !ok || uid != os.Getuid()
}

// systemConf includes the state directory's nix.conf in the system one
// (dropping earlier includes that are no running job's of this user: stale),
// registers
// the netrc with Determinate Nix, and restarts the daemon. flush takes them
// back (unsystemConf).
func systemConf(ctx context.Context, dir Dir, env Env, w warner) error {
	ours := dir.path(nixConfFile)
	old, err := os.ReadFile(systemNixConf)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("read %s: %w", systemNixConf, err)
	}
	kept := withoutIncludes(string(old), func(path string) bool { return path == ours || stale(path) })
	updated := strings.TrimRight(kept, "\n") + "\n" + confMarker + "\n!include " + ours + "\n"
	if updated != string(old) {
		if err := writeAsRoot(ctx, systemNixConf, updated); err != nil {
			return err
		}
	}
	if _, err := os.Stat(determinateCfg); err == nil {
		b, err := os.ReadFile(determinateCfg)
		if err != nil {
			return fmt.Errorf("read %s: %w", determinateCfg, err)
		}
		// Only sources a setup added: a netrc in a flakegate state
		// directory (never an administrator's own, which may appear later).
		b, removed, err := login.RemoveNetrcSources(b, func(path string) bool {
			return filepath.Base(path) == netrcFile && strings.HasPrefix(filepath.Base(filepath.Dir(path)), "flakegate") && stale(path)
		})
		if err != nil {
			return err
		}
		updated, added, err := login.AddNetrcSource(b, dir.path(netrcFile))
		if err != nil {
			return err
		}
		if removed || added {
			if err := writeAsRoot(ctx, determinateCfg, string(updated)); err != nil {
				return err
			}
		}
	}
	for _, unit := range []string{"determinate-nixd.service", "nix-daemon.service"} {
		cmd := asRoot(ctx, "systemctl", "try-restart", unit)
		if out, err := cmd.CombinedOutput(); err != nil {
			w.warn("flakegate: restart %s: %v %s", unit, err, strings.TrimSpace(string(out)))
		}
	}
	fmt.Fprintf(env.Stderr, "flakegate: %s includes %s\n", systemNixConf, dir.path(nixConfFile))
	return nil
}

// unsystemConf takes back what systemConf added for dir: the include line
// and Determinate's netrc source. The daemon keeps what it read until it
// restarts; after that it no longer reads a file of a finished job, which
// any local user could make again once the directory is gone.
func unsystemConf(ctx context.Context, dir Dir) error {
	ours := dir.path(nixConfFile)
	old, err := os.ReadFile(systemNixConf)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("read %s: %w", systemNixConf, err)
	}
	var errs []error
	if kept := withoutIncludes(string(old), func(path string) bool { return path == ours }); kept != string(old) {
		errs = append(errs, writeAsRoot(ctx, systemNixConf, kept))
	}
	if b, err := os.ReadFile(determinateCfg); err == nil {
		netrc := dir.path(netrcFile)
		updated, changed, err := login.RemoveNetrcSources(b, func(path string) bool { return path == netrc })
		switch {
		case err != nil:
			errs = append(errs, err)
		case changed:
			errs = append(errs, writeAsRoot(ctx, determinateCfg, string(updated)))
		}
	}
	return errors.Join(errs...)
}

func asRoot(ctx context.Context, name string, args ...string) *exec.Cmd {
	if os.Geteuid() == 0 {
		return exec.CommandContext(ctx, name, args...)
	}
	return exec.CommandContext(ctx, "sudo", append([]string{"-n", name}, args...)...)
}

// writeAsRoot replaces a root-owned file.
func writeAsRoot(ctx context.Context, path, content string) error {
	cmd := asRoot(ctx, "tee", path)
	cmd.Stdin = strings.NewReader(content)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("write %s: %v %s", path, err, strings.TrimSpace(stderr.String()))
	}
	return nil
}
