package main

import (
	"context"
	"fmt"
	"log/slog"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/flakegate/flakegate/internal/blobserverapp"
)

// configOf runs run with args and returns the configuration it would serve
// (and stderr when it would not).
func configOf(t *testing.T, args ...string) (blobserverapp.Config, error) {
	t.Helper()
	var got blobserverapp.Config
	orig := runApp
	t.Cleanup(func() { runApp = orig })
	runApp = func(_ context.Context, cfg blobserverapp.Config, _ *slog.Logger) error {
		got = cfg
		return nil
	}
	var stdout, stderr strings.Builder
	if code := run(context.Background(), append([]string{"-data-dir", t.TempDir(), "-behind-envoy"}, args...), &stdout, &stderr); code != 0 {
		return got, fmt.Errorf("exit %d: %s", code, stderr.String())
	}
	return got, nil
}

func TestUploadLimitFlags(t *testing.T) {
	cfg, err := configOf(t)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.UploadMinRate != 16<<10 || cfg.UploadMaxDuration != 2*time.Hour || cfg.MaxExpansion != 1000 || cfg.MaxUploadsPerSubject != 32 || cfg.MaxLogSize != 256<<20 {
		t.Fatalf("defaults: %+v", cfg)
	}

	cfg, err = configOf(t, "-upload-min-rate", "1MiB", "-upload-max-duration", "30m", "-max-expansion", "50", "-max-uploads-per-subject", "4", "-max-log-size", "16MiB")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.UploadMinRate != 1<<20 || cfg.UploadMaxDuration != 30*time.Minute || cfg.MaxExpansion != 50 || cfg.MaxUploadsPerSubject != 4 || cfg.MaxLogSize != 16<<20 {
		t.Fatalf("flags: %+v", cfg)
	}

	// 0 disables (0 in the configuration too, as below it), also from the
	// environment; so does -lookup-cache 0.
	for _, k := range []string{"UPLOAD_MIN_RATE", "UPLOAD_MAX_DURATION", "MAX_EXPANSION", "MAX_UPLOADS_PER_SUBJECT", "LOOKUP_CACHE"} {
		t.Setenv("FLAKEGATE_"+k, "0")
	}
	cfg, err = configOf(t)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.UploadMinRate != 0 || cfg.UploadMaxDuration != 0 || cfg.MaxExpansion != 0 || cfg.MaxUploadsPerSubject != 0 || cfg.LookupCacheEntries != 0 {
		t.Fatalf("0 from the environment: %+v", cfg)
	}

	for _, args := range [][]string{
		{"-max-expansion", "-1"}, {"-max-uploads-per-subject", "-2"}, {"-upload-max-duration", "-1s"}, {"-upload-min-rate", "slow"},
		{"-max-log-size", "0"}, {"-max-log-size", "big"},
	} {
		if _, err := configOf(t, args...); err == nil || !strings.Contains(err.Error(), strings.TrimPrefix(args[0], "-")) {
			t.Errorf("%v: %v, want an error naming the flag", args, err)
		}
	}
}

// With no flags the server runs blobserverapp.DefaultConfig: the flags
// keep no defaults of their own.
func TestFlagDefaultsAreDefaultConfig(t *testing.T) {
	cfg, err := configOf(t)
	if err != nil {
		t.Fatal(err)
	}
	want := blobserverapp.DefaultConfig()
	want.DataDir, want.BehindEnvoy = cfg.DataDir, true // the two flags configOf gives
	if !reflect.DeepEqual(cfg, want) {
		t.Fatalf("flags' defaults:\n%+v\nDefaultConfig:\n%+v", cfg, want)
	}
}
