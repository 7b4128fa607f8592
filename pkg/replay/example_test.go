package replay_test

import (
	"fmt"

	"github.com/dronelink/dronelink/pkg/replay"
)

func Example() {
	// The zero value is ready to use, with a window of 2048 counters.
	var f replay.Filter
	const limit = 1 << 32 // rekey before the 32-bit wire counter wraps

	// Only after the datagram's AEAD tag has verified:
	for _, c := range []uint64{0, 2, 1, 2, 5000, 2953, 2952, limit} {
		fmt.Println(c, f.ValidateCounter(c, limit))
	}
	// Output:
	// 0 true
	// 2 true
	// 1 true
	// 2 false
	// 5000 true
	// 2953 true
	// 2952 false
	// 4294967296 false
}

func ExampleFilter_Init() {
	var f replay.Filter
	if !f.Init(100) { // rounded up to a multiple of 64
		panic("invalid window size")
	}
	fmt.Println(f.WindowSize())
	fmt.Println(f.Init(replay.MaxWindowSize + 1))
	// Output:
	// 128
	// false
}
