package crypto

import (
	"bytes"
	"crypto/ecdh"
	"testing"

	"golang.org/x/crypto/chacha20poly1305"
)

// RFC 8439 §2.8.2: "Example and Test Vector for AEAD_CHACHA20_POLY1305".
func TestRFC8439AEADVector(t *testing.T) {
	key := seq(0x80, 0x9f)
	// 32-bit constant 07 00 00 00 || IV 40 41 42 43 44 45 46 47
	nonce := unhex(t, "07 00 00 00 40 41 42 43 44 45 46 47")
	aad := unhex(t, "50 51 52 53 c0 c1 c2 c3 c4 c5 c6 c7")
	plaintext := []byte("Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, sunscreen would be it.")
	ciphertext := unhex(t, `
		d3 1a 8d 34 64 8e 60 db 7b 86 af bc 53 ef 7e c2
		a4 ad ed 51 29 6e 08 fe a9 e2 b5 a7 36 ee 62 d6
		3d be a4 5e 8c a9 67 12 82 fa fb 69 da 92 72 8b
		1a 71 de 0a 9e 06 0b 29 05 d6 a5 b6 7e cd 3b 36
		92 dd bd 7f 2d 77 8b 8c 98 03 ae e3 28 09 1b 58
		fa b3 24 e4 fa d6 75 94 55 85 80 8b 48 31 d7 bc
		3f f4 de f0 8e 4b 7a 9d e5 76 d2 65 86 ce c6 4b
		61 16`)
	tag := unhex(t, "1a:e1:0b:59:4f:09:e2:6a:7e:90:2e:cb:d0:60:06:91")

	a, err := NewAEAD(key)
	if err != nil {
		t.Fatal(err)
	}
	got := a.sealWithNonce(nil, nonce, plaintext, aad)
	want := append(append([]byte{}, ciphertext...), tag...)
	if !bytes.Equal(got, want) {
		t.Fatalf("RFC 8439 §2.8.2 seal mismatch:\n got %x\nwant %x", got, want)
	}
}

// The counter-to-nonce mapping: 4 zero bytes || counter little-endian.
func TestAEADCounterNonceMapping(t *testing.T) {
	key := seq(0x80, 0x9f)
	a, err := NewAEAD(key)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := chacha20poly1305.New(key)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		counter uint64
		nonce   string
	}{
		{0, "00000000 0000000000000000"},
		{1, "00000000 0100000000000000"},
		{0x0102030405060708, "00000000 0807060504030201"},
		{0x00000000deadbeef, "00000000 efbeadde00000000"},
		{^uint64(0), "00000000 ffffffffffffffff"},
	}
	pt, ad := []byte("telemetry"), []byte("hdr")
	for _, c := range cases {
		want := unhex(t, c.nonce)
		if got := a.setNonce(c.counter); !bytes.Equal(got, want) {
			t.Errorf("counter %#x: nonce %x, want %x", c.counter, got, want)
		}
		if got, exp := a.Seal(nil, c.counter, pt, ad), raw.Seal(nil, want, pt, ad); !bytes.Equal(got, exp) {
			t.Errorf("counter %#x: Seal differs from ChaCha20-Poly1305 with nonce %x", c.counter, want)
		}
	}
}

// RFC 5869 Appendix A, test cases 1-3 (HKDF-SHA256).
func TestRFC5869HKDFVectors(t *testing.T) {
	cases := []struct {
		name            string
		ikm, salt, info []byte
		length          int
		prk, okm        string
	}{
		{
			name: "A.1 basic", ikm: repeat(0x0b, 22), salt: seq(0x00, 0x0c), info: seq(0xf0, 0xf9), length: 42,
			prk: "077709362c2e32df0ddc3f0dc47bba6390b6c73bb50f9c3122ec844ad7c2b3e5",
			okm: "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865",
		},
		{
			name: "A.2 long inputs", ikm: seq(0x00, 0x4f), salt: seq(0x60, 0xaf), info: seq(0xb0, 0xff), length: 82,
			prk: "06a6b88c5853361a06104c9ceb35b45cef760014904671014a193f40c15fc244",
			okm: "b11e398dc80327a1c8e7f78c596a49344f012eda2d4efad8a050cc4c19afa97c" +
				"59045a99cac7827271cb41c65e590e09da3275600c2f09b8367793a9aca3db71" +
				"cc30c58179ec3e87c14c01d5c1f3434f1d87",
		},
		{
			name: "A.3 zero-length salt and info", ikm: repeat(0x0b, 22), salt: nil, info: nil, length: 42,
			prk: "19ef24a32c717b167f33a91d6f648bdf96596776afdb6377ac434c1c293ccb04",
			okm: "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8",
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			prk, err := HKDFExtract(c.ikm, c.salt)
			if err != nil {
				t.Fatal(err)
			}
			if want := unhex(t, c.prk); !bytes.Equal(prk, want) {
				t.Errorf("PRK = %x, want %x", prk, want)
			}
			okm, err := HKDFExpand(unhex(t, c.prk), string(c.info), c.length)
			if err != nil {
				t.Fatal(err)
			}
			if want := unhex(t, c.okm); !bytes.Equal(okm, want) {
				t.Errorf("Expand OKM = %x, want %x", okm, want)
			}
			okm, err = HKDF(c.ikm, c.salt, string(c.info), c.length)
			if err != nil {
				t.Fatal(err)
			}
			if want := unhex(t, c.okm); !bytes.Equal(okm, want) {
				t.Errorf("HKDF OKM = %x, want %x", okm, want)
			}
		})
	}
}

func TestHKDFLengthLimits(t *testing.T) {
	prk := make([]byte, 32)
	for _, n := range []int{-1, 0, 255*32 + 1} {
		if _, err := HKDFExpand(prk, "x", n); err == nil {
			t.Errorf("HKDFExpand length %d: want error", n)
		}
		if _, err := HKDF(prk, nil, "x", n); err == nil {
			t.Errorf("HKDF length %d: want error", n)
		}
	}
	if out, err := HKDFExpand(prk, "x", 255*32); err != nil || len(out) != 255*32 {
		t.Errorf("HKDFExpand max length: len %d, err %v", len(out), err)
	}
}

// RFC 4231 §4, HMAC-SHA-256 results of test cases 1-7. Case 5 specifies
// only the leftmost 128 bits; the full tag is checked on that prefix, and
// Verify must reject the truncated tag.
func TestRFC4231HMACVectors(t *testing.T) {
	cases := []struct {
		name      string
		key, data []byte
		tag       string
		truncated bool
	}{
		{"4.2 case 1", repeat(0x0b, 20), []byte("Hi There"),
			"b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7", false},
		{"4.3 case 2", []byte("Jefe"), []byte("what do ya want for nothing?"),
			"5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843", false},
		{"4.4 case 3", repeat(0xaa, 20), repeat(0xdd, 50),
			"773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe", false},
		{"4.5 case 4", seq(0x01, 0x19), repeat(0xcd, 50),
			"82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b", false},
		{"4.6 case 5 (truncated)", repeat(0x0c, 20), []byte("Test With Truncation"),
			"a3b6167473100ee06e0c796c2955552b", true},
		{"4.7 case 6", repeat(0xaa, 131), []byte("Test Using Larger Than Block-Size Key - Hash Key First"),
			"60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54", false},
		{"4.8 case 7", repeat(0xaa, 131), []byte("This is a test using a larger than block-size key and a larger than block-size data. The key needs to be hashed before being used by the HMAC algorithm."),
			"9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2", false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m := NewMAC(c.key)
			want := unhex(t, c.tag)
			got := m.Sum(nil, c.data)
			if len(got) != MACSize {
				t.Fatalf("tag length %d", len(got))
			}
			if c.truncated {
				if !bytes.Equal(got[:len(want)], want) {
					t.Errorf("tag prefix = %x, want %x", got[:len(want)], want)
				}
				if m.Verify(c.data, want) {
					t.Error("Verify accepted a truncated tag")
				}
				if !m.Verify(c.data, got) {
					t.Error("Verify rejected the full tag")
				}
				return
			}
			if !bytes.Equal(got, want) {
				t.Errorf("tag = %x, want %x", got, want)
			}
			if !m.Verify(c.data, want) {
				t.Error("Verify rejected the RFC tag")
			}
			// Reuse of the instance must not carry state over.
			if again := m.Sum(nil, c.data); !bytes.Equal(again, want) {
				t.Errorf("second Sum = %x", again)
			}
		})
	}
}

// RFC 7748 §6.1 Diffie-Hellman vector.
func TestRFC7748X25519Vector(t *testing.T) {
	alicePriv, err := ecdh.X25519().NewPrivateKey(unhex(t, "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a"))
	if err != nil {
		t.Fatal(err)
	}
	bobPriv, err := ecdh.X25519().NewPrivateKey(unhex(t, "5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb"))
	if err != nil {
		t.Fatal(err)
	}
	alicePub := unhex(t, "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")
	bobPub := unhex(t, "de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f")
	shared := unhex(t, "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742")
	if !bytes.Equal(alicePriv.PublicKey().Bytes(), alicePub) || !bytes.Equal(bobPriv.PublicKey().Bytes(), bobPub) {
		t.Fatal("public keys differ from RFC 7748")
	}
	k1, err := X25519(alicePriv, bobPub)
	if err != nil {
		t.Fatal(err)
	}
	k2, err := X25519(bobPriv, alicePub)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(k1, shared) || !bytes.Equal(k2, shared) {
		t.Errorf("shared secrets %x / %x, want %x", k1, k2, shared)
	}
}
