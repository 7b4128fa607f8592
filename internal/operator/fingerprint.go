package operator

import (
	"bytes"
	"crypto/rsa"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"

	"github.com/dronelink/dronelink/pkg/crypto"
)

// maxKeyFile bounds how much of a key file fingerprint reads (a 4096-bit PEM is ~3.3 KB).
const maxKeyFile = 64 << 10

func (a *app) newFingerprintCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "fingerprint PATH...",
		Short: "Print the fingerprint of a public or private key file",
		Long: `Print the fingerprint of each RSA public or private key file in two lines, both
followed by two spaces and the path: first the SHA256: form, then the readable form.
Compare the drone's fingerprint over a trusted channel before pinning its public key
with --drone-pub ("dronelink pin" fetches the key and checks it): dronelink never trusts
a key on first use. A private key file that group or others can access is refused, as
everywhere (run: chmod 600 PATH).

` + fingerprintFormsHelp,
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) == 0 {
				return errors.New("missing key file: give one or more paths")
			}
			return nil
		},
		RunE: a.runE(func(_ *cobra.Command, args []string) error {
			for _, path := range args {
				pub, err := readAnyKey(path)
				if err != nil {
					return err
				}
				if _, err := fmt.Fprintf(a.stdout, "%s  %s\n%s  %s\n", crypto.Fingerprint(pub), path, crypto.DigitFingerprint(pub), path); err != nil {
					return err
				}
			}
			return nil
		}),
	}
}

// readAnyKey reads an RSA public key from a public or a private key file. A private key
// file that group or others may access is refused, as everywhere.
func readAnyKey(path string) (*rsa.PublicKey, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, localf("cannot read key file %s: %v", path, pathCause(err))
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxKeyFile))
	defer crypto.Wipe(data)
	if err != nil {
		return nil, localf("cannot read key file %s: %v", path, pathCause(err))
	}
	if bytes.Contains(data, []byte("PRIVATE KEY-----")) {
		// Loaded as every private key is, so one open to group or others is refused here too.
		key, err := loadPrivateKey(path, "")
		if err != nil {
			return nil, err
		}
		return &key.PublicKey, nil
	}
	pub, err := crypto.ParsePublicKeyPEM(data)
	if err != nil {
		return nil, localf("bad key file %s: %v", path, err)
	}
	return pub, nil
}
