package userdb

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/crypto/argon2"

	"github.com/dronelink/dronelink/pkg/crypto"
)

// Params are argon2id parameters.
type Params struct {
	Time      uint32 // passes over memory (t)
	MemoryKiB uint32 // memory in KiB (m)
	Threads   uint8  // lanes (p)
	SaltLen   uint32 // salt length in bytes
	KeyLen    uint32 // hash length in bytes
}

// DefaultParams are the parameters for new password hashes: the second
// recommended option of RFC 9106 section 4 (64 MiB, one pass), with two
// lanes to suit a small multi-core drone computer.
var DefaultParams = Params{Time: 1, MemoryKiB: 64 * 1024, Threads: 2, SaltLen: 16, KeyLen: 32}

// Limits on argon2id parameters, enforced both when hashing and, before any
// work is done, when verifying a stored hash: the hash comes from a file, and
// an absurd m or t would let whoever can write that file (or corrupt it) make
// every login allocate gigabytes or spin for minutes.
const (
	MaxMemoryKiB = 1 << 20 // 1 GiB
	MaxTime      = 16
	MaxThreads   = 16
	MinSaltLen   = 8
	MaxSaltLen   = 64
	MinKeyLen    = 16
	MaxKeyLen    = 64

	// maxEncodedLen bounds a PHC string: the header and parameters are
	// under 60 bytes, the salt and hash at most 86 base64 digits each.
	maxEncodedLen = 256
	phcPrefix     = "$argon2id$"
)

// b64 is the PHC string base64: standard alphabet, no padding, and (Strict)
// no stray bits in the last digit, so that every hash has exactly one
// encoding.
var b64 = base64.RawStdEncoding.Strict()

// Floors for new password hashes, after the OWASP Password Storage Cheat Sheet's argon2id
// configurations (46 MiB with one pass; 19 MiB with two): CheckCost refuses less. Stored
// hashes are verified whatever their cost (within the limits above).
const (
	MinMemoryKiB        = 19 * 1024 // with two or more passes
	MinMemoryKiBOnePass = 46 * 1024 // with one pass
)

// ErrWeakParams reports argon2id parameters below the floors for new hashes (CheckCost).
var ErrWeakParams = errors.New("argon2id parameters too weak")

// CheckCost checks p as parameters for new password hashes: within the limits, and at
// least MinMemoryKiB of memory with two or more passes, or MinMemoryKiBOnePass with one
// (fewer passes need more memory for the same resistance to guessing on GPUs). Errors wrap
// ErrWeakParams or ErrBadHash. HashPassword does not call it: tests and tools may hash
// cheaply on purpose; the dronelink command line does.
func (p Params) CheckCost() error {
	if err := p.validate(); err != nil {
		return err
	}
	switch {
	case p.Time == 1 && p.MemoryKiB < MinMemoryKiBOnePass:
		return fmt.Errorf("%w: m=%d KiB with t=1: want at least %d KiB (%d MiB) with one pass, or t=2 and at least %d KiB (%d MiB)",
			ErrWeakParams, p.MemoryKiB, MinMemoryKiBOnePass, MinMemoryKiBOnePass/1024, MinMemoryKiB, MinMemoryKiB/1024)
	case p.MemoryKiB < MinMemoryKiB:
		return fmt.Errorf("%w: m=%d KiB: want at least %d KiB (%d MiB)", ErrWeakParams, p.MemoryKiB, MinMemoryKiB, MinMemoryKiB/1024)
	}
	return nil
}

// cost orders parameters by the work of one hash: memory times passes.
func (p Params) cost() uint64 { return uint64(p.MemoryKiB) * uint64(p.Time) }

// validate checks p against the limits. Errors wrap ErrBadHash.
func (p Params) validate() error {
	switch {
	case p.Time < 1 || p.Time > MaxTime:
		return fmt.Errorf("%w: argon2id t=%d outside 1..%d", ErrBadHash, p.Time, MaxTime)
	case p.Threads < 1 || p.Threads > MaxThreads:
		return fmt.Errorf("%w: argon2id p=%d outside 1..%d", ErrBadHash, p.Threads, MaxThreads)
	case p.MemoryKiB < 8*uint32(p.Threads) || p.MemoryKiB > MaxMemoryKiB:
		// 8 KiB per lane is the argon2 minimum (RFC 9106 section 3.1).
		return fmt.Errorf("%w: argon2id m=%d outside %d..%d", ErrBadHash, p.MemoryKiB, 8*uint32(p.Threads), MaxMemoryKiB)
	case p.SaltLen < MinSaltLen || p.SaltLen > MaxSaltLen:
		return fmt.Errorf("%w: argon2id salt length %d outside %d..%d", ErrBadHash, p.SaltLen, MinSaltLen, MaxSaltLen)
	case p.KeyLen < MinKeyLen || p.KeyLen > MaxKeyLen:
		return fmt.Errorf("%w: argon2id hash length %d outside %d..%d", ErrBadHash, p.KeyLen, MinKeyLen, MaxKeyLen)
	}
	return nil
}

// HashPassword hashes password with argon2id and a fresh random salt and
// returns the PHC string form used by the argon2 reference implementation,
// e.g.
//
//	$argon2id$v=19$m=65536,t=1,p=2$<salt>$<hash>
//
// with salt and hash in unpadded standard base64. Parameters outside the
// limits VerifyPassword accepts are refused (ErrBadHash).
func HashPassword(password []byte, p Params) (string, error) {
	if err := p.validate(); err != nil {
		return "", err
	}
	salt := make([]byte, p.SaltLen)
	if _, err := rand.Read(salt); err != nil {
		return "", fmt.Errorf("hash password: read random salt: %w", err)
	}
	return hashWithSalt(password, salt, p), nil
}

// hashWithSalt is HashPassword with a given salt; p.SaltLen is ignored.
// The caller has validated p.
func hashWithSalt(password, salt []byte, p Params) string {
	key := argon2.IDKey(password, salt, p.Time, p.MemoryKiB, p.Threads, p.KeyLen)
	s := encodePHC(p, salt, key)
	crypto.Wipe(key)
	return s
}

func encodePHC(p Params, salt, key []byte) string {
	return fmt.Sprintf("%sv=%d$m=%d,t=%d,p=%d$%s$%s", phcPrefix, argon2.Version,
		p.MemoryKiB, p.Time, p.Threads, b64.EncodeToString(salt), b64.EncodeToString(key))
}

// VerifyPassword reports whether password matches encoded, an argon2id PHC
// string as HashPassword produces. The comparison is constant time.
//
// The string is parsed strictly and its parameters are checked before any
// hashing is done: only "$argon2id$v=19$m=M,t=T,p=P$SALT$HASH" with exactly
// those three parameters in that order, decimal numbers without sign or
// leading zeros, 1 <= t <= MaxTime, 1 <= p <= MaxThreads,
// 8p <= m <= MaxMemoryKiB, a salt of MinSaltLen..MaxSaltLen bytes and a hash
// of MinKeyLen..MaxKeyLen bytes in unpadded standard base64. Anything else
// is an error wrapping ErrBadHash (and ok is false). Errors describe the
// problem and never contain the salt, the hash or the password.
func VerifyPassword(encoded string, password []byte) (bool, error) {
	p, salt, want, err := decodePHC(encoded)
	if err != nil {
		return false, err
	}
	got := argon2.IDKey(password, salt, p.Time, p.MemoryKiB, p.Threads, p.KeyLen)
	ok := subtle.ConstantTimeCompare(got, want) == 1
	crypto.Wipe(got)
	return ok, nil
}

// decodePHC parses and validates an argon2id PHC string. Errors wrap
// ErrBadHash and never include the salt or hash.
func decodePHC(encoded string) (p Params, salt, key []byte, err error) {
	bad := func(format string, args ...any) (Params, []byte, []byte, error) {
		return Params{}, nil, nil, fmt.Errorf("%w: "+format, append([]any{ErrBadHash}, args...)...)
	}
	if len(encoded) > maxEncodedLen {
		return bad("longer than %d bytes", maxEncodedLen)
	}
	// encoding/base64 silently skips CR and LF; refuse them (and any other
	// control or non-ASCII byte) so that one hash has one spelling.
	for i := 0; i < len(encoded); i++ {
		if c := encoded[i]; c <= ' ' || c >= 0x7f {
			return bad("contains a space, control or non-ASCII character")
		}
	}
	parts := strings.Split(encoded, "$")
	if len(parts) < 2 || parts[0] != "" {
		return bad("not a PHC string (want $argon2id$v=19$m=...,t=...,p=...$salt$hash)")
	}
	if parts[1] != "argon2id" {
		return bad("algorithm %s is not argon2id", showAlg(parts[1]))
	}
	if len(parts) != 6 {
		return bad("want 5 $-separated fields ($argon2id$v=19$m=...,t=...,p=...$salt$hash), got %d", len(parts)-1)
	}
	v, ok := strings.CutPrefix(parts[2], "v=")
	if !ok {
		return bad("missing version field v=19")
	}
	ver, ok := parseDecimal(v)
	if !ok || ver != argon2.Version {
		return bad("unsupported argon2 version %s (want v=%d)", showAlg(v), argon2.Version)
	}
	fields := strings.Split(parts[3], ",")
	if len(fields) != 3 {
		return bad("want parameters m=...,t=...,p=...")
	}
	var vals [3]uint32
	for i, name := range [3]string{"m=", "t=", "p="} {
		s, ok := strings.CutPrefix(fields[i], name)
		if !ok {
			return bad("want parameters m=...,t=...,p=... in that order")
		}
		if vals[i], ok = parseDecimal(s); !ok {
			return bad("parameter %s is not a decimal number below 2^32", name[:1])
		}
	}
	if vals[2] > MaxThreads {
		return bad("argon2id p=%d outside 1..%d", vals[2], MaxThreads)
	}
	p = Params{MemoryKiB: vals[0], Time: vals[1], Threads: uint8(vals[2])}
	// Check the numeric parameters before decoding anything else.
	p.SaltLen, p.KeyLen = MinSaltLen, MinKeyLen
	if err := p.validate(); err != nil {
		return Params{}, nil, nil, err
	}
	salt, err = b64.DecodeString(parts[4])
	if err != nil {
		return bad("salt is not unpadded base64")
	}
	key, err = b64.DecodeString(parts[5])
	if err != nil {
		return bad("hash is not unpadded base64")
	}
	p.SaltLen, p.KeyLen = uint32(len(salt)), uint32(len(key))
	if err := p.validate(); err != nil {
		return Params{}, nil, nil, err
	}
	return p, salt, key, nil
}

// parseDecimal parses a canonical decimal uint32: digits only, no sign, no
// leading zeros.
func parseDecimal(s string) (uint32, bool) {
	if s == "" || len(s) > 10 || (len(s) > 1 && s[0] == '0') {
		return 0, false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
	}
	n, err := strconv.ParseUint(s, 10, 32)
	return uint32(n), err == nil
}

// showAlg quotes a short, non-secret PHC field (algorithm, version) for an
// error message, bounded in length.
func showAlg(s string) string {
	if len(s) > 16 {
		s = s[:16] + "..."
	}
	return strconv.Quote(s)
}

// burnDummy spends the cost of one VerifyPassword with p, for logins of unknown users,
// so that response time does not tell which user names exist. The dummy hash (all-zero
// salt and hash) is formatted on the fly (no hashing) and matches no password in practice.
func burnDummy(password []byte, p Params) {
	if p.validate() != nil {
		p = DefaultParams
	}
	dummy := encodePHC(p, make([]byte, p.SaltLen), make([]byte, p.KeyLen))
	_, _ = VerifyPassword(dummy, password)
}
