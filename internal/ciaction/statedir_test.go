package ciaction

// The state directory and the job's token after the job (review r6,
// 2026-12-05).

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/flakegate/flakegate/internal/netrc"
)

// fakeCache answers the token exchange and the public keys as a flakegate
// cache does (the token is not verified: only the client side is tested).
func fakeCache(t *testing.T, token string) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		switch r.URL.Path {
		case "/_flakegate/token":
			_ = json.NewEncoder(w).Encode(map[string]any{
				"token": token, "expires_at": time.Now().Add(3 * time.Hour).UTC(), "token_id": "tid-1",
			})
		case "/_flakegate/public-keys":
			_ = json.NewEncoder(w).Encode(map[string]any{"public_keys": []string{"cache-1:AAAA"}})
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	return srv
}

func setupIn(t *testing.T, dir, cache string) string {
	t.Helper()
	var stderr strings.Builder
	env := envOf(map[string]string{"CI_PROJECT_PATH": "omnicorp/app", "FLAKEGATE_ID_TOKEN": "idp.job.token"}, &stderr)
	cfg := DefaultSetupConfig()
	cfg.Cache, cfg.StateDir, cfg.NixConf, cfg.Timeout = cache, dir, NixConfNone, 5*time.Second
	cfg.Client = "/bin/true"
	if err := Setup(context.Background(), cfg, env); err != nil {
		t.Fatal(err)
	}
	return stderr.String()
}

// A state directory someone else may write to is refused: the post-build
// hook Nix runs (as root under a daemon), the nix.conf naming it, the
// netrc and state.json (where the job's IdP token is sent) would be theirs
// to replace. The GitLab default is a fixed name in /tmp, which another
// local user could create first. setup used it whatever its owner or mode.
func TestStateDirOfOthersIsRefused(t *testing.T) {
	srv := fakeCache(t, "a.b.c")
	tmp := t.TempDir()
	cases := map[string]func(dir string) error{
		"world-writable": func(dir string) error {
			if err := os.Mkdir(dir, 0o777); err != nil {
				return err
			}
			return os.Chmod(dir, 0o777)
		},
		"a symlink to a directory": func(dir string) error {
			target := dir + "-target"
			if err := os.Mkdir(target, 0o700); err != nil {
				return err
			}
			return os.Symlink(target, dir)
		},
	}
	if os.Getuid() == 0 {
		cases["owned by another user"] = func(dir string) error {
			if err := os.Mkdir(dir, 0o755); err != nil {
				return err
			}
			if err := os.Symlink(filepath.Join(tmp, "passwd"), filepath.Join(dir, netrcFile)); err != nil {
				return err
			}
			return os.Lchown(dir, 65534, 65534)
		}
	}
	if err := os.WriteFile(filepath.Join(tmp, "passwd"), []byte("root:x:0:0:root:/root:/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for name, make := range cases {
		t.Run(name, func(t *testing.T) {
			dir := filepath.Join(tmp, strings.ReplaceAll(name, " ", "-"))
			if err := make(dir); err != nil {
				t.Fatal(err)
			}
			stderr := setupIn(t, dir, srv.URL)
			if !strings.Contains(stderr, "the cache is not used in this job") || !strings.Contains(stderr, "the state directory "+dir) {
				t.Errorf("setup did not refuse the directory: %s", stderr)
			}
			for _, f := range []string{hookFile, nixConfFile, stateFile} {
				if _, err := os.Lstat(filepath.Join(dir, f)); err == nil {
					t.Errorf("%s written into the refused directory", f)
				}
			}
		})
	}
	if b, _ := os.ReadFile(filepath.Join(tmp, "passwd")); strings.Contains(string(b), "machine") {
		t.Errorf("a netrc symlink planted in another user's directory was followed:\n%s", b)
	}

	// A new directory is made 0711 (others reach the nix.conf that
	// /etc/nix/nix.conf includes, but may neither list nor write); one of
	// this user's, not writable by
	// others, is used (the next job on a shell runner).
	dir := filepath.Join(tmp, "fresh", "flakegate-ci")
	if stderr := setupIn(t, dir, srv.URL); strings.Contains(stderr, "not used") {
		t.Fatalf("a fresh state directory: %s", stderr)
	}
	if fi, err := os.Lstat(dir); err != nil || fi.Mode().Perm() != 0o711 {
		t.Errorf("fresh state directory: %v %v, want mode 0711", fi.Mode(), err)
	}
	if stderr := setupIn(t, dir, srv.URL); strings.Contains(stderr, "not used") {
		t.Errorf("the same directory again: %s", stderr)
	}
}

// After `flakegate ci flush` (the end of the job) the job's cache token is
// no longer on disk. A shell executor keeps the state directory between
// jobs; the next one, of any project, found a token that pushes to this
// job's flake for the rest of its life (3 h by default).
func TestFlushRemovesTheJobToken(t *testing.T) {
	const secret = "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJqb2IifQ.c2lnbmF0dXJl"
	srv := fakeCache(t, secret)
	dir := filepath.Join(t.TempDir(), "flakegate-ci")
	if stderr := setupIn(t, dir, srv.URL); strings.Contains(stderr, "not used") {
		t.Fatal(stderr)
	}
	if tok, err := netrc.ReadToken(filepath.Join(dir, netrcFile), "127.0.0.1"); err != nil || tok != secret {
		t.Fatalf("after setup the netrc holds %q (%v), want the token", tok, err)
	}
	var stderr strings.Builder
	env := envOf(map[string]string{"CI_PROJECT_PATH": "omnicorp/app", "FLAKEGATE_ID_TOKEN": "idp.job.token"}, &stderr)
	Flush(context.Background(), Dir(dir), 10*time.Second, env)
	if _, err := os.Stat(filepath.Join(dir, netrcFile)); !os.IsNotExist(err) {
		b, _ := os.ReadFile(filepath.Join(dir, netrcFile))
		t.Errorf("after flush the netrc is still there (%v): %q", err, b)
	}
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			if b, _ := os.ReadFile(p); strings.Contains(string(b), secret) {
				t.Errorf("after flush %s still holds the token", p)
			}
		}
		return nil
	})
}

// flush (and the pusher) read state.json only from a directory of this
// user's that no one else may write to: from another user's, whose
// state.json names the other user's server, the job's IdP token went
// there at the token refresh. A refused directory gets no warning lines
// either (a planted warnings log symlink would be followed).
func TestFlushTrustsOnlyItsOwnStateDir(t *testing.T) {
	var stolen string
	evil := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		stolen = r.Header.Get("Authorization")
		http.Error(w, "no", http.StatusForbidden)
	}))
	defer evil.Close()
	tmp := t.TempDir()
	dir := filepath.Join(tmp, "flakegate-ci")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	st := &State{Cache: evil.URL, Flake: "omnicorp/app", TokenEnv: "FLAKEGATE_ID_TOKEN",
		IssuedAt: time.Now().Add(-2 * time.Hour), ExpiresAt: time.Now().Add(time.Minute)}
	if err := Dir(dir).Save(st); err != nil {
		t.Fatal(err)
	}
	victim := filepath.Join(tmp, "victim")
	if err := os.WriteFile(victim, []byte("untouched\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(victim, filepath.Join(dir, warningsLog)); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o777); err != nil { // as another user's /tmp/flakegate-ci would be
		t.Fatal(err)
	}
	var stderr strings.Builder
	env := envOf(map[string]string{"CI_PROJECT_PATH": "omnicorp/app", "FLAKEGATE_ID_TOKEN": "gitlab.id.token"}, &stderr)
	Flush(context.Background(), Dir(dir), 5*time.Second, env)
	if stolen != "" {
		t.Errorf("flush sent the job's IdP token to the server another user's state.json named: %q", stolen)
	}
	if !strings.Contains(stderr.String(), "may be written by others") {
		t.Errorf("flush did not say why: %s", stderr.String())
	}
	setupIn(t, dir, evil.URL)
	if b, _ := os.ReadFile(victim); string(b) != "untouched\n" {
		t.Errorf("a refused directory's warnings log was written through its symlink: %q", b)
	}
}

// One directory per job by default: GitLab's shell runner keeps /tmp for
// every project's jobs, and a shared directory handed the next job the
// last one's queue, markers and pusher.
func TestDefaultStateDirIsPerJob(t *testing.T) {
	env := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }
	a := DefaultStateDir(env(map[string]string{"CI_JOB_ID": "1001"}))
	b := DefaultStateDir(env(map[string]string{"CI_JOB_ID": "1002"}))
	if a == b || !strings.HasSuffix(a, "flakegate-ci-1001") {
		t.Errorf("jobs 1001 and 1002 share %q / %q", a, b)
	}
	if got := DefaultStateDir(env(map[string]string{"CI_JOB_ID": "../x"})); strings.Contains(got, "..") {
		t.Errorf("a job id that is not a number named %q", got)
	}
	if got := DefaultStateDir(env(map[string]string{"RUNNER_TEMP": "/runner/tmp", "CI_JOB_ID": "7"})); got != "/runner/tmp/flakegate" {
		t.Errorf("GitHub: %q", got)
	}
}

// A state directory used again (an explicit --state-dir) starts a new
// job: the last job's queue is not pushed to this job's flake, its markers
// do not end this job's pusher at once, its logs are not this job's
// summary; and a pusher of the last job still running makes the directory
// unusable rather than push this job's builds with the last job's token.
func TestReusedStateDirStartsANewJob(t *testing.T) {
	srv := fakeCache(t, "a.b.c")
	dir := filepath.Join(t.TempDir(), "flakegate-ci")
	if stderr := setupIn(t, dir, srv.URL); strings.Contains(stderr, "not used") {
		t.Fatal(stderr)
	}
	d := Dir(dir)
	// What the last job left: an entry it did not push, its markers, logs.
	if err := os.WriteFile(filepath.Join(d.path(queueDir), "00000000000000000001-abc.paths"), []byte("/nix/store/0c6kzph7l0dcbfmjap64f0czdafn3b7x-private\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{flushMarker, pusherDone, jobOver, pushedLog, warningsLog} {
		if err := os.WriteFile(d.path(f), []byte("last job\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if stderr := setupIn(t, dir, srv.URL); strings.Contains(stderr, "not used") {
		t.Fatal(stderr)
	}
	if q := (&pusherLoop{dir: d}).queue(); len(q) != 0 {
		t.Errorf("the last job's queue is this job's: %v", q)
	}
	for _, f := range []string{flushMarker, pusherDone, jobOver, pushedLog, warningsLog} {
		if d.exists(f) {
			t.Errorf("the last job's %s is still there", f)
		}
	}

	// A pusher of the last job still running.
	runningPusher(t, d)
	if stderr := setupIn(t, dir, srv.URL); !strings.Contains(stderr, "the pusher of an earlier job") {
		t.Errorf("setup beside a running pusher of an earlier job: %s", stderr)
	}
}

// After flush gave up waiting, a pusher still running stops at its next
// round and never leaves the token on disk again: a refresh racing the
// removal takes its own write back.
func TestPusherAfterTheJobLeavesNoToken(t *testing.T) {
	srv := fakeCache(t, "a.b.c")
	dir := filepath.Join(t.TempDir(), "flakegate-ci")
	if stderr := setupIn(t, dir, srv.URL); strings.Contains(stderr, "not used") {
		t.Fatal(stderr)
	}
	d := Dir(dir)
	st, err := d.Load()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	env := envOf(map[string]string{"CI_PROJECT_PATH": "omnicorp/app", "FLAKEGATE_ID_TOKEN": "idp.job.token"}, &stderr)
	env.defaults()
	// flush's end: the marker, then the token removed.
	if err := os.WriteFile(d.path(jobOver), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	os.Remove(d.path(netrcFile))
	// The pusher's refresh was due: it writes the netrc, then sees the marker.
	st.IssuedAt, st.ExpiresAt = time.Now().Add(-3*time.Hour), time.Now().Add(time.Minute)
	p := &pusherLoop{dir: d, st: st, env: env, w: warner{env: env, dir: d, quiet: true}, rounds: map[string]int{}, next: map[string]time.Time{}}
	p.maybeRefresh(context.Background())
	if _, err := os.Stat(d.path(netrcFile)); !os.IsNotExist(err) {
		t.Errorf("a refresh after the job's end left the netrc (%v)", err)
	}
	done := make(chan error, 1)
	go func() { done <- Pusher(context.Background(), d, env) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the pusher did not stop after the job's end")
	}
}

// In system mode each job's setup includes its state directory's nix.conf
// in /etc/nix/nix.conf. With one directory per job those lines piled up,
// naming files in /tmp that any local user could make again once a job's
// directory was gone, for the daemon to read as root at its next start
// (review of the fixes, 2026-12-05). setup drops the includes of files that
// are gone, flush takes its own back, and every other line stays.
func TestSystemNixConfNamesNoFinishedJob(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("writes the system configuration as root (tee), as CI runs")
	}
	tmp := t.TempDir()
	conf := filepath.Join(tmp, "nix.conf")
	other := filepath.Join(tmp, "other.conf")
	if err := os.WriteFile(other, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	gone := filepath.Join(tmp, "flakegate-ci-1", "nix.conf")
	// A finished job's path made again by another local user (review of
	// the fixes: setup kept an include whose file merely existed).
	remade := filepath.Join(tmp, "flakegate-ci-3", "nix.conf")
	if err := os.Mkdir(filepath.Dir(remade), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(remade, []byte("post-build-hook = /tmp/evil\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(filepath.Dir(remade), 65534, 65534); err != nil {
		t.Fatal(err)
	}
	// Another job of this runner, running: its include stays.
	live := Dir(filepath.Join(tmp, "flakegate-ci-4"))
	if err := ownStateDir(string(live)); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(live.path(nixConfFile), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	start := "experimental-features = nix-command\n" + confMarker + "\n!include " + gone + "\n!include " + other + "\n" +
		confMarker + "\n!include " + remade + "\n" + confMarker + "\n!include " + live.path(nixConfFile) + "\n"
	if err := os.WriteFile(conf, []byte(start), 0o644); err != nil {
		t.Fatal(err)
	}
	det := filepath.Join(tmp, "config.json")
	if err := os.WriteFile(det, []byte(`{"authentication": {"additionalNetrcSources": ["`+filepath.Join(tmp, "flakegate-ci-1", "netrc")+`", "/etc/nix/company-netrc", "/run/secrets/netrc"]}, "other": 9007199254740993}`), 0o644); err != nil {
		t.Fatal(err)
	}
	saved := [2]string{systemNixConf, determinateCfg}
	systemNixConf, determinateCfg = conf, det
	t.Cleanup(func() { systemNixConf, determinateCfg = saved[0], saved[1] })

	dir := Dir(filepath.Join(tmp, "flakegate-ci-2"))
	if err := ownStateDir(string(dir)); err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	env := envOf(nil, &stderr)
	env.defaults()
	w := warner{env: env, dir: dir}
	for range 2 { // twice: one line
		if err := systemConf(context.Background(), dir, env, w); err != nil {
			t.Fatal(err)
		}
	}
	got, _ := os.ReadFile(conf)
	ours := "!include " + dir.path(nixConfFile)
	if strings.Contains(string(got), gone) || strings.Contains(string(got), remade) || strings.Count(string(got), ours) != 1 ||
		!strings.Contains(string(got), "!include "+live.path(nixConfFile)) ||
		!strings.Contains(string(got), "experimental-features = nix-command\n") || !strings.Contains(string(got), "!include "+other) {
		t.Errorf("after setup:\n%s", got)
	}
	d, _ := os.ReadFile(det)
	if strings.Contains(string(d), "flakegate-ci-1") || !strings.Contains(string(d), "company-netrc") || !strings.Contains(string(d), "/run/secrets/netrc") ||
		!strings.Contains(string(d), dir.path(netrcFile)) || !strings.Contains(string(d), "9007199254740993") {
		t.Errorf("Determinate's config after setup (an administrator's netrc not yet there kept, numbers exact):\n%s", d)
	}

	// A stale source beside ours already listed is dropped too.
	d2 := strings.Replace(string(d), `"/etc/nix/company-netrc"`, `"/etc/nix/company-netrc", "`+filepath.Join(tmp, "flakegate-ci-5", "netrc")+`"`, 1)
	if err := os.WriteFile(det, []byte(d2), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := systemConf(context.Background(), dir, env, w); err != nil {
		t.Fatal(err)
	}
	if d, _ := os.ReadFile(det); strings.Contains(string(d), "flakegate-ci-5") {
		t.Errorf("a stale source beside ours was kept:\n%s", d)
	}

	if err := unsystemConf(context.Background(), dir); err != nil {
		t.Fatal(err)
	}
	got, _ = os.ReadFile(conf)
	if strings.Contains(string(got), ours) || !strings.Contains(string(got), "!include "+other) || !strings.Contains(string(got), "experimental-features") {
		t.Errorf("after flush:\n%s", got)
	}
	d, _ = os.ReadFile(det)
	if strings.Contains(string(d), dir.path(netrcFile)) || !strings.Contains(string(d), "company-netrc") || !strings.Contains(string(d), `"other": 9007199254740993`) {
		t.Errorf("Determinate's config after flush:\n%s", d)
	}
}

// A second setup in one job (the Action used twice, setup in before_script
// and in script) leaves the first one in force and says so; it was refused
// as "the pusher of an earlier job", with "the cache is not used in this
// job" (review of the fixes, 2026-12-05). Another job is still refused, and
// a pusher that wrote pusher.done is not running, whatever its pid now
// names.
func TestSecondSetupInOneJob(t *testing.T) {
	srv := fakeCache(t, "a.b.c")
	dir := filepath.Join(t.TempDir(), "flakegate-ci")
	setupJob := func(job string) string {
		var stderr strings.Builder
		env := envOf(map[string]string{"CI_PROJECT_PATH": "omnicorp/app", "FLAKEGATE_ID_TOKEN": "idp.job.token", "CI_JOB_ID": job}, &stderr)
		cfg := DefaultSetupConfig()
		cfg.Cache, cfg.StateDir, cfg.NixConf, cfg.Timeout = srv.URL, dir, NixConfNone, 5*time.Second
		cfg.Client = "/bin/true"
		if err := Setup(context.Background(), cfg, env); err != nil {
			t.Fatal(err)
		}
		return stderr.String()
	}
	if out := setupJob("42"); strings.Contains(out, "not used") {
		t.Fatal(out)
	}
	d := Dir(dir)
	runningPusher(t, d) // the first setup's
	if out := setupJob("42"); strings.Contains(out, "not used") || !strings.Contains(out, "set up the cache already") {
		t.Errorf("a second setup in the same job: %s", out)
	}
	if out := setupJob("43"); !strings.Contains(out, "the pusher of an earlier job") {
		t.Errorf("another job beside a running pusher: %s", out)
	}
	if err := os.WriteFile(d.path(pusherDone), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if out := setupJob("44"); strings.Contains(out, "not used") {
		t.Errorf("after the pusher finished (its pid reused): %s", out)
	}
}

// runningPusher records a running process (a sleep) as the pusher in d's
// state.
func runningPusher(t *testing.T, d Dir) {
	t.Helper()
	sleeper := exec.Command("sleep", "30")
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sleeper.Process.Kill(); sleeper.Wait() })
	st, err := d.Load()
	if err != nil {
		t.Fatal(err)
	}
	st.PusherPID = sleeper.Process.Pid
	if err := d.Save(st); err != nil {
		t.Fatal(err)
	}
}
