package crypto

import "runtime"

// Wipe overwrites b with zeros. Use it on buffers that held secrets (keys,
// PSKs, unwrapped secrets, shared secrets) once they are no longer needed.
//
// It is best effort only. Go gives no guarantee that a secret has no other
// copies: the garbage collector may have moved or copied the memory, values
// passed by value (such as a PSK array) are copied onto stacks, strings are
// immutable, and library code (math/big in crypto/rsa, for example) keeps
// its own copies that cannot be reached from here. Wipe narrows the window
// in which a secret sits in memory; it does not close it.
func Wipe(b []byte) {
	clear(b)
	// Keep b live until here so the stores cannot be treated as dead.
	runtime.KeepAlive(b)
}
