package serve

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"time"
)

// TLSFiles are a listener's PEM certificate (chain, leaf first) and private
// key files (the -tls-cert and -tls-key flags of both processes). Both
// empty: TLS off.
type TLSFiles struct {
	Cert, Key string
}

// Enabled reports whether TLS is configured.
func (f TLSFiles) Enabled() bool { return f.Cert != "" || f.Key != "" }

// Check reports what is wrong with the pair (for a Config's Validate):
// one without the other, or files that do not load as a matching pair.
func (f TLSFiles) Check() error {
	switch {
	case !f.Enabled():
		return nil
	case f.Cert == "" || f.Key == "":
		return errors.New("-tls-cert and -tls-key go together: set both, or neither to serve in clear")
	}
	if _, err := tls.LoadX509KeyPair(f.Cert, f.Key); err != nil {
		return fmt.Errorf("-tls-cert %s / -tls-key %s: %w", f.Cert, f.Key, err)
	}
	return nil
}

// Certs serves a listener's certificate from its files and reloads it when
// either file changes (a renewal by certbot, cert-manager or a systemd
// timer): new connections get the new certificate, connections already
// open keep theirs, and the process is not restarted.
//
// Hand-written rather than an fsnotify watch, for a reason: the files are
// stat'ed at each TLS handshake (two stat calls, negligible beside the
// handshake), which follows symlinks and so also sees the atomic symlink
// swaps of Kubernetes secret volumes and certbot's live/ directory that a
// watch on the file misses, and needs no goroutine. A pair that does not
// load (a half-written renewal, a key that does not match) keeps the
// previous certificate in service and is logged once; it is tried again
// when the files change again.
type Certs struct {
	files TLSFiles
	name  string // the listener, in logs
	log   *slog.Logger

	mu         sync.Mutex
	cert       *tls.Certificate
	loaded     stamps // the files' state when cert was loaded
	failed     stamps // the files' state of the last pair that did not load
	statFailed bool   // a file could not be stat'ed (logged once)
}

// stamps identify the state of both files.
type stamps [2]stamp

type stamp struct {
	mtime time.Time
	size  int64
	ino   uint64 // a file replaced by another of the same size and mtime
}

func (s stamp) equal(o stamp) bool {
	return s.mtime.Equal(o.mtime) && s.size == o.size && s.ino == o.ino
}

func (s stamps) equal(o stamps) bool { return s[0].equal(o[0]) && s[1].equal(o[1]) }

// LoadCerts loads the pair for the listener named name; it fails when the
// pair does not load.
func LoadCerts(files TLSFiles, name string, log *slog.Logger) (*Certs, error) {
	if log == nil {
		log = slog.Default()
	}
	c := &Certs{files: files, name: name, log: log}
	st, err := c.stat()
	if err != nil {
		return nil, err
	}
	cert, err := c.load()
	if err != nil {
		return nil, err
	}
	c.cert, c.loaded = cert, st
	c.logCert("TLS certificate loaded", cert)
	return c, nil
}

func (c *Certs) stat() (stamps, error) {
	var s stamps
	for i, p := range []string{c.files.Cert, c.files.Key} {
		fi, err := os.Stat(p)
		if err != nil {
			return s, fmt.Errorf("%s listener TLS: %w", c.name, err)
		}
		s[i] = stamp{fi.ModTime(), fi.Size(), inode(fi)}
	}
	return s, nil
}

func (c *Certs) load() (*tls.Certificate, error) {
	cert, err := tls.LoadX509KeyPair(c.files.Cert, c.files.Key)
	if err != nil {
		return nil, fmt.Errorf("%s listener TLS: load %s and %s: %w", c.name, c.files.Cert, c.files.Key, err)
	}
	return &cert, nil
}

func (c *Certs) logCert(msg string, cert *tls.Certificate) {
	attrs := []any{"listener", c.name, "cert", c.files.Cert}
	if leaf := cert.Leaf; leaf != nil {
		attrs = append(attrs, "subject", leaf.Subject.String(), "dns_names", leaf.DNSNames,
			"not_after", leaf.NotAfter.UTC().Format(time.RFC3339), "serial", leaf.SerialNumber.String())
		if time.Now().After(leaf.NotAfter) {
			c.log.Warn(msg+": it has EXPIRED, clients will refuse it", attrs...)
			return
		}
	}
	c.log.Info(msg, attrs...)
}

// GetCertificate is tls.Config.GetCertificate: the current certificate,
// reloaded first when the files changed since it was loaded.
func (c *Certs) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	st, err := c.stat()
	switch {
	case err != nil:
		if !c.statFailed {
			c.statFailed = true
			c.log.Warn("TLS certificate files unreadable: serving the previous certificate", "listener", c.name, "error", err.Error())
		}
		return c.cert, nil
	case st.equal(c.loaded) || st.equal(c.failed):
		return c.cert, nil
	}
	c.statFailed = false
	cert, err := c.load()
	if err != nil {
		c.failed = st
		c.log.Warn("TLS certificate files changed but do not load: serving the previous certificate until they are fixed", "listener", c.name, "error", err.Error())
		return c.cert, nil
	}
	c.cert, c.loaded, c.failed = cert, st, stamps{}
	c.logCert("TLS certificate reloaded", cert)
	return c.cert, nil
}

// TLSConfig is the server side of a listener: TLS 1.2 at least, HTTP/2 and
// HTTP/1.1 offered, the certificate from c.
func (c *Certs) TLSConfig() *tls.Config {
	return &tls.Config{
		MinVersion:     tls.VersionTLS12,
		NextProtos:     []string{"h2", "http/1.1"},
		GetCertificate: c.GetCertificate,
	}
}

// httpsServer serves an *http.Server over TLS on a plain listener
// (ServeTLS: HTTP/2 is negotiated by ALPN).
type httpsServer struct{ *http.Server }

func (s httpsServer) Serve(l net.Listener) error { return s.ServeTLS(l, "", "") }

// Exposed reports whether a bound listener address can be reached from
// other hosts: a TCP address that is not loopback (the unspecified
// address, ":port", is reachable). Unix sockets are not.
func Exposed(a net.Addr) bool {
	ta, ok := a.(*net.TCPAddr)
	return ok && !ta.IP.IsLoopback()
}
