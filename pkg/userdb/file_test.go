package userdb

import (
	"bytes"
	"crypto/rsa"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dronelink/dronelink/pkg/crypto"
	"github.com/dronelink/dronelink/pkg/link"
)

func checkMode(t *testing.T, path string, want fs.FileMode) {
	t.Helper()
	if runtime.GOOS == "windows" {
		return
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != want {
		t.Errorf("%s has mode %04o, want %04o", path, got, want)
	}
}

// dirEntries lists a directory, to spot left-over temporary files.
func dirEntries(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

func TestUpdateSequence(t *testing.T) {
	keys := testKeys(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "users.json")

	add := func(name string, role link.Role, pw string, k ...int) func(*DB) (*DB, error) {
		return func(db *DB) (*DB, error) {
			var pubs []*rsa.PublicKey
			for _, i := range k {
				pubs = append(pubs, keys[i])
			}
			return db.WithUser(name, role, mustHash(t, pw), pubs...)
		}
	}
	if err := Update(path, true, add("alice", link.RolePilot, "a1", 0)); err != nil {
		t.Fatal(err)
	}
	checkMode(t, path, 0o600)
	checkMode(t, path+".lock", 0o600)
	if err := Update(path, false, add("bob", link.RoleObserver, "b1", 1, 2)); err != nil {
		t.Fatal(err)
	}
	if err := Update(path, false, func(db *DB) (*DB, error) { return db.WithPassword("alice", mustHash(t, "a2")) }); err != nil {
		t.Fatal(err)
	}
	if err := Update(path, false, func(db *DB) (*DB, error) { return db.WithKey("alice", keys[3]) }); err != nil {
		t.Fatal(err)
	}
	if err := Update(path, false, func(db *DB) (*DB, error) { return db.WithoutKey("bob", crypto.Fingerprint(keys[1])) }); err != nil {
		t.Fatal(err)
	}
	db, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if db.Len() != 2 {
		t.Fatalf("Len = %d", db.Len())
	}
	if _, st := db.Login("alice", []byte("a2"), crypto.KeyIDOf(keys[3])); st != link.LoginOK {
		t.Errorf("alice with new password and added key: %v", st)
	}
	if _, st := db.Login("alice", []byte("a1"), crypto.KeyIDOf(keys[0])); st != link.LoginWrongPassword {
		t.Errorf("alice with old password: %v", st)
	}
	if db.HasKey(crypto.KeyIDOf(keys[1])) {
		t.Error("bob's removed key is still there")
	}
	if err := Update(path, false, func(db *DB) (*DB, error) { return db.WithoutUser("bob") }); err != nil {
		t.Fatal(err)
	}
	if db, err = Load(path); err != nil || db.Len() != 1 || db.HasKey(crypto.KeyIDOf(keys[2])) {
		t.Fatalf("after deleting bob: %v, %v", db, err)
	}
	checkMode(t, path, 0o600)
	if got := dirEntries(t, dir); !slices.Equal(got, []string{"users.json", "users.json.lock"}) {
		t.Errorf("directory holds %v", got)
	}
}

func TestUpdateFailureLeavesFileAlone(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "users.json")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	db := testDB(t)
	data, _ := db.Marshal()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	stat0, _ := os.Stat(path)

	boom := errors.New("boom")
	err := Update(path, false, func(db *DB) (*DB, error) {
		// An edit that succeeds, then a failure: nothing may be written.
		if _, err := db.WithoutUser("alice"); err != nil {
			return nil, err
		}
		return nil, boom
	})
	if !errors.Is(err, boom) {
		t.Errorf("Update returned %v, want fn's error", err)
	}
	err = Update(path, false, func(db *DB) (*DB, error) { return db.WithoutUser("nobody") })
	if !errors.Is(err, ErrNoSuchUser) {
		t.Errorf("Update returned %v, want ErrNoSuchUser", err)
	}
	// fn returning the database unchanged: no rewrite either.
	if err := Update(path, false, func(db *DB) (*DB, error) { return db, nil }); err != nil {
		t.Error(err)
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Error("file changed although the update failed")
	}
	if stat1, _ := os.Stat(path); !os.SameFile(stat0, stat1) {
		t.Error("file was replaced although the update failed")
	}

	// A corrupt file is reported and left as it is; fn is not called.
	garbled := append(bytes.Clone(data[:len(data)/2]), "\x00garbage"...)
	if err := os.WriteFile(path, garbled, 0o600); err != nil {
		t.Fatal(err)
	}
	called := false
	err = Update(path, true, func(db *DB) (*DB, error) { called = true; return Empty(), nil })
	if !errors.Is(err, ErrCorrupt) || called || !strings.Contains(err.Error(), path) {
		t.Errorf("Update on a corrupt file: %v (fn called: %v)", err, called)
	}
	if got, _ := os.ReadFile(path); !bytes.Equal(got, garbled) {
		t.Error("corrupt file was modified")
	}
	if got := dirEntries(t, dir); !slices.Equal(got, []string{"users.json", "users.json.lock"}) {
		t.Errorf("directory holds %v", got)
	}
}

func TestUpdateMissingFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "users.json")
	called := false
	err := Update(path, false, func(db *DB) (*DB, error) { called = true; return db, nil })
	if !errors.Is(err, fs.ErrNotExist) || called || !strings.Contains(err.Error(), path) {
		t.Errorf("Update(create=false) on a missing file: %v (fn called: %v)", err, called)
	}
	if _, err := os.Stat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Error("Update(create=false) created the file")
	}
	// create=true with an unchanged (empty) database still creates the file.
	if err := Update(path, true, func(db *DB) (*DB, error) { return db, nil }); err != nil {
		t.Fatal(err)
	}
	if db, err := Load(path); err != nil || db.Len() != 0 {
		t.Errorf("Load after creating an empty database: %v, %v", db, err)
	}
	checkMode(t, path, 0o600)
}

func TestUpdateConcurrent(t *testing.T) {
	hash := mustHash(t, "pw")
	path := filepath.Join(t.TempDir(), "users.json")
	const n = 8
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			err := Update(path, true, func(db *DB) (*DB, error) {
				// Widen the window between read and write: without
				// the lock, updates would overwrite each other.
				time.Sleep(5 * time.Millisecond)
				k := fakeKey(2048 + i)
				return db.WithUser(fmt.Sprintf("user%d", i), link.RoleObserver, hash, k)
			})
			if err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	db, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if db.Len() != n {
		t.Fatalf("%d of %d concurrent updates landed: %+v", db.Len(), n, db.Users())
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	data, _ := testDB(t).Marshal()

	// World-readable files still load; warning about them is the daemon's
	// job (crypto.InsecurePermissions).
	path := filepath.Join(dir, "users.json")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	db, err := Load(path)
	if err != nil || db.Len() != 2 {
		t.Fatalf("Load(0644 file) = %v, %v", db, err)
	}

	missing := filepath.Join(dir, "nope.json")
	_, err = Load(missing)
	if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), missing) {
		t.Errorf("Load(missing) = %v; want fs.ErrNotExist naming the path", err)
	}
	if strings.Count(err.Error(), missing) != 1 {
		t.Errorf("Load(missing) = %q repeats the path", err)
	}

	bad := filepath.Join(dir, "bad.json")
	garbled := bytes.Replace(data, []byte(`"observer"`), []byte(`"admin"`), 1)
	if err := os.WriteFile(bad, garbled, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = Load(bad)
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), bad) || !strings.Contains(err.Error(), `user "bob"`) {
		t.Errorf("Load(corrupt) = %v", err)
	}
	if _, err := Load(dir); err == nil {
		t.Error("Load(directory) succeeded")
	}
}
