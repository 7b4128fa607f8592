package replay

import (
	"encoding/binary"
	"testing"
)

// fuzzWindows is indexed by the first input byte (mod its length); 0 means a
// zero Filter.
var fuzzWindows = [...]int{0, 64, 100, 128, 2048, 4032, 4096, MaxWindowSize}

// Fuzz operations: one opcode byte (mod opCount), most followed by a uvarint
// argument x.
const (
	opForward  = iota // counter = highest + 1 + x
	opBackward        // counter = highest - x (wrapping)
	opAbsolute        // counter = x
	opLimit           // limit = highest + x (wrapping); no counter
	opNoLimit         // limit = max uint64; no argument, no counter
	opReset           // Reset; no argument
	opEdge            // counter = highest - (W - 2 + x%5): around the window edge
	opRepeat          // counter = the previous counter again; no argument
	opCount
)

// fuzzOps encodes a sequence for f.Add; each op is {opcode, argument}.
func fuzzOps(windowIndex byte, ops ...[2]uint64) []byte {
	b := []byte{windowIndex}
	for _, op := range ops {
		b = append(b, byte(op[0]))
		switch op[0] {
		case opNoLimit, opReset, opRepeat:
		default:
			b = binary.AppendUvarint(b, op[1])
		}
	}
	return b
}

func FuzzFilter(f *testing.F) {
	op := func(code, arg uint64) [2]uint64 { return [2]uint64{code, arg} }
	f.Add(fuzzOps(0, op(opAbsolute, 0), op(opRepeat, 0), op(opForward, 0), op(opBackward, 1), op(opForward, 2046), op(opEdge, 1), op(opEdge, 2)))
	f.Add(fuzzOps(1, op(opForward, 63), op(opBackward, 63), op(opBackward, 64), op(opEdge, 0), op(opEdge, 4), op(opForward, 64), op(opRepeat, 0)))
	f.Add(fuzzOps(2, op(opAbsolute, 1<<40), op(opEdge, 1), op(opEdge, 2), op(opForward, 1<<20), op(opBackward, 127), op(opBackward, 128)))
	f.Add(fuzzOps(7, op(opLimit, 3), op(opForward, 1), op(opForward, 0), op(opForward, 0), op(opNoLimit, 0), op(opForward, 0), op(opReset, 0), op(opAbsolute, 0)))
	f.Add(fuzzOps(6, op(opAbsolute, 1), op(opAbsolute, 2), op(opAbsolute, 4096), op(opAbsolute, 1), op(opAbsolute, 3), op(opAbsolute, 2)))
	f.Add(fuzzOps(1, op(opAbsolute, 5), op(opAbsolute, 64), op(opAbsolute, 140), op(opAbsolute, 133), op(opRepeat, 0)))
	f.Add(fuzzOps(4, op(opAbsolute, 1<<64-2), op(opAbsolute, 1<<64-1), op(opBackward, 2047), op(opBackward, 2048), op(opReset, 0), op(opRepeat, 0)))

	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) == 0 {
			return
		}
		window := fuzzWindows[int(data[0])%len(fuzzWindows)]
		data = data[1:]
		flt := newFilter(t, window)
		W := uint64(flt.WindowSize())
		m := newModel(flt.WindowSize())
		limit := uint64(noLimit)
		var prev uint64

		for i := 0; len(data) > 0; i++ {
			code := uint64(data[0]) % opCount
			data = data[1:]
			var x uint64
			switch code {
			case opNoLimit, opReset, opRepeat:
			default:
				var n int
				x, n = binary.Uvarint(data)
				if n <= 0 {
					return
				}
				data = data[n:]
			}

			var c uint64
			switch code {
			case opForward:
				c = m.highest + 1 + x
			case opBackward:
				c = m.highest - x
			case opAbsolute:
				c = x
			case opLimit:
				limit = m.highest + x
				continue
			case opNoLimit:
				limit = noLimit
				continue
			case opReset:
				flt.Reset()
				m.reset()
				continue
			case opEdge:
				c = m.highest - (W - 2 + x%5)
			case opRepeat:
				c = prev
			}
			prev = c
			want := m.validate(c, limit)
			if got := flt.ValidateCounter(c, limit); got != want {
				t.Fatalf("window %d, op %d: ValidateCounter(%d, %d) = %v, model says %v (highest %d)",
					W, i, c, limit, got, want, m.highest)
			}
		}
	})
}
