package userdb

import (
	"errors"
	"fmt"
	"runtime"
	"testing"

	"github.com/dronelink/dronelink/pkg/crypto"
	"github.com/dronelink/dronelink/pkg/link"
)

func TestCheckCost(t *testing.T) {
	mib := func(m uint32) uint32 { return m * 1024 }
	for _, c := range []struct {
		p    Params
		want error
	}{
		{DefaultParams, nil},
		{Params{Time: 2, MemoryKiB: mib(19), Threads: 1, SaltLen: 16, KeyLen: 32}, nil},
		{Params{Time: 1, MemoryKiB: mib(46), Threads: 1, SaltLen: 16, KeyLen: 32}, nil},
		{Params{Time: 3, MemoryKiB: mib(32), Threads: 4, SaltLen: 16, KeyLen: 32}, nil},
		{Params{Time: 1, MemoryKiB: mib(46) - 1, Threads: 1, SaltLen: 16, KeyLen: 32}, ErrWeakParams},
		{Params{Time: 1, MemoryKiB: mib(32), Threads: 2, SaltLen: 16, KeyLen: 32}, ErrWeakParams},
		{Params{Time: 2, MemoryKiB: mib(19) - 1, Threads: 1, SaltLen: 16, KeyLen: 32}, ErrWeakParams},
		{Params{Time: 16, MemoryKiB: mib(8), Threads: 1, SaltLen: 16, KeyLen: 32}, ErrWeakParams},
		{Params{Time: 0, MemoryKiB: mib(64), Threads: 1, SaltLen: 16, KeyLen: 32}, ErrBadHash},
		{Params{Time: 1, MemoryKiB: mib(2048), Threads: 1, SaltLen: 16, KeyLen: 32}, ErrBadHash},
	} {
		t.Run(fmt.Sprintf("m=%d,t=%d,p=%d", c.p.MemoryKiB, c.p.Time, c.p.Threads), func(t *testing.T) {
			if err := c.p.CheckCost(); !errors.Is(err, c.want) || (c.want == nil) != (err == nil) {
				t.Errorf("CheckCost() = %v, want %v", err, c.want)
			}
		})
	}
}

// hashedDB returns a database with one user per params entry, each hashed with it.
func hashedDB(t *testing.T, params ...Params) *DB {
	t.Helper()
	keys := testKeys(t)
	db := Empty()
	for i, p := range params {
		h, err := HashPassword([]byte("pw"), p)
		if err != nil {
			t.Fatal(err)
		}
		if db, err = db.WithUser(fmt.Sprintf("u%d", i), link.RolePilot, h, keys[i]); err != nil {
			t.Fatal(err)
		}
	}
	return db
}

// An unknown user's login must cost one argon2id hash with the parameters most users'
// hashes have (DefaultParams in an empty database), like a login of a known user, so that
// neither time nor memory tells which names exist. Measured as allocated memory, which is
// deterministic: argon2id allocates m KiB per hash, and little else is allocated.
func TestUnknownUserSpendsHash(t *testing.T) {
	small := Params{Time: 2, MemoryKiB: 2048, Threads: 1, SaltLen: 16, KeyLen: 32}
	larger := Params{Time: 1, MemoryKiB: 4096, Threads: 1, SaltLen: 16, KeyLen: 32}
	for _, c := range []struct {
		name     string
		db       *DB
		min, max uint64 // bytes allocated
	}{
		{"empty database: the default cost", Empty(), uint64(DefaultParams.MemoryKiB) * 1024, 2 * uint64(DefaultParams.MemoryKiB) * 1024},
		{"most users' cost", hashedDB(t, small, larger, small), 2048 * 1024, 4096 * 1024},
		{"a tie: the costlier", hashedDB(t, small, larger), 4096 * 1024, 6144 * 1024},
	} {
		for _, check := range []struct {
			name string
			fn   func(*DB) link.LoginStatus
		}{
			{"Login", func(db *DB) link.LoginStatus {
				_, st := db.Login("mallory", []byte("guess"), crypto.KeyID{})
				return st
			}},
			{"CheckPassword", func(db *DB) link.LoginStatus { _, st := db.CheckPassword("mallory", []byte("guess")); return st }},
		} {
			t.Run(c.name+"/"+check.name, func(t *testing.T) {
				var before, after runtime.MemStats
				runtime.ReadMemStats(&before)
				st := check.fn(c.db)
				runtime.ReadMemStats(&after)
				if st != link.LoginUnknownUser {
					t.Fatalf("status %v", st)
				}
				if got := after.TotalAlloc - before.TotalAlloc; got < c.min || got >= c.max {
					t.Errorf("unknown-user check allocated %d bytes; want %d to %d (one hash of the users' cost)", got, c.min, c.max)
				}
			})
		}
	}
}

func TestMaxHashMemory(t *testing.T) {
	small := Params{Time: 2, MemoryKiB: 2048, Threads: 1, SaltLen: 16, KeyLen: 32}
	larger := Params{Time: 1, MemoryKiB: 4096, Threads: 1, SaltLen: 16, KeyLen: 32}
	if got := Empty().MaxHashMemoryKiB(); got != DefaultParams.MemoryKiB {
		t.Errorf("empty database: %d KiB, want the default %d", got, DefaultParams.MemoryKiB)
	}
	if got := hashedDB(t, small, larger, small).MaxHashMemoryKiB(); got != 4096 {
		t.Errorf("mixed database: %d KiB, want 4096 (the largest hash)", got)
	}
}
