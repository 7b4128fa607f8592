package crypto

import (
	"bytes"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
)

// Seed corpora live in testdata/fuzz/<Target>/ (valid 2048-bit PEM keys in
// PKCS#8 and PKCS#1 form, EC and Ed25519 keys, a 1024-bit key, truncated and
// garbled blocks, the genuine AEAD packet and mutations of it).

func FuzzParsePSK(f *testing.F) {
	f.Add([]byte(testPSKHex))
	f.Add([]byte(testPSKHex + "\n"))
	f.Add([]byte(testPSKHex + "\r\n"))
	f.Add([]byte(strings.ToUpper(testPSKHex)))
	f.Add([]byte(strings.Repeat("0", 64)))
	f.Add([]byte(testPSKHex[:63] + "g"))
	f.Add([]byte(""))
	f.Fuzz(func(t *testing.T, data []byte) {
		psk, err := ParsePSK(data)
		if err != nil {
			if !errors.Is(err, ErrBadPSK) {
				t.Fatalf("error does not wrap ErrBadPSK: %v", err)
			}
			if psk != (PSK{}) {
				t.Fatal("failed parse returned key material")
			}
			// Never echo the input: a hex run of 16+ characters cannot
			// legitimately appear in the message.
			if len(data) >= 16 && isHex(data) && strings.Contains(strings.ToLower(err.Error()), strings.ToLower(string(data[:16]))) {
				t.Fatalf("error echoes the input: %v", err)
			}
			return
		}
		// Accepted: exactly 64 hex digits plus an optional LF or CRLF.
		body := bytes.TrimSuffix(bytes.TrimSuffix(data, []byte("\n")), []byte("\r"))
		if len(body) != 64 || !isHex(body) || len(data)-len(body) > 2 {
			t.Fatalf("accepted malformed input %q", data)
		}
		if psk == (PSK{}) {
			t.Fatal("accepted the all-zero key")
		}
		if want, _ := hex.DecodeString(string(body)); !bytes.Equal(psk[:], want) {
			t.Fatal("decoded value differs")
		}
		back, err := ParsePSK(MarshalPSK(psk))
		if err != nil || back != psk {
			t.Fatalf("MarshalPSK round trip: %v", err)
		}
	})
}

func isHex(b []byte) bool {
	for _, c := range b {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F') {
			return false
		}
	}
	return true
}

// keyErrorOK reports whether err is one of the documented parse failures.
func keyErrorOK(err error) bool {
	return errors.Is(err, ErrBadPEM) || errors.Is(err, ErrNotRSAKey) ||
		errors.Is(err, ErrKeyTooSmall) || errors.Is(err, ErrKeyTooLarge)
}

func FuzzParsePrivateKeyPEM(f *testing.F) {
	f.Add([]byte(""))
	f.Add([]byte("-----BEGIN PRIVATE KEY-----\n-----END PRIVATE KEY-----\n"))
	f.Add([]byte("-----BEGIN RSA PRIVATE KEY-----\nMAA=\n-----END RSA PRIVATE KEY-----\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		key, err := ParsePrivateKeyPEM(data)
		if err != nil {
			if key != nil || !keyErrorOK(err) {
				t.Fatalf("unexpected failure shape: %v", err)
			}
			if strings.ContainsAny(err.Error(), "\n\r") {
				t.Fatalf("multi-line error: %q", err)
			}
			return
		}
		if err := CheckRSAKeySize(&key.PublicKey); err != nil {
			t.Fatalf("accepted out-of-range key: %v", err)
		}
		if err := key.Validate(); err != nil {
			t.Fatalf("accepted invalid key: %v", err)
		}
		out, err := MarshalPrivateKeyPEM(key)
		if err != nil {
			t.Fatalf("re-marshal: %v", err)
		}
		again, err := ParsePrivateKeyPEM(out)
		if err != nil || !again.Equal(key) {
			t.Fatalf("round trip: %v", err)
		}
	})
}

func FuzzParsePublicKeyPEM(f *testing.F) {
	f.Add([]byte(""))
	f.Add([]byte("-----BEGIN PUBLIC KEY-----\n-----END PUBLIC KEY-----\n"))
	f.Add([]byte("-----BEGIN RSA PUBLIC KEY-----\nMAA=\n-----END RSA PUBLIC KEY-----\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		pub, err := ParsePublicKeyPEM(data)
		if err != nil {
			if pub != nil || !keyErrorOK(err) {
				t.Fatalf("unexpected failure shape: %v", err)
			}
			if strings.ContainsAny(err.Error(), "\n\r") {
				t.Fatalf("multi-line error: %q", err)
			}
			return
		}
		if err := CheckRSAKeySize(pub); err != nil {
			t.Fatalf("accepted out-of-range key: %v", err)
		}
		out, err := MarshalPublicKeyPEM(pub)
		if err != nil {
			t.Fatalf("re-marshal: %v", err)
		}
		again, err := ParsePublicKeyPEM(out)
		if err != nil || !again.Equal(pub) {
			t.Fatalf("round trip: %v", err)
		}
		if KeyIDOf(pub) != KeyIDOf(again) {
			t.Fatal("KeyID not stable across round trip")
		}
	})
}

// The genuine packet of FuzzAEADOpen: key 00..1f, counter 42.
var (
	fuzzAEADPlaintext = []byte("set waypoint 47.3977,8.5456 alt 30")
	fuzzAEADAD        = []byte{0x01, 0x00, 0x00, 0x2a}
)

const fuzzAEADCounter = 42

func FuzzAEADOpen(f *testing.F) {
	a := testAEAD(f)
	genuine := a.Seal(nil, fuzzAEADCounter, fuzzAEADPlaintext, fuzzAEADAD)
	f.Add(genuine, fuzzAEADAD, uint64(fuzzAEADCounter))
	f.Add(genuine, fuzzAEADAD, uint64(fuzzAEADCounter+1))
	f.Add(genuine[:len(genuine)-1], fuzzAEADAD, uint64(fuzzAEADCounter))
	f.Add([]byte{}, []byte{}, uint64(0))
	f.Fuzz(func(t *testing.T, ct, ad []byte, counter uint64) {
		a := testAEAD(t)
		out, err := a.Open(nil, counter, ct, ad)
		if err == nil {
			if counter != fuzzAEADCounter || !bytes.Equal(ct, genuine) || !bytes.Equal(ad, fuzzAEADAD) {
				t.Fatalf("forgery accepted: counter %d ct %x ad %x", counter, ct, ad)
			}
			if !bytes.Equal(out, fuzzAEADPlaintext) {
				t.Fatal("genuine packet opened to the wrong plaintext")
			}
		} else if err != ErrDecrypt || out != nil {
			t.Fatalf("failure shape: %v", err)
		}
		// Any input used as plaintext must round-trip.
		sealed := a.Seal(nil, counter, ct, ad)
		back, err := a.Open(nil, counter, sealed, ad)
		if err != nil || !bytes.Equal(back, ct) {
			t.Fatalf("round trip failed: %v", err)
		}
	})
}
