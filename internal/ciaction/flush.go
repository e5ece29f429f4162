package ciaction

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"syscall"
	"time"
)

// FlushResult is what flush found.
type FlushResult struct {
	Pushed   []string // every path pushed during the job
	Warnings []string
	Left     int // queue entries not pushed when flush gave up
}

// Flush asks the pusher to finish, waits for the queue to drain (at most
// timeout), then reports: warnings on stderr and a summary in
// $GITHUB_STEP_SUMMARY. When the pusher is gone it drains the queue
// itself. It never fails the job.
func Flush(ctx context.Context, dir Dir, timeout time.Duration, env Env) FlushResult {
	env.defaults()
	var res FlushResult
	st, err := dir.Load()
	if err != nil {
		annotate(env, "flakegate: nothing to flush: "+err.Error())
		return res
	}
	if err := os.WriteFile(dir.path(flushMarker), nil, 0o644); err != nil {
		annotate(env, "flakegate: ask the pusher to finish: "+err.Error())
	}
	parent := ctx
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	fmt.Fprintf(env.Stderr, "flakegate: waiting for the pusher to push the queued paths (at most %s)\n", timeout)
	for !dir.exists(pusherDone) && ctx.Err() == nil {
		if !alive(st.PusherPID) {
			fmt.Fprintln(env.Stderr, "flakegate: the background pusher is not running; pushing the queue now")
			if err := Pusher(ctx, dir, env); err != nil {
				annotate(env, "flakegate: push the queue: "+err.Error())
			}
			break
		}
		select {
		case <-ctx.Done():
		case <-time.After(Poll):
		}
	}
	res.Left = len((&pusherLoop{dir: dir}).queue())
	res.Pushed = dir.lines(pushedLog)
	res.Warnings = dir.lines(warningsLog)
	if res.Left > 0 {
		w := fmt.Sprintf("%d queued builds were not pushed within %s", res.Left, timeout)
		res.Warnings = append(res.Warnings, w)
	}
	// The pusher's warnings were only in its log: show them now. (Setup's
	// were shown when they happened.)
	for _, w := range res.Warnings {
		if msg, ok := strings.CutPrefix(w, "pusher: "); ok {
			annotate(env, "flakegate: "+msg)
		}
	}
	if res.Left > 0 {
		annotate(env, "flakegate: "+res.Warnings[len(res.Warnings)-1])
	}
	fmt.Fprintf(env.Stderr, "flakegate: pushed %d paths to %s, %d warnings\n", len(res.Pushed), st.Flake, len(res.Warnings))
	if path := env.Getenv("GITHUB_STEP_SUMMARY"); path != "" {
		if err := appendFile(path, summary(st, res)); err != nil {
			annotate(env, "flakegate: write the job summary: "+err.Error())
		}
	}
	// The job is over: its cache token goes with it. A shell runner keeps
	// the state directory for the next job, of any project, which would
	// otherwise find a token that pushes to this job's flake for hours
	// (review r6, 2026-12-05). Nix finds no netrc: anonymous, as before
	// setup.
	// The marker first: a pusher that flush gave up waiting for checks it
	// after every token refresh, so whichever of its netrc write and this
	// removal comes last, no token stays.
	if err := os.WriteFile(dir.path(jobOver), nil, 0o644); err != nil {
		annotate(env, "flakegate: tell the pusher the job is over: "+err.Error())
	}
	if err := os.Remove(dir.path(netrcFile)); err != nil && !errors.Is(err, os.ErrNotExist) {
		annotate(env, "flakegate: remove the job's cache token: "+err.Error())
	}
	// And the system Nix configuration stops naming this job's files: a
	// local user could make them again once the directory is gone, and the
	// daemon would read them at its next start. The wait above may have
	// used up ctx: a context of its own.
	cctx, ccancel := context.WithTimeout(context.WithoutCancel(parent), 30*time.Second)
	defer ccancel()
	if err := unsystemConf(cctx, dir); err != nil {
		annotate(env, "flakegate: remove this job's include from the system Nix configuration: "+err.Error())
	}
	return res
}

// summary is the job summary (Markdown).
func summary(st *State, res FlushResult) string {
	var b strings.Builder
	fmt.Fprintf(&b, "### flakegate\n\nPushed **%d** paths built by this job to `%s` at %s.\n", len(res.Pushed), st.Flake, st.Cache)
	if len(res.Warnings) > 0 {
		fmt.Fprintf(&b, "\n:warning: %d warnings (the build itself is not affected):\n\n", len(res.Warnings))
		for _, w := range res.Warnings {
			fmt.Fprintf(&b, "- %s\n", strings.TrimPrefix(w, "pusher: "))
		}
	}
	return b.String()
}

func appendFile(path, s string) error {
	f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	_, err = f.WriteString(s)
	return errors.Join(err, f.Close())
}

// alive reports whether process pid exists (and is not a zombie we could
// see: a zombie pusher has exited).
func alive(pid int) bool {
	if pid <= 0 {
		return false
	}
	if err := syscall.Kill(pid, 0); err != nil {
		return false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err == nil {
		if i := strings.LastIndexByte(string(b), ')'); i > 0 && i+2 < len(b) && b[i+2] == 'Z' {
			return false
		}
	}
	return true
}
