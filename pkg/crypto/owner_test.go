//go:build unix

package crypto

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// Root replacing a file owned by a service user keeps that owner, so the service can still
// read its file.
func TestWriteFileAtomicKeepsOwner(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to own files as another user")
	}
	path := filepath.Join(t.TempDir(), "users")
	if err := os.WriteFile(path, []byte("old"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(path, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	if err := WriteFileAtomic(path, []byte("new"), 0o600, true); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	if st.Uid != 65534 || st.Gid != 65534 || fi.Mode().Perm() != 0o600 {
		t.Fatalf("owner %d:%d mode %v after the rewrite, want 65534:65534 0600", st.Uid, st.Gid, fi.Mode().Perm())
	}
}
