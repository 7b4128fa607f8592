package crypto

import (
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"testing"
	"unicode/utf8"
)

// The readable form is the first 20 bytes of the very hash the SHA256: form shows, and
// nothing else: recomputed here from the PKIX DER, independently of the code under test.
func TestDigitFingerprintIsPrefixOfSHA256(t *testing.T) {
	for _, bits := range []int{2048, 4096} {
		pub := &testKey(t, bits).PublicKey
		der, err := x509.MarshalPKIXPublicKey(pub)
		if err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(der)
		var want []string
		for i := range DigitGroups {
			want = append(want, fmt.Sprintf("%05d", binary.BigEndian.Uint16(sum[2*i:])))
		}
		got := DigitFingerprint(pub)
		if got != strings.Join(want, " ") {
			t.Errorf("%d bits: DigitFingerprint %q, want %q", bits, got, strings.Join(want, " "))
		}
		fromB64, err := base64.RawStdEncoding.DecodeString(strings.TrimPrefix(Fingerprint(pub), "SHA256:"))
		if err != nil || string(fromB64[:DigitFingerprintBytes]) != string(sum[:DigitFingerprintBytes]) {
			t.Errorf("%d bits: the SHA256: form does not start with the same 20 bytes", bits)
		}
		if len(got) != DigitGroups*(DigitGroupSize+1)-1 {
			t.Errorf("%d bits: length %d", bits, len(got))
		}
		for _, form := range []bool{false, true} {
			canon, digits, err := ParseFingerprint(FingerprintIn(pub, form))
			if err != nil || digits != form || canon != FingerprintIn(pub, form) {
				t.Errorf("%d bits, digits=%v: ParseFingerprint of its own output: %q %v %v", bits, form, canon, digits, err)
			}
		}
	}
	if DigitFingerprint(nil) != "" || DigitFingerprint(&rsa.PublicKey{}) != "" {
		t.Error("a nil or empty key has a readable fingerprint")
	}
}

// Zero padding and the extremes of a group.
func TestDigitsOf(t *testing.T) {
	b := make([]byte, DigitFingerprintBytes)
	binary.BigEndian.PutUint16(b[0:], 0)
	binary.BigEndian.PutUint16(b[2:], 7)
	binary.BigEndian.PutUint16(b[4:], 65535)
	binary.BigEndian.PutUint16(b[6:], 10000)
	const want = "00000 00007 65535 10000 00000 00000 00000 00000 00000 00000"
	if got := digitsOf(b); got != want {
		t.Errorf("digitsOf = %q, want %q", got, want)
	}
}

func TestParseFingerprint(t *testing.T) {
	const (
		b64    = "SHA256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU" // SHA-256 of nothing
		digits = "12345 06789 00042 65535 00000 11111 22222 33333 44444 55555"
	)
	tests := []struct {
		name, in, want string
		digits         bool
	}{
		{"sha256", b64, b64, false},
		{"sha256, prefix in lower case", "sha256:" + b64[7:], b64, false},
		{"sha256, surrounding space", "  " + b64 + "\n", b64, false},
		{"digits", digits, digits, true},
		{"digits, hyphens", strings.ReplaceAll(digits, " ", "-"), digits, true},
		{"digits, no separators", strings.ReplaceAll(digits, " ", ""), digits, true},
		{"digits, other grouping and tabs", "\t123 4506 789\t0004265535 0000011111222223333344444 55555\r\n", digits, true},
		{"sha256, base64 in another case", "SHA256:" + strings.ToLower(b64[7:]), "", false},
		{"sha256 without prefix", b64[7:], "", false},
		{"sha256, padded", b64 + "=", "", false},
		{"sha256, one character short", b64[:len(b64)-1], "", false},
		{"sha256, nonzero trailing bits", b64[:len(b64)-1] + "V", "", false},
		{"sha256, space inside", b64[:20] + " " + b64[20:], "", false},
		{"digits, group above 65535", "65536" + digits[5:], "", false},
		{"digits, 49", digits[:len(digits)-1], "", false},
		{"digits, 51", digits + "5", "", false},
		{"digits, a letter", "1234a" + digits[5:], "", false},
		{"digits, arabic-indic", "١٢٣٤٥" + digits[5:], "", false},
		{"empty", "", "", false},
		{"only space", "   ", "", false},
		{"too long", strings.Repeat(" ", 300) + digits, "", false},
		{"MD5 form", "MD5:16:27:ac:a5:76:28:2d:36:63:1b:56:4d:eb:df:a6:48", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, digits, err := ParseFingerprint(tt.in)
			if tt.want == "" {
				if !errors.Is(err, ErrBadFingerprint) || got != "" {
					t.Fatalf("ParseFingerprint(%q) = %q, %v; want ErrBadFingerprint", tt.in, got, err)
				}
				return
			}
			if err != nil || got != tt.want || digits != tt.digits {
				t.Fatalf("ParseFingerprint(%q) = %q, %v, %v; want %q, %v", tt.in, got, digits, err, tt.want, tt.digits)
			}
		})
	}
}

// The largest key the link carries (4096 bits, the largest exponent crypto/rsa uses) and
// the smallest (2048 bits, exponent 3) have the DER sizes pkg/link's key answer is built
// around (docs/PROTOCOL.md section 4.6).
func TestPKIXSizeBounds(t *testing.T) {
	top := func(bits int) *big.Int {
		return new(big.Int).Sub(new(big.Int).Lsh(big.NewInt(1), uint(bits)), big.NewInt(1))
	}
	for _, tt := range []struct {
		bits, e, want int
	}{
		{4096, 1<<31 - 1, 551},
		{4096, 65537, 550},
		{2048, 3, 292},
		{2048, 65537, 294},
	} {
		der, err := x509.MarshalPKIXPublicKey(&rsa.PublicKey{N: top(tt.bits), E: tt.e})
		if err != nil || len(der) != tt.want {
			t.Errorf("%d bits, e=%d: %d bytes (%v), want %d", tt.bits, tt.e, len(der), err, tt.want)
		}
	}
}

func FuzzParseFingerprint(f *testing.F) {
	f.Add("SHA256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU")
	f.Add("12345 06789 00042 65535 00000 11111 22222 33333 44444 55555")
	f.Add("")
	f.Fuzz(func(t *testing.T, s string) {
		canon, digits, err := ParseFingerprint(s)
		if err != nil {
			if err != ErrBadFingerprint || canon != "" { // the sentinel itself: it never quotes the input
				t.Fatalf("failure shape: %q %v", canon, err)
			}
			return
		}
		if !utf8.ValidString(canon) {
			t.Fatalf("canonical form not UTF-8: %q", canon)
		}
		if digits {
			if len(canon) != DigitGroups*(DigitGroupSize+1)-1 || strings.Count(canon, " ") != DigitGroups-1 {
				t.Fatalf("digits form %q has the wrong shape", canon)
			}
		} else if !strings.HasPrefix(canon, "SHA256:") || len(canon) != len("SHA256:")+43 {
			t.Fatalf("SHA256 form %q has the wrong shape", canon)
		}
		again, digits2, err := ParseFingerprint(canon)
		if err != nil || again != canon || digits2 != digits {
			t.Fatalf("canonical form %q does not parse to itself: %q %v", canon, again, err)
		}
	})
}
