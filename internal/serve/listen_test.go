package serve

import (
	"flag"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestSocketPath(t *testing.T) {
	for _, tc := range []struct{ addr, want string }{
		{"127.0.0.1:9001", ""},
		{":9001", ""},
		{"authz:9001", ""},
		{"unix:/run/flakegate/authz.sock", "/run/flakegate/authz.sock"},
		{"/run/flakegate/authz.sock", "/run/flakegate/authz.sock"},
		{"unix:relative.sock", "relative.sock"},
	} {
		if got := SocketPath(tc.addr); got != tc.want {
			t.Errorf("SocketPath(%q) = %q, want %q", tc.addr, got, tc.want)
		}
	}
}

func TestListenUnix(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "authz.sock")

	// A socket left by a process that died is replaced.
	stale, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	stale.(*net.UnixListener).SetUnlinkOnClose(false)
	stale.Close()
	if _, err := os.Stat(sock); err != nil {
		t.Fatalf("stale socket not left behind: %v", err)
	}
	ln, err := Listen("unix:" + sock)
	if err != nil {
		t.Fatalf("listen over a stale socket: %v", err)
	}
	accepted := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			c.Close()
		}
		accepted <- err
	}()
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatalf("dial the socket: %v", err)
	}
	c.Close()
	if err := <-accepted; err != nil {
		t.Fatalf("accept: %v", err)
	}
	ln.Close()
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Errorf("socket file still there after Close: %v", err)
	}

	// Anything but a socket at the path is never removed.
	regular := filepath.Join(dir, "not-a-socket")
	if err := os.WriteFile(regular, []byte("keep"), 0o644); err != nil {
		t.Fatal(err)
	}
	if ln, err := Listen(regular); err == nil {
		ln.Close()
		t.Fatal("listening over a regular file succeeded")
	}
	if b, err := os.ReadFile(regular); err != nil || string(b) != "keep" {
		t.Errorf("regular file changed: %q, %v", b, err)
	}

	// host:port still listens on TCP.
	tl, err := Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if tl.Addr().Network() != "tcp" {
		t.Errorf("network %q, want tcp", tl.Addr().Network())
	}
	tl.Close()
}

func TestParseLogLevel(t *testing.T) {
	for _, s := range []string{"debug", "info", "warn", "error", "INFO"} {
		if _, err := ParseLogLevel(s); err != nil {
			t.Errorf("ParseLogLevel(%q): %v", s, err)
		}
	}
	if _, err := ParseLogLevel("loud"); err == nil || !strings.Contains(err.Error(), `"loud"`) {
		t.Errorf("ParseLogLevel(loud): %v", err)
	}
}

func TestParseFlags(t *testing.T) {
	newFS := func() (*flag.FlagSet, *string) {
		fs := flag.NewFlagSet("svc", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		return fs, fs.String("data-dir", "default", "")
	}
	cfgFile := filepath.Join(t.TempDir(), "svc.conf")
	if err := os.WriteFile(cfgFile, []byte("data-dir /from/file\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name     string
		args     []string
		env      string
		want     string
		code     int
		done     bool
		inStderr string
	}{
		{"default", nil, "", "default", 0, false, ""},
		{"flag", []string{"-data-dir", "/x"}, "", "/x", 0, false, ""},
		{"environment", nil, "/from/env", "/from/env", 0, false, ""},
		{"flag over environment", []string{"-data-dir", "/x"}, "/from/env", "/x", 0, false, ""},
		{"config file", []string{"-config", cfgFile}, "", "/from/file", 0, false, ""},
		{"help", []string{"-h"}, "", "default", 0, true, ""},
		{"unknown flag", []string{"-nope"}, "", "default", 2, true, "svc: "},
		{"version", []string{"-version"}, "", "default", 0, true, ""},
		{"positional argument", []string{"extra"}, "", "default", 2, true, `svc: unexpected arguments ["extra"]`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Setenv("FLAKEGATE_DATA_DIR", c.env)
			if c.env == "" {
				os.Unsetenv("FLAKEGATE_DATA_DIR")
			}
			fs, dir := newFS()
			var stdout, stderr strings.Builder
			code, done := ParseFlags(fs, c.args, &stdout, &stderr)
			if gotVersion := strings.HasPrefix(stdout.String(), "flakegate "); gotVersion != (c.name == "version") {
				t.Fatalf("stdout %q after %v", stdout.String(), c.args)
			}
			if code != c.code || done != c.done || (!done && *dir != c.want) || !strings.Contains(stderr.String(), c.inStderr) {
				t.Fatalf("code %d done %v dir %q stderr %q; want %d %v %q %q", code, done, *dir, stderr.String(), c.code, c.done, c.want, c.inStderr)
			}
		})
	}
}

// A FLAKEGATE_* variable that names no flag is found, with the flag it
// probably meant; known ones and other variables are not.
func TestUnknownEnv(t *testing.T) {
	fs := flag.NewFlagSet("svc", flag.ContinueOnError)
	fs.String("data-dir", "", "")
	fs.String("listen", "", "")
	fs.String("tls-cert", "", "")
	got := UnknownEnv(fs, []string{
		"FLAKEGATE_DATA_DIR=/x", "FLAKEGATE_TLS_CERT=/c", "PATH=/bin", "XFLAKEGATE_NOPE=1",
		"FLAKEGATE_LISTNE=:1", "FLAKEGATE_DATADIR=/y", "FLAKEGATE_TEST_POSTGRES_URL=postgres://", "FLAKEGATE_tls_cert=lower",
	})
	want := []UnknownVar{
		{"FLAKEGATE_DATADIR", "FLAKEGATE_DATA_DIR"},
		{"FLAKEGATE_LISTNE", "FLAKEGATE_LISTEN"},
		{"FLAKEGATE_TEST_POSTGRES_URL", ""},
	}
	if !slices.Equal(got, want) {
		t.Fatalf("UnknownEnv = %v, want %v", got, want)
	}
}

// ParseFlags reports a misspelt variable as a WARN log line and carries on.
func TestParseFlagsReportsUnknownEnv(t *testing.T) {
	t.Setenv("FLAKEGATE_DATADIR", "/typo")
	fs := flag.NewFlagSet("blobserver", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	dir := fs.String("data-dir", "default", "")
	var stderr strings.Builder
	code, done := ParseFlags(fs, nil, io.Discard, &stderr)
	if code != 0 || done || *dir != "default" {
		t.Fatalf("code %d done %v dir %q", code, done, *dir)
	}
	line := stderr.String()
	for _, want := range []string{`"level":"WARN"`, `"variable":"FLAKEGATE_DATADIR"`, `"did_you_mean":"FLAKEGATE_DATA_DIR"`, "names no flag"} {
		if !strings.Contains(line, want) {
			t.Errorf("stderr lacks %s: %q", want, line)
		}
	}
}
