package nixtest

import (
	"errors"
	"slices"
	"strings"
	"testing"
)

func TestPushers(t *testing.T) {
	Require(t)
	if testing.Short() {
		t.Skip("builds closures in 4 stores: skipped in -short")
	}
	flakes := []string{"o/a", "o/b"}
	ps := MakePushers(t, 4, flakes, 2, "pushers-")
	for k, p := range ps {
		if p.K != k || p.Flake != flakes[k%2] || p.Store == nil || HashPart(p.Shared) == "" || HashPart(p.Own) == "" {
			t.Fatalf("pusher %d = %+v", k, p)
		}
	}
	// Same size and seed: same shared top; another size: another top.
	if ps[0].Shared != ps[2].Shared || ps[1].Shared != ps[3].Shared || ps[0].Shared == ps[1].Shared {
		t.Fatalf("shared tops %s %s %s %s: want pushers 0,2 and 1,3 alike", ps[0].Shared, ps[1].Shared, ps[2].Shared, ps[3].Shared)
	}
	if own := []string{ps[0].Own, ps[1].Own, ps[2].Own, ps[3].Own}; len(slices.Compact(slices.Sorted(slices.Values(own)))) != 4 {
		t.Fatalf("own tops not distinct: %v", own)
	}

	if got, want := ps.Tops("o/a"), []string{ps[0].Shared, ps[0].Own, ps[2].Shared, ps[2].Own}; !slices.Equal(got, want) {
		t.Errorf("Tops(o/a) = %v, want %v", got, want)
	}
	if got := ps.Tops("o/none"); got != nil {
		t.Errorf("Tops of a flake nobody pushes = %v", got)
	}

	owners := ps.Owners()
	// Shared: p0..p8 of size 9 (p0..p7 also in size 8) + 2 tops; own: 4 × 3.
	if len(owners) != 11+12 {
		t.Errorf("%d paths owned, want 23", len(owners))
	}
	both := 0
	for path, fl := range owners {
		if !slices.IsSorted(fl) || len(slices.Compact(slices.Clone(fl))) != len(fl) {
			t.Errorf("owners of %s = %v: want sorted, each once", path, fl)
		}
		if len(fl) == 2 {
			both++
		}
	}
	if both != 8 {
		t.Errorf("%d paths owned by both flakes, want the 8 shared by both sizes", both)
	}
	for _, c := range []struct {
		path string
		want []string
	}{
		{ps[0].Shared, []string{"o/a"}},
		{ps[1].Shared, []string{"o/b"}},
		{ps[2].Own, []string{"o/a"}},
		{ps[3].Own, []string{"o/b"}},
	} {
		if !slices.Equal(owners[c.path], c.want) {
			t.Errorf("owners of %s = %v, want %v", c.path, owners[c.path], c.want)
		}
	}

	if errs := ps.Push(func(Pusher) error { return nil }); len(errs) != 0 {
		t.Errorf("Push with no failure: %v", errs)
	}
	var ran [4]bool
	errs := ps.Push(func(p Pusher) error {
		ran[p.K] = true
		if p.K%2 == 1 {
			return errors.New("refused")
		}
		return nil
	})
	slices.SortFunc(errs, func(a, b error) int { return strings.Compare(a.Error(), b.Error()) })
	if len(errs) != 2 || errs[0].Error() != "pusher 1: refused" || errs[1].Error() != "pusher 3: refused" || ran != [4]bool{true, true, true, true} {
		t.Errorf("Push errors %v (ran %v), want pushers 1 and 3 refused, all run", errs, ran)
	}
}
