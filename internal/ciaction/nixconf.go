package ciaction

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
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

// systemConf includes the state directory's nix.conf in the system one,
// registers the netrc with Determinate Nix, and restarts the daemon.
func systemConf(ctx context.Context, dir Dir, env Env, w warner) error {
	include := "!include " + dir.path(nixConfFile)
	old, err := os.ReadFile(systemNixConf)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("read %s: %w", systemNixConf, err)
	}
	if !bytes.Contains(old, []byte(include)) {
		updated := strings.TrimRight(string(old), "\n") + "\n# flakegate ci setup\n" + include + "\n"
		if err := writeAsRoot(ctx, systemNixConf, updated); err != nil {
			return err
		}
	}
	if _, err := os.Stat(determinateCfg); err == nil {
		b, err := os.ReadFile(determinateCfg)
		if err != nil {
			return fmt.Errorf("read %s: %w", determinateCfg, err)
		}
		updated, changed, err := login.AddNetrcSource(b, dir.path(netrcFile))
		if err != nil {
			return err
		}
		if changed {
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
