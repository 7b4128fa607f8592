package daemon

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dronelink/dronelink/pkg/crypto"
	"github.com/dronelink/dronelink/pkg/link"
	"github.com/dronelink/dronelink/pkg/userdb"
)

// G14: at start the daemon warns about each of its key, PSK and user database files that
// group or others can access, naming the file, and is silent when all are mode 0600.
// Loading still succeeds (the warning does not refuse the files).
func TestInsecureFilePermissionsWarning(t *testing.T) {
	dir := t.TempDir()
	keyPath, pskPath, usersPath := filepath.Join(dir, "drone.key"), filepath.Join(dir, "fleet.psk"), filepath.Join(dir, "users")
	key, err := crypto.GenerateRSAKey(nil, 2048)
	if err != nil {
		t.Fatal(err)
	}
	if err := crypto.SavePrivateKey(keyPath, key); err != nil {
		t.Fatal(err)
	}
	psk, err := crypto.GeneratePSK(nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := crypto.SavePSK(pskPath, psk); err != nil {
		t.Fatal(err)
	}
	hash, err := userdb.HashPassword([]byte("pw"), userdb.Params{Time: 1, MemoryKiB: 64, Threads: 1, SaltLen: 16, KeyLen: 32})
	if err != nil {
		t.Fatal(err)
	}
	if err := userdb.Update(usersPath, true, func(db *userdb.DB) (*userdb.DB, error) {
		return db.WithUser("alice", link.RolePilot, hash, &key.PublicKey)
	}); err != nil {
		t.Fatal(err)
	}
	files := []string{keyPath, pskPath, usersPath}
	for _, tc := range []struct {
		name     string
		insecure string // the file given mode 0644, or "" for none
		mode     os.FileMode
	}{
		{"all private", "", 0},
		{"key readable by others", keyPath, 0o644},
		{"PSK readable by group", pskPath, 0o640},
		{"users writable by others", usersPath, 0o602},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, p := range files {
				mode := os.FileMode(0o600)
				if p == tc.insecure {
					mode = tc.mode
				}
				if err := os.Chmod(p, mode); err != nil {
					t.Fatal(err)
				}
			}
			var stdout, stderr bytes.Buffer
			code := Main(context.Background(), []string{"--key", keyPath, "--psk", pskPath, "--users", usersPath, "--check-config"}, &stdout, &stderr)
			if code != ExitOK || !strings.Contains(stdout.String(), "configuration ok") {
				t.Fatalf("exit %d, stdout %q, stderr %q", code, stdout.String(), stderr.String())
			}
			warnings := strings.Count(stderr.String(), "insecure file permissions")
			if tc.insecure == "" {
				if warnings != 0 {
					t.Errorf("warned about private files: %s", stderr.String())
				}
				return
			}
			if warnings != 1 || !strings.Contains(stderr.String(), tc.insecure) || !strings.Contains(stderr.String(), "chmod 600") {
				t.Errorf("%d warnings for %s: %s", warnings, tc.insecure, stderr.String())
			}
		})
	}
}
