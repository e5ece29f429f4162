package indextest

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/flakegate/flakegate/internal/index"
	"github.com/flakegate/flakegate/internal/nixname"
)

// The garbage collector's index methods (index.Collectable), run by Run.

func collectable(t *testing.T, x index.Index) index.Collectable {
	t.Helper()
	c, ok := x.(index.Collectable)
	if !ok {
		t.Fatalf("%T does not implement index.Collectable", x)
	}
	return c
}

// t0 is an old time: paths and NARs recorded at t0 are collectable.
var t0 = micro

// push records flake's NAR i and path i (with refs) through AddPath, at t.
func push(t *testing.T, x index.Index, flake nixname.Flake, i int, at time.Time, refs ...int) {
	t.Helper()
	ctx := ctxFor(t)
	n := nar(i)
	n.CreatedAt = at
	must(t, x.PutNar(ctx, flake, n))
	var names []string
	for _, r := range refs {
		names = append(names, Hash(r)+"-pkg"+fmt.Sprint(r))
	}
	p := path(i, names...)
	p.CreatedAt = at
	must(t, collectable(t, x).AddPath(ctx, flake, p))
}

// uses returns the flake's paths as ScanPaths reports them, by hash.
func uses(t *testing.T, x index.Index, flake nixname.Flake) map[string]index.PathUse {
	t.Helper()
	out := map[string]index.PathUse{}
	must(t, collectable(t, x).ScanPaths(ctxFor(t), flake, func(u index.PathUse) error {
		if _, dup := out[u.Hash]; dup {
			t.Errorf("ScanPaths gave %s twice", u.Hash)
		}
		out[u.Hash] = u
		return nil
	}))
	return out
}

// deletePaths dooms and deletes, as a collection does when nothing is
// used meanwhile, and returns what it deleted.
func deletePaths(t *testing.T, c index.Collectable, flake nixname.Flake, hashes []string, cutoff time.Time) ([]string, error) {
	t.Helper()
	ctx := ctxFor(t)
	doomed, err := c.DoomPaths(ctx, flake, hashes, cutoff)
	if err != nil {
		return nil, err
	}
	n, err := c.DeleteDoomed(ctx, flake)
	if err == nil && n != int64(len(doomed)) {
		t.Errorf("DeleteDoomed deleted %d paths, %d were doomed", n, len(doomed))
	}
	return doomed, err
}

func runGC(t *testing.T, open func(t *testing.T) index.Index) {
	t.Run("AddPathRequiresNarAndReferences", func(t *testing.T) { testAddPath(t, open(t)) })
	t.Run("TouchPaths", func(t *testing.T) { testTouchPaths(t, open(t)) })
	t.Run("Pins", func(t *testing.T) { testPins(t, open(t)) })
	t.Run("DeletePaths", func(t *testing.T) { testDeletePaths(t, open(t)) })
	t.Run("DoomedPaths", func(t *testing.T) { testDoomedPaths(t, open(t)) })
	t.Run("ReleaseAndDoomNars", func(t *testing.T) { testReleaseNars(t, open(t)) })
	t.Run("ScanPages", func(t *testing.T) { testScanPages(t, open(t)) })
	t.Run("UsageAndGeneration", func(t *testing.T) { testUsage(t, open(t)) })
	t.Run("ScanUsageCountsNarsOnce", func(t *testing.T) { testScanUsage(t, open(t)) })
	t.Run("DropFiles", func(t *testing.T) { testDropFiles(t, open(t)) })
	t.Run("DoomLogs", func(t *testing.T) { testDoomLogs(t, open(t)) })
	t.Run("ScanFilesPredictsDropFiles", func(t *testing.T) { testScanFiles(t, open(t)) })
	t.Run("ExpiredLogsPredictsDoomLogs", func(t *testing.T) { testExpiredLogs(t, open(t)) })
	t.Run("StatsAfterCollection", func(t *testing.T) { testStatsAfterCollection(t, open(t)) })
	t.Run("LockCollector", func(t *testing.T) {
		x := open(t)
		testLock(t, x, x)
	})
}

func testAddPath(t *testing.T, x index.Index) {
	ctx := ctxFor(t)
	c := collectable(t, x)
	// No NAR owned: refused, nothing recorded.
	if err := c.AddPath(ctx, flakeA, path(1)); !errors.Is(err, index.ErrNotHeld) {
		t.Fatalf("AddPath without the NAR: %v, want ErrNotHeld", err)
	}
	if _, err := x.GetPath(ctx, flakeA, Hash(1)); !errors.Is(err, index.ErrNotFound) {
		t.Fatalf("a refused AddPath recorded the path: %v", err)
	}
	// Another flake owning the NAR does not count.
	must(t, x.PutNar(ctx, flakeB, nar(1)))
	if err := c.AddPath(ctx, flakeA, path(1)); !errors.Is(err, index.ErrNotHeld) {
		t.Fatalf("AddPath with another flake's NAR: %v, want ErrNotHeld", err)
	}
	push(t, x, flakeA, 1, t0)
	push(t, x, flakeB, 2, t0)
	// A reference the flake does not hold (another flake does): refused.
	must(t, x.PutNar(ctx, flakeA, nar(3)))
	p3 := path(3, Hash(1)+"-pkg1", Hash(2)+"-pkg2")
	if err := c.AddPath(ctx, flakeA, p3); !errors.Is(err, index.ErrNotHeld) {
		t.Fatalf("AddPath with a reference the flake lacks: %v, want ErrNotHeld", err)
	}
	if _, err := x.GetPath(ctx, flakeA, Hash(3)); !errors.Is(err, index.ErrNotFound) {
		t.Fatalf("a refused AddPath recorded the path: %v", err)
	}
	// Held references (and a self-reference) are accepted and marked used.
	now := t0.Add(time.Hour)
	p3 = path(3, Hash(1)+"-pkg1", Hash(3)+"-pkg3")
	p3.CreatedAt = now
	must(t, c.AddPath(ctx, flakeA, p3))
	u := uses(t, x, flakeA)
	if !u[Hash(1)].LastUsed.Equal(now) || !u[Hash(3)].LastUsed.Equal(now) {
		t.Errorf("after AddPath: reference used %v, path used %v; want both %v", u[Hash(1)].LastUsed, u[Hash(3)].LastUsed, now)
	}
	if got := u[Hash(3)].Refs; !slices.Equal(got, []string{Hash(1)}) {
		t.Errorf("ScanPaths refs = %v, want the reference without the self-reference", got)
	}
	if u[Hash(3)].Size != nar(3).FileSize || u[Hash(3)].NarFile != NarFile(3) {
		t.Errorf("ScanPaths = %+v, want the NAR file and its size %d", u[Hash(3)], nar(3).FileSize)
	}
	// Pushing the same content again marks it used; other content is a
	// conflict that changes nothing.
	later := now.Add(time.Hour)
	again := p3
	again.CreatedAt = later
	must(t, c.AddPath(ctx, flakeA, again))
	if got := uses(t, x, flakeA)[Hash(3)].LastUsed; !got.Equal(later) {
		t.Errorf("a re-push left last use at %v, want %v", got, later)
	}
	other := otherContents(p3, "x", 3)
	other.CreatedAt = later.Add(time.Hour)
	must(t, c.AddPath(ctx, flakeA, other))
	if got, _ := x.GetPath(ctx, flakeA, Hash(3)); got.NarHash != p3.NarHash {
		t.Errorf("a conflicting AddPath replaced the first content: %s", got.NarHash)
	}
	if got := uses(t, x, flakeA)[Hash(3)].LastUsed; !got.Equal(later) {
		t.Errorf("a conflicting push marked the path used (%v)", got)
	}
}

func testTouchPaths(t *testing.T, x index.Index) {
	ctx := ctxFor(t)
	c := collectable(t, x)
	push(t, x, flakeA, 1, t0)
	push(t, x, flakeB, 1, t0)
	t1 := t0.Add(time.Hour)
	must(t, c.TouchPaths(ctx, flakeA, []string{Hash(1), Hash(9)}, t1)) // absent hashes are ignored
	if got := uses(t, x, flakeA)[Hash(1)].LastUsed; !got.Equal(t1) {
		t.Errorf("touched path used %v, want %v", got, t1)
	}
	if got := uses(t, x, flakeB)[Hash(1)].LastUsed; !got.Equal(t0) {
		t.Errorf("touching flake A's path changed flake B's (%v)", got)
	}
	must(t, c.TouchPaths(ctx, flakeA, []string{Hash(1)}, t0)) // never back
	if got := uses(t, x, flakeA)[Hash(1)].LastUsed; !got.Equal(t1) {
		t.Errorf("an older touch moved the last use back to %v", got)
	}
	must(t, c.TouchPaths(ctx, flakeA, nil, t1))
}

func testPins(t *testing.T, x index.Index) {
	ctx := ctxFor(t)
	c := collectable(t, x)
	push(t, x, flakeA, 1, t0)
	push(t, x, flakeA, 2, t0)
	if err := c.PutPin(ctx, flakeB, index.Pin{Name: "release", Hash: Hash(1)}); !errors.Is(err, index.ErrNotFound) {
		t.Fatalf("pinning a path the flake does not hold: %v, want ErrNotFound", err)
	}
	for _, bad := range []string{"", ".x", "a/b", "a b", string(make([]byte, index.MaxPinName+1))} {
		if err := c.PutPin(ctx, flakeA, index.Pin{Name: bad, Hash: Hash(1)}); err == nil {
			t.Errorf("pin name %q accepted", bad)
		}
	}
	t1 := t0.Add(time.Hour)
	must(t, c.PutPin(ctx, flakeA, index.Pin{Name: "release", Hash: Hash(1), CreatedAt: t1}))
	must(t, c.PutPin(ctx, flakeA, index.Pin{Name: "deployed", Hash: Hash(1), CreatedAt: t1}))
	if got := uses(t, x, flakeA)[Hash(1)]; !got.Pinned || !got.LastUsed.Equal(t1) {
		t.Errorf("pinned path = %+v, want Pinned and used at %v", got, t1)
	}
	pins, err := c.Pins(ctx, flakeA)
	must(t, err)
	if len(pins) != 2 || pins[0].Name != "deployed" || pins[1].Name != "release" || pins[1].StorePath != path(1).StorePath || pins[1].Hash != Hash(1) {
		t.Fatalf("Pins = %+v", pins)
	}
	if other, err := c.Pins(ctx, flakeB); err != nil || len(other) != 0 {
		t.Errorf("another flake's pins = %v, %v; want none", other, err)
	}
	// A pinned path is not deleted, whatever the cutoff.
	del, err := deletePaths(t, c, flakeA, []string{Hash(1), Hash(2)}, t1.Add(time.Hour))
	must(t, err)
	if !slices.Equal(del, []string{Hash(2)}) {
		t.Errorf("DeletePaths = %v, want only the unpinned path", del)
	}
	// Re-pinning a name moves it; unpinning both releases the path.
	push(t, x, flakeA, 2, t1)
	must(t, c.PutPin(ctx, flakeA, index.Pin{Name: "release", Hash: Hash(2)}))
	must(t, c.DeletePin(ctx, flakeA, "deployed"))
	if err := c.DeletePin(ctx, flakeA, "deployed"); !errors.Is(err, index.ErrNotFound) {
		t.Errorf("deleting an absent pin: %v, want ErrNotFound", err)
	}
	if uses(t, x, flakeA)[Hash(1)].Pinned {
		t.Error("path 1 still pinned after its pins moved or went")
	}
}

func testDeletePaths(t *testing.T, x index.Index) {
	ctx := ctxFor(t)
	c := collectable(t, x)
	push(t, x, flakeA, 1, t0)
	push(t, x, flakeA, 2, t0.Add(2*time.Hour), 1)
	push(t, x, flakeB, 1, t0)
	// Path 1 was marked used by path 2's push: only what was used before
	// the cutoff goes.
	del, err := deletePaths(t, c, flakeA, []string{Hash(1), Hash(2)}, t0.Add(time.Hour))
	must(t, err)
	if len(del) != 0 {
		t.Errorf("DeletePaths deleted %v, used after the cutoff", del)
	}
	del, err = deletePaths(t, c, flakeA, []string{Hash(2), Hash(1), Hash(7)}, t0.Add(3*time.Hour))
	must(t, err)
	slices.Sort(del)
	want := []string{Hash(1), Hash(2)}
	slices.Sort(want)
	if !slices.Equal(del, want) {
		t.Errorf("DeletePaths = %v, want %v", del, want)
	}
	if _, err := x.GetPath(ctx, flakeA, Hash(1)); !errors.Is(err, index.ErrNotFound) {
		t.Errorf("deleted path still served: %v", err)
	}
	if _, err := x.GetPath(ctx, flakeB, Hash(1)); err != nil {
		t.Errorf("deleting flake A's path removed flake B's: %v", err)
	}
	// A deleted reference makes a push that names it fail.
	must(t, x.PutNar(ctx, flakeA, nar(3)))
	if err := c.AddPath(ctx, flakeA, path(3, Hash(1)+"-pkg1")); !errors.Is(err, index.ErrNotHeld) {
		t.Errorf("AddPath naming a deleted reference: %v, want ErrNotHeld", err)
	}
}

func testReleaseNars(t *testing.T, x index.Index) {
	ctx := ctxFor(t)
	c := collectable(t, x)
	push(t, x, flakeA, 1, t0)
	push(t, x, flakeB, 1, t0)
	push(t, x, flakeA, 2, t0)
	// NAR 3: owned by A without a path (an upload whose narinfo has not
	// come yet), recently.
	n3 := nar(3)
	n3.CreatedAt = t0.Add(2 * time.Hour)
	must(t, x.PutNar(ctx, flakeA, n3))
	cutoff := t0.Add(time.Hour)
	if got, err := c.ReleaseNars(ctx, flakeA, cutoff); err != nil || len(got) != 0 {
		t.Fatalf("ReleaseNars with every NAR named or recent = %v, %v; want none", got, err)
	}
	_, err := deletePaths(t, c, flakeA, []string{Hash(1), Hash(2)}, cutoff)
	must(t, err)
	got, err := c.ReleaseNars(ctx, flakeA, cutoff)
	must(t, err)
	slices.SortFunc(got, func(a, b index.NarUse) int { return cmpString(a.File, b.File) })
	want := []index.NarUse{{File: NarFile(1), Size: nar(1).FileSize}, {File: NarFile(2), Size: nar(2).FileSize}}
	slices.SortFunc(want, func(a, b index.NarUse) int { return cmpString(a.File, b.File) })
	if !slices.Equal(got, want) {
		t.Fatalf("ReleaseNars = %v, want %v", got, want)
	}
	if o, _ := x.Owners(ctx, nixname.KindNar, NarFile(1)); !slices.Equal(o, []nixname.Flake{flakeB}) {
		t.Errorf("owners of the shared NAR = %v, want flake B still", o)
	}
	// NAR 1 is still owned by B, NAR 3 is recent: only NAR 2 is doomed.
	doomed, err := c.DoomNars(ctx, cutoff)
	must(t, err)
	if !slices.Equal(doomed, []index.NarUse{{File: NarFile(2), Size: nar(2).FileSize}}) {
		t.Fatalf("DoomNars = %v, want only NAR 2", doomed)
	}
	// While doomed, a push of the file is refused (busy), a claim too.
	if err := x.PutNar(ctx, flakeA, nar(2)); !errors.Is(err, index.ErrBusy) {
		t.Errorf("PutNar of a doomed NAR: %v, want ErrBusy", err)
	}
	if _, err := c.ClaimNar(ctx, nar(2)); !errors.Is(err, index.ErrBusy) {
		t.Errorf("ClaimNar of a doomed NAR: %v, want ErrBusy", err)
	}
	// The record of NAR 2 was made by the push at t0: that is the claim an
	// upload then would hold.
	if err := c.OwnClaimedNar(ctx, flakeA, nar(2), t0); !errors.Is(err, index.ErrBusy) {
		t.Errorf("OwnClaimedNar of a doomed NAR: %v, want ErrBusy", err)
	}
	if o, _ := x.Owners(ctx, nixname.KindNar, NarFile(2)); len(o) != 0 {
		t.Errorf("a refused PutNar recorded an owner: %v", o)
	}
	// A doomed record is listed again until forgotten (an interrupted
	// collection's work is finished by the next).
	if again, err := c.DoomNars(ctx, cutoff); err != nil || len(again) != 1 {
		t.Errorf("DoomNars again = %v, %v; want the doomed NAR listed again", again, err)
	}
	must(t, c.ForgetNars(ctx, []string{NarFile(2), NarFile(1)})) // NAR 1 is not doomed: kept
	if _, err := x.GetNar(ctx, nixname.Flake{}, NarFile(2)); !errors.Is(err, index.ErrNotFound) {
		t.Errorf("forgotten NAR still recorded: %v", err)
	}
	if _, err := x.GetNar(ctx, nixname.Flake{}, NarFile(1)); err != nil {
		t.Errorf("ForgetNars removed a NAR that was not doomed: %v", err)
	}
	// An upload that claimed NAR 2 before it was doomed and forgotten
	// (its clock behind the collector's by more than the grace) is not
	// recorded: its blob may be gone (review r5, 2026-12-05).
	if err := c.OwnClaimedNar(ctx, flakeA, nar(2), t0); !errors.Is(err, index.ErrBusy) {
		t.Errorf("OwnClaimedNar of a collected claim: %v, want ErrBusy", err)
	}
	if _, err := x.GetNar(ctx, nixname.Flake{}, NarFile(2)); !errors.Is(err, index.ErrNotFound) {
		t.Errorf("OwnClaimedNar of a collected claim recorded it: %v", err)
	}
	// Nor once another upload claimed the file again: that record is not
	// the first upload's claim (review of the fixes, 2026-12-05: the ABA
	// case). A claim's identity is its record's creation time.
	again := nar(2)
	again.CreatedAt = t0.Add(3 * time.Hour)
	claimB, err := c.ClaimNar(ctx, again)
	must(t, err)
	if !claimB.Equal(again.CreatedAt) {
		t.Errorf("ClaimNar of a new record returned %v, want its creation time %v", claimB, again.CreatedAt)
	}
	if err := c.OwnClaimedNar(ctx, flakeA, nar(2), t0); !errors.Is(err, index.ErrBusy) {
		t.Errorf("OwnClaimedNar of a claim collected and made again by another upload: %v, want ErrBusy", err)
	}
	if _, err := x.GetNar(ctx, flakeA, NarFile(2)); !errors.Is(err, index.ErrNotFound) {
		t.Errorf("it was recorded as owned: %v", err)
	}
	// The later upload's own claim is recorded; a third upload's claim of
	// the existing record holds the same identity and is recorded too.
	must(t, c.OwnClaimedNar(ctx, flakeA, again, claimB))
	claimC, err := c.ClaimNar(ctx, nar(2))
	must(t, err)
	if !claimC.Equal(claimB) {
		t.Errorf("ClaimNar of an existing record returned %v, want its creation time %v", claimC, claimB)
	}
	must(t, c.OwnClaimedNar(ctx, flakeB, nar(2), claimC))
	if _, err := x.GetNar(ctx, flakeA, NarFile(2)); err != nil {
		t.Errorf("OwnClaimedNar of a live claim: not owned: %v", err)
	}
	must(t, x.PutNar(ctx, flakeA, nar(2)))
	// A claimed NAR is recent: not doomed even without an owner.
	n4 := nar(4)
	n4.CreatedAt = t0.Add(2 * time.Hour)
	_, err = c.ClaimNar(ctx, n4)
	must(t, err)
	if d, err := c.DoomNars(ctx, cutoff); err != nil || len(d) != 0 {
		t.Errorf("DoomNars = %v, %v; want nothing (claimed recently, owned)", d, err)
	}
}

func cmpString(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func testScanPages(t *testing.T, x index.Index) {
	old := index.ScanPage
	index.ScanPage = 3
	t.Cleanup(func() { index.ScanPage = old })
	for i := range 10 {
		push(t, x, flakeA, i, t0.Add(time.Duration(i)*time.Minute))
	}
	push(t, x, flakeB, 20, t0)
	u := uses(t, x, flakeA)
	if len(u) != 10 {
		t.Fatalf("ScanPaths over pages of 3 gave %d paths, want 10", len(u))
	}
	var last []time.Time
	must(t, collectable(t, x).ScanUsage(ctxFor(t), func(at time.Time, size int64) bool {
		last = append(last, at)
		return len(last) < 5
	}))
	if len(last) != 5 || !last[0].Equal(t0.Add(9*time.Minute)) || !slices.IsSortedFunc(last, func(a, b time.Time) int { return b.Compare(a) }) {
		t.Errorf("ScanUsage = %v, want the 5 most recent uses, newest first, then stop", last)
	}
	flakes, err := collectable(t, x).CollectableFlakes(ctxFor(t))
	must(t, err)
	if !slices.Equal(flakes, []nixname.Flake{flakeA, flakeB}) {
		t.Errorf("CollectableFlakes = %v", flakes)
	}
}

func testUsage(t *testing.T, x index.Index) {
	ctx := ctxFor(t)
	c := collectable(t, x)
	push(t, x, flakeA, 1, t0)
	push(t, x, flakeA, 2, t0)
	push(t, x, flakeB, 1, t0)
	must(t, x.PutNar(ctx, flakeB, nar(3)))
	u, err := c.Usage(ctx)
	must(t, err)
	want := []index.FlakeUsage{
		{Flake: flakeA, Paths: 2, Bytes: nar(1).FileSize + nar(2).FileSize},
		{Flake: flakeB, Paths: 1, Bytes: nar(1).FileSize + nar(3).FileSize},
	}
	if !slices.Equal(u, want) {
		t.Errorf("Usage = %+v, want %+v", u, want)
	}
	g0, err := c.Generation(ctx)
	must(t, err)
	must(t, c.BumpGeneration(ctx))
	if g1, err := c.Generation(ctx); err != nil || g1 != g0+1 {
		t.Errorf("generation after a bump = %d, %v; want %d", g1, err, g0+1)
	}
}

// ScanUsage lists each NAR file once, at the latest use of the paths (of
// any flake) naming it: the store-wide max_size counts stored bytes.
func testScanUsage(t *testing.T, x index.Index) {
	push(t, x, flakeA, 1, t0.Add(3*time.Hour))
	push(t, x, flakeB, 1, t0.Add(1*time.Hour)) // the same NAR file
	push(t, x, flakeA, 2, t0.Add(2*time.Hour))
	type use struct {
		at   time.Time
		size int64
	}
	var got []use
	must(t, collectable(t, x).ScanUsage(ctxFor(t), func(at time.Time, size int64) bool {
		got = append(got, use{at.UTC(), size})
		return true
	}))
	want := []use{{t0.Add(3 * time.Hour).UTC(), nar(1).FileSize}, {t0.Add(2 * time.Hour).UTC(), nar(2).FileSize}}
	if !slices.Equal(got, want) {
		t.Errorf("ScanUsage = %v, want %v (each NAR file once, newest use first)", got, want)
	}
}

// DropFiles deletes a flake's files whose path or NAR file the flake no
// longer holds, uploaded before the cutoff; nothing else.
func testDropFiles(t *testing.T, x index.Index) {
	ctx := ctxFor(t)
	c := collectable(t, x)
	push(t, x, flakeA, 1, t0)
	push(t, x, flakeA, 2, t0)
	push(t, x, flakeB, 1, t0)
	old := t0.Add(time.Hour)
	cutoff := t0.Add(2 * time.Hour)
	var goes, stays []index.File
	for _, kind := range nixname.FileKinds() {
		goes = append(goes, putFileAt(t, x, flakeA, kind, 1, old))
		stays = append(stays, putFileAt(t, x, flakeA, kind, 2, old), putFileAt(t, x, flakeB, kind, 1, old))
	}
	late := putFileAt(t, x, flakeA, nixname.KindListing, 3, cutoff.Add(time.Minute)) // path 3 not pushed yet, uploaded after the cutoff
	stale := putFileAt(t, x, flakeA, nixname.KindListing, 4, old)                    // path 4 never pushed
	// Flake A loses path 1 and NAR 1.
	if _, err := deletePaths(t, c, flakeA, []string{Hash(1)}, cutoff); err != nil {
		t.Fatal(err)
	}
	if rel, err := c.ReleaseNars(ctx, flakeA, cutoff); err != nil || len(rel) != 1 {
		t.Fatalf("ReleaseNars = %v, %v; want NAR 1", rel, err)
	}
	n, err := c.DropFiles(ctx, flakeA, cutoff)
	want := map[index.Kind]int64{nixname.KindListing: 2, nixname.KindDebugInfo: 1, nixname.KindRealisation: 1, nixname.KindBuildTrace: 1}
	if err != nil || !maps.Equal(n, want) {
		t.Errorf("DropFiles = %v, %v; want %v (path 1's and NAR 1's files, and the listing of a path never pushed)", n, err, want)
	}
	// Pushed again, path 1 and NAR 1 do not bring the dropped files back
	// (a realisation is kept first: a new one is accepted).
	push(t, x, flakeA, 1, t0.Add(3*time.Hour))
	push(t, x, flakeA, 3, t0.Add(3*time.Hour))
	push(t, x, flakeA, 4, t0.Add(3*time.Hour))
	for _, f := range append(goes, stale) {
		if got, err := x.GetFile(ctx, flakeA, f.Kind, f.Key); !errors.Is(err, index.ErrNotFound) {
			t.Errorf("%s %s of %v after DropFiles and a new push: %q, %v; want ErrNotFound", f.Kind, f.Key, flakeA, got.Data, err)
		}
	}
	fresh := file(nixname.KindRealisation, 1, `{"new":1}`)
	must(t, x.PutFile(ctx, flakeA, fresh))
	if got, err := x.GetFile(ctx, flakeA, fresh.Kind, fresh.Key); err != nil || string(got.Data) != `{"new":1}` {
		t.Errorf("a new realisation after the old one was dropped: %q, %v", got.Data, err)
	}
	for i, f := range stays {
		flake := flakeA
		if i%2 == 1 {
			flake = flakeB
		}
		if _, err := x.GetFile(ctx, flake, f.Kind, f.Key); err != nil {
			t.Errorf("%s %s of %v: %v; it stays", f.Kind, f.Key, flake, err)
		}
	}
	if _, err := x.GetFile(ctx, flakeA, late.Kind, late.Key); err != nil {
		t.Errorf("a listing uploaded after the cutoff, before its narinfo: %v; it stays", err)
	}
}

// scanFiles returns the flake's files ScanFiles gives, by kind and key.
func scanFiles(t *testing.T, c index.Collectable, flake nixname.Flake, before time.Time) map[string]index.FileUse {
	t.Helper()
	out := map[string]index.FileUse{}
	must(t, c.ScanFiles(ctxFor(t), flake, before, func(u index.FileUse) error {
		k := string(u.Kind) + " " + u.Key
		if _, dup := out[k]; dup {
			t.Errorf("ScanFiles gave %s twice", k)
		}
		out[k] = u
		return nil
	}))
	return out
}

// ScanFiles lists a flake's files uploaded before a time (over pages),
// whether it serves each and when its ownership of a debug info link's NAR
// file was last touched, and changes nothing; the files it says are not
// served are exactly those DropFiles then deletes, kind by kind.
func testScanFiles(t *testing.T, x index.Index) {
	old := index.ScanPage
	index.ScanPage = 3
	t.Cleanup(func() { index.ScanPage = old })
	ctx := ctxFor(t)
	c := collectable(t, x)
	push(t, x, flakeA, 1, t0)
	push(t, x, flakeA, 2, t0.Add(time.Minute))
	push(t, x, flakeB, 1, t0)
	up := t0.Add(time.Hour)
	cutoff := t0.Add(2 * time.Hour)
	kinds := nixname.FileKinds()
	for _, kind := range kinds {
		putFileAt(t, x, flakeA, kind, 1, up)
		putFileAt(t, x, flakeA, kind, 2, up)
		putFileAt(t, x, flakeB, kind, 1, up)
	}
	putFileAt(t, x, flakeA, nixname.KindListing, 3, cutoff.Add(time.Minute)) // after the cutoff: not listed
	putFileAt(t, x, flakeA, nixname.KindDebugInfo, 4, up)                    // NAR 4 not owned: not served
	got := scanFiles(t, c, flakeA, cutoff)
	if len(got) != 9 {
		t.Errorf("ScanFiles(A) over pages of 3 gave %d files, want 9 (A's 4 kinds of paths 1 and 2, and one never served): %v", len(got), got)
	}
	for k, u := range got {
		wantTouched := time.Time{}
		switch u.Needs {
		case NarFile(1):
			wantTouched = t0 // pushed then
		case NarFile(2):
			wantTouched = t0.Add(time.Minute)
		}
		if u.Served != (u.Needs != NarFile(4)) || !u.CreatedAt.Equal(up) || !u.NarTouched.Equal(wantTouched) {
			t.Errorf("ScanFiles(A) %s = %+v; want served %v, uploaded %v, NAR ownership touched %v", k, u, u.Needs != NarFile(4), up, wantTouched)
		}
	}
	if b := scanFiles(t, c, flakeB, cutoff); len(b) != 4 {
		t.Errorf("ScanFiles(B) gave %d files, want its own 4: %v", len(b), b)
	}
	// Flake A loses path 1 and NAR 1: ScanFiles then says which files
	// DropFiles deletes, and has deleted nothing itself.
	if _, err := deletePaths(t, c, flakeA, []string{Hash(1)}, cutoff); err != nil {
		t.Fatal(err)
	}
	if rel, err := c.ReleaseNars(ctx, flakeA, cutoff); err != nil || len(rel) != 1 {
		t.Fatalf("ReleaseNars = %v, %v; want NAR 1", rel, err)
	}
	predicted := map[index.Kind]int64{}
	for _, u := range scanFiles(t, c, flakeA, cutoff) {
		if !u.Served {
			predicted[u.Kind]++
		}
	}
	if again := scanFiles(t, c, flakeA, cutoff); len(again) != 9 {
		t.Errorf("a second ScanFiles gave %d files, want the same 9", len(again))
	}
	dropped, err := c.DropFiles(ctx, flakeA, cutoff)
	must(t, err)
	want := map[index.Kind]int64{nixname.KindListing: 1, nixname.KindDebugInfo: 2, nixname.KindRealisation: 1, nixname.KindBuildTrace: 1}
	if !maps.Equal(predicted, want) || !maps.Equal(dropped, want) {
		t.Errorf("files not served per ScanFiles %v, dropped by DropFiles %v; want both %v", predicted, dropped, want)
	}
	if left := scanFiles(t, c, flakeA, cutoff.Add(time.Hour)); len(left) != 5 {
		t.Errorf("after DropFiles A has %d files, want 5 (path 2's and the late one): %v", len(left), left)
	}
}

// ExpiredLogs lists what DoomLogs with the same time then dooms (and
// those already doomed), changing nothing.
func testExpiredLogs(t *testing.T, x index.Index) {
	ctx := ctxFor(t)
	c := collectable(t, x)
	drv, other, third := Hash(1)+"-a.drv", Hash(2)+"-b.drv", Hash(3)+"-c.drv"
	must(t, x.PutLog(ctx, flakeA, index.Log{Drv: drv, BlobKey: "log/a/1"}))
	must(t, x.PutLog(ctx, flakeA, index.Log{Drv: third, BlobKey: "log/a/3", Encoding: "zstd"}))
	must(t, x.PutLog(ctx, flakeB, index.Log{Drv: drv, BlobKey: "log/b/1"}))
	must(t, x.PutLog(ctx, flakeA, index.Log{Drv: other, BlobKey: "log/a/2"}))
	later := time.Now().Add(time.Hour)
	must(t, c.ClaimLog(ctx, flakeA, other, later.Add(time.Hour))) // recent: stays
	if none, err := c.ExpiredLogs(ctx, flakeA, time.Time{}); err != nil || len(none) != 0 {
		t.Errorf("ExpiredLogs(zero time) with nothing doomed = %+v, %v; want none", none, err)
	}
	want := []index.Log{{Drv: drv, BlobKey: "log/a/1"}, {Drv: third, BlobKey: "log/a/3", Encoding: "zstd"}}
	slices.SortFunc(want, func(a, b index.Log) int { return strings.Compare(a.Drv, b.Drv) }) // by derivation
	// Twice: the first changed nothing.
	for range 2 {
		if got, err := c.ExpiredLogs(ctx, flakeA, later); err != nil || !slices.Equal(got, want) {
			t.Errorf("ExpiredLogs = %+v, %v; want %+v (flake A's old logs only)", got, err, want)
		}
		if _, err := x.GetLog(ctx, flakeA, drv); err != nil {
			t.Errorf("GetLog after ExpiredLogs: %v; the log is not doomed", err)
		}
	}
	doomed, err := c.DoomLogs(ctx, flakeA, later)
	if err != nil || !slices.Equal(doomed, want) {
		t.Errorf("DoomLogs = %+v, %v; want what ExpiredLogs said, %+v", doomed, err, want)
	}
	if got, err := c.ExpiredLogs(ctx, flakeA, time.Time{}); err != nil || !slices.Equal(got, want) {
		t.Errorf("ExpiredLogs(zero time) after DoomLogs = %+v, %v; want the doomed %+v", got, err, want)
	}
	if got, err := c.ExpiredLogs(ctx, flakeB, time.Time{}); err != nil || len(got) != 0 {
		t.Errorf("ExpiredLogs(B) = %+v, %v; want none (A's doomed logs are not B's)", got, err)
	}
}

// A doomed log is hidden and cannot be replaced or claimed until
// forgotten; a claim keeps a log from being doomed.
func testDoomLogs(t *testing.T, x index.Index) {
	ctx := ctxFor(t)
	c := collectable(t, x)
	drv, other := Hash(1)+"-a.drv", Hash(2)+"-b.drv"
	must(t, x.PutLog(ctx, flakeA, index.Log{Drv: drv, BlobKey: "log/a/1"}))
	must(t, x.PutLog(ctx, flakeB, index.Log{Drv: drv, BlobKey: "log/b/1"}))
	must(t, x.PutLog(ctx, flakeA, index.Log{Drv: other, BlobKey: "log/a/2"}))
	later := time.Now().Add(time.Hour)
	must(t, c.ClaimLog(ctx, flakeA, other, later.Add(time.Hour))) // an upload in progress
	must(t, c.ClaimLog(ctx, flakeA, Hash(3)+"-new.drv", later))   // no log yet: nothing to claim
	doomed, err := c.DoomLogs(ctx, flakeA, later)
	if err != nil || len(doomed) != 1 || doomed[0] != (index.Log{Drv: drv, BlobKey: "log/a/1"}) {
		t.Fatalf("DoomLogs = %+v, %v; want flake A's log of %s only", doomed, err, drv)
	}
	if _, err := x.GetLog(ctx, flakeA, drv); !errors.Is(err, index.ErrNotFound) {
		t.Errorf("GetLog of a doomed log: %v; want ErrNotFound", err)
	}
	if o, err := x.Owners(ctx, nixname.KindLog, drv); err != nil || !slices.Equal(o, []nixname.Flake{flakeB}) {
		t.Errorf("Owners of a log doomed in A = %v, %v; want [%v]", o, err, flakeB)
	}
	if err := x.PutLog(ctx, flakeA, index.Log{Drv: drv, BlobKey: "log/a/1"}); !errors.Is(err, index.ErrBusy) {
		t.Errorf("PutLog of a doomed log: %v; want ErrBusy", err)
	}
	if err := c.ClaimLog(ctx, flakeA, drv, later); !errors.Is(err, index.ErrBusy) {
		t.Errorf("ClaimLog of a doomed log: %v; want ErrBusy", err)
	}
	if again, err := c.DoomLogs(ctx, flakeA, time.Time{}); err != nil || len(again) != 1 {
		t.Errorf("DoomLogs again = %+v, %v; want the doomed log listed again", again, err)
	}
	must(t, c.ForgetLogs(ctx, flakeA, []string{drv, other})) // other is not doomed: kept
	if _, err := x.GetLog(ctx, flakeA, other); err != nil {
		t.Errorf("ForgetLogs removed a log that was not doomed: %v", err)
	}
	must(t, x.PutLog(ctx, flakeA, index.Log{Drv: drv, BlobKey: "log/a/1"}))
	if _, err := x.GetLog(ctx, flakeA, drv); err != nil {
		t.Errorf("a log uploaded again after it was forgotten: %v", err)
	}
}

// Stats counts only flakes that still hold something after a collection
// removed everything of one.
func testStatsAfterCollection(t *testing.T, x index.Index) {
	ctx := ctxFor(t)
	c := collectable(t, x)
	push(t, x, flakeA, 1, t0)
	push(t, x, flakeB, 2, t0)
	if s, err := x.Stats(ctx); err != nil || s.Flakes != 2 {
		t.Fatalf("Stats = %+v, %v; want 2 flakes", s, err)
	}
	cutoff := t0.Add(time.Hour)
	if _, err := deletePaths(t, c, flakeB, []string{Hash(2)}, cutoff); err != nil {
		t.Fatal(err)
	}
	if _, err := c.ReleaseNars(ctx, flakeB, cutoff); err != nil {
		t.Fatal(err)
	}
	if s, err := x.Stats(ctx); err != nil || s != (index.Stats{Paths: 1, Nars: 2, Flakes: 1}) {
		t.Errorf("Stats after flake B lost everything = %+v, %v; want 1 path, 2 NAR records, 1 flake", s, err)
	}
	if fl, err := c.CollectableFlakes(ctx); err != nil || !slices.Equal(fl, []nixname.Flake{flakeA}) {
		t.Errorf("CollectableFlakes = %v, %v; want [%v]", fl, err, flakeA)
	}
	push(t, x, flakeB, 3, t0) // a flake that comes back counts again
	if s, err := x.Stats(ctx); err != nil || s.Flakes != 2 {
		t.Errorf("Stats after flake B pushed again = %+v, %v; want 2 flakes", s, err)
	}
}

// testLock checks that one collector lock is held at a time across a and
// b (one index or two instances on one database).
func testLock(t *testing.T, a, b index.Index) {
	ctx := ctxFor(t)
	unlock, err := collectable(t, a).LockCollector(ctx)
	must(t, err)
	if u2, err := collectable(t, b).LockCollector(ctx); !errors.Is(err, index.ErrBusy) {
		if u2 != nil {
			u2()
		}
		t.Fatalf("second LockCollector: %v, want ErrBusy", err)
	}
	unlock()
	u3, err := collectable(t, b).LockCollector(ctx)
	must(t, err)
	u3()
}

// A doomed path is still served but can no longer be used: no push may
// reference it, no pin name it, no read mark it used; spared, it can.
func testDoomedPaths(t *testing.T, x index.Index) {
	ctx := ctxFor(t)
	c := collectable(t, x)
	push(t, x, flakeA, 1, t0)
	push(t, x, flakeA, 2, t0)
	push(t, x, flakeB, 1, t0)
	cutoff := t0.Add(time.Hour)
	doomed, err := c.DoomPaths(ctx, flakeA, []string{Hash(1), Hash(2)}, cutoff)
	must(t, err)
	if len(doomed) != 2 {
		t.Fatalf("DoomPaths = %v, want both", doomed)
	}
	if again, err := c.DoomPaths(ctx, flakeA, []string{Hash(1)}, cutoff); err != nil || len(again) != 0 {
		t.Errorf("dooming a doomed path again = %v, %v; want nothing", again, err)
	}
	if _, err := x.GetPath(ctx, flakeA, Hash(1)); err != nil {
		t.Errorf("a doomed path is served until deleted: %v", err)
	}
	if err := c.AddPath(ctx, flakeA, path(2)); !errors.Is(err, index.ErrNotHeld) {
		t.Errorf("AddPath of a doomed path again (same content): %v, want ErrNotHeld (it is about to go)", err)
	}
	must(t, x.PutNar(ctx, flakeA, nar(3)))
	if err := c.AddPath(ctx, flakeA, path(3, Hash(1)+"-pkg1")); !errors.Is(err, index.ErrNotHeld) {
		t.Errorf("AddPath referencing a doomed path: %v, want ErrNotHeld", err)
	}
	if err := c.PutPin(ctx, flakeA, index.Pin{Name: "p", Hash: Hash(1)}); !errors.Is(err, index.ErrNotFound) {
		t.Errorf("pinning a doomed path: %v, want ErrNotFound", err)
	}
	must(t, c.TouchPaths(ctx, flakeA, []string{Hash(1)}, t0.Add(2*time.Hour)))
	if got := uses(t, x, flakeA)[Hash(1)].LastUsed; !got.Equal(t0) {
		t.Errorf("a read marked a doomed path used (%v)", got)
	}
	// Flake B's record of the same path is not doomed.
	p3 := path(3, Hash(1)+"-pkg1")
	must(t, x.PutNar(ctx, flakeB, nar(3)))
	must(t, c.AddPath(ctx, flakeB, p3))
	// Spared, path 1 can be used again; path 2 is deleted.
	must(t, c.SparePaths(ctx, flakeA, []string{Hash(1)}))
	must(t, c.AddPath(ctx, flakeA, p3))
	n, err := c.DeleteDoomed(ctx, flakeA)
	must(t, err)
	if _, err := x.GetPath(ctx, flakeA, Hash(2)); n != 1 || !errors.Is(err, index.ErrNotFound) {
		t.Errorf("DeleteDoomed deleted %d paths (path 2: %v), want path 2 only", n, err)
	}
	// What an interrupted collection left doomed is spared by nil.
	_, err = c.DoomPaths(ctx, flakeB, []string{Hash(1)}, cutoff)
	must(t, err)
	must(t, c.SparePaths(ctx, flakeB, nil))
	if n, err := c.DeleteDoomed(ctx, flakeB); err != nil || n != 0 {
		t.Errorf("DeleteDoomed after sparing everything = %d, %v", n, err)
	}
}

// putFileAt stores file i of kind for flake, uploaded at at, and returns it.
func putFileAt(t *testing.T, x index.Index, flake nixname.Flake, kind index.Kind, i int, at time.Time) index.File {
	t.Helper()
	f := file(kind, i, fmt.Sprintf(`{"i":%d}`, i))
	f.CreatedAt = at
	must(t, x.PutFile(ctxFor(t), flake, f))
	return f
}
