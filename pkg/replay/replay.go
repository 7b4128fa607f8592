// Package replay implements the sliding-window anti-replay filter used on the
// receive side of a dronelink data channel.
//
// # Why
//
// Every data datagram carries a strictly increasing counter chosen by the
// sender. An attacker on the radio link can record a valid, authenticated
// datagram and send it again later (a replay): the AEAD tag still verifies,
// so the cryptography alone cannot tell the copy from the original. For a
// drone a replayed "arm" or "throttle up" command is dangerous, so every
// counter must be accepted at most once.
//
// The link is lossy and reorders packets (multipath radio, retransmitting
// modems, several UDP sockets), so demanding strictly increasing counters
// would drop legitimate traffic. Instead the filter remembers the highest
// counter accepted so far and, individually, which of the WindowSize counters
// just below it have been seen. A late packet is accepted if it is inside
// that window and has not been seen; anything older is rejected, because
// the filter can no longer prove that it is new.
//
// # Design
//
// The bitmap is a ring of 64-bit blocks as described in RFC 6479 ("IPsec
// Anti-Replay Algorithm without Bit Shifting"): a bit per counter, indexed by
// counter/64 (modulo the ring length) and counter%64. Moving the window
// forward never shifts bits; it only zeroes the blocks the window moves into.
// Each call is therefore O(1) for in-window counters, and a jump forward
// costs O(min(jump/64, ring blocks)) block writes, bounded by the ring size
// however far the jump goes. No call allocates.
//
// The ring has at least one block more than WindowSize/64. This is the RFC
// 6479 subtlety: the block holding the highest counter is usually only
// partly filled, so the WindowSize counters ending at the highest one span
// WindowSize/64 + 1 blocks. With a ring of only WindowSize/64 blocks,
// entering a new block would recycle the block that still holds the oldest
// in-window counters: their bits would be lost and a replay of one of them
// accepted (or, with a block-granular age check, a never-seen counter inside
// the window rejected). With the extra block every counter c with
// highest-c < WindowSize keeps its own bit. The ring length is rounded up to
// a power of two so that the block index is a mask instead of a division.
//
// # What "inside the window" means
//
// Let highest be the largest counter accepted since the last Reset (or 0 if
// none has been accepted yet) and W = WindowSize(). ValidateCounter(c, limit)
// accepts c exactly when all of these hold:
//
//   - c < limit,
//   - c has not been accepted before (since the last Reset), and
//   - c > highest, or highest-c < W.
//
// So with highest = 5000 and W = 2048, counters 2953..5000 are tracked
// individually and 2952 and below are rejected as too old. Counter 0 is an
// ordinary counter, normally the first packet of a session.
//
// # Caller's responsibilities
//
// ValidateCounter must only be called after the datagram's AEAD tag has
// verified. Calling it for an unauthenticated packet lets anyone move the
// window forward with a forged counter (say 2^60), after which every genuine
// packet is rejected as too old: a trivial denial of service. The filter
// cannot check this itself.
//
// A Filter is not safe for concurrent use; the caller must serialise calls
// (for example with the per-peer receive mutex). A Filter must not be copied
// after first use.
package replay

const (
	// DefaultWindowSize is the window, in counters, of a zero Filter and of a
	// Filter initialised with Init(0). It covers the reordering seen on the
	// radio links dronelink targets with a wide margin.
	DefaultWindowSize = 2048

	// MaxWindowSize is the largest window, in counters, that Init accepts.
	// Its ring takes 16 KiB.
	MaxWindowSize = 1 << 16

	blockBits = 64
	blockLog  = 6 // log2(blockBits)
	bitMask   = blockBits - 1

	// defaultRingBlocks is the length of the ring embedded in every Filter:
	// the smallest power of two that is at least DefaultWindowSize/64 + 1.
	defaultRingBlocks = 64
)

// Compile-time check that the embedded ring is large enough for the default
// window (the array length would be negative otherwise).
var _ [defaultRingBlocks - (DefaultWindowSize/blockBits + 1)]struct{}

// Filter is a sliding-window anti-replay filter for 64-bit counters.
//
// The zero value is ready to use, with a window of DefaultWindowSize
// counters, and does not allocate. Use Init to choose another window size.
//
// A Filter is not safe for concurrent use and must not be copied after first
// use (copies would share the heap ring of a large window but not the
// highest counter, which breaks the no-replay guarantee).
type Filter struct {
	_ noCopy

	// last is the highest counter accepted since the last reset, or 0 if
	// none was. Starting at 0 is correct because counter 0's bit is clear
	// until 0 is accepted.
	last uint64

	// window is the effective window in counters, a multiple of 64;
	// 0 means DefaultWindowSize.
	window uint64

	// mask is the ring length minus one; the ring length is a power of two
	// of at least window/64 + 1 blocks. 0 means defaultRingBlocks-1.
	mask uint64

	// ring is the bitmap for windows that do not fit in def. nil means the
	// first mask+1 blocks of def are the ring. It is never a slice of def
	// itself, so that a Filter holds no pointer into itself.
	ring []uint64

	def [defaultRingBlocks]uint64
}

// Init configures the window size and forgets all counters seen so far.
//
// windowSize is in counters. It is rounded up to a multiple of 64; 0 selects
// DefaultWindowSize. Windows up to 4032 counters use (part of) the ring
// embedded in the Filter; larger ones allocate a ring once, here, never in
// ValidateCounter. The ring is as small as the window allows, so that small
// windows recycle blocks often, exactly like large ones.
//
// If windowSize is negative or greater than MaxWindowSize, Init returns false
// and leaves the Filter unchanged (including its recorded counters).
// Otherwise it returns true.
func (f *Filter) Init(windowSize int) bool {
	if windowSize < 0 || windowSize > MaxWindowSize {
		return false
	}
	if windowSize == 0 {
		windowSize = DefaultWindowSize
	}
	w := (uint64(windowSize) + bitMask) &^ bitMask
	blocks := ringBlocksFor(w)

	f.window = w
	f.mask = uint64(blocks - 1)
	if blocks <= defaultRingBlocks {
		f.ring = nil
	} else if len(f.ring) != blocks {
		f.ring = make([]uint64, blocks)
	}
	f.Reset()
	return true
}

// ringBlocksFor returns the number of ring blocks needed for a window of w
// counters (w a multiple of 64): the smallest power of two that is at least
// w/64 + 1.
func ringBlocksFor(w uint64) int {
	need := int(w/blockBits) + 1
	n := 1
	for n < need {
		n <<= 1
	}
	return n
}

// WindowSize returns the effective window in counters: a never-seen counter
// c below the limit is accepted if highest-c < WindowSize(), where highest is
// the largest counter accepted so far. It is always a positive multiple of 64.
func (f *Filter) WindowSize() int {
	if f.window == 0 {
		return DefaultWindowSize
	}
	return int(f.window)
}

// Reset forgets every counter seen, as if the Filter had just been
// initialised. The configured window size is kept. Use it when a new session
// key is installed and the sender restarts its counter at 0.
func (f *Filter) Reset() {
	f.last = 0
	clear(f.def[:])
	clear(f.ring)
}

// blocks returns the ring and its length minus one.
func (f *Filter) blocks() ([]uint64, uint64) {
	mask := f.mask
	if mask == 0 {
		mask = defaultRingBlocks - 1
	}
	if f.ring != nil {
		return f.ring, mask
	}
	return f.def[:mask+1], mask
}

// ValidateCounter reports whether counter is acceptable and, if so, records
// it as seen.
//
// It returns true exactly when counter < limit, counter has not been
// accepted before since the last Reset, and counter is not too old: it is
// greater than the highest accepted counter or at most WindowSize()-1 below
// it. When it returns false the Filter is not changed.
//
// limit is the first counter the caller will never accept, for example the
// point at which the session must be rekeyed; pass ^uint64(0) for no limit
// other than the counter range (counter ^uint64(0) itself is then never
// accepted).
//
// A counter above the highest one moves the window forward. Counters it
// skips over count as not seen: those still inside the new window are
// accepted when they arrive, everything at or below counter-WindowSize()
// is too old from now on. Clearing the ring on a far jump costs at most one
// write per ring block (O(min(jump/64, ring blocks))), however far the jump.
//
// Call it only after the packet's AEAD tag has verified; see the package
// documentation.
func (f *Filter) ValidateCounter(counter, limit uint64) bool {
	if counter >= limit {
		return false
	}
	ring, mask := f.blocks()
	block := counter >> blockLog
	bit := uint64(1) << (counter & bitMask)

	if counter > f.last {
		// Move the window forward, zeroing the blocks it moves into. The
		// bit for counter is then clear: bits above last in last's block
		// were zeroed when the window entered that block and only counters
		// <= last have set bits since. Hence this path always accepts.
		cur := f.last >> blockLog
		diff := block - cur
		if diff > mask {
			clear(ring)
		} else {
			for i := cur + 1; i <= block; i++ {
				ring[i&mask] = 0
			}
		}
		f.last = counter
		ring[block&mask] |= bit
		return true
	}

	window := f.window
	if window == 0 {
		window = DefaultWindowSize
	}
	if f.last-counter >= window {
		return false // too old
	}
	idx := block & mask
	if ring[idx]&bit != 0 {
		return false // replay
	}
	ring[idx] |= bit
	return true
}

// noCopy makes go vet's copylocks check report copies of a Filter.
type noCopy struct{}

func (*noCopy) Lock()   {}
func (*noCopy) Unlock() {}
