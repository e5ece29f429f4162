package ciaction

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/flakegate/flakegate/internal/fsutil"
	"github.com/flakegate/flakegate/internal/login"
	"github.com/flakegate/flakegate/internal/nixname"
	"github.com/flakegate/flakegate/internal/push"
)

// warner reports a problem without failing the job: on stderr (a GitHub
// annotation under GitHub Actions) and in warnings.log for the summary.
type warner struct {
	env Env
	dir Dir
	// quiet: only the log (the background pusher; flush shows its warnings).
	quiet bool
}

func (w warner) warn(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	if w.quiet {
		fmt.Fprintln(w.env.Stderr, "warning:", msg)
		_ = w.dir.appendLine(warningsLog, "pusher: "+msg)
		return
	}
	annotate(w.env, msg)
	_ = w.dir.appendLine(warningsLog, msg)
}

// annotate prints a warning as the CI shows it best.
func annotate(env Env, msg string) {
	if env.Getenv("GITHUB_ACTIONS") == "true" {
		// Workflow commands end at a newline; %, \r and \n are escaped.
		r := strings.NewReplacer("%", "%25", "\r", "%0D", "\n", "%0A")
		fmt.Fprintf(env.Stderr, "::warning title=flakegate::%s\n", r.Replace(msg))
		return
	}
	fmt.Fprintln(env.Stderr, "WARNING:", msg)
}

// drvPrefix marks a queued derivation whose outputs the pusher looks up.
const drvPrefix = "drv:"

// Hook queues the paths Nix just built ($OUT_PATHS). It never fails: a
// failing post-build-hook would fail the build.
//
// Nix 2.8.0 runs the hook with OUT_PATHS empty (NixOS/nix#6446); then the
// derivation ($DRV_PATH) is queued and the pusher asks Nix for its outputs.
func Hook(dir Dir, env Env) {
	env.defaults()
	paths := strings.Fields(env.Getenv("OUT_PATHS"))
	if len(paths) == 0 {
		if drv := strings.TrimSpace(env.Getenv("DRV_PATH")); drv != "" {
			paths = []string{drvPrefix + drv}
		}
	}
	if len(paths) == 0 {
		return
	}
	var rnd [6]byte
	_, _ = rand.Read(rnd[:])
	name := fmt.Sprintf("%020d-%s.paths", time.Now().UnixNano(), hex.EncodeToString(rnd[:]))
	// WriteFileAtomic writes a dot-file first: the pusher skips those.
	if err := fsutil.WriteFileAtomic(filepath.Join(dir.path(queueDir), name), []byte(strings.Join(paths, "\n")+"\n"), 0o644); err != nil {
		fmt.Fprintf(env.Stderr, "flakegate post-build hook: could not queue %d paths for pushing: %v\n", len(paths), err)
	}
}

// Poll is how often the pusher looks at the queue.
var Poll = 500 * time.Millisecond

// maxRounds is how many times a queue entry is pushed before it is
// reported and dropped.
const maxRounds = 3

// Pusher pushes queued paths until flush asks it to stop and the queue is
// empty, refreshing the cache token on the way. It returns an error only
// when it cannot start (no state).
func Pusher(ctx context.Context, dir Dir, env Env) error {
	env.defaults()
	st, err := dir.Load()
	if err != nil {
		return err
	}
	// This process is the pusher now (flush may run one itself): the state
	// it saves after a token refresh names it.
	st.PusherPID = os.Getpid()
	p := &pusherLoop{dir: dir, st: st, env: env, w: warner{env: env, dir: dir, quiet: true},
		rounds: map[string]int{}, next: map[string]time.Time{}}
	defer func() { _ = os.WriteFile(dir.path(pusherDone), nil, 0o644) }()
	for {
		if dir.exists(jobOver) {
			return nil // flush gave up waiting and removed the token
		}
		p.maybeRefresh(ctx)
		flushing := dir.exists(flushMarker)
		p.drain(ctx, flushing)
		if flushing && len(p.queue()) == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(Poll):
		}
	}
}

type pusherLoop struct {
	dir    Dir
	st     *State
	env    Env
	w      warner
	rounds map[string]int       // queue file → rounds tried
	next   map[string]time.Time // queue file → not before
	// refreshFailedAt: the last failed refresh (retried after 10 s).
	refreshFailedAt time.Time
}

// queue lists the queue files, oldest first.
func (p *pusherLoop) queue() []string {
	entries, err := os.ReadDir(p.dir.path(queueDir))
	if err != nil {
		return nil
	}
	var out []string
	for _, e := range entries {
		if e.IsDir() || !strings.HasSuffix(e.Name(), ".paths") || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		// The queue is writable by others (the daemon's hook runs as
		// root): only entries of root (the hook) or of this user count, so
		// another local user cannot have paths pushed to the flake.
		info, err := os.Lstat(filepath.Join(p.dir.path(queueDir), e.Name()))
		if err != nil || !info.Mode().IsRegular() || !trustedOwner(info) {
			continue
		}
		out = append(out, e.Name())
	}
	slices.Sort(out)
	return out
}

// trustedOwner reports whether a queue file belongs to root or to this
// process's user.
func trustedOwner(info os.FileInfo) bool {
	st, ok := info.Sys().(*syscall.Stat_t)
	if !ok {
		return false
	}
	return st.Uid == 0 || int(st.Uid) == os.Getuid()
}

// maybeRefresh renews the cache token when a third of its lifetime is left.
func (p *pusherLoop) maybeRefresh(ctx context.Context) {
	now := p.env.Now()
	life := p.st.ExpiresAt.Sub(p.st.IssuedAt)
	if now.Before(p.st.IssuedAt.Add(life*2/3)) || now.Before(p.refreshFailedAt.Add(10*time.Second)) {
		return
	}
	if err := refresh(ctx, p.dir, p.st, p.env, 30*time.Second); err != nil {
		p.refreshFailedAt = now
		p.w.warn("refresh the cache token (expires %s): %v", p.st.ExpiresAt.UTC().Format(time.RFC3339), err)
		return
	}
	if p.dir.exists(jobOver) {
		// flush removed the token while this refresh wrote it again.
		_ = os.Remove(p.dir.path(netrcFile))
		return
	}
	if err := p.dir.Save(p.st); err != nil {
		p.w.warn("save state after the token refresh: %v", err)
	}
	_ = p.dir.appendLine(refreshedLog, fmt.Sprintf("%s expires %s", now.UTC().Format(time.RFC3339), p.st.ExpiresAt.UTC().Format(time.RFC3339)))
	fmt.Fprintf(p.env.Stderr, "flakegate pusher: cache token refreshed, valid until %s\n", p.st.ExpiresAt.UTC().Format(time.RFC3339))
}

// drain pushes every queue entry that is due (all of them when flushing).
func (p *pusherLoop) drain(ctx context.Context, flushing bool) {
	var files, paths []string
	now := p.env.Now()
	for _, f := range p.queue() {
		if !flushing && now.Before(p.next[f]) {
			continue
		}
		b, err := os.ReadFile(filepath.Join(p.dir.path(queueDir), f))
		if err != nil {
			p.w.warn("read queue entry %s: %v", f, err)
			continue
		}
		files = append(files, f)
		for _, l := range strings.Fields(string(b)) {
			if !slices.Contains(paths, l) {
				paths = append(paths, l)
			}
		}
	}
	if len(files) == 0 {
		return
	}
	if len(paths) == 0 {
		p.done(files)
		return
	}
	paths, err := p.resolve(ctx, paths)
	var res *push.Result
	if err == nil {
		res, err = p.push(ctx, paths)
	}
	if res != nil {
		for _, u := range res.Uploaded {
			_ = p.dir.appendLine(pushedLog, u)
		}
	}
	if err == nil {
		err = res.Err()
	}
	if err == nil {
		p.done(files)
		return
	}
	var dropped []string
	for _, f := range files {
		p.rounds[f]++
		p.next[f] = now.Add(time.Duration(p.rounds[f]) * 2 * time.Second)
		if p.rounds[f] >= maxRounds {
			dropped = append(dropped, f)
		}
	}
	if len(dropped) > 0 {
		p.w.warn("%d built paths not pushed to %s after %d tries: %v", len(paths), p.st.Flake, maxRounds, err)
		p.done(dropped)
	} else {
		fmt.Fprintf(p.env.Stderr, "flakegate pusher: push failed, will retry: %v\n", err)
	}
}

func (p *pusherLoop) done(files []string) {
	for _, f := range files {
		if err := os.Remove(filepath.Join(p.dir.path(queueDir), f)); err != nil {
			p.w.warn("remove queue entry %s: %v", f, err)
		}
		delete(p.rounds, f)
		delete(p.next, f)
	}
}

func (p *pusherLoop) push(ctx context.Context, paths []string) (*push.Result, error) {
	cfg := push.DefaultConfig()
	cfg.Cache, cfg.Flake, cfg.Store, cfg.Paths, cfg.Retries = p.st.Cache, p.st.Flake, p.st.Store, paths, p.st.Retries
	cfg.Compression = nixname.CompressionZstd
	cache, err := login.CacheBase(p.st.Cache)
	if err != nil {
		return nil, err
	}
	netrc := p.dir.path(netrcFile)
	return push.Run(ctx, cfg, push.Env{
		HTTPClient: p.env.HTTPClient,
		Token:      func(context.Context) (string, error) { return login.ReadNetrcToken(netrc, cache.Hostname()) },
		Progress:   push.NewProgress(p.env.Stderr, false, 10*time.Second),
		Log:        slog.New(slog.NewTextHandler(p.env.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
}

// resolve replaces queued derivations (drv:<path>) by their outputs.
func (p *pusherLoop) resolve(ctx context.Context, queued []string) ([]string, error) {
	var paths, drvs []string
	for _, q := range queued {
		if drv, ok := strings.CutPrefix(q, drvPrefix); ok {
			drvs = append(drvs, drv)
		} else {
			paths = append(paths, q)
		}
	}
	if len(drvs) == 0 {
		return paths, nil
	}
	args := []string{"--query", "--outputs"}
	if p.st.Store != "" {
		args = append([]string{"--store", p.st.Store}, args...)
	}
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, "nix-store", append(args, drvs...)...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("look up the outputs of the built derivations: %w: %s", err, strings.TrimSpace(stderr.String()))
	}
	for _, o := range strings.Fields(string(out)) {
		if !slices.Contains(paths, o) {
			paths = append(paths, o)
		}
	}
	return paths, nil
}
