// Command hello is a tiny program the release tests build with and without the release
// flags; it prints its version, so the stamp is linked in.
package main

import (
	"fmt"

	"github.com/dronelink/dronelink/internal/buildinfo"
)

func main() { fmt.Println(buildinfo.Version()) }
