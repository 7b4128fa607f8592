package userdb

import (
	"flag"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/dronelink/dronelink/pkg/crypto"
	"github.com/dronelink/dronelink/pkg/link"
)

var genTestdata = flag.Bool("gen-testdata", false, "regenerate testdata/keys and the FuzzParse seed corpus")

// TestGenerateTestdata (re)writes the test keys and the fuzz seed corpus. It
// only runs when asked:
//
//	go test -run TestGenerateTestdata -gen-testdata ./pkg/userdb
func TestGenerateTestdata(t *testing.T) {
	if !*genTestdata {
		t.Skip("run with -gen-testdata to regenerate testdata")
	}
	if err := os.MkdirAll(filepath.Join("testdata", "keys"), 0o755); err != nil {
		t.Fatal(err)
	}
	for i := range numTestKeys {
		priv, err := crypto.GenerateRSAKey(nil, 2048)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(testKeyPath(i), []byte(pemOf(t, &priv.PublicKey)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	keys := testKeys(t)

	one, err := Empty().WithUser("alice", link.RolePilot, mustHash(t, alicePW), keys[0])
	if err != nil {
		t.Fatal(err)
	}
	two, err := one.WithUser("bob.observer-2", link.RoleObserver, mustHash(t, bobPW), keys[1], keys[2])
	if err != nil {
		t.Fatal(err)
	}
	oneData, _ := one.Marshal()
	twoData, _ := two.Marshal()
	emptyData, _ := Empty().Marshal()
	hash := mustHash(t, "x")
	seeds := map[string][]byte{
		"valid-one-user":  oneData,
		"valid-two-users": twoData,
		"valid-empty":     emptyData,
		"valid-no-fingerprint": fileJSON(t, fileUser{Name: "carol", Role: "observer", Password: hash,
			Keys: []fileKey{{PEM: pemOf(t, keys[3])}}}),
		"bad-version": []byte(`{"version":2,"users":[]}`),
		"not-json":    []byte("alice:pilot:$argon2id$\n"),
		"fingerprint-mismatch": fileJSON(t, fileUser{Name: "carol", Role: "pilot", Password: hash,
			Keys: []fileKey{{Fingerprint: crypto.Fingerprint(keys[0]), PEM: pemOf(t, keys[3])}}}),
		"key-two-users": fileJSON(t,
			fileUser{Name: "a", Role: "pilot", Password: hash, Keys: []fileKey{{PEM: pemOf(t, keys[3])}}},
			fileUser{Name: "b", Role: "pilot", Password: hash, Keys: []fileKey{{PEM: pemOf(t, keys[3])}}}),
	}
	dir := filepath.Join("testdata", "fuzz", "FuzzParse")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, data := range seeds {
		seed := "go test fuzz v1\n[]byte(" + strconv.Quote(string(data)) + ")\n"
		if err := os.WriteFile(filepath.Join(dir, name), []byte(seed), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
