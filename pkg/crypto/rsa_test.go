package crypto

import (
	"bytes"
	stdcrypto "crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"errors"
	"testing"
)

func TestWrapUnwrapSecret(t *testing.T) {
	key := testKey(t, 2048)
	secret := bytes.Repeat([]byte{0x42}, 32)
	wrapped, err := WrapSecret(nil, &key.PublicKey, secret)
	if err != nil {
		t.Fatal(err)
	}
	if len(wrapped) != key.Size() {
		t.Fatalf("wrapped length %d", len(wrapped))
	}
	again, _ := WrapSecret(rand.Reader, &key.PublicKey, secret)
	if bytes.Equal(wrapped, again) {
		t.Error("OAEP is not randomized")
	}
	got, err := UnwrapSecret(key, wrapped)
	if err != nil || !bytes.Equal(got, secret) {
		t.Fatalf("UnwrapSecret: %v", err)
	}

	// Wrong key.
	if _, err := UnwrapSecret(testOtherKey(t), wrapped); err != ErrDecrypt {
		t.Errorf("wrong key: %v", err)
	}
	// Any single flipped bit (a sample of positions).
	for _, pos := range []int{0, 1, len(wrapped) / 2, len(wrapped) - 1} {
		bad := append([]byte{}, wrapped...)
		bad[pos] ^= 0x01
		if _, err := UnwrapSecret(key, bad); err != ErrDecrypt {
			t.Errorf("flip at %d: %v", pos, err)
		}
	}
	// Truncated, extended, empty.
	for _, bad := range [][]byte{wrapped[:len(wrapped)-1], append(append([]byte{}, wrapped...), 0), nil} {
		if _, err := UnwrapSecret(key, bad); err != ErrDecrypt {
			t.Errorf("length %d: %v", len(bad), err)
		}
	}
	// Same key, different OAEP label: must not unwrap.
	other, err := rsa.EncryptOAEP(sha256.New(), rand.Reader, &key.PublicKey, secret, []byte("other purpose"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := UnwrapSecret(key, other); err != ErrDecrypt {
		t.Errorf("foreign label: %v", err)
	}
	// PKCS#1 v1.5 ciphertext of the same secret is rejected.
	//lint:ignore SA1019 deliberately producing the padding this package refuses
	v15, err := rsa.EncryptPKCS1v15(rand.Reader, &key.PublicKey, secret)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := UnwrapSecret(key, v15); err != ErrDecrypt {
		t.Errorf("PKCS#1 v1.5 ciphertext: %v", err)
	}
	if _, err := UnwrapSecret(nil, wrapped); err != ErrDecrypt {
		t.Errorf("nil key: %v", err)
	}
	if _, err := UnwrapSecret(weakKey(t), wrapped[:128]); err != ErrDecrypt {
		t.Errorf("weak key: %v", err)
	}

	// Wrap refusals.
	if _, err := WrapSecret(nil, &key.PublicKey, nil); err == nil {
		t.Error("empty secret accepted")
	}
	if _, err := WrapSecret(nil, &key.PublicKey, make([]byte, key.Size()-2*32-1)); err == nil {
		t.Error("oversized secret accepted")
	}
	if _, err := WrapSecret(nil, &key.PublicKey, make([]byte, key.Size()-2*32-2)); err != nil {
		t.Errorf("maximum-size secret: %v", err)
	}
	if _, err := WrapSecret(nil, &weakKey(t).PublicKey, secret); !errors.Is(err, ErrKeyTooSmall) {
		t.Errorf("weak key: %v", err)
	}
}

func TestSignVerifyPSS(t *testing.T) {
	key := testKey(t, 2048)
	msg := []byte("handshake transcript")
	sig, err := SignPSS(nil, key, msg)
	if err != nil {
		t.Fatal(err)
	}
	if err := VerifyPSS(&key.PublicKey, msg, sig); err != nil {
		t.Fatalf("VerifyPSS: %v", err)
	}
	// The salt is exactly 32 bytes: the standard library verifier pinned
	// to 32 accepts it, pinned to 20 rejects it.
	digest := sha256.Sum256(msg)
	if err := rsa.VerifyPSS(&key.PublicKey, stdcrypto.SHA256, digest[:], sig, &rsa.PSSOptions{SaltLength: 32}); err != nil {
		t.Errorf("salt is not 32 bytes: %v", err)
	}
	if err := rsa.VerifyPSS(&key.PublicKey, stdcrypto.SHA256, digest[:], sig, &rsa.PSSOptions{SaltLength: 20}); err == nil {
		t.Error("salt length check is not exercised")
	}

	badMsg := []byte("handshake transcripT")
	if err := VerifyPSS(&key.PublicKey, badMsg, sig); !errors.Is(err, ErrBadSignature) {
		t.Errorf("tampered message: %v", err)
	}
	other := testOtherKey(t)
	if err := VerifyPSS(&other.PublicKey, msg, sig); !errors.Is(err, ErrBadSignature) {
		t.Errorf("wrong key: %v", err)
	}
	for _, pos := range []int{0, len(sig) / 2, len(sig) - 1} {
		bad := append([]byte{}, sig...)
		bad[pos] ^= 0x80
		if err := VerifyPSS(&key.PublicKey, msg, bad); !errors.Is(err, ErrBadSignature) {
			t.Errorf("flipped signature byte %d: %v", pos, err)
		}
	}
	for _, bad := range [][]byte{nil, sig[:len(sig)-1], append(append([]byte{}, sig...), 0)} {
		if err := VerifyPSS(&key.PublicKey, msg, bad); !errors.Is(err, ErrBadSignature) {
			t.Errorf("signature length %d: %v", len(bad), err)
		}
	}

	// Genuine PSS signatures by the right key but with another salt length
	// must be refused.
	for _, salt := range []int{rsa.PSSSaltLengthAuto, 0, 20, 31, 33, 64} {
		other, err := rsa.SignPSS(rand.Reader, key, stdcrypto.SHA256, digest[:], &rsa.PSSOptions{SaltLength: salt})
		if err != nil {
			t.Fatalf("salt %d: %v", salt, err)
		}
		if err := VerifyPSS(&key.PublicKey, msg, other); !errors.Is(err, ErrBadSignature) {
			t.Errorf("salt length %d accepted: %v", salt, err)
		}
	}
	// PKCS#1 v1.5 signature by the right key.
	v15, err := rsa.SignPKCS1v15(nil, key, stdcrypto.SHA256, digest[:])
	if err != nil {
		t.Fatal(err)
	}
	if err := VerifyPSS(&key.PublicKey, msg, v15); !errors.Is(err, ErrBadSignature) {
		t.Errorf("PKCS#1 v1.5 signature accepted: %v", err)
	}

	// Unacceptable keys.
	if _, err := SignPSS(nil, weakKey(t), msg); !errors.Is(err, ErrKeyTooSmall) {
		t.Errorf("sign with weak key: %v", err)
	}
	err = VerifyPSS(&weakKey(t).PublicKey, msg, sig)
	if !errors.Is(err, ErrBadSignature) || !errors.Is(err, ErrKeyTooSmall) {
		t.Errorf("verify with weak key: %v", err)
	}
	if err := VerifyPSS(nil, msg, sig); !errors.Is(err, ErrBadSignature) {
		t.Errorf("nil key: %v", err)
	}
	if _, err := SignPSS(nil, nil, msg); err == nil {
		t.Error("nil private key: want error")
	}
}
