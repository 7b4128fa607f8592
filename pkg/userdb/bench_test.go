package userdb

import "testing"

func BenchmarkVerifyDefault(b *testing.B) {
	h, err := HashPassword([]byte("pilot password"), DefaultParams)
	if err != nil {
		b.Fatal(err)
	}
	pw := []byte("pilot password")
	b.ReportAllocs()
	for b.Loop() {
		if ok, err := VerifyPassword(h, pw); !ok || err != nil {
			b.Fatal(ok, err)
		}
	}
}
