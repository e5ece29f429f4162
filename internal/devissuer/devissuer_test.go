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
