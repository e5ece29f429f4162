// Package scaleout tests several blob servers sharing state: two real
// blobserver processes on one MinIO bucket prefix and one PostgreSQL
// schema, driven by real `nix copy`.
//
// Needs FLAKEGATE_TEST_S3_URL and FLAKEGATE_TEST_POSTGRES_URL (start the
// services with `eval "$(scripts/test-services.sh start)"`) and nix-bin;
// skips without them, and in -short.
package scaleout

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/flakegate/flakegate/internal/blob/s3"
	"github.com/flakegate/flakegate/internal/nixtest"
	"github.com/flakegate/flakegate/internal/testutil"
)

// env holds the shared services of one test: a fresh bucket prefix and a
// fresh database schema.
type env struct {
	s3URL, pgURL string
	s3cfg        s3.Config
	mc           *minio.Client
}

func setup(t testing.TB) env {
	t.Helper()
	nixtest.Require(t)
	if testing.Short() {
		t.Skip("two blob servers with real Nix: skipped in -short")
	}
	// A PostgreSQL schema and a MinIO prefix of the test's own, dropped
	// and emptied when it ends.
	pgURL, s3URL := testutil.ScaleOutURLs(t, "scaleout")
	cfg, mc := testutil.MinioFor(t, s3URL)
	return env{s3URL: s3URL, pgURL: pgURL, s3cfg: cfg, mc: mc}
}

// objects lists the object keys below the test's prefix and dir.
func (e env) objects(t testing.TB, dir string) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var keys []string
	for oi := range e.mc.ListObjectsIter(ctx, e.s3cfg.Bucket, minio.ListObjectsOptions{Prefix: e.s3cfg.Prefix + dir, Recursive: true}) {
		if oi.Err != nil {
			t.Fatal(oi.Err)
		}
		keys = append(keys, strings.TrimPrefix(oi.Key, e.s3cfg.Prefix))
	}
	return keys
}

// binDir holds cmd/blobserver, built once by TestMain.
var (
	binDir   string
	buildErr error
)

func TestMain(m *testing.M) { os.Exit(run(m)) }

func run(m *testing.M) int {
	flag.Parse() // for testing.Short
	var err error
	if binDir, err = os.MkdirTemp("", "flakegate-scaleout-"); err != nil {
		fmt.Fprintln(os.Stderr, "scaleout:", err)
		return 1
	}
	defer os.RemoveAll(binDir)
	// Build only when the tests can run; they skip otherwise.
	_, errNix := exec.LookPath("nix")
	goTool, errGo := exec.LookPath("go")
	if errNix == nil && errGo == nil && os.Getenv("FLAKEGATE_TEST_S3_URL") != "" && !testing.Short() {
		buildErr = testutil.GoBuild(goTool, binDir, "github.com/flakegate/flakegate/cmd/blobserver")
	}
	return m.Run()
}

type server struct {
	URL, InternalURL string
	Log              *testutil.LogBuffer
	Pid              int
}

// start runs a blobserver process on the shared storage and waits until it
// is healthy; it is stopped (and must exit cleanly) when the test ends.
func start(t testing.TB, e env, keyFile string, extra ...string) *server {
	t.Helper()
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	public, internal := testutil.FreeAddr(t), testutil.FreeAddr(t)
	args := append([]string{"-listen", public, "-internal-listen", internal,
		"-storage", e.s3URL, "-index", e.pgURL, "-signing-key-file", keyFile,
		"-access-log=false"}, extra...)
	if !slices.Contains(extra, "-ext-authz") {
		args = append(args, "-behind-envoy")
	}
	p := testutil.StartProcess(t, "blobserver", filepath.Join(binDir, "blobserver"), []string{"HOME=" + t.TempDir()}, args...)
	p.WaitHealthy(t, "http://"+internal+"/healthz", 60*time.Second)
	return &server{URL: "http://" + public, InternalURL: "http://" + internal, Log: p.Log, Pid: p.Pid()}
}

func get(t *testing.T, u string) (int, string) {
	t.Helper()
	return testutil.Get(t, u, 30*time.Second)
}

// Push through one server, pull through the other: both the flake's
// namespace and the union view, trusting only the shared signing key.
func TestPushToOnePullFromOther(t *testing.T) {
	e := setup(t)
	secret, public := nixtest.GenerateKey(t, "flakegate-scaleout-1")
	a, b := start(t, e, secret), start(t, e, secret)

	src := nixtest.NewStore(t)
	top := src.MakeClosure(16, "scaleout-pushpull")
	want := src.Closure(top)
	if err := src.CopyTo(nixtest.Options{}, a.URL+"/omnicorp/app?compression=zstd", top); err != nil {
		t.Fatalf("push to server A: %v", err)
	}
	for _, from := range []string{b.URL + "/omnicorp/app", b.URL} {
		dst := nixtest.NewStore(t)
		if err := dst.CopyFrom(nixtest.Options{TrustedKeys: []string{public}}, from, top); err != nil {
			t.Fatalf("pull from server B (%s): %v", from, err)
		}
		if got := dst.Closure(top); !slices.Equal(nixtest.Comparable(got), nixtest.Comparable(want)) {
			t.Fatalf("closure pulled from B differs:\n got %v\nwant %v", nixtest.Comparable(got), nixtest.Comparable(want))
		}
		if err := dst.Verify([]string{public}, top); err != nil {
			t.Fatalf("nix store verify: %v", err)
		}
	}
	// B knows the owner A recorded; another flake does not have the paths.
	if st, body := get(t, b.InternalURL+"/owners/narinfo/"+nixtest.HashPart(top)); st != 200 || body != `{"flakes":["omnicorp/app"]}`+"\n" {
		t.Fatalf("owners via B: %d %s", st, body)
	}
	if st, _ := get(t, b.URL+"/omnicorp/other/"+nixtest.HashPart(top)+".narinfo"); st != http.StatusNotFound {
		t.Fatalf("another flake's namespace on B: %d, want 404", st)
	}
	// The NARs live in the object store, once each.
	if nars := e.objects(t, "nar/"); len(nars) != len(want) {
		t.Fatalf("%d NAR objects for %d paths", len(nars), len(want))
	}
}

// Pushers of overlapping closures into two flakes, half through each
// server, all at once: every push succeeds, every path and ownership is
// recorded, each NAR is stored once, and each flake pulls all it pushed
// from either server.
func TestConcurrentPushesThroughBoth(t *testing.T) {
	e := setup(t)
	secret, public := nixtest.GenerateKey(t, "flakegate-scaleout-1")
	servers := []*server{start(t, e, secret), start(t, e, secret)}
	flakes := []string{"omnicorp/a", "omnicorp/b"}

	// 8 pushers, shared closures of 5 sizes; each flake pushes through both servers.
	pushers := nixtest.MakePushers(t, 8, flakes, 5, "scaleout-")
	via := func(p nixtest.Pusher) *server { return servers[(p.K/2)%2] }
	for _, err := range pushers.Push(func(p nixtest.Pusher) error {
		return p.Store.CopyTo(nixtest.Options{}, via(p).URL+"/"+p.Flake+"?compression=zstd", p.Shared, p.Own)
	}) {
		t.Error(err)
	}
	if t.Failed() {
		t.FailNow()
	}

	owned := pushers.Owners() // store path → flakes
	for _, s := range servers {
		for path, fl := range owned {
			want, err := json.Marshal(map[string][]string{"flakes": fl})
			if err != nil {
				t.Fatal(err)
			}
			if st, body := get(t, s.InternalURL+"/owners/narinfo/"+nixtest.HashPart(path)); st != 200 || body != string(want)+"\n" {
				t.Fatalf("owners of %s via %s: %d %s, want %s", path, s.URL, st, body, want)
			}
		}
	}
	if nars := e.objects(t, "nar/"); len(nars) != len(owned) {
		t.Fatalf("%d NAR objects for %d paths: each must be stored once", len(nars), len(owned))
	}
	if tmp := e.objects(t, ".tmp/"); len(tmp) != 0 {
		t.Fatalf("temporary upload objects left behind: %v", tmp)
	}
	// Each flake pulls everything it pushed, from the server it used less.
	for i, f := range flakes {
		tops := pushers.Tops(f)
		dst := nixtest.NewStore(t)
		if err := dst.CopyFrom(nixtest.Options{TrustedKeys: []string{public}}, servers[1-i].URL+"/"+f, tops...); err != nil {
			t.Fatalf("pull %s: %v", f, err)
		}
		if err := dst.Verify([]string{public}, tops...); err != nil {
			t.Fatal(err)
		}
		other := pushers[1-i].Own // pushed only by the other flake
		if err := dst.CopyFrom(nixtest.Options{TrustedKeys: []string{public}}, servers[i].URL+"/"+f, other); err == nil {
			t.Fatalf("%s serves %s, which only %s pushed", f, other, flakes[1-i])
		}
	}
}
