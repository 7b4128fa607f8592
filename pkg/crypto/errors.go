package crypto

import "errors"

// Sentinel errors. Functions in this package wrap them with detail (sizes,
// paths, key types — never secret material); test for them with errors.Is.
var (
	// ErrKeyTooSmall reports an RSA key shorter than MinRSABits.
	ErrKeyTooSmall = errors.New("RSA key too small")
	// ErrKeyTooLarge reports an RSA key longer than MaxRSABits.
	ErrKeyTooLarge = errors.New("RSA key too large")
	// ErrNotRSAKey reports a well-formed key of another algorithm (ECDSA,
	// Ed25519, ...) where an RSA key is required.
	ErrNotRSAKey = errors.New("not an RSA key")
	// ErrBadPEM reports data that is not a PEM block of the expected type, or
	// whose contents cannot be parsed.
	ErrBadPEM = errors.New("invalid PEM key data")
	// ErrBadPSK reports PSK data that is not exactly 64 hex digits (with an
	// optional single trailing newline), or a PSK that is all zeros.
	ErrBadPSK = errors.New("invalid pre-shared key")
	// ErrFileExists reports that a Save function or WriteFileAtomic refused
	// to overwrite an existing file.
	ErrFileExists = errors.New("file already exists; refusing to overwrite it")
	// ErrDecrypt reports that unwrapping a secret or opening an AEAD packet
	// failed. It deliberately carries no detail.
	ErrDecrypt = errors.New("decryption failed")
	// ErrBadSignature reports a signature that does not verify.
	ErrBadSignature = errors.New("invalid signature")
	// ErrBadPublicKey reports an X25519 peer public key that is malformed or
	// of low order (it would yield an all-zero shared secret).
	ErrBadPublicKey = errors.New("invalid X25519 public key")
)
