package crypto

import (
	"crypto/hkdf"
	"crypto/sha256"
	"fmt"
)

// maxHKDFLength is the RFC 5869 output limit for SHA-256: 255 blocks.
const maxHKDFLength = 255 * sha256.Size

// HKDFExtract is the HKDF-SHA256 extract step (RFC 5869 §2.2): it returns
// the 32-byte pseudorandom key HMAC-SHA256(salt, secret). A nil or empty
// salt means 32 zero bytes, as the RFC specifies.
func HKDFExtract(secret, salt []byte) ([]byte, error) {
	prk, err := hkdf.Extract(sha256.New, secret, salt)
	if err != nil {
		return nil, fmt.Errorf("HKDF extract: %w", err)
	}
	return prk, nil
}

// HKDFExpand is the HKDF-SHA256 expand step (RFC 5869 §2.3): it derives
// length bytes (1 to 8160) from the pseudorandom key prk and the context
// string info. Use distinct info strings for distinct keys.
func HKDFExpand(prk []byte, info string, length int) ([]byte, error) {
	if err := checkHKDFLength(length); err != nil {
		return nil, err
	}
	out, err := hkdf.Expand(sha256.New, prk, info, length)
	if err != nil {
		return nil, fmt.Errorf("HKDF expand: %w", err)
	}
	return out, nil
}

// HKDF is HKDF-SHA256 extract-then-expand (RFC 5869): it derives length
// bytes (1 to 8160) from the input keying material secret, the optional salt
// and the context string info.
func HKDF(secret, salt []byte, info string, length int) ([]byte, error) {
	if err := checkHKDFLength(length); err != nil {
		return nil, err
	}
	out, err := hkdf.Key(sha256.New, secret, salt, info, length)
	if err != nil {
		return nil, fmt.Errorf("HKDF: %w", err)
	}
	return out, nil
}

func checkHKDFLength(length int) error {
	if length <= 0 || length > maxHKDFLength {
		return fmt.Errorf("HKDF: output length %d out of range 1..%d", length, maxHKDFLength)
	}
	return nil
}
