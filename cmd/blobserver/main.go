// Command blobserver is flakegate's Nix binary cache server: NARs and
// narinfos per flake, stored once, signed by the server's key. See
// internal/cacheserver for the HTTP surface and internal/blobserverapp for
// what runs.
//
// Every flag can also be set as FLAKEGATE_<FLAG> (e.g. FLAKEGATE_DATA_DIR)
// or in the file given by -config (lines "flag value").
//
// # Signing keys
//
// The server signs every narinfo it serves with its own ed25519 key(s), in
// Nix's format, so clients trust one key whoever pushed. Without
// -signing-key-file it creates <data-dir>/signing-key.sec (mode 0600) on
// first start. The public keys are logged at every start
// ("narinfo signing keys", field public_keys) and printed by
//
//	blobserver -data-dir DIR -print-public-key
//
// Clients add them to trusted-public-keys in nix.conf.
//
// To rotate: create a key (nix-store --generate-binary-cache-key NAME
// new.sec new.pub), restart with -signing-key-file new.sec,old.sec (every
// key signs, so clients trusting either verify; stored narinfos are
// re-signed once when first served), roll the new public key out to
// clients, then restart with -signing-key-file new.sec.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	"github.com/peterbourgon/ff/v3"

	"github.com/flakegate/flakegate/internal/blobserverapp"
	"github.com/flakegate/flakegate/internal/cacheserver"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "blobserver:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("blobserver", flag.ContinueOnError)
	var cfg blobserverapp.Config
	var keyFiles, logLevel string
	var lookupCache int
	var lim uploadLimitFlags
	maxNar := size(cacheserver.DefaultMaxNarSize)
	maxInfo := size(cacheserver.DefaultMaxNarInfoSize)
	fs.StringVar(&cfg.Listen, "listen", "127.0.0.1:8080", "public cache listener `address`")
	fs.StringVar(&cfg.InternalListen, "internal-listen", "127.0.0.1:8081", "internal listener (owners lookups for authz, /metrics, /healthz); empty disables")
	fs.StringVar(&cfg.DataDir, "data-dir", "", "data `directory` (blobs, index, generated signing key)")
	fs.StringVar(&keyFiles, "signing-key-file", "", "comma-separated Nix secret key `files`; every key signs (rotation). Default: <data-dir>/"+blobserverapp.KeyFileName+", created on first start")
	fs.StringVar(&cfg.ExtAuthz, "ext-authz", "", "ext_authz gRPC `address` for the embedded gate (host:port or unix socket path)")
	fs.StringVar(&cfg.AuthzHTTP, "authz-http", "", "authz HTTP listener `URL` (http://host:port): /_flakegate/ (token exchange) is forwarded there, as Envoy does")
	fs.StringVar(&cfg.Storage, "storage", "", "blob store `URL` (default file://<data-dir>/blobs)")
	fs.StringVar(&cfg.Index, "index", "", "index `URL` (default sqlite://<data-dir>/index.db)")
	fs.Var(&maxNar, "max-nar-size", "largest NAR (compressed or not) or build log accepted, bytes (suffixes K, M, G, T, KiB, MiB, GiB, TiB)")
	fs.Var(&maxInfo, "max-narinfo-size", "largest narinfo accepted, bytes (suffixes as -max-nar-size)")
	fs.IntVar(&cfg.Priority, "priority", cacheserver.DefaultPriority, "nix-cache-info Priority")
	fs.IntVar(&lookupCache, "lookup-cache", cacheserver.DefaultCacheEntries, "narinfo and NAR lookups kept in memory (entries each; 0 disables: every lookup reads the index)")
	fs.BoolVar(&cfg.AccessLog, "access-log", true, "log every request (JSON)")
	fs.DurationVar(&cfg.UploadIdleTimeout, "upload-idle-timeout", cacheserver.DefaultUploadIdleTimeout, "drop an upload whose client sends nothing for this long")
	lim.register(fs)
	fs.DurationVar(&cfg.ShutdownTimeout, "shutdown-timeout", blobserverapp.DefaultShutdownTimeout, "how long running uploads may take to finish after SIGTERM")
	fs.StringVar(&logLevel, "log-level", "info", "log level: debug, info, warn, error")
	fs.BoolVar(&cfg.Pprof, "pprof", false, "serve Go runtime profiles under /debug/pprof/ on -internal-listen")
	fs.String("config", "", "config `file` (lines \"flag value\")")
	printKey := fs.Bool("print-public-key", false, "print the public signing key(s) (creating the data directory's key if needed) and exit")
	if err := ff.Parse(fs, args,
		ff.WithEnvVarPrefix("FLAKEGATE"),
		ff.WithConfigFileFlag("config"),
		ff.WithConfigFileParser(ff.PlainParser),
	); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	switch {
	case lookupCache < 0:
		return fmt.Errorf("-lookup-cache %d: want a number of entries, or 0 to disable", lookupCache)
	case lookupCache == 0:
		cfg.LookupCacheEntries = -1
	default:
		cfg.LookupCacheEntries = lookupCache
	}
	for _, f := range strings.Split(keyFiles, ",") {
		if f = strings.TrimSpace(f); f != "" {
			cfg.SigningKeyFiles = append(cfg.SigningKeyFiles, f)
		}
	}
	cfg.MaxNarSize, cfg.MaxNarInfoSize = int64(maxNar), int64(maxInfo)
	if err := lim.apply(&cfg); err != nil {
		return err
	}

	var level slog.Level
	if err := level.UnmarshalText([]byte(logLevel)); err != nil {
		return fmt.Errorf("-log-level: %w", err)
	}
	log := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	slog.SetDefault(log)

	if *printKey {
		if len(cfg.SigningKeyFiles) == 0 && cfg.DataDir == "" {
			return errors.New("-print-public-key needs -data-dir or -signing-key-file")
		}
		keys, err := blobserverapp.LoadKeys(cfg, slog.New(slog.DiscardHandler))
		if err != nil {
			return err
		}
		for _, k := range keys.PublicKeys() {
			fmt.Println(k)
		}
		return nil
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	return runApp(ctx, cfg, log)
}

// runApp is blobserverapp.Run (tests replace it to see the configuration).
var runApp = blobserverapp.Run

// size is a byte count flag with optional decimal or binary suffix.
type size int64

func (s *size) String() string { return strconv.FormatInt(int64(*s), 10) }

func (s *size) Set(v string) error {
	units := []struct {
		suffix string
		mult   int64
	}{
		{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40},
		{"K", 1e3}, {"M", 1e6}, {"G", 1e9}, {"T", 1e12}, {"B", 1},
	}
	mult := int64(1)
	num := strings.TrimSpace(v)
	for _, u := range units {
		if n, ok := strings.CutSuffix(num, u.suffix); ok {
			num, mult = strings.TrimSpace(n), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n <= 0 || n > (1<<62)/mult {
		return fmt.Errorf("invalid size %q", v)
	}
	*s = size(n * mult)
	return nil
}
