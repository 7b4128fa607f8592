package crypto

import (
	stdcrypto "crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
)

// oaepLabel binds wrapped secrets to their purpose and protocol version, so a
// ciphertext made for another use of the same RSA key is not accepted here.
const oaepLabel = "dronelink v1 session secret"

// pssOptions fixes the PSS salt to the hash length (32 bytes) for both
// signing and verification.
var pssOptions = &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash, Hash: stdcrypto.SHA256}

// WrapSecret encrypts secret to pub with RSA-OAEP (SHA-256, MGF1-SHA-256)
// under the label "dronelink v1 session secret", reading the OAEP seed from
// random (crypto/rand.Reader if nil). The secret must be non-empty and at
// most pub.Size()-66 bytes (318 for a 3072-bit key). The key's size is
// checked first.
func WrapSecret(random io.Reader, pub *rsa.PublicKey, secret []byte) ([]byte, error) {
	if err := CheckRSAKeySize(pub); err != nil {
		return nil, fmt.Errorf("wrap secret: %w", err)
	}
	if len(secret) == 0 {
		return nil, errors.New("wrap secret: empty secret")
	}
	if limit := pub.Size() - 2*sha256.Size - 2; len(secret) > limit {
		return nil, fmt.Errorf("wrap secret: secret is %d bytes, at most %d fit a %d-bit key",
			len(secret), limit, pub.N.BitLen())
	}
	if random == nil {
		random = rand.Reader
	}
	out, err := rsa.EncryptOAEP(sha256.New(), random, pub, secret, []byte(oaepLabel))
	if err != nil {
		return nil, fmt.Errorf("wrap secret: %w", err)
	}
	return out, nil
}

// UnwrapSecret decrypts a value made by WrapSecret. Every failure (wrong key,
// wrong length, tampering, bad padding, wrong label, unacceptable key) is
// reported as the bare ErrDecrypt, so that no padding-oracle detail leaks.
// The result is secret: wipe it (Wipe) when done.
func UnwrapSecret(priv *rsa.PrivateKey, wrapped []byte) ([]byte, error) {
	if priv == nil || CheckRSAKeySize(&priv.PublicKey) != nil || len(wrapped) != priv.Size() {
		return nil, ErrDecrypt
	}
	secret, err := rsa.DecryptOAEP(sha256.New(), nil, priv, wrapped, []byte(oaepLabel))
	if err != nil || len(secret) == 0 {
		return nil, ErrDecrypt
	}
	return secret, nil
}

// SignPSS signs SHA-256(msg) with RSA-PSS (MGF1-SHA-256, 32-byte salt read
// from random, crypto/rand.Reader if nil). The key's size is checked first.
func SignPSS(random io.Reader, priv *rsa.PrivateKey, msg []byte) ([]byte, error) {
	if priv == nil {
		return nil, fmt.Errorf("sign: %w: missing key", ErrNotRSAKey)
	}
	if err := CheckRSAKeySize(&priv.PublicKey); err != nil {
		return nil, fmt.Errorf("sign: %w", err)
	}
	if random == nil {
		random = rand.Reader
	}
	digest := sha256.Sum256(msg)
	sig, err := rsa.SignPSS(random, priv, stdcrypto.SHA256, digest[:], pssOptions)
	if err != nil {
		return nil, fmt.Errorf("sign: %w", err)
	}
	return sig, nil
}

// VerifyPSS verifies a SignPSS signature of msg under pub. It accepts only
// RSA-PSS with SHA-256, MGF1-SHA-256 and a salt of exactly 32 bytes, and
// returns an error wrapping ErrBadSignature for any failure (for an
// unacceptable key it wraps the size error as well).
func VerifyPSS(pub *rsa.PublicKey, msg, sig []byte) error {
	if err := CheckRSAKeySize(pub); err != nil {
		return fmt.Errorf("%w: %w", ErrBadSignature, err)
	}
	if len(sig) != pub.Size() {
		return ErrBadSignature
	}
	digest := sha256.Sum256(msg)
	if err := rsa.VerifyPSS(pub, stdcrypto.SHA256, digest[:], sig, pssOptions); err != nil {
		return ErrBadSignature
	}
	return nil
}
