package crypto

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// LoadPrivateKey and LoadPSK refuse, like ssh, a secret file that group or others may
// access: one line naming the file, its mode and the chmod that fixes it. Mode 0600 and
// 0400 (and the owner's execute bit) are fine. A public key file (0644) given where a
// private key belongs is still reported as the wrong kind of file, not as too open.
func TestLoadRefusesOpenSecretFiles(t *testing.T) {
	dir := t.TempDir()
	keyPEM, err := MarshalPrivateKeyPEM(testKey(t, 2048))
	if err != nil {
		t.Fatal(err)
	}
	load := map[string]func(path string) error{
		"key": func(p string) error { _, err := LoadPrivateKey(p); return err },
		"PSK": func(p string) error { _, err := LoadPSK(p); return err },
	}
	content := map[string][]byte{"key": keyPEM, "PSK": []byte(testPSKHex + "\n")}
	for _, tc := range []struct {
		what string
		mode os.FileMode
		want string // "" for accepted; else the problem between "too open: " and "; run:"
	}{
		{"key", 0o600, ""},
		{"key", 0o400, ""},
		{"key", 0o700, ""},
		{"key", 0o644, "the key must not be readable by group or others"},
		{"key", 0o640, "the key must not be readable by group or others"},
		{"key", 0o604, "the key must not be readable by group or others"},
		{"key", 0o620, "the key must not be writable by group or others"},
		{"key", 0o602, "the key must not be writable by group or others"},
		{"key", 0o610, "the key must not be accessible by group or others"},
		{"PSK", 0o600, ""},
		{"PSK", 0o644, "the PSK must not be readable by group or others"},
		{"PSK", 0o660, "the PSK must not be readable by group or others"},
		{"PSK", 0o666, "the PSK must not be readable by group or others"},
		{"PSK", 0o622, "the PSK must not be writable by group or others"},
	} {
		t.Run(tc.what+"-"+octal(tc.mode), func(t *testing.T) {
			path := filepath.Join(dir, tc.what+"-"+octal(tc.mode))
			if err := os.WriteFile(path, content[tc.what], 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(path, tc.mode); err != nil {
				t.Fatal(err)
			}
			err := load[tc.what](path)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("mode %s refused: %v", octal(tc.mode), err)
				}
				return
			}
			want := path + ": permissions " + octal(tc.mode) + " are too open: " + tc.want + "; run: chmod 600 " + path
			if err == nil || err.Error() != want {
				t.Fatalf("error %v\nwant        %s", err, want)
			}
			var ie *InsecureFileError
			if !errors.As(err, &ie) || ie.Path != path || ie.Mode != tc.mode {
				t.Errorf("error %#v is not an *InsecureFileError for %s", err, path)
			}
			assertNoSecret(t, err.Error(), testPSKHex[:16], string(keyPEM[40:60]))
		})
	}

	pub := filepath.Join(dir, "drone.key.pub")
	if err := SavePublicKey(pub, &testKey(t, 2048).PublicKey); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadPrivateKey(pub); !errors.Is(err, ErrBadPEM) || strings.Contains(err.Error(), "too open") {
		t.Errorf("public key as private key: %v", err)
	}
	spaced := filepath.Join(dir, "my psk")
	if err := os.WriteFile(spaced, content["PSK"], 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(spaced, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadPSK(spaced); err == nil || !strings.HasSuffix(err.Error(), "run: chmod 600 '"+spaced+"'") {
		t.Errorf("path with a space not quoted for the shell: %v", err)
	}
}
