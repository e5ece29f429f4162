package main

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nix-community/go-nix/pkg/nixbase32"

	"github.com/flakegate/flakegate/internal/blobserverapp"
	"github.com/flakegate/flakegate/internal/fsutil"
	"github.com/flakegate/flakegate/internal/index/sqlite"
	"github.com/flakegate/flakegate/internal/nixcache"
	"github.com/flakegate/flakegate/internal/nixname"
)

// runIndex fills a blob server data directory's SQLite index with n paths
// owned by one flake, in one transaction (pushing a million paths through
// HTTP would take hours). The narinfos are signed by the data directory's
// key (created as the blob server would), so the server serves them as
// stored. It writes the store hashes to hashes.txt in the data directory,
// and optionally the first k narinfos as static files below an nginx root
// at the URL path the blob server serves them under.
func runIndex(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("index", flag.ContinueOnError)
	dataDir := fs.String("data-dir", "", "blob server data directory (created)")
	flakeName := fs.String("flake", "omnicorp/app", "owning flake")
	n := fs.Int("paths", 10000, "store paths to index")
	nginxRoot := fs.String("nginx-root", "", "also write narinfos as files below this directory")
	nginxPaths := fs.Int("nginx-paths", 1000, "how many narinfos to write below -nginx-root")
	spread := fs.Duration("used-spread", 0, "path i was last used i/paths × this long ago (retention benchmarks: benchdata gc); 0: all now")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *dataDir == "" || *n < 1 {
		return errors.New("index needs -data-dir and -paths ≥ 1")
	}
	flake, err := nixname.ParseFlake(*flakeName)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(*dataDir, 0o755); err != nil {
		return fmt.Errorf("create data dir: %w", err)
	}
	key, _, err := nixcache.LoadOrCreateKey(filepath.Join(*dataDir, blobserverapp.KeyFileName), nixcache.DefaultKeyName())
	if err != nil {
		return err
	}
	keys, err := nixcache.NewKeySet(key)
	if err != nil {
		return err
	}
	ctx := context.Background()
	dbPath := filepath.Join(*dataDir, "index.db")
	// Open with the index package once: it creates and migrates the schema.
	x, err := sqlite.Open(ctx, dbPath)
	if err != nil {
		return err
	}
	if err := x.Close(); err != nil {
		return fmt.Errorf("close index: %w", err)
	}

	start := time.Now()
	// Hashes sorted: path i is the i-th in key order, so each chunk appends
	// to flake_paths (rows in rowid order) and to its (hash, flake) and
	// (flake, hash) indexes instead of splitting random pages (only the
	// NAR tables and the (flake, nar_file) index take random keys).
	hashes := fakeStoreHashes(*n)
	slices.Sort(hashes)
	if err := insertPaths(ctx, dbPath, flake, hashes, keys, *spread, os.Stderr); err != nil {
		return err
	}

	// Check through the index package that what was written is what the
	// server will read.
	x, err = sqlite.Open(ctx, dbPath)
	if err != nil {
		return err
	}
	defer x.Close()
	for _, i := range []int{0, *n / 2, *n - 1} {
		want := makePath(i, hashes, keys)
		got, err := x.GetPath(ctx, flake, want.hash)
		if err != nil {
			return fmt.Errorf("verify index: %w", err)
		}
		if string(got.NarInfo) != string(want.text) || got.SignedBy != keys.ID() {
			return fmt.Errorf("verify index: path %s reads back different", want.hash)
		}
	}

	if err := fsutil.WriteFileAtomic(filepath.Join(*dataDir, "hashes.txt"), []byte(strings.Join(hashes, "\n")+"\n"), 0o644); err != nil {
		return err
	}
	if *nginxRoot != "" {
		dir := filepath.Join(*nginxRoot, flake.Org, flake.Name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("create nginx root: %w", err)
		}
		for i := range min(*nginxPaths, *n) {
			p := makePath(i, hashes, keys)
			if err := os.WriteFile(filepath.Join(dir, p.hash+".narinfo"), p.text, 0o644); err != nil {
				return fmt.Errorf("write static narinfo: %w", err)
			}
		}
	}
	fmt.Fprintf(stdout, "index %s: %d paths of %s (made and written in %s)\n",
		dbPath, *n, flake, time.Since(start).Round(time.Millisecond))
	return nil
}

type genPath struct {
	hash, storePath, narFile, refs string
	fileHash, narHash              string
	size                           int64
	text                           []byte
}

// makePaths makes the realistic signed narinfos of paths [from, to) (zstd
// NAR, 1-4 references, a deriver), signing in parallel.
func makePaths(from, to int, hashes []string, keys *nixcache.KeySet) []genPath {
	out := make([]genPath, to-from)
	workers := runtime.GOMAXPROCS(0)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := from + w; i < to; i += workers {
				out[i-from] = makePath(i, hashes, keys)
			}
		}()
	}
	wg.Wait()
	return out
}

func makePath(i int, hashes []string, keys *nixcache.KeySet) genPath {
	var seed [8]byte
	binary.LittleEndian.PutUint64(seed[:], uint64(i))
	narHash := sha256.Sum256(append([]byte("nar"), seed[:]...))
	fileHash := sha256.Sum256(append([]byte("file"), seed[:]...))
	name := fmt.Sprintf("bench-pkg-%d-1.0", i)
	base := hashes[i] + "-" + name
	refs := []string{base}
	seen := map[int]bool{i: true}
	for _, j := range []int{i - 1, i / 2, i / 3} {
		if j >= 0 && !seen[j] {
			seen[j] = true
			refs = append(refs, hashes[j]+fmt.Sprintf("-bench-pkg-%d-1.0", j))
		}
	}
	slices.Sort(refs) // Nix lists (and signs) references sorted
	size := int64(4096 + (i%97)*1024)
	ni := &nixcache.NarInfo{
		StorePath:   nixcache.StoreDir + "/" + base,
		Hash:        hashes[i],
		File:        nixbase32.EncodeToString(fileHash[:]) + ".nar.zst",
		Compression: nixname.CompressionZstd,
		FileHash:    fileHash[:],
		FileSize:    size / 3,
		NarHash:     narHash[:],
		NarSize:     size,
		References:  refs,
		Deriver:     nixbase32.EncodeToString(narHash[:20]) + "-" + name + ".drv",
		System:      "x86_64-linux",
	}
	return genPath{
		hash: ni.Hash, storePath: ni.StorePath, narFile: ni.File, refs: strings.Join(refs, " "),
		fileHash: nixcache.FormatHash(ni.FileHash), narHash: nixcache.FormatHash(ni.NarHash), size: size,
		text: keys.SignedNarInfo(ni),
	}
}

// insertChunk is how many paths insertPaths makes and commits at a time:
// memory stays bounded (10M paths held at once would need ≈ 15 GB) and the
// WAL is checkpointed between chunks instead of growing for the whole run.
const insertChunk = 100_000

// insertPaths writes the rows the index would write for each path (NAR
// record and ownership, the flake's path record), one transaction per
// chunk, reporting progress (paths, elapsed, rate) to progress.
func insertPaths(ctx context.Context, dbPath string, flake nixname.Flake, hashes []string, keys *nixcache.KeySet, spread time.Duration, progress io.Writer) error {
	// A page cache of 1 GiB: millions of random-key inserts (nars) otherwise
	// spill the same B-tree pages to the WAL over and over.
	db, err := sql.Open("sqlite", "file:"+dbPath+"?_pragma=busy_timeout(30000)&_pragma=journal_mode(WAL)&_pragma=synchronous(OFF)&_pragma=cache_size(-1048576)")
	if err != nil {
		return fmt.Errorf("open index for bulk insert: %w", err)
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	now := time.Now().UnixNano()
	start := time.Now()
	n := len(hashes)
	for from := 0; from < n; from += insertChunk {
		to := min(from+insertChunk, n)
		if err := insertChunkTx(ctx, db, flake, makePaths(from, to, hashes, keys), keys.ID(), now, from, n, spread); err != nil {
			return err
		}
		el := time.Since(start)
		fmt.Fprintf(progress, "index: %d/%d paths in %s (%.0f s per million)\n",
			to, n, el.Round(time.Second), el.Seconds()/float64(to)*1e6)
	}
	// Leave the database as the server expects it: WAL checkpointed.
	if _, err := db.ExecContext(ctx, `PRAGMA wal_checkpoint(TRUNCATE)`); err != nil {
		return fmt.Errorf("checkpoint index: %w", err)
	}
	return nil
}

// insertChunkTx inserts paths (paths [from, from+len(paths)) of n) in one
// transaction.
func insertChunkTx(ctx context.Context, db *sql.DB, flake nixname.Flake, paths []genPath, signedBy string, now int64, from, n int, spread time.Duration) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("bulk insert: begin: %w", err)
	}
	defer tx.Rollback()
	stmts := map[string]string{
		"nar":      `INSERT INTO nars (file, compression, file_hash, file_size, nar_hash, nar_size, created_at, touched_at) VALUES (?, 'zstd', ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING`,
		"narOwner": `INSERT INTO nar_owners (file, flake, touched_at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING`,
		"path":     `INSERT INTO flake_paths (flake, hash, store_path, nar_file, nar_hash, refs, narinfo, signed_by, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING`,
		"pathUse":  `INSERT INTO path_use (flake, hash, last_used) VALUES (?, ?, ?) ON CONFLICT DO NOTHING`,
	}
	prepared := map[string]*sql.Stmt{}
	for name, q := range stmts {
		s, err := tx.PrepareContext(ctx, q)
		if err != nil {
			return fmt.Errorf("bulk insert: prepare %s: %w", name, err)
		}
		defer s.Close()
		prepared[name] = s
	}
	fl := flake.String()
	for k, p := range paths {
		used := now - int64(float64(spread)*float64(from+k)/float64(n))
		if _, err := prepared["nar"].ExecContext(ctx, p.narFile, p.fileHash, p.size/3, p.narHash, p.size, used, used); err != nil {
			return fmt.Errorf("bulk insert nar %s: %w", p.narFile, err)
		}
		if _, err := prepared["narOwner"].ExecContext(ctx, p.narFile, fl, used); err != nil {
			return fmt.Errorf("bulk insert nar owner %s: %w", p.narFile, err)
		}
		if _, err := prepared["path"].ExecContext(ctx, fl, p.hash, p.storePath, p.narFile, p.narHash, p.refs, p.text, signedBy, used); err != nil {
			return fmt.Errorf("bulk insert path %s: %w", p.hash, err)
		}
		if _, err := prepared["pathUse"].ExecContext(ctx, fl, p.hash, used); err != nil {
			return fmt.Errorf("bulk insert path use %s: %w", p.hash, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("bulk insert: commit: %w", err)
	}
	return nil
}
