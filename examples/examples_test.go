// Package examples checks the example configurations in this directory:
// they parse, they agree with each other and with envoy/envoy.yaml, and,
// where the tools are installed, Nix and systemd accept them.
package examples

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/flakegate/flakegate/envoy"
	"github.com/flakegate/flakegate/internal/identity"
	"github.com/flakegate/flakegate/internal/route"
	"github.com/flakegate/flakegate/internal/testutil"
)

const (
	cacheURL  = "https://cache.example.com"
	cacheHost = "cache.example.com"
)

func readYAML(t *testing.T, path string, v any) {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(raw, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

type ghWorkflow struct {
	Permissions map[string]string `json:"permissions"`
	Jobs        map[string]struct {
		Steps []struct {
			Name string            `json:"name"`
			Uses string            `json:"uses"`
			Run  string            `json:"run"`
			With map[string]string `json:"with"`
		} `json:"steps"`
	} `json:"jobs"`
}

// pinned is a release tag or a commit: what examples pin instead of a
// moving branch or @latest.
var pinned = regexp.MustCompile(`^(v[0-9]+\.[0-9]+\.[0-9]+|[0-9a-f]{40})$`)

// TestGitHubActionsWorkflow: the workflow uses this repository's action
// (pinned, with inputs action.yml declares) after installing Nix and before
// building; no step names paths to push or runs the client @latest.
func TestGitHubActionsWorkflow(t *testing.T) {
	var wf ghWorkflow
	readYAML(t, "github-actions.yml", &wf)
	if !strings.Contains(testutil.ReadFile(t, "github-actions.yml"), "Token exchange:") {
		t.Error("the action step lost its comment on the token exchange")
	}
	if wf.Permissions["id-token"] != "write" || wf.Permissions["contents"] != "read" {
		t.Errorf("permissions = %v, want id-token: write and contents: read", wf.Permissions)
	}
	var action struct {
		Inputs map[string]struct {
			Required bool `json:"required"`
		} `json:"inputs"`
	}
	readYAML(t, "../action.yml", &action)
	job, ok := wf.Jobs["build"]
	if !ok {
		t.Fatal("no build job")
	}
	var nixAt, actionAt, buildAt = -1, -1, -1
	for i, s := range job.Steps {
		switch {
		case strings.HasPrefix(s.Uses, "cachix/install-nix-action@"):
			nixAt = i
		case strings.HasPrefix(s.Uses, "flakegate/flakegate@"):
			actionAt = i
			if ref := strings.TrimPrefix(s.Uses, "flakegate/flakegate@"); !pinned.MatchString(ref) {
				t.Errorf("the action is used at %q: pin a release tag or a commit", ref)
			}
			for k := range s.With {
				if _, ok := action.Inputs[k]; !ok {
					t.Errorf("input %q is not declared in action.yml", k)
				}
			}
			for k, in := range action.Inputs {
				if _, ok := s.With[k]; in.Required && !ok {
					t.Errorf("required input %q missing", k)
				}
			}
			if s.With["cache"] != cacheURL {
				t.Errorf("cache input %q", s.With["cache"])
			}
		case strings.Contains(s.Run, "nix build"):
			buildAt = i
		}
		if strings.Contains(s.Run, "nix copy") || strings.Contains(s.Run, "@latest") {
			t.Errorf("step %q names paths to push or an unpinned client: %s", s.Name, s.Run)
		}
		if s.Run != "" {
			bashSyntax(t, s.Name, s.Run)
		}
	}
	if nixAt < 0 || actionAt < 0 || buildAt < 0 || !(nixAt < actionAt && actionAt < buildAt) {
		t.Fatalf("steps: install nix %d, flakegate action %d, build %d: want all, in that order", nixAt, actionAt, buildAt)
	}
}

// gitlabJob is a GitLab CI job as the examples and the component write it.
type gitlabJob struct {
	Extends  string `json:"extends"`
	Image    string `json:"image"`
	IDTokens map[string]struct {
		Aud any `json:"aud"`
	} `json:"id_tokens"`
	Variables    map[string]string `json:"variables"`
	BeforeScript []string          `json:"before_script"`
	Script       []string          `json:"script"`
	AfterScript  []string          `json:"after_script"`
}

// TestGitLabCIJob: the job includes the component at a pinned version and
// extends its hidden job; the component (templates/flakegate.yml: a spec
// document, then the jobs) asks for an ID token for the cache, runs
// flakegate ci setup before the script and flush after it.
func TestGitLabCIJob(t *testing.T) {
	raw := testutil.ReadFile(t, "gitlab-ci.yml")
	var ci struct {
		Include []struct {
			Remote string            `json:"remote"`
			Inputs map[string]string `json:"inputs"`
		} `json:"include"`
		Nix gitlabJob `json:"nix"`
	}
	readYAML(t, "gitlab-ci.yml", &ci)
	if !strings.Contains(raw, "Token exchange:") {
		t.Error("no comment where the token exchange goes")
	}
	if len(ci.Include) != 1 {
		t.Fatalf("include = %+v", ci.Include)
	}
	inc := ci.Include[0]
	version := inc.Inputs["version"]
	if !pinned.MatchString(version) || !strings.HasSuffix(inc.Remote, "/flakegate/"+version+"/templates/flakegate.yml") {
		t.Errorf("include %q with version %q: pin the same release of the template and the client", inc.Remote, version)
	}
	if inc.Inputs["cache"] != cacheURL || ci.Nix.Extends != ".flakegate" {
		t.Errorf("inputs %v, extends %q", inc.Inputs, ci.Nix.Extends)
	}
	script := strings.Join(ci.Nix.Script, "\n")
	bashSyntax(t, "script", script)
	if strings.Contains(script, "nix copy") || strings.Contains(raw, "@latest") {
		t.Errorf("the job names paths to push or an unpinned client:\n%s", script)
	}

	docs := strings.SplitN(testutil.ReadFile(t, "../templates/flakegate.yml"), "\n---\n", 2)
	if len(docs) != 2 {
		t.Fatal("templates/flakegate.yml: want a spec document, ---, then the jobs")
	}
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
	for k := range inc.Inputs {
		if _, ok := spec.Spec.Inputs[k]; !ok {
			t.Errorf("input %q is not in the component's spec", k)
		}
	}
	// Interpolate the inputs as GitLab does ($[[ inputs.name ]]).
	body := regexp.MustCompile(`\$\[\[ inputs\.([a-z-]+) \]\]`).ReplaceAllStringFunc(docs[1], func(m string) string {
		name := regexp.MustCompile(`inputs\.([a-z-]+)`).FindStringSubmatch(m)[1]
		if v, ok := inc.Inputs[name]; ok {
			return v
		}
		in, ok := spec.Spec.Inputs[name]
		if !ok || in.Default == nil {
			t.Errorf("input %q used but not declared (or required and not given)", name)
			return ""
		}
		return *in.Default
	})
	var jobs map[string]gitlabJob
	if err := yaml.Unmarshal([]byte(body), &jobs); err != nil {
		t.Fatal(err)
	}
	job, ok := jobs[".flakegate"]
	if !ok {
		t.Fatal("the component has no .flakegate job")
	}
	if aud := fmt.Sprint(job.IDTokens["FLAKEGATE_ID_TOKEN"].Aud); aud != cacheURL {
		t.Errorf("id_tokens FLAKEGATE_ID_TOKEN aud = %q, want %s", aud, cacheURL)
	}
	before, after := strings.Join(job.BeforeScript, "\n"), strings.Join(job.AfterScript, "\n")
	bashSyntax(t, "before_script", before)
	bashSyntax(t, "after_script", after)
	if !strings.Contains(before, "flakegate ci setup") || !strings.Contains(after, "flakegate ci flush") {
		t.Errorf("before_script must run flakegate ci setup and after_script flakegate ci flush:\n%s\n%s", before, after)
	}
	if job.Variables["FLAKEGATE_VERSION"] != version || job.Variables["FLAKEGATE_CACHE"] != cacheURL {
		t.Errorf("variables %v", job.Variables)
	}
}

// TestPushURLsAreFlakeNamespaces: what `nix copy --to CACHE/{org}/{repo}`
// uploads lands in that flake, as the cache's URL parser reads it.
func TestPushURLsAreFlakeNamespaces(t *testing.T) {
	for _, repo := range []string{"omnicorp/dev-environments", "Omnicorp/App"} {
		r, err := route.Parse("PUT", "/"+repo+"/0a9g8mz2ck6lw5yyz3bh3nxa0cacp2v1.narinfo")
		if err != nil {
			t.Errorf("%s: %v", repo, err)
			continue
		}
		if r.Action != route.ActionPush || r.Flake.String() != strings.ToLower(repo) {
			t.Errorf("%s: action %s flake %s", repo, r.Action, r.Flake)
		}
	}
}

func TestUserNixConfAndNetrc(t *testing.T) {
	settings := checkNixConf(t, testutil.ReadFile(t, "nix.conf"))
	if settings["extra-substituters"] != cacheURL {
		t.Errorf("substituter %q, want the union view %s", settings["extra-substituters"], cacheURL)
	}
	if !strings.HasPrefix(settings["extra-trusted-public-keys"], cacheHost+"-1:") {
		t.Errorf("trusted key %q", settings["extra-trusted-public-keys"])
	}
	if settings["netrc-file"] != "/etc/nix/netrc" {
		t.Errorf("netrc-file %q", settings["netrc-file"])
	}

	var fields []string
	for _, line := range strings.Split(testutil.ReadFile(t, "netrc"), "\n") {
		if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, "#") {
			fields = append(fields, strings.Fields(line)...)
		}
	}
	want := []string{"machine", cacheHost, "login", "flakegate", "password", "REPLACE_WITH_YOUR_TOKEN"}
	if strings.Join(fields, " ") != strings.Join(want, " ") {
		t.Errorf("netrc tokens = %v, want %v", fields, want)
	}
}

// checkNixConf parses nix.conf text into settings and, when nix is
// installed, has Nix read it and complain about anything it does not know.
func checkNixConf(t *testing.T, conf string) map[string]string {
	t.Helper()
	settings := map[string]string{}
	for _, line := range strings.Split(conf, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Errorf("nix.conf line %q is not key = value", line)
			continue
		}
		settings[strings.TrimSpace(k)] = strings.TrimSpace(v)
	}
	nix, err := exec.LookPath("nix")
	if err != nil {
		t.Log("nix not found: nix.conf checked by parsing only (install nix-bin for Nix's own check)")
		return settings
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "nix.conf"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, nix, "--extra-experimental-features", "nix-command", "show-config")
	cmd.Env = append(os.Environ(), "NIX_CONF_DIR="+dir, "NIX_USER_CONF_FILES=/dev/null", "HOME="+dir)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("nix show-config: %v\n%s", err, out)
	}
	if strings.Contains(string(out), "warning:") {
		for _, l := range strings.Split(string(out), "\n") {
			if strings.HasPrefix(l, "warning:") {
				t.Errorf("nix: %s", l)
			}
		}
	}
	if s := settings["extra-substituters"]; s != "" && !regexp.MustCompile(`(?m)^substituters = .*`+regexp.QuoteMeta(s)).Match(out) {
		t.Errorf("nix did not take the substituter %s:\n%s", s, out)
	}
	return settings
}

// TestIssuersFile: the CI issuers accept the audience the CI examples ask
// for; a user IdP accepts the client ID of `flakegate login` (README) and
// gives every user an org (org_claim or a fixed org), without which the
// default policy lets users read nothing.
func TestIssuersFile(t *testing.T) {
	cfg, err := identity.ParseIssuers([]byte(testutil.ReadFile(t, "issuers.yaml")))
	if err != nil {
		t.Fatalf("issuers.yaml: %v", err)
	}
	kinds := map[string]bool{}
	for _, iss := range cfg.Issuers {
		kinds[iss.Claims] = true
		want := cacheURL
		if iss.Claims == identity.ClaimsOIDC {
			want = "flakegate-cli"
			if iss.Org == "" && iss.OrgClaim == "" {
				t.Errorf("issuer %s gives its users no org (org_claim or org): under the default policy they read nothing", iss.Name)
			}
			if !strings.Contains(testutil.ReadFile(t, "README.md"), "--client-id "+want) {
				t.Errorf("README.md does not log in with --client-id %s", want)
			}
		}
		if !slices.Contains(iss.Audience, want) {
			t.Errorf("issuer %s does not accept the audience %s its clients ask for", iss.Name, want)
		}
	}
	if !kinds[identity.ClaimsGitHubActions] || !kinds[identity.ClaimsGitLabCI] || !kinds[identity.ClaimsOIDC] {
		t.Errorf("issuers.yaml lacks GitHub Actions, GitLab CI or a user IdP: %v", kinds)
	}
}

type composeFile struct {
	Services map[string]struct {
		Image      string   `json:"image"`
		Build      any      `json:"build"`
		Entrypoint []string `json:"entrypoint"`
		Command    []string `json:"command"`
		Ports      []string `json:"ports"`
		Volumes    []string `json:"volumes"`
	} `json:"services"`
	Volumes map[string]any `json:"volumes"`
}

// flagValue finds "-name=value" (or "-name value") in a command.
func flagValue(cmd []string, name string) string {
	for i, a := range cmd {
		if v, ok := strings.CutPrefix(a, "-"+name+"="); ok {
			return v
		}
		if a == "-"+name && i+1 < len(cmd) {
			return cmd[i+1]
		}
	}
	return ""
}

func port(t *testing.T, addr string) string {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("address %q: %v", addr, err)
	}
	return p
}

// TestComposeMatchesEnvoy: the services listen where envoy.yaml's clusters
// connect, authz finds the blob server's internal listener, the policies
// and issuers are mounted, and only Envoy is published.
func TestComposeMatchesEnvoy(t *testing.T) {
	var c composeFile
	readYAML(t, "compose.yaml", &c)
	authz, blob := c.Services["authz"], c.Services["blobserver"]
	if authz.Build == nil || blob.Build == nil || authz.Image != blob.Image {
		t.Error("authz and blobserver must be built from examples/Dockerfile into one image")
	}
	if len(authz.Ports) > 0 || len(blob.Ports) > 0 {
		t.Error("authz or blobserver publish ports: only Envoy may face clients")
	}
	if len(c.Services["envoy"].Ports) != 1 || !strings.HasSuffix(c.Services["envoy"].Ports[0], ":8080") {
		t.Errorf("envoy ports %v, want the listener port 8080", c.Services["envoy"].Ports)
	}

	clusters, err := envoy.Clusters()
	if err != nil {
		t.Fatal(err)
	}
	listens := map[string]string{ // service:port an Envoy cluster expects → the flag that must listen there
		"authz:" + port(t, flagValue(authz.Command, "listen")):              "authz -listen",
		"authz:" + port(t, flagValue(authz.Command, "http-listen")):         "authz -http-listen",
		"blobserver:" + port(t, flagValue(blob.Command, "listen")):          "blobserver -listen",
		"blobserver:" + port(t, flagValue(blob.Command, "internal-listen")): "blobserver -internal-listen",
	}
	for _, cl := range clusters {
		target := cl.Host + ":" + strconv.Itoa(cl.Port)
		if _, ok := listens[target]; !ok {
			t.Errorf("envoy cluster %s connects to %s, where no compose service listens", cl.Name, target)
		}
	}
	for name, addr := range map[string]string{
		"authz -listen": flagValue(authz.Command, "listen"), "authz -http-listen": flagValue(authz.Command, "http-listen"),
		"blobserver -listen": flagValue(blob.Command, "listen"), "blobserver -internal-listen": flagValue(blob.Command, "internal-listen"),
	} {
		if !strings.HasPrefix(addr, "0.0.0.0:") {
			t.Errorf("%s = %q: inside a container it must bind all interfaces to be reachable", name, addr)
		}
	}
	if got, want := flagValue(authz.Command, "owners-url"), "http://blobserver:"+port(t, flagValue(blob.Command, "internal-listen")); got != want {
		t.Errorf("authz -owners-url = %q, want %q (the blob server's internal listener)", got, want)
	}
	if flagValue(authz.Command, "public-url") != cacheURL {
		t.Errorf("authz -public-url = %q, want %s", flagValue(authz.Command, "public-url"), cacheURL)
	}
	mounts := strings.Join(authz.Volumes, " ")
	for _, want := range []string{"../policies:" + flagValue(authz.Command, "policies"), "./issuers.yaml:" + flagValue(authz.Command, "issuers")} {
		if !strings.Contains(mounts, want) {
			t.Errorf("authz does not mount %s", want)
		}
	}
	if _, err := os.Stat("../policies"); err != nil {
		t.Errorf("compose mounts ../policies: %v", err)
	}
	dataDir := flagValue(blob.Command, "data-dir")
	if !strings.Contains(strings.Join(blob.Volumes, " "), ":"+dataDir) {
		t.Errorf("blobserver data dir %s is not on a volume", dataDir)
	}
}

func TestDockerfileBuildsEveryBinary(t *testing.T) {
	df := testutil.ReadFile(t, "Dockerfile")
	for _, want := range []string{"./cmd/authz", "./cmd/blobserver", "CGO_ENABLED=0", "distroless", "USER 65532"} {
		if !strings.Contains(df, want) {
			t.Errorf("Dockerfile lacks %q", want)
		}
	}
	for _, cmd := range []string{"authz", "blobserver", "flakegate"} {
		if _, err := os.Stat(filepath.Join("..", "cmd", cmd)); err != nil {
			t.Errorf("Dockerfile builds ./cmd/%s: %v", cmd, err)
		}
	}
	var c composeFile
	readYAML(t, "compose.yaml", &c)
	for name, s := range c.Services {
		if len(s.Entrypoint) == 1 && !strings.Contains(df, "/out/"+filepath.Base(s.Entrypoint[0])) {
			t.Errorf("service %s runs %s, which the Dockerfile does not install", name, s.Entrypoint[0])
		}
	}
}

func TestSystemdUnits(t *testing.T) {
	units := map[string]string{
		"systemd/flakegate-authz.service":      "/usr/local/bin/authz",
		"systemd/flakegate-blobserver.service": "/usr/local/bin/blobserver",
		"systemd/flakegate.service":            "/usr/local/bin/blobserver",
	}
	for path, bin := range units {
		text := testutil.ReadFile(t, path)
		for _, want := range []string{
			"DynamicUser=yes", "StateDirectory=", "ProtectSystem=strict", "NoNewPrivileges=yes",
			"EnvironmentFile=/etc/flakegate/", "ProtectHome=yes", "PrivateTmp=yes",
			"SystemCallFilter=@system-service", "ExecStart=" + bin + "\n", "WantedBy=multi-user.target",
		} {
			if !strings.Contains(text, want) {
				t.Errorf("%s lacks %q", path, strings.TrimSpace(want))
			}
		}
		// No capability but the blob server's port 443.
		caps := map[string]string{"/usr/local/bin/authz": "", "/usr/local/bin/blobserver": "CAP_NET_BIND_SERVICE"}[bin]
		for _, key := range []string{"CapabilityBoundingSet=", "AmbientCapabilities="} {
			if !strings.Contains(text, "\n"+key+caps+"\n") {
				t.Errorf("%s: want %s%s", path, key, caps)
			}
		}
		m := regexp.MustCompile(`EnvironmentFile=/etc/flakegate/(\S+)`).FindStringSubmatch(text)
		if m == nil {
			continue
		}
		env := m[1]
		if _, err := os.Stat(filepath.Join("systemd", env)); err != nil {
			t.Errorf("%s reads %s, which examples/systemd does not provide: %v", path, env, err)
		}
		checkEnvFile(t, filepath.Join("systemd", env))
		verifyUnit(t, path, bin)
	}
}

// checkEnvFile: only FLAKEGATE_ variables, each naming a real flag shape.
func checkEnvFile(t *testing.T, path string) {
	t.Helper()
	for _, line := range strings.Split(testutil.ReadFile(t, path), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if !regexp.MustCompile(`^FLAKEGATE_[A-Z_]+=\S+$`).MatchString(line) {
			t.Errorf("%s: %q is not FLAKEGATE_<FLAG>=value", path, line)
		}
	}
}

// verifyUnit runs systemd-analyze verify on a copy of the unit whose binary
// points at an existing executable; any complaint fails the test.
func verifyUnit(t *testing.T, path, bin string) {
	t.Helper()
	sa, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Log("systemd-analyze not found: units checked by content only")
		return
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	unit := filepath.Join(dir, filepath.Base(path))
	text := strings.ReplaceAll(testutil.ReadFile(t, path), bin, self)
	if err := os.WriteFile(unit, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, sa, "verify", unit).CombinedOutput()
	// Only complaints about this unit count: systemd-analyze may also talk
	// about the machine it runs on (no systemd as PID 1 in a container…).
	var problems []string
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if strings.Contains(l, filepath.Base(unit)) {
			problems = append(problems, l)
		}
	}
	if len(problems) > 0 {
		t.Errorf("systemd-analyze verify %s:\n%s", path, strings.Join(problems, "\n"))
	} else if err != nil {
		t.Logf("systemd-analyze verify %s could not run here (%v); nothing reported about the unit:\n%s", path, err, out)
	}
}

// bashSyntax fails the test when script does not parse (bash -n).
func bashSyntax(t *testing.T, name, script string) {
	t.Helper()
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Log("bash not found: shell syntax not checked")
		return
	}
	cmd := exec.Command(bash, "-n")
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("%s: bash -n: %v\n%s", name, err, out)
	}
}

// envFile reads FLAKEGATE_<FLAG>=value lines; commented ones ("#NAME=v",
// an alternative setup) go to alt.
func envFile(t *testing.T, path string) (set, alt map[string]string) {
	t.Helper()
	set, alt = map[string]string{}, map[string]string{}
	for _, line := range strings.Split(testutil.ReadFile(t, path), "\n") {
		into := set
		if l, ok := strings.CutPrefix(line, "#FLAKEGATE_"); ok {
			into, line = alt, "FLAKEGATE_"+l
		}
		if k, v, ok := strings.Cut(line, "="); ok && strings.HasPrefix(k, "FLAKEGATE_") {
			into[k] = v
		}
	}
	return set, alt
}

// TestSystemdMatchesEnvoy: the systemd environment files agree with each
// other (the blob server's gate and proxy reach authz where it listens,
// authz's owners lookups reach the internal listener) and with the ports of
// envoy.yaml's clusters; the single-host setup serves TLS on 443.
func TestSystemdMatchesEnvoy(t *testing.T) {
	authz, _ := envFile(t, "systemd/authz.env")
	blob, blobAlt := envFile(t, "systemd/blobserver.env")
	eq := func(what, got, want string) {
		t.Helper()
		if got != want {
			t.Errorf("%s = %q, want %q", what, got, want)
		}
	}
	eq("blobserver FLAKEGATE_EXT_AUTHZ", blob["FLAKEGATE_EXT_AUTHZ"], authz["FLAKEGATE_LISTEN"])
	eq("blobserver FLAKEGATE_AUTHZ_HTTP", blob["FLAKEGATE_AUTHZ_HTTP"], "http://"+authz["FLAKEGATE_HTTP_LISTEN"])
	eq("authz FLAKEGATE_OWNERS_URL", authz["FLAKEGATE_OWNERS_URL"], "http://"+blob["FLAKEGATE_INTERNAL_LISTEN"])
	single, _ := envFile(t, "systemd/flakegate.env")
	for name, env := range map[string]map[string]string{"blobserver.env": blob, "flakegate.env": single} {
		eq(name+" FLAKEGATE_LISTEN", env["FLAKEGATE_LISTEN"], "0.0.0.0:443")
		if env["FLAKEGATE_TLS_CERT"] != "/etc/flakegate/tls/fullchain.pem" || env["FLAKEGATE_TLS_KEY"] != "/etc/flakegate/tls/privkey.pem" {
			t.Errorf("%s: the public port faces the network without the TLS files examples/README.md installs", name)
		}
	}
	eq("flakegate.env FLAKEGATE_INTERNAL_LISTEN", single["FLAKEGATE_INTERNAL_LISTEN"], blob["FLAKEGATE_INTERNAL_LISTEN"])
	for name, addr := range map[string]string{
		"authz FLAKEGATE_LISTEN": authz["FLAKEGATE_LISTEN"], "authz FLAKEGATE_HTTP_LISTEN": authz["FLAKEGATE_HTTP_LISTEN"],
		"blobserver FLAKEGATE_INTERNAL_LISTEN": blob["FLAKEGATE_INTERNAL_LISTEN"], "blobserver behind Envoy FLAKEGATE_LISTEN": blobAlt["FLAKEGATE_LISTEN"],
	} {
		if !strings.HasPrefix(addr, "127.0.0.1:") {
			t.Errorf("%s = %q: want loopback (only the public port faces the network)", name, addr)
		}
	}

	clusters, err := envoy.Clusters()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{ // cluster → the port systemd's setup listens on for it
		"authz": port(t, authz["FLAKEGATE_LISTEN"]), "authz_http": port(t, authz["FLAKEGATE_HTTP_LISTEN"]),
		"blobserver": port(t, blobAlt["FLAKEGATE_LISTEN"]),
	}
	for _, cl := range clusters {
		if p, ok := want[cl.Name]; !ok {
			t.Errorf("envoy cluster %s: no systemd listener for it", cl.Name)
		} else if strconv.Itoa(cl.Port) != p {
			t.Errorf("envoy cluster %s connects to port %d, systemd's listener is on %s", cl.Name, cl.Port, p)
		}
		if !strings.Contains(testutil.ReadFile(t, "../envoy/envoy.yaml"), fmt.Sprintf("%s:%d", cl.Host, cl.Port)) {
			t.Errorf("envoy.yaml's header does not state the upstream %s:%d", cl.Host, cl.Port)
		}
	}
}

// TestEnvFilesNameFlags runs both binaries with the systemd environment
// files: no variable is reported as naming no flag (the binaries stop at
// once on a bad -log-level, before touching anything). A misspelt one is.
func TestEnvFilesNameFlags(t *testing.T) {
	bin := testutil.BuildCommands(t, "github.com/flakegate/flakegate/cmd/authz", "github.com/flakegate/flakegate/cmd/blobserver")
	for _, c := range []struct{ bin, env string }{{"authz", "systemd/authz.env"}, {"blobserver", "systemd/blobserver.env"}, {"blobserver", "systemd/flakegate.env"}} {
		set, _ := envFile(t, c.env)
		run := func(extra ...string) string {
			cmd := exec.Command(filepath.Join(bin, c.bin), "-log-level=not-a-level")
			cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
			for k, v := range set {
				cmd.Env = append(cmd.Env, k+"="+v)
			}
			cmd.Env = append(cmd.Env, extra...)
			out, err := cmd.CombinedOutput()
			if err == nil || !strings.Contains(string(out), "log-level") {
				t.Fatalf("%s with a bad -log-level: %v\n%s", c.bin, err, out)
			}
			return string(out)
		}
		if out := run(); strings.Contains(out, "names no flag") {
			t.Errorf("%s: %s holds a variable that names no flag:\n%s", c.bin, c.env, out)
		}
		if out := run("FLAKEGATE_LISTNE=127.0.0.1:1"); !strings.Contains(out, `"variable":"FLAKEGATE_LISTNE"`) {
			t.Errorf("%s: a misspelt variable is not reported:\n%s", c.bin, out)
		}
	}
}
