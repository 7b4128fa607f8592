package operator

import (
	"crypto/rsa"
	"errors"
	"fmt"
	"io/fs"
	"strings"

	"github.com/dronelink/dronelink/pkg/crypto"
)

// fileError turns an error from a crypto Load function ("<kind> PATH: cause") into one
// line that says whether the file could not be read or holds the wrong thing, and which
// flag named it.
//
// A key or PSK file open to group or others is refused by the loader with a line of its
// own (file, mode, the chmod to run), passed on as it is.
func fileError(kind, path, flag string, err error) error {
	if ie, ok := errors.AsType[*crypto.InsecureFileError](err); ok {
		return localf("%v", ie)
	}
	cause := err.Error()
	for _, prefix := range []string{"private key ", "public key ", "PSK file "} {
		cause = strings.TrimPrefix(cause, prefix+path+": ")
	}
	where := path
	if flag != "" {
		where += " (" + flag + ")"
	}
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, fs.ErrPermission) {
		return localf("cannot read %s %s: %s", kind, where, cause)
	}
	return localf("bad %s %s: %s", kind, where, cause)
}

// loadPublicKey reads an RSA public key file.
func loadPublicKey(path, flag string) (*rsa.PublicKey, error) {
	pub, err := crypto.LoadPublicKey(path)
	if err != nil {
		return nil, fileError("public key file", path, flag, err)
	}
	return pub, nil
}

// loadPrivateKey reads an RSA private key file.
func loadPrivateKey(path, flag string) (*rsa.PrivateKey, error) {
	key, err := crypto.LoadPrivateKey(path)
	if err != nil {
		return nil, fileError("key file", path, flag, err)
	}
	return key, nil
}

// loadPSK reads a PSK file.
func loadPSK(path, flag string) (crypto.PSK, error) {
	psk, err := crypto.LoadPSK(path)
	if err != nil {
		return crypto.PSK{}, fileError("PSK file", path, flag, err)
	}
	return psk, nil
}

// keyFingerprints lists the fingerprints of keys for a message.
func keyFingerprints(keys []*rsa.PublicKey) string {
	fps := make([]string, len(keys))
	for i, k := range keys {
		fps[i] = crypto.Fingerprint(k)
	}
	word := "key"
	if len(fps) > 1 {
		word = "keys"
	}
	return fmt.Sprintf("%s %s", word, strings.Join(fps, ", "))
}
