package main

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/flakegate/flakegate/internal/blobserverapp"
)

// configOf runs run with args and returns the configuration it would serve.
func configOf(t *testing.T, args ...string) (blobserverapp.Config, error) {
	t.Helper()
	var got blobserverapp.Config
	orig := runApp
	t.Cleanup(func() { runApp = orig })
	runApp = func(_ context.Context, cfg blobserverapp.Config, _ *slog.Logger) error {
		got = cfg
		return nil
	}
	err := run(append([]string{"-data-dir", t.TempDir()}, args...))
	return got, err
}

func TestUploadLimitFlags(t *testing.T) {
	cfg, err := configOf(t)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.UploadMinRate != 16<<10 || cfg.UploadMaxDuration != 2*time.Hour || cfg.MaxExpansion != 1000 || cfg.MaxUploadsPerSubject != 32 {
		t.Fatalf("defaults: %+v", cfg)
	}

	cfg, err = configOf(t, "-upload-min-rate", "1MiB", "-upload-max-duration", "30m", "-max-expansion", "50", "-max-uploads-per-subject", "4")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.UploadMinRate != 1<<20 || cfg.UploadMaxDuration != 30*time.Minute || cfg.MaxExpansion != 50 || cfg.MaxUploadsPerSubject != 4 {
		t.Fatalf("flags: %+v", cfg)
	}

	// 0 disables (negative in the configuration), also from the environment.
	for _, k := range []string{"UPLOAD_MIN_RATE", "UPLOAD_MAX_DURATION", "MAX_EXPANSION", "MAX_UPLOADS_PER_SUBJECT"} {
		t.Setenv("FLAKEGATE_"+k, "0")
	}
	cfg, err = configOf(t)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.UploadMinRate >= 0 || cfg.UploadMaxDuration >= 0 || cfg.MaxExpansion >= 0 || cfg.MaxUploadsPerSubject >= 0 {
		t.Fatalf("0 from the environment: %+v", cfg)
	}

	for _, args := range [][]string{
		{"-max-expansion", "-1"}, {"-max-uploads-per-subject", "-2"}, {"-upload-max-duration", "-1s"}, {"-upload-min-rate", "slow"},
	} {
		if _, err := configOf(t, args...); err == nil || !strings.Contains(err.Error(), strings.TrimPrefix(args[0], "-")) {
			t.Errorf("%v: %v, want an error naming the flag", args, err)
		}
	}
}
