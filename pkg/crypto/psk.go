package crypto

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"io"
)

// redactedPSK is how a PSK renders in every textual form.
const redactedPSK = "PSK(redacted)"

// PSK is a 32-byte pre-shared key mixed into the session key schedule.
//
// A PSK never prints: String, GoString, Format (every verb and flag: %v %+v
// %#v %s %q %x %X %d ...) and MarshalText all produce "PSK(redacted)". This
// covers fmt, log, log/slog (text and JSON handlers) and encoding/json. It
// cannot cover code that reaches the bytes directly (psk[:]), nor fmt
// printing a struct whose PSK field is unexported (fmt cannot call methods
// on unexported fields and prints the raw array) — do not print structs that
// hold a PSK.
type PSK [PSKSize]byte

// String returns "PSK(redacted)".
func (PSK) String() string { return redactedPSK }

// GoString returns "PSK(redacted)", so %#v does not reveal the key.
func (PSK) GoString() string { return redactedPSK }

// Format implements fmt.Formatter so that every verb, including %x and %d
// which would otherwise print the bytes, prints "PSK(redacted)".
func (PSK) Format(f fmt.State, _ rune) { _, _ = io.WriteString(f, redactedPSK) }

// MarshalText returns "PSK(redacted)", so that structured loggers and
// encoders (log/slog, encoding/json) cannot serialize the key by accident.
// It is deliberately lossy; persist a PSK with MarshalPSK or SavePSK.
func (PSK) MarshalText() ([]byte, error) { return []byte(redactedPSK), nil }

// isZero reports in constant time whether psk is all zeros.
func (psk *PSK) isZero() bool {
	var zero PSK
	return subtle.ConstantTimeCompare(psk[:], zero[:]) == 1
}

// GeneratePSK returns a new random PSK read from random (crypto/rand.Reader
// if nil).
func GeneratePSK(random io.Reader) (PSK, error) {
	if random == nil {
		random = rand.Reader
	}
	var psk PSK
	if _, err := io.ReadFull(random, psk[:]); err != nil {
		return PSK{}, fmt.Errorf("generate PSK: reading random bytes: %w", err)
	}
	if psk.isZero() {
		// Only a broken random source produces 32 zero bytes.
		return PSK{}, fmt.Errorf("generate PSK: random source returned all zeros")
	}
	return psk, nil
}

// ParsePSK parses the PSK file format: exactly 64 hex digits, optionally
// followed by a single "\n" or "\r\n". Upper- and mixed-case hex digits are
// accepted (hand-copied keys), although MarshalPSK writes lowercase.
// Anything else — other lengths, whitespace, a BOM, extra newlines, non-hex
// characters — and the all-zero key are refused with an error wrapping
// ErrBadPSK that never includes the input.
func ParsePSK(data []byte) (PSK, error) {
	var psk PSK
	if n := len(data); n > 0 && data[n-1] == '\n' {
		data = data[:n-1]
		if m := len(data); m > 0 && data[m-1] == '\r' {
			data = data[:m-1]
		}
	}
	if len(data) != 2*PSKSize {
		return PSK{}, fmt.Errorf("%w: want exactly %d hex digits (optionally followed by one newline), got %d bytes",
			ErrBadPSK, 2*PSKSize, len(data))
	}
	// hex.Decode's error names the offending byte, so it is not wrapped.
	if _, err := hex.Decode(psk[:], data); err != nil {
		Wipe(psk[:])
		return PSK{}, fmt.Errorf("%w: contains characters that are not hex digits", ErrBadPSK)
	}
	if psk.isZero() {
		return PSK{}, fmt.Errorf("%w: the key is all zeros; generate a random one", ErrBadPSK)
	}
	return psk, nil
}

// MarshalPSK encodes psk in the PSK file format: 64 lowercase hex digits and
// a newline. The result is secret: wipe it (Wipe) when done.
func MarshalPSK(psk PSK) []byte {
	out := make([]byte, 2*PSKSize+1)
	hex.Encode(out, psk[:])
	out[2*PSKSize] = '\n'
	return out
}

// SavePSK writes psk to path in the PSK file format with mode 0600,
// atomically (see WriteFileAtomic). It refuses to overwrite an existing file
// (ErrFileExists) and to save the all-zero key.
func SavePSK(path string, psk PSK) error {
	if psk.isZero() {
		return fmt.Errorf("save PSK %s: %w: the key is all zeros", path, ErrBadPSK)
	}
	data := MarshalPSK(psk)
	defer Wipe(data)
	if err := WriteFileAtomic(path, data, 0o600, false); err != nil {
		return fmt.Errorf("save PSK: %w", err)
	}
	return nil
}

// LoadPSK reads and parses a PSK file (see ParsePSK). The error is one line
// naming path and the problem, never the file's content. A file that holds a
// valid PSK but that group or others may access is refused with an
// *InsecureFileError, whose message is the whole line.
func LoadPSK(path string) (PSK, error) {
	data, mode, err := readSmallFile(path)
	if err != nil {
		return PSK{}, fmt.Errorf("PSK file %s: %w", path, err)
	}
	defer Wipe(data)
	psk, err := ParsePSK(data)
	if err != nil {
		return PSK{}, fmt.Errorf("PSK file %s: %w", path, err)
	}
	if err := checkSecretMode(path, mode, "PSK"); err != nil {
		Wipe(psk[:])
		return PSK{}, err
	}
	return psk, nil
}
