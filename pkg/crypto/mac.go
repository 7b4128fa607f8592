package crypto

import (
	"crypto/hmac"
	"crypto/sha256"
	"hash"
)

// MAC computes HMAC-SHA256 (RFC 2104) tags under one key, reusing a single
// hash state so that Sum and Verify allocate nothing after construction.
//
// A MAC is NOT safe for concurrent use; use one per goroutine.
type MAC struct {
	h   hash.Hash
	sum [MACSize]byte
}

// NewMAC returns a MAC keyed with key. Keys shorter than 32 bytes weaken
// HMAC-SHA256; use a 32-byte key derived with HKDF. The key is not retained
// by reference (HMAC keeps only the derived pads); the caller may wipe it.
func NewMAC(key []byte) *MAC {
	m := &MAC{h: hmac.New(sha256.New, key)}
	// The first Reset caches the keyed inner/outer states, so it is done
	// here rather than on the first Sum.
	m.h.Reset()
	return m
}

// Sum appends the 32-byte HMAC-SHA256 tag of data to dst and returns the
// extended slice. It allocates nothing when dst has 32 bytes of spare
// capacity.
func (m *MAC) Sum(dst []byte, data []byte) []byte {
	m.h.Reset()
	m.h.Write(data) // hash.Hash.Write never returns an error
	return m.h.Sum(dst)
}

// Verify reports whether tag is the HMAC-SHA256 tag of data, comparing in
// constant time. A tag that is not exactly MACSize bytes is rejected
// (truncated tags are not accepted).
func (m *MAC) Verify(data, tag []byte) bool {
	if len(tag) != MACSize {
		return false
	}
	computed := m.Sum(m.sum[:0], data)
	ok := hmac.Equal(computed, tag)
	clear(m.sum[:])
	return ok
}
