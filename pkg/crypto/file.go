package crypto

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
)

// maxKeyFileSize bounds how much of a key or PSK file is read, so that a
// mistaken path (a log file, /dev/zero) fails fast instead of exhausting
// memory. A 4096-bit PKCS#8 PEM is about 3.3 KB.
const maxKeyFileSize = 64 << 10

// WriteFileAtomic writes data to path so that readers see either the old
// file or the complete new one, never a partial write.
//
// The data is written to a temporary file created (mode 0600) in the same
// directory, its mode set to perm (exactly; the umask does not apply),
// fsynced, and then moved into place; finally the directory is fsynced so the
// new name survives a crash. With overwrite false an existing file at path is
// never replaced and the error wraps [ErrFileExists]; the check and the
// commit are a single atomic step (a hard link, falling back to a check and
// rename on file systems without hard links). With overwrite true an
// existing file is replaced by rename.
//
// On any failure before the commit the original file (if any) is untouched
// and the temporary file is removed. If only the final directory fsync fails,
// the new file is in place but an error is still returned because its
// durability is not guaranteed.
//
// Errors name path and never include data.
func WriteFileAtomic(path string, data []byte, perm os.FileMode, overwrite bool) error {
	if path == "" {
		return errors.New("write file: empty path")
	}
	if !overwrite {
		// Fail early (without creating a temporary file) in the common case;
		// the commit below re-checks atomically.
		if _, err := os.Lstat(path); err == nil {
			return fmt.Errorf("%s: %w", path, ErrFileExists)
		}
	}
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	if base == "" || base == "." || base == ".." {
		return fmt.Errorf("write %s: not a file name", path)
	}

	tmp, err := os.CreateTemp(dir, "."+base+".tmp-*")
	if err != nil {
		return fmt.Errorf("write %s: create temporary file: %w", path, pathErrCause(err))
	}
	tmpName := tmp.Name()
	committed := false
	defer func() {
		if !committed {
			_ = tmp.Close() // may already be closed; the error is irrelevant
			_ = os.Remove(tmpName)
		}
	}()

	if err := tmp.Chmod(perm.Perm()); err != nil && runtime.GOOS != "windows" {
		return fmt.Errorf("write %s: set mode: %w", path, pathErrCause(err))
	}
	if overwrite {
		// Replacing a file keeps its owner: root editing the user database of a daemon
		// that runs as its own user must not leave a file that daemon cannot read.
		if err := keepOwner(tmp, path); err != nil {
			return fmt.Errorf("write %s: keep owner: %w", path, pathErrCause(err))
		}
	}
	if _, err := tmp.Write(data); err != nil {
		return fmt.Errorf("write %s: %w", path, pathErrCause(err))
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("write %s: fsync: %w", path, pathErrCause(err))
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s: close: %w", path, pathErrCause(err))
	}

	if overwrite {
		if err := os.Rename(tmpName, path); err != nil {
			return fmt.Errorf("write %s: rename into place: %w", path, linkErrCause(err))
		}
		committed = true
	} else {
		// link(2) fails with EEXIST if path exists: an atomic
		// create-if-absent, unlike a check followed by rename(2).
		lerr := os.Link(tmpName, path)
		switch {
		case lerr == nil:
			committed = true
			_ = os.Remove(tmpName) // the content is committed under path
		case errors.Is(lerr, fs.ErrExist):
			return fmt.Errorf("%s: %w", path, ErrFileExists)
		default:
			// No hard links on this file system (FAT, some FUSE and
			// network mounts): best effort check, then rename.
			if _, err := os.Lstat(path); err == nil {
				return fmt.Errorf("%s: %w", path, ErrFileExists)
			}
			if err := os.Rename(tmpName, path); err != nil {
				return fmt.Errorf("write %s: rename into place: %w", path, linkErrCause(err))
			}
			committed = true
		}
	}

	if err := syncDir(dir); err != nil {
		return fmt.Errorf("write %s: file written but directory fsync failed: %w", path, pathErrCause(err))
	}
	return nil
}

// syncDir fsyncs a directory so that a rename or link in it is durable.
func syncDir(dir string) error {
	if runtime.GOOS == "windows" {
		return nil // directories cannot be opened for sync on Windows
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	serr := d.Sync()
	cerr := d.Close()
	if serr != nil {
		return serr
	}
	return cerr
}

// pathErrCause strips the *fs.PathError wrapper (whose message repeats a
// path, possibly of a temporary file) and returns the underlying cause, which
// still satisfies errors.Is(err, fs.ErrNotExist) and friends.
func pathErrCause(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// linkErrCause does the same for the *os.LinkError of rename and link.
func linkErrCause(err error) error {
	var le *os.LinkError
	if errors.As(err, &le) {
		return le.Err
	}
	return pathErrCause(err)
}

// readSmallFile reads a regular file of at most maxKeyFileSize bytes and returns its
// content and its mode, as seen on the open file (so a check of the mode is about the
// content read). Its errors do not repeat the path (callers add it once).
func readSmallFile(path string) ([]byte, fs.FileMode, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, 0, pathErrCause(err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, 0, pathErrCause(err)
	}
	if !fi.Mode().IsRegular() {
		return nil, 0, fmt.Errorf("not a regular file (%s)", fileKind(fi.Mode()))
	}
	data, err := io.ReadAll(io.LimitReader(f, maxKeyFileSize+1))
	if err != nil {
		Wipe(data)
		return nil, 0, pathErrCause(err)
	}
	if len(data) > maxKeyFileSize {
		Wipe(data)
		return nil, 0, fmt.Errorf("file too large (more than %d bytes); is this the right file?", maxKeyFileSize)
	}
	return data, fi.Mode(), nil
}

func fileKind(m fs.FileMode) string {
	switch {
	case m.IsDir():
		return "a directory"
	case m&fs.ModeNamedPipe != 0:
		return "a named pipe"
	case m&fs.ModeSocket != 0:
		return "a socket"
	case m&fs.ModeDevice != 0:
		return "a device"
	default:
		return "mode " + m.String()
	}
}

// InsecurePermissions reports whether the file at path (following symbolic
// links) can be read or written by its group or by others. It returns nil
// when the permissions are fine, and otherwise a one-line error that names the
// problem and the fix, for example
//
//	/etc/dronelink/psk is accessible by group/others (mode 0644); run: chmod 600 /etc/dronelink/psk
//
// An error is also returned if the file cannot be examined. It is meant for
// files that should be private but whose exposure callers only warn about (the
// user database, password files); LoadPrivateKey and LoadPSK refuse an open
// key or PSK file themselves (see InsecureFileError). On Windows, where Unix
// permission bits are not meaningful, it always returns nil.
func InsecurePermissions(path string) error {
	if runtime.GOOS == "windows" {
		return nil
	}
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("cannot check permissions of %s: %w", path, pathErrCause(err))
	}
	perm := fi.Mode().Perm()
	if perm&0o077 == 0 {
		return nil
	}
	return fmt.Errorf("%s is accessible by group/others (mode %04o); run: chmod 600 %s",
		path, uint32(perm), shellQuote(path))
}

// shellQuote quotes s for a POSIX shell if it contains anything but
// obviously safe characters, so the suggested command can be pasted.
func shellQuote(s string) string {
	safe := s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' ||
			strings.ContainsRune("/._-+:@%,=", r))
	}) < 0
	if safe {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// ReadSecretFile reads a small secret file (at most 64 KiB) other than a key or PSK, such
// as the NATS relay's credentials, and refuses it with an InsecureFileError when its group
// or others may access it. what names the content in that error ("credentials"). Errors
// name the file once; the caller should Wipe the content when done with it.
func ReadSecretFile(path, what string) ([]byte, error) {
	data, mode, err := readSmallFile(path)
	if err != nil {
		return nil, fmt.Errorf("%s file %s: %w", what, path, err)
	}
	if err := checkSecretMode(path, mode, what); err != nil {
		Wipe(data)
		return nil, err
	}
	return data, nil
}
