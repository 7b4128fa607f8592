package crypto

import (
	"crypto/ecdh"
	"crypto/rand"
	"crypto/subtle"
	"fmt"
	"io"
)

// GenerateX25519 returns a new X25519 private key (crypto/ecdh) for one
// key agreement, drawing from random (crypto/rand.Reader if nil; Go 1.26
// ignores a custom reader by default, see the package documentation). Its
// public half is priv.PublicKey().Bytes() (32 bytes). Use a fresh key per
// session and drop it afterwards: that is what provides forward secrecy.
func GenerateX25519(random io.Reader) (*ecdh.PrivateKey, error) {
	if random == nil {
		random = rand.Reader
	}
	priv, err := ecdh.X25519().GenerateKey(random)
	if err != nil {
		return nil, fmt.Errorf("generate X25519 key: %w", err)
	}
	return priv, nil
}

// X25519 computes the 32-byte X25519 shared secret between priv and the
// peer's 32-byte public key. A peer key of the wrong length, or one that
// yields the all-zero shared secret (a low-order point, RFC 7748 §6.1), is
// refused with an error wrapping ErrBadPublicKey. The result is secret: feed
// it to HKDF, never use it directly as a key, and wipe it when done.
func X25519(priv *ecdh.PrivateKey, peerPublic []byte) ([]byte, error) {
	if priv == nil || priv.Curve() != ecdh.X25519() {
		return nil, fmt.Errorf("X25519: private key is not an X25519 key")
	}
	if len(peerPublic) != X25519KeySize {
		return nil, fmt.Errorf("%w: peer key is %d bytes, want %d", ErrBadPublicKey, len(peerPublic), X25519KeySize)
	}
	pub, err := ecdh.X25519().NewPublicKey(peerPublic)
	if err != nil {
		return nil, ErrBadPublicKey
	}
	shared, err := priv.ECDH(pub)
	if err != nil {
		// crypto/ecdh already refuses an all-zero result.
		return nil, fmt.Errorf("%w: low-order point", ErrBadPublicKey)
	}
	var zero [X25519KeySize]byte
	if subtle.ConstantTimeCompare(shared, zero[:]) == 1 { // defense in depth
		return nil, fmt.Errorf("%w: low-order point", ErrBadPublicKey)
	}
	return shared, nil
}
