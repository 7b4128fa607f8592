package userdb

import (
	"bytes"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/dronelink/dronelink/pkg/crypto"
	"github.com/dronelink/dronelink/pkg/link"
)

// fileJSON encodes users as a version 1 database file.
func fileJSON(tb testing.TB, users ...fileUser) []byte {
	tb.Helper()
	v := 1
	b, err := json.Marshal(fileDB{Version: &v, Users: users})
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

func TestLogin(t *testing.T) {
	keys := testKeys(t)
	db := testDB(t)
	id := crypto.KeyIDOf
	cases := []struct {
		name       string
		user, pw   string
		key        crypto.KeyID
		wantRole   link.Role
		wantStatus link.LoginStatus
	}{
		{"ok pilot", "alice", alicePW, id(keys[0]), link.RolePilot, link.LoginOK},
		{"ok observer first key", "bob", bobPW, id(keys[1]), link.RoleObserver, link.LoginOK},
		{"ok observer second key", "bob", bobPW, id(keys[2]), link.RoleObserver, link.LoginOK},
		{"unknown user", "carol", alicePW, id(keys[0]), link.RoleNone, link.LoginUnknownUser},
		{"empty user", "", "", id(keys[0]), link.RoleNone, link.LoginUnknownUser},
		{"user name case matters", "Alice", alicePW, id(keys[0]), link.RoleNone, link.LoginUnknownUser},
		{"wrong password", "alice", bobPW, id(keys[0]), link.RoleNone, link.LoginWrongPassword},
		{"empty password", "alice", "", id(keys[0]), link.RoleNone, link.LoginWrongPassword},
		{"other user's key, password right", "alice", alicePW, id(keys[1]), link.RoleNone, link.LoginKeyNotAuthorised},
		{"unbound key, password right", "alice", alicePW, id(keys[3]), link.RoleNone, link.LoginKeyNotAuthorised},
		{"zero key id, password right", "bob", bobPW, crypto.KeyID{}, link.RoleNone, link.LoginKeyNotAuthorised},
		{"other user's key, password wrong", "alice", "nope", id(keys[1]), link.RoleNone, link.LoginKeyNotAuthorised},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			role, status := db.Login(c.user, []byte(c.pw), c.key)
			if role != c.wantRole || status != c.wantStatus {
				t.Errorf("Login(%q) = %v, %v; want %v, %v", c.user, role, status, c.wantRole, c.wantStatus)
			}
		})
	}
}

func TestLoginInternal(t *testing.T) {
	// Parse and WithUser refuse bad hashes, so build the record directly.
	k, err := newKeyRec(testKeys(t)[0])
	if err != nil {
		t.Fatal(err)
	}
	db, err := build([]*record{{name: "x", role: link.RolePilot, hash: "$argon2id$v=19$m=1,t=1,p=1$AAAA$AAAA", keys: []keyRec{k}}})
	if err != nil {
		t.Fatal(err)
	}
	if role, st := db.Login("x", []byte("pw"), k.id); role != link.RoleNone || st != link.LoginInternal {
		t.Errorf("Login with unusable hash = %v, %v; want none, error", role, st)
	}
}

// CheckPassword is Login without the key: the DTLS-PSK transport's password check.
func TestCheckPassword(t *testing.T) {
	db := testDB(t)
	for _, c := range []struct {
		name       string
		user, pw   string
		wantRole   link.Role
		wantStatus link.LoginStatus
	}{
		{"ok pilot", "alice", alicePW, link.RolePilot, link.LoginOK},
		{"ok observer", "bob", bobPW, link.RoleObserver, link.LoginOK},
		{"unknown user", "carol", alicePW, link.RoleNone, link.LoginUnknownUser},
		{"empty user", "", "", link.RoleNone, link.LoginUnknownUser},
		{"user name case matters", "Alice", alicePW, link.RoleNone, link.LoginUnknownUser},
		{"wrong password", "alice", bobPW, link.RoleNone, link.LoginWrongPassword},
		{"empty password", "alice", "", link.RoleNone, link.LoginWrongPassword},
	} {
		t.Run(c.name, func(t *testing.T) {
			role, status := db.CheckPassword(c.user, []byte(c.pw))
			if role != c.wantRole || status != c.wantStatus {
				t.Errorf("CheckPassword(%q) = %v, %v; want %v, %v", c.user, role, status, c.wantRole, c.wantStatus)
			}
		})
	}
}

func TestCheckPasswordInternal(t *testing.T) {
	k, err := newKeyRec(testKeys(t)[0])
	if err != nil {
		t.Fatal(err)
	}
	db, err := build([]*record{{name: "x", role: link.RolePilot, hash: "$argon2id$v=19$m=1,t=1,p=1$AAAA$AAAA", keys: []keyRec{k}}})
	if err != nil {
		t.Fatal(err)
	}
	if role, st := db.CheckPassword("x", []byte("pw")); role != link.RoleNone || st != link.LoginInternal {
		t.Errorf("CheckPassword with unusable hash = %v, %v; want none, error", role, st)
	}
}

func TestKeyQueries(t *testing.T) {
	keys := testKeys(t)
	db := testDB(t)
	for i, owner := range []string{"alice", "bob", "bob", ""} {
		id := crypto.KeyIDOf(keys[i])
		pub, ok := db.LookupKey(id)
		if ok != (owner != "") || db.HasKey(id) != ok {
			t.Errorf("key %d: LookupKey ok = %v, HasKey = %v; want %v", i, ok, db.HasKey(id), owner != "")
		}
		if ok && !pub.Equal(keys[i]) {
			t.Errorf("key %d: LookupKey returned another key", i)
		}
		for _, u := range []string{"alice", "bob", "carol"} {
			if got := db.KeyAuthorisedFor(u, id); got != (u == owner) {
				t.Errorf("KeyAuthorisedFor(%s, key %d) = %v", u, i, got)
			}
		}
	}
	if db.Len() != 2 || Empty().Len() != 0 {
		t.Errorf("Len = %d, Empty().Len = %d", db.Len(), Empty().Len())
	}
	u, ok := db.User("bob")
	if !ok || u.Name != "bob" || u.Role != link.RoleObserver || len(u.Keys) != 2 ||
		u.Fingerprints[1] != crypto.Fingerprint(keys[2]) || !u.Keys[1].Equal(keys[2]) {
		t.Errorf("User(bob) = %+v, %v", u, ok)
	}
	if ok, err := u.CheckPassword([]byte(bobPW)); !ok || err != nil {
		t.Errorf("CheckPassword = %v, %v", ok, err)
	}
	if _, ok := db.User("carol"); ok {
		t.Error("User(carol) found")
	}
	want := []UserInfo{
		{Name: "alice", Role: link.RolePilot, Fingerprints: []string{crypto.Fingerprint(keys[0])}},
		{Name: "bob", Role: link.RoleObserver, Fingerprints: []string{crypto.Fingerprint(keys[1]), crypto.Fingerprint(keys[2])}},
	}
	if got := db.Users(); !reflect.DeepEqual(got, want) {
		t.Errorf("Users() = %+v\nwant %+v", got, want)
	}
}

func TestParseMarshalRoundTrip(t *testing.T) {
	keys := testKeys(t)
	// Users added out of order must come out sorted.
	db, err := Empty().WithUser("zed", link.RoleObserver, mustHash(t, "z"), keys[3])
	if err != nil {
		t.Fatal(err)
	}
	db, err = db.WithUser("Bob", link.RolePilot, mustHash(t, "b"), keys[2], keys[0])
	if err != nil {
		t.Fatal(err)
	}
	db, err = db.WithUser("al.ice_1-x", link.RolePilot, mustHash(t, "a"), keys[1])
	if err != nil {
		t.Fatal(err)
	}
	data, err := db.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasSuffix(data, []byte("}\n")) {
		t.Error("Marshal output lacks the trailing newline")
	}
	if a, b, z := bytes.Index(data, []byte(`"Bob"`)), bytes.Index(data, []byte(`"al.ice_1-x"`)), bytes.Index(data, []byte(`"zed"`)); !(a < b && b < z) {
		t.Errorf("users not sorted by name in:\n%s", data)
	}
	if !bytes.Contains(data, []byte(`"version": 1`)) || !bytes.Contains(data, []byte(`-----BEGIN PUBLIC KEY-----\n`)) {
		t.Errorf("unexpected format:\n%s", data)
	}
	db2, err := Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(db.Users(), db2.Users()) {
		t.Errorf("Users differ after round trip:\n%+v\n%+v", db.Users(), db2.Users())
	}
	data2, _ := db2.Marshal()
	if !bytes.Equal(data, data2) {
		t.Errorf("Marshal not deterministic:\n%s\n%s", data, data2)
	}
	// Keys keep their order (Bob: key 2 then key 0); hashes survive.
	if u, _ := db2.User("Bob"); u.Fingerprints[0] != crypto.Fingerprint(keys[2]) {
		t.Error("key order not preserved")
	}
	if role, st := db2.Login("zed", []byte("z"), crypto.KeyIDOf(keys[3])); st != link.LoginOK || role != link.RoleObserver {
		t.Errorf("login after round trip: %v %v", role, st)
	}

	// Empty database.
	e, _ := Empty().Marshal()
	if string(e) != "{\n  \"version\": 1,\n  \"users\": []\n}\n" {
		t.Errorf("empty database marshals to %q", e)
	}
	if db3, err := Parse(e); err != nil || db3.Len() != 0 {
		t.Errorf("Parse(empty) = %v, %v", db3, err)
	}
}

// Hand-written files: the fingerprint may be omitted, PKCS#1 PEM is
// accepted, and both are canonicalised when the file is rewritten.
func TestParseLenientKeyForms(t *testing.T) {
	keys := testKeys(t)
	pkcs1 := string(pem.EncodeToMemory(&pem.Block{Type: "RSA PUBLIC KEY", Bytes: x509.MarshalPKCS1PublicKey(keys[1])}))
	data := fileJSON(t, fileUser{Name: "carol", Role: "observer", Password: mustHash(t, "c"),
		Keys: []fileKey{{PEM: pemOf(t, keys[0])}, {Fingerprint: crypto.Fingerprint(keys[1]), PEM: pkcs1}}})
	db, err := Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	out, _ := db.Marshal()
	if bytes.Contains(out, []byte("RSA PUBLIC KEY")) || !bytes.Contains(out, []byte(crypto.Fingerprint(keys[0]))) {
		t.Errorf("not canonicalised:\n%s", out)
	}
	if !db.KeyAuthorisedFor("carol", crypto.KeyIDOf(keys[1])) {
		t.Error("PKCS#1 key not authorised")
	}
}

func TestParseCorrupt(t *testing.T) {
	keys := testKeys(t)
	hash := mustHash(t, "pw")
	p := func(k *rsa.PublicKey) string { return pemOf(t, k) }
	key := func(k *rsa.PublicKey) []fileKey { return []fileKey{{Fingerprint: crypto.Fingerprint(k), PEM: p(k)}} }
	user := func(name string, k *rsa.PublicKey) fileUser {
		return fileUser{Name: name, Role: "pilot", Password: hash, Keys: key(k)}
	}
	with := func(f func(*fileUser)) []byte {
		u := user("alice", keys[0])
		f(&u)
		return fileJSON(t, u)
	}
	small := fakeKey(1024)
	smallDER, _ := x509.MarshalPKIXPublicKey(small)
	smallPEM := string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: smallDER}))
	valid := fileJSON(t, user("alice", keys[0]))
	if _, err := Parse(valid); err != nil {
		t.Fatalf("control case: %v", err)
	}

	cases := map[string]struct {
		data []byte
		also error  // a second sentinel the error must wrap
		says string // the error must mention this
	}{
		"empty file":             {[]byte(""), nil, "empty"},
		"not JSON":               {[]byte("alice:pilot:" + hash), nil, "JSON"},
		"JSON array":             {[]byte(`[]`), nil, "wrong type"},
		"truncated":              {valid[:len(valid)/2], nil, "JSON"},
		"trailing data":          {append(append([]byte{}, valid...), `{}`...), nil, "after"},
		"wrong version":          {[]byte(`{"version":2,"users":[]}`), nil, "version 2"},
		"version as string":      {[]byte(`{"version":"1","users":[]}`), nil, "version"},
		"missing version":        {[]byte(`{"users":[]}`), nil, "version"},
		"unknown field":          {[]byte(`{"version":1,"users":[],"admins":[]}`), nil, "admins"},
		"keys null":              {with(func(u *fileUser) { u.Keys = nil }), ErrNoKeys, "alice"},
		"missing name":           {with(func(u *fileUser) { u.Name = "" }), ErrBadName, "user 1"},
		"name with space":        {with(func(u *fileUser) { u.Name = "al ice" }), ErrBadName, "al ice"},
		"name too long":          {with(func(u *fileUser) { u.Name = strings.Repeat("a", 65) }), ErrBadName, "user 1"},
		"name non-ASCII":         {with(func(u *fileUser) { u.Name = "alicé" }), ErrBadName, "user 1"},
		"hash in name field":     {with(func(u *fileUser) { u.Name = hash }), ErrBadName, "hidden"},
		"bad role":               {with(func(u *fileUser) { u.Role = "admin" }), ErrBadRole, "admin"},
		"role none":              {with(func(u *fileUser) { u.Role = "none" }), ErrBadRole, "alice"},
		"hash in role field":     {with(func(u *fileUser) { u.Role = hash }), ErrBadRole, "hidden"},
		"missing password":       {with(func(u *fileUser) { u.Password = "" }), nil, "password"},
		"bad PHC":                {with(func(u *fileUser) { u.Password = strings.Replace(hash, "argon2id", "argon2i", 1) }), ErrBadHash, "argon2i"},
		"PHC huge m":             {with(func(u *fileUser) { u.Password = strings.Replace(hash, "m=64,", "m=4000000,", 1) }), ErrBadHash, "m=4000000"},
		"PHC no hash field":      {with(func(u *fileUser) { u.Password = hash[:strings.LastIndex(hash, "$")] }), ErrBadHash, "alice"},
		"bad PEM":                {with(func(u *fileUser) { u.Keys[0].PEM = "garbage" }), crypto.ErrBadPEM, "key 1"},
		"empty PEM":              {with(func(u *fileUser) { u.Keys[0].PEM = "" }), crypto.ErrBadPEM, "key 1"},
		"small key":              {with(func(u *fileUser) { u.Keys = []fileKey{{PEM: smallPEM}} }), crypto.ErrKeyTooSmall, "1024"},
		"fingerprint mismatch":   {with(func(u *fileUser) { u.Keys[0].Fingerprint = crypto.Fingerprint(keys[1]) }), nil, "fingerprint"},
		"key listed twice":       {with(func(u *fileUser) { u.Keys = append(u.Keys, u.Keys[0]) }), ErrKeyInUse, "twice"},
		"no keys":                {with(func(u *fileUser) { u.Keys = []fileKey{} }), ErrNoKeys, "alice"},
		"duplicate user":         {fileJSON(t, user("alice", keys[0]), user("alice", keys[1])), ErrUserExists, "alice"},
		"key bound to two users": {fileJSON(t, user("alice", keys[0]), user("bob", keys[0])), ErrKeyInUse, "bob"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			db, err := Parse(c.data)
			if err == nil {
				t.Fatalf("Parse succeeded (%d users)", db.Len())
			}
			if !errors.Is(err, ErrCorrupt) {
				t.Errorf("error %q does not wrap ErrCorrupt", err)
			}
			if c.also != nil && !errors.Is(err, c.also) {
				t.Errorf("error %q does not wrap %q", err, c.also)
			}
			msg := err.Error()
			if !strings.Contains(msg, c.says) {
				t.Errorf("error %q does not mention %q", msg, c.says)
			}
			if strings.Contains(msg, hash) || strings.Contains(msg, hash[len(hash)-43:]) {
				t.Errorf("error %q contains the password hash", msg)
			}
			if strings.ContainsAny(msg, "\r\n") {
				t.Errorf("error %q is not one line", msg)
			}
		})
	}
}

func TestEdits(t *testing.T) {
	keys := testKeys(t)
	db := testDB(t)
	before, _ := db.Marshal()
	hash := mustHash(t, "new")

	expectErr := func(what string, got *DB, err error, want error) {
		t.Helper()
		if got != nil || !errors.Is(err, want) {
			t.Errorf("%s = %v, %v; want nil, %v", what, got, err, want)
		}
	}
	d, err := db.WithUser("alice", link.RolePilot, hash, keys[3])
	expectErr("WithUser(existing)", d, err, ErrUserExists)
	d, err = db.WithUser("carol", link.RolePilot, hash, keys[0])
	expectErr("WithUser(alice's key)", d, err, ErrKeyInUse)
	d, err = db.WithUser("carol", link.RolePilot, hash, keys[3], keys[3])
	expectErr("WithUser(key twice)", d, err, ErrKeyInUse)
	for _, bad := range []string{"", "a b", "a/b", "ünï", strings.Repeat("x", 65), "a\x00"} {
		d, err = db.WithUser(bad, link.RolePilot, hash, keys[3])
		expectErr("WithUser(bad name "+bad+")", d, err, ErrBadName)
	}
	d, err = db.WithUser("carol", link.RoleNone, hash, keys[3])
	expectErr("WithUser(role none)", d, err, ErrBadRole)
	d, err = db.WithUser("carol", link.Role(9), hash, keys[3])
	expectErr("WithUser(role 9)", d, err, ErrBadRole)
	d, err = db.WithUser("carol", link.RolePilot, "plaintext", keys[3])
	expectErr("WithUser(bad hash)", d, err, ErrBadHash)
	if err != nil && strings.Contains(err.Error(), "plaintext") {
		t.Errorf("error %q repeats the password field", err)
	}
	d, err = db.WithUser("carol", link.RolePilot, hash)
	expectErr("WithUser(no keys)", d, err, ErrNoKeys)
	d, err = db.WithUser("carol", link.RolePilot, hash, fakeKey(1024))
	expectErr("WithUser(1024-bit key)", d, err, crypto.ErrKeyTooSmall)
	d, err = db.WithUser("carol", link.RolePilot, hash, fakeKey(8192))
	expectErr("WithUser(8192-bit key)", d, err, crypto.ErrKeyTooLarge)
	d, err = db.WithUser("carol", link.RolePilot, hash, nil)
	expectErr("WithUser(nil key)", d, err, crypto.ErrNotRSAKey)
	// Size boundaries are inclusive.
	if _, err := db.WithUser("carol", link.RolePilot, hash, fakeKey(2048)); err != nil {
		t.Errorf("WithUser(2048-bit key): %v", err)
	}
	if _, err := db.WithUser("carol", link.RolePilot, hash, fakeKey(4096)); err != nil {
		t.Errorf("WithUser(4096-bit key): %v", err)
	}

	d, err = db.WithoutUser("carol")
	expectErr("WithoutUser(unknown)", d, err, ErrNoSuchUser)
	d, err = db.WithPassword("carol", hash)
	expectErr("WithPassword(unknown)", d, err, ErrNoSuchUser)
	d, err = db.WithPassword("alice", "$argon2id$")
	expectErr("WithPassword(bad hash)", d, err, ErrBadHash)
	d, err = db.WithKey("carol", keys[3])
	expectErr("WithKey(unknown user)", d, err, ErrNoSuchUser)
	d, err = db.WithKey("alice", keys[1])
	expectErr("WithKey(bob's key)", d, err, ErrKeyInUse)
	d, err = db.WithKey("alice", keys[0])
	expectErr("WithKey(own key again)", d, err, ErrKeyInUse)
	d, err = db.WithKey("alice", fakeKey(1024))
	expectErr("WithKey(small)", d, err, crypto.ErrKeyTooSmall)
	d, err = db.WithoutKey("alice", crypto.Fingerprint(keys[0]))
	expectErr("WithoutKey(last key)", d, err, ErrNoKeys)
	d, err = db.WithoutKey("alice", crypto.Fingerprint(keys[1]))
	expectErr("WithoutKey(bob's key from alice)", d, err, ErrNoSuchKey)
	d, err = db.WithoutKey("carol", crypto.Fingerprint(keys[1]))
	expectErr("WithoutKey(unknown user)", d, err, ErrNoSuchUser)
	d, err = db.WithRole("alice", link.RoleNone)
	expectErr("WithRole(none)", d, err, ErrBadRole)

	// Successful edits.
	carolKey := crypto.KeyIDOf(keys[3])
	d1, err := db.WithUser("carol", link.RoleObserver, hash, keys[3])
	if err != nil {
		t.Fatal(err)
	}
	if _, st := d1.Login("carol", []byte("new"), carolKey); st != link.LoginOK || d1.Len() != 3 {
		t.Errorf("after WithUser: login %v, Len %d", st, d1.Len())
	}
	d2, err := d1.WithPassword("alice", hash)
	if err != nil {
		t.Fatal(err)
	}
	if _, st := d2.Login("alice", []byte("new"), crypto.KeyIDOf(keys[0])); st != link.LoginOK {
		t.Errorf("after WithPassword: new password: %v", st)
	}
	if _, st := d2.Login("alice", []byte(alicePW), crypto.KeyIDOf(keys[0])); st != link.LoginWrongPassword {
		t.Errorf("after WithPassword: old password: %v", st)
	}
	d3, err := d2.WithoutKey("bob", crypto.Fingerprint(keys[1]))
	if err != nil {
		t.Fatal(err)
	}
	if d3.HasKey(crypto.KeyIDOf(keys[1])) || !d3.KeyAuthorisedFor("bob", crypto.KeyIDOf(keys[2])) {
		t.Error("WithoutKey removed the wrong key")
	}
	d4, err := d3.WithKey("alice", keys[1])
	if err != nil {
		t.Fatal(err)
	}
	if !d4.KeyAuthorisedFor("alice", crypto.KeyIDOf(keys[1])) {
		t.Error("WithKey: key not authorised")
	}
	d5, err := d4.WithoutUser("carol")
	if err != nil {
		t.Fatal(err)
	}
	if d5.HasKey(carolKey) || d5.Len() != 2 {
		t.Error("WithoutUser left the user's key behind")
	}
	d6, err := d5.WithRole("bob", link.RolePilot)
	if err != nil {
		t.Fatal(err)
	}
	if role, _ := d6.Login("bob", []byte(bobPW), crypto.KeyIDOf(keys[2])); role != link.RolePilot {
		t.Errorf("WithRole: role %v", role)
	}
	// A freed key can be reused by another user.
	if _, err := d5.WithUser("dave", link.RolePilot, hash, keys[3]); err != nil {
		t.Errorf("reusing a removed user's key: %v", err)
	}

	// None of this touched the original.
	after, _ := db.Marshal()
	if !bytes.Equal(before, after) {
		t.Error("copy-on-write edits modified the receiver")
	}
	if !db.KeyAuthorisedFor("bob", crypto.KeyIDOf(keys[1])) || db.HasKey(carolKey) {
		t.Error("receiver's key index changed")
	}
	// Intermediate snapshots are unaffected by later edits.
	if !d2.KeyAuthorisedFor("bob", crypto.KeyIDOf(keys[1])) || d3.HasKey(crypto.KeyIDOf(keys[1])) {
		t.Error("snapshot changed by a later edit")
	}
	if u, _ := d3.User("alice"); len(u.Keys) != 1 {
		t.Error("WithKey on d3 changed d3's user")
	}
}

// Many goroutines use one snapshot while others derive new ones from it;
// run with -race.
func TestConcurrentUse(t *testing.T) {
	keys := testKeys(t)
	db := testDB(t)
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			for j := range 5 {
				if _, st := db.Login("alice", []byte(alicePW), crypto.KeyIDOf(keys[0])); st != link.LoginOK {
					t.Errorf("login: %v", st)
				}
				if _, ok := db.LookupKey(crypto.KeyIDOf(keys[1])); !ok {
					t.Error("LookupKey")
				}
				_ = db.Users()
				if i%2 == 0 {
					d, err := db.WithKey("alice", keys[3])
					if err == nil {
						d, err = d.WithoutKey("bob", crypto.Fingerprint(keys[j%2+1]))
					}
					if err != nil || d.Len() != 2 {
						t.Errorf("edit: %v", err)
					}
				}
			}
		})
	}
	wg.Wait()
}

// Authorize answers from the database alone: no password, no argon2.
func TestAuthorize(t *testing.T) {
	keys := testKeys(t)
	db := testDB(t)
	id := crypto.KeyIDOf
	cases := []struct {
		user   string
		key    crypto.KeyID
		role   link.Role
		status link.LoginStatus
	}{
		{"alice", id(keys[0]), link.RolePilot, link.LoginOK},
		{"bob", id(keys[2]), link.RoleObserver, link.LoginOK},
		{"alice", id(keys[1]), link.RoleNone, link.LoginKeyNotAuthorised},
		{"carol", id(keys[0]), link.RoleNone, link.LoginUnknownUser},
	}
	for _, c := range cases {
		role, status := db.Authorize(c.user, c.key)
		if role != c.role || status != c.status {
			t.Errorf("Authorize(%s) = %v %v, want %v %v", c.user, role, status, c.role, c.status)
		}
	}
}
