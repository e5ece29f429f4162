package blobserverapp

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/flakegate/flakegate/internal/nixtest"
	"github.com/flakegate/flakegate/internal/testutil"
)

// narFiles returns the NAR files on disk and their total size.
func narFiles(t *testing.T, dataDir string) (map[string]bool, int64) {
	t.Helper()
	es, err := os.ReadDir(filepath.Join(dataDir, "blobs", "nar"))
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	files := map[string]bool{}
	var total int64
	for _, e := range es {
		info, err := e.Info()
		if err != nil {
			t.Fatal(err)
		}
		files[e.Name()] = true
		total += info.Size()
	}
	return files, total
}

func put(t *testing.T, url, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPut, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// Real Nix pushes two closures into a flake, one is pinned, the other
// expires; `blobserver gc` (RunGC, its dry run first) runs while the server
// serves: the pinned closure still pulls, every path of the other answers
// 404 through the running server within seconds, and its NAR files are
// gone from disk.
func TestNixGarbageCollection(t *testing.T) {
	nixtest.Require(t)
	if testing.Short() {
		t.Skip("real-Nix garbage collection: skipped in -short")
	}
	secret, public := nixtest.GenerateKey(t, "flakegate-test-1")
	dataDir := t.TempDir()
	s := start(t, config(func(c *Config) { c.DataDir, c.SigningKeyFiles = dataDir, []string{secret} }))
	src := nixtest.NewStore(t)
	keep := src.MakeClosure(8, "gckeep")
	drop := src.MakeClosure(8, "gcdrop")
	keepClosure, dropClosure := src.Closure(keep), src.Closure(drop)
	flakeURL := s.URL + "/omnicorp/app"
	if err := src.CopyTo(nixtest.Options{}, flakeURL+"?compression=zstd", keep, drop); err != nil {
		t.Fatal(err)
	}
	if st, body := put(t, flakeURL+"/_pins/release", keep); st != 200 {
		t.Fatalf("pin: %d %s", st, body)
	}
	filesBefore, bytesBefore := narFiles(t, dataDir)
	if len(filesBefore) != len(keepClosure)+len(dropClosure) {
		t.Fatalf("%d NAR files for %d paths", len(filesBefore), len(keepClosure)+len(dropClosure))
	}
	// The NAR URLs of the dropped closure, read before the collection.
	var dropNars []string
	for _, pi := range dropClosure {
		st, body := get(t, flakeURL+"/"+nixtest.HashPart(pi.Path)+".narinfo")
		if st != 200 {
			t.Fatalf("narinfo of %s: %d", pi.Path, st)
		}
		for line := range strings.SplitSeq(body, "\n") {
			if u, ok := strings.CutPrefix(line, "URL: "); ok {
				dropNars = append(dropNars, u)
				if st, _ := get(t, flakeURL+"/"+u); st != 200 { // now in the lookup cache
					t.Fatalf("NAR %s: %d", u, st)
				}
			}
		}
	}

	retention := filepath.Join(t.TempDir(), "retention.yaml")
	if err := os.WriteFile(retention, []byte("default:\n  keep_for: 30d\ngrace: 0s\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	logs := &testutil.LogBuffer{}
	log := slog.New(slog.NewJSONHandler(logs, nil))
	gcfg := DefaultGCConfig()
	gcfg.DataDir, gcfg.RetentionFile, gcfg.OverrideKeepFor, gcfg.OlderThan = dataDir, retention, true, 0
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	// The dry run says what would go and changes nothing.
	dry := gcfg
	dry.DryRun = true
	var out bytes.Buffer
	if err := RunGC(ctx, dry, &out, log); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "omnicorp/app: would remove 9 paths") || !strings.Contains(out.String(), "expired") {
		t.Fatalf("dry run output:\n%s", out.String())
	}
	if files, _ := narFiles(t, dataDir); len(files) != len(filesBefore) {
		t.Fatalf("the dry run deleted NAR files")
	}
	if st, _ := get(t, flakeURL+"/"+nixtest.HashPart(drop)+".narinfo"); st != 200 {
		t.Fatalf("the dry run removed a path: %d", st)
	}

	out.Reset()
	if err := RunGC(ctx, gcfg, &out, log); err != nil {
		t.Fatalf("blobserver gc: %v\n%s", err, logs)
	}
	if !strings.Contains(out.String(), "omnicorp/app: removed 9 paths") || !strings.Contains(out.String(), "deleted 9 NAR files") {
		t.Fatalf("gc output:\n%s", out.String())
	}
	if !strings.Contains(logs.String(), `"msg":"garbage collection done"`) {
		t.Errorf("no log line for the collection:\n%s", logs)
	}
	// Through the running server (its lookup caches held every one of
	// these): 404 within seconds.
	deadline := time.Now().Add(5 * time.Second)
	for _, pi := range dropClosure {
		for _, u := range []string{flakeURL + "/" + nixtest.HashPart(pi.Path) + ".narinfo", s.URL + "/" + nixtest.HashPart(pi.Path) + ".narinfo"} {
			for {
				st, _ := get(t, u)
				if st == 404 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("%s still answers %d after the collection", u, st)
				}
				time.Sleep(100 * time.Millisecond)
			}
		}
	}
	for _, u := range dropNars {
		if st, _ := get(t, flakeURL+"/"+u); st != 404 {
			t.Errorf("NAR %s after the collection: %d, want 404", u, st)
		}
	}
	files, bytesAfter := narFiles(t, dataDir)
	if len(files) != len(keepClosure) || bytesAfter >= bytesBefore {
		t.Errorf("after the collection %d NAR files (%d bytes), want %d (< %d bytes)", len(files), bytesAfter, len(keepClosure), bytesBefore)
	}
	// The pinned closure pulls and verifies; the other does not.
	dst := nixtest.NewStore(t)
	if err := dst.CopyFrom(nixtest.Options{TrustedKeys: []string{public}}, flakeURL, keep); err != nil {
		t.Fatalf("pull the pinned closure: %v", err)
	}
	if err := dst.Verify([]string{public}, keep); err != nil {
		t.Fatal(err)
	}
	if err := nixtest.NewStore(t).CopyFrom(nixtest.Options{TrustedKeys: []string{public}}, flakeURL, drop); err == nil {
		t.Fatal("pulled the collected closure")
	}
	t.Logf("freed %d of %d bytes on disk; gc output:\n%s", bytesBefore-bytesAfter, bytesBefore, out.String())
}
