package cacheserver

import (
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/flakegate/flakegate/internal/nixname"
	"github.com/flakegate/flakegate/internal/route"
)

// The union view serves the earliest of the agreeing records, and a
// Deriver only when they all name it: a pusher of evil/x (a name that sorts
// first) re-pushing a path the target serves, with its own NAR file and
// Deriver, had both served to every reader of the two flakes; padded with
// empty zstd blocks the file could be as large as -max-nar-size, and the
// Deriver sent `nix log` to a log of its choosing (adversarial review,
// 2026-12-05).
func TestUnionServesTheEarliestRecord(t *testing.T) {
	const target, attacker = "omnicorp/super-duper-secure", "evil/x"
	both := http.Header{http.CanonicalHeaderKey(route.ReadableHeader): {attacker + " " + target}}
	ts := newTestServer(t, "", nil, nil)

	genuine := makePath(t, "shared-dep", nixname.CompressionZstd)
	ts.push(t, target, genuine)
	// The attacker's copy: the same NAR, another file and another deriver.
	twin := genuine.compressedAs(t, nixname.CompressionXZ)
	evilDrv := storeHash("evil-drv") + "-shared-dep.drv"
	putNar(t, ts, attacker, twin)
	info := strings.Replace(twin.NarInfo(), "Deriver: "+genuine.Hash+"-x.drv", "Deriver: "+evilDrv, 1)
	if !strings.Contains(info, evilDrv) {
		t.Fatalf("no Deriver line to replace in\n%s", twin.NarInfo())
	}
	if st, body, _ := do(t, "PUT", ts.URL+"/"+attacker+"/"+twin.Hash+".narinfo", []byte(info)); st != http.StatusCreated {
		t.Fatalf("attacker's narinfo: %d %s", st, body)
	}

	a := exchange(t, "GET", ts.URL+"/"+genuine.Hash+".narinfo", nil, both)
	if a.Status != 200 || !strings.Contains(a.Body, "URL: nar/"+genuine.FileName) {
		t.Errorf("union narinfo for a reader of both: %d, want the target's (earlier) file %s:\n%s", a.Status, genuine.FileName, a.Body)
	}
	if strings.Contains(a.Body, "Deriver:") {
		t.Errorf("the records disagree on the Deriver, but the union narinfo names one:\n%s", a.Body)
	}
	if !strings.Contains(a.Body, "Sig: ") || !strings.Contains(a.Body, "NarHash: ") {
		t.Errorf("union narinfo without its Deriver lost other lines:\n%s", a.Body)
	}
	// Each flake's own URL still serves its own record, Deriver included.
	if st, body, _ := do(t, "GET", ts.URL+"/"+attacker+"/"+twin.Hash+".narinfo", nil); st != 200 || !strings.Contains(body, "Deriver: "+evilDrv) {
		t.Errorf("the attacker's own narinfo: %d\n%s", st, body)
	}
	if st, body, _ := do(t, "GET", ts.URL+"/"+target+"/"+genuine.Hash+".narinfo", nil); st != 200 || !strings.Contains(body, "Deriver: "+genuine.Hash+"-x.drv") {
		t.Errorf("the target's own narinfo: %d\n%s", st, body)
	}
	// Readers of one flake get that flake's record whole.
	one := http.Header{http.CanonicalHeaderKey(route.ReadableHeader): {target}}
	if o := exchange(t, "GET", ts.URL+"/"+genuine.Hash+".narinfo", nil, one); o.Status != 200 || !strings.Contains(o.Body, "Deriver: "+genuine.Hash+"-x.drv") {
		t.Errorf("union narinfo for a reader of the target only: %d\n%s", o.Status, o.Body)
	}

	// Agreeing derivers are served; the earliest record wins whatever the
	// names (here the attacker was first).
	early := makePath(t, "attacker-first", nixname.CompressionXZ)
	ts.push(t, attacker, early)
	late := early.compressedAs(t, nixname.CompressionZstd)
	ts.push(t, target, late)
	b := exchange(t, "GET", ts.URL+"/"+early.Hash+".narinfo", nil, both)
	if b.Status != 200 || !strings.Contains(b.Body, "URL: nar/"+early.FileName) || !strings.Contains(b.Body, "Deriver: "+early.Hash+"-x.drv") {
		t.Errorf("union narinfo of a path evil/x pushed first: %d, want its file %s and the agreed Deriver:\n%s", b.Status, early.FileName, b.Body)
	}

	// A file padded beyond any compressor's output is refused at upload.
	bloated := genuine
	bloated.File = zstdRawBlocks(genuine.NAR, 100_000)
	bloated.FileName = fileNameOf(bloated.File, nixname.CompressionZstd)
	st, body, _ := do(t, "PUT", ts.URL+"/"+attacker+"/nar/"+bloated.FileName, bloated.File)
	if st != http.StatusBadRequest || !strings.Contains(body, "more than any compressor makes") {
		t.Errorf("a %d-byte zstd file of a %d-byte NAR: %d %q, want 400", len(bloated.File), len(genuine.NAR), st, body)
	}
}

// zstdRawBlocks is data (at most 128 KiB) as one zstd frame: emptyBlocks
// empty raw blocks (3 bytes each, no output), then data as one raw block.
func zstdRawBlocks(data []byte, emptyBlocks int) []byte {
	if len(data) > 128<<10 {
		panic("zstdRawBlocks: one raw block holds at most 128 KiB")
	}
	b := []byte{0x28, 0xb5, 0x2f, 0xfd, 0x00, 7 << 3} // magic, no content size, 128 KiB window
	for range emptyBlocks {
		b = append(b, 0, 0, 0) // raw block, size 0, not last
	}
	h := uint32(len(data))<<3 | 1 // raw, last
	b = append(b, byte(h), byte(h>>8), byte(h>>16))
	return append(b, data...)
}

// The hit cache keeps narinfos of at most maxCachedNarInfo bytes: it counts
// entries, and a narinfo may be 1 MiB (thousands of references, each held
// by the flake; before System was checked, any text in System).
func TestLargeNarInfosAreNotCached(t *testing.T) {
	ts := newTestServer(t, "", nil, nil)
	flake := nixname.Flake{Org: "omnicorp", Name: "app"}
	var refs []testPath
	for i := range 260 {
		r := makePath(t, fmt.Sprintf("reference-number-%03d", i), nixname.CompressionNone)
		ts.push(t, "omnicorp/app", r)
		refs = append(refs, r)
	}
	small := refs[0]
	big := makePath(t, "many-references", nixname.CompressionNone, refs...)
	ts.push(t, "omnicorp/app", big)
	for _, p := range []testPath{small, big} {
		for range 2 {
			if st, body, _ := do(t, "GET", ts.URL+"/omnicorp/app/"+p.Hash+".narinfo", nil); st != 200 {
				t.Fatalf("GET %s: %d %s", p.Base, st, body)
			}
		}
	}
	if _, ok := ts.hits.getNarInfo(flake, small.Hash); !ok {
		t.Error("a small narinfo read twice is not in the hit cache")
	}
	got, ok := ts.hits.getNarInfo(flake, big.Hash)
	if ok {
		t.Errorf("a narinfo of %d bytes is in the hit cache (at most %d)", len(got.NarInfo), maxCachedNarInfo)
	}
}

// An uploaded narinfo whose System is not a Nix system name is refused
// (it was any text up to 1 MiB, stored, signed and cached).
func TestNarInfoWithHugeSystemIsRefused(t *testing.T) {
	ts := newTestServer(t, "", nil, nil)
	p := makePath(t, "huge-system", nixname.CompressionNone)
	putNar(t, ts, "omnicorp/app", p)
	info := p.NarInfo() + "System: " + strings.Repeat("x", 100_000) + "\n"
	if st, body, _ := do(t, "PUT", ts.URL+"/omnicorp/app/"+p.Hash+".narinfo", []byte(info)); st != http.StatusBadRequest || !strings.Contains(body, "not a Nix system name") {
		t.Errorf("narinfo with a 100 KB System: %d %.200q, want 400", st, body)
	}
	if st, body, _ := do(t, "PUT", ts.URL+"/omnicorp/app/"+p.Hash+".narinfo", []byte(p.NarInfo()+"System: x86_64-linux\n")); st != http.StatusCreated {
		t.Errorf("narinfo with System x86_64-linux: %d %s", st, body)
	}
}
