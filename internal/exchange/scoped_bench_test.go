package exchange_test

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/nix-community/go-nix/pkg/nixbase32"

	"github.com/flakegate/flakegate/internal/index"
	"github.com/flakegate/flakegate/internal/index/sqlite"
	"github.com/flakegate/flakegate/internal/nixcache"
	"github.com/flakegate/flakegate/internal/nixname"
)

// fillClosure records n paths of flake in the blob server's index, path i
// referencing paths 2i+1 and 2i+2 (a tree: the closure of path 0 is all n),
// signed by the server's key so it serves them as stored. It returns the
// store hashes and the root's store path.
func fillClosure(b *testing.B, bs *blobServer, flake string, n int) (hashes []string, root string) {
	b.Helper()
	key, err := nixcache.ParseSecretKey(bs.secret)
	if err != nil {
		b.Fatal(err)
	}
	keys, err := nixcache.NewKeySet(key)
	if err != nil {
		b.Fatal(err)
	}
	f, err := nixname.ParseFlake(flake)
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	x, err := sqlite.Open(ctx, filepath.Join(bs.dir, "index.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer x.Close()
	hashes = make([]string, n)
	bases := make([]string, n)
	for i := range n {
		var seed [8]byte
		binary.LittleEndian.PutUint64(seed[:], uint64(i))
		h := sha256.Sum256(append([]byte("path"), seed[:]...))
		hashes[i] = nixbase32.EncodeToString(h[:20])
		bases[i] = fmt.Sprintf("%s-closure-%d", hashes[i], i)
	}
	for i := range n {
		var seed [8]byte
		binary.LittleEndian.PutUint64(seed[:], uint64(i))
		nh := sha256.Sum256(append([]byte("nar"), seed[:]...))
		fh := sha256.Sum256(append([]byte("file"), seed[:]...))
		var refs []string
		for _, j := range []int{2*i + 1, 2*i + 2} {
			if j < n {
				refs = append(refs, bases[j])
			}
		}
		ni := &nixcache.NarInfo{
			StorePath: nixcache.StoreDir + "/" + bases[i], Hash: hashes[i],
			File: nixname.NarFileName(nixbase32.EncodeToString(fh[:]), nixname.CompressionZstd), Compression: nixname.CompressionZstd,
			FileHash: fh[:], FileSize: 1000, NarHash: nh[:], NarSize: 3000, References: refs, System: "x86_64-linux",
		}
		if err := x.PutNar(ctx, f, index.Nar{File: ni.File, Compression: ni.Compression, FileHash: nixcache.FormatHash(fh[:]), FileSize: 1000,
			NarHash: nixcache.FormatHash(nh[:]), NarSize: 3000, CreatedAt: time.Now()}); err != nil {
			b.Fatal(err)
		}
		if err := x.PutPath(ctx, f, index.Path{Hash: hashes[i], StorePath: ni.StorePath, NarFile: ni.File, NarHash: nixcache.FormatHash(nh[:]),
			References: refs, NarInfo: keys.SignedNarInfo(ni), SignedBy: keys.ID(), CreatedAt: time.Now()}); err != nil {
			b.Fatal(err)
		}
	}
	return hashes, nixcache.StoreDir + "/" + bases[0]
}

// BenchmarkScopedNarInfo is a narinfo GET through the blob server's
// embedded gate and authz (real processes in one test binary, loopback),
// with a plain cache token and with a scoped token whose closure holds
// 10,000 paths, cycling over those paths: the scoped check is a set lookup
// in the cached closure. The first scoped request, which computes the
// closure (one index read per path), is timed on its own.
func BenchmarkScopedNarInfo(b *testing.B) {
	const n = 10000
	st, bs := startGated(b)
	start := time.Now()
	hashes, root := fillClosure(b, bs, "omnicorp/app", n)
	b.Logf("indexed %d paths in %s", n, time.Since(start).Round(time.Millisecond))
	plain := st.mustExchange(b, st.ghToken("omnicorp/app", "refs/heads/main")).Token
	scoped := st.mintScoped(b, "omnicorp/app", root).resp.Token
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	get := func(b *testing.B, url, tok string) {
		req, _ := http.NewRequest("GET", url, nil)
		req.Header.Set("Authorization", netrcAuth(tok))
		resp, err := client.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			b.Fatalf("GET %s: %d", url, resp.StatusCode)
		}
	}
	first := time.Now()
	get(b, bs.url+"/omnicorp/app/"+hashes[n-1]+".narinfo", scoped)
	b.Logf("first scoped request (computes the %d-path closure): %s", n, time.Since(first).Round(time.Microsecond))

	for _, c := range []struct{ name, prefix, tok string }{
		{"plain/flake", "/omnicorp/app/", plain},
		{"scoped-10k/flake", "/omnicorp/app/", scoped},
		{"plain/union", "/", plain},
		{"scoped-10k/union", "/", scoped},
	} {
		b.Run(c.name, func(b *testing.B) {
			i := 0
			for b.Loop() {
				get(b, bs.url+c.prefix+hashes[i%n]+".narinfo", c.tok)
				i += 7919 // a prime: every path in turn, not in index order
			}
		})
		b.Run(c.name+"/parallel", func(b *testing.B) {
			b.RunParallel(func(pb *testing.PB) {
				i := 0
				for pb.Next() {
					get(b, bs.url+c.prefix+hashes[i%n]+".narinfo", c.tok)
					i += 7919
				}
			})
		})
	}
}
