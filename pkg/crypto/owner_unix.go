//go:build unix

package crypto

import (
	"os"
	"syscall"
)

// keepOwner gives tmp the owner and group of the existing file at path, when we are root
// and they differ. Without root the new file is ours, as the old one must have been for
// us to replace it in a directory only its owner may write.
func keepOwner(tmp *os.File, path string) error {
	if os.Geteuid() != 0 {
		return nil
	}
	fi, err := os.Stat(path)
	if err != nil {
		return nil // nothing to keep
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok || (st.Uid == 0 && st.Gid == 0) {
		return nil
	}
	return tmp.Chown(int(st.Uid), int(st.Gid))
}
