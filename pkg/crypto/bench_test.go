package crypto

import (
	"crypto/rand"
	"strconv"
	"testing"
)

func benchmarkAEADSeal(b *testing.B, size int) {
	a := testAEAD(b)
	pt := make([]byte, size)
	ad := make([]byte, 12)
	dst := make([]byte, 0, size+AEADTagSize)
	b.SetBytes(int64(size))
	b.ReportAllocs()
	var ctr uint64
	for b.Loop() {
		ctr++
		dst = a.Seal(dst[:0], ctr, pt, ad)
	}
}

func benchmarkAEADOpen(b *testing.B, size int) {
	a := testAEAD(b)
	ad := make([]byte, 12)
	ct := a.Seal(nil, 1, make([]byte, size), ad)
	dst := make([]byte, 0, size)
	b.SetBytes(int64(size))
	b.ReportAllocs()
	for b.Loop() {
		var err error
		if dst, err = a.Open(dst[:0], 1, ct, ad); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkAEADSeal(b *testing.B) {
	for _, n := range []int{64, 1200} {
		b.Run(strconv.Itoa(n), func(b *testing.B) { benchmarkAEADSeal(b, n) })
	}
}

func BenchmarkAEADOpen(b *testing.B) {
	for _, n := range []int{64, 1200} {
		b.Run(strconv.Itoa(n), func(b *testing.B) { benchmarkAEADOpen(b, n) })
	}
}

func BenchmarkMAC64(b *testing.B) {
	m := NewMAC(make([]byte, 32))
	data := make([]byte, 64)
	dst := make([]byte, 0, MACSize)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		dst = m.Sum(dst[:0], data)
	}
}

func BenchmarkUnwrapSecret3072(b *testing.B) {
	key := testKey(b, 3072)
	secret := make([]byte, 32)
	wrapped, err := WrapSecret(rand.Reader, &key.PublicKey, secret)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(secret)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := UnwrapSecret(key, wrapped); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkSignPSS3072(b *testing.B) {
	key := testKey(b, 3072)
	msg := make([]byte, 128)
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := SignPSS(rand.Reader, key, msg); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkVerifyPSS3072(b *testing.B) {
	key := testKey(b, 3072)
	msg := make([]byte, 128)
	sig, err := SignPSS(rand.Reader, key, msg)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	for b.Loop() {
		if err := VerifyPSS(&key.PublicKey, msg, sig); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkX25519(b *testing.B) {
	priv, err := GenerateX25519(nil)
	if err != nil {
		b.Fatal(err)
	}
	peer, err := GenerateX25519(nil)
	if err != nil {
		b.Fatal(err)
	}
	peerPub := peer.PublicKey().Bytes()
	b.SetBytes(X25519KeySize)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := X25519(priv, peerPub); err != nil {
			b.Fatal(err)
		}
	}
}
