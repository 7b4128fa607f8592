package crypto

import (
	"fmt"
	"io/fs"
	"runtime"
)

// InsecureFileError is the error LoadPrivateKey and LoadPSK return for a secret file that
// its group or others may access (any of the permission bits 0077), as ssh refuses such a
// private key. Its message is one line that names the file, its mode and the fix:
//
//	drone.key: permissions 0644 are too open: the key must not be readable by group or others; run: chmod 600 drone.key
type InsecureFileError struct {
	Path string      // the file, as given
	Mode fs.FileMode // its permission bits
	What string      // what it holds: "key" or "PSK"
}

// Error implements error.
func (e *InsecureFileError) Error() string {
	how := "accessible"
	switch {
	case e.Mode&0o044 != 0:
		how = "readable"
	case e.Mode&0o022 != 0:
		how = "writable"
	}
	return fmt.Sprintf("%s: permissions %04o are too open: the %s must not be %s by group or others; run: chmod 600 %s",
		e.Path, uint32(e.Mode.Perm()), e.What, how, shellQuote(e.Path))
}

// checkSecretMode refuses a secret file whose mode lets group or others in. On Windows,
// where Unix permission bits mean nothing, every mode is accepted.
func checkSecretMode(path string, mode fs.FileMode, what string) error {
	if runtime.GOOS == "windows" || mode.Perm()&0o077 == 0 {
		return nil
	}
	return &InsecureFileError{Path: path, Mode: mode.Perm(), What: what}
}
