package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nix-community/go-nix/pkg/nixbase32"

	"github.com/flakegate/flakegate/internal/testutil"
)

// crashPath is one store path of a pusher's chain: its NAR (uploaded
// uncompressed) and the narinfo naming it and its reference.
type crashPath struct {
	hash, base string
	nar        []byte
	narinfo    string
}

// crashChain is a chain of n paths, each referring to the one before (so
// each needs the previous one pushed first, as Nix pushes a closure).
func crashChain(worker, n int) []crashPath {
	var out []crashPath
	for i := range n {
		name := fmt.Sprintf("crash-w%d-p%d", worker, i)
		h := sha256.Sum256([]byte(name))
		p := crashPath{hash: nixbase32.EncodeToString(h[:20])}
		p.base = p.hash + "-" + name
		contents := strings.Repeat(name+"\n", 1+i%7*300)
		if i%10 == 9 { // a larger NAR now and then: a kill mid-upload
			contents = strings.Repeat(name+"\n", 1<<16)
		}
		refs := ""
		if i > 0 {
			prev := out[i-1]
			refs = prev.base
			contents += "/nix/store/" + prev.base + "\n"
		}
		p.nar = narOf([]byte(contents))
		nh := sha256.Sum256(p.nar)
		p.narinfo = fmt.Sprintf("StorePath: /nix/store/%s\nURL: nar/%s\nCompression: none\nFileHash: sha256:%s\nFileSize: %d\nNarHash: sha256:%s\nNarSize: %d\nReferences: %s\n",
			p.base, narName(p.nar), nixbase32.EncodeToString(nh[:]), len(p.nar), nixbase32.EncodeToString(nh[:]), len(p.nar), refs)
		out = append(out, p)
	}
	return out
}

// pushPath uploads one path as Nix does (NAR, then narinfo) and reports
// whether the server acknowledged the narinfo.
func pushPath(ctx context.Context, base string, p crashPath) bool {
	put := func(url string, body []byte) bool {
		req, err := http.NewRequestWithContext(ctx, "PUT", url, bytes.NewReader(body))
		if err != nil {
			return false
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return false
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode/100 == 2
	}
	return put(base+"/omnicorp/a/nar/"+narName(p.nar), p.nar) &&
		put(base+"/omnicorp/a/"+p.hash+".narinfo", []byte(p.narinfo))
}

// A process crash (SIGKILL) at a random moment while four pushers upload
// chains of paths loses nothing the server acknowledged and leaves nothing
// half-written: after each restart every acknowledged path is served whole,
// every narinfo served at all (one committed just before the kill, its
// answer lost) comes with its complete NAR, no temporary file is left, and
// the pushers resume where their acknowledgements stopped. Eight crashes,
// then every chain is pushed to the end. On the filesystem with SQLite and,
// when the test services run, on S3 with PostgreSQL.
func TestKillDuringPushesLosesNothingAcknowledged(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and kills the blobserver binary: skipped in -short")
	}
	bin := buildBinary(t)
	t.Run("fs+sqlite", func(t *testing.T) { killDuringPushes(t, bin, nil) })
	t.Run("s3+postgres", func(t *testing.T) {
		pg, s3 := testutil.ScaleOutURLs(t, "crash")
		killDuringPushes(t, bin, []string{"-storage", s3, "-index", pg})
	})
}

func killDuringPushes(t *testing.T, bin string, flags []string) {
	dataDir := t.TempDir()
	const workers, perChain, crashes = 4, 150, 8
	chains := make([][]crashPath, workers)
	next := make([]int, workers) // the first path of each chain not acknowledged yet
	for w := range chains {
		chains[w] = crashChain(w, perChain)
	}
	rng := rand.New(rand.NewPCG(1, uint64(time.Now().UnixNano())))

	check := func(p *proc, round int) {
		t.Helper()
		if flags == nil { // the filesystem store's temporary files
			if e, err := os.ReadDir(filepath.Join(dataDir, "blobs", ".tmp")); err != nil || len(e) != 0 {
				t.Fatalf("round %d: temporary files after the restart: %v %v", round, e, err)
			}
		}
		served := 0
		for w, chain := range chains {
			for i, cp := range chain {
				st, info := status(t, "GET", p.URL+"/omnicorp/a/"+cp.hash+".narinfo", nil)
				if i < next[w] && st != 200 {
					t.Fatalf("round %d: path %s was acknowledged before the crash, now %d %q", round, cp.base, st, info)
				}
				if st == 404 {
					continue
				}
				if st != 200 || !strings.Contains(info, "StorePath: /nix/store/"+cp.base+"\n") {
					t.Fatalf("round %d: narinfo of %s: %d %q", round, cp.base, st, info)
				}
				served++
				if st, nar := status(t, "GET", p.URL+"/omnicorp/a/nar/"+narName(cp.nar), nil); st != 200 || nar != string(cp.nar) {
					t.Fatalf("round %d: %s is served but its NAR is not whole: %d, %d of %d bytes", round, cp.base, st, len(nar), len(cp.nar))
				}
			}
		}
		t.Logf("round %d: %d paths served, %d acknowledged", round, served, sum(next))
	}

	for round := 1; round <= crashes; round++ {
		p := startProc(t, bin, dataDir, flags...)
		check(p, round)
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		var mu sync.Mutex
		for w := range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					mu.Lock()
					i := next[w]
					mu.Unlock()
					if i == perChain || !pushPath(ctx, p.URL, chains[w][i]) {
						return
					}
					mu.Lock()
					next[w] = i + 1
					mu.Unlock()
				}
			}()
		}
		time.Sleep(time.Duration(20+rng.IntN(200)) * time.Millisecond)
		if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		<-p.done
		cancel()
		wg.Wait()
	}

	p := startProc(t, bin, dataDir, flags...)
	check(p, crashes+1)
	for w := range workers {
		for ; next[w] < perChain; next[w]++ {
			if !pushPath(context.Background(), p.URL, chains[w][next[w]]) {
				t.Fatalf("after the crashes, pushing %s failed", chains[w][next[w]].base)
			}
		}
	}
	check(p, crashes+2)
}

func sum(xs []int) int {
	n := 0
	for _, x := range xs {
		n += x
	}
	return n
}
