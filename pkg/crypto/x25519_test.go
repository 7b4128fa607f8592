package crypto

import (
	"bytes"
	"crypto/ecdh"
	"crypto/rand"
	"errors"
	"testing"
)

func TestX25519Agreement(t *testing.T) {
	a, err := GenerateX25519(nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err := GenerateX25519(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ab, err := X25519(a, b.PublicKey().Bytes())
	if err != nil {
		t.Fatal(err)
	}
	ba, err := X25519(b, a.PublicKey().Bytes())
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(ab, ba) || len(ab) != X25519KeySize {
		t.Fatalf("shared secrets differ: %x vs %x", ab, ba)
	}
	c, _ := GenerateX25519(nil)
	ac, _ := X25519(a, c.PublicKey().Bytes())
	if bytes.Equal(ab, ac) {
		t.Error("different peers gave the same secret")
	}
}

func TestX25519BadPeerKeys(t *testing.T) {
	priv, err := GenerateX25519(nil)
	if err != nil {
		t.Fatal(err)
	}
	// Points of small order on Curve25519 and its twist (and non-canonical
	// encodings of them), all of which give an all-zero shared secret.
	lowOrder := []string{
		"0000000000000000000000000000000000000000000000000000000000000000", // 0
		"0100000000000000000000000000000000000000000000000000000000000000", // 1
		"e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800", // order 8
		"5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157", // order 8
		"ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f", // p-1
		"edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f", // p (= 0)
		"eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f", // p+1 (= 1)
		"0000000000000000000000000000000000000000000000000000000000000080", // 0, high bit set
	}
	for _, h := range lowOrder {
		shared, err := X25519(priv, unhex(t, h))
		if !errors.Is(err, ErrBadPublicKey) || shared != nil {
			t.Errorf("low-order point %s: %x, %v", h, shared, err)
		}
	}
	for _, n := range []int{0, 31, 33, 65} {
		if _, err := X25519(priv, make([]byte, n)); !errors.Is(err, ErrBadPublicKey) {
			t.Errorf("peer key of %d bytes: %v", n, err)
		}
	}
	if _, err := X25519(nil, make([]byte, 32)); err == nil {
		t.Error("nil private key: want error")
	}
	p256, err := ecdh.P256().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := X25519(p256, priv.PublicKey().Bytes()); err == nil {
		t.Error("P-256 private key accepted")
	}
}
