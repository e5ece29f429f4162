package exchange_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/flakegate/flakegate/internal/login"
	"github.com/flakegate/flakegate/internal/nixtest"
)

// answer is what a client sees of an HTTP answer, for byte comparisons:
// status, every header but Date, and the body.
type answer struct {
	status int
	header http.Header
	body   []byte
}

func get(t *testing.T, method, url, authorization string) answer {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if authorization != "" {
		req.Header.Set("Authorization", authorization)
	}
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	h := resp.Header.Clone()
	h.Del("Date")
	return answer{resp.StatusCode, h, body}
}

func sameAnswer(t *testing.T, what string, got, want answer) {
	t.Helper()
	if got.status != want.status || !bytes.Equal(got.body, want.body) || !equalHeaders(got.header, want.header) {
		t.Errorf("%s: %d %v %q\nwant the absent path's %d %v %q", what, got.status, got.header, got.body, want.status, want.header, want.body)
	}
}

func equalHeaders(a, b http.Header) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if strings.Join(v, "\x00") != strings.Join(b[k], "\x00") {
			return false
		}
	}
	return true
}

// A deploy token for the closure of one 20-path root, with real Nix 2.8:
// the CI job that pushes omnicorp/app mints it (flakegate token create
// --ci), and with only its netrc line a machine pulls all 20 paths through
// the union URL; a path of the same flake outside the closure and a path
// of another flake answer, union and per flake, exactly what an absent path
// answers; a push with it is 403 and nix copy --to fails; once its token id
// is revoked it gets 401 and the pull fails.
func TestNixScopedTokenPullsItsClosureOnly(t *testing.T) {
	if testing.Short() {
		t.Skip("real-Nix scenario skipped in -short mode")
	}
	nixtest.Require(t)
	st, blob := startGated(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	const flake, other = "omnicorp/app", "omnicorp/other"
	dir := t.TempDir()
	seed := "scoped-" + time.Now().Format("150405.000000000")

	src := nixtest.NewStore(t)
	root := src.MakeClosure(19, seed)          // 19 paths + the root
	outside := src.MakeClosure(1, seed+"-out") // same flake, not referenced by root
	elsewhere := src.MakeClosure(1, seed+"-other")
	if n := len(src.Closure(root)); n != 20 {
		t.Fatalf("root's closure has %d paths, want 20", n)
	}
	push := func(flake, path string) {
		t.Helper()
		netrc := nixtest.WriteNetrc(t, "127.0.0.1", "flakegate", st.ghToken(flake, "refs/heads/main"))
		if err := src.CopyTo(nixtest.Options{Netrc: netrc}, blob.url+"/"+flake, path); err != nil {
			t.Fatalf("push %s to %s: %v", path, flake, err)
		}
	}
	push(flake, root)
	push(flake, outside)
	push(other, elsewhere)

	// The pushing CI job mints the deploy token; stdout is one netrc line.
	jobToken := st.ghToken(flake, "refs/heads/main")
	var line, progress strings.Builder
	err := login.CreateToken(ctx, login.TokenConfig{
		Login: login.Config{CI: true, Cache: blob.url, Lifetime: 90 * 24 * time.Hour},
		Flake: flake, Closures: []string{root},
	}, login.Env{
		Getenv: func(k string) string {
			if k == login.DefaultTokenEnv {
				return jobToken
			}
			return ""
		},
		Stdout: &line, Stderr: &progress,
	})
	if err != nil {
		t.Fatalf("token create: %v", err)
	}
	if !strings.HasPrefix(line.String(), "machine 127.0.0.1 login flakegate password ") || strings.Count(line.String(), "\n") != 1 {
		t.Fatalf("token create printed %q, want one netrc line", line.String())
	}
	netrc := filepath.Join(dir, "deploy-netrc")
	if err := os.WriteFile(netrc, []byte(line.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	tok := strings.Fields(line.String())[5]
	sub, err := st.app.Verifier().Verify(ctx, tok)
	if err != nil {
		t.Fatal(err)
	}
	if sub.Scope == nil || sub.Scope.Flake.String() != flake || len(sub.Scope.Roots) != 1 || sub.Scope.Roots[0] != root {
		t.Fatalf("token scope = %+v, want %s in %s", sub.Scope, root, flake)
	}
	if left := time.Until(sub.Expiry); left < 89*24*time.Hour {
		t.Errorf("scoped token lives %s, want the asked 90 days (the default scoped cap)", left)
	}

	// The deployed machine pulls the whole closure through the union URL.
	trusted := []string{blob.publicKey}
	dst := nixtest.NewStore(t)
	if err := dst.CopyFrom(nixtest.Options{Netrc: netrc, TrustedKeys: trusted}, blob.url+"/", root); err != nil {
		t.Fatalf("pull the closure with the scoped token: %v", err)
	}
	if err := dst.Verify(trusted, root); err != nil {
		t.Fatal(err)
	}
	if got := len(dst.Closure(root)); got != 20 {
		t.Errorf("pulled %d paths, want 20", got)
	}

	// Outside the closure: the same answer as an absent path, byte for byte.
	auth := netrcAuth(tok)
	absentHash := "0c6kzph7l0dcbfmjap64f0czdafn3b7x"
	absent := get(t, "GET", blob.url+"/"+absentHash+".narinfo", auth)
	if absent.status != http.StatusNotFound {
		t.Fatalf("absent path: %d, want 404", absent.status)
	}
	sameAnswer(t, "same flake, outside the closure (union)", get(t, "GET", blob.url+"/"+nixtest.HashPart(outside)+".narinfo", auth), absent)
	sameAnswer(t, "another flake (union)", get(t, "GET", blob.url+"/"+nixtest.HashPart(elsewhere)+".narinfo", auth), absent)
	absentFlake := get(t, "GET", blob.url+"/"+flake+"/"+absentHash+".narinfo", auth)
	sameAnswer(t, "same flake, outside the closure (flake URL)", get(t, "GET", blob.url+"/"+flake+"/"+nixtest.HashPart(outside)+".narinfo", auth), absentFlake)
	sameAnswer(t, "another flake (its flake URL)", get(t, "GET", blob.url+"/"+other+"/"+nixtest.HashPart(elsewhere)+".narinfo", auth), absentFlake)
	// The reader its minter is (a CI job of omnicorp/app may read
	// omnicorp/other, same org) does not widen it: Nix cannot pull either.
	if err := nixtest.NewStore(t).CopyFrom(nixtest.Options{Netrc: netrc, TrustedKeys: trusted}, blob.url+"/", outside); err == nil {
		t.Error("pulled a path of the same flake outside the closure")
	}
	if err := nixtest.NewStore(t).CopyFrom(nixtest.Options{Netrc: netrc, TrustedKeys: trusted}, blob.url+"/"+other, elsewhere); err == nil {
		t.Error("pulled a path of another flake through its flake URL")
	}
	// While the minter's own CI token reads both (so the 404s are the scope's).
	ciAuth := netrcAuth(st.mustExchange(t, st.ghToken(flake, "refs/heads/main")).Token)
	if a := get(t, "GET", blob.url+"/"+nixtest.HashPart(elsewhere)+".narinfo", ciAuth); a.status != http.StatusOK {
		t.Fatalf("the minter's own token reads the other flake's path: %d, want 200", a.status)
	}

	// Read-only: a push is 403, and nix copy --to fails.
	put, err := http.NewRequest(http.MethodPut, blob.url+"/"+flake+"/"+absentHash+".narinfo", strings.NewReader("x"))
	if err != nil {
		t.Fatal(err)
	}
	put.Header.Set("Authorization", auth)
	resp, err := http.DefaultClient.Do(put)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("PUT with the scoped token: %d, want 403", resp.StatusCode)
	}
	fresh := src.MakeClosure(1, seed+"-push")
	if err := src.CopyTo(nixtest.Options{Netrc: netrc}, blob.url+"/"+flake, fresh); err == nil {
		t.Error("nix copy --to with the scoped token succeeded")
	} else if !strings.Contains(err.Error(), "403") {
		t.Errorf("nix copy --to with the scoped token: %v, want a 403", err)
	}

	// Revoked by its token id: 401, and the pull fails.
	st.writePolicyFile(t, "denylist.yaml", "token_ids: ["+sub.TokenID+"]\n")
	m, p := readFlake(flake)
	st.pollStatus(t, 2*time.Second, 401, m, p, auth)
	if a := get(t, "GET", blob.url+"/"+nixtest.HashPart(root)+".narinfo", auth); a.status != http.StatusUnauthorized {
		t.Errorf("narinfo in the closure with the revoked token: %d, want 401", a.status)
	}
	if err := nixtest.NewStore(t).CopyFrom(nixtest.Options{Netrc: netrc, TrustedKeys: trusted}, blob.url+"/", root); err == nil {
		t.Error("pull with the revoked scoped token succeeded")
	}
}
