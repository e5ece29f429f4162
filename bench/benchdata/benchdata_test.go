package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/nix-community/go-nix/pkg/nixbase32"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/types/descriptorpb"

	"github.com/flakegate/flakegate/internal/blobserverapp"
	"github.com/flakegate/flakegate/internal/identity"
	"github.com/flakegate/flakegate/internal/index/sqlite"
	"github.com/flakegate/flakegate/internal/nixcache"
	"github.com/flakegate/flakegate/internal/nixname"
	"github.com/flakegate/flakegate/internal/route"
)

// -size is a bytesize: 1KiB is 1024 bytes of contents, 1K 1000.
func TestNarSizeFlag(t *testing.T) {
	dir := t.TempDir()
	for in, want := range map[string]int64{"1KiB": 1024 + 112, "1K": 1000 + 112, "64": 64 + 112} {
		var out strings.Builder
		if err := runNar([]string{"-size", in, "-out", filepath.Join(dir, "n.nar")}, &out); err != nil {
			t.Fatalf("-size %s: %v", in, err)
		}
		if _, n, _ := strings.Cut(strings.TrimSpace(out.String()), " "); n != fmt.Sprint(want) {
			t.Errorf("-size %s: NAR of %s bytes, want %d", in, n, want)
		}
	}
	if err := runNar([]string{"-size", "-1", "-out", filepath.Join(dir, "n.nar")}, io.Discard); err == nil {
		t.Error("-size -1 accepted")
	}
}

// The NARs are what the blob server accepts: a valid NAR whose file name is
// its hash, of the size asked for.
func TestWriteNar(t *testing.T) {
	for _, size := range []int64{0, 1, 7, 8, 9, 1<<20 + 3} {
		path := filepath.Join(t.TempDir(), "x.nar")
		name, n, err := writeNar(path, size, 7)
		if err != nil {
			t.Fatal(err)
		}
		v, err := nixcache.NewVerifier(nixname.CompressionNone, 0)
		if err != nil {
			t.Fatal(err)
		}
		f, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		_, err = io.Copy(v, f)
		f.Close()
		if err != nil {
			t.Fatalf("size %d: verifier refused the NAR: %v", size, err)
		}
		res, err := v.Finish()
		if err != nil {
			t.Fatalf("size %d: not a valid NAR: %v", size, err)
		}
		if want := nixbase32.EncodeToString(res.FileHash) + ".nar"; name != want {
			t.Errorf("size %d: name %s, want %s", size, name, want)
		}
		if n != res.FileSize || n < size+112 || n > size+112+7 { // 112 bytes of NAR tokens, padding
			t.Errorf("size %d: NAR of %d bytes (verifier: %d)", size, n, res.FileSize)
		}
		if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o644 {
			t.Errorf("size %d: NAR file mode %v, %v: nginx workers must read it", size, fi.Mode(), err)
		}
	}
	a, _, _ := writeNar(filepath.Join(t.TempDir(), "a.nar"), 1000, 1)
	b, _, _ := writeNar(filepath.Join(t.TempDir(), "b.nar"), 1000, 1)
	c, _, _ := writeNar(filepath.Join(t.TempDir(), "c.nar"), 1000, 2)
	if a != b || a == c {
		t.Errorf("same seed must give the same NAR, another seed another: %s %s %s", a, b, c)
	}
}

// The generated index is read by the index package exactly as pushed paths
// are, with narinfos signed by the data directory's key; the static copies
// for nginx are byte for byte what the blob server serves.
func TestIndex(t *testing.T) {
	dir := t.TempDir()
	www := filepath.Join(t.TempDir(), "www")
	if code := run([]string{"index", "-data-dir", dir, "-flake", "omnicorp/app", "-paths", "50",
		"-nginx-root", www, "-nginx-paths", "10"}, io.Discard, os.Stderr); code != 0 {
		t.Fatalf("benchdata index exited %d", code)
	}
	hashes := readLines(t, filepath.Join(dir, "hashes.txt"))
	if len(hashes) != 50 {
		t.Fatalf("%d hashes, want 50", len(hashes))
	}
	key, err := nixcache.LoadKeyFile(filepath.Join(dir, blobserverapp.KeyFileName))
	if err != nil {
		t.Fatal(err)
	}
	x, err := sqlite.Open(context.Background(), filepath.Join(dir, "index.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer x.Close()
	flake := nixname.Flake{Org: "omnicorp", Name: "app"}
	for i, h := range hashes {
		p, err := x.GetPath(context.Background(), flake, h)
		if err != nil {
			t.Fatalf("path %d: %v", i, err)
		}
		ni, err := nixcache.ParseNarInfo(p.NarInfo)
		if err != nil {
			t.Fatalf("path %d: stored narinfo does not parse: %v", i, err)
		}
		if ni.Hash != h {
			t.Errorf("path %d: narinfo of %s under %s", i, ni.Hash, h)
		}
		if ok, err := nixcache.VerifyNarInfo(p.NarInfo, []string{key.PublicKey()}); !ok || err != nil {
			t.Errorf("path %d: not signed by the data directory's key: %v", i, err)
		}
		if _, err := x.GetNar(context.Background(), flake, ni.File); err != nil {
			t.Errorf("path %d: its NAR is not recorded: %v", i, err)
		}
		static, err := os.ReadFile(filepath.Join(www, "omnicorp", "app", h+".narinfo"))
		switch {
		case i < 10 && (err != nil || string(static) != string(p.NarInfo)):
			t.Errorf("path %d: static copy differs from the index (%v)", i, err)
		case i >= 10 && err == nil:
			t.Errorf("path %d: static copy written beyond -nginx-paths", i)
		}
	}
	if _, err := x.GetPath(context.Background(), nixname.Flake{Org: "evilcorp", Name: "app"}, hashes[0]); err == nil {
		t.Error("a flake that owns nothing has a path")
	}
}

// The tokens verify with flakegate's own verifier and issuers file; the ghz
// file holds one CheckRequest per request, round-robin over the tokens.
func TestAuthzData(t *testing.T) {
	dir := t.TempDir()
	if code := run([]string{"authz", "-dir", dir, "-tokens", "3", "-requests", "7", "-policies", "../../policies"},
		io.Discard, os.Stderr); code != 0 {
		t.Fatalf("benchdata authz exited %d", code)
	}
	cfg, err := identity.LoadIssuersFile(filepath.Join(dir, issuersFile))
	if err != nil {
		t.Fatal(err)
	}
	v, err := identity.NewVerifier(context.Background(), cfg, identity.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	tokens := readLines(t, filepath.Join(dir, tokensFile))
	if len(tokens) != 3 || tokens[0] == tokens[1] {
		t.Fatalf("want 3 distinct tokens, got %d", len(tokens))
	}
	for _, tok := range tokens {
		s, err := v.Verify(context.Background(), tok)
		if err != nil {
			t.Fatalf("token refused: %v", err)
		}
		if s.Repo != "omnicorp/app" || s.Kind != "ci" || !s.RefProtected {
			t.Errorf("subject %+v, want a CI job of omnicorp/app on a protected ref", s)
		}
	}

	var reqs []json.RawMessage
	if err := json.Unmarshal(readFile(t, filepath.Join(dir, ghzFile)), &reqs); err != nil {
		t.Fatal(err)
	}
	paths := readLines(t, filepath.Join(dir, narinfoPaths))
	if len(reqs) != 7 || len(paths) != 7 {
		t.Fatalf("%d requests, %d paths; want 7", len(reqs), len(paths))
	}
	for i, raw := range reqs {
		var req authv3.CheckRequest
		if err := protojson.Unmarshal(raw, &req); err != nil {
			t.Fatalf("request %d is not a CheckRequest: %v", i, err)
		}
		h := req.GetAttributes().GetRequest().GetHttp()
		if h.GetPath() != paths[i] || h.GetHeaders()["authorization"] != "Bearer "+tokens[i%3] {
			t.Errorf("request %d: path %s, authorization of token %d expected", i, h.GetPath(), i%3)
		}
		if r, err := route.Parse(h.GetMethod(), h.GetPath()); err != nil || r.Kind != route.KindNarInfo {
			t.Errorf("request %d: %s is not a narinfo read: %v", i, h.GetPath(), err)
		}
	}

	var data struct {
		Bench struct {
			JWKS, Issuer, Audience string
		}
		Flakes map[string]any
	}
	if err := json.Unmarshal(readFile(t, filepath.Join(dir, opaDataFile)), &data); err != nil {
		t.Fatal(err)
	}
	if data.Bench.JWKS != string(readFile(t, filepath.Join(dir, jwksFile))) || data.Bench.Issuer != cfg.Issuers[0].Issuer {
		t.Errorf("reference data does not carry the same JWKS and issuer")
	}
	if _, ok := data.Flakes["omnicorp/super-duper-secure"]; !ok {
		t.Errorf("reference data lacks flakes.yaml's entries: %v", data.Flakes)
	}

	// A second run keeps the key: tokens of both runs verify.
	if code := run([]string{"authz", "-dir", dir, "-tokens", "1", "-requests", "1", "-policies", "../../policies"},
		io.Discard, os.Stderr); code != 0 {
		t.Fatalf("second benchdata authz exited %d", code)
	}
	if _, err := v.Verify(context.Background(), readLines(t, filepath.Join(dir, tokensFile))[0]); err != nil {
		t.Errorf("token of the second run refused: %v", err)
	}
}

func TestProtoset(t *testing.T) {
	out := filepath.Join(t.TempDir(), "authz.protoset")
	if code := run([]string{"protoset", "-out", out}, io.Discard, os.Stderr); code != 0 {
		t.Fatalf("benchdata protoset exited %d", code)
	}
	var set descriptorpb.FileDescriptorSet
	if err := proto.Unmarshal(readFile(t, out), &set); err != nil {
		t.Fatal(err)
	}
	files, err := protodesc.NewFiles(&set) // every import must be in the set
	if err != nil {
		t.Fatalf("descriptor set does not resolve: %v", err)
	}
	if _, err := files.FindDescriptorByName("envoy.service.auth.v3.Authorization.Check"); err != nil {
		t.Errorf("no Check method: %v", err)
	}
}

func TestUsage(t *testing.T) {
	for _, args := range [][]string{nil, {"nope"}, {"nar"}, {"index"}, {"authz"}, {"check"}} {
		var stderr strings.Builder
		if code := run(args, io.Discard, &stderr); code == 0 || stderr.Len() == 0 {
			t.Errorf("benchdata %v: exit %d, stderr %q; want an error", args, code, stderr.String())
		}
	}
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func readLines(t *testing.T, path string) []string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return lines
}

// The null cache answers like a cache that is empty and takes every upload.
func TestNullCache(t *testing.T) {
	h := nullCache()
	for _, tc := range []struct {
		method, path, body string
		want               int
		wantBody           string
	}{
		{"GET", "/omnicorp/app/nix-cache-info", "", 200, "StoreDir: /nix/store"},
		{"GET", "/omnicorp/app/0mlmk9jdn70915v5pjbniifrs1l7bx9y.narinfo", "", 404, ""},
		{"HEAD", "/omnicorp/app/nar/1v2dkqap0r.nar.xz", "", 404, ""},
		{"PUT", "/omnicorp/app/nar/1v2dkqap0r.nar.xz", "some bytes", 201, ""},
	} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(tc.method, tc.path, strings.NewReader(tc.body)))
		if rec.Code != tc.want || !strings.Contains(rec.Body.String(), tc.wantBody) {
			t.Errorf("%s %s: %d %q, want %d with %q", tc.method, tc.path, rec.Code, rec.Body.String(), tc.want, tc.wantBody)
		}
	}
}

// The null ext_authz allows every request with the answer the real authz
// gives an allowed read, and stops with its context.
func TestNullAuthz(t *testing.T) {
	ln, err := net.Listen("unix", filepath.Join(t.TempDir(), "authz.sock"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serveNullAuthz(ctx, ln) }()
	conn, err := grpc.NewClient("unix:"+ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	cctx, ccancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer ccancel()
	resp, err := authv3.NewAuthorizationClient(conn).Check(cctx, &authv3.CheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	ok := resp.GetOkResponse()
	if resp.GetStatus().GetCode() != 0 || ok == nil {
		t.Fatalf("answer %v, want OK", resp)
	}
	if len(ok.GetHeaders()) != 1 || ok.GetHeaders()[0].GetHeader().GetKey() != "x-flakegate-subject" ||
		len(ok.GetHeadersToRemove()) != 1 || ok.GetHeadersToRemove()[0] != "authorization" {
		t.Errorf("OK answer %v, want the subject header added and authorization removed", ok)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("serve: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("null ext_authz did not stop with its context")
	}
}
