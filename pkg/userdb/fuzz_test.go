package userdb

import (
	"bytes"
	"errors"
	"reflect"
	"strings"
	"testing"
)

// FuzzParse checks that Parse never panics, that its errors wrap ErrCorrupt
// and are one line, and that whatever it accepts survives Marshal and Parse
// unchanged. Seeds are in testdata/fuzz/FuzzParse (see TestGenerateTestdata).
func FuzzParse(f *testing.F) {
	f.Add([]byte(`{"version":1,"users":[]}`))
	f.Add([]byte(`{"version":1}`))
	f.Add([]byte(`{"version":1,"users":[{"name":"a","role":"pilot","password":"$argon2id$v=19$m=64,t=1,p=1$MDEyMzQ1Njc4OWFiY2RlZg$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA","keys":[]}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		db, err := Parse(data)
		if err != nil {
			if db != nil {
				t.Fatal("Parse returned a database and an error")
			}
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error %q does not wrap ErrCorrupt", err)
			}
			if strings.ContainsAny(err.Error(), "\r\n") {
				t.Fatalf("error %q is not one line", err)
			}
			return
		}
		out, err := db.Marshal()
		if err != nil {
			t.Fatalf("Marshal of a parsed database: %v", err)
		}
		db2, err := Parse(out)
		if err != nil {
			t.Fatalf("Parse(Marshal(db)): %v\n%s", err, out)
		}
		if !reflect.DeepEqual(db.Users(), db2.Users()) {
			t.Fatalf("Users changed in the round trip:\n%+v\n%+v", db.Users(), db2.Users())
		}
		out2, err := db2.Marshal()
		if err != nil || !bytes.Equal(out, out2) {
			t.Fatalf("Marshal not stable: %v", err)
		}
		for _, u := range db.Users() {
			a, _ := db.User(u.Name)
			b, _ := db2.User(u.Name)
			if a.passwordHash != b.passwordHash {
				t.Fatalf("password hash of %q changed in the round trip", u.Name)
			}
		}
	})
}
