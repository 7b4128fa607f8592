package daemon

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/dronelink/dronelink/internal/buildinfo"
	"github.com/dronelink/dronelink/internal/cli"
)

// addSubcommands gives the daemon's root command its subcommands: version, completion and
// the hidden man. An argument or flag error in any of them sets *usageErr (exit 2).
func addSubcommands(root *cobra.Command, usageErr *bool) {
	// "dronelinkd --version" and "dronelinkd version" print what "dronelink version" does.
	root.SetVersionTemplate("dronelinkd {{.Version}}\n")
	root.AddCommand(&cobra.Command{
		Use:   "version",
		Short: "Print the version of dronelinkd",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, err := fmt.Fprintf(cmd.OutOrStdout(), "dronelinkd %s\n", buildinfo.Version())
			return err
		},
	})
	cli.Setup(root, nil)
	var mark func(*cobra.Command)
	mark = func(c *cobra.Command) {
		if args := c.Args; args != nil {
			c.Args = func(cmd *cobra.Command, a []string) error {
				err := args(cmd, a)
				if err != nil {
					*usageErr = true
				}
				return err
			}
		}
		for _, sub := range c.Commands() {
			mark(sub)
		}
	}
	for _, sub := range root.Commands() {
		mark(sub)
	}
}
