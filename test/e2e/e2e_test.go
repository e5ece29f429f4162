package e2e

import (
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/flakegate/flakegate/internal/nixtest"
)

// notACache is what Nix says when the cache refuses its nix-cache-info.
const notACache = "does not appear to be a binary cache"

// TestEndToEnd runs the scenarios of the issue against one stack, each as a
// subtest that pushes what it reads (pushing again is a no-op), so any of
// them runs alone with -run. The cast, as the shipped policies
// (policies/flakes.yaml) see it:
//   - omnicorp/super-duper-secure is readable by the users alice and bob only;
//   - every other flake is readable by every identity of its org
//     (omnicorp/app, omnicorp/dev-environments, omnicorp/gl-app, acme/tools);
//   - a flake is pushed by CI jobs of its own repository on protected refs.
//
// Users: alice (omnicorp, trusted), mallory (omnicorp, not trusted), carol
// (acme), eve (initech: reads nothing here).
//
// Every scenario runs in both modes (modes: the single-host process and
// authz + blobserver), which must decide alike.
func TestEndToEnd(t *testing.T) {
	for _, m := range modes {
		t.Run(string(m), func(t *testing.T) { endToEnd(t, startStack(t, m)) })
	}
}

func endToEnd(t *testing.T, s *stack) {
	// Built, input-addressed paths: Nix substitutes them only with a
	// signature it trusts, so a pull proves the cache's signature too.
	app := s.src.MakeClosure(6, "app")        // omnicorp/app, and acme/tools too
	devenv := s.src.MakeClosure(4, "devenv")  // omnicorp/dev-environments
	secure := s.src.MakeClosure(3, "secure")  // omnicorp/super-duper-secure
	gl := s.src.MakeClosure(3, "gitlab")      // omnicorp/gl-app, by GitLab CI
	refused := s.src.MakeClosure(2, "refuse") // every refused push; never accepted

	ciApp := s.ci("omnicorp/app", "refs/heads/main")
	glApp := s.gitlabCI("omnicorp/gl-app", "main")
	alice, mallory := s.user("alice", "omnicorp"), s.user("mallory", "omnicorp")
	carol, eve := s.user("carol", "acme"), s.user("eve", "initech")

	t.Run("push", func(t *testing.T) {
		for _, tc := range []struct {
			name, token, flake, path string
			status                   int    // 0: accepted; else the status of the refusal
			nixSays                  string // how Nix reports the refusal
		}{
			{"CI of omnicorp/app pushes to omnicorp/app", ciApp, "omnicorp/app", app, 0, ""},
			{"GitLab CI pushes to its project", glApp, "omnicorp/gl-app", gl, 0, ""},
			{"CI of omnicorp/app cannot push to omnicorp/other", ciApp, "omnicorp/other", refused, http.StatusForbidden, "HTTP error 403"},
			{"CI on an unprotected ref cannot push", s.ci("omnicorp/app", "refs/heads/feature"), "omnicorp/app", refused, http.StatusForbidden, "HTTP error 403"},
			{"GitLab CI on an unprotected branch cannot push", s.gitlabCI("omnicorp/gl-app", "feature"), "omnicorp/gl-app", refused, http.StatusForbidden, "HTTP error 403"},
			{"GitLab CI cannot push to another project", glApp, "omnicorp/app", refused, http.StatusForbidden, "HTTP error 403"},
			{"a user token cannot push", alice, "omnicorp/app", refused, http.StatusForbidden, "HTTP error 403"},
			{"no token cannot push", "", "omnicorp/app", refused, http.StatusUnauthorized, "HTTP error 401"},
			// nix-cache-info answers 200 whatever the token (issue 13): Nix
			// keeps the cache, and the upload's 401 shows the server's reason.
			{"an expired token cannot push, and Nix says why", s.expired(), "omnicorp/app", refused, http.StatusUnauthorized, "token expired"},
			{"a token signed by an unknown key cannot push, and Nix says why", s.forged(t), "omnicorp/app", refused, http.StatusUnauthorized, "invalid token"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				err := s.push(t, tc.token, tc.flake, tc.path)
				if tc.status == 0 {
					if err != nil {
						t.Fatalf("nix copy refused: %v", err)
					}
					if got := s.owners(t, tc.path); !slices.Contains(got, tc.flake) {
						t.Fatalf("after the push %s is owned by %v, want %s among them", tc.path, got, tc.flake)
					}
					if r := s.do(t, "GET", narinfoPath(tc.flake, tc.path), tc.token, ""); r.status != http.StatusOK || !strings.Contains(r.body, "Sig: "+keyName+":") {
						t.Fatalf("the pusher reads the narinfo back: %d\n%s", r.status, r.body)
					}
					return
				}
				if err == nil || !strings.Contains(err.Error(), tc.nixSays) {
					t.Fatalf("nix copy: %v; want a failure saying %q", err, tc.nixSays)
				}
				if strings.Contains(err.Error(), notACache) {
					t.Errorf("Nix gave up on the whole cache instead of showing the server's reason: %v", err)
				}
				// The same status for a direct upload, a challenge with 401.
				r := s.do(t, "PUT", narinfoPath(tc.flake, tc.path), tc.token, "StorePath: "+tc.path+"\n")
				if r.status != tc.status {
					t.Errorf("PUT narinfo: %d %q, want %d", r.status, r.body, tc.status)
				}
				if (r.status == http.StatusUnauthorized) != (r.challenge != "") {
					t.Errorf("PUT narinfo: %d with WWW-Authenticate %q", r.status, r.challenge)
				}
				// Nothing of the refused closure was recorded.
				for _, pi := range s.src.Closure(tc.path) {
					if got := s.owners(t, pi.Path); len(got) != 0 {
						t.Errorf("refused push left %s owned by %v", pi.Path, got)
					}
				}
			})
		}
	})

	t.Run("pull", func(t *testing.T) {
		// What the pulls read (no-ops when "push" ran before).
		s.mustPush(t, ciApp, "omnicorp/app", app)
		s.mustPush(t, s.ci("acme/tools", "refs/heads/main"), "acme/tools", app)
		s.mustPush(t, s.ci("omnicorp/dev-environments", "refs/heads/main"), "omnicorp/dev-environments", devenv)
		s.mustPush(t, s.ci("omnicorp/super-duper-secure", "refs/heads/main"), "omnicorp/super-duper-secure", secure)
		s.mustPush(t, glApp, "omnicorp/gl-app", gl)
		// The same content pushed by two flakes: stored once, owned by both.
		if got, want := s.owners(t, app), []string{"acme/tools", "omnicorp/app"}; !slices.Equal(got, want) {
			t.Fatalf("owners of the shared path: %v, want %v", got, want)
		}
		union := s.url
		flakeURL := func(flake string) string { return s.url + "/" + flake }
		// A 401 (no token, an expired one): Nix 2.8 takes it for a miss,
		// Nix 2.35 stops on it with the status.
		on401 := ""
		if !nixtest.UnauthorizedIsMiss(t) {
			on401 = "HTTP error 401"
		}
		for _, tc := range []struct {
			name, token, from, path string
			ok                      bool
			nixSays                 string // for a refusal: "" is "no substituter has the path"
		}{
			{"an omnicorp user pulls dev-environments through its flake URL", mallory, flakeURL("omnicorp/dev-environments"), devenv, true, ""},
			{"an omnicorp user pulls dev-environments through the union URL", mallory, union, devenv, true, ""},
			{"a user of another org cannot pull dev-environments", eve, union, devenv, false, ""},
			{"no token cannot pull through the union URL", "", union, devenv, false, on401},
			{"no token cannot pull through a flake URL", "", flakeURL("omnicorp/dev-environments"), devenv, false, on401},
			{"an expired token cannot pull", s.expired(), flakeURL("omnicorp/app"), app, false, on401},
			{"an untrusted user cannot pull super-duper-secure through its flake URL", mallory, flakeURL("omnicorp/super-duper-secure"), secure, false, ""},
			{"an untrusted user cannot pull super-duper-secure through the union URL", mallory, union, secure, false, ""},
			{"a trusted user pulls super-duper-secure through its flake URL", alice, flakeURL("omnicorp/super-duper-secure"), secure, true, ""},
			{"a trusted user pulls super-duper-secure through the union URL", alice, union, secure, true, ""},
			{"a path owned by two flakes: a reader of acme/tools only pulls it through the union URL", carol, union, app, true, ""},
			{"a path owned by two flakes: a reader of omnicorp/app only pulls it through the union URL", mallory, union, app, true, ""},
			{"a path owned by two flakes: a reader of neither cannot pull it", eve, union, app, false, ""},
			{"a path owned by two flakes: the acme reader cannot use omnicorp/app's URL", carol, flakeURL("omnicorp/app"), app, false, ""},
			{"a path owned by two flakes: the omnicorp reader cannot use acme/tools' URL", mallory, flakeURL("acme/tools"), app, false, ""},
			{"GitLab CI pulls its project's flake", glApp, flakeURL("omnicorp/gl-app"), gl, true, ""},
			{"a flake URL serves only what that flake pushed", alice, flakeURL("omnicorp/dev-environments"), app, false, ""},
		} {
			t.Run(tc.name, func(t *testing.T) {
				err := s.pull(t, tc.token, tc.from, tc.path)
				switch {
				case tc.ok && err != nil:
					t.Fatalf("pull refused: %v", err)
				case !tc.ok && tc.nixSays == "" && !unavailable(err, tc.path):
					t.Fatalf("pull: %v; want Nix to report the path unavailable", err)
				case !tc.ok && tc.nixSays != "" && (err == nil || !strings.Contains(err.Error(), tc.nixSays)):
					t.Fatalf("pull: %v; want a failure saying %q", err, tc.nixSays)
				}
			})
		}
	})

	// "A denied read answers exactly like an absent path" — against the blob
	// server's own 404, every header, GET and HEAD, narinfo and NAR, flake
	// URL and union — is in TestIsolationBetweenFlakes.

	t.Run("an expired token in the netrc: Nix shows the reason, and after flakegate login --ci the same command pushes", func(t *testing.T) {
		path := s.src.MakeClosure(2, "relogin")
		host, _, _ := strings.Cut(s.host, ":")
		netrc := nixtest.WriteNetrc(t, host, "flakegate", s.expired())
		opts := nixtest.Options{TrustedKeys: []string{s.publicKey}, Netrc: netrc}
		err := s.src.CopyTo(opts, s.url+"/omnicorp/app?compression=zstd", path)
		if err == nil || !strings.Contains(err.Error(), "token expired") || strings.Contains(err.Error(), notACache) {
			t.Fatalf("nix copy with an expired token: %v; want the server's reason (token expired)", err)
		}
		// The fix the 401's body names: `flakegate login --ci` (the real
		// client; the job's fresh ID token in $FLAKEGATE_ID_TOKEN, as on
		// GitLab) exchanges it and writes the cache token over the expired
		// entry of the same netrc.
		login := exec.Command(filepath.Join(binDir, "flakegate"), "login", "--ci", "--cache", s.url, "--netrc", netrc)
		login.Env = append(os.Environ(), "FLAKEGATE_ID_TOKEN="+s.ci("omnicorp/app", "refs/heads/main"))
		if out, err := login.CombinedOutput(); err != nil {
			t.Fatalf("flakegate login --ci: %v\n%s", err, out)
		}
		if b, _ := os.ReadFile(netrc); strings.Count(string(b), "machine "+host) != 1 {
			t.Fatalf("the netrc after login has %d entries for %s, want the one replaced:\n%s", strings.Count(string(b), "machine "+host), host, b)
		}
		if err := s.src.CopyTo(opts, s.url+"/omnicorp/app?compression=zstd", path); err != nil {
			t.Fatalf("nix copy after a fresh token: %v", err)
		}
	})

	t.Run("status codes", func(t *testing.T) {
		s.mustPush(t, ciApp, "omnicorp/app", app)
		for _, tc := range []struct {
			name, method, path, token string
			status                    int
		}{
			{"no token on a flake narinfo is 401", "GET", narinfoPath("omnicorp/app", app), "", http.StatusUnauthorized},
			{"no token on the union view is 401", "GET", narinfoPath("", app), "", http.StatusUnauthorized},
			{"no token on a NAR is 401", "HEAD", "/nar/" + strings.Repeat("0", 52) + ".nar.zst", "", http.StatusUnauthorized},
			{"an expired token is 401", "GET", narinfoPath("omnicorp/app", app), s.expired(), http.StatusUnauthorized},
			{"an expired token is 401 on a narinfo", "GET", narinfoPath("omnicorp/app", app), s.expired(), http.StatusUnauthorized},
			{"nix-cache-info is 200 whatever the token: expired", "GET", "/omnicorp/app/nix-cache-info", s.expired(), http.StatusOK},
			{"nix-cache-info is 200 whatever the token: garbage", "GET", "/nix-cache-info", "not-a-jwt", http.StatusOK},
			{"nix-cache-info is 200 whatever the token: forged", "GET", "/omnicorp/app/nix-cache-info", s.forged(t), http.StatusOK},
			{"a forged token is 401", "GET", narinfoPath("", app), s.forged(t), http.StatusUnauthorized},
			{"a garbage token is 401", "GET", narinfoPath("", app), "not-a-jwt", http.StatusUnauthorized},
			{"nix-cache-info needs no token", "GET", "/nix-cache-info", "", http.StatusOK},
			{"a flake's nix-cache-info needs no token", "GET", "/omnicorp/app/nix-cache-info", "", http.StatusOK},
			{"a reader gets the narinfo", "GET", narinfoPath("omnicorp/app", app), mallory, http.StatusOK},
			{"a reader of another org gets 404", "GET", narinfoPath("omnicorp/app", app), eve, http.StatusNotFound},
			{"a user upload is 403", "PUT", narinfoPath("omnicorp/app", app), alice, http.StatusForbidden},
			{"an upload to another flake is 403", "PUT", narinfoPath("omnicorp/other", app), ciApp, http.StatusForbidden},
		} {
			t.Run(tc.name, func(t *testing.T) {
				r := s.do(t, tc.method, tc.path, tc.token, "")
				if r.status != tc.status {
					t.Fatalf("%s %s: %d %q, want %d", tc.method, tc.path, r.status, r.body, tc.status)
				}
				if (r.status == http.StatusUnauthorized) != (r.challenge != "") {
					t.Errorf("status %d with WWW-Authenticate %q: a challenge comes with 401 only", r.status, r.challenge)
				}
			})
		}
	})

	t.Run("editing a policy file changes the next decision without a restart", func(t *testing.T) {
		s.mustPush(t, s.ci("omnicorp/super-duper-secure", "refs/heads/main"), "omnicorp/super-duper-secure", secure)
		authzPid, blobPid := s.authz.Pid(), s.blob.Pid()
		flakes := filepath.Join(s.policyDir, "flakes.yaml")
		b, err := os.ReadFile(flakes)
		if err != nil {
			t.Fatal(err)
		}
		original := string(b)
		const line = "users: [alice, bob]"
		if !strings.Contains(original, line) {
			t.Fatalf("policies/flakes.yaml no longer has the line this test edits: %q", line)
		}
		t.Cleanup(func() { writeFile(t, flakes, original) })
		readStatus := func() int {
			return s.do(t, "GET", narinfoPath("omnicorp/super-duper-secure", secure), mallory, "").status
		}
		if got := readStatus(); got != http.StatusNotFound {
			t.Fatalf("before the edit mallory reads super-duper-secure: %d, want 404", got)
		}

		// Grant: mallory joins the trusted users.
		writeFile(t, flakes, strings.Replace(original, line, "users: [alice, bob, mallory]", 1))
		if !waitFor(10*time.Second, func() bool { return readStatus() == http.StatusOK }) {
			t.Fatalf("10 s after granting, mallory still gets %d", readStatus())
		}
		if err := s.pull(t, mallory, s.url, secure); err != nil {
			t.Fatalf("after granting, Nix cannot pull as mallory: %v", err)
		}

		// A broken edit (a misspelt key) is refused; the last good policy keeps serving.
		failures := strings.Count(s.authz.Log.String(), "policy reload failed")
		writeFile(t, flakes, strings.Replace(original, line, "users: [alice, bob, mallory]\n  raed: {users: [eve]}", 1))
		if !waitFor(10*time.Second, func() bool { return strings.Count(s.authz.Log.String(), "policy reload failed") > failures }) {
			t.Fatal("authz did not report the broken policy edit")
		}
		if got := readStatus(); got != http.StatusOK {
			t.Fatalf("after a broken edit mallory gets %d: the last good policy must keep serving", got)
		}

		// Revoke: back to the shipped file.
		writeFile(t, flakes, original)
		if !waitFor(10*time.Second, func() bool { return readStatus() == http.StatusNotFound }) {
			t.Fatalf("10 s after revoking, mallory still gets %d", readStatus())
		}
		if err := s.pull(t, mallory, s.url, secure); !unavailable(err, secure) {
			t.Fatalf("after revoking, Nix as mallory: %v; want the path unavailable", err)
		}

		if !s.authz.Running() || !s.blob.Running() || s.authz.Pid() != authzPid || s.blob.Pid() != blobPid {
			t.Error("a process was restarted or died during the policy edits")
		}
	})

	t.Run("a token exchanged at /_flakegate/token pushes until its id is revoked", func(t *testing.T) {
		ex := s.do(t, "POST", "/_flakegate/token", s.ci("omnicorp/app", "refs/heads/main"), "")
		if ex.status != http.StatusOK {
			t.Fatalf("token exchange: %d %q", ex.status, ex.body)
		}
		var minted struct {
			Token   string `json:"token"`
			TokenID string `json:"token_id"`
		}
		if err := json.Unmarshal([]byte(ex.body), &minted); err != nil || minted.Token == "" || minted.TokenID == "" {
			t.Fatalf("token exchange answer %q: %v", ex.body, err)
		}
		exchanged := s.src.MakeClosure(2, "exchanged")
		if err := s.push(t, minted.Token, "omnicorp/app", exchanged); err != nil {
			t.Fatalf("nix copy with the exchanged cache token: %v", err)
		}
		if err := s.pull(t, alice, s.url, exchanged); err != nil {
			t.Fatalf("alice pulls what the exchanged token pushed: %v", err)
		}

		denylist := filepath.Join(s.policyDir, "denylist.yaml")
		writeFile(t, denylist, "token_ids: ["+minted.TokenID+"]\n")
		t.Cleanup(func() { writeFile(t, denylist, "token_ids: []\n") })
		revoked := func() bool {
			r := s.do(t, "GET", narinfoPath("omnicorp/app", exchanged), minted.Token, "")
			return r.status == http.StatusUnauthorized && strings.Contains(r.body, "revoked")
		}
		if !waitFor(10*time.Second, revoked) {
			r := s.do(t, "GET", narinfoPath("omnicorp/app", exchanged), minted.Token, "")
			t.Fatalf("10 s after revoking its id the cache token gets %d %q, want 401 saying revoked", r.status, r.body)
		}
		if r := s.do(t, "POST", "/_flakegate/token", minted.Token, ""); r.status != http.StatusUnauthorized {
			t.Errorf("a revoked cache token exchanged again: %d %q, want 401", r.status, r.body)
		}
	})

	t.Run("metrics and the decision log cover the gate, authz and the blob server", func(t *testing.T) {
		s.do(t, "GET", narinfoPath("omnicorp/app", app), mallory, "")
		r := request(t, "GET", s.internalURL+"/metrics", "", "")
		if s.mode == twoProcess {
			// authz's metrics are on its own listener; the blob server has the gate's.
			r.body += request(t, "GET", strings.TrimSuffix(s.authzHTTP, "/")+"/metrics", "", "").body
		}
		for _, metric := range []string{"flakegate_authz_decisions_total", "flakegate_gate_checks_total", "flakegate_blobserver_requests_total", "go_goroutines"} {
			if !strings.Contains(r.body, metric) {
				t.Errorf("%s missing from the metrics (%s)", metric, s.mode)
			}
		}
		if !strings.Contains(s.authz.Log.String(), `"path":"/omnicorp/app/`+nixtest.HashPart(app)+`.narinfo"`) {
			t.Error("no decision log line for the narinfo read")
		}
	})

	if s.mode == singleHost {
		t.Run("one process: authz's health is under /authz/", func(t *testing.T) {
			if r := request(t, "GET", s.internalURL+"/authz/healthz", "", ""); r.status != http.StatusOK || !strings.Contains(r.body, `"policy_revision"`) {
				t.Errorf("/authz/healthz: %d %q", r.status, r.body)
			}
		})
		return
	}

	// Last: it stops authz.
	t.Run("authz down: the gate fails closed with 503", func(t *testing.T) {
		s.mustPush(t, ciApp, "omnicorp/app", app)
		if err := s.authz.Stop(10 * time.Second); err != nil {
			t.Fatalf("authz did not stop cleanly on SIGTERM: %v", err)
		}
		for _, tc := range []struct{ method, path, token string }{
			{"GET", narinfoPath("omnicorp/app", app), mallory},
			{"GET", narinfoPath("", app), mallory},
			{"PUT", narinfoPath("omnicorp/app", app), ciApp},
		} {
			if r := s.do(t, tc.method, tc.path, tc.token, ""); r.status != http.StatusServiceUnavailable || strings.Contains(r.body, "goroutine") {
				t.Errorf("%s %s with authz down: %d %q, want 503 with a plain message", tc.method, tc.path, r.status, r.body)
			}
		}
	})
}
