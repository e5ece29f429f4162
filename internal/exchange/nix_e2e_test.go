package exchange_test

import (
	"bufio"
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/flakegate/flakegate/internal/blobserverapp"
	"github.com/flakegate/flakegate/internal/login"
	"github.com/flakegate/flakegate/internal/nixcache"
	"github.com/flakegate/flakegate/internal/nixtest"

	"github.com/flakegate/flakegate/internal/testutil"
)

// blobServer runs the real blob server (blobserverapp.Run) with the
// embedded gate pointed at authz and /_flakegate/ forwarded to it.
type blobServer struct {
	url, internalURL string
	publicKey        string
	dir, secret      string
}

func startBlobServer(t testing.TB, extAuthz, authzHTTP string) *blobServer {
	t.Helper()
	dir := t.TempDir()
	secret, public, err := nixcache.GenerateKey("cache.flakegate.test-1")
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(dir, "key.sec")
	if err := os.WriteFile(keyFile, []byte(secret), 0o600); err != nil {
		t.Fatal(err)
	}
	logs := &testutil.LogBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	cfg := blobserverapp.DefaultConfig()
	cfg.Listen, cfg.InternalListen, cfg.DataDir = "127.0.0.1:0", "127.0.0.1:0", dir
	cfg.SigningKeyFiles, cfg.ExtAuthz, cfg.AuthzHTTP = []string{keyFile}, extAuthz, authzHTTP
	cfg.BehindEnvoy = extAuthz == ""
	cfg.ShutdownTimeout = 5 * time.Second
	go func() {
		done <- blobserverapp.Run(ctx, cfg, slog.New(slog.NewJSONHandler(logs, nil)))
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("blob server did not stop")
		}
		if t.Failed() {
			t.Logf("blob server logs:\n%s", logs.String())
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		sc := bufio.NewScanner(strings.NewReader(logs.String()))
		for sc.Scan() {
			var rec struct{ Msg, Public, Internal string }
			if json.Unmarshal(sc.Bytes(), &rec) == nil && rec.Msg == blobserverapp.Listening {
				return &blobServer{url: "http://" + rec.Public, internalURL: "http://" + rec.Internal, publicKey: public, dir: dir, secret: secret}
			}
		}
		select {
		case err := <-done:
			t.Fatalf("blob server exited: %v\n%s", err, logs.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("blob server not listening:\n%s", logs.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// startGated runs authz and the blob server with its embedded gate pointed
// at it (owners and closures asked from the blob server), as one host runs
// them.
func startGated(t testing.TB) (*stack, *blobServer) {
	t.Helper()
	grpcLn, httpLn := loopbackListeners(t)
	blob := startBlobServer(t, grpcLn.Addr().String(), "http://"+httpLn.Addr().String())
	return startStack(t, stackOptions{grpcLn: grpcLn, httpLn: httpLn, ownersURL: blob.internalURL}), blob
}

// The whole client story with real Nix: a CI job exchanges its OIDC token
// once (flakegate login --ci, through the blob server's gate) and pushes a
// built closure with `nix copy`; a user signs in with the device flow
// (flakegate login) and `nix copy` pulls it through the union view with the
// netrc login wrote, checking the cache's signatures; without a token, or
// once the user's token id is revoked, the pull fails.
func TestNixLoginPushPull(t *testing.T) {
	if testing.Short() {
		t.Skip("real-Nix scenario skipped in -short mode")
	}
	nixtest.Require(t)
	st, blob := startGated(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	const flake = "omnicorp/dev-environments"
	dir := t.TempDir()

	// CI: exchange the job token through the blob server, push with the netrc.
	src := nixtest.NewStore(t)
	top := src.MakeClosure(3, "exchange-e2e-"+time.Now().Format("150405.000000000"))
	ciNetrc := filepath.Join(dir, "ci", "netrc")
	jobToken := st.ghToken(flake, "refs/heads/main")
	err := login.Run(ctx, login.Config{CI: true, Cache: blob.url, Netrc: ciNetrc}, login.Env{
		Getenv: func(k string) string {
			if k == login.DefaultTokenEnv {
				return jobToken
			}
			return ""
		},
	})
	if err != nil {
		t.Fatalf("CI login through the blob server: %v", err)
	}
	if err := src.CopyTo(nixtest.Options{Netrc: ciNetrc}, blob.url+"/"+flake, top); err != nil {
		t.Fatalf("push with the exchanged CI token: %v", err)
	}

	// A user signs in with the device flow and pulls with the netrc written.
	aliceNetrc := filepath.Join(dir, "alice", "netrc")
	var printed strings.Builder
	err = login.Run(ctx, login.Config{
		Cache: blob.url, Issuer: st.idp.Issuer, ClientID: st.idp.ClientID, Netrc: aliceNetrc, PublicKey: blob.publicKey,
	}, login.Env{
		Stdout: &printed,
		Prompt: func(p login.DevicePrompt) error { return st.idp.Visit(ctx, p.VerificationURIComplete) },
	})
	if err != nil {
		t.Fatalf("device login: %v", err)
	}
	if !strings.Contains(printed.String(), "extra-trusted-public-keys = "+blob.publicKey) {
		t.Errorf("printed nix.conf lines:\n%s", printed.String())
	}
	trusted := []string{blob.publicKey}
	dst := nixtest.NewStore(t)
	if err := dst.CopyFrom(nixtest.Options{Netrc: aliceNetrc, TrustedKeys: trusted}, blob.url+"/", top); err != nil {
		t.Fatalf("pull with the login's netrc: %v", err)
	}
	if err := dst.Verify(trusted, top); err != nil {
		t.Fatalf("pulled closure: %v", err)
	}
	if got, want := len(dst.Closure(top)), len(src.Closure(top)); got != want {
		t.Errorf("pulled %d paths, pushed %d", got, want)
	}

	// Without the netrc the same pull is refused (Nix reports a 401 on a
	// narinfo as "no substituter can build it").
	if err := nixtest.NewStore(t).CopyFrom(nixtest.Options{TrustedKeys: trusted}, blob.url+"/", top); err == nil {
		t.Fatal("pull without a token succeeded")
	}

	// Revoke alice's cache token: the next pull fails.
	b, err := os.ReadFile(aliceNetrc)
	if err != nil {
		t.Fatal(err)
	}
	tok, _ := login.NetrcPassword(string(b), "127.0.0.1")
	s, err := st.app.Verifier().Verify(ctx, tok)
	if err != nil {
		t.Fatal(err)
	}
	st.writePolicyFile(t, "denylist.yaml", "token_ids: ["+s.TokenID+"]\n")
	m, p := readFlake(flake)
	st.pollStatus(t, time.Second, 401, m, p, netrcAuth(tok))
	if err := nixtest.NewStore(t).CopyFrom(nixtest.Options{Netrc: aliceNetrc, TrustedKeys: trusted}, blob.url+"/", top); err == nil {
		t.Fatal("pull with a revoked token succeeded")
	}
}
