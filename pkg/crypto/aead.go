package crypto

import (
	"crypto/cipher"
	"encoding/binary"
	"fmt"

	"golang.org/x/crypto/chacha20poly1305"
)

// AEAD is ChaCha20-Poly1305 (RFC 8439) keyed once and addressed by a 64-bit
// packet counter instead of an explicit nonce.
//
// Nonce layout (as in WireGuard): the 96-bit nonce is 4 zero bytes followed
// by the counter as 8 bytes little-endian:
//
//	nonce = 00 00 00 00 || LE64(counter)
//
// so counter 1 is the nonce 00000000 01000000 00000000. A (key, counter)
// pair must never be used to seal two different packets: the caller (the
// protocol) must use each counter at most once per key and rekey long before
// the counter could wrap. Each packet may be up to 256 GiB (RFC 8439 limit).
//
// An AEAD keeps a nonce scratch buffer so Seal and Open do not allocate; it
// is therefore NOT safe for concurrent use. Use one AEAD per goroutine, for
// example one per direction.
type AEAD struct {
	aead  cipher.AEAD
	nonce [chacha20poly1305.NonceSize]byte
}

// NewAEAD returns an AEAD for the 32-byte key. The key is copied; the caller
// may wipe its slice afterwards.
func NewAEAD(key []byte) (*AEAD, error) {
	if len(key) != AEADKeySize {
		return nil, fmt.Errorf("AEAD key must be %d bytes, got %d", AEADKeySize, len(key))
	}
	a, err := chacha20poly1305.New(key)
	if err != nil {
		return nil, fmt.Errorf("AEAD: %w", err)
	}
	return &AEAD{aead: a}, nil
}

// setNonce writes the nonce for counter into the scratch buffer.
func (a *AEAD) setNonce(counter uint64) []byte {
	// Bytes 0..3 are never written and stay zero.
	binary.LittleEndian.PutUint64(a.nonce[4:], counter)
	return a.nonce[:]
}

// Seal encrypts and authenticates plaintext and authenticates
// additionalData, using the nonce derived from counter, and appends
// ciphertext||tag (len(plaintext)+AEADTagSize bytes) to dst, returning the
// extended slice. It allocates nothing when dst has enough spare capacity.
// To encrypt in place use plaintext[:0] as dst; otherwise dst must not
// overlap plaintext.
func (a *AEAD) Seal(dst []byte, counter uint64, plaintext, additionalData []byte) []byte {
	return a.aead.Seal(dst, a.setNonce(counter), plaintext, additionalData)
}

// sealWithNonce seals with an explicit 12-byte nonce; it exists so the RFC
// 8439 known-answer test can exercise the underlying cipher.
func (a *AEAD) sealWithNonce(dst, nonce, plaintext, additionalData []byte) []byte {
	return a.aead.Seal(dst, nonce, plaintext, additionalData)
}

// Open authenticates ciphertext||tag and additionalData with the nonce
// derived from counter and, if genuine, appends the plaintext to dst and
// returns the extended slice. Any failure (short input, wrong key, counter
// or additional data, any modified bit) returns ErrDecrypt and no
// plaintext. It allocates nothing when dst has enough spare capacity. To
// decrypt in place use ciphertext[:0] as dst.
func (a *AEAD) Open(dst []byte, counter uint64, ciphertext, additionalData []byte) ([]byte, error) {
	if len(ciphertext) < AEADTagSize {
		return nil, ErrDecrypt
	}
	out, err := a.aead.Open(dst, a.setNonce(counter), ciphertext, additionalData)
	if err != nil {
		return nil, ErrDecrypt
	}
	return out, nil
}

// Overhead returns the number of bytes Seal adds: AEADTagSize (16).
func (a *AEAD) Overhead() int { return a.aead.Overhead() }
