package gc

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/flakegate/flakegate/internal/nixname"
)

func TestParseRetention(t *testing.T) {
	r, err := ParseRetention([]byte(`
default:
  keep_for: 30d
max_size: 2TB
grace: 90m
flakes:
  omnicorp/app:
    keep_for: 12h
    max_size: 50GiB
  omnicorp/small:
    max_size: 0
`))
	if err != nil {
		t.Fatal(err)
	}
	app := nixname.Flake{Org: "omnicorp", Name: "app"}
	small := nixname.Flake{Org: "omnicorp", Name: "small"}
	other := nixname.Flake{Org: "acme", Name: "x"}
	if r.MaxSize != 2e12 || r.Grace != 90*time.Minute {
		t.Errorf("store: max_size %d grace %v", r.MaxSize, r.Grace)
	}
	if p := r.For(app); p.KeepFor != 12*time.Hour || p.MaxSize != 50<<30 {
		t.Errorf("app: %+v", p)
	}
	if p := r.For(small); p.KeepFor != 30*24*time.Hour || p.MaxSize != 0 {
		t.Errorf("small inherits keep_for: %+v", p)
	}
	if p := r.For(other); p.KeepFor != 30*24*time.Hour {
		t.Errorf("default: %+v", p)
	}
	if r, err := ParseRetention([]byte("{}")); err != nil || r.Grace != DefaultGrace || r.Default.KeepFor != 0 {
		t.Errorf("empty file: %+v %v; want keep everything, default grace", r, err)
	}
}

func TestParseRetentionErrors(t *testing.T) {
	_, err := ParseRetention([]byte(`
default:
  keep_for: 30 days
max_size: -1
grace: soon
flakes:
  Omnicorp/App:
    keep_for: 1d
  nope:
    keep_for: 1d
  omnicorp/x:
    max_size: 5 parsecs
`))
	if err == nil {
		t.Fatal("bad retention file accepted")
	}
	for _, want := range []string{"default: keep_for", "max_size", "grace", "Omnicorp/App", "nope", "omnicorp/x: max_size"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not name %q:\n%v", want, err)
		}
	}
	if _, err := ParseRetention([]byte("default:\n  keep_for: 1d\n  keep_fro: 2d\n")); err == nil || !strings.Contains(err.Error(), "keep_fro") {
		t.Errorf("unknown key: %v", err)
	}
	file := filepath.Join(t.TempDir(), "retention.yaml")
	if _, err := LoadRetention(file); err == nil || !strings.Contains(err.Error(), "retention file") {
		t.Errorf("missing file: %v", err)
	}
	os.WriteFile(file, []byte("grace: 1y\n"), 0o600)
	if _, err := LoadRetention(file); err == nil || !strings.Contains(err.Error(), file) {
		t.Errorf("bad file: error does not name it: %v", err)
	}
}
