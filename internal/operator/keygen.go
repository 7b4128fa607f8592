package operator

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/dronelink/dronelink/pkg/crypto"
)

func (a *app) newKeygenCmd() *cobra.Command {
	var out string
	var bits int
	cmd := &cobra.Command{
		Use:   "keygen --out PATH [--bits N]",
		Short: "Generate an RSA key pair for an operator or a drone",
		Long: `Generate an RSA key pair: PATH holds the private key (PKCS#8 PEM, mode 0600) and
PATH.pub the public key (PKIX PEM, mode 0644). Existing files are never overwritten.
Prints the public key's fingerprint, to compare or pin out of band.`,
		Args: noArgs,
	}
	cmd.Flags().StringVar(&out, "out", "", "write the private key to `PATH` and the public key to PATH.pub")
	cmd.Flags().IntVar(&bits, "bits", crypto.DefaultRSABits, fmt.Sprintf("RSA key size in bits (%d to %d)", crypto.MinRSABits, crypto.MaxRSABits))
	requireFlags(cmd, "out")
	cmd.RunE = a.runE(func(*cobra.Command, []string) error {
		switch {
		case bits < crypto.MinRSABits:
			return usagef("RSA key too small: %d bits, minimum %d", bits, crypto.MinRSABits)
		case bits > crypto.MaxRSABits:
			return usagef("RSA key too large: %d bits, maximum %d", bits, crypto.MaxRSABits)
		case out == "":
			return usagef("--out must not be empty")
		}
		pubPath := out + ".pub"
		// Check both before spending seconds on the key: nothing existing is touched.
		for _, p := range []string{out, pubPath} {
			if _, err := os.Lstat(p); err == nil {
				return localf("%s already exists; refusing to overwrite it", p)
			} else if !errors.Is(err, fs.ErrNotExist) {
				return localf("cannot check %s: %v", p, pathCause(err))
			}
		}
		if fi, err := os.Stat(filepath.Dir(out)); err != nil || !fi.IsDir() {
			return localf("cannot write %s: directory %s does not exist", out, filepath.Dir(out))
		}
		key, err := crypto.GenerateRSAKey(nil, bits)
		if err != nil {
			return localf("%v", err)
		}
		if err := crypto.SavePrivateKey(out, key); err != nil {
			return localf("%v", err)
		}
		if err := crypto.SavePublicKey(pubPath, &key.PublicKey); err != nil {
			// A private key without its public half is useless; it is ours, remove it.
			_ = os.Remove(out)
			return localf("%v", err)
		}
		_, err = fmt.Fprintf(a.stdout, "%s  %s\n", crypto.Fingerprint(&key.PublicKey), pubPath)
		return err
	})
	return cmd
}
