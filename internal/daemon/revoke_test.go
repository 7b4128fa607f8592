package daemon

import (
	"testing"

	"github.com/dronelink/dronelink/pkg/crypto"
	"github.com/dronelink/dronelink/pkg/link"
	"github.com/dronelink/dronelink/pkg/userdb"
)

// After a reload, a DTLS session (no operator key) is revoked when its user is gone or
// its role changed; one not logged in yet is left to its login check. Native sessions are
// also revoked when their key is no longer authorised for the user.
func TestRevokedBy(t *testing.T) {
	key, err := crypto.GenerateRSAKey(nil, 2048)
	if err != nil {
		t.Fatal(err)
	}
	hash, err := userdb.HashPassword([]byte("pw"), userdb.Params{Time: 1, MemoryKiB: 64, Threads: 1, SaltLen: 16, KeyLen: 32})
	if err != nil {
		t.Fatal(err)
	}
	db, err := userdb.Empty().WithUser("alice", link.RolePilot, hash, &key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	id := crypto.KeyIDOf(&key.PublicKey)
	for _, tc := range []struct {
		transport string
		info      link.SessionInfo
		revoked   bool
	}{
		{TransportDTLS, link.SessionInfo{User: "alice", Role: link.RolePilot}, false},
		{TransportDTLS, link.SessionInfo{User: "alice", Role: link.RoleObserver}, true},
		{TransportDTLS, link.SessionInfo{User: "olga", Role: link.RoleObserver}, true},
		{TransportDTLS, link.SessionInfo{}, false},
		{TransportNative, link.SessionInfo{User: "alice", Role: link.RolePilot, OperatorKey: id}, false},
		{TransportNative, link.SessionInfo{User: "alice", Role: link.RolePilot}, true},
		{TransportNative, link.SessionInfo{OperatorKey: id}, false},
		{TransportNative, link.SessionInfo{}, true},
	} {
		if got := revokedBy(db, tc.transport)(tc.info); got != tc.revoked {
			t.Errorf("%s %+v: revoked %v, want %v", tc.transport, tc.info, got, tc.revoked)
		}
	}
}
