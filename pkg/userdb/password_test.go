package userdb

import (
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"testing"

	"golang.org/x/crypto/argon2"
)

func TestHashVerifyRoundTrip(t *testing.T) {
	for _, pw := range []string{"", "hunter2", strings.Repeat("ü", 128), "\x00binary\xff"} {
		h, err := HashPassword([]byte(pw), testParams)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(h, "$argon2id$v=19$m=64,t=1,p=1$") {
			t.Errorf("hash %q has the wrong header", h)
		}
		ok, err := VerifyPassword(h, []byte(pw))
		if err != nil || !ok {
			t.Errorf("VerifyPassword(own hash, %q) = %v, %v; want true, nil", pw, ok, err)
		}
		ok, err = VerifyPassword(h, []byte(pw+"x"))
		if err != nil || ok {
			t.Errorf("VerifyPassword(own hash, wrong) = %v, %v; want false, nil", ok, err)
		}
	}
	a, _ := HashPassword([]byte("same"), testParams)
	b, _ := HashPassword([]byte("same"), testParams)
	if a == b {
		t.Error("two hashes of the same password are equal: the salt is not random")
	}
}

func TestDefaultParamsPHC(t *testing.T) {
	h, err := HashPassword([]byte("pilot password"), DefaultParams)
	if err != nil {
		t.Fatal(err)
	}
	const want = "$argon2id$v=19$m=65536,t=1,p=2$"
	if !strings.HasPrefix(h, want) {
		t.Fatalf("default hash %q does not start with %q", h, want)
	}
	parts := strings.Split(h, "$")
	if salt, _ := base64.RawStdEncoding.DecodeString(parts[4]); len(salt) != 16 {
		t.Errorf("salt is %d bytes, want 16", len(salt))
	}
	if key, _ := base64.RawStdEncoding.DecodeString(parts[5]); len(key) != 32 {
		t.Errorf("hash is %d bytes, want 32", len(key))
	}
	if ok, err := VerifyPassword(h, []byte("pilot password")); !ok || err != nil {
		t.Errorf("VerifyPassword = %v, %v", ok, err)
	}
}

func TestHashKnownAnswer(t *testing.T) {
	// HashPassword's encoding of argon2.IDKey, spelled out by hand.
	salt := []byte("0123456789abcdef")
	p := Params{Time: 2, MemoryKiB: 256, Threads: 3, SaltLen: 16, KeyLen: 24}
	key := argon2.IDKey([]byte("pw"), salt, 2, 256, 3, 24)
	want := "$argon2id$v=19$m=256,t=2,p=3$" + base64.RawStdEncoding.EncodeToString(salt) + "$" + base64.RawStdEncoding.EncodeToString(key)
	if got := hashWithSalt([]byte("pw"), salt, p); got != want {
		t.Errorf("hashWithSalt = %q\nwant            %q", got, want)
	}

	// The argon2id vector of the reference implementation's test.c
	// (phc-winner-argon2, version 0x13: password "password", salt
	// "somesalt", t=2, m=2^16, p=1), an independent check of the whole
	// encoding.
	const ref = "$argon2id$v=19$m=65536,t=2,p=1$c29tZXNhbHQ$CTFhFdXPJO1aFaMaO6Mm5c8y7cJHAph8ArZWb2GRPPc"
	if got := hashWithSalt([]byte("password"), []byte("somesalt"), Params{Time: 2, MemoryKiB: 1 << 16, Threads: 1, KeyLen: 32}); got != ref {
		t.Errorf("reference vector: got %q, want %q", got, ref)
	}
	if ok, err := VerifyPassword(ref, []byte("password")); !ok || err != nil {
		t.Errorf("VerifyPassword(reference vector) = %v, %v", ok, err)
	}
}

func TestVerifyMalformed(t *testing.T) {
	salt := base64.RawStdEncoding.EncodeToString([]byte("0123456789abcdef"))
	hash := base64.RawStdEncoding.EncodeToString(make([]byte, 32))
	phc := func(head string) string { return head + "$" + salt + "$" + hash }
	good := phc("$argon2id$v=19$m=64,t=1,p=1")
	if _, err := VerifyPassword(good, nil); err != nil {
		t.Fatalf("control case %q: %v", good, err)
	}
	cases := map[string]string{
		"empty":             "",
		"argon2i":           phc("$argon2i$v=19$m=64,t=1,p=1"),
		"argon2d":           phc("$argon2d$v=19$m=64,t=1,p=1"),
		"bcrypt":            "$2b$12$R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWMUW",
		"no leading $":      strings.TrimPrefix(good, "$"),
		"missing hash":      "$argon2id$v=19$m=64,t=1,p=1$" + salt,
		"missing version":   phc("$argon2id$m=64,t=1,p=1"),
		"extra field":       good + "$x",
		"v=18":              phc("$argon2id$v=18$m=64,t=1,p=1"),
		"v=16":              phc("$argon2id$v=16$m=64,t=1,p=1"),
		"v=019":             phc("$argon2id$v=019$m=64,t=1,p=1"),
		"huge m":            phc("$argon2id$v=19$m=4294967295,t=1,p=1"),
		"m over 1 GiB":      phc("$argon2id$v=19$m=1048577,t=1,p=1"),
		"m overflow":        phc("$argon2id$v=19$m=4294967296,t=1,p=1"),
		"m below 8p":        phc("$argon2id$v=19$m=15,t=1,p=2"),
		"t=0":               phc("$argon2id$v=19$m=64,t=0,p=1"),
		"t=17":              phc("$argon2id$v=19$m=64,t=17,p=1"),
		"p=0":               phc("$argon2id$v=19$m=64,t=1,p=0"),
		"p=17":              phc("$argon2id$v=19$m=1024,t=1,p=17"),
		"p=256":             phc("$argon2id$v=19$m=4096,t=1,p=256"),
		"negative":          phc("$argon2id$v=19$m=-64,t=1,p=1"),
		"plus sign":         phc("$argon2id$v=19$m=+64,t=1,p=1"),
		"leading zero":      phc("$argon2id$v=19$m=064,t=1,p=1"),
		"params reordered":  phc("$argon2id$v=19$t=1,m=64,p=1"),
		"params missing":    phc("$argon2id$v=19$m=64,t=1"),
		"extra param":       phc("$argon2id$v=19$m=64,t=1,p=1,keyid=x"),
		"empty hash":        "$argon2id$v=19$m=64,t=1,p=1$" + salt + "$",
		"empty salt":        "$argon2id$v=19$m=64,t=1,p=1$$" + hash,
		"bad base64 salt":   "$argon2id$v=19$m=64,t=1,p=1$!!!!$" + hash,
		"bad base64 hash":   "$argon2id$v=19$m=64,t=1,p=1$" + salt + "$" + hash[:len(hash)-1] + "*",
		"padded hash":       "$argon2id$v=19$m=64,t=1,p=1$" + salt + "$" + base64.StdEncoding.EncodeToString(make([]byte, 32)),
		"non-canonical b64": "$argon2id$v=19$m=64,t=1,p=1$" + salt + "$" + hash[:len(hash)-1] + "B",
		"newline in hash":   "$argon2id$v=19$m=64,t=1,p=1$" + salt + "$" + hash[:10] + "\n" + hash[10:],
		"trailing newline":  good + "\n",
		"short salt":        "$argon2id$v=19$m=64,t=1,p=1$" + base64.RawStdEncoding.EncodeToString([]byte("1234567")) + "$" + hash,
		"short hash":        "$argon2id$v=19$m=64,t=1,p=1$" + salt + "$" + base64.RawStdEncoding.EncodeToString(make([]byte, 15)),
		"long hash":         "$argon2id$v=19$m=64,t=1,p=1$" + salt + "$" + base64.RawStdEncoding.EncodeToString(make([]byte, 65)),
		"very long":         phc("$argon2id$v=19$m=64,t=1,p=1") + strings.Repeat("A", 300),
	}
	for name, enc := range cases {
		t.Run(name, func(t *testing.T) {
			ok, err := VerifyPassword(enc, []byte("pw"))
			if err == nil || ok {
				t.Fatalf("VerifyPassword(%q) = %v, %v; want an error", enc, ok, err)
			}
			if !errors.Is(err, ErrBadHash) {
				t.Errorf("error %v does not wrap ErrBadHash", err)
			}
			if strings.Contains(err.Error(), hash) || strings.Contains(err.Error(), salt) {
				t.Errorf("error %q leaks the salt or hash", err)
			}
		})
	}
}

func TestHashPasswordRejectsBadParams(t *testing.T) {
	for _, p := range []Params{
		{},
		{Time: 0, MemoryKiB: 64, Threads: 1, SaltLen: 16, KeyLen: 32},
		{Time: 1, MemoryKiB: MaxMemoryKiB + 1, Threads: 1, SaltLen: 16, KeyLen: 32},
		{Time: 1, MemoryKiB: 64, Threads: 0, SaltLen: 16, KeyLen: 32},
		{Time: 1, MemoryKiB: 64, Threads: 1, SaltLen: 4, KeyLen: 32},
		{Time: 1, MemoryKiB: 64, Threads: 1, SaltLen: 16, KeyLen: 8},
		{Time: 1, MemoryKiB: 64, Threads: 1, SaltLen: 16, KeyLen: 128},
	} {
		if h, err := HashPassword([]byte("x"), p); err == nil || !errors.Is(err, ErrBadHash) {
			t.Errorf("HashPassword(%+v) = %q, %v; want ErrBadHash", p, h, err)
		}
	}
}

func ExampleHashPassword() {
	h, _ := HashPassword([]byte("s3cret"), DefaultParams)
	fmt.Println(h[:len("$argon2id$v=19$m=65536,t=1,p=2$")])
	ok, _ := VerifyPassword(h, []byte("s3cret"))
	fmt.Println(ok)
	// Output:
	// $argon2id$v=19$m=65536,t=1,p=2$
	// true
}
