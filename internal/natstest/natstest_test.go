package natstest

import (
	"os"
	"strings"
	"testing"
)

// TestCheckAuth: StartCluster refuses auth text that sets what it sets for each node, with
// a message naming it, and takes accounts and limits.
func TestCheckAuth(t *testing.T) {
	for _, tc := range []struct {
		name, auth, refused string
	}{
		{"none", "", ""},
		{"accounts and limits", "max_payload: 4KB\naccounts { A { users = [ {user: a, password: b} ] } }\n", ""},
		{"listen", "listen: 127.0.0.1:-1\n", "listen"},
		{"port", "port: 4222\n", "listen"},
		{"server name", "server_name: x\n", "server_name"},
		{"monitor", "http: 127.0.0.1:8222\n", "http"},
		{"cluster", "cluster { name: x, listen: 127.0.0.1:6222 }\n", "cluster"},
		{"two", "listen: 0.0.0.0:4222\nserver_name: relay-1\n", "listen, server_name"},
		{"not a config", "accounts {", "auth text"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := checkAuth(t.TempDir(), tc.auth)
			switch {
			case tc.refused == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.refused != "" && err == nil:
				t.Fatalf("taken, want a refusal naming %s", tc.refused)
			case tc.refused != "" && !strings.Contains(err.Error(), tc.refused):
				t.Fatalf("%v, want it to name %s", err, tc.refused)
			}
		})
	}
}

// TestBuildServerAfterRemoval: a second BuildServer, after the directory of the first was
// removed (a test's t.TempDir() is, when the test ends), returns a binary that exists.
func TestBuildServerAfterRemoval(t *testing.T) {
	if testing.Short() {
		t.Skip("builds nats-server")
	}
	first, err := os.MkdirTemp("", "natstest-")
	if err != nil {
		t.Fatal(err)
	}
	_, err = BuildServer(first)
	os.RemoveAll(first)
	if err != nil {
		t.Fatal(err)
	}
	bin, err := BuildServer(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("BuildServer returned %s, which does not exist: %v", bin, err)
	}
}
