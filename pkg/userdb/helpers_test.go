package userdb

import (
	"crypto/rsa"
	"fmt"
	"math/big"
	"path/filepath"
	"sync"
	"testing"

	"github.com/dronelink/dronelink/pkg/crypto"
)

// testParams make hashing cheap in tests (64 KiB, one pass, one lane).
var testParams = Params{Time: 1, MemoryKiB: 64, Threads: 1, SaltLen: 16, KeyLen: 32}

const numTestKeys = 4

// The test keys are 2048-bit RSA public keys generated once (see
// TestGenerateTestdata) and stored under testdata/keys, so that tests need
// no slow key generation. Only public keys are needed: the database never
// sees a private key.
var (
	testKeysOnce sync.Once
	testKeysVal  []*rsa.PublicKey
	testKeysErr  error
)

func testKeyPath(i int) string {
	return filepath.Join("testdata", "keys", fmt.Sprintf("key%d.pem", i+1))
}

// testKeys returns the numTestKeys distinct test keys.
func testKeys(tb testing.TB) []*rsa.PublicKey {
	tb.Helper()
	testKeysOnce.Do(func() {
		for i := range numTestKeys {
			k, err := crypto.LoadPublicKey(testKeyPath(i))
			if err != nil {
				testKeysErr = err
				return
			}
			testKeysVal = append(testKeysVal, k)
		}
	})
	if testKeysErr != nil {
		tb.Fatalf("load test keys (regenerate with go test -run TestGenerateTestdata -gen-testdata): %v", testKeysErr)
	}
	return testKeysVal
}

// fakeKey returns a syntactically valid RSA public key of exactly bits bits.
// It is not a real key (nobody knows its factors), which is fine for size
// checks and encodings.
func fakeKey(bits int) *rsa.PublicKey {
	n := new(big.Int).Lsh(big.NewInt(1), uint(bits-1))
	n.Add(n, big.NewInt(0x1d)) // odd
	return &rsa.PublicKey{N: n, E: 65537}
}

// mustHash hashes pw with testParams.
func mustHash(tb testing.TB, pw string) string {
	tb.Helper()
	h, err := HashPassword([]byte(pw), testParams)
	if err != nil {
		tb.Fatal(err)
	}
	return h
}

// pemOf returns the PKIX PEM of a key.
func pemOf(tb testing.TB, k *rsa.PublicKey) string {
	tb.Helper()
	b, err := crypto.MarshalPublicKeyPEM(k)
	if err != nil {
		tb.Fatal(err)
	}
	return string(b)
}

// Passwords of the users of testDB.
const (
	alicePW = "alice: correct horse battery staple"
	bobPW   = "bob's secret"
)

// testDB returns a database with alice (pilot, keys 0) and bob (observer,
// keys 1 and 2). Key 3 is authorised for nobody.
func testDB(tb testing.TB) *DB {
	tb.Helper()
	keys := testKeys(tb)
	db, err := Empty().WithUser("alice", 2, mustHash(tb, alicePW), keys[0])
	if err != nil {
		tb.Fatal(err)
	}
	db, err = db.WithUser("bob", 1, mustHash(tb, bobPW), keys[1], keys[2])
	if err != nil {
		tb.Fatal(err)
	}
	return db
}
