package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"path"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"

	"github.com/flakegate/flakegate/internal/nixcache"
	"github.com/flakegate/flakegate/internal/nixtest"
)

// buildID is the ELF build id of the debug file in caExpr's output.
const buildID = "0123456789abcdef0123456789abcdef01234567"

// caExpr is a content-addressed derivation (ca-derivations) whose output
// holds a file and a debug info file, and whose build prints a log.
func caExpr(seed string) string {
	return fmt.Sprintf(`derivation {
  name = "%s";
  system = builtins.currentSystem;
  builder = "/bin/sh";
  args = [ "-c" "PATH=/bin:/usr/bin; echo building %s; mkdir -p $out/lib/debug/.build-id/%s && echo dwarf > $out/lib/debug/.build-id/%s/%s.debug && echo %s > $out/hello" ];
  __contentAddressed = true;
  outputHashMode = "recursive";
  outputHashAlgo = "sha256";
}`, seed, seed, buildID[:2], buildID[:2], buildID[2:], seed)
}

// TestNixFileSet pushes with real Nix (2.8, or 2.35 when it is first on
// PATH) every file of its binary-cache file set into a flake — NAR
// listings (write-nar-listing), debug info links (index-debug-info), a
// ca-derivations realisation (realisations/<id>.doi; build-trace-v2/ from
// Nix 2.34 on) and a build log (nix store copy-log) — and reads
// each back, in the flake and through the union view, as a reader of the
// flake; a reader who may not read it gets the answer an absent file gets,
// byte for byte.
func TestNixFileSet(t *testing.T) {
	for _, m := range modes {
		t.Run(string(m), func(t *testing.T) { testNixFileSet(t, startStack(t, m)) })
	}
}

func testNixFileSet(t *testing.T, s *stack) {
	const flake = "omnicorp/super-duper-secure"
	ci := s.ci(flake, "refs/heads/main")
	alice, mallory := s.user("alice", "omnicorp"), s.user("mallory", "omnicorp")

	expr := caExpr("files-ca")
	out := strings.TrimSpace(s.src.Build(expr, "ca-derivations"))
	drv := s.src.Derivation(expr, "ca-derivations")
	opts := s.nixOptions(t, ci)
	opts.Settings = map[string]string{"experimental-features": "nix-command ca-derivations"}
	if err := s.src.CopyTo(opts, s.url+"/"+flake+"?compression=zstd&write-nar-listing=true&index-debug-info=true", nixtest.Outputs(t, drv)); err != nil {
		t.Fatalf("nix copy with listings, debug info and the realisation: %v", err)
	}
	if _, err := nixtest.Run(t, opts, "nix", "--store", s.src.Root, "store", "copy-log", "--to", s.url+"/"+flake, drv); err != nil {
		t.Fatalf("nix store copy-log: %v", err)
	}
	hash := nixtest.HashPart(out)
	// Where this Nix put the output's realisation: Nix 2.8 under
	// realisations/<id>.doi (the id from `nix realisation info`), Nix ≥ 2.34
	// under build-trace-v2/<drv>/<output>.doi.
	realisation := struct {
		name, path, absent string
		check              func(body string) error
	}{name: "build trace", path: "build-trace-v2/" + path.Base(drv) + "/out.doi",
		absent: "build-trace-v2/" + strings.Repeat("1", 32) + "-x.drv/out.doi",
		check: func(b string) error {
			o, err := nixcache.CheckBuildTrace([]byte(b))
			if err == nil && "/nix/store/"+o != out {
				err = fmt.Errorf("outPath %s, want %s", o, out)
			}
			return err
		}}
	if !nixtest.AtLeast(t, 2, 34) {
		var reals []struct {
			ID      string `json:"id"`
			OutPath string `json:"outPath"`
		}
		if err := json.Unmarshal([]byte(s.src.Nix(opts, "realisation", "info", "--json", drv)), &reals); err != nil || len(reals) != 1 {
			t.Fatalf("nix realisation info: %v %v", reals, err)
		}
		realisation.name, realisation.path = "realisation", "realisations/"+reals[0].ID+".doi"
		realisation.absent = "realisations/sha256:" + strings.Repeat("0", 64) + "!out.doi"
		realisation.check = func(b string) error {
			o, err := nixcache.CheckRealisation([]byte(b), reals[0].ID)
			if err == nil && "/nix/store/"+o != out {
				err = fmt.Errorf("outPath %s, want %s", o, out)
			}
			return err
		}
	}
	files := []struct {
		name, path, absent string
		check              func(body string) error
	}{
		{"listing", hash + ".ls", nixtest.HashPart("/nix/store/"+strings.Repeat("1", 32)+"-x") + ".ls", func(b string) error {
			if !strings.Contains(b, `"hello"`) {
				return fmt.Errorf("no hello in the listing")
			}
			return nixcache.CheckListing([]byte(b))
		}},
		{"debuginfo", "debuginfo/" + buildID + ".debug", "debuginfo/" + strings.Repeat("f", 40) + ".debug", func(b string) error {
			_, err := nixcache.CheckDebugInfo([]byte(b), buildID)
			return err
		}},
		realisation,
		{"log", "log/" + path.Base(drv), "log/" + strings.Repeat("1", 32) + "-x.drv", func(b string) error {
			if !strings.Contains(b, "building files-ca") {
				return fmt.Errorf("not the build's log: %q", b)
			}
			return nil
		}},
	}
	for _, f := range files {
		t.Run(f.name, func(t *testing.T) {
			for _, prefix := range []string{"/" + flake + "/", "/"} {
				a := s.raw(t, "GET", prefix+f.path, alice, nil)
				if a.status != http.StatusOK {
					t.Fatalf("a reader of %s, GET %s: %d %s", flake, prefix+f.path, a.status, a.body)
				}
				if err := f.check(a.body); err != nil {
					t.Fatalf("GET %s: %v\n%s", prefix+f.path, err, a.body)
				}
				for _, method := range []string{"GET", "HEAD"} {
					absent := s.raw(t, method, prefix+f.absent, alice, nil)
					if absent.status != http.StatusNotFound {
						t.Fatalf("absent %s: %+v", prefix+f.absent, absent)
					}
					for _, got := range []answer{s.raw(t, method, prefix+f.path, mallory, nil), s.raw(t, method, prefix+f.absent, mallory, nil)} {
						if got != absent {
							t.Fatalf("mallory (who may not read %s), %s %s: %+v\nwant the answer to an absent file %+v", flake, method, prefix+f.path, got, absent)
						}
					}
				}
			}
		})
	}
	// The debug info link's archive is served relative to the link.
	a := s.raw(t, "GET", "/"+flake+"/debuginfo/"+buildID+".debug", alice, nil)
	var link struct{ Archive string }
	if err := json.Unmarshal([]byte(a.body), &link); err != nil {
		t.Fatal(err)
	}
	if nar := s.raw(t, "HEAD", path.Join("/"+flake+"/debuginfo", link.Archive), alice, nil); nar.status != http.StatusOK {
		t.Errorf("the debug info's archive %s: %d", link.Archive, nar.status)
	}

	t.Run("Content-Encoding round trip through the gate", func(t *testing.T) {
		enc, err := zstd.NewWriter(nil)
		if err != nil {
			t.Fatal(err)
		}
		listing := []byte(`{"version":1,"root":{"type":"regular","size":3,"executable":false,"narOffset":96}}`)
		body := enc.EncodeAll(listing, nil)
		enc.Close()
		other := hash // replaces the listing Nix wrote (a listing is replaced, as Nix rewrites it)
		put := s.send(t, "PUT", "/"+flake+"/"+other+".ls", ci, body, "Content-Encoding", "zstd")
		if put.status != http.StatusCreated {
			t.Fatalf("PUT zstd listing: %+v", put)
		}
		got := s.send(t, "GET", "/"+flake+"/"+other+".ls", alice, nil, "Accept-Encoding", "zstd")
		if got.status != http.StatusOK || got.body != string(body) || !strings.Contains(got.header, "Content-Encoding: zstd") {
			t.Fatalf("GET accepting zstd: %d %q", got.status, got.header)
		}
		if got := s.send(t, "GET", "/"+other+".ls", alice, nil, "Accept-Encoding", "gzip"); got.status != http.StatusOK || got.body != string(listing) {
			t.Fatalf("union GET not accepting zstd: %d %q %q", got.status, got.header, got.body)
		}
	})
}
