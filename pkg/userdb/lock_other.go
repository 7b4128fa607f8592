//go:build !(darwin || dragonfly || freebsd || linux || netbsd || openbsd)

package userdb

import (
	"errors"
	"os"
)

var errNoFlock = errors.New("file locking (flock) is not supported on this platform")

func lockFile(*os.File) error   { return errNoFlock }
func unlockFile(*os.File) error { return errNoFlock }
