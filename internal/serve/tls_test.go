package serve

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	"log/slog"
	"math/big"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/flakegate/flakegate/internal/testutil"
)

// client is an HTTP client trusting only pool; each call of a new client
// opens a new connection.
func client(pool *x509.CertPool) *http.Client {
	return &http.Client{Transport: &http.Transport{
		TLSClientConfig:   &tls.Config{RootCAs: pool},
		ForceAttemptHTTP2: true,
	}}
}

// served fetches url and returns the serial of the certificate the server
// presented and the HTTP version spoken.
func served(t *testing.T, c *http.Client, url string) (*big.Int, int) {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	if b, _ := io.ReadAll(resp.Body); resp.StatusCode != 200 || string(b) != "ok" {
		t.Fatalf("GET %s: %d %q", url, resp.StatusCode, b)
	}
	return resp.TLS.PeerCertificates[0].SerialNumber, resp.ProtoMajor
}

// A TLS listener speaks HTTP/2, and a certificate replaced on disk while it
// serves is what new connections get, without a restart; connections
// already open keep working. A replacement that does not load keeps the
// certificate in service (and is logged once), and is picked up once fixed.
func TestRunTLSReloadsCertificate(t *testing.T) {
	dir := t.TempDir()
	files := TLSFiles{Cert: filepath.Join(dir, "tls.crt"), Key: filepath.Join(dir, "tls.key")}
	ca1 := testutil.NewCA(t, "ca one")
	serial1 := ca1.Issue(t, files.Cert, files.Key, "127.0.0.1", "localhost")
	if err := files.Check(); err != nil {
		t.Fatal(err)
	}
	logs := &testutil.LogBuffer{}
	hs := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })}
	addrs, _, _ := run(t, []Listener{{Name: "public", Addr: "127.0.0.1:0", Server: hs, TLS: files, Public: true}},
		Options{Logger: slog.New(slog.NewJSONHandler(logs, nil))})
	url := "https://" + addrs[0] + "/"

	open := client(ca1.Pool()) // keeps its connection
	if got, proto := served(t, open, url); got.Cmp(serial1) != 0 || proto != 2 {
		t.Fatalf("first connection: serial %v HTTP/%d, want %v over HTTP/2", got, proto, serial1)
	}
	// Plain HTTP on the TLS port is not served (Go answers it with a 400).
	if resp, err := http.Get("http://" + addrs[0] + "/"); err == nil {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == 200 || string(b) == "ok" {
			t.Fatalf("the TLS listener served a plain-HTTP request: %d %q", resp.StatusCode, b)
		}
	}

	// Renewed by another CA: a client trusting only the new CA connects,
	// so the new certificate is served.
	ca2 := testutil.NewCA(t, "ca two")
	serial2 := ca2.Issue(t, files.Cert, files.Key, "127.0.0.1")
	if got, _ := served(t, client(ca2.Pool()), url); got.Cmp(serial2) != 0 {
		t.Fatalf("after renewal: serial %v, want %v", got, serial2)
	}
	if _, err := client(ca1.Pool()).Get(url); err == nil {
		t.Fatal("a client trusting only the old CA still connects after the renewal")
	}
	if got, _ := served(t, open, url); got.Cmp(serial1) != 0 {
		t.Fatalf("the connection open before the renewal: serial %v, want %v (its own)", got, serial1)
	}

	// A broken key: the renewed certificate stays in service.
	if err := os.WriteFile(files.Key, []byte("not a key"), 0o600); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if got, _ := served(t, client(ca2.Pool()), url); got.Cmp(serial2) != 0 {
			t.Fatalf("with a broken key file: serial %v, want %v still", got, serial2)
		}
	}
	if n := strings.Count(logs.String(), "do not load"); n != 1 {
		t.Fatalf("broken pair logged %d times, want once:\n%s", n, logs)
	}
	serial3 := ca2.Issue(t, files.Cert, files.Key, "127.0.0.1")
	if got, _ := served(t, client(ca2.Pool()), url); got.Cmp(serial3) != 0 {
		t.Fatalf("after fixing the files: serial %v, want %v", got, serial3)
	}
	if n := strings.Count(logs.String(), "TLS certificate reloaded"); n != 2 {
		t.Fatalf("%d reloads logged, want 2:\n%s", n, logs)
	}
	if strings.Contains(logs.String(), "serving in clear") {
		t.Fatalf("TLS listener warned about clear text:\n%s", logs)
	}
}

// A public listener in clear on an address other hosts reach logs a
// warning; on loopback, with TLS, or a private listener, it does not.
func TestRunWarnsPublicInClear(t *testing.T) {
	dir := t.TempDir()
	files := TLSFiles{Cert: filepath.Join(dir, "tls.crt"), Key: filepath.Join(dir, "tls.key")}
	testutil.NewCA(t, "ca").Issue(t, files.Cert, files.Key, "127.0.0.1")
	for _, c := range []struct {
		name string
		l    Listener
		warn bool
	}{
		{"public in clear on all addresses", Listener{Addr: ":0", Public: true}, true},
		{"public in clear on 0.0.0.0", Listener{Addr: "0.0.0.0:0", Public: true}, true},
		{"public in clear on loopback", Listener{Addr: "127.0.0.1:0", Public: true}, false},
		{"public with TLS on all addresses", Listener{Addr: ":0", Public: true, TLS: files}, false},
		{"private in clear on all addresses", Listener{Addr: ":0"}, false},
		{"public on a unix socket", Listener{Addr: "unix:" + filepath.Join(dir, "s.sock"), Public: true}, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			logs := &testutil.LogBuffer{}
			c.l.Name, c.l.Server = "public", &http.Server{Handler: http.NotFoundHandler()}
			_, stop, done := run(t, []Listener{c.l}, Options{Logger: slog.New(slog.NewJSONHandler(logs, nil))})
			stop()
			<-done
			if got := strings.Contains(logs.String(), `"level":"WARN","msg":"serving in clear`); got != c.warn {
				t.Fatalf("warned %v, want %v:\n%s", got, c.warn, logs)
			}
		})
	}
}

func TestTLSFilesCheck(t *testing.T) {
	dir := t.TempDir()
	crt, key := filepath.Join(dir, "a.crt"), filepath.Join(dir, "a.key")
	crt2, key2 := filepath.Join(dir, "b.crt"), filepath.Join(dir, "b.key")
	ca := testutil.NewCA(t, "ca")
	ca.Issue(t, crt, key, "localhost")
	ca.Issue(t, crt2, key2, "localhost")
	for _, c := range []struct {
		name  string
		files TLSFiles
		err   string
	}{
		{"off", TLSFiles{}, ""},
		{"pair", TLSFiles{crt, key}, ""},
		{"cert alone", TLSFiles{Cert: crt}, "-tls-cert and -tls-key go together"},
		{"key alone", TLSFiles{Key: key}, "-tls-cert and -tls-key go together"},
		{"missing file", TLSFiles{crt, filepath.Join(dir, "nope")}, "no such file"},
		{"key of another cert", TLSFiles{crt, key2}, "private key does not match public key"},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := c.files.Check()
			if (c.err == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), c.err)) {
				t.Fatalf("Check: %v, want %q", err, c.err)
			}
		})
	}
}

// Run refuses TLS files that do not load before it binds anything.
func TestRunTLSBadFiles(t *testing.T) {
	dir := t.TempDir()
	files := TLSFiles{Cert: filepath.Join(dir, "nope.crt"), Key: filepath.Join(dir, "nope.key")}
	err := Run(t.Context(), []Listener{{Name: "public", Addr: "127.0.0.1:0", Server: &http.Server{}, TLS: files}},
		Options{Logger: discard(), Ready: func([]string) { t.Error("Ready called") }})
	if err == nil || !strings.Contains(err.Error(), "public listener TLS") {
		t.Fatalf("Run with missing certificate files: %v", err)
	}
}
