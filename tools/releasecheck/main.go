// Command releasecheck checks release binaries (see internal/release): for each file named
// PROGRAM-linux-ARCH it checks the ELF machine, static linking, stripping, the build
// settings (CGO_ENABLED=0, -trimpath, GOARM=7 for armv7), the version stamp and the size.
// `make release` runs it on dist/.
//
//	go run ./tools/releasecheck [--version V] [--max-size BYTES] FILE...
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/dronelink/dronelink/internal/release"
)

func main() {
	version := flag.String("version", "", "the version every binary must be stamped with (empty: not checked)")
	maxSize := flag.Int64("max-size", release.MaxSize, "the largest a binary may be, in bytes")
	flag.Parse()
	if flag.NArg() == 0 {
		fmt.Fprintln(os.Stderr, "releasecheck: no files given")
		os.Exit(2)
	}
	failed := false
	for _, path := range flag.Args() {
		errs := release.VerifyFile(path, *version, *maxSize)
		for _, err := range errs {
			fmt.Fprintln(os.Stderr, "releasecheck:", err)
		}
		if len(errs) > 0 {
			failed = true
			continue
		}
		fi, _ := os.Stat(path)
		t, _ := release.TargetOf(path)
		fmt.Printf("ok %s: %s, static, stripped, CGO_ENABLED=0, %.1f MB (limit %.1f MB)\n",
			path, t.Name(), float64(fi.Size())/1e6, float64(*maxSize)/1e6)
	}
	if failed {
		os.Exit(1)
	}
}
