package push

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/flakegate/flakegate/internal/nixname"
)

// Config is what to push where.
type Config struct {
	// Cache is the cache's base URL (https://cache.example.com).
	Cache string
	// Flake is the flake to push to ("org/name").
	Flake string
	// Paths are store paths or links to them (./result); their closures
	// are pushed.
	Paths []string
	// Store is Nix's --store: "" for the default store, a directory for a
	// chroot store (its NARs are read from <Store>/nix/store), or any
	// other store URL (NARs through `nix store dump-path`).
	Store string
	// Jobs is how many paths are uploaded at once.
	Jobs int
	// Compression of the NARs: zstd (default) or none.
	Compression nixname.Compression
	// Retries is how many times a transient failure is retried.
	Retries int
	// Timeout bounds one HTTP request without progress; 0: 5 minutes.
	Timeout time.Duration
	// Nix is the nix binary; default "nix".
	Nix string
}

// DefaultConfig is the configuration of a plain `flakegate push`.
func DefaultConfig() Config {
	return Config{Jobs: 8, Compression: nixname.CompressionZstd, Retries: 5, Timeout: 5 * time.Minute, Nix: "nix"}
}

// Validate reports every problem of the config at once.
func (c *Config) Validate() error {
	var errs []error
	if c.Cache == "" {
		errs = append(errs, errors.New("--cache is required (the cache's base URL)"))
	} else if u, err := url.Parse(c.Cache); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || strings.Trim(u.Path, "/") != "" {
		errs = append(errs, fmt.Errorf("cache URL %q: want https://host (the cache's base URL)", c.Cache))
	}
	if _, err := nixname.ParseFlake(c.Flake); err != nil {
		errs = append(errs, fmt.Errorf("--flake: %w", err))
	}
	if len(c.Paths) == 0 {
		errs = append(errs, errors.New("no paths to push (give store paths or ./result links)"))
	}
	if c.Jobs < 1 {
		errs = append(errs, errors.New("--jobs must be at least 1"))
	}
	if c.Compression != nixname.CompressionZstd && c.Compression != nixname.CompressionNone {
		errs = append(errs, fmt.Errorf("--compression %q: want zstd or none", c.Compression))
	}
	if c.Retries < 0 {
		errs = append(errs, errors.New("--retries must not be negative"))
	}
	return errors.Join(errs...)
}

// Env is the outside world of a push.
type Env struct {
	HTTPClient *http.Client
	// Token returns the cache token to send ("" for none); it is called
	// before every request, so it may return a refreshed one.
	Token func(ctx context.Context) (string, error)
	// Progress receives progress; nil: none.
	Progress Progress
	Log      *slog.Logger
}

// Result is what a push did.
type Result struct {
	Total   int   // paths in the closure
	Skipped int   // already in the flake
	Pushed  int   // uploaded now
	Bytes   int64 // compressed bytes uploaded
	// Failed are the paths not pushed, each with why (a path whose
	// reference failed fails too).
	Failed []PathError
	// Uploaded are the paths uploaded now, in upload order of their
	// narinfos' dependencies (references first).
	Uploaded []string
}

// PathError is a path that could not be pushed.
type PathError struct {
	Path string
	Err  error
}

func (e PathError) Error() string { return e.Path + ": " + e.Err.Error() }

// Err summarizes the failures, nil when every path is in the flake.
func (r *Result) Err() error {
	if len(r.Failed) == 0 {
		return nil
	}
	msg := fmt.Sprintf("%d of %d paths not pushed; first: %v", len(r.Failed), r.Total, r.Failed[0])
	return errors.New(msg)
}

// Run pushes the closures of cfg.Paths. The error is for what stops the
// whole push (bad config, Nix failing, the context ending); paths that
// failed individually are in Result.Failed.
func Run(ctx context.Context, cfg Config, env Env) (*Result, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if env.HTTPClient == nil {
		env.HTTPClient = http.DefaultClient
	}
	if env.Token == nil {
		env.Token = func(context.Context) (string, error) { return "", nil }
	}
	if env.Log == nil {
		env.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Nix == "" {
		cfg.Nix = "nix"
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 5 * time.Minute
	}
	infos, err := QueryClosure(ctx, cfg.Nix, cfg.Store, cfg.Paths)
	if err != nil {
		return nil, err
	}
	p := &pusher{cfg: cfg, env: env, base: strings.TrimRight(cfg.Cache, "/") + "/" + cfg.Flake + "/"}
	return p.run(ctx, infos)
}

type pusher struct {
	cfg  Config
	env  Env
	base string // <cache>/<org>/<flake>/

	done, skipped, failed atomic.Int64
	bytes                 atomic.Int64
}

// task is one path of the closure and the signal that it is in the flake.
type task struct {
	info  PathInfo
	ready chan struct{} // closed when the path is in the flake (or failed)
	err   error         // set before ready is closed
	// uploaded: the path was pushed now (not skipped); set before ready.
	uploaded bool
}

func (p *pusher) run(ctx context.Context, infos []PathInfo) (*Result, error) {
	order, err := topoSort(infos)
	if err != nil {
		return nil, err
	}
	tasks := make(map[string]*task, len(order))
	for _, pi := range order {
		tasks[pi.Path] = &task{info: pi, ready: make(chan struct{})}
	}
	total := len(order)
	if p.env.Progress != nil {
		p.env.Progress.Start(total)
	}
	queue := make(chan *task)
	var wg sync.WaitGroup
	for range min(p.cfg.Jobs, max(total, 1)) {
		wg.Go(func() {
			for t := range queue {
				t.err = p.pushOne(ctx, t, tasks)
				close(t.ready)
				p.report(t)
			}
		})
	}
	// Topological order: a path's references are dequeued before it, so a
	// worker waiting for them never waits for a path no worker has taken.
	for _, pi := range order {
		select {
		case queue <- tasks[pi.Path]:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
	}
	close(queue)
	wg.Wait()
	if p.env.Progress != nil {
		p.env.Progress.Finish()
	}
	res := &Result{Total: total, Skipped: int(p.skipped.Load()), Bytes: p.bytes.Load()}
	for _, pi := range order {
		t := tasks[pi.Path]
		select {
		case <-t.ready:
		default:
			t.err = ctx.Err()
		}
		switch {
		case t.err != nil:
			res.Failed = append(res.Failed, PathError{Path: pi.Path, Err: t.err})
		case t.uploaded:
			res.Uploaded = append(res.Uploaded, pi.Path)
		}
	}
	res.Pushed = total - res.Skipped - len(res.Failed)
	if err := ctx.Err(); err != nil {
		return res, fmt.Errorf("push interrupted: %w", err)
	}
	return res, nil
}

func (p *pusher) report(t *task) {
	if t.err != nil {
		p.failed.Add(1)
		p.env.Log.Warn("push failed", "path", t.info.Path, "error", t.err)
	}
	p.done.Add(1)
	if p.env.Progress != nil {
		p.env.Progress.Update(Counts{Done: int(p.done.Load()), Skipped: int(p.skipped.Load()), Failed: int(p.failed.Load()), Bytes: p.bytes.Load()})
	}
}

var errRefFailed = errors.New("a reference could not be pushed")

// pushOne makes t's path present in the flake: skip, or NAR then narinfo.
func (p *pusher) pushOne(ctx context.Context, t *task, tasks map[string]*task) error {
	pi := t.info
	hash := hashPart(pi.Path)
	have, err := p.hasNarInfo(ctx, hash)
	if err != nil {
		return err
	}
	if have {
		p.skipped.Add(1)
		return nil
	}
	nar, err := p.prepare(ctx, pi)
	if err != nil {
		return err
	}
	defer nar.Close()
	if err := p.put(ctx, "nar/"+nar.file, nar.open, nar.size, "application/x-nix-nar"); err != nil {
		return fmt.Errorf("upload NAR: %w", err)
	}
	p.bytes.Add(nar.size)
	for _, ref := range pi.References {
		if ref == pi.Path {
			continue
		}
		dep := tasks[ref]
		if dep == nil {
			continue // not in the closure: nix path-info -r lists every reference
		}
		select {
		case <-dep.ready:
		case <-ctx.Done():
			return ctx.Err()
		}
		if dep.err != nil {
			return fmt.Errorf("%w (%s)", errRefFailed, ref)
		}
	}
	text := nar.narInfo(pi)
	if err := p.put(ctx, hash+".narinfo", bytesOpener(text), int64(len(text)), "text/x-nix-narinfo"); err != nil {
		return fmt.Errorf("upload narinfo: %w", err)
	}
	p.env.Log.Debug("pushed", "path", pi.Path, "nar", nar.file, "bytes", nar.size)
	t.uploaded = true
	return nil
}

func hashPart(storePath string) string {
	base := storePath[strings.LastIndexByte(storePath, '/')+1:]
	if len(base) < nixname.StoreHashLen {
		return base
	}
	return base[:nixname.StoreHashLen]
}

// topoSort orders infos so that every path comes after its references
// (self-references ignored); a cycle is an error (Nix never makes one).
func topoSort(infos []PathInfo) ([]PathInfo, error) {
	byPath := make(map[string]PathInfo, len(infos))
	for _, pi := range infos {
		byPath[pi.Path] = pi
	}
	paths := make([]string, 0, len(infos))
	for p := range byPath {
		paths = append(paths, p)
	}
	slices.Sort(paths)
	const (
		unseen = iota
		visiting
		visited
	)
	state := map[string]int{}
	var out []PathInfo
	var visit func(string) error
	visit = func(p string) error {
		switch state[p] {
		case visiting:
			return fmt.Errorf("reference cycle through %s", p)
		case visited:
			return nil
		}
		state[p] = visiting
		pi, ok := byPath[p]
		if !ok {
			state[p] = visited
			return nil
		}
		for _, r := range pi.References {
			if r != p {
				if err := visit(r); err != nil {
					return err
				}
			}
		}
		state[p] = visited
		out = append(out, pi)
		return nil
	}
	for _, p := range paths {
		if err := visit(p); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// opener reopens a request body for each attempt.
type opener func() (io.ReadCloser, error)

func bytesOpener(b []byte) opener {
	return func() (io.ReadCloser, error) { return io.NopCloser(strings.NewReader(string(b))), nil }
}

func fileOpener(name string) opener {
	return func() (io.ReadCloser, error) { return os.Open(name) }
}
