// Command blobserver is flakegate's Nix binary cache server: NARs and
// narinfos per flake, stored once, signed by the server's key. See
// internal/cacheserver for the HTTP surface and internal/blobserverapp for
// what runs.
//
// Every flag can also be set as FLAKEGATE_<FLAG> (e.g. FLAKEGATE_DATA_DIR)
// or in the file given by -config (lines "flag value"); defaults come from
// blobserverapp.DefaultConfig.
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
// # Single host
//
// With -policies and -issuers (authz's flags of the same names, with
// -public-url, -token-keys, … for the token exchange) the blob server runs
// the authorization core in its own process (internal/hostapp): one
// process, no -ext-authz, no -authz-http, the same decisions.
//
//	blobserver -data-dir /var/lib/flakegate -policies /etc/flakegate/policies \
//	           -issuers /etc/flakegate/issuers.yaml -public-url https://cache.example.com \
//	           -token-keys /var/lib/flakegate/token-keys
//
// To rotate: create a key (nix-store --generate-binary-cache-key NAME
// new.sec new.pub), restart with -signing-key-file new.sec,old.sec (every
// key signs, so clients trusting either verify; stored narinfos are
// re-signed once when first served), roll the new public key out to
// clients, then restart with -signing-key-file new.sec.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/flakegate/flakegate/internal/authzapp"
	"github.com/flakegate/flakegate/internal/blobserverapp"
	"github.com/flakegate/flakegate/internal/hostapp"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// runApp is blobserverapp.Run and runHost hostapp.Run (tests replace them
// to see the configuration).
var (
	runApp  = blobserverapp.Run
	runHost = hostapp.Run
)

// run parses args and serves until ctx is done (or prints the public keys);
// it returns the exit code (0 ok, 1 failure, 2 bad usage).
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "gc" {
		return runGC(ctx, args[1:], stdout, stderr)
	}
	host := hostapp.DefaultConfig()
	cfg := &host.Blob
	keyFiles := blobserverapp.ListFlag(&cfg.SigningKeyFiles)
	maxNar, maxInfo := blobserverapp.SizeFlag(&cfg.MaxNarSize), blobserverapp.SizeFlag(&cfg.MaxNarInfoSize)
	maxLog, maxDecoder := blobserverapp.SizeFlag(&cfg.MaxLogSize), blobserverapp.SizeFlag(&cfg.MaxDecoderMemory)
	minRate := blobserverapp.RateFlag(&cfg.UploadMinRate)
	fs := flag.NewFlagSet("blobserver", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&cfg.Listen, "listen", cfg.Listen, "public cache listener `address`")
	fs.StringVar(&cfg.TLS.Cert, "tls-cert", cfg.TLS.Cert, "serve the public listener over TLS (HTTP/2 on) with this PEM certificate `file` (chain, leaf first); reloaded when it changes")
	fs.StringVar(&cfg.TLS.Key, "tls-key", cfg.TLS.Key, "PEM private key `file` of -tls-cert")
	fs.StringVar(&cfg.InternalListen, "internal-listen", cfg.InternalListen, "internal listener (owners lookups for authz, /metrics, /healthz); empty disables")
	fs.StringVar(&cfg.DataDir, "data-dir", cfg.DataDir, "data `directory` (blobs, index, generated signing key)")
	fs.Var(keyFiles, "signing-key-file", "comma-separated Nix secret key `files`; every key signs (rotation). Default: <data-dir>/"+blobserverapp.KeyFileName+", created on first start")
	fs.StringVar(&cfg.ExtAuthz, "ext-authz", cfg.ExtAuthz, "ext_authz gRPC `address` for the embedded gate (host:port or unix socket path)")
	fs.BoolVar(&cfg.BehindEnvoy, "behind-envoy", cfg.BehindEnvoy, "serve without a gate: Envoy's ext_authz in front checks every request, and only Envoy can reach -listen (one of -policies, -ext-authz or -behind-envoy is required)")
	fs.StringVar(&cfg.AuthzHTTP, "authz-http", cfg.AuthzHTTP, "authz HTTP listener `URL` (http://host:port): /_flakegate/ (token exchange) is forwarded there, as Envoy does")
	fs.StringVar(&cfg.Storage, "storage", cfg.Storage, "blob store `URL` (default file://<data-dir>/blobs)")
	fs.StringVar(&cfg.Index, "index", cfg.Index, "index `URL` (default sqlite://<data-dir>/index.db)")
	fs.Var(maxNar, "max-nar-size", "largest NAR (compressed or not) accepted, bytes (suffixes K, M, G, T, KiB, MiB, GiB, TiB)")
	fs.Var(maxLog, "max-log-size", "largest build log accepted, as sent and, with a Content-Encoding, decoded, never above -max-nar-size; bytes (suffixes as -max-nar-size)")
	fs.Var(maxDecoder, "max-decoder-memory", "memory for xz and zstd decoders alive at once, in use or idle for reuse (uploads, and stored encoded files served decoded); a stream that does not fit waits up to 30s, then is answered 503; bytes (suffixes as -max-nar-size), at least 129MiB")
	fs.Var(maxInfo, "max-narinfo-size", "largest narinfo accepted, bytes (suffixes as -max-nar-size)")
	fs.IntVar(&cfg.Priority, "priority", cfg.Priority, "nix-cache-info Priority")
	fs.IntVar(&cfg.LookupCacheEntries, "lookup-cache", cfg.LookupCacheEntries, "narinfo and NAR lookups kept in memory (entries each; 0 disables: every lookup reads the index)")
	fs.DurationVar(&cfg.MissCacheTTL, "miss-cache-ttl", cfg.MissCacheTTL, "remember a narinfo found absent this long (up to -lookup-cache of them): a path pushed through another server sharing the index shows here at most this late; 0 disables")
	fs.BoolVar(&cfg.AccessLog, "access-log", cfg.AccessLog, "log every request (JSON)")
	fs.BoolVar(&cfg.RedirectNars, "redirect-nars", cfg.RedirectNars, "answer an allowed NAR GET/HEAD with 307 to a presigned S3 URL (needs -storage s3://…&region=…); the client then downloads from the object storage")
	fs.DurationVar(&cfg.RedirectExpiry, "redirect-expiry", cfg.RedirectExpiry, "how long a presigned NAR URL of -redirect-nars stays valid")
	fs.DurationVar(&cfg.UploadIdleTimeout, "upload-idle-timeout", cfg.UploadIdleTimeout, "drop an upload whose client sends nothing for this long")
	fs.DurationVar(&cfg.DownloadIdleTimeout, "download-idle-timeout", cfg.DownloadIdleTimeout, "drop a client that takes under 32 KiB of an answer in this long while the server waits for it")
	fs.Var(minRate, "upload-min-rate", "refuse (408) an upload slower than this many bytes/second, averaged over the last 30s from 30s into the upload on (suffixes as -max-nar-size; 0 disables)")
	fs.DurationVar(&cfg.UploadMaxDuration, "upload-max-duration", cfg.UploadMaxDuration, "refuse (408) an upload body that takes longer than this (0 disables)")
	fs.Int64Var(&cfg.MaxExpansion, "max-expansion", cfg.MaxExpansion, "refuse (413) a compressed NAR or encoded build log that decompresses to more than this many times its size, plus 1 MiB (0 disables)")
	fs.IntVar(&cfg.MaxUploadsPerSubject, "max-uploads-per-subject", cfg.MaxUploadsPerSubject, "concurrent uploads allowed to one subject (the gate's x-flakegate-subject); more get 429 (0 disables)")
	fs.DurationVar(&cfg.ShutdownTimeout, "shutdown-timeout", cfg.ShutdownTimeout, "how long running uploads may take to finish after SIGTERM")
	fs.StringVar(&cfg.LogLevel, "log-level", cfg.LogLevel, "log level: debug, info, warn, error")
	fs.BoolVar(&cfg.Pprof, "pprof", cfg.Pprof, "serve Go runtime profiles under /debug/pprof/ on -internal-listen")
	authzapp.CoreFlags(fs, &host.Authz)
	check := fs.Bool("check", false, "single host: validate -issuers and -policies as `authz -check` does (compile, run *_test.rego, the denylist), print the result and exit")
	fs.StringVar(&cfg.RetentionFile, "retention", cfg.RetentionFile, "retention `file` (YAML: keep_for, max_size per flake; see blobserver gc -h); read anew before each collection")
	fs.DurationVar(&cfg.GCInterval, "gc-interval", cfg.GCInterval, "run a garbage collection this often (0 disables: run `blobserver gc` instead)")
	fs.DurationVar(&cfg.ReadTouchInterval, "read-touch-interval", cfg.ReadTouchInterval, "record a read of a flake's path as a use (retention) at most once per this long (0: reads are not recorded)")
	fs.DurationVar(&cfg.ReadFlushInterval, "read-flush-interval", cfg.ReadFlushInterval, "write the recorded reads this often, batched")
	printKey := fs.Bool("print-public-key", false, "print the public signing key(s) (creating the data directory's key if needed) and exit")

	if code, done := blobserverapp.ParseFlags(fs, args, stdout, stderr); done {
		return code
	}

	if *printKey {
		if err := blobserverapp.PrintPublicKeys(*cfg, stdout); err != nil {
			fmt.Fprintf(stderr, "blobserver: %v\n", err)
			return 1
		}
		return 0
	}

	// Any of authz's flags (-policies, -issuers, …): the authorization core
	// runs in this process (single host), and its Validate says what is
	// missing.
	single := setAny(fs, coreFlagNames())
	if *check {
		if err := authzapp.CheckConfig(ctx, host.Authz, stdout); err != nil {
			fmt.Fprintln(stdout, "blobserver -check: FAILED")
			return 1
		}
		fmt.Fprintln(stdout, "blobserver -check: OK")
		return 0
	}
	validate := cfg.Validate
	if single {
		validate = host.Validate
	}
	if err := validate(); err != nil {
		fmt.Fprintf(stderr, "blobserver: invalid configuration:\n%v\n", err)
		return 1
	}
	log := cfg.NewLogger(stderr)
	slog.SetDefault(log)
	var err error
	if single {
		err = runHost(ctx, host, log)
	} else {
		err = runApp(ctx, *cfg, log)
	}
	if err != nil {
		log.Error("blobserver stopped with an error", "error", err.Error())
		return 1
	}
	return 0
}

// coreFlagNames are the names authzapp.CoreFlags registers.
func coreFlagNames() map[string]bool {
	fs := flag.NewFlagSet("", flag.ContinueOnError)
	cfg := authzapp.DefaultConfig()
	authzapp.CoreFlags(fs, &cfg)
	names := map[string]bool{}
	fs.VisitAll(func(f *flag.Flag) { names[f.Name] = true })
	return names
}

// setAny reports whether any of names was set (on the command line, in
// the environment or in the -config file).
func setAny(fs *flag.FlagSet, names map[string]bool) bool {
	found := false
	fs.Visit(func(f *flag.Flag) { found = found || names[f.Name] })
	return found
}

// runGCApp is blobserverapp.RunGC (tests replace it).
var runGCApp = blobserverapp.RunGC

// runGC is `blobserver gc`: one garbage collection over the same storage
// as the server's, while servers keep serving.
func runGC(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cfg := blobserverapp.DefaultGCConfig()
	fs := flag.NewFlagSet("blobserver gc", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, `usage: blobserver gc [flags]

Removes from each flake the store paths its retention does not keep, and
from storage the NAR files no flake owns any more. Safe while servers
serve the same storage: what it removes is a 404 through them within
seconds; with PostgreSQL one collection runs at a time.

Retention file (-retention, YAML):
  default: {keep_for: 30d}          # after the last push or read
  max_size: 2TB                     # whole store, least recently used first
  grace: 1h                         # nothing used this recently goes
  flakes:
    omnicorp/app: {keep_for: 90d, max_size: 50GB}

Flags:
`)
		fs.PrintDefaults()
	}
	fs.StringVar(&cfg.DataDir, "data-dir", cfg.DataDir, "the server's data `directory`")
	fs.StringVar(&cfg.Storage, "storage", cfg.Storage, "blob store `URL` (default file://<data-dir>/blobs)")
	fs.StringVar(&cfg.Index, "index", cfg.Index, "index `URL` (default sqlite://<data-dir>/index.db)")
	fs.StringVar(&cfg.RetentionFile, "retention", cfg.RetentionFile, "retention `file` (without: nothing expires by age)")
	fs.BoolVar(&cfg.DryRun, "dry-run", cfg.DryRun, "print per flake what would be removed (paths, bytes, why; files by kind; expired build logs, bytes) and change nothing")
	olderThan := fs.String("older-than", "", "`duration` (12h, 30d) replacing every flake's keep_for for this run (pins and closures still kept)")
	fs.BoolVar(&cfg.Check, "check", cfg.Check, "check the -retention file, print what it says and exit (non-zero when invalid)")
	fs.DurationVar(&cfg.InvalidateDelay, "invalidate-delay", cfg.InvalidateDelay, "wait between removing records and deleting blobs, for running servers to drop cached lookups")
	fs.StringVar(&cfg.LogLevel, "log-level", cfg.LogLevel, "log level: debug, info, warn, error")
	if code, done := blobserverapp.ParseFlags(fs, args, stdout, stderr); done {
		return code
	}
	if *olderThan != "" {
		d, err := blobserverapp.ParseDuration(*olderThan)
		if err != nil {
			fmt.Fprintf(stderr, "blobserver gc: -older-than: %v\n", err)
			return 2
		}
		cfg.OlderThan, cfg.OverrideKeepFor = d, true
	}
	if err := cfg.Validate(); err != nil {
		fmt.Fprintf(stderr, "blobserver gc: invalid configuration:\n%v\n", err)
		return 1
	}
	log := cfg.NewLogger(stderr)
	if err := runGCApp(ctx, cfg, stdout, log); err != nil {
		fmt.Fprintf(stderr, "blobserver gc: %v\n", err)
		return 1
	}
	return 0
}
