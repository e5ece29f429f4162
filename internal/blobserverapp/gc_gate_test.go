package blobserverapp

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/nix-community/go-nix/pkg/nixbase32"

	"github.com/flakegate/flakegate/internal/index"
	"github.com/flakegate/flakegate/internal/nixcache"
	"github.com/flakegate/flakegate/internal/nixname"
	"github.com/flakegate/flakegate/internal/storage"
)

// A read the policy denies never refreshes a path's retention: reads are
// recorded behind the gate. A reader without rights reads one old path's
// narinfo again and again, an allowed reader reads another once; a
// collection with keep_for removes the first and keeps the second.
func TestDeniedReadsDoNotKeepPaths(t *testing.T) {
	_, authz := startFakeAuthz(t)
	dir := t.TempDir()
	flake := nixname.Flake{Org: "omnicorp", Name: "a"}
	key, _, err := nixcache.LoadOrCreateKey(filepath.Join(dir, KeyFileName), nixcache.DefaultKeyName())
	if err != nil {
		t.Fatal(err)
	}
	keys, err := nixcache.NewKeySet(key)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	idx, err := storage.OpenIndex(ctx, "sqlite://"+filepath.Join(dir, "index.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer idx.Close()
	c := idx.(index.Collectable)
	old := time.Now().Add(-40 * 24 * time.Hour)
	var hashes []string
	for i := range 2 {
		sum := sha256.Sum256([]byte{byte(i)})
		ni := &nixcache.NarInfo{
			Hash: nixbase32.EncodeToString(sum[:20]), File: nixbase32.EncodeToString(sum[:]) + ".nar.zst",
			Compression: nixname.CompressionZstd, FileHash: sum[:], FileSize: 100, NarHash: sum[:], NarSize: 200,
		}
		ni.StorePath = nixcache.StoreDir + "/" + ni.Hash + fmt.Sprint("-p", i)
		n := index.Nar{File: ni.File, Compression: ni.Compression, FileHash: nixcache.FormatHash(sum[:]), FileSize: 100,
			NarHash: nixcache.FormatHash(sum[:]), NarSize: 200, CreatedAt: old}
		if err := idx.PutNar(ctx, flake, n); err != nil {
			t.Fatal(err)
		}
		p := index.Path{Hash: ni.Hash, StorePath: ni.StorePath, NarFile: ni.File, NarHash: n.NarHash,
			NarInfo: keys.SignedNarInfo(ni), SignedBy: keys.ID(), CreatedAt: old}
		if err := c.AddPath(ctx, flake, p); err != nil {
			t.Fatal(err)
		}
		hashes = append(hashes, ni.Hash)
	}
	denied, allowed := hashes[0], hashes[1]

	s := start(t, config(func(cfg *Config) {
		cfg.DataDir, cfg.ExtAuthz = dir, authz
		cfg.ReadTouchInterval, cfg.ReadFlushInterval = time.Nanosecond, 20*time.Millisecond
	}))
	read := func(token, hash string) int {
		r, _ := http.NewRequest("GET", s.URL+"/omnicorp/a/"+hash+".narinfo", nil)
		r.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(r)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	for range 20 {
		if st := read("bad", denied); st != http.StatusNotFound {
			t.Fatalf("denied reader: %d, want the policy's 404", st)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if st := read("good", allowed); st != http.StatusOK {
		t.Fatalf("allowed reader: %d, want 200", st)
	}
	if err := s.stop(); err != nil { // writes the reads still pending
		t.Fatal(err)
	}
	// The allowed read was recorded (so the denied ones could have been).
	last := map[string]time.Time{}
	if err := c.ScanPaths(ctx, flake, func(u index.PathUse) error { last[u.Hash] = u.LastUsed; return nil }); err != nil {
		t.Fatal(err)
	}
	if !last[allowed].After(old.Add(time.Hour)) || !last[denied].Equal(old) {
		t.Fatalf("last use after the reads: allowed %v, denied %v; want the allowed one now and the denied one unchanged (%v)", last[allowed], last[denied], old)
	}

	gcfg := DefaultGCConfig()
	gcfg.DataDir, gcfg.OverrideKeepFor, gcfg.OlderThan, gcfg.InvalidateDelay = dir, true, 30*24*time.Hour, 0
	if err := RunGC(ctx, gcfg, io.Discard, slog.New(slog.NewTextHandler(io.Discard, nil))); err != nil {
		t.Fatal(err)
	}
	if _, err := idx.GetPath(ctx, flake, denied); !errors.Is(err, index.ErrNotFound) {
		t.Errorf("the path only a denied reader read: %v; want removed (ErrNotFound)", err)
	}
	if _, err := idx.GetPath(ctx, flake, allowed); err != nil {
		t.Errorf("the path an allowed reader read: %v; want kept", err)
	}
}
