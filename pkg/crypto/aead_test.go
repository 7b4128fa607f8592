package crypto

import (
	"bytes"
	"testing"
)

func testAEAD(t testing.TB) *AEAD {
	t.Helper()
	a, err := NewAEAD(seq(0x00, 0x1f))
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func TestAEADRoundTripAndTamper(t *testing.T) {
	a := testAEAD(t)
	if a.Overhead() != AEADTagSize {
		t.Fatalf("Overhead %d", a.Overhead())
	}
	pt := []byte("arm motors; climb to 20 m")
	ad := []byte{0x01, 0x02, 0x03, 0x04}
	const ctr = 42
	prefix := []byte("hdr:")
	sealed := a.Seal(append([]byte{}, prefix...), ctr, pt, ad)
	if !bytes.HasPrefix(sealed, prefix) || len(sealed) != len(prefix)+len(pt)+AEADTagSize {
		t.Fatalf("Seal did not append ciphertext||tag to dst")
	}
	ct := sealed[len(prefix):]
	got, err := a.Open(nil, ctr, ct, ad)
	if err != nil || !bytes.Equal(got, pt) {
		t.Fatalf("Open: %v", err)
	}

	// Every single-bit flip of ciphertext||tag is detected.
	for i := range ct {
		for bit := 0; bit < 8; bit++ {
			bad := append([]byte{}, ct...)
			bad[i] ^= 1 << bit
			if out, err := a.Open(nil, ctr, bad, ad); err != ErrDecrypt || out != nil {
				t.Fatalf("flip byte %d bit %d: %v", i, bit, err)
			}
		}
	}
	// ... and of the additional data.
	for i := range ad {
		for bit := 0; bit < 8; bit++ {
			bad := append([]byte{}, ad...)
			bad[i] ^= 1 << bit
			if _, err := a.Open(nil, ctr, ct, bad); err != ErrDecrypt {
				t.Fatalf("AD flip byte %d bit %d: %v", i, bit, err)
			}
		}
	}
	for _, c := range []uint64{0, ctr - 1, ctr + 1, ctr | 1<<32, ^uint64(0)} {
		if _, err := a.Open(nil, c, ct, ad); err != ErrDecrypt {
			t.Errorf("wrong counter %d: %v", c, err)
		}
	}
	if _, err := a.Open(nil, ctr, ct, nil); err != ErrDecrypt {
		t.Error("missing AD accepted")
	}
	if _, err := a.Open(nil, ctr, ct[:len(ct)-1], ad); err != ErrDecrypt {
		t.Error("truncated accepted")
	}
	for n := 0; n < AEADTagSize; n++ {
		if _, err := a.Open(nil, ctr, make([]byte, n), ad); err != ErrDecrypt {
			t.Errorf("%d-byte input: %v", n, err)
		}
	}
	other, _ := NewAEAD(seq(0x01, 0x20))
	if _, err := other.Open(nil, ctr, ct, ad); err != ErrDecrypt {
		t.Error("wrong key accepted")
	}

	// Empty plaintext still authenticates.
	tagOnly := a.Seal(nil, 7, nil, ad)
	if len(tagOnly) != AEADTagSize {
		t.Fatal("empty plaintext: want a bare tag")
	}
	if out, err := a.Open(nil, 7, tagOnly, ad); err != nil || len(out) != 0 {
		t.Errorf("empty plaintext: %v", err)
	}

	// In-place seal and open.
	buf := make([]byte, len(pt), len(pt)+AEADTagSize)
	copy(buf, pt)
	buf = a.Seal(buf[:0], 9, buf, ad)
	out, err := a.Open(buf[:0], 9, buf, ad)
	if err != nil || !bytes.Equal(out, pt) {
		t.Errorf("in place: %v", err)
	}
}

func TestNewAEADKeySize(t *testing.T) {
	for _, n := range []int{0, 16, 31, 33, 64} {
		if _, err := NewAEAD(make([]byte, n)); err == nil {
			t.Errorf("%d-byte key accepted", n)
		}
	}
}

func TestAEADAllocs(t *testing.T) {
	a := testAEAD(t)
	pt := make([]byte, 1200)
	ad := make([]byte, 12)
	dst := make([]byte, 0, len(pt)+AEADTagSize)
	ct := a.Seal(nil, 1, pt, ad)
	var ctr uint64
	if n := testing.AllocsPerRun(100, func() {
		ctr++
		dst = a.Seal(dst[:0], ctr, pt, ad)
	}); n != 0 {
		t.Errorf("Seal allocates %.1f times per call", n)
	}
	out := make([]byte, 0, len(pt))
	if n := testing.AllocsPerRun(100, func() {
		var err error
		out, err = a.Open(out[:0], 1, ct, ad)
		if err != nil {
			panic(err)
		}
	}); n != 0 {
		t.Errorf("Open allocates %.1f times per call", n)
	}
	if n := testing.AllocsPerRun(100, func() {
		_, _ = a.Open(out[:0], 2, ct, ad) // failing open
	}); n != 0 {
		t.Errorf("failing Open allocates %.1f times per call", n)
	}
}
