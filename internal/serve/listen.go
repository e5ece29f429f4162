package serve

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
)

// SocketPath is the unix socket path of a listen address ("unix:/path" or
// an absolute path), "" for host:port. A unix socket spares a client on the
// same host (the blob server's embedded gate dialling authz) the loopback
// TCP stack on every request.
func SocketPath(addr string) string {
	if p, ok := strings.CutPrefix(addr, "unix:"); ok {
		return p
	}
	if strings.HasPrefix(addr, "/") {
		return addr
	}
	return ""
}

// Listen listens on a host:port (TCP) or a unix socket (SocketPath). A
// socket file left by a process that did not stop cleanly is replaced; any
// other file is not.
func Listen(addr string) (net.Listener, error) {
	path := SocketPath(addr)
	if path == "" {
		return net.Listen("tcp", addr)
	}
	if fi, err := os.Lstat(path); err == nil && fi.Mode()&os.ModeSocket != 0 {
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("remove stale socket: %w", err)
		}
	}
	return net.Listen("unix", path)
}

// CheckHostPort reports whether addr is a TCP listen address (host:port,
// the host may be empty).
func CheckHostPort(addr string) error {
	if addr == "" {
		return errors.New("empty address")
	}
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	if port == "" {
		return errors.New("no port")
	}
	return nil
}

// ParseLogLevel parses debug, info, warn or error (the -log-level flag of
// both processes).
func ParseLogLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return 0, fmt.Errorf("unknown log level %q (want debug, info, warn or error)", s)
	}
	return l, nil
}

// NewLogger is a process's logger: JSON lines to w at level (ParseLogLevel;
// info when it does not parse: check it first, in the Config's Validate).
func NewLogger(w io.Writer, level string) *slog.Logger {
	l, err := ParseLogLevel(level)
	if err != nil {
		l = slog.LevelInfo
	}
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: l}))
}
