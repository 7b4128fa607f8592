package userdb

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"

	"github.com/dronelink/dronelink/pkg/crypto"
)

// maxFileSize bounds how much of a database file is read: a user with four
// 4096-bit keys takes about 4 KB, so this is room for thousands of users
// while a wrong path (a log file, /dev/zero) fails fast.
const maxFileSize = 16 << 20

// Load reads and parses the database file at path. A missing file is an
// error wrapping fs.ErrNotExist that names path; contents that do not parse
// or validate give a one-line error wrapping ErrCorrupt that names path and
// the user and field at fault. Load does not check the file's permissions
// (see crypto.InsecurePermissions) and takes no lock: Update replaces the
// file atomically.
func Load(path string) (*DB, error) {
	data, err := readFile(path)
	if err != nil {
		return nil, err
	}
	db, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return db, nil
}

// readFile reads a regular file of at most maxFileSize bytes. Errors name
// path once.
func readFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("user database %s: %w", path, unwrapPath(err))
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("user database %s: %w", path, unwrapPath(err))
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("user database %s: not a regular file", path)
	}
	data, err := io.ReadAll(io.LimitReader(f, maxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("user database %s: %w", path, unwrapPath(err))
	}
	if len(data) > maxFileSize {
		return nil, fmt.Errorf("user database %s: larger than %d bytes; is this the right file?", path, maxFileSize)
	}
	return data, nil
}

// unwrapPath drops an *fs.PathError wrapper (which would repeat the path)
// but keeps the cause, so errors.Is(err, fs.ErrNotExist) still works.
func unwrapPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// Update is a safe read-modify-write of the database file at path, for
// administration tools. It
//
//  1. takes an exclusive flock(2) on path+".lock" (creating it with mode
//     0600; it is left in place), waiting for any other Update to finish;
//  2. loads path, or starts from Empty if path does not exist and create is
//     true (if create is false, a missing file is an error wrapping
//     fs.ErrNotExist);
//  3. calls fn with the loaded database;
//  4. writes the database fn returns to path atomically with mode 0600
//     (crypto.WriteFileAtomic), unless fn returned the database it was given
//     and the file already existed;
//  5. releases the lock.
//
// If loading, fn or the write fails, the existing file is untouched and the
// error is returned (fn's error as is, so errors.Is works on it).
//
// The lock is advisory and per open file description, so it serialises
// Updates between processes and between goroutines alike; Load needs no
// lock. On platforms without flock(2) Update returns an error.
func Update(path string, create bool, fn func(*DB) (*DB, error)) error {
	lock, err := os.OpenFile(path+".lock", os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("user database %s: open lock file: %w", path, unwrapPath(err))
	}
	defer lock.Close() // closing releases the lock too
	if err := lockFile(lock); err != nil {
		return fmt.Errorf("user database %s: lock %s.lock: %w", path, path, err)
	}
	defer func() { _ = unlockFile(lock) }()

	var db *DB
	existed := true
	data, err := readFile(path)
	switch {
	case err == nil:
		if db, err = Parse(data); err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
	case errors.Is(err, fs.ErrNotExist) && create:
		db, existed = Empty(), false
	default:
		return err
	}

	next, err := fn(db)
	if err != nil {
		return err
	}
	if next == nil {
		return fmt.Errorf("user database %s: update returned no database", path)
	}
	if next == db && existed {
		return nil
	}
	out, err := next.Marshal()
	if err != nil {
		return err
	}
	if err := crypto.WriteFileAtomic(path, out, 0o600, true); err != nil {
		return fmt.Errorf("user database: %w", err)
	}
	return nil
}
