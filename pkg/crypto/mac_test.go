package crypto

import (
	"bytes"
	"testing"
)

func TestMAC(t *testing.T) {
	m := NewMAC([]byte("0123456789abcdef0123456789abcdef"))
	data := []byte("cookie material")
	prefix := []byte{9, 9}
	out := m.Sum(append([]byte{}, prefix...), data)
	if !bytes.HasPrefix(out, prefix) || len(out) != len(prefix)+MACSize {
		t.Fatal("Sum did not append a 32-byte tag")
	}
	tag := out[len(prefix):]
	if !m.Verify(data, tag) {
		t.Fatal("Verify rejected its own tag")
	}
	for i := range tag {
		bad := append([]byte{}, tag...)
		bad[i] ^= 0x01
		if m.Verify(data, bad) {
			t.Fatalf("flipped tag byte %d accepted", i)
		}
	}
	if m.Verify([]byte("cookie materiaL"), tag) {
		t.Error("other data accepted")
	}
	for _, n := range []int{0, 16, 31, 33} {
		if m.Verify(data, make([]byte, n)) {
			t.Errorf("%d-byte tag accepted", n)
		}
	}
	if m.Verify(data, append(append([]byte{}, tag...), 0)) {
		t.Error("tag with extra byte accepted")
	}
	if NewMAC([]byte("another key 0123456789abcdef0123")).Verify(data, tag) {
		t.Error("other key accepted")
	}
}

func TestMACAllocs(t *testing.T) {
	m := NewMAC(make([]byte, 32))
	data := make([]byte, 64)
	dst := make([]byte, 0, MACSize)
	tag := m.Sum(nil, data)
	if n := testing.AllocsPerRun(100, func() { dst = m.Sum(dst[:0], data) }); n != 0 {
		t.Errorf("Sum allocates %.1f times per call", n)
	}
	if n := testing.AllocsPerRun(100, func() {
		if !m.Verify(data, tag) {
			panic("verify")
		}
	}); n != 0 {
		t.Errorf("Verify allocates %.1f times per call", n)
	}
}

func TestWipe(t *testing.T) {
	b := []byte("secret session key material....")
	Wipe(b)
	if !bytes.Equal(b, make([]byte, len(b))) {
		t.Errorf("Wipe left %x", b)
	}
	Wipe(nil) // must not panic
}
