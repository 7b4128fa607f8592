package crypto

import (
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"strings"
	"unicode"
)

// The readable fingerprint: a key's fingerprint in a form that is easy to read aloud over
// a radio or a phone and to compare group by group.
const (
	// DigitGroups is how many groups of digits a DigitFingerprint has.
	DigitGroups = 10
	// DigitGroupSize is how many decimal digits each group has: one big-endian uint16
	// (0 to 65535), zero-padded.
	DigitGroupSize = 5
	// DigitFingerprintBytes is how many bytes of the SHA-256 the readable form shows: the
	// first 20 (160 bits), two per group.
	DigitFingerprintBytes = 2 * DigitGroups

	fingerprintPrefix    = "SHA256:"
	fingerprintB64Chars  = (sha256.Size*8 + 5) / 6 // 43: unpadded base64 of 32 bytes
	maxFingerprintLength = 256                     // longest input ParseFingerprint looks at
)

// DigitFingerprint returns the readable fingerprint of pub: the first
// DigitFingerprintBytes bytes of the same SHA-256 that Fingerprint shows (over the key's
// PKIX DER encoding), as DigitGroups groups of DigitGroupSize decimal digits separated by
// single spaces, each group one big-endian uint16, zero-padded:
//
//	"12345 06789 00042 65535 ..."
//
// Two keys with the same readable fingerprint share the first 160 bits of their SHA-256,
// so finding a key that matches a given one costs about 2^160 hash evaluations. A nil or
// malformed key yields "".
func DigitFingerprint(pub *rsa.PublicKey) string {
	sum, ok := pkixDigest(pub)
	if !ok {
		return ""
	}
	return digitsOf(sum[:DigitFingerprintBytes])
}

// digitsOf formats 2*DigitGroups bytes as the readable form.
func digitsOf(b []byte) string {
	out := make([]byte, 0, DigitGroups*(DigitGroupSize+1)-1)
	for i := range DigitGroups {
		if i > 0 {
			out = append(out, ' ')
		}
		v := binary.BigEndian.Uint16(b[2*i:])
		var group [DigitGroupSize]byte
		for j := DigitGroupSize - 1; j >= 0; j-- {
			group[j] = '0' + byte(v%10)
			v /= 10
		}
		out = append(out, group[:]...)
	}
	return string(out)
}

// ErrBadFingerprint is returned by ParseFingerprint for text that is neither form.
var ErrBadFingerprint = errors.New(`not a key fingerprint: want "SHA256:" and 43 base64 characters, or 50 digits (10 groups of 5)`)

// ParseFingerprint reads a fingerprint a person typed or pasted, in either form, and
// returns it in canonical form (as Fingerprint or DigitFingerprint print it) with digits
// true for the readable form:
//
//   - "SHA256:" (in any case) and the 43 characters of unpadded standard base64, exactly
//     (base64 is case-sensitive);
//   - 50 decimal digits, each group of 5 at most 65535, in any grouping: white space and
//     hyphens anywhere are ignored ("12345 06789 ...", "12345-06789-...", or 50 digits in a
//     row).
//
// Leading and trailing white space is ignored. Anything else is ErrBadFingerprint; the
// error never quotes the input.
func ParseFingerprint(s string) (canonical string, digits bool, err error) {
	if len(s) > maxFingerprintLength {
		return "", false, ErrBadFingerprint
	}
	s = strings.TrimSpace(s)
	if len(s) >= len(fingerprintPrefix) && strings.EqualFold(s[:len(fingerprintPrefix)], fingerprintPrefix) {
		b64 := s[len(fingerprintPrefix):]
		if len(b64) != fingerprintB64Chars {
			return "", false, ErrBadFingerprint
		}
		sum, err := base64.RawStdEncoding.Strict().DecodeString(b64)
		if err != nil || len(sum) != sha256.Size {
			return "", false, ErrBadFingerprint
		}
		return fingerprintPrefix + base64.RawStdEncoding.EncodeToString(sum), false, nil
	}
	var raw [DigitFingerprintBytes]byte
	n := 0 // digits seen
	v := 0 // value of the current group
	for _, r := range s {
		switch {
		case unicode.IsSpace(r) || r == '-':
			continue
		case r < '0' || r > '9' || n == DigitGroups*DigitGroupSize:
			return "", false, ErrBadFingerprint
		}
		v = v*10 + int(r-'0')
		n++
		if n%DigitGroupSize == 0 {
			if v > 0xffff {
				return "", false, ErrBadFingerprint
			}
			binary.BigEndian.PutUint16(raw[2*(n/DigitGroupSize-1):], uint16(v))
			v = 0
		}
	}
	if n != DigitGroups*DigitGroupSize {
		return "", false, ErrBadFingerprint
	}
	return digitsOf(raw[:]), true, nil
}

// FingerprintIn returns pub's fingerprint in the form digits selects: DigitFingerprint if
// true, Fingerprint if false.
func FingerprintIn(pub *rsa.PublicKey, digits bool) string {
	if digits {
		return DigitFingerprint(pub)
	}
	return Fingerprint(pub)
}
