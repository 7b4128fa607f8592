package operator

import (
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/dronelink/dronelink/pkg/crypto"
	"github.com/dronelink/dronelink/pkg/link"
	"github.com/dronelink/dronelink/pkg/userdb"
)

// addUser runs user add with a password file and expects success.
func addUser(t *testing.T, f *fixture, db, name, role, key string) {
	t.Helper()
	pw := writeFile(t, f.path(name+".newpw"), name+" secret\n", 0o600)
	run(t, "", "user", "add", "--db", db, "--name", name, "--role", role, "--pubkey", f.pub(key), "--password-file", pw).want(t, 0)
}

// checkLogin checks the password of user in the database file.
func checkLogin(t *testing.T, db, name, password string, want bool) {
	t.Helper()
	d, err := userdb.Load(db)
	if err != nil {
		t.Fatal(err)
	}
	u, ok := d.User(name)
	if !ok {
		t.Fatalf("no user %s", name)
	}
	if ok, err := u.CheckPassword([]byte(password)); err != nil || ok != want {
		t.Fatalf("password %q for %s: match %v (err %v), want %v", password, name, ok, err, want)
	}
}

func TestUserAddListDel(t *testing.T) {
	f := newFixture(t)
	db := f.path("users.json")
	r := run(t, "", "user", "add", "--db", db, "--name", "alice", "--role", "pilot",
		"--pubkey", f.pub("alice"), "--password-file", f.path("alice.pw"))
	r.want(t, 0)
	aliceFP := crypto.Fingerprint(&keys(t)["alice"].PublicKey)
	if want := "added user alice (pilot) with key " + aliceFP + "\n"; r.stdout != want {
		t.Errorf("stdout %q, want %q", r.stdout, want)
	}
	if m := mode(t, db); m != 0o600 {
		t.Errorf("database mode %04o, want 0600", m)
	}
	checkLogin(t, db, "alice", "alice secret", true)

	// A second user with two keys, password from stdin.
	r = run(t, "olga secret\n", "user", "add", "--db", db, "--name", "olga", "--role", "observer",
		"--pubkey", f.pub("olga"), "--pubkey", f.pub("mallory"), "--password-stdin")
	r.want(t, 0)
	olgaFP := crypto.Fingerprint(&keys(t)["olga"].PublicKey)
	malloryFP := crypto.Fingerprint(&keys(t)["mallory"].PublicKey)
	if !strings.Contains(r.stdout, "with keys "+olgaFP+", "+malloryFP) {
		t.Errorf("stdout %q", r.stdout)
	}
	checkLogin(t, db, "olga", "olga secret", true)
	d, _ := userdb.Load(db)
	if role, status := d.Login("olga", []byte("olga secret"), crypto.KeyIDOf(&keys(t)["mallory"].PublicKey)); status != link.LoginOK || role != link.RoleObserver {
		t.Errorf("olga with her second key: %v %v", role, status)
	}

	r = run(t, "", "user", "list", "--db", db)
	r.want(t, 0)
	lines := strings.Split(strings.TrimSuffix(r.stdout, "\n"), "\n")
	if len(lines) != 3 {
		t.Fatalf("list: %q", r.stdout)
	}
	for i, want := range [][]string{
		{"NAME", "ROLE", "FINGERPRINTS"},
		{"alice", "pilot", aliceFP},
		{"olga", "observer", olgaFP + "," + malloryFP},
	} {
		if got := strings.Fields(lines[i]); strings.Join(got, " ") != strings.Join(want, " ") {
			t.Errorf("list line %d: %q, want %q", i, got, want)
		}
	}

	r = run(t, "", "user", "del", "--db", db, "--name", "alice")
	r.want(t, 0)
	if r.stdout != "deleted user alice\n" {
		t.Errorf("stdout %q", r.stdout)
	}
	r = run(t, "", "user", "list", "--db", db)
	if strings.Contains(r.stdout, "alice") || !strings.Contains(r.stdout, "olga") {
		t.Errorf("list after del: %q", r.stdout)
	}
}

func TestUserAddRefusals(t *testing.T) {
	f := newFixture(t)
	db := f.path("users.json")
	addUser(t, f, db, "alice", "pilot", "alice")
	before, _ := readFile(t, db)
	pw := f.path("alice.pw")
	for _, tc := range []struct {
		name  string
		args  []string
		stdin string
		code  int
		want  []string
	}{
		{"duplicate user", []string{"--name", "alice", "--role", "pilot", "--pubkey", f.pub("olga"), "--password-file", pw}, "", 1,
			[]string{"user alice already exists"}},
		{"key of another user", []string{"--name", "bob", "--role", "pilot", "--pubkey", f.pub("alice"), "--password-file", pw}, "", 1,
			[]string{"is already authorised for user alice"}},
		{"same key twice", []string{"--name", "bob", "--role", "pilot", "--pubkey", f.pub("olga"), "--pubkey", f.pub("olga"), "--password-file", pw}, "", 1,
			[]string{"given twice"}},
		{"bad name", []string{"--name", "bad name!", "--role", "pilot", "--pubkey", f.pub("olga"), "--password-file", pw}, "", 1,
			[]string{"invalid user name"}},
		{"bad role", []string{"--name", "bob", "--role", "admin", "--pubkey", f.pub("olga"), "--password-file", pw}, "", 2,
			[]string{`bad role "admin": want pilot or observer`}},
		{"missing pubkey file", []string{"--name", "bob", "--role", "pilot", "--pubkey", f.path("nope.pub"), "--password-file", pw}, "", 1,
			[]string{"cannot read public key file " + f.path("nope.pub") + " (--pubkey)", "no such file"}},
		{"private key as pubkey", []string{"--name", "bob", "--role", "pilot", "--pubkey", f.key("olga"), "--password-file", pw}, "", 1,
			[]string{"bad public key file", "private key"}},
		{"no password source", []string{"--name", "bob", "--role", "pilot", "--pubkey", f.pub("olga")}, "", 2,
			[]string{"no password: use --password-file, --password-stdin or run on a terminal"}},
		{"missing password file", []string{"--name", "bob", "--role", "pilot", "--pubkey", f.pub("olga"), "--password-file", f.path("nope")}, "", 1,
			[]string{"cannot read password file"}},
		{"empty stdin", []string{"--name", "bob", "--role", "pilot", "--pubkey", f.pub("olga"), "--password-stdin"}, "\n", 1,
			[]string{"empty password from standard input"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := run(t, tc.stdin, append([]string{"user", "add", "--db", db}, tc.args...)...)
			r.want(t, tc.code, tc.want...)
			if after, _ := readFile(t, db); after != before {
				t.Fatal("the database changed")
			}
		})
	}
}

func TestPasswordFileFormats(t *testing.T) {
	f := newFixture(t)
	db := f.path("users.json")
	long := strings.Repeat("p", link.MaxPasswordSize)
	for i, tc := range []struct {
		content, password string
		errPart           string
	}{
		{"secret\n", "secret", ""},
		{"secret\r\n", "secret", ""},
		{"secret", "secret", ""},
		{"with spaces  \n", "with spaces  ", ""},
		{long + "\n", long, ""},
		{long + "p\n", "", "longer than 256 bytes"},
		{"\n", "", "empty password"},
		{"", "", "empty password"},
		{"two\nlines\n", "", "more than one line"},
		{"secret\n\n", "", "more than one line"},
	} {
		name := "user" + string(rune('a'+i))
		pw := writeFile(t, f.path(name+".pw"), tc.content, 0o600)
		key := []string{"alice", "olga", "mallory", "stranger", "drone"}[i%5]
		db := db + string(rune('a'+i)) // one database per case: each key binds once
		r := run(t, "", "user", "add", "--db", db, "--name", name, "--role", "pilot", "--pubkey", f.pub(key), "--password-file", pw)
		if tc.errPart != "" {
			r.want(t, 1, tc.errPart)
			if _, exists := readFile(t, db); exists {
				t.Errorf("%q: database created although the password was refused", tc.content)
			}
			continue
		}
		r.want(t, 0)
		checkLogin(t, db, name, tc.password, true)
		if tc.content != tc.password {
			checkLogin(t, db, name, tc.content, false)
		}
	}
}

func TestPasswordFileInsecureWarning(t *testing.T) {
	f := newFixture(t)
	pw := writeFile(t, f.path("shared.pw"), "secret\n", 0o644)
	r := run(t, "", "user", "add", "--db", f.path("db"), "--name", "a", "--role", "pilot", "--pubkey", f.pub("alice"), "--password-file", pw)
	r.want(t, 0)
	if !strings.Contains(r.stderr, "dronelink: warning: "+pw+" is accessible by group/others") {
		t.Errorf("no warning: %q", r.stderr)
	}
}

func TestUserPasswd(t *testing.T) {
	f := newFixture(t)
	db := f.path("users.json")
	addUser(t, f, db, "alice", "pilot", "alice")
	r := run(t, "brand new\n", "user", "passwd", "--db", db, "--name", "alice", "--password-stdin")
	r.want(t, 0)
	if r.stdout != "changed the password of user alice\n" {
		t.Errorf("stdout %q", r.stdout)
	}
	checkLogin(t, db, "alice", "brand new", true)
	checkLogin(t, db, "alice", "alice secret", false)

	before, _ := readFile(t, db)
	run(t, "x\n", "user", "passwd", "--db", db, "--name", "nobody", "--password-stdin").want(t, 1, "no such user nobody")
	run(t, "", "user", "passwd", "--db", db, "--name", "alice").want(t, 2, "no password")
	if after, _ := readFile(t, db); after != before {
		t.Fatal("a failed passwd changed the database")
	}
}

func TestUserKeysAndRole(t *testing.T) {
	f := newFixture(t)
	db := f.path("users.json")
	addUser(t, f, db, "alice", "pilot", "alice")
	addUser(t, f, db, "olga", "observer", "olga")
	aliceFP := crypto.Fingerprint(&keys(t)["alice"].PublicKey)
	malloryFP := crypto.Fingerprint(&keys(t)["mallory"].PublicKey)

	r := run(t, "", "user", "key", "add", "--db", db, "--name", "alice", "--pubkey", f.pub("mallory"))
	r.want(t, 0)
	if r.stdout != "added key "+malloryFP+" to user alice\n" {
		t.Errorf("stdout %q", r.stdout)
	}
	run(t, "", "user", "key", "add", "--db", db, "--name", "alice", "--pubkey", f.pub("olga")).want(t, 1, "already authorised for user \"olga\"")
	run(t, "", "user", "key", "add", "--db", db, "--name", "nobody", "--pubkey", f.pub("stranger")).want(t, 1, "no such user")

	run(t, "", "user", "key", "del", "--db", db, "--name", "alice", "--fingerprint", aliceFP).want(t, 0)
	d, _ := userdb.Load(db)
	if u, _ := d.User("alice"); len(u.Fingerprints) != 1 || u.Fingerprints[0] != malloryFP {
		t.Fatalf("alice's keys after del: %v", u.Fingerprints)
	}
	before, _ := readFile(t, db)
	run(t, "", "user", "key", "del", "--db", db, "--name", "alice", "--pubkey", f.pub("mallory")).want(t, 1, "last key")
	run(t, "", "user", "key", "del", "--db", db, "--name", "alice", "--fingerprint", "SHA256:nope").want(t, 1, "no such key")
	run(t, "", "user", "key", "del", "--db", db, "--name", "alice").want(t, 2, "pubkey", "fingerprint")
	if after, _ := readFile(t, db); after != before {
		t.Fatal("a failed key del changed the database")
	}

	r = run(t, "", "user", "role", "--db", db, "--name", "olga", "--role", "pilot")
	r.want(t, 0)
	if r.stdout != "user olga is now pilot\n" {
		t.Errorf("stdout %q", r.stdout)
	}
	d, _ = userdb.Load(db)
	if u, _ := d.User("olga"); u.Role != link.RolePilot {
		t.Errorf("olga's role %v", u.Role)
	}
	run(t, "", "user", "role", "--db", db, "--name", "olga", "--role", "god").want(t, 2, "bad role")
}

func TestUserMissingDatabase(t *testing.T) {
	f := newFixture(t)
	db := f.path("missing.json")
	for _, args := range [][]string{
		{"user", "list", "--db", db},
		{"user", "del", "--db", db, "--name", "alice"},
		{"user", "passwd", "--db", db, "--name", "alice", "--password-file", f.path("alice.pw")},
		{"user", "key", "add", "--db", db, "--name", "alice", "--pubkey", f.pub("alice")},
		{"user", "key", "del", "--db", db, "--name", "alice", "--fingerprint", "SHA256:x"},
		{"user", "role", "--db", db, "--name", "alice", "--role", "pilot"},
	} {
		run(t, "", args...).want(t, 1, "user database "+db+" does not exist")
		for _, p := range []string{db, db + ".lock"} {
			if _, err := os.Stat(p); err == nil {
				t.Fatalf("%v created %s", args, p)
			}
		}
	}
}

func TestUserCorruptDatabase(t *testing.T) {
	f := newFixture(t)
	db := writeFile(t, f.path("users.json"), "this is not a user database\x00\xff", 0o600)
	for _, args := range [][]string{
		{"user", "list", "--db", db},
		{"user", "add", "--db", db, "--name", "bob", "--role", "pilot", "--pubkey", f.pub("alice"), "--password-file", f.path("alice.pw")},
		{"user", "del", "--db", db, "--name", "alice"},
		{"user", "passwd", "--db", db, "--name", "alice", "--password-file", f.path("alice.pw")},
		{"user", "key", "add", "--db", db, "--name", "alice", "--pubkey", f.pub("olga")},
		{"user", "role", "--db", db, "--name", "alice", "--role", "observer"},
	} {
		r := run(t, "", args...)
		r.want(t, 1, db, "corrupt user database")
		if got, _ := readFile(t, db); got != "this is not a user database\x00\xff" {
			t.Fatalf("%v changed the corrupt file", args)
		}
	}
}

// TestUserAddUsesDefaultParams checks that real runs hash with userdb.DefaultParams (the
// other tests use cheap parameters).
func TestUserAddUsesDefaultParams(t *testing.T) {
	f := newFixture(t)
	db := f.path("users.json")
	r := runCtx(t, t.Context(), func(a *app) { a.hashParams = newApp(nil, nil, nil).hashParams }, "",
		"user", "add", "--db", db, "--name", "alice", "--role", "pilot", "--pubkey", f.pub("alice"), "--password-file", f.path("alice.pw"))
	r.want(t, 0)
	data, _ := readFile(t, db)
	p := userdb.DefaultParams
	want := fmt.Sprintf("$argon2id$v=19$m=%d,t=%d,p=%d$", p.MemoryKiB, p.Time, p.Threads)
	if !strings.Contains(data, want) {
		t.Errorf("database does not use the default parameters %s", want)
	}
}
