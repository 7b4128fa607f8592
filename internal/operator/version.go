package operator

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/dronelink/dronelink/internal/buildinfo"
)

func (a *app) newVersionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version of dronelink",
		Args:  noArgs,
		RunE: a.runE(func(*cobra.Command, []string) error {
			_, err := fmt.Fprintf(a.stdout, "dronelink %s\n", buildinfo.Version())
			return err
		}),
	}
}
