package blobserverapp

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/flakegate/flakegate/internal/nixtest"
	"github.com/flakegate/flakegate/internal/serve"
	"github.com/flakegate/flakegate/internal/testutil"
)

// Real Nix pushes a closure of 25 paths into a flake with each compression
// and pulls it into a fresh store trusting only the server's key.
func TestNixPushPull(t *testing.T) {
	nixtest.Require(t)
	if testing.Short() {
		t.Skip("real-Nix push/pull: skipped in -short")
	}
	secret, public := nixtest.GenerateKey(t, "flakegate-test-1")
	s := start(t, config(func(c *Config) { c.DataDir, c.SigningKeyFiles = t.TempDir(), []string{secret} }))
	for _, comp := range []string{"none", "xz", "zstd"} {
		t.Run(comp, func(t *testing.T) {
			src := nixtest.NewStore(t)
			top := src.MakeClosure(24, "pushpull-"+comp)
			want := src.Closure(top)
			if len(want) < 20 {
				t.Fatalf("closure of %d paths, want ≥ 20", len(want))
			}
			flakeURL := s.URL + "/omnicorp/" + comp
			if err := src.CopyTo(nixtest.Options{}, flakeURL+"?compression="+comp, top); err != nil {
				t.Fatal(err)
			}
			ext := map[string]string{"none": ".nar\n", "xz": ".nar.xz\n", "zstd": ".nar.zst\n"}[comp]
			if st, body := get(t, flakeURL+"/"+nixtest.HashPart(top)+".narinfo"); st != 200 || !strings.Contains(body, ext) || !strings.Contains(body, "Compression: "+comp+"\n") {
				t.Fatalf("narinfo of the top path: %d\n%s", st, body)
			}

			for _, from := range []string{flakeURL, s.URL} { // namespace and union view
				dst := nixtest.NewStore(t)
				if err := dst.CopyFrom(nixtest.Options{TrustedKeys: []string{public}}, from, top); err != nil {
					t.Fatalf("pull from %s: %v", from, err)
				}
				got := dst.Closure(top)
				if !slices.Equal(nixtest.Comparable(got), nixtest.Comparable(want)) {
					t.Fatalf("pulled closure differs:\n got %v\nwant %v", nixtest.Comparable(got), nixtest.Comparable(want))
				}
				for _, pi := range got {
					if !slices.ContainsFunc(pi.Signatures, func(s string) bool { return strings.HasPrefix(s, "flakegate-test-1:") }) {
						t.Fatalf("%s has no server signature: %v", pi.Path, pi.Signatures)
					}
				}
				if err := dst.Verify([]string{public}, top); err != nil {
					t.Fatalf("nix store verify: %v", err)
				}
			}

			// Trusting another key, Nix refuses the paths: signatures are checked.
			_, otherPublic := nixtest.GenerateKey(t, "other-1")
			dst := nixtest.NewStore(t)
			if err := dst.CopyFrom(nixtest.Options{TrustedKeys: []string{otherPublic}}, flakeURL, top); err == nil || !strings.Contains(err.Error(), "signature") {
				t.Fatalf("pull trusting a foreign key: %v", err)
			}
			// Another flake's namespace does not have the paths.
			dst2 := nixtest.NewStore(t)
			if err := dst2.CopyFrom(nixtest.Options{TrustedKeys: []string{public}}, s.URL+"/omnicorp/other", top); err == nil {
				t.Fatal("pulled from a flake that never pushed the paths")
			}
		})
	}
}

// 20 real `nix copy` processes push overlapping closures into 2 flakes at
// once; every path lands, each NAR is stored once, ownership is exact, and
// a restarted server serves all of it.
func TestNixConcurrentPushers(t *testing.T) {
	nixtest.Require(t)
	if testing.Short() {
		t.Skip("20 concurrent real-Nix pushers: skipped in -short")
	}
	secret, public := nixtest.GenerateKey(t, "flakegate-test-1")
	dataDir := t.TempDir()
	s := start(t, config(func(c *Config) { c.DataDir, c.SigningKeyFiles = dataDir, []string{secret} }))

	flakes := []string{"omnicorp/a", "omnicorp/b"}
	// 20 pushers, shared closures of 6 sizes.
	pushers := nixtest.MakePushers(t, 20, flakes, 6, "")
	for _, err := range pushers.Push(func(p nixtest.Pusher) error {
		return p.Store.CopyTo(nixtest.Options{}, s.URL+"/"+p.Flake+"?compression=zstd", p.Shared, p.Own)
	}) {
		t.Error(err)
	}
	if t.Failed() {
		t.FailNow()
	}

	// What each flake must own, from the pushers' own stores.
	owned := pushers.Owners() // store path → flakes
	check := func(s *server) {
		t.Helper()
		for path, fl := range owned {
			hash := nixtest.HashPart(path)
			want, err := json.Marshal(map[string][]string{"flakes": fl})
			if err != nil {
				t.Fatal(err)
			}
			if st, body := get(t, s.InternalURL+"/owners/narinfo/"+hash); st != 200 || body != string(want)+"\n" {
				t.Fatalf("owners of %s: %d %s, want %s", path, st, body, want)
			}
		}
		blobs, err := os.ReadDir(filepath.Join(dataDir, "blobs", "nar"))
		if err != nil {
			t.Fatal(err)
		}
		if len(blobs) != len(owned) {
			t.Fatalf("%d NAR blobs for %d paths: each must be stored once", len(blobs), len(owned))
		}
		// Each flake's pusher 0/1 pulls everything its flake should have.
		for i, f := range flakes {
			tops := pushers.Tops(f)
			dst := nixtest.NewStore(t)
			if err := dst.CopyFrom(nixtest.Options{TrustedKeys: []string{public}}, s.URL+"/"+f, tops...); err != nil {
				t.Fatalf("pull %s: %v", f, err)
			}
			if err := dst.Verify([]string{public}, tops...); err != nil {
				t.Fatal(err)
			}
			// The other flake's own paths are not in this namespace.
			other := pushers[1-i].Own
			if err := dst.CopyFrom(nixtest.Options{TrustedKeys: []string{public}}, s.URL+"/"+f, other); err == nil {
				t.Fatalf("%s serves %s which only %s pushed", f, other, flakes[1-i])
			}
		}
	}
	check(s)
	if err := s.stop(); err != nil {
		t.Fatal(err)
	}
	check(start(t, config(func(c *Config) { c.DataDir, c.SigningKeyFiles = dataDir, []string{secret} })))
}

// Real Nix pushes and pulls over HTTPS, trusting a self-signed CA given
// as its CA bundle (NIX_SSL_CERT_FILE: Nix 2.8 has no ssl-cert-file
// setting, later versions read both); the certificate is then replaced on disk by one of
// another CA while the server runs, and a new Nix run trusting only the
// new CA pulls from the same process: the new certificate is served
// without a restart, and the old CA is no longer enough.
func TestNixOverHTTPSCertificateReplaced(t *testing.T) {
	nixtest.Require(t)
	if testing.Short() {
		t.Skip("real-Nix HTTPS pulls: skipped in -short")
	}
	dir := t.TempDir()
	tlsFiles := serve.TLSFiles{Cert: filepath.Join(dir, "tls.crt"), Key: filepath.Join(dir, "tls.key")}
	ca1 := testutil.NewCA(t, "flakegate test CA one")
	ca1.Issue(t, tlsFiles.Cert, tlsFiles.Key, "127.0.0.1", "localhost")
	secret, public := nixtest.GenerateKey(t, "flakegate-test-1")
	s := start(t, config(func(c *Config) { c.DataDir, c.SigningKeyFiles, c.TLS = t.TempDir(), []string{secret}, tlsFiles }))
	if !strings.HasPrefix(s.URL, "https://") {
		t.Fatalf("server URL %s", s.URL)
	}
	// One attempt: a refused certificate is not retried with backoff.
	opts := func(ca *testutil.CA) nixtest.Options {
		return nixtest.Options{TrustedKeys: []string{public}, Settings: map[string]string{"download-attempts": "1"},
			Env: []string{"NIX_SSL_CERT_FILE=" + ca.CertFile}}
	}
	src := nixtest.NewStore(t)
	top := src.MakeClosure(3, "https")
	flakeURL := s.URL + "/omnicorp/app"
	if err := src.CopyTo(opts(ca1), flakeURL+"?compression=zstd", top); err != nil {
		t.Fatalf("push over HTTPS: %v", err)
	}
	pull := func(ca *testutil.CA) error {
		return nixtest.NewStore(t).CopyFrom(opts(ca), flakeURL, top)
	}
	if err := pull(ca1); err != nil {
		t.Fatalf("pull over HTTPS trusting the CA: %v", err)
	}
	ca2 := testutil.NewCA(t, "flakegate test CA two")
	if err := pull(ca2); err == nil {
		t.Fatal("pulled trusting a CA that did not sign the certificate")
	}

	ca2.Issue(t, tlsFiles.Cert, tlsFiles.Key, "127.0.0.1", "localhost")
	if err := pull(ca2); err != nil {
		t.Fatalf("pull after the certificate was replaced, trusting the new CA: %v", err)
	}
	if err := pull(ca1); err == nil {
		t.Fatal("pulled trusting only the old CA after the certificate was replaced")
	}
	logs := s.log.String()
	if strings.Count(logs, `"msg":"TLS certificate reloaded"`) != 1 || strings.Count(logs, `"msg":"`+Listening+`"`) != 1 {
		t.Fatalf("want one reload in one run of the server:\n%s", logs)
	}
	// Nix's curl negotiated HTTP/2 (ALPN) with the server.
	if !strings.Contains(logs, `"proto":"HTTP/2.0"`) {
		t.Errorf("no request over HTTP/2 in the access log")
	}
}
