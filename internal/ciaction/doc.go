// Package ciaction is `flakegate ci`: what the GitHub Action (action.yml)
// and the GitLab CI component run, so that every path a job builds is
// pushed to the job's flake without the workflow naming paths.
//
//	flakegate ci setup    log in with the job's OIDC token, configure Nix
//	                      (substituter, trusted key fetched from the cache,
//	                      netrc, post-build hook), start the pusher
//	flakegate ci hook     Nix's post-build-hook: queue $OUT_PATHS
//	flakegate ci pusher   (background) push queued paths, refresh the token
//	flakegate ci flush    wait for the queue, report what was pushed
//
// The contract:
//
//   - Everything lives in one state directory (default
//     $RUNNER_TEMP/flakegate): state.json, the netrc, nix.conf, the hook
//     script, queue/ (one file per hook run), pushed.log, warnings.log,
//     pusher.log.
//   - Pushing never fails the job: setup, hook, pusher and flush exit 0
//     whatever happens to the cache; every problem becomes a warning
//     (a GitHub ::warning:: annotation, GitLab's log) and a line of the job
//     summary ($GITHUB_STEP_SUMMARY). Only bad usage (a missing --cache)
//     exits non-zero.
//   - The hook only writes a queue file (atomically: temporary name, then
//     rename) and always exits 0: a failing post-build-hook would fail the
//     build. The queue directory is writable by others (the daemon's hook
//     runs as root) but not listable (1733); the pusher takes only regular
//     files owned by root or by its own user, so another local user cannot
//     get paths pushed to the flake.
//   - The cache token is refreshed before it expires: when a third of its
//     lifetime is left, the pusher asks the CI for a fresh ID token
//     (GitHub Actions allows it at any time) and exchanges it again; Nix
//     and the pusher read the netrc at every request. GitLab's ID token is
//     fixed at job start, so there the first cache token is asked for the
//     job's length (--lifetime).
//   - A queued path whose push fails is retried (3 rounds); then it is
//     reported and dropped. Flush stops the pusher after the queue is
//     empty, or drains the queue itself when the pusher is gone, and gives
//     up after --timeout with what is left reported.
package ciaction
