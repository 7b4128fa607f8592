package replay

import (
	"flag"
	"math"
	"math/rand/v2"
	"testing"
)

var propertySeed = flag.Uint64("replay.seed", 0x64726f6e656c6e6b, "seed of TestAgainstModel (reproduce a failure with -replay.seed=N)")

// opMix produces a random stream of (counter, limit) pairs shaped like a
// lossy, reordering link under attack: mostly in-order counters, late ones
// (small backward offsets, concentrated around the window edge), replays of
// recently accepted counters, far jumps forward, counters around the limit
// and around the top of the counter range.
type opMix struct {
	r      *rand.Rand
	w      uint64
	recent [64]uint64 // recently offered counters, for duplicates
	n      int
}

func (g *opMix) next(highest uint64) (c, limit uint64) {
	w := g.w
	r := g.r
	limit = noLimit
	switch p := r.IntN(100); {
	case p < 40: // in order, with small gaps from loss
		c = highest + 1 + r.Uint64N(3)
	case p < 62: // reordered: a little late
		back := r.Uint64N(w + w/8 + 2)
		if back > highest {
			back = r.Uint64N(highest + 1)
		}
		c = highest - back
	case p < 70: // late by about the window
		offsets := [...]uint64{w - 2, w - 1, w, w + 1, w - 64, w - 65, w - 63, w + 63, w + 64}
		c = highest - offsets[r.IntN(len(offsets))] // may wrap: then it is a far jump
	case p < 82: // replay of something recent
		c = g.recent[r.IntN(len(g.recent))]
	case p < 87: // jump forward
		jumps := [...]uint64{w - 1, w, w + 1, w + 64, 2 * w, 10 * w, MaxWindowSize * 2, 1 + r.Uint64N(1<<40)}
		c = highest + jumps[r.IntN(len(jumps))]
	case p < 95: // around the limit
		limit = highest + r.Uint64N(2*w)
		c = limit - 2 + r.Uint64N(4)
		if r.IntN(16) == 0 {
			limit = r.Uint64N(2) // limit 0 or 1
			c = r.Uint64N(2)
		}
	case p < 99: // anywhere near the window, arbitrary limit
		c = highest - w + r.Uint64N(3*w)
		limit = highest - w + r.Uint64N(4*w)
	default: // the top of the counter range
		c = math.MaxUint64 - r.Uint64N(3*w)
		if r.IntN(2) == 0 {
			limit = math.MaxUint64 - r.Uint64N(2)
		}
	}
	g.recent[g.n%len(g.recent)] = c
	g.n++
	return c, limit
}

func TestAgainstModel(t *testing.T) {
	seed := *propertySeed
	t.Logf("seed %#x (rerun with -replay.seed=%d)", seed, seed)

	windows := []int{0, 64, 100, 1024, 4032, 4096, MaxWindowSize}
	opsPerWindow := 1_000_000
	if testing.Short() {
		opsPerWindow /= 10
	}

	for wi, window := range windows {
		r := rand.New(rand.NewPCG(seed, uint64(wi)))
		f := newFilter(t, window)
		m := newModel(f.WindowSize())
		g := &opMix{r: r, w: uint64(f.WindowSize())}

		var accepted, overLimit, replayed, tooOld, resets int
		for i := 0; i < opsPerWindow; i++ {
			// Occasional resets keep the model small and test Reset;
			// leave the top of the range quickly.
			if r.IntN(20000) == 0 || (m.highest > math.MaxUint64-1<<20 && r.IntN(100) == 0) {
				f.Reset()
				m.reset()
				resets++
			}
			c, limit := g.next(m.highest)
			want := m.validate(c, limit)
			if !want {
				switch {
				case c >= limit:
					overLimit++
				case m.seen[c]:
					replayed++
				default:
					tooOld++
				}
			} else {
				accepted++
			}
			if got := f.ValidateCounter(c, limit); got != want {
				t.Fatalf("window %d, seed %#x, op %d: ValidateCounter(%d, %d) = %v, model says %v (highest %d)",
					window, seed, i, c, limit, got, want, m.highest)
			}
		}
		t.Logf("window %5d: %d ops: %d accepted, %d over limit, %d replayed, %d too old, %d resets",
			f.WindowSize(), opsPerWindow, accepted, overLimit, replayed, tooOld, resets)
		// The mix must exercise every outcome heavily, or the test proves little.
		for name, n := range map[string]int{"accepted": accepted, "over limit": overLimit, "replayed": replayed, "too old": tooOld} {
			if n < opsPerWindow/50 {
				t.Errorf("window %d: only %d of %d ops %s", window, n, opsPerWindow, name)
			}
		}
	}
}
