package crypto

import (
	"crypto/rsa"
	"encoding/hex"
	"strings"
	"sync"
	"testing"
)

// RSA key generation is slow, so each size is generated at most once per
// test binary and shared (read-only) between tests and benchmarks.
type onceKey struct {
	once sync.Once
	key  *rsa.PrivateKey
	err  error
}

var testKeys = map[int]*onceKey{2048: {}, 3072: {}, 4096: {}}

// testKey returns the shared RSA key of the given size. 3072 is generated
// through the default (bits == 0) path.
func testKey(tb testing.TB, bits int) *rsa.PrivateKey {
	tb.Helper()
	k, ok := testKeys[bits]
	if !ok {
		tb.Fatalf("no shared test key of %d bits", bits)
	}
	k.once.Do(func() {
		req := bits
		if bits == DefaultRSABits {
			req = 0
		}
		k.key, k.err = GenerateRSAKey(nil, req)
	})
	if k.err != nil {
		tb.Fatalf("GenerateRSAKey(%d): %v", bits, k.err)
	}
	return k.key
}

// otherKey2048 is a second 2048-bit key for wrong-key tests.
var otherKey2048 onceKey

func testOtherKey(tb testing.TB) *rsa.PrivateKey {
	tb.Helper()
	otherKey2048.once.Do(func() { otherKey2048.key, otherKey2048.err = GenerateRSAKey(nil, 2048) })
	if otherKey2048.err != nil {
		tb.Fatal(otherKey2048.err)
	}
	return otherKey2048.key
}

// unhex decodes a hex string, ignoring spaces and newlines so that vectors
// can be typed in the layout the RFCs print them.
func unhex(tb testing.TB, s string) []byte {
	tb.Helper()
	s = strings.NewReplacer(" ", "", "\n", "", "\t", "", ":", "").Replace(s)
	b, err := hex.DecodeString(s)
	if err != nil {
		tb.Fatalf("bad hex in test vector: %v", err)
	}
	return b
}

// seq returns the bytes from, from+1, ..., to inclusive.
func seq(from, to byte) []byte {
	var b []byte
	for i := int(from); i <= int(to); i++ {
		b = append(b, byte(i))
	}
	return b
}

func repeat(b byte, n int) []byte { return []byte(strings.Repeat(string([]byte{b}), n)) }

// assertNoSecret fails if msg contains any of the secrets (compared as
// strings; secrets shorter than 8 characters are ignored as too likely to
// collide with ordinary text).
func assertNoSecret(tb testing.TB, msg string, secrets ...string) {
	tb.Helper()
	for _, s := range secrets {
		if len(s) >= 8 && strings.Contains(strings.ToLower(msg), strings.ToLower(s)) {
			tb.Errorf("error message leaks secret material: %q", msg)
		}
	}
}
