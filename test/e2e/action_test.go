package e2e

import (
	"bufio"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/flakegate/flakegate/internal/identity/identitytest"
	"github.com/flakegate/flakegate/internal/nixtest"
	"github.com/flakegate/flakegate/test/teststack"
)

// actionYAML is the part of action.yml the runner reads.
type actionYAML struct {
	Inputs map[string]struct {
		Required bool   `json:"required"`
		Default  string `json:"default"`
	} `json:"inputs"`
	Runs struct {
		Using string `json:"using"`
		Main  string `json:"main"`
		Post  string `json:"post"`
	} `json:"runs"`
}

// runner plays the GitHub Actions runner for one job using the action
// at the repository root: the job's environment (workflow files, the OIDC
// token service), the action's main step at the start and its post step at
// the end, and NIX_CONFIG as the main step exported it for the steps in
// between.
type runner struct {
	t        *testing.T
	action   actionYAML
	env      []string // the job's environment
	temp     string   // RUNNER_TEMP
	ghEnv    string   // GITHUB_ENV file
	summary  string   // GITHUB_STEP_SUMMARY file
	idTokens atomic.Int64
	with     map[string]string // the workflow's inputs, for both steps
}

// newRunner makes a job of repository omnicorp/app on main whose OIDC
// token service (the ACTIONS_ID_TOKEN_REQUEST_URL/_TOKEN contract) mints
// tokens from the stack's GitHub issuer, for the audience asked.
func newRunner(t *testing.T, s *stack) *runner {
	t.Helper()
	if _, err := exec.LookPath("node"); err != nil {
		t.Skip("node not found: the GitHub Action's steps run with node (install nodejs)")
	}
	b, err := os.ReadFile("../../action.yml")
	if err != nil {
		t.Fatal(err)
	}
	r := &runner{t: t, temp: t.TempDir()}
	if err := yaml.Unmarshal(b, &r.action); err != nil {
		t.Fatalf("action.yml: %v", err)
	}
	if r.action.Runs.Using != "node20" || r.action.Runs.Main == "" || r.action.Runs.Post == "" {
		t.Fatalf("action.yml runs: %+v, want node20 with main and post", r.action.Runs)
	}
	const requestToken = "runtime-token-for-this-job"
	tokenService := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.Header.Get("Authorization") != "bearer "+requestToken {
			http.Error(w, `{"message":"bad runtime token"}`, http.StatusUnauthorized)
			return
		}
		r.idTokens.Add(1)
		c := identitytest.GitHubActionsClaims("omnicorp/app", "refs/heads/main")
		c["aud"] = req.URL.Query().Get("audience")
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"value":"` + s.github.Mint(c) + `"}`))
	}))
	t.Cleanup(tokenService.Close)
	r.ghEnv = filepath.Join(r.temp, "github_env")
	r.summary = filepath.Join(r.temp, "step_summary")
	for _, f := range []string{r.ghEnv, r.summary} {
		if err := os.WriteFile(f, nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	r.env = append(os.Environ(),
		"GITHUB_ACTIONS=true", "GITHUB_REPOSITORY=omnicorp/app", "GITHUB_ACTION_REF=v0.0.0-test",
		"RUNNER_TEMP="+r.temp, "GITHUB_ENV="+r.ghEnv, "GITHUB_STEP_SUMMARY="+r.summary,
		"ACTIONS_ID_TOKEN_REQUEST_URL="+tokenService.URL+"/token?api-version=2.0",
		"ACTIONS_ID_TOKEN_REQUEST_TOKEN="+requestToken,
		"NIX_CONFIG=")
	t.Cleanup(r.stopPusher)
	return r
}

// step runs the action's main or post script with the workflow's inputs
// r.with (action.yml's defaults for the others), as the runner gives both
// steps, and returns its output.
func (r *runner) step(script string) string {
	r.t.Helper()
	env := slices.Clone(r.env)
	for name, in := range r.action.Inputs {
		v, ok := r.with[name]
		if !ok {
			if in.Required {
				r.t.Fatalf("input %s is required", name)
			}
			v = in.Default
		}
		env = append(env, "INPUT_"+strings.ToUpper(name)+"="+v)
	}
	cmd := exec.Command("node", filepath.Join("../..", script))
	cmd.Env = env
	out, err := cmd.CombinedOutput()
	if err != nil {
		r.t.Fatalf("%s failed (a step of the action must not fail the job): %v\n%s", script, err, out)
	}
	return string(out)
}

// nixConfig is NIX_CONFIG as the main step exported it through GITHUB_ENV
// (NAME<<DELIMITER … DELIMITER).
func (r *runner) nixConfig() string {
	r.t.Helper()
	f, err := os.Open(r.ghEnv)
	if err != nil {
		r.t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	var val []string
	delim := ""
	for sc.Scan() {
		line := sc.Text()
		switch {
		case delim == "" && strings.HasPrefix(line, "NIX_CONFIG<<"):
			delim, val = strings.TrimPrefix(line, "NIX_CONFIG<<"), nil
		case delim != "" && line == delim:
			delim = ""
		case delim != "":
			val = append(val, line)
		}
	}
	if len(val) == 0 {
		r.t.Fatalf("the action exported no NIX_CONFIG")
	}
	return strings.Join(val, "\n")
}

// build is a workflow step: nix-build of a closure of n+1 paths with the
// Nix configuration the action set up (its post-build hook included).
func (r *runner) build(st *nixtest.Store, n int, seed string) string {
	r.t.Helper()
	top, err := st.BuildClosure(nixtest.Options{Env: []string{"NIX_CONFIG=" + r.nixConfig()}, Timeout: 5 * time.Minute}, n, seed)
	if err != nil {
		r.t.Fatalf("the build failed: %v", err)
	}
	return top
}

func (r *runner) stateFile(name string) string { return filepath.Join(r.temp, "flakegate", name) }

func (r *runner) lines(name string) []string {
	b, _ := os.ReadFile(r.stateFile(name))
	return strings.Fields(string(b))
}

// stopPusher ends a pusher a failed test left running.
func (r *runner) stopPusher() {
	b, err := os.ReadFile(r.stateFile("state.json"))
	if err != nil {
		return
	}
	var st struct {
		PID int `json:"pusher_pid"`
	}
	if yaml.Unmarshal(b, &st) == nil && st.PID > 0 {
		if p, err := os.FindProcess(st.PID); err == nil {
			_ = p.Kill()
		}
	}
}

// TestActionPushesEveryBuiltPath runs the GitHub Action as a job would: its
// main step, a nix-build of a 20-path closure, and its post step. With no
// `nix copy` anywhere, the 20 paths end up in the repository's flake. The
// cache tokens live 10 s, so the background pusher must refresh its token
// (a new GitHub ID token, exchanged again) to push a second build made
// after the first token expired.
func TestActionPushesEveryBuiltPath(t *testing.T) {
	s := startStackWith(t, singleHost, teststack.Options{TokenLifetime: 10 * time.Second, JobAudience: true})
	r := newRunner(t, s)
	st := nixtest.NewStore(t)

	r.with = map[string]string{"cache": s.url, "nix-conf": "env", "store": st.URL(), "retries": "2"}
	out := r.step(r.action.Runs.Main)
	conf := r.nixConfig()
	for _, want := range []string{"extra-substituters = " + s.url + "/", "extra-trusted-public-keys = " + s.publicKey, "post-build-hook = ", "netrc-file = "} {
		if !strings.Contains(conf, want) {
			t.Fatalf("NIX_CONFIG lacks %q:\n%s\nmain step output:\n%s", want, conf, out)
		}
	}
	firstIDTokens := r.idTokens.Load()

	top := r.build(st, 19, "action")
	closure := st.Closure(top)
	if len(closure) != 20 {
		t.Fatalf("closure of %d paths, want 20", len(closure))
	}

	// Wait past the first cache token's expiry; the pusher refreshes it.
	time.Sleep(11 * time.Second)
	late := r.build(st, 2, "late")

	// The job's netrc, kept for the reader below: the post step removes
	// the job's cache token.
	jobNetrc := filepath.Join(t.TempDir(), "netrc")
	if err := os.WriteFile(jobNetrc, []byte(readFile(r.stateFile("netrc"))), 0o600); err != nil {
		t.Fatal(err)
	}
	post := r.step(r.action.Runs.Post)
	if strings.Contains(post, "::warning") {
		t.Fatalf("post step warned:\n%s\npusher log:\n%s", post, readFile(r.stateFile("pusher.log")))
	}
	for _, pi := range append(closure, st.Closure(late)...) {
		if got := s.owners(t, pi.Path); !slices.Equal(got, []string{"omnicorp/app"}) {
			t.Fatalf("%s owned by %v after the job, want omnicorp/app\npusher log:\n%s", pi.Path, got, readFile(r.stateFile("pusher.log")))
		}
	}
	if refreshed := r.lines("refreshed.log"); len(refreshed) == 0 || r.idTokens.Load() <= firstIDTokens {
		t.Fatalf("the cache token was never refreshed (%d ID tokens asked)", r.idTokens.Load())
	}
	summary := readFile(r.summary)
	if !strings.Contains(summary, "Pushed **23** paths") || strings.Contains(summary, "warning") {
		t.Fatalf("job summary:\n%s", summary)
	}

	if _, err := os.Stat(r.stateFile("netrc")); !os.IsNotExist(err) {
		t.Errorf("the job's cache token is still on disk after the post step (%v)", err)
	}

	// A reader with the job's configuration substitutes from the union view.
	pull := nixtest.NewStore(t)
	if err := pull.CopyFrom(nixtest.Options{Netrc: jobNetrc, TrustedKeys: []string{s.publicKey}}, s.url, top); err != nil {
		t.Fatalf("pull what the action pushed: %v", err)
	}
	if got, want := nixtest.Comparable(pull.Closure(top)), nixtest.Comparable(closure); !slices.Equal(got, want) {
		t.Fatalf("pulled closure differs:\n got %v\nwant %v", got, want)
	}
}

// TestActionCacheOutage: the cache goes down in the middle of the job. The
// build stays green, the post step succeeds, and the job gets a warning
// annotation and a summary saying what was not pushed.
func TestActionCacheOutage(t *testing.T) {
	s := startStackWith(t, singleHost, teststack.Options{JobAudience: true})
	r := newRunner(t, s)
	st := nixtest.NewStore(t)
	r.with = map[string]string{"cache": s.url, "nix-conf": "env", "store": st.URL(), "retries": "1"}
	r.step(r.action.Runs.Main)

	first := r.build(st, 3, "before")
	if !waitFor(60*time.Second, func() bool { return len(r.lines("pushed.log")) == 4 }) {
		q, _ := os.ReadDir(r.stateFile("queue"))
		t.Fatalf("the first build was not pushed: %v\nqueue %v\nstate %s\npusher log:\n%s", r.lines("pushed.log"), q, readFile(r.stateFile("state.json")), readFile(r.stateFile("pusher.log")))
	}
	if err := s.blob.Stop(10 * time.Second); err != nil {
		t.Fatalf("stop the blob server: %v", err)
	}
	second := r.build(st, 3, "during") // must not fail: the hook only queues

	post := r.step(r.action.Runs.Post)
	if !strings.Contains(post, "::warning title=flakegate::") || !strings.Contains(post, "not pushed") {
		t.Fatalf("post step did not warn about the outage:\n%s", post)
	}
	summary := readFile(r.summary)
	if !strings.Contains(summary, "Pushed **4** paths") || !strings.Contains(summary, "not pushed") {
		t.Fatalf("job summary:\n%s", summary)
	}
	if first == "" || second == "" {
		t.Fatal("no build output")
	}
}

func readFile(p string) string {
	b, _ := os.ReadFile(p)
	return string(b)
}
