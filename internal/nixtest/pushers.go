package nixtest

import (
	"fmt"
	"slices"
	"sync"
	"testing"
)

// Pusher is one of several concurrent pushers of overlapping closures: its
// own store holding Shared, the top of a closure every pusher shares (at a
// size that varies between pushers), and Own, the top of a closure only it
// has, both to be pushed into Flake.
type Pusher struct {
	K           int // index among the pushers
	Store       *Store
	Flake       string
	Shared, Own string
}

// Pushers are the pushers MakePushers made.
type Pushers []Pusher

// MakePushers makes n pushers, in parallel: pusher k pushes into
// flakes[k%len(flakes)]; its shared closure has 8+k%sizes paths seeded
// prefix+"shared" (so smaller ones are sub-closures of larger ones), its
// own closure 2 paths seeded prefix+"own-<k>". It fails the test if a store
// cannot be made.
func MakePushers(t testing.TB, n int, flakes []string, sizes int, prefix string) Pushers {
	t.Helper()
	if n < 1 || len(flakes) == 0 || sizes < 1 {
		t.Fatalf("MakePushers(%d, %v, %d): want n ≥ 1, flakes, sizes ≥ 1", n, flakes, sizes)
	}
	ps := make(Pushers, n)
	var wg sync.WaitGroup
	for k := range ps {
		wg.Go(func() {
			st := NewStore(t)
			ps[k] = Pusher{
				K:      k,
				Store:  st,
				Flake:  flakes[k%len(flakes)],
				Shared: st.MakeClosure(8+k%sizes, prefix+"shared"),
				Own:    st.MakeClosure(2, fmt.Sprintf("%sown-%d", prefix, k)),
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	return ps
}

// Push runs push for every pusher at once and returns the errors, each
// naming its pusher; none when all succeeded.
func (ps Pushers) Push(push func(p Pusher) error) []error {
	errs := make(chan error, len(ps))
	var wg sync.WaitGroup
	for _, p := range ps {
		wg.Go(func() {
			if err := push(p); err != nil {
				errs <- fmt.Errorf("pusher %d: %w", p.K, err)
			}
		})
	}
	wg.Wait()
	close(errs)
	var out []error
	for err := range errs {
		out = append(out, err)
	}
	return out
}

// Owners maps every store path the pushers pushed (their closures, read
// from their stores) to the flakes that must own it, sorted.
func (ps Pushers) Owners() map[string][]string {
	owned := map[string][]string{}
	for _, p := range ps {
		for _, pi := range p.Store.Closure(p.Shared, p.Own) {
			if !slices.Contains(owned[pi.Path], p.Flake) {
				owned[pi.Path] = append(owned[pi.Path], p.Flake)
			}
		}
	}
	for _, fl := range owned {
		slices.Sort(fl)
	}
	return owned
}

// Tops lists the top paths (Shared and Own) of the pushers into flake, in
// pusher order.
func (ps Pushers) Tops(flake string) []string {
	var tops []string
	for _, p := range ps {
		if p.Flake == flake {
			tops = append(tops, p.Shared, p.Own)
		}
	}
	return tops
}
