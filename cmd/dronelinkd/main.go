// Command dronelinkd is dronelink's ground-link daemon on the drone. See package
// internal/daemon and `dronelinkd --help`.
package main

import (
	"context"
	"os"

	"github.com/dronelink/dronelink/internal/daemon"
)

func main() {
	os.Exit(daemon.Main(context.Background(), os.Args[1:], os.Stdout, os.Stderr))
}
