package operator

import (
	"os"
	"strings"
	"testing"
)

// user add and user passwd hash with the --argon2-* cost when given (stored in the PHC
// string, so the password still checks), and refuse a cost below the floors before
// touching the database.
func TestArgon2Flags(t *testing.T) {
	f := newFixture(t)
	db := f.path("users.json")
	run(t, "", "user", "add", "--db", db, "--name", "alice", "--role", "pilot", "--pubkey", f.pub("alice"),
		"--password-file", f.path("alice.pw"), "--argon2-memory", "19", "--argon2-time", "2", "--argon2-threads", "1").want(t, 0)
	data, _ := readFile(t, db)
	if !strings.Contains(data, "$argon2id$v=19$m=19456,t=2,p=1$") {
		t.Fatalf("user add --argon2-memory 19 --argon2-time 2 --argon2-threads 1 stored another cost:\n%s", data)
	}
	checkLogin(t, db, "alice", "alice secret", true)

	// One flag: the others take the defaults (t=1, p=2), not the tests' cheap parameters.
	pw := writeFile(t, f.path("new.pw"), "a new secret\n", 0o600)
	run(t, "", "user", "passwd", "--db", db, "--name", "alice", "--password-file", pw, "--argon2-memory", "46").want(t, 0)
	data, _ = readFile(t, db)
	if !strings.Contains(data, "$argon2id$v=19$m=47104,t=1,p=2$") {
		t.Fatalf("user passwd --argon2-memory 46 stored another cost:\n%s", data)
	}
	checkLogin(t, db, "alice", "a new secret", true)

	before, _ := readFile(t, db)
	for _, tc := range []struct {
		flags []string
		want  string
	}{
		{[]string{"--argon2-memory", "45"}, "too weak"},
		{[]string{"--argon2-memory", "32", "--argon2-time", "1"}, "too weak"},
		{[]string{"--argon2-memory", "18", "--argon2-time", "4"}, "too weak"},
		{[]string{"--argon2-memory", "0"}, "too weak"},
		{[]string{"--argon2-memory", "1025"}, "at most 1024"},
		{[]string{"--argon2-time", "0"}, "--argon2-time 0"},
		{[]string{"--argon2-time", "17"}, "--argon2-time 17"},
		{[]string{"--argon2-threads", "0"}, "--argon2-threads 0"},
		{[]string{"--argon2-threads", "17"}, "--argon2-threads 17"},
		{[]string{"--argon2-memory", "-1"}, "argon2-memory"},
	} {
		t.Run(strings.Join(tc.flags, " "), func(t *testing.T) {
			run(t, "", append([]string{"user", "passwd", "--db", db, "--name", "alice", "--password-file", pw}, tc.flags...)...).want(t, 2, tc.want)
			other := f.path("other.json")
			run(t, "", append([]string{"user", "add", "--db", other, "--name", "olga", "--role", "observer",
				"--pubkey", f.pub("olga"), "--password-file", pw}, tc.flags...)...).want(t, 2, tc.want)
			if _, err := os.Stat(other); !os.IsNotExist(err) {
				t.Errorf("a refused user add created the database (%v)", err)
			}
		})
	}
	if after, _ := readFile(t, db); after != before {
		t.Error("a refused user passwd changed the database")
	}
}
