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
	"sort"
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
	paths := makePaths(*n, keys)
	made := time.Since(start)
	if err := insertPaths(ctx, dbPath, flake, paths, keys.ID(), *spread); err != nil {
		return err
	}

	// Check through the index package that what was written is what the
	// server will read.
	x, err = sqlite.Open(ctx, dbPath)
	if err != nil {
		return err
	}
	defer x.Close()
	for _, i := range []int{0, len(paths) / 2, len(paths) - 1} {
		got, err := x.GetPath(ctx, flake, paths[i].hash)
		if err != nil {
			return fmt.Errorf("verify index: %w", err)
		}
		if string(got.NarInfo) != string(paths[i].text) || got.SignedBy != keys.ID() {
			return fmt.Errorf("verify index: path %s reads back different", paths[i].hash)
		}
	}

	hashes := make([]string, len(paths))
	for i, p := range paths {
		hashes[i] = p.hash
	}
	if err := fsutil.WriteFileAtomic(filepath.Join(*dataDir, "hashes.txt"), []byte(strings.Join(hashes, "\n")+"\n"), 0o644); err != nil {
		return err
	}
	if *nginxRoot != "" {
		dir := filepath.Join(*nginxRoot, flake.Org, flake.Name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("create nginx root: %w", err)
		}
		for _, p := range paths[:min(*nginxPaths, len(paths))] {
			if err := os.WriteFile(filepath.Join(dir, p.hash+".narinfo"), p.text, 0o644); err != nil {
				return fmt.Errorf("write static narinfo: %w", err)
			}
		}
	}
	fmt.Fprintf(stdout, "index %s: %d paths of %s (narinfos made in %s, written in %s)\n",
		dbPath, len(paths), flake, made.Round(time.Millisecond), (time.Since(start) - made).Round(time.Millisecond))
	return nil
}

type genPath struct {
	hash, storePath, narFile, refs string
	fileHash, narHash              string
	size                           int64
	text                           []byte
}

// makePaths makes n realistic signed narinfos (zstd NAR, 1-4 references,
// a deriver), signing in parallel.
func makePaths(n int, keys *nixcache.KeySet) []genPath {
	hashes := fakeStoreHashes(n)
	out := make([]genPath, n)
	workers := runtime.GOMAXPROCS(0)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += workers {
				out[i] = makePath(i, hashes, keys)
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

// insertPaths writes the rows the index would write for each path (NAR
// record and ownership, the flake's path record) in one transaction.
func insertPaths(ctx context.Context, dbPath string, flake nixname.Flake, paths []genPath, signedBy string, spread time.Duration) error {
	// A page cache of 1 GiB: one transaction of millions of random-key
	// inserts otherwise spills the same B-tree pages to the WAL over and
	// over (a 1M-path run grew the WAL past 4 GB).
	db, err := sql.Open("sqlite", "file:"+dbPath+"?_pragma=busy_timeout(30000)&_pragma=journal_mode(WAL)&_pragma=synchronous(OFF)&_pragma=cache_size(-1048576)")
	if err != nil {
		return fmt.Errorf("open index for bulk insert: %w", err)
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("bulk insert: begin: %w", err)
	}
	defer tx.Rollback()
	stmts := map[string]string{
		"nar":      `INSERT INTO nars (file, compression, file_hash, file_size, nar_hash, nar_size, created_at, touched_at) VALUES (?, 'zstd', ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING`,
		"narOwner": `INSERT INTO nar_owners (file, flake, touched_at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING`,
		"path":     `INSERT INTO flake_paths (flake, hash, store_path, nar_file, nar_hash, refs, narinfo, signed_by, created_at, last_used) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING`,
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
	now := time.Now().UnixNano()
	fl := flake.String()
	// Insert in key order: B-tree appends instead of random page splits.
	order := make([]int, len(paths))
	for i := range order {
		order[i] = i
	}
	sort.Slice(order, func(a, b int) bool { return paths[order[a]].hash < paths[order[b]].hash })
	for _, i := range order {
		p := paths[i]
		used := now - int64(float64(spread)*float64(i)/float64(len(paths)))
		if _, err := prepared["nar"].ExecContext(ctx, p.narFile, p.fileHash, p.size/3, p.narHash, p.size, used, used); err != nil {
			return fmt.Errorf("bulk insert nar %s: %w", p.narFile, err)
		}
		if _, err := prepared["narOwner"].ExecContext(ctx, p.narFile, fl, used); err != nil {
			return fmt.Errorf("bulk insert nar owner %s: %w", p.narFile, err)
		}
		if _, err := prepared["path"].ExecContext(ctx, fl, p.hash, p.storePath, p.narFile, p.narHash, p.refs, p.text, signedBy, used, used); err != nil {
			return fmt.Errorf("bulk insert path %s: %w", p.hash, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("bulk insert: commit: %w", err)
	}
	// Leave the database as the server expects it: WAL checkpointed.
	if _, err := db.ExecContext(ctx, `PRAGMA wal_checkpoint(TRUNCATE)`); err != nil {
		return fmt.Errorf("checkpoint index: %w", err)
	}
	return nil
}
