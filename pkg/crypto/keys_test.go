package crypto

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
)

// syntheticPub returns a public key whose modulus has exactly bits bits. It
// is not a usable key (the modulus is 2^(bits-1)+1), only a size probe.
func syntheticPub(bits int) *rsa.PublicKey {
	n := new(big.Int).Lsh(big.NewInt(1), uint(bits-1))
	n.Add(n, big.NewInt(1))
	return &rsa.PublicKey{N: n, E: 65537}
}

var key1024 struct {
	once sync.Once
	key  *rsa.PrivateKey
}

// weakKey returns a 1024-bit key made directly with crypto/rsa (which still
// allows 1024 bits) to test that this package refuses it.
func weakKey(t *testing.T) *rsa.PrivateKey {
	t.Helper()
	key1024.once.Do(func() {
		k, err := rsa.GenerateKey(rand.Reader, 1024)
		if err != nil {
			t.Fatal(err)
		}
		key1024.key = k
	})
	if key1024.key == nil {
		t.Fatal("1024-bit key generation failed")
	}
	return key1024.key
}

func TestRSAKeySizes(t *testing.T) {
	cases := []struct {
		name    string
		bits    int // requested
		wantLen int // expected modulus size when accepted
		wantErr error
	}{
		{"1024 refused", 1024, 0, ErrKeyTooSmall},
		{"2047 refused", 2047, 0, ErrKeyTooSmall},
		{"negative refused", -1, 0, ErrKeyTooSmall},
		{"2048 ok", 2048, 2048, nil},
		{"0 means default 3072", 0, 3072, nil},
		{"4096 ok", 4096, 4096, nil},
		{"4097 refused", 4097, 0, ErrKeyTooLarge},
		{"8192 refused", 8192, 0, ErrKeyTooLarge},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.wantErr != nil {
				// Refused before any generation work.
				key, err := GenerateRSAKey(nil, c.bits)
				if !errors.Is(err, c.wantErr) || key != nil {
					t.Fatalf("GenerateRSAKey(%d) = %v, %v; want %v", c.bits, key, err, c.wantErr)
				}
				if c.bits > 0 && !strings.Contains(err.Error(), itoa(c.bits)+" bits") {
					t.Errorf("error %q does not state the size", err)
				}
				if c.bits > 0 {
					if err := CheckRSAKeySize(syntheticPub(c.bits)); !errors.Is(err, c.wantErr) {
						t.Errorf("CheckRSAKeySize(%d bits) = %v, want %v", c.bits, err, c.wantErr)
					}
				}
				return
			}
			key := testKey(t, c.wantLen) // shared, generated once; 3072 via bits=0
			if got := key.N.BitLen(); got != c.wantLen {
				t.Fatalf("modulus is %d bits, want %d", got, c.wantLen)
			}
			if err := CheckRSAKeySize(&key.PublicKey); err != nil {
				t.Errorf("CheckRSAKeySize: %v", err)
			}
			if err := CheckRSAKeySize(syntheticPub(c.wantLen)); err != nil {
				t.Errorf("CheckRSAKeySize(synthetic %d): %v", c.wantLen, err)
			}
		})
	}
	if got := CheckRSAKeySize(syntheticPub(1024)).Error(); got != "RSA key too small: 1024 bits, minimum 2048" {
		t.Errorf("message = %q", got)
	}
	if got := CheckRSAKeySize(syntheticPub(8192)).Error(); got != "RSA key too large: 8192 bits, maximum 4096" {
		t.Errorf("message = %q", got)
	}
	if err := CheckRSAKeySize(nil); !errors.Is(err, ErrNotRSAKey) {
		t.Errorf("CheckRSAKeySize(nil) = %v", err)
	}
}

func itoa(n int) string { return big.NewInt(int64(n)).String() }

func TestKeyIDAndFingerprint(t *testing.T) {
	key := testKey(t, 2048)
	der, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(der)
	id := KeyIDOf(&key.PublicKey)
	if hex.EncodeToString(sum[:16]) != id.String() {
		t.Errorf("KeyID %s, want %x", id, sum[:16])
	}
	if !regexp.MustCompile(`^[0-9a-f]{32}$`).MatchString(id.String()) {
		t.Errorf("KeyID.String() = %q, want 32 lowercase hex digits", id)
	}
	fp := Fingerprint(&key.PublicKey)
	if want := "SHA256:" + base64.RawStdEncoding.EncodeToString(sum[:]); fp != want {
		t.Errorf("Fingerprint = %q, want %q", fp, want)
	}
	if len(fp) != 7+43 || strings.HasSuffix(fp, "=") {
		t.Errorf("Fingerprint %q: want 43 unpadded base64 characters", fp)
	}
	other := testOtherKey(t)
	if KeyIDOf(&other.PublicKey) == id || Fingerprint(&other.PublicKey) == fp {
		t.Error("different keys share an ID or fingerprint")
	}
	if KeyIDOf(nil) != (KeyID{}) || Fingerprint(nil) != "" {
		t.Error("nil key should give zero KeyID and empty fingerprint")
	}
}

func TestPEMRoundTrip(t *testing.T) {
	for _, bits := range []int{2048, 3072} {
		key := testKey(t, bits)
		privPEM, err := MarshalPrivateKeyPEM(key)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(string(privPEM), "-----BEGIN PRIVATE KEY-----\n") {
			t.Errorf("private PEM header: %.40q", privPEM)
		}
		got, err := ParsePrivateKeyPEM(privPEM)
		if err != nil {
			t.Fatal(err)
		}
		if !got.Equal(key) {
			t.Errorf("%d: private key round trip mismatch", bits)
		}
		pubPEM, err := MarshalPublicKeyPEM(&key.PublicKey)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(string(pubPEM), "-----BEGIN PUBLIC KEY-----\n") {
			t.Errorf("public PEM header: %.40q", pubPEM)
		}
		pub, err := ParsePublicKeyPEM(pubPEM)
		if err != nil {
			t.Fatal(err)
		}
		if !pub.Equal(&key.PublicKey) {
			t.Errorf("%d: public key round trip mismatch", bits)
		}
	}
	// PKCS#1 forms are accepted on input.
	key := testKey(t, 2048)
	p1 := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)})
	if got, err := ParsePrivateKeyPEM(p1); err != nil || !got.Equal(key) {
		t.Errorf("PKCS#1 private key: %v", err)
	}
	p1pub := pem.EncodeToMemory(&pem.Block{Type: "RSA PUBLIC KEY", Bytes: x509.MarshalPKCS1PublicKey(&key.PublicKey)})
	if got, err := ParsePublicKeyPEM(p1pub); err != nil || !got.Equal(&key.PublicKey) {
		t.Errorf("PKCS#1 public key: %v", err)
	}
	// Leading text (comments) before the block is tolerated.
	privPEM, _ := MarshalPrivateKeyPEM(key)
	if _, err := ParsePrivateKeyPEM(append([]byte("# operator key\n"), privPEM...)); err != nil {
		t.Errorf("leading comment: %v", err)
	}
}

func TestMarshalRefusesBadSizes(t *testing.T) {
	if _, err := MarshalPublicKeyPEM(syntheticPub(8192)); !errors.Is(err, ErrKeyTooLarge) {
		t.Errorf("8192: %v", err)
	}
	if _, err := MarshalPrivateKeyPEM(weakKey(t)); !errors.Is(err, ErrKeyTooSmall) {
		t.Errorf("1024 private: %v", err)
	}
	if _, err := MarshalPrivateKeyPEM(nil); err == nil {
		t.Error("nil key: want error")
	}
}

func pemOf(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

func TestParseKeyErrors(t *testing.T) {
	key := testKey(t, 2048)
	privDER, _ := x509.MarshalPKCS8PrivateKey(key)
	pubDER, _ := x509.MarshalPKIXPublicKey(&key.PublicKey)
	privPEM := pemOf("PRIVATE KEY", privDER)
	pubPEM := pemOf("PUBLIC KEY", pubDER)

	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ecDER, _ := x509.MarshalPKCS8PrivateKey(ecKey)
	ecPubDER, _ := x509.MarshalPKIXPublicKey(&ecKey.PublicKey)
	edPub, edPriv, _ := ed25519.GenerateKey(rand.Reader)
	edDER, _ := x509.MarshalPKCS8PrivateKey(edPriv)
	edPubDER, _ := x509.MarshalPKIXPublicKey(edPub)
	weak := weakKey(t)
	weakDER, _ := x509.MarshalPKCS8PrivateKey(weak)
	weakPubDER, _ := x509.MarshalPKIXPublicKey(&weak.PublicKey)
	bigPubDER, _ := x509.MarshalPKIXPublicKey(syntheticPub(8192))

	garbled := []byte(strings.Replace(string(privPEM), "A", "*", 5)) // invalid base64
	truncDER := pemOf("PRIVATE KEY", privDER[:len(privDER)/2])
	flipped := append([]byte{}, privDER...)
	flipped[len(flipped)/2] ^= 0xff
	encrypted := []byte("-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,00112233445566778899AABBCCDDEEFF\n\n" +
		base64.StdEncoding.EncodeToString(privDER[:64]) + "\n-----END RSA PRIVATE KEY-----\n")

	privCases := []struct {
		name string
		data []byte
		want error
		msg  string // substring of the message
	}{
		{"empty", nil, ErrBadPEM, "no valid PEM block"},
		{"not PEM", []byte("hello world"), ErrBadPEM, "no valid PEM block"},
		{"garbled base64", garbled, ErrBadPEM, "no valid PEM block"},
		{"truncated DER", truncDER, ErrBadPEM, "not a valid PKCS#8"},
		{"corrupted DER", pemOf("PRIVATE KEY", flipped), ErrBadPEM, ""},
		{"wrong block type", pemOf("CERTIFICATE", privDER), ErrBadPEM, `"CERTIFICATE"`},
		{"public key given", pubPEM, ErrBadPEM, "found a public key"},
		{"EC key", pemOf("PRIVATE KEY", ecDER), ErrNotRSAKey, "ECDSA"},
		{"Ed25519 key", pemOf("PRIVATE KEY", edDER), ErrNotRSAKey, "Ed25519"},
		{"1024-bit key", pemOf("PRIVATE KEY", weakDER), ErrKeyTooSmall, "1024 bits, minimum 2048"},
		{"encrypted legacy PEM", encrypted, ErrBadPEM, "encrypted"},
		{"encrypted PKCS#8", pemOf("ENCRYPTED PRIVATE KEY", privDER), ErrBadPEM, "encrypted"},
		{"two blocks", append(append([]byte{}, privPEM...), privPEM...), ErrBadPEM, "more than one"},
	}
	secrets := []string{
		base64.StdEncoding.EncodeToString(privDER[100:140]),
		hex.EncodeToString(privDER[100:140]),
		key.D.String()[:20],
		hex.EncodeToString(key.Primes[0].Bytes()[:16]),
	}
	for _, c := range privCases {
		t.Run("private/"+c.name, func(t *testing.T) {
			got, err := ParsePrivateKeyPEM(c.data)
			if got != nil || !errors.Is(err, c.want) {
				t.Fatalf("got %v, want %v", err, c.want)
			}
			if !strings.Contains(err.Error(), c.msg) {
				t.Errorf("message %q lacks %q", err, c.msg)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("message is not one line: %q", err)
			}
			assertNoSecret(t, err.Error(), secrets...)
		})
	}

	pubCases := []struct {
		name string
		data []byte
		want error
		msg  string
	}{
		{"empty", nil, ErrBadPEM, "no valid PEM block"},
		{"garbled", []byte(strings.Replace(string(pubPEM), "M", "!", 3)), ErrBadPEM, "no valid PEM block"},
		{"truncated", pemOf("PUBLIC KEY", pubDER[:40]), ErrBadPEM, "not a valid PKIX"},
		{"private key given", privPEM, ErrBadPEM, "found a private key"},
		{"wrong type", pemOf("SSH2 PUBLIC KEY", pubDER), ErrBadPEM, "want \"PUBLIC KEY\""},
		{"EC key", pemOf("PUBLIC KEY", ecPubDER), ErrNotRSAKey, "ECDSA"},
		{"Ed25519 key", pemOf("PUBLIC KEY", edPubDER), ErrNotRSAKey, "Ed25519"},
		{"1024-bit", pemOf("PUBLIC KEY", weakPubDER), ErrKeyTooSmall, "1024 bits"},
		{"8192-bit", pemOf("PUBLIC KEY", bigPubDER), ErrKeyTooLarge, "8192 bits"},
	}
	for _, c := range pubCases {
		t.Run("public/"+c.name, func(t *testing.T) {
			got, err := ParsePublicKeyPEM(c.data)
			if got != nil || !errors.Is(err, c.want) {
				t.Fatalf("got %v, want %v", err, c.want)
			}
			if !strings.Contains(err.Error(), c.msg) {
				t.Errorf("message %q lacks %q", err, c.msg)
			}
			assertNoSecret(t, err.Error(), secrets...)
		})
	}
}

func TestSaveLoadKeys(t *testing.T) {
	dir := t.TempDir()
	key := testKey(t, 2048)
	privPath := filepath.Join(dir, "drone.key")
	pubPath := filepath.Join(dir, "drone.pub")

	if err := SavePrivateKey(privPath, key); err != nil {
		t.Fatal(err)
	}
	if err := SavePublicKey(pubPath, &key.PublicKey); err != nil {
		t.Fatal(err)
	}
	assertMode(t, privPath, 0o600)
	assertMode(t, pubPath, 0o644)

	gotPriv, err := LoadPrivateKey(privPath)
	if err != nil || !gotPriv.Equal(key) {
		t.Fatalf("LoadPrivateKey: %v", err)
	}
	gotPub, err := LoadPublicKey(pubPath)
	if err != nil || !gotPub.Equal(&key.PublicKey) {
		t.Fatalf("LoadPublicKey: %v", err)
	}
	if err := InsecurePermissions(privPath); err != nil {
		t.Errorf("saved private key: %v", err)
	}

	// Refuse to overwrite; the original stays byte-for-byte intact.
	before, _ := os.ReadFile(privPath)
	other := testOtherKey(t)
	if err := SavePrivateKey(privPath, other); !errors.Is(err, ErrFileExists) {
		t.Errorf("SavePrivateKey over existing: %v", err)
	} else if !strings.Contains(err.Error(), privPath) {
		t.Errorf("error %q does not name the path", err)
	}
	if err := SavePublicKey(pubPath, &other.PublicKey); !errors.Is(err, ErrFileExists) {
		t.Errorf("SavePublicKey over existing: %v", err)
	}
	after, _ := os.ReadFile(privPath)
	if string(before) != string(after) {
		t.Error("refused save modified the file")
	}
	assertNoTempFiles(t, dir)

	// Load errors name the path and the problem on one line.
	missing := filepath.Join(dir, "missing.key")
	_, err = LoadPrivateKey(missing)
	if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), missing) || strings.Count(err.Error(), missing) != 1 {
		t.Errorf("missing file: %v", err)
	}
	if _, err := LoadPrivateKey(dir); err == nil || !strings.Contains(err.Error(), "directory") {
		t.Errorf("directory: %v", err)
	}
	if _, err := LoadPrivateKey(pubPath); !errors.Is(err, ErrBadPEM) || !strings.Contains(err.Error(), pubPath) {
		t.Errorf("public key as private: %v", err)
	}
	weakPath := filepath.Join(dir, "weak.key")
	weakDER, _ := x509.MarshalPKCS8PrivateKey(weakKey(t))
	if err := os.WriteFile(weakPath, pemOf("PRIVATE KEY", weakDER), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = LoadPrivateKey(weakPath)
	if want := "private key " + weakPath + ": RSA key too small: 1024 bits, minimum 2048"; err == nil || err.Error() != want {
		t.Errorf("weak key: %v, want %q", err, want)
	}
	big := filepath.Join(dir, "big")
	if err := os.WriteFile(big, make([]byte, maxKeyFileSize+1), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadPublicKey(big); err == nil || !strings.Contains(err.Error(), "too large") {
		t.Errorf("oversized file: %v", err)
	}
	if err := SavePrivateKey(filepath.Join(dir, "w.key"), weakKey(t)); !errors.Is(err, ErrKeyTooSmall) {
		t.Errorf("saving weak key: %v", err)
	}
}

func assertMode(t *testing.T, path string, want os.FileMode) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != want {
		t.Errorf("%s: mode %04o, want %04o", path, got, want)
	}
}

func assertNoTempFiles(t *testing.T, dir string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if strings.Contains(e.Name(), ".tmp-") {
			t.Errorf("temporary file left behind: %s", e.Name())
		}
	}
}

// A key id's fingerprint prefix (what logs print when only the id is known) is a true
// prefix of the key's full fingerprint, plus an ellipsis: 21 base64 characters, 126 of the
// id's 128 bits.
func TestKeyIDFingerprintPrefix(t *testing.T) {
	keys := []*rsa.PublicKey{&testKey(t, 2048).PublicKey}
	for range 3 {
		k, err := GenerateRSAKey(nil, 2048) // crypto/rand: nothing to seed or replay
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, &k.PublicKey)
	}
	for _, pub := range keys {
		full := Fingerprint(pub)
		got := KeyIDOf(pub).FingerprintPrefix()
		if !strings.HasSuffix(got, "…") {
			t.Fatalf("%q does not end in an ellipsis", got)
		}
		prefix := strings.TrimSuffix(got, "…")
		if len(prefix) != len("SHA256:")+21 || !strings.HasPrefix(full, prefix) {
			t.Errorf("FingerprintPrefix %q is not the 28-character prefix of %q", got, full)
		}
	}
	var zero KeyID
	if got := zero.FingerprintPrefix(); got != "SHA256:AAAAAAAAAAAAAAAAAAAAA…" {
		t.Errorf("zero id: %q", got)
	}
}
