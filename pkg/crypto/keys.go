package crypto

import (
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"io"
)

// Sizes used throughout the package.
const (
	// DefaultRSABits is the RSA modulus size GenerateRSAKey uses when asked
	// for 0 bits (about 128-bit security).
	DefaultRSABits = 3072
	// MinRSABits is the smallest RSA modulus accepted anywhere.
	MinRSABits = 2048
	// MaxRSABits is the largest RSA modulus accepted anywhere.
	MaxRSABits = 4096
	// PSKSize is the size of a pre-shared key in bytes.
	PSKSize = 32
	// KeyIDSize is the size of a KeyID in bytes.
	KeyIDSize = 16
	// X25519KeySize is the size of X25519 public keys and shared secrets.
	X25519KeySize = 32
	// AEADKeySize is the ChaCha20-Poly1305 key size.
	AEADKeySize = 32
	// AEADTagSize is the Poly1305 tag size, the AEAD's per-packet overhead.
	AEADTagSize = 16
	// MACSize is the size of an HMAC-SHA256 tag.
	MACSize = 32
)

// PEM block types.
const (
	pemPrivateKey      = "PRIVATE KEY"     // PKCS#8, what this package writes
	pemRSAPrivateKey   = "RSA PRIVATE KEY" // PKCS#1, accepted on input
	pemPublicKey       = "PUBLIC KEY"      // PKIX, what this package writes
	pemRSAPublicKey    = "RSA PUBLIC KEY"  // PKCS#1, accepted on input
	pemEncryptedKey    = "ENCRYPTED PRIVATE KEY"
	maxShownBlockTypes = 40 // longest PEM type echoed in an error
)

// KeyID names an RSA public key compactly: the first 16 bytes of SHA-256 over
// the key's PKIX (SubjectPublicKeyInfo) DER encoding. It is what the wire
// protocol and the user database use to refer to a key.
type KeyID [KeyIDSize]byte

// String returns the KeyID as 32 lowercase hex digits.
func (id KeyID) String() string { return hex.EncodeToString(id[:]) }

// fingerprintPrefixChars is how many base64 characters of a fingerprint a KeyID fixes:
// 21 characters carry 126 of its 128 bits.
const fingerprintPrefixChars = KeyIDSize * 8 / 6

// FingerprintPrefix returns the start of the Fingerprint of the key id names, for logs
// that know only the id (an unknown key): "SHA256:", the first 21 characters of the
// unpadded standard base64 of the id, then "…". Those characters are the first 21 of the
// full fingerprint, so an administrator can match it against "dronelink fingerprint".
func (id KeyID) FingerprintPrefix() string {
	var b [fingerprintPrefixChars + 1]byte // 16 bytes encode to 22 characters
	base64.RawStdEncoding.Encode(b[:], id[:])
	return "SHA256:" + string(b[:fingerprintPrefixChars]) + "…"
}

// pkixDigest returns SHA-256 of the PKIX DER encoding of pub. ok is false for
// a nil or malformed key.
func pkixDigest(pub *rsa.PublicKey) (sum [sha256.Size]byte, ok bool) {
	if pub == nil || pub.N == nil || pub.N.Sign() <= 0 {
		return sum, false
	}
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return sum, false
	}
	return sha256.Sum256(der), true
}

// KeyIDOf returns the KeyID of pub. A nil or malformed key yields the zero
// KeyID.
func KeyIDOf(pub *rsa.PublicKey) KeyID {
	var id KeyID
	if sum, ok := pkixDigest(pub); ok {
		copy(id[:], sum[:])
	}
	return id
}

// Fingerprint returns the human-readable fingerprint of pub: "SHA256:"
// followed by the unpadded standard base64 of SHA-256 over the PKIX DER
// encoding, in the style of ssh-keygen -l. (The hash input is the PKIX
// encoding, not the SSH wire encoding, so the value differs from what
// ssh-keygen prints for the same key.) A nil or malformed key yields "".
func Fingerprint(pub *rsa.PublicKey) string {
	sum, ok := pkixDigest(pub)
	if !ok {
		return ""
	}
	return "SHA256:" + base64.RawStdEncoding.EncodeToString(sum[:])
}

// CheckRSAKeySize returns nil if pub's modulus is between MinRSABits and
// MaxRSABits bits inclusive; otherwise an error wrapping ErrKeyTooSmall or
// ErrKeyTooLarge that states the size, e.g. "RSA key too small: 1024 bits,
// minimum 2048". A nil key or modulus yields an error wrapping ErrNotRSAKey.
func CheckRSAKeySize(pub *rsa.PublicKey) error {
	if pub == nil || pub.N == nil {
		return fmt.Errorf("%w: missing public key", ErrNotRSAKey)
	}
	return checkBits(pub.N.BitLen())
}

func checkBits(bits int) error {
	switch {
	case bits < MinRSABits:
		return fmt.Errorf("%w: %d bits, minimum %d", ErrKeyTooSmall, bits, MinRSABits)
	case bits > MaxRSABits:
		return fmt.Errorf("%w: %d bits, maximum %d", ErrKeyTooLarge, bits, MaxRSABits)
	}
	return nil
}

// GenerateRSAKey generates an RSA private key of the given size, reading
// randomness from random (crypto/rand.Reader if nil; but see the package
// documentation: Go 1.26 ignores a custom reader here by default). bits 0
// means DefaultRSABits; sizes outside [MinRSABits, MaxRSABits] are refused
// with ErrKeyTooSmall or ErrKeyTooLarge before any work is done.
func GenerateRSAKey(random io.Reader, bits int) (*rsa.PrivateKey, error) {
	if bits == 0 {
		bits = DefaultRSABits
	}
	if err := checkBits(bits); err != nil {
		return nil, err
	}
	if random == nil {
		random = rand.Reader
	}
	key, err := rsa.GenerateKey(random, bits)
	if err != nil {
		return nil, fmt.Errorf("generate RSA key: %w", err)
	}
	return key, nil
}

// MarshalPrivateKeyPEM encodes key as an unencrypted PKCS#8 "PRIVATE KEY" PEM
// block. Keys outside the accepted size range are refused, so that nothing is
// written that ParsePrivateKeyPEM would reject. The result is secret: wipe it
// (Wipe) when done.
func MarshalPrivateKeyPEM(key *rsa.PrivateKey) ([]byte, error) {
	if key == nil {
		return nil, fmt.Errorf("marshal private key: %w: missing key", ErrNotRSAKey)
	}
	if err := CheckRSAKeySize(&key.PublicKey); err != nil {
		return nil, fmt.Errorf("marshal private key: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		// x509 errors describe the structure, never the key values.
		return nil, fmt.Errorf("marshal private key: %w", err)
	}
	defer Wipe(der)
	return pem.EncodeToMemory(&pem.Block{Type: pemPrivateKey, Bytes: der}), nil
}

// MarshalPublicKeyPEM encodes pub as a PKIX "PUBLIC KEY" PEM block. Keys
// outside the accepted size range are refused.
func MarshalPublicKeyPEM(pub *rsa.PublicKey) ([]byte, error) {
	if err := CheckRSAKeySize(pub); err != nil {
		return nil, fmt.Errorf("marshal public key: %w", err)
	}
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("marshal public key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: pemPublicKey, Bytes: der}), nil
}

// decodeOnePEM finds exactly one PEM block in data. Errors wrap ErrBadPEM
// and never contain the block contents.
func decodeOnePEM(data []byte) (*pem.Block, error) {
	block, rest := pem.Decode(data)
	if block == nil {
		return nil, fmt.Errorf("%w: no valid PEM block found", ErrBadPEM)
	}
	if len(block.Headers) != 0 {
		Wipe(block.Bytes)
		if _, ok := block.Headers["Proc-Type"]; ok {
			return nil, fmt.Errorf("%w: encrypted PEM keys are not supported; store the key unencrypted with mode 0600", ErrBadPEM)
		}
		return nil, fmt.Errorf("%w: unexpected PEM headers", ErrBadPEM)
	}
	if next, _ := pem.Decode(rest); next != nil {
		Wipe(block.Bytes)
		Wipe(next.Bytes)
		return nil, fmt.Errorf("%w: more than one PEM block; expected a single key", ErrBadPEM)
	}
	return block, nil
}

// showType renders a PEM block type for an error message. The type line is
// a label, not key material, but it comes from untrusted input, so it is
// quoted and bounded.
func showType(t string) string {
	if len(t) > maxShownBlockTypes {
		t = t[:maxShownBlockTypes] + "..."
	}
	return fmt.Sprintf("%q", t)
}

// keyKind names the algorithm of a parsed key for error messages.
func keyKind(k any) string {
	switch k.(type) {
	case *ecdsa.PrivateKey, *ecdsa.PublicKey:
		return "ECDSA"
	case ed25519.PrivateKey, ed25519.PublicKey:
		return "Ed25519"
	case *ecdh.PrivateKey, *ecdh.PublicKey:
		return "ECDH (X25519)"
	default:
		return fmt.Sprintf("%T", k)
	}
}

// ParsePrivateKeyPEM parses an RSA private key from a single unencrypted PEM
// block: PKCS#8 "PRIVATE KEY" (what MarshalPrivateKeyPEM writes) or, for
// compatibility with older OpenSSL, PKCS#1 "RSA PRIVATE KEY". The key is
// validated and its size checked against [MinRSABits, MaxRSABits]. Errors
// wrap ErrBadPEM, ErrNotRSAKey, ErrKeyTooSmall or ErrKeyTooLarge and never
// include any of data.
func ParsePrivateKeyPEM(data []byte) (*rsa.PrivateKey, error) {
	block, err := decodeOnePEM(data)
	if err != nil {
		return nil, err
	}
	defer Wipe(block.Bytes)

	var parsed any
	switch block.Type {
	case pemPrivateKey:
		parsed, err = x509.ParsePKCS8PrivateKey(block.Bytes)
		if err != nil {
			// The x509/asn1 error text is dropped on purpose: parse errors
			// on private key DER are no business of a log file.
			return nil, fmt.Errorf("%w: %s block is not a valid PKCS#8 private key (or uses an unsupported algorithm)", ErrBadPEM, pemPrivateKey)
		}
	case pemRSAPrivateKey:
		parsed, err = x509.ParsePKCS1PrivateKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%w: %s block is not a valid PKCS#1 RSA private key", ErrBadPEM, pemRSAPrivateKey)
		}
	case pemEncryptedKey:
		return nil, fmt.Errorf("%w: encrypted private keys are not supported; store the key unencrypted with mode 0600", ErrBadPEM)
	case pemPublicKey, pemRSAPublicKey:
		return nil, fmt.Errorf("%w: found a public key (%s block) where a private key was expected", ErrBadPEM, showType(block.Type))
	default:
		return nil, fmt.Errorf("%w: PEM block type is %s, want %q", ErrBadPEM, showType(block.Type), pemPrivateKey)
	}

	key, ok := parsed.(*rsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("%w: found %s private key", ErrNotRSAKey, keyKind(parsed))
	}
	if err := CheckRSAKeySize(&key.PublicKey); err != nil {
		return nil, err
	}
	// crypto/x509 has already run key.Validate and key.Precompute.
	return key, nil
}

// ParsePublicKeyPEM parses an RSA public key from a single PEM block: PKIX
// "PUBLIC KEY" (what MarshalPublicKeyPEM writes) or PKCS#1 "RSA PUBLIC KEY".
// The size is checked against [MinRSABits, MaxRSABits]. Errors wrap
// ErrBadPEM, ErrNotRSAKey, ErrKeyTooSmall or ErrKeyTooLarge and never include
// any of data.
func ParsePublicKeyPEM(data []byte) (*rsa.PublicKey, error) {
	block, err := decodeOnePEM(data)
	if err != nil {
		return nil, err
	}
	var parsed any
	switch block.Type {
	case pemPublicKey:
		parsed, err = x509.ParsePKIXPublicKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%w: %s block is not a valid PKIX public key (or uses an unsupported algorithm)", ErrBadPEM, pemPublicKey)
		}
	case pemRSAPublicKey:
		parsed, err = x509.ParsePKCS1PublicKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%w: %s block is not a valid PKCS#1 RSA public key", ErrBadPEM, pemRSAPublicKey)
		}
	case pemPrivateKey, pemRSAPrivateKey, pemEncryptedKey:
		// Do not keep private key bytes around longer than needed.
		Wipe(block.Bytes)
		return nil, fmt.Errorf("%w: found a private key (%s block) where a public key was expected; never hand out the private key", ErrBadPEM, showType(block.Type))
	case "CERTIFICATE":
		return nil, fmt.Errorf("%w: found a certificate; expected a bare %q block", ErrBadPEM, pemPublicKey)
	default:
		return nil, fmt.Errorf("%w: PEM block type is %s, want %q", ErrBadPEM, showType(block.Type), pemPublicKey)
	}
	pub, ok := parsed.(*rsa.PublicKey)
	if !ok {
		return nil, fmt.Errorf("%w: found %s public key", ErrNotRSAKey, keyKind(parsed))
	}
	if err := CheckRSAKeySize(pub); err != nil {
		return nil, err
	}
	return pub, nil
}

// SavePrivateKey writes key to path as PKCS#8 PEM with mode 0600, atomically
// (see WriteFileAtomic). It refuses to overwrite an existing file
// (ErrFileExists).
func SavePrivateKey(path string, key *rsa.PrivateKey) error {
	data, err := MarshalPrivateKeyPEM(key)
	if err != nil {
		return fmt.Errorf("save private key %s: %w", path, err)
	}
	defer Wipe(data)
	if err := WriteFileAtomic(path, data, 0o600, false); err != nil {
		return fmt.Errorf("save private key: %w", err)
	}
	return nil
}

// SavePublicKey writes pub to path as PKIX PEM with mode 0644, atomically
// (see WriteFileAtomic). It refuses to overwrite an existing file
// (ErrFileExists).
func SavePublicKey(path string, pub *rsa.PublicKey) error {
	data, err := MarshalPublicKeyPEM(pub)
	if err != nil {
		return fmt.Errorf("save public key %s: %w", path, err)
	}
	if err := WriteFileAtomic(path, data, 0o644, false); err != nil {
		return fmt.Errorf("save public key: %w", err)
	}
	return nil
}

// LoadPrivateKey reads and parses an RSA private key file (see
// ParsePrivateKeyPEM). The error is one line naming path and the problem,
// e.g. "private key /etc/dronelink/drone.key: RSA key too small: 1024 bits,
// minimum 2048". A file that holds a valid key but that group or others may
// access is refused with an *InsecureFileError, whose message is the whole line.
func LoadPrivateKey(path string) (*rsa.PrivateKey, error) {
	data, mode, err := readSmallFile(path)
	if err != nil {
		return nil, fmt.Errorf("private key %s: %w", path, err)
	}
	defer Wipe(data)
	key, err := ParsePrivateKeyPEM(data)
	if err != nil {
		return nil, fmt.Errorf("private key %s: %w", path, err)
	}
	// Checked after parsing: a public key given by mistake is named as such, not met
	// with advice to chmod it.
	if err := checkSecretMode(path, mode, "key"); err != nil {
		return nil, err
	}
	return key, nil
}

// LoadPublicKey reads and parses an RSA public key file (see
// ParsePublicKeyPEM). The error is one line naming path and the problem.
func LoadPublicKey(path string) (*rsa.PublicKey, error) {
	data, _, err := readSmallFile(path)
	if err != nil {
		return nil, fmt.Errorf("public key %s: %w", path, err)
	}
	pub, err := ParsePublicKeyPEM(data)
	if err != nil {
		return nil, fmt.Errorf("public key %s: %w", path, err)
	}
	return pub, nil
}
