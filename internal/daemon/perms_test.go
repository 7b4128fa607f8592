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

// G14, #13: like ssh, the daemon refuses a drone key or PSK file that group or others
// may access, with one line that names the file, its mode and the chmod to run, and exit
// code 1, in either transport. The user database holds no secret (argon2id hashes): open
// to group or others it is loaded with one warning naming it. All 0600: silence.
func TestInsecureFilePermissions(t *testing.T) {
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
	native := []string{"--listen", "127.0.0.1:0", "--key", keyPath, "--psk", pskPath, "--users", usersPath, "--check-config"}
	dtls := []string{"--listen", "127.0.0.1:0", "--transport", "dtls", "--psk", pskPath, "--users", usersPath, "--check-config"}
	for _, tc := range []struct {
		name    string
		args    []string
		open    string // the file given mode, or "" for none
		mode    os.FileMode
		code    int
		refusal string // the one error line, or "" when it starts
		warned  bool   // one "insecure file permissions" warning naming open
	}{
		{"all private", native, "", 0, ExitOK, "", false},
		{"key readable by others", native, keyPath, 0o644, ExitError,
			keyPath + ": permissions 0644 are too open: the key must not be readable by group or others; run: chmod 600 " + keyPath, false},
		{"key writable by group", native, keyPath, 0o620, ExitError,
			keyPath + ": permissions 0620 are too open: the key must not be writable by group or others; run: chmod 600 " + keyPath, false},
		{"PSK readable by group", native, pskPath, 0o640, ExitError,
			pskPath + ": permissions 0640 are too open: the PSK must not be readable by group or others; run: chmod 600 " + pskPath, false},
		{"dtls PSK readable by others", dtls, pskPath, 0o604, ExitError,
			pskPath + ": permissions 0604 are too open: the PSK must not be readable by group or others; run: chmod 600 " + pskPath, false},
		{"users readable by others", native, usersPath, 0o644, ExitOK, "", true},
		{"users writable by others", native, usersPath, 0o602, ExitOK, "", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, p := range []string{keyPath, pskPath, usersPath} {
				mode := os.FileMode(0o600)
				if p == tc.open {
					mode = tc.mode
				}
				if err := os.Chmod(p, mode); err != nil {
					t.Fatal(err)
				}
			}
			var stdout, stderr bytes.Buffer
			code := Main(context.Background(), tc.args, &stdout, &stderr)
			if code != tc.code {
				t.Fatalf("exit %d, want %d; stdout %q, stderr %q", code, tc.code, stdout.String(), stderr.String())
			}
			if tc.refusal != "" {
				if want := "dronelinkd: " + tc.refusal + "\n"; stderr.String() != want || stdout.Len() != 0 {
					t.Fatalf("stderr %q\nwant   %q (stdout %q)", stderr.String(), want, stdout.String())
				}
				return
			}
			if !strings.Contains(stdout.String(), "configuration ok") {
				t.Fatalf("stdout %q, stderr %q", stdout.String(), stderr.String())
			}
			warnings := strings.Count(stderr.String(), "insecure file permissions")
			if !tc.warned {
				if warnings != 0 {
					t.Errorf("warned about private files: %s", stderr.String())
				}
				return
			}
			if warnings != 1 || !strings.Contains(stderr.String(), tc.open) || !strings.Contains(stderr.String(), "chmod 600") {
				t.Errorf("%d warnings for %s: %s", warnings, tc.open, stderr.String())
			}
		})
	}
}
