package control

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"time"
)

// MaxPath is the longest socket path (the kernel's sun_path holds 108 bytes with the NUL).
const MaxPath = 107

// Listener is a control socket bound at its path; NewServer serves it.
type Listener struct {
	ln    *net.UnixListener
	path  string
	ident fs.FileInfo // the socket file, so that only this one is removed at the end
}

// Close closes the socket and removes its file (if it is still this one) without serving.
func (l *Listener) Close() error {
	err := l.ln.Close()
	removeIfSame(l.path, l.ident)
	return err
}

// Path is where the socket is.
func (l *Listener) Path() string { return l.path }

// Listen creates the control socket at path with mode 0600. The socket is bound inside a
// fresh directory of mode 0700 next to path, set to 0600, and only then linked at path, so
// it is never reachable with a wider mode whatever the umask. A socket at path that nobody
// answers on (left by a program that was killed) is replaced; a socket a running program
// answers on, or anything at path that is not a socket, is refused.
func Listen(path string) (*Listener, error) {
	if path == "" {
		return nil, errors.New("empty control socket path")
	}
	if len(path) > MaxPath {
		return nil, fmt.Errorf("control socket path %s is too long: at most %d bytes", path, MaxPath)
	}
	if err := clearStale(path); err != nil {
		return nil, err
	}
	dir := filepath.Dir(path)
	tmp, err := os.MkdirTemp(dir, ".c")
	if err != nil {
		return nil, fmt.Errorf("cannot create the control socket %s: %w", path, pathCause(err))
	}
	defer os.RemoveAll(tmp)
	bound := filepath.Join(tmp, "s")
	if len(bound) > MaxPath {
		return nil, fmt.Errorf("control socket path %s is too long: its directory must leave room for a %d-byte temporary name", path, len(bound)-len(dir))
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: bound, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("cannot create the control socket %s: %w", path, unwrap(err))
	}
	ln.SetUnlinkOnClose(false) // the file is removed by name at path, not at bound
	fail := func(err error) (*Listener, error) {
		ln.Close()
		return nil, err
	}
	if err := os.Chmod(bound, 0o600); err != nil {
		return fail(fmt.Errorf("cannot set the mode of the control socket: %w", pathCause(err)))
	}
	// A link, unlike a rename, never replaces what appeared at path since clearStale.
	if err := os.Link(bound, path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fail(fmt.Errorf("cannot create the control socket %s: something else created it meanwhile", path))
		}
		return fail(fmt.Errorf("cannot create the control socket %s: %w", path, pathCause(err)))
	}
	fi, err := os.Lstat(path)
	if err != nil {
		return fail(fmt.Errorf("control socket %s: %w", path, pathCause(err)))
	}
	if fi.Mode().Type() != fs.ModeSocket || fi.Mode().Perm() != 0o600 {
		os.Remove(path)
		return fail(fmt.Errorf("control socket %s: mode %v after creation, want a socket with 0600", path, fi.Mode()))
	}
	return &Listener{ln: ln, path: path, ident: fi}, nil
}

// clearStale removes a socket at path that nobody answers on, and refuses anything else
// that exists there.
func clearStale(path string) error {
	fi, err := os.Lstat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil
	case err != nil:
		return fmt.Errorf("control socket %s: %w", path, pathCause(err))
	case fi.Mode().Type() != fs.ModeSocket:
		return fmt.Errorf("control socket %s: the path exists and is not a socket (%v): refusing to replace it", path, fi.Mode().Type())
	}
	c, err := net.DialTimeout("unix", path, time.Second)
	if err == nil {
		c.Close()
		return fmt.Errorf("control socket %s is in use: another running program answers on it", path)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("cannot remove the stale control socket %s: %w", path, pathCause(err))
	}
	return nil
}

// removeIfSame removes path if it is still the file ident describes.
func removeIfSame(path string, ident fs.FileInfo) {
	if fi, err := os.Lstat(path); err == nil && os.SameFile(fi, ident) {
		os.Remove(path)
	}
}

// pathCause drops the *fs.PathError wrapper, whose message repeats the path.
func pathCause(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	var le *os.LinkError
	if errors.As(err, &le) {
		return le.Err
	}
	return err
}
