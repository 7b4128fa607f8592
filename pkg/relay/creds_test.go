package relay

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nats-io/nkeys"

	"github.com/dronelink/dronelink/pkg/crypto"
)

// testSeed is a fresh NKey user seed.
func testSeed(t testing.TB) string {
	t.Helper()
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	seed, err := kp.Seed()
	if err != nil {
		t.Fatal(err)
	}
	return string(seed)
}

func TestParseCreds(t *testing.T) {
	seed := testSeed(t)
	account, _ := nkeys.CreateAccount()
	accountSeed, _ := account.Seed()
	for _, tc := range []struct {
		name, in       string
		method, opName string
		err            string
	}{
		{"user", "user = \"alice\"\npassword = \"s3cret\"\n", "user", "alice", ""},
		{"user with a name", "user = \"alice\"\npassword = \"s3cret\"\nname = \"ops-1\"\n", "user", "ops-1", ""},
		{"token", "token = \"s3cret\"\n", "token", "anonymous", ""},
		{"token with a name", "token = \"s3cret\"\nname = \"bob\"\n", "token", "bob", ""},
		{"nkey", fmt.Sprintf("nkey_seed = %q\nname = \"alice\"\n", seed), "nkey", "alice", ""},
		{"empty", "", "", "", "want exactly one of"},
		{"two methods", "token = \"s3cret\"\nuser = \"a\"\npassword = \"b\"\n", "", "", "want exactly one of"},
		{"user without password", "user = \"alice\"\n", "", "", "user and password go together"},
		{"password without user", "password = \"s3cret\"\n", "", "", "user and password go together"},
		{"unknown key", "token = \"s3cret\"\nservers = \"x\"\n", "", "", "unknown key servers"},
		{"not TOML", "token = s3cret\n", "", "", "not valid TOML (line 1)"},
		{"wrong type", "token = 42\n", "", "", "wrong type"},
		{"bad seed", "nkey_seed = \"SUs3cret\"\n", "", "", "not an NKey seed"},
		{"account seed", fmt.Sprintf("nkey_seed = %q\n", accountSeed), "", "", "not an NKey user seed"},
		{"bad name", "token = \"s3cret\"\nname = \"a.b\"\n", "", "", "name \"a.b\" may hold only"},
		{"bad user", "user = \"a*\"\npassword = \"s3cret\"\n", "", "", "downlink subject's name"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := ParseCreds([]byte(tc.in))
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("ParseCreds: %v, want an error saying %q", err, tc.err)
				}
				if strings.Contains(err.Error(), "s3cret") || strings.Contains(err.Error(), seed[:10]) {
					t.Errorf("the error quotes a secret: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.Method() != tc.method || c.OperatorName() != tc.opName {
				t.Errorf("method %q name %q, want %q %q", c.Method(), c.OperatorName(), tc.method, tc.opName)
			}
			if _, err := c.options(); err != nil {
				t.Errorf("options: %v", err)
			}
			var logged strings.Builder
			slog.New(slog.NewTextHandler(&logged, nil)).Info("creds", "creds", c)
			for _, shown := range []string{c.String(), fmt.Sprintf("%v %+v %#v %s", c, c, c, c), logged.String()} {
				if strings.Contains(shown, "s3cret") || strings.Contains(shown, seed[:10]) {
					t.Errorf("a secret is shown: %s", shown)
				}
			}
		})
	}
	var none *Creds
	if none.Method() != "none" || none.OperatorName() != "anonymous" {
		t.Errorf("nil creds: %q %q", none.Method(), none.OperatorName())
	}
}

func TestLoadCreds(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.creds")
	if err := os.WriteFile(good, []byte("token = \"s3cret\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if c, err := LoadCreds(good); err != nil || c.Token != "s3cret" {
		t.Fatalf("LoadCreds: %+v, %v", c, err)
	}
	open := filepath.Join(dir, "open.creds")
	if err := os.WriteFile(open, []byte("token = \"s3cret\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var insecure *crypto.InsecureFileError
	if _, err := LoadCreds(open); !errors.As(err, &insecure) || !strings.Contains(err.Error(), "chmod 600") {
		t.Errorf("an open credentials file: %v, want an InsecureFileError", err)
	}
	if _, err := LoadCreds(filepath.Join(dir, "missing")); err == nil || !strings.Contains(err.Error(), "credentials file") {
		t.Errorf("a missing file: %v", err)
	}
	bad := filepath.Join(dir, "bad.creds")
	if err := os.WriteFile(bad, []byte("token = s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadCreds(bad); err == nil || !strings.Contains(err.Error(), bad) || strings.Contains(err.Error(), "s3cret") {
		t.Errorf("a garbled file: %v, want an error naming the file and not the secret", err)
	}
}
