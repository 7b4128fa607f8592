package replay

import (
	"fmt"
	"math"
	"testing"
)

const noLimit = math.MaxUint64

// model is the naive reference the Filter is checked against: a set of every
// counter ever accepted plus the highest one. It is deliberately written from
// the specification, not from the implementation:
//
//	accept = c < limit && !seen[c] && (noneSeenYet || c > highest || highest-c < W)
type model struct {
	w       uint64
	seen    map[uint64]bool
	any     bool // noneSeenYet == !any
	highest uint64
}

func newModel(windowSize int) *model {
	return &model{w: uint64(windowSize), seen: make(map[uint64]bool)}
}

func (m *model) validate(c, limit uint64) bool {
	ok := c < limit && !m.seen[c] && (!m.any || c > m.highest || m.highest-c < m.w)
	if ok {
		m.seen[c] = true
		if !m.any || c > m.highest {
			m.highest = c
		}
		m.any = true
	}
	return ok
}

func (m *model) reset() {
	clear(m.seen)
	m.any = false
	m.highest = 0
}

// newFilter returns a zero Filter for windowSize 0 and an initialised one
// otherwise.
func newFilter(t testing.TB, windowSize int) *Filter {
	t.Helper()
	f := new(Filter)
	if windowSize != 0 && !f.Init(windowSize) {
		t.Fatalf("Init(%d) = false", windowSize)
	}
	return f
}

func TestWindowEdges(t *testing.T) {
	const W = DefaultWindowSize

	type step struct {
		c, limit uint64
		want     bool
		reset    bool // call Reset instead of ValidateCounter
	}
	ok := func(c uint64) step { return step{c: c, limit: noLimit, want: true} }
	no := func(c uint64) step { return step{c: c, limit: noLimit, want: false} }
	lim := func(c, limit uint64, want bool) step { return step{c: c, limit: limit, want: want} }
	reset := step{reset: true}

	tests := []struct {
		name   string
		window int // 0: zero Filter
		wantW  int
		steps  []step
	}{
		{"in order", 0, W, []step{ok(0), ok(1), ok(2), ok(3), ok(63), ok(64), ok(65), ok(1000)}},
		{"duplicates", 0, W, []step{ok(0), no(0), ok(1), no(1), no(0), ok(5), no(5), ok(3), no(3), no(5)}},
		{"counter 0 twice", 0, W, []step{ok(0), no(0)}},
		{"counter 0 late", 0, W, []step{ok(7), ok(0), no(0), no(7)}},
		{"exactly window-1 behind", 0, W, []step{ok(W + 100), ok(101), no(101)}},
		{"exactly window behind", 0, W, []step{ok(W + 100), no(100)}},
		{"window+1 behind", 0, W, []step{ok(W + 100), no(99)}},
		{"window-1 behind of counter 0", 0, W, []step{ok(W - 1), ok(0), no(0)}},
		{"window behind of counter 0", 0, W, []step{ok(W), no(0)}},
		{"limit-1 and limit", 0, W, []step{lim(99, 100, true), lim(100, 100, false), lim(101, 100, false), lim(99, 100, false), lim(100, 101, true)}},
		{"limit 0 rejects 0", 0, W, []step{lim(0, 0, false), lim(0, 1, true)}},
		{"limit max", 0, W, []step{lim(math.MaxUint64, math.MaxUint64, false), lim(math.MaxUint64-1, math.MaxUint64, true), lim(math.MaxUint64-1, math.MaxUint64, false), lim(math.MaxUint64-2, math.MaxUint64, true), lim(math.MaxUint64-1-W, math.MaxUint64, false), lim(math.MaxUint64-W, math.MaxUint64, true)}},
		{"rejected by limit leaves no trace", 0, W, []step{ok(10), lim(5000, 5000, false), ok(11), ok(9), ok(5000)}},
		{"jump by window", 0, W, []step{ok(5), ok(5 + W), no(5), ok(6), no(6), ok(5 + W - 1), no(5 + W)}},
		{"jump by window+1", 0, W, []step{ok(5), ok(5 + W + 1), no(6), ok(7), no(5), ok(5 + W)}},
		{"jump by 10x window", 0, W, []step{ok(5), ok(5 + 10*W), no(5), no(5 + 9*W), ok(5 + 9*W + 1), no(5 + 10*W), ok(5 + 10*W - 1), ok(5 + 10*W + 1)}},
		{"jump by 2^40", 0, W, []step{ok(1), ok(1 << 40), ok(1<<40 - (W - 1)), no(1<<40 - W), no(1), ok(1<<40 + 1)}},
		// RFC 6479 subtlety: the highest counter at the start of a block and
		// a seen counter exactly W-1 behind it, in the block that a ring of
		// only W/64 blocks would have recycled.
		{"extra block keeps W-1 behind", 0, W, []step{ok(1), ok(2), ok(W), no(1), ok(3), no(2), ok(W + 63), no(1), no(63), ok(64)}},
		{"extra block, Init(2048)", 2048, 2048, []step{ok(1), ok(2), ok(2048), no(1), ok(3), no(2), ok(2048 + 63), ok(64), no(63)}},
		{"extra block, window 128", 128, 128, []step{ok(1), ok(2), ok(128), no(1), ok(3), no(2)}},
		{"extra block, window 4096", 4096, 4096, []step{ok(1), ok(2), ok(4096), no(1), ok(3), no(2)}},
		{"extra block, window 4032", 4032, 4032, []step{ok(1), ok(2), ok(4032), no(1), ok(3), no(2), ok(4032 + 63), no(63), ok(64)}},
		{"extra block, window 64", 64, 64, []step{ok(1), ok(64), no(1), ok(2), ok(127), no(63), ok(64 + 1), ok(128), no(64), no(65), ok(66)}},
		// A ring slot reused for a newer block must not keep the old bits.
		{"recycled slot is cleared", 0, W, []step{ok(5), ok(W), ok(2*W + 10), ok(2*W + 5), no(2*W + 5)}},
		{"recycled slot is cleared, window 64", 64, 64, []step{ok(5), ok(64), ok(140), ok(133), no(133), no(69), ok(77), no(5)}},
		{"after Reset", 0, W, []step{ok(0), ok(1), ok(3000), reset, ok(0), no(0), ok(1), ok(3000), no(3000), reset, ok(2), ok(1), ok(0)}},
		{"Reset twice", 0, W, []step{reset, reset, ok(0), no(0)}},
		{"window 64", 64, 64, []step{ok(100), ok(37), no(37), no(36), ok(99), ok(164), no(100), ok(101)}},
		{"window 64 in order across wraps", 64, 64, []step{ok(0), ok(64), ok(128), ok(192), ok(256), no(192), ok(193), no(0)}},
		{"window 100 rounds to 128", 100, 128, []step{ok(200), ok(73), no(73), no(72), ok(199)}},
		{"window 1 rounds to 64", 1, 64, []step{ok(63), ok(0), ok(64), no(0), ok(1)}},
		{"window 4096", 4096, 4096, []step{ok(5000), ok(905), no(905), no(904), ok(4999), ok(5000 + 4096), ok(5001), no(5000)}},
		{"window 4096 jump by window+1", 4096, 4096, []step{ok(7), ok(7 + 4097), no(8), ok(9)}},
		{"window max", MaxWindowSize, MaxWindowSize, []step{ok(MaxWindowSize + 10), ok(11), no(10), no(11), ok(12), ok(3 * MaxWindowSize), no(2 * MaxWindowSize), ok(2*MaxWindowSize + 1)}},
		{"window max after Reset", MaxWindowSize, MaxWindowSize, []step{ok(MaxWindowSize * 5), reset, ok(0), ok(MaxWindowSize - 1), ok(MaxWindowSize * 5)}},
	}
	for i, tt := range tests {
		t.Run(fmt.Sprintf("%02d %s", i+1, tt.name), func(t *testing.T) {
			f := newFilter(t, tt.window)
			if got := f.WindowSize(); got != tt.wantW {
				t.Fatalf("WindowSize() = %d, want %d", got, tt.wantW)
			}
			for j, s := range tt.steps {
				if s.reset {
					f.Reset()
					continue
				}
				if got := f.ValidateCounter(s.c, s.limit); got != s.want {
					t.Errorf("case %d step %d: ValidateCounter(%d, %d) = %v, want %v",
						i+1, j+1, s.c, s.limit, got, s.want)
				}
			}
		})
	}
}

// TestEdgeSweep compares the filter with the reference model on a dense
// sweep of every counter from the highest one down to past the window edge,
// twice (the second pass must reject everything), for highest counters on
// and around block and window boundaries.
func TestEdgeSweep(t *testing.T) {
	for _, window := range []int{0, 64, 100, 2048, 4032, 4096, MaxWindowSize} {
		f := newFilter(t, window)
		m := newModel(f.WindowSize())
		W := uint64(f.WindowSize())
		for _, h := range []uint64{W - 1, W, W + 1, W + 63, W + 64, 3*W + 17, 1 << 40, math.MaxUint64 - 1} {
			f.Reset()
			m.reset()
			for _, c := range []uint64{0, 1, 63, 64, h} {
				if got, want := f.ValidateCounter(c, noLimit), m.validate(c, noLimit); got != want {
					t.Fatalf("W=%d h=%d: ValidateCounter(%d) = %v, model %v", W, h, c, got, want)
				}
			}
			// Twice over: the second pass must reject everything as seen or old.
			for pass := 0; pass < 2; pass++ {
				for back := uint64(0); back <= W+130 && back <= h; back++ {
					c := h - back
					if got, want := f.ValidateCounter(c, noLimit), m.validate(c, noLimit); got != want {
						t.Fatalf("W=%d h=%d pass %d: ValidateCounter(%d) (back %d) = %v, model %v",
							W, h, pass, c, back, got, want)
					}
				}
			}
		}
	}
}

func TestZeroValue(t *testing.T) {
	var f Filter
	if got := f.WindowSize(); got != DefaultWindowSize {
		t.Fatalf("zero Filter WindowSize() = %d, want %d", got, DefaultWindowSize)
	}
	if !f.ValidateCounter(0, noLimit) {
		t.Fatal("zero Filter rejected counter 0")
	}
	if f.ValidateCounter(0, noLimit) {
		t.Fatal("zero Filter accepted counter 0 twice")
	}
	if f.ring != nil {
		t.Fatal("zero Filter allocated a ring")
	}
	// Default window from the zero value behaves exactly like Init(0) and
	// Init(DefaultWindowSize).
	for _, size := range []int{0, DefaultWindowSize} {
		var a, b Filter
		if !b.Init(size) {
			t.Fatalf("Init(%d) = false", size)
		}
		for _, c := range []uint64{5, 3, 5, 5000, 2953, 2952, 4999, 1 << 33, 7} {
			if x, y := a.ValidateCounter(c, noLimit), b.ValidateCounter(c, noLimit); x != y {
				t.Fatalf("Init(%d): counter %d: zero Filter %v, initialised %v", size, c, x, y)
			}
		}
	}
}

func TestInit(t *testing.T) {
	sizes := []struct{ in, want int }{
		{0, DefaultWindowSize},
		{1, 64}, {63, 64}, {64, 64}, {65, 128}, {100, 128},
		{2047, 2048}, {2048, 2048}, {2049, 2112},
		{4032, 4032}, {4033, 4096}, {4096, 4096},
		{MaxWindowSize - 1, MaxWindowSize}, {MaxWindowSize, MaxWindowSize},
	}
	for _, s := range sizes {
		var f Filter
		if !f.Init(s.in) {
			t.Errorf("Init(%d) = false", s.in)
			continue
		}
		if got := f.WindowSize(); got != s.want {
			t.Errorf("Init(%d): WindowSize() = %d, want %d", s.in, got, s.want)
		}
		ring, mask := f.blocks()
		blocks := len(ring)
		if uint64(blocks) != mask+1 {
			t.Errorf("Init(%d): ring has %d blocks, mask %d", s.in, blocks, mask)
		}
		if minBlocks := s.want/64 + 1; blocks < minBlocks || blocks >= 2*minBlocks || blocks&(blocks-1) != 0 {
			t.Errorf("Init(%d): ring has %d blocks, want the smallest power of two >= %d", s.in, blocks, minBlocks)
		}
		if s.want <= 4032 && f.ring != nil {
			t.Errorf("Init(%d) allocated a ring although the embedded one suffices", s.in)
		}
	}

	// Invalid sizes are refused and change nothing.
	var f Filter
	if !f.Init(128) {
		t.Fatal("Init(128) = false")
	}
	if !f.ValidateCounter(500, noLimit) {
		t.Fatal("counter 500 rejected")
	}
	for _, bad := range []int{-1, -64, math.MinInt, MaxWindowSize + 1, MaxWindowSize * 2, math.MaxInt} {
		if f.Init(bad) {
			t.Errorf("Init(%d) = true, want false", bad)
		}
		if got := f.WindowSize(); got != 128 {
			t.Errorf("after Init(%d): WindowSize() = %d, want 128", bad, got)
		}
		if f.ValidateCounter(500, noLimit) {
			t.Errorf("after Init(%d): replayed counter 500 accepted", bad)
		}
		if f.ValidateCounter(500-128, noLimit) {
			t.Errorf("after Init(%d): counter outside the window accepted", bad)
		}
	}

	// A valid Init forgets history; re-initialising between ring sizes works.
	for _, size := range []int{MaxWindowSize, 64, MaxWindowSize, 8192, 8192, 0} {
		if !f.Init(size) {
			t.Fatalf("Init(%d) = false", size)
		}
		if !f.ValidateCounter(0, noLimit) || !f.ValidateCounter(500, noLimit) {
			t.Fatalf("after Init(%d): fresh counters rejected", size)
		}
		if f.ValidateCounter(500, noLimit) {
			t.Fatalf("after Init(%d): replay accepted", size)
		}
	}
}

func TestNoAllocs(t *testing.T) {
	for _, window := range []int{0, 64, 4096, MaxWindowSize} {
		f := newFilter(t, window)
		W := uint64(f.WindowSize())
		c := uint64(1 << 20)
		allocs := testing.AllocsPerRun(1000, func() {
			c += 3
			f.ValidateCounter(c, noLimit)        // forward
			f.ValidateCounter(c-2, noLimit)      // late
			f.ValidateCounter(c-2, noLimit)      // replay
			f.ValidateCounter(c-W-1, noLimit)    // too old
			f.ValidateCounter(c+1, c)            // over limit
			f.ValidateCounter(c+10*W, noLimit)   // far jump
			f.ValidateCounter(c+10*W-1, noLimit) // late after jump
			c += 10 * W
		})
		if allocs != 0 {
			t.Errorf("window %d: ValidateCounter allocates %v times per run", window, allocs)
		}
		allocs = testing.AllocsPerRun(100, f.Reset)
		if allocs != 0 {
			t.Errorf("window %d: Reset allocates %v times per run", window, allocs)
		}
	}
	var z Filter
	if allocs := testing.AllocsPerRun(100, func() { z.Init(64); z.Init(4032); z.Init(0) }); allocs != 0 {
		t.Errorf("Init with embedded ring allocates %v times per run", allocs)
	}
}
