package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/flakegate/flakegate/internal/identity/identitytest"
	"github.com/flakegate/flakegate/internal/nixtest"
	"github.com/flakegate/flakegate/test/teststack"
)

// componentScripts returns the GitLab component's before_script and
// after_script with inputs interpolated, as GitLab runs them.
func componentScripts(t *testing.T, inputs map[string]string) (before, after []string) {
	t.Helper()
	b, err := os.ReadFile("../../templates/flakegate.yml")
	if err != nil {
		t.Fatal(err)
	}
	docs := strings.SplitN(string(b), "\n---\n", 2)
	var spec struct {
		Spec struct {
			Inputs map[string]struct {
				Default *string `json:"default"`
			} `json:"inputs"`
		} `json:"spec"`
	}
	if err := yaml.Unmarshal([]byte(docs[0]), &spec); err != nil {
		t.Fatal(err)
	}
	body := regexp.MustCompile(`\$\[\[ inputs\.([a-z-]+) \]\]`).ReplaceAllStringFunc(docs[1], func(m string) string {
		name := m[len("$[[ inputs.") : len(m)-len(" ]]")]
		if v, ok := inputs[name]; ok {
			return v
		}
		return *spec.Spec.Inputs[name].Default
	})
	var jobs map[string]struct {
		Variables    map[string]string `json:"variables"`
		BeforeScript []string          `json:"before_script"`
		AfterScript  []string          `json:"after_script"`
	}
	if err := yaml.Unmarshal([]byte(body), &jobs); err != nil {
		t.Fatal(err)
	}
	job := jobs[".flakegate"]
	var vars []string
	for k, v := range job.Variables {
		vars = append(vars, "export "+k+"='"+v+"'")
	}
	return append(vars, job.BeforeScript...), job.AfterScript
}

// TestGitLabComponent runs the GitLab component's scripts as a GitLab job
// would, in one shell (its before_script, then the job's build) and
// after_script in another, with a GitLab-shaped ID token in
// $FLAKEGATE_ID_TOKEN: every built path ends up in the project's flake.
func TestGitLabComponent(t *testing.T) {
	s := startStackWith(t, singleHost, teststack.Options{JobAudience: true})
	st := nixtest.NewStore(t)
	before, after := componentScripts(t, map[string]string{"cache": s.url})
	tmp := t.TempDir()
	env := append(os.Environ(),
		"PATH="+binDir+":"+os.Getenv("PATH"), // the client is installed (the install step is skipped)
		"TMPDIR="+tmp, "CI_PROJECT_PATH=omnicorp/app", "GITLAB_CI=true", "NIX_CONFIG=",
		"FLAKEGATE_ID_TOKEN="+s.gitlab.Mint(gitlabClaims(s.url)),
		"FLAKEGATE_STORE="+st.URL(), // the test's chroot store (read by the flag --store)
	)
	run := func(name string, lines []string) string {
		cmd := exec.Command("bash", "-euo", "pipefail", "-c", strings.Join(lines, "\n"))
		cmd.Env = env
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s failed: %v\n%s", name, err, out)
		}
		return string(out)
	}
	// The job's shell: before_script, then what the script sees.
	confFile := filepath.Join(tmp, "nix-config")
	setupOut := run("before_script", append(before, `printf '%s' "$NIX_CONFIG" > `+confFile))
	conf, _ := os.ReadFile(confFile)
	if !strings.Contains(string(conf), "post-build-hook") || !strings.Contains(string(conf), s.publicKey) {
		t.Fatalf("NIX_CONFIG after before_script:\n%s\n%s", conf, setupOut)
	}
	top, err := st.BuildClosure(nixtest.Options{Env: []string{"NIX_CONFIG=" + string(conf)}, Timeout: 5 * time.Minute}, 5, "gitlab")
	if err != nil {
		t.Fatalf("the build failed: %v", err)
	}
	out := run("after_script", after)
	if strings.Contains(out, "WARNING") {
		t.Fatalf("after_script warned:\n%s", out)
	}
	for _, pi := range st.Closure(top) {
		if got := s.owners(t, pi.Path); !slices.Equal(got, []string{"omnicorp/app"}) {
			t.Fatalf("%s owned by %v, want omnicorp/app\n%s", pi.Path, got, out)
		}
	}
}

// gitlabClaims is a GitLab CI job of omnicorp/app on main with its ID
// token for the cache URL.
func gitlabClaims(aud string) map[string]any {
	c := identitytest.GitLabCIClaims("omnicorp/app", "main")
	c["aud"] = aud
	return c
}
