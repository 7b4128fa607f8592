package operator

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/dronelink/dronelink/pkg/crypto"
)

func (a *app) newPSKCmd() *cobra.Command {
	var out string
	cmd := &cobra.Command{
		Use:   "psk --out PATH",
		Short: "Generate a fresh fleet pre-shared key",
		Long: `Generate a fresh random 32-byte pre-shared key and write it to PATH as 64 hex digits
and a newline, mode 0600. An existing file is never overwritten, and the key is not
printed: copy the file to the drone and the operators over a secure channel.

With --out - the key goes to standard output instead of a file, and nothing else does:
for a pipe into a secret store or over ssh, for example
  dronelink psk --out - | ssh drone 'umask 077; set -C; cat > /etc/dronelink/fleet.psk'`,
		Args: noArgs,
	}
	cmd.Flags().StringVar(&out, "out", "", "write the PSK to `PATH` (- for standard output)")
	requireFlags(cmd, "out")
	cmd.RunE = a.runE(func(*cobra.Command, []string) error {
		if out == "" {
			return usagef("--out must not be empty")
		}
		psk, err := crypto.GeneratePSK(nil)
		if err != nil {
			return localf("%v", err)
		}
		defer crypto.Wipe(psk[:])
		if out == "-" {
			data := crypto.MarshalPSK(psk)
			defer crypto.Wipe(data)
			if _, err := a.stdout.Write(data); err != nil {
				return localf("cannot write the PSK to standard output: %v", err)
			}
			return nil
		}
		if err := crypto.SavePSK(out, psk); err != nil {
			return localf("%v", err)
		}
		_, err = fmt.Fprintf(a.stdout, "wrote PSK to %s\n", out)
		return err
	})
	return cmd
}
