package devissuer

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/lestrrat-go/jwx/v2/jws"

	"github.com/flakegate/flakegate/internal/identity/claimshape"
)

func TestMintVerifiesWithPublishedJWKS(t *testing.T) {
	dir := t.TempDir()
	iss, err := LoadOrCreate(dir)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := iss.Mint("https://dev.example/github", "http://cache", time.Minute, claimshape.GitHubActions("omnicorp/app", "refs/heads/main", true, "alice"))
	if err != nil {
		t.Fatal(err)
	}
	set, err := jwk.ReadFile(filepath.Join(dir, JWKSFile))
	if err != nil {
		t.Fatal(err)
	}
	payload, err := jws.Verify([]byte(tok), jws.WithKeySet(set, jws.WithRequireKid(true)))
	if err != nil {
		t.Fatalf("token does not verify with the published JWKS: %v", err)
	}
	var claims map[string]any
	if err := json.Unmarshal(payload, &claims); err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]any{"iss": "https://dev.example/github", "aud": "http://cache", "repository": "omnicorp/app", "ref_protected": "true", "repository_owner": "omnicorp"} {
		if claims[k] != want {
			t.Errorf("claim %s = %v, want %v", k, claims[k], want)
		}
	}
	if exp, iat := claims["exp"].(float64), claims["iat"].(float64); exp-iat != 60 {
		t.Errorf("lifetime = %v s, want 60", exp-iat)
	}

	// The key persists: a second load signs with the same kid, and the private key file is 0600.
	again, err := LoadOrCreate(dir)
	if err != nil {
		t.Fatal(err)
	}
	if again.key.KeyID() != iss.key.KeyID() {
		t.Errorf("reloaded key id %q, want %q", again.key.KeyID(), iss.key.KeyID())
	}
	st, err := os.Stat(filepath.Join(dir, KeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %v, want 0600", st.Mode().Perm())
	}
	pub, _ := os.ReadFile(filepath.Join(dir, JWKSFile))
	if bytes.Contains(pub, []byte(`"d"`)) {
		t.Error("JWKS file contains private key material")
	}
}

func TestMainMint(t *testing.T) {
	dir := t.TempDir()
	cases := []struct {
		args    []string
		code    int
		wantErr string
	}{
		{[]string{"mint", "-dir", dir, "-issuer", "i", "-aud", "a", "-user", "alice", "-org", "omnicorp"}, 0, ""},
		{[]string{"mint", "-dir", dir, "-issuer", "i", "-aud", "a", "-gitlab", "g/p", "-ref", "refs/heads/dev", "-protected=false"}, 0, ""},
		{[]string{"mint", "-dir", dir, "-issuer", "i", "-aud", "a"}, 1, "exactly one of"},
		{[]string{"mint", "-dir", dir, "-user", "x"}, 1, "needs -issuer and -aud"},
		{[]string{"bogus"}, 1, "unknown command"},
	}
	for _, c := range cases {
		var out, errOut bytes.Buffer
		code := Main(c.args, &out, &errOut)
		if code != c.code {
			t.Errorf("%v: exit %d, want %d (stderr %q)", c.args, code, c.code, errOut.String())
		}
		if c.wantErr != "" && !strings.Contains(errOut.String(), c.wantErr) {
			t.Errorf("%v: stderr %q, want it to mention %q", c.args, errOut.String(), c.wantErr)
		}
		if c.code == 0 && strings.Count(strings.TrimSpace(out.String()), ".") != 2 {
			t.Errorf("%v: output %q is not a JWT", c.args, out.String())
		}
	}
}

// --help lists mint's flags under its heading (it ended with an empty
// "mint flags:" heading).
func TestHelpListsMintFlags(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := Main([]string{"--help"}, &stdout, &stderr); code != 0 {
		t.Fatalf("--help: exit %d\n%s", code, stderr.String())
	}
	out := stdout.String()
	_, flags, ok := strings.Cut(out, "mint flags:\n")
	if !ok || strings.TrimSpace(flags) == "" {
		t.Fatalf("no mint flags under their heading:\n%s", out)
	}
	for _, f := range []string{"-issuer", "-aud", "-github", "-user", "-netrc", "-machine", "-lifetime"} {
		if !strings.Contains(flags, "  "+f+" ") && !strings.Contains(flags, "  "+f+"\n") {
			t.Errorf("mint flag %s not listed:\n%s", f, flags)
		}
	}
}

// mint -netrc writes the token as the password of the cache's machine
// (the host of -aud) into the netrc, keeping the other entries, mode 0600,
// without printing the token.
func TestMintIntoNetrc(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "netrc")
	if err := os.WriteFile(path, []byte("machine other.example login me password keep\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	mint := func(extra ...string) (string, string, int) {
		var stdout, stderr bytes.Buffer
		args := append([]string{"mint", "-dir", filepath.Join(dir, "issuer"), "-issuer", "https://dev.example/users", "-user", "alice", "-org", "omnicorp"}, extra...)
		code := Main(args, &stdout, &stderr)
		return stdout.String(), stderr.String(), code
	}
	out, errOut, code := mint("-aud", "http://127.0.0.1:8080", "-netrc", path)
	if code != 0 {
		t.Fatalf("mint -netrc: exit %d: %s", code, errOut)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	text := string(b)
	if !strings.Contains(text, "machine other.example login me password keep\n") {
		t.Errorf("the other entry was not kept:\n%s", text)
	}
	var tok string
	for _, line := range strings.Split(text, "\n") {
		if rest, ok := strings.CutPrefix(line, "machine 127.0.0.1 login flakegate password "); ok {
			tok = rest
		}
	}
	if tok == "" {
		t.Fatalf("no entry for machine 127.0.0.1:\n%s", text)
	}
	set, err := jwk.ReadFile(filepath.Join(dir, "issuer", JWKSFile))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := jws.Verify([]byte(tok), jws.WithKeySet(set, jws.WithRequireKid(true))); err != nil {
		t.Errorf("the netrc password is not a token of the issuer: %v", err)
	}
	if strings.Contains(out, tok) || !strings.Contains(out, path) {
		t.Errorf("stdout %q: want where the token went, not the token", out)
	}
	if st, err := os.Stat(path); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("netrc mode %v (%v), want 0600", st.Mode().Perm(), err)
	}
	if _, errOut, code := mint("-aud", "flakegate-cli", "-netrc", path); code == 0 || !strings.Contains(errOut, "set -machine") {
		t.Errorf("an audience that is no URL without -machine: exit %d %q", code, errOut)
	}
	if _, errOut, code := mint("-aud", "flakegate-cli", "-netrc", path, "-machine", "cache.example.com"); code != 0 {
		t.Errorf("-machine: exit %d %q", code, errOut)
	}
}
