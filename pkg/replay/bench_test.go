package replay

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// sink keeps the compiler from discarding results.
var sink int

func BenchmarkValidateCounterInOrder(b *testing.B) {
	var f Filter
	b.ReportAllocs()
	n := 0
	for i := 0; b.Loop(); i++ {
		if f.ValidateCounter(uint64(i), noLimit) {
			n++
		}
	}
	sink = n
}

// reorderedCounters returns counters 0..n-1 where each run of 32 is shuffled,
// so most packets arrive a little early or late.
func reorderedCounters(n int) []uint64 {
	r := rand.New(rand.NewPCG(1, 2))
	cs := make([]uint64, n)
	for i := range cs {
		cs[i] = uint64(i)
	}
	for i := 0; i+32 <= n; i += 32 {
		r.Shuffle(32, func(a, b int) { cs[i+a], cs[i+b] = cs[i+b], cs[i+a] })
	}
	return cs
}

func BenchmarkValidateCounterReordered(b *testing.B) {
	const n = 1 << 16
	cs := reorderedCounters(n)
	var f Filter
	b.ReportAllocs()
	var base uint64
	n2 := 0
	for i := 0; b.Loop(); i++ {
		if i%n == 0 && i > 0 {
			base += n
		}
		if f.ValidateCounter(base+cs[i%n], noLimit) {
			n2++
		}
	}
	sink = n2
}

// Every packet arrives twice (e.g. a duplicating modem or a replay flood):
// half the calls take the reject path.
func BenchmarkValidateCounterDuplicateHeavy(b *testing.B) {
	var f Filter
	b.ReportAllocs()
	n := 0
	for i := 0; b.Loop(); i++ {
		if f.ValidateCounter(uint64(i/2), noLimit) {
			n++
		}
	}
	sink = n
}

// Every packet jumps more than the window ahead: the worst case, which
// clears the whole ring each call.
func BenchmarkValidateCounterFarJump(b *testing.B) {
	for _, window := range []int{DefaultWindowSize, MaxWindowSize} {
		b.Run(fmt.Sprintf("window=%d", window), func(b *testing.B) {
			var f Filter
			f.Init(window)
			step := uint64(2 * f.WindowSize())
			b.ReportAllocs()
			n := 0
			for i := uint64(0); b.Loop(); i++ {
				if f.ValidateCounter(i*step, noLimit) {
					n++
				}
			}
			sink = n
		})
	}
}
