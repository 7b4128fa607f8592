// Command dronelink is the operator's and administrator's tool for the dronelink link: keys
// and PSK, the drone's user database, sending commands and receiving telemetry. Run
// "dronelink --help" for the commands and exit codes.
package main

import (
	"os"

	"github.com/dronelink/dronelink/internal/operator"
)

func main() { os.Exit(operator.Main(os.Args[1:], os.Stdin, os.Stdout, os.Stderr)) }
