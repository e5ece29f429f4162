package ciaction

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/flakegate/flakegate/internal/netrc"

	"github.com/flakegate/flakegate/internal/fsutil"
	"github.com/flakegate/flakegate/internal/login"
	"github.com/flakegate/flakegate/internal/nixname"
	"github.com/flakegate/flakegate/internal/route"
)

// Nix configuration modes of setup.
const (
	NixConfAuto   = "auto"   // system when a Nix daemon runs and /etc/nix/nix.conf is writable (root or sudo), else env
	NixConfEnv    = "env"    // NIX_CONFIG for the job's later steps ($GITHUB_ENV, or export lines on stdout)
	NixConfSystem = "system" // include in /etc/nix/nix.conf, restart the daemon; Determinate: additionalNetrcSources
	NixConfNone   = "none"   // write nix.conf in the state directory only
)

// SetupConfig is what `flakegate ci setup` was asked.
type SetupConfig struct {
	Cache    string
	Flake    string // default: the job's repository ($GITHUB_REPOSITORY, $CI_PROJECT_PATH)
	StateDir string // default: $RUNNER_TEMP/flakegate, else $TMPDIR/flakegate-ci
	TokenEnv string // the variable holding the job's ID token (GitLab); default auto
	Lifetime time.Duration
	NixConf  string
	// Store is nix --store of the paths the job builds ("" default store).
	Store string
	// Push: install the hook and start the pusher (false: read-only setup).
	Push    bool
	Retries int
	Timeout time.Duration
	// Client is the flakegate binary the hook and the pusher run; default
	// this executable.
	Client string
}

// DefaultSetupConfig is `flakegate ci setup` without flags.
func DefaultSetupConfig() SetupConfig {
	return SetupConfig{NixConf: NixConfAuto, Push: true, Retries: 5, Timeout: 30 * time.Second}
}

// Validate reports every problem at once (with getenv for the defaults).
func (c *SetupConfig) Validate(getenv func(string) string) error {
	var errs []error
	if _, err := login.SecureCacheBase(c.Cache); err != nil || c.Cache == "" {
		errs = append(errs, fmt.Errorf("--cache: the cache's base URL is required: %v", err))
	}
	if c.Flake == "" {
		c.Flake = defaultFlake(getenv)
	}
	if c.Push {
		if _, err := nixname.ParseFlake(c.Flake); err != nil {
			errs = append(errs, fmt.Errorf("--flake %q (default: the job's repository): %w", c.Flake, err))
		}
	}
	switch c.NixConf {
	case NixConfAuto, NixConfEnv, NixConfSystem, NixConfNone:
	default:
		errs = append(errs, fmt.Errorf("--nix-conf %q: want auto, env, system or none", c.NixConf))
	}
	if c.Lifetime < 0 || c.Retries < 0 {
		errs = append(errs, errors.New("--lifetime and --retries must not be negative"))
	}
	return errors.Join(errs...)
}

// defaultFlake is the job's repository: GitHub's owner/repo, GitLab's
// project path (a project in a subgroup needs --flake).
func defaultFlake(getenv func(string) string) string {
	for _, k := range []string{"GITHUB_REPOSITORY", "CI_PROJECT_PATH"} {
		if v := getenv(k); v != "" {
			return strings.ToLower(v)
		}
	}
	return ""
}

// DefaultStateDir is where the state lives unless --state-dir says: one
// directory per job. GitHub empties $RUNNER_TEMP for each job; elsewhere
// the job's id (GitLab's CI_JOB_ID) names it, since a shell runner keeps
// /tmp between jobs of every project, and a directory shared with the
// last job would hand it that job's queue, markers and pusher.
func DefaultStateDir(getenv func(string) string) string {
	if d := getenv("RUNNER_TEMP"); d != "" {
		return filepath.Join(d, "flakegate")
	}
	if id := getenv("CI_JOB_ID"); id != "" && strings.Trim(id, "0123456789") == "" && len(id) <= 20 {
		return filepath.Join(os.TempDir(), "flakegate-ci-"+id)
	}
	return filepath.Join(os.TempDir(), "flakegate-ci")
}

// errSetUpAlready: this job set up the state directory already and its
// pusher runs.
var errSetUpAlready = errors.New("set up already in this job")

// newJob readies a state directory for this job: an earlier job's markers,
// logs and queue entries go (its queue would otherwise be pushed to this
// job's flake, its markers end this job's pusher at once), and a pusher of
// an earlier job still running in it makes the directory unusable (it
// would push this job's builds with the earlier job's token).
func newJob(dir Dir, job string) error {
	if st, err := dir.Load(); err == nil && st.PusherPID != 0 && st.PusherPID != os.Getpid() && !dir.exists(pusherDone) && alive(st.PusherPID) {
		if job != "" && st.Job == job {
			return errSetUpAlready
		}
		return fmt.Errorf("the pusher of an earlier job (pid %d) still runs in the state directory %s: pass another --state-dir", st.PusherPID, dir)
	}
	for _, f := range []string{flushMarker, pusherDone, jobOver, pushedLog, warningsLog, refreshedLog, pusherLog} {
		if err := os.Remove(dir.path(f)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("clear the last job's %s: %w", f, err)
		}
	}
	entries, err := os.ReadDir(dir.path(queueDir))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("clear the last job's queue: %w", err)
	}
	for _, e := range entries {
		if err := os.Remove(filepath.Join(dir.path(queueDir), e.Name())); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("clear the last job's queue: %w", err)
		}
	}
	return nil
}

// ownStateDir creates the state directory (0711) or checks that the one
// there is a directory, not a symlink, that this user owns and no one
// else may write to. The post-build hook Nix runs (as root under a daemon),
// the nix.conf naming it, the netrc and state.json (the cache the job's
// IdP token is sent to) live there, so whoever may rename files in it
// could run code as Nix, read the job's token or send it elsewhere. The
// GitLab default is a fixed name in the shared /tmp, which another local
// user may have made first (review r6, 2026-12-05).
func ownStateDir(path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("create the state directory: %w", err)
	}
	// 0711: others may not list or write it, but may reach the nix.conf in
	// it by name, which /etc/nix/nix.conf includes in system mode (0700
	// made every other user's Nix fail on /etc/nix/nix.conf). The netrc
	// is 0600.
	switch err := os.Mkdir(path, 0o711); {
	case err == nil:
		if err := os.Chmod(path, 0o711); err != nil { // whatever the umask
			return fmt.Errorf("create the state directory: %w", err)
		}
	case !errors.Is(err, os.ErrExist):
		return fmt.Errorf("create the state directory: %w", err)
	}
	return checkStateDir(path)
}

// ownerOf is the uid owning fi's file; ok is false where the system does
// not say.
func ownerOf(fi os.FileInfo) (uid int, ok bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, false
	}
	return int(st.Uid), true
}

// checkStateDir is ownStateDir's check of an existing directory.
func checkStateDir(path string) error {
	fi, err := os.Lstat(path)
	if err != nil {
		return fmt.Errorf("check the state directory: %w", err)
	}
	refuse := func(why string) error {
		return fmt.Errorf("the state directory %s %s: another user could replace the post-build hook or read the job's token there; remove it, or pass --state-dir", path, why)
	}
	if !fi.IsDir() {
		return refuse("is not a directory (a symlink?)")
	}
	if uid, ok := ownerOf(fi); ok && uid != os.Getuid() {
		return refuse(fmt.Sprintf("belongs to uid %d, not to this user (uid %d)", uid, os.Getuid()))
	}
	if fi.Mode().Perm()&0o022 != 0 {
		return refuse(fmt.Sprintf("may be written by others (mode %v)", fi.Mode().Perm()))
	}
	return nil
}

// Env is the outside world of the ci commands.
type Env struct {
	HTTPClient *http.Client
	Getenv     func(string) string
	Stdout     io.Writer // export lines (env mode without $GITHUB_ENV)
	Stderr     io.Writer // progress and warnings
	// Now is the clock (tests).
	Now func() time.Time
}

func (e *Env) defaults() {
	if e.HTTPClient == nil {
		e.HTTPClient = &http.Client{}
	}
	if e.Getenv == nil {
		e.Getenv = os.Getenv
	}
	if e.Stdout == nil {
		e.Stdout = io.Discard
	}
	if e.Stderr == nil {
		e.Stderr = io.Discard
	}
	if e.Now == nil {
		e.Now = time.Now
	}
}

// Setup logs in, configures Nix and starts the pusher. It returns an error
// only for bad usage; every other failure is a warning (the job goes on
// without the cache, or without pushing).
func Setup(ctx context.Context, cfg SetupConfig, env Env) error {
	env.defaults()
	if err := cfg.Validate(env.Getenv); err != nil {
		return err
	}
	if cfg.StateDir == "" {
		cfg.StateDir = DefaultStateDir(env.Getenv)
	}
	// Checked before anything is written there, the warnings log
	// included: a refused directory is someone else's.
	if err := ownStateDir(cfg.StateDir); err != nil {
		annotate(env, "flakegate: the cache is not used in this job: "+err.Error())
		return nil
	}
	if err := newJob(Dir(cfg.StateDir), jobID(env.Getenv)); errors.Is(err, errSetUpAlready) {
		// A second setup in the job (the Action used twice, setup in
		// before_script and script): the first one's configuration and
		// pusher stay in force.
		fmt.Fprintf(env.Stderr, "flakegate: this job set up the cache already (state directory %s); this setup changes nothing\n", cfg.StateDir)
		return nil
	} else if err != nil {
		annotate(env, "flakegate: the cache is not used in this job: "+err.Error())
		return nil
	}
	w := warner{env: env, dir: Dir(cfg.StateDir)}
	if err := setup(ctx, cfg, env, w); err != nil {
		w.warn("flakegate: the cache is not used in this job: %v", err)
	}
	return nil
}

func setup(ctx context.Context, cfg SetupConfig, env Env, w warner) error {
	dir := Dir(cfg.StateDir)
	if err := os.MkdirAll(dir.path(queueDir), 0o755); err != nil {
		return fmt.Errorf("create the state directory: %w", err)
	}
	// The post-build hook runs as the Nix daemon's user (root) or as this
	// user: the queue is writable by others but not listable (1733, sticky
	// like /tmp), and the pusher takes only root's and its own entries.
	if err := os.Chmod(dir.path(queueDir), os.ModeSticky|0o733); err != nil {
		return fmt.Errorf("create the queue directory: %w", err)
	}
	cache, _ := login.CacheBase(cfg.Cache)
	st := &State{Cache: cache.String(), Flake: cfg.Flake, Store: cfg.Store, TokenEnv: cfg.TokenEnv, Lifetime: cfg.Lifetime, Retries: cfg.Retries, Job: jobID(env.Getenv)}
	if err := refresh(ctx, dir, st, env, cfg.Timeout); err != nil {
		return err
	}
	keys, err := publicKeys(ctx, env.HTTPClient, cache, cfg.Timeout)
	if err != nil {
		return err
	}
	client := cfg.Client
	if client == "" {
		if client, err = os.Executable(); err != nil {
			return fmt.Errorf("find the flakegate binary for the hook: %w", err)
		}
	}
	conf := nixConf(cache.String(), keys, dir.path(netrcFile), "")
	if cfg.Push {
		hook := "#!/bin/sh\n# flakegate post-build hook: queue the built paths for the pusher.\n" +
			"exec " + shellQuote(client) + " ci hook --state-dir " + shellQuote(cfg.StateDir) + "\n"
		if err := fsutil.WriteFileAtomic(dir.path(hookFile), []byte(hook), 0o755); err != nil {
			return fmt.Errorf("write the post-build hook: %w", err)
		}
		conf = nixConf(cache.String(), keys, dir.path(netrcFile), dir.path(hookFile))
	}
	if err := fsutil.WriteFileAtomic(dir.path(nixConfFile), []byte(conf), 0o644); err != nil {
		return fmt.Errorf("write nix.conf: %w", err)
	}
	if err := applyNixConf(ctx, cfg.NixConf, dir, conf, env, w); err != nil {
		return err
	}
	// The pusher reads the state when it starts; its pid is added after.
	if err := dir.Save(st); err != nil {
		return fmt.Errorf("save state: %w", err)
	}
	if cfg.Push {
		pid, err := startPusher(client, cfg.StateDir)
		if err != nil {
			return fmt.Errorf("start the background pusher: %w", err)
		}
		st.PusherPID = pid
		if err := dir.Save(st); err != nil {
			return fmt.Errorf("save state: %w", err)
		}
	}
	fmt.Fprintf(env.Stderr, "flakegate: Nix uses %s (token valid until %s)", cache, st.ExpiresAt.UTC().Format(time.RFC3339))
	if cfg.Push {
		fmt.Fprintf(env.Stderr, "; every path this job builds is pushed to %s", cfg.Flake)
	}
	fmt.Fprintln(env.Stderr)
	return nil
}

// refresh gets a fresh ID token from the CI, exchanges it for a cache
// token, writes the netrc and records the expiry in st (not saved).
func refresh(ctx context.Context, dir Dir, st *State, env Env, timeout time.Duration) error {
	cache, err := login.CacheBase(st.Cache)
	if err != nil {
		return err
	}
	src := login.CISource{TokenEnv: st.TokenEnv, Audience: cache.String(), Getenv: env.Getenv, HTTPClient: env.HTTPClient, Timeout: timeout}
	idToken, _, err := src.Token(ctx)
	if err != nil {
		return err
	}
	// A cache restarting, or its gate still connecting to authz, answers
	// 503 for a moment: retried (3 times, 1 s apart, doubling).
	var tok *login.CacheToken
	for wait := time.Second; ; wait *= 2 {
		tok, err = login.Exchange(ctx, env.HTTPClient, cache, idToken, st.Lifetime, timeout)
		if err == nil || !login.Transient(err) || wait > 4*time.Second {
			break
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
	}
	if err != nil {
		return err
	}
	if err := netrc.WriteEntry(dir.path(netrcFile), cache.Hostname(), login.NetrcLogin, tok.Token); err != nil {
		return err
	}
	// The daemon (root) reads the netrc through netrc-file.
	if err := os.Chmod(dir.path(netrcFile), 0o600); err != nil {
		return err
	}
	st.IssuedAt, st.ExpiresAt = env.Now(), tok.ExpiresAt
	return nil
}

// publicKeys fetches the cache's narinfo signing keys.
func publicKeys(ctx context.Context, hc *http.Client, cache *url.URL, timeout time.Duration) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	u := cache.JoinPath(route.PublicKeysPath).String()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("fetch the cache's public keys: %w", err)
	}
	defer resp.Body.Close()
	var pk route.PublicKeysResponse
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("fetch the cache's public keys: %s answered %d", u, resp.StatusCode)
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&pk); err != nil || len(pk.PublicKeys) == 0 {
		return nil, fmt.Errorf("fetch the cache's public keys: no keys in the answer of %s (%v)", u, err)
	}
	for _, k := range pk.PublicKeys {
		if strings.ContainsAny(k, " \t\n") || !strings.Contains(k, ":") {
			return nil, fmt.Errorf("fetch the cache's public keys: %q is not a name:base64 key", k)
		}
	}
	return pk.PublicKeys, nil
}

// nixConf is the Nix configuration of the job.
func nixConf(cache string, keys []string, netrc, hook string) string {
	s := "extra-substituters = " + cache + "/\n" +
		"extra-trusted-public-keys = " + strings.Join(keys, " ") + "\n" +
		"netrc-file = " + netrc + "\n"
	if hook != "" {
		s += "post-build-hook = " + hook + "\n"
	}
	return s
}

// startPusher starts `flakegate ci pusher` in its own session, logging to
// pusher.log; it outlives this process (it stops after flush).
func startPusher(client, stateDir string) (int, error) {
	logf, err := os.OpenFile(filepath.Join(stateDir, pusherLog), os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return 0, err
	}
	defer logf.Close()
	cmd := exec.Command(client, "ci", "pusher", "--state-dir", stateDir)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	pid := cmd.Process.Pid
	return pid, cmd.Process.Release()
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }
