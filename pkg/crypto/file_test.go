package crypto

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestInsecurePermissions(t *testing.T) {
	dir := t.TempDir()
	cases := []struct {
		mode os.FileMode
		bad  bool
	}{
		{0o600, false},
		{0o400, false},
		{0o700, false},
		{0o644, true},
		{0o640, true},
		{0o660, true},
		{0o604, true},
		{0o602, true},
		{0o620, true},
		{0o666, true},
	}
	for _, c := range cases {
		path := filepath.Join(dir, "key-"+c.mode.String())
		if err := os.WriteFile(path, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(path, c.mode); err != nil {
			t.Fatal(err)
		}
		err := InsecurePermissions(path)
		if (err != nil) != c.bad {
			t.Errorf("mode %04o: err = %v, want bad=%v", c.mode, err, c.bad)
			continue
		}
		if c.bad {
			want := path + " is accessible by group/others (mode " + octal(c.mode) + "); run: chmod 600 " + path
			if err.Error() != want {
				t.Errorf("message %q, want %q", err, want)
			}
		}
	}
	if err := InsecurePermissions(filepath.Join(dir, "nope")); err == nil {
		t.Error("missing file: want error")
	}
	spaced := filepath.Join(dir, "my key")
	if err := os.WriteFile(spaced, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := InsecurePermissions(spaced); err == nil || !strings.HasSuffix(err.Error(), "chmod 600 '"+spaced+"'") {
		t.Errorf("path with space not quoted for the shell: %v", err)
	}
}

func octal(m os.FileMode) string {
	const digits = "01234567"
	p := uint32(m.Perm())
	return string([]byte{'0', digits[p>>6&7], digits[p>>3&7], digits[p&7]})
}

func TestWriteFileAtomic(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "users.db")

	if err := WriteFileAtomic(path, []byte("v1"), 0o640, false); err != nil {
		t.Fatal(err)
	}
	assertMode(t, path, 0o640)
	assertContent(t, path, "v1")

	err := WriteFileAtomic(path, []byte("v2"), 0o640, false)
	if !errors.Is(err, ErrFileExists) || !strings.Contains(err.Error(), path) {
		t.Errorf("overwrite=false: %v", err)
	}
	assertContent(t, path, "v1")

	if err := WriteFileAtomic(path, []byte("v3"), 0o600, true); err != nil {
		t.Fatal(err)
	}
	assertContent(t, path, "v3")
	assertMode(t, path, 0o600)
	assertNoTempFiles(t, dir)

	// The mode is exact, regardless of the umask.
	wide := filepath.Join(dir, "wide")
	if err := WriteFileAtomic(wide, nil, 0o666, false); err != nil {
		t.Fatal(err)
	}
	assertMode(t, wide, 0o666)

	// Relative path (directory ".").
	t.Chdir(dir)
	if err := WriteFileAtomic("rel", []byte("r"), 0o600, false); err != nil {
		t.Fatal(err)
	}
	assertContent(t, filepath.Join(dir, "rel"), "r")

	// Failure: the directory does not exist.
	missing := filepath.Join(dir, "no", "such", "dir", "f")
	if err := WriteFileAtomic(missing, []byte("x"), 0o600, true); err == nil || !strings.Contains(err.Error(), missing) {
		t.Errorf("missing dir: %v", err)
	}

	// Failure after the temporary file was written: the target is a
	// non-empty directory, so the final rename fails. The target must be
	// untouched and no temporary file may remain.
	sub := filepath.Join(dir, "target")
	if err := os.MkdirAll(filepath.Join(sub, "keep"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := WriteFileAtomic(sub, []byte("x"), 0o600, true); err == nil {
		t.Error("rename over a directory: want error")
	} else if !strings.Contains(err.Error(), sub) || strings.Contains(err.Error(), ".tmp-") {
		t.Errorf("error should name the target, not the temp file: %v", err)
	}
	if fi, err := os.Stat(filepath.Join(sub, "keep")); err != nil || !fi.IsDir() {
		t.Error("target directory was modified")
	}
	assertNoTempFiles(t, dir)

	if err := WriteFileAtomic("", nil, 0o600, true); err == nil {
		t.Error("empty path: want error")
	}
	if err := WriteFileAtomic(dir+"/", nil, 0o600, true); err == nil {
		t.Error("path ending in a slash: want error")
	}
}

func assertContent(t *testing.T, path, want string) {
	t.Helper()
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != want {
		t.Errorf("%s: content %q, want %q", path, got, want)
	}
}
