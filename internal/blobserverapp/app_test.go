package blobserverapp

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flakegate/flakegate/internal/testutil"
)

// server is a Run in a goroutine.
type server struct {
	URL, InternalURL string
	stop             func() error
	log              *testutil.LogBuffer
}

// config is DefaultConfig with the test's settings.
func config(set func(*Config)) Config {
	c := DefaultConfig()
	set(&c)
	// Most tests serve ungated (what behind Envoy means); those that
	// configure a gate get no -behind-envoy with it.
	c.BehindEnvoy = c.ExtAuthz == "" && c.Authz == nil
	return c
}

// start runs the server on loopback ports until the test ends (or stop).
func start(t testing.TB, cfg Config) *server {
	t.Helper()
	cfg.Listen, cfg.InternalListen = "127.0.0.1:0", "127.0.0.1:0"
	cfg.AccessLog = true
	ready := make(chan [2]string, 1)
	cfg.OnListen = func(p, i string) { ready <- [2]string{p, i} }
	logs := &testutil.LogBuffer{}
	log := slog.New(slog.NewJSONHandler(logs, nil))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, cfg, log) }()
	s := &server{log: logs}
	select {
	case a := <-ready:
		scheme := "http://"
		if cfg.TLS.Enabled() {
			scheme = "https://"
		}
		s.URL, s.InternalURL = scheme+a[0], "http://"+a[1]
	case err := <-done:
		cancel()
		t.Fatalf("server did not start: %v\n%s", err, logs.String())
	case <-time.After(30 * time.Second):
		cancel()
		t.Fatal("server did not start within 30s")
	}
	var once sync.Once
	var stopErr error
	s.stop = func() error {
		once.Do(func() {
			cancel()
			stopErr = <-done
		})
		return stopErr
	}
	t.Cleanup(func() {
		if err := s.stop(); err != nil {
			t.Errorf("server stopped with %v", err)
		}
	})
	return s
}

func get(t testing.TB, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestRunCreatesKeyAndServes(t *testing.T) {
	dir := t.TempDir()
	s := start(t, config(func(c *Config) { c.DataDir = dir }))
	if st, body := get(t, s.URL+"/nix-cache-info"); st != 200 || !strings.Contains(body, "StoreDir: /nix/store") {
		t.Fatalf("nix-cache-info: %d %q", st, body)
	}
	if st, _ := get(t, s.InternalURL+"/healthz"); st != 200 {
		t.Fatalf("healthz: %d", st)
	}
	st, err := os.Stat(filepath.Join(dir, KeyFileName))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v %v", st, err)
	}
	logs := s.log.String()
	if !strings.Contains(logs, `"msg":"created signing key"`) || !strings.Contains(logs, `"public_keys":["`) {
		t.Fatalf("public key not logged:\n%s", logs)
	}
	key, _ := os.ReadFile(filepath.Join(dir, KeyFileName))
	secret := strings.SplitN(string(key), ":", 2)[1]
	if strings.Contains(logs, secret) {
		t.Fatal("secret key logged")
	}
	if err := s.stop(); err != nil {
		t.Fatal(err)
	}
	// Second start reuses the key.
	s2 := start(t, config(func(c *Config) { c.DataDir = dir }))
	if strings.Contains(s2.log.String(), "created signing key") {
		t.Fatal("key created again")
	}
}

func TestRunConfigErrors(t *testing.T) {
	dir := t.TempDir()
	bad := os.WriteFile(filepath.Join(dir, "bad.sec"), []byte("not a key"), 0o600)
	if bad != nil {
		t.Fatal(bad)
	}
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"no data dir", config(func(c *Config) { c.Listen = "127.0.0.1:0" }), "-data-dir is required"},
		{"bad key file", config(func(c *Config) {
			c.Listen, c.DataDir, c.SigningKeyFiles = "127.0.0.1:0", dir, []string{filepath.Join(dir, "bad.sec")}
		}), "signing key"},
		{"missing key file", config(func(c *Config) {
			c.Listen, c.DataDir, c.SigningKeyFiles = "127.0.0.1:0", dir, []string{filepath.Join(dir, "absent.sec")}
		}), "absent.sec"},
		{"bad storage", config(func(c *Config) { c.Listen, c.DataDir, c.Storage = "127.0.0.1:0", dir, "gopher://x" }), "unsupported scheme"},
		{"bad listen", config(func(c *Config) { c.Listen, c.InternalListen, c.DataDir = "256.0.0.1:99999", "", dir }), "listen on"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			log := slog.New(slog.NewJSONHandler(io.Discard, nil))
			err := Run(context.Background(), tt.cfg, log)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err %v, want %q", err, tt.want)
			}
		})
	}
}

// SIGTERM (context cancel) lets a running upload finish.
func TestGracefulShutdownLetsUploadFinish(t *testing.T) {
	dir := t.TempDir()
	s := start(t, config(func(c *Config) { c.DataDir, c.ShutdownTimeout = dir, time.Minute }))
	pr, pw := io.Pipe()
	req, _ := http.NewRequest("PUT", s.URL+"/omnicorp/a/log/"+strings.Repeat("0", 32)+"-x.drv", pr)
	type result struct {
		status int
		err    error
	}
	res := make(chan result, 1)
	go func() {
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			res <- result{err: err}
			return
		}
		resp.Body.Close()
		res <- result{status: resp.StatusCode}
	}()
	pw.Write([]byte("first half of the log\n"))
	// Wait until the upload is in the handler (its temp file exists).
	waitFor(t, func() bool {
		e, _ := os.ReadDir(filepath.Join(dir, "blobs", ".tmp"))
		return len(e) == 1
	})
	stopped := make(chan error, 1)
	go func() { stopped <- s.stop() }()
	time.Sleep(200 * time.Millisecond) // shutdown has begun; the upload is still running
	select {
	case err := <-stopped:
		t.Fatalf("server stopped before the upload ended: %v", err)
	default:
	}
	pw.Write([]byte("second half\n"))
	pw.Close()
	r := <-res
	if r.err != nil || r.status != http.StatusCreated {
		t.Fatalf("upload during shutdown: %d %v", r.status, r.err)
	}
	if err := <-stopped; err != nil {
		t.Fatal(err)
	}
	s2 := start(t, config(func(c *Config) { c.DataDir = dir }))
	if st, body := get(t, s2.URL+"/omnicorp/a/log/"+strings.Repeat("0", 32)+"-x.drv"); st != 200 || body != "first half of the log\nsecond half\n" {
		t.Fatalf("log after restart: %d %q", st, body)
	}
}

func waitFor(t testing.TB, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached within 20s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestValidateReportsEveryError(t *testing.T) {
	c := DefaultConfig()
	c.Listen, c.InternalListen = "nohost", "127.0.0.1"
	c.MaxNarSize, c.MaxLogSize, c.Priority, c.ShutdownTimeout = 0, -1, -1, 0
	c.LookupCacheEntries, c.MaxExpansion, c.UploadMaxDuration = -1, -2, -time.Second
	c.MissCacheTTL, c.DownloadIdleTimeout = -time.Second, 0
	c.LogLevel = "loud"
	err := c.Validate()
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{`-listen "nohost"`, `-internal-listen "127.0.0.1"`, "-data-dir is required",
		"-max-nar-size must be positive", "-max-log-size must be positive", "-priority must be positive", "-shutdown-timeout must be positive",
		"-download-idle-timeout must be positive", "-lookup-cache -1", "-max-expansion -2", "-upload-max-duration -1s", "-miss-cache-ttl -1s", "-log-level",
		"no authorization configured"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q: %v", want, err)
		}
	}

	c = DefaultConfig()
	c.DataDir, c.BehindEnvoy = t.TempDir(), true
	if err := c.Validate(); err != nil {
		t.Fatalf("defaults with a data dir: %v", err)
	}
	// Storage, index and key files elsewhere need no data dir.
	c.DataDir, c.Storage, c.Index, c.SigningKeyFiles = "", "s3://bucket", "postgres://db", []string{"key.sec"}
	if err := c.Validate(); err != nil {
		t.Fatalf("no data dir needed: %v", err)
	}
}

// TestNoAuthorizationIsRefused: a configuration that names no way to
// authorize (no in-process core, no -ext-authz, no -behind-envoy) does not
// serve: before, it served every flake to everyone with one warning, so a
// misspelt FLAKEGATE_POLICIES failed open. Each of the three alone is
// accepted, and a gate with -behind-envoy keeps the gate (Run's log says
// the flag is moot).
func TestNoAuthorizationIsRefused(t *testing.T) {
	base := DefaultConfig()
	base.DataDir = t.TempDir()
	err := base.Validate()
	if err == nil || !strings.Contains(err.Error(), "no authorization configured, refusing to serve") {
		t.Fatalf("no authorization: Validate = %v, want the refusal", err)
	}
	// Run refuses too (its own Validate), before opening anything.
	if err := Run(context.Background(), base, slog.New(slog.NewTextHandler(io.Discard, nil))); err == nil ||
		!strings.Contains(err.Error(), "no authorization configured") {
		t.Fatalf("Run without authorization: %v", err)
	}
	for name, set := range map[string]func(*Config){
		"behind envoy": func(c *Config) { c.BehindEnvoy = true },
		"ext authz":    func(c *Config) { c.ExtAuthz = "127.0.0.1:9001" },
		"in process":   func(c *Config) { c.Authz = &InProcessAuthz{} },
		"gate and flag": func(c *Config) {
			c.ExtAuthz, c.BehindEnvoy = "127.0.0.1:9001", true
		},
	} {
		c := base
		set(&c)
		if err := c.Validate(); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// -lookup-cache 0 means off at every layer: 0 in Config is 0 in the cache
// handlers' configuration, where 0 is no cache (cacheserver's
// TestLookupCacheEntries); before issue 15, 0 below the flag meant "the
// default".
func TestLookupCacheZeroIsOff(t *testing.T) {
	for _, n := range []int{0, 100} {
		c := DefaultConfig()
		c.LookupCacheEntries = n
		if got := cacheConfig(c, nil, nil, nil, nil, nil).CacheEntries; got != n {
			t.Errorf("LookupCacheEntries %d → cacheserver CacheEntries %d", n, got)
		}
	}
	if DefaultConfig().LookupCacheEntries <= 0 {
		t.Error("the lookup cache is off by default")
	}
	// The upload limits alike: 0 is off in both.
	c := DefaultConfig()
	c.UploadMinRate, c.UploadMaxDuration, c.MaxExpansion, c.MaxUploadsPerSubject = 0, 0, 0, 0
	cc := cacheConfig(c, nil, nil, nil, nil, nil)
	if cc.UploadMinRate != 0 || cc.UploadMaxDuration != 0 || cc.MaxExpansion != 0 || cc.MaxUploadsPerSubject != 0 {
		t.Errorf("limits switched off became %+v", cc)
	}
}

// A build log is never allowed more than a NAR: -max-nar-size lowered
// below the log default bounds logs too (an operator who lowered it meant
// every upload to stay below it).
func TestLogLimitNeverAboveNarLimit(t *testing.T) {
	c := DefaultConfig()
	c.MaxNarSize = 100 << 20
	if got := cacheConfig(c, nil, nil, nil, nil, nil).MaxLogSize; got != 100<<20 {
		t.Errorf("-max-nar-size 100MiB: logs up to %d", got)
	}
	c = DefaultConfig()
	if got := cacheConfig(c, nil, nil, nil, nil, nil).MaxLogSize; got != c.MaxLogSize {
		t.Errorf("defaults: logs up to %d, want %d", got, c.MaxLogSize)
	}
}
