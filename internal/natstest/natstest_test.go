package natstest

import (
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
