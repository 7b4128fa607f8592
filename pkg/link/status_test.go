package link

import (
	"testing"
	"time"

	"github.com/dronelink/dronelink/pkg/crypto"
)

// A session counts what it sealed and what it accepted; the gaps in the accepted
// counters are the loss estimate, and replays count for nothing.
func TestSessionTrafficAndLoss(t *testing.T) {
	for _, tc := range []struct {
		name    string
		sent    int
		deliver []int // indices of the sealed datagrams, in arrival order (repeats allowed)
		lost    uint64
	}{
		{"nothing", 0, nil, 0},
		{"all in order", 5, []int{0, 1, 2, 3, 4}, 0},
		{"reordered", 5, []int{4, 0, 3, 1, 2}, 0},
		{"one lost in the middle", 5, []int{0, 1, 3, 4}, 1},
		{"the last ones not arrived yet", 5, []int{0, 1, 2}, 0},
		{"duplicates count once", 4, []int{0, 0, 1, 1, 3, 3}, 1},
		{"late arrival closes the gap", 5, []int{0, 2, 3, 4, 1}, 0},
		{"only the newest", 10, []int{9}, 9},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, b := sessionPair(t, 0)
			pkts := make([][]byte, tc.sent)
			var sentBytes uint64
			for i := range pkts {
				pkt, err := a.Seal(nil, []byte("payload"), time.Now())
				if err != nil {
					t.Fatal(err)
				}
				pkts[i] = pkt
				sentBytes += uint64(len(pkt))
			}
			var recvBytes, accepted uint64
			for _, i := range tc.deliver {
				if _, err := open(b, pkts[i]); err == nil {
					accepted++
					recvBytes += uint64(len(pkts[i]))
				}
			}
			if got := a.Traffic(); got.SentPackets != uint64(tc.sent) || got.SentBytes != sentBytes || got.ReceivedPackets != 0 {
				t.Errorf("sender: %+v, want %d datagrams, %d bytes sent, none received", got, tc.sent, sentBytes)
			}
			got := b.Traffic()
			want := Traffic{ReceivedPackets: accepted, ReceivedBytes: recvBytes, LostPackets: tc.lost}
			if got != want {
				t.Errorf("receiver: %+v, want %+v", got, want)
			}
			if wantLoss := float64(tc.lost) / float64(max(tc.lost+accepted, 1)); got.Loss() != wantLoss {
				t.Errorf("loss %v, want %v", got.Loss(), wantLoss)
			}
		})
	}
}

// The drone lists a logged-in operator's session with its user, role, key, address,
// handshake round trip and traffic; the operator sees the same session from its side.
func TestServerSessionStatus(t *testing.T) {
	f := newFakeRig(t, nil)
	alice, err := f.client(t, "alice", aliceAddr, nil)
	if err != nil {
		t.Fatal(err)
	}
	if ack := command(t, alice, "status please"); ack.Status != AckOK {
		t.Fatalf("command: %v", ack.Status)
	}
	list := f.server.SessionStatus()
	if len(list) != 1 {
		t.Fatalf("%d sessions listed, want 1: %+v", len(list), list)
	}
	s := list[0]
	switch {
	case s.User != "alice" || s.Role != RolePilot:
		t.Errorf("user %q role %v, want alice pilot", s.User, s.Role)
	case s.KeyName != crypto.Fingerprint(&testOp1.PublicKey):
		t.Errorf("key %q, want alice's fingerprint", s.KeyName)
	case s.Peer != aliceAddr:
		t.Errorf("peer %v, want %v", s.Peer, aliceAddr)
	case s.State != StateActive:
		t.Errorf("state %q, want active", s.State)
	case s.RTT <= 0:
		t.Errorf("no round trip measured")
	case s.Since.IsZero() || !s.Created.Equal(s.Since):
		t.Errorf("since %v, handshake %v: want the same, before any rekey", s.Since, s.Created)
	case s.LastReceived.Before(s.Since):
		t.Errorf("last received %v before the session %v", s.LastReceived, s.Since)
	}
	// keepalive, login, command at least; login result and ack at least.
	if tr := s.Traffic; tr.ReceivedPackets < 3 || tr.SentPackets < 2 || tr.ReceivedBytes < tr.ReceivedPackets*DataOverhead ||
		tr.SentBytes < tr.SentPackets*DataOverhead || tr.LostPackets != 0 {
		t.Errorf("traffic %+v", tr)
	}
	ls := alice.LinkStatus()
	switch {
	case ls.Drone != droneAddr || ls.Session != s.LocalIndex:
		t.Errorf("operator's link: drone %v session %d, want %v %d", ls.Drone, ls.Session, droneAddr, s.LocalIndex)
	case ls.RTT <= 0 || ls.Since.IsZero() || ls.Rekeys != 0:
		t.Errorf("operator's link: %+v", ls)
	case ls.Traffic.SentPackets < 3 || ls.Traffic.ReceivedPackets < 2 || ls.Traffic.LostPackets != 0:
		t.Errorf("operator's traffic %+v", ls.Traffic)
	}
}

// A rekey continues the session in the status: one entry, the same start, traffic that
// never goes down, also once the replaced session is gone.
func TestSessionStatusAcrossRekey(t *testing.T) {
	f := newFakeRig(t, nil)
	alice, err := f.client(t, "alice", aliceAddr, func(c *ClientConfig) { c.RekeyAfterTime = 300 * time.Millisecond })
	if err != nil {
		t.Fatal(err)
	}
	command(t, alice, "before")
	first := f.server.SessionStatus()
	if len(first) != 1 {
		t.Fatalf("%d sessions before the rekey, want 1", len(first))
	}
	waitFor(t, "a confirmed rekey", func() bool {
		l := f.server.SessionStatus()
		return len(l) == 1 && l[0].LocalIndex != first[0].LocalIndex
	})
	command(t, alice, "after")
	f.server.mu.Lock()
	for _, ss := range f.server.sessions {
		if ss != nil && ss.local == first[0].LocalIndex {
			f.server.removeLocked(ss.local) // as when its grace period ends
		}
	}
	f.server.mu.Unlock()
	list := f.server.SessionStatus()
	if len(list) != 1 {
		t.Fatalf("%d sessions after the rekey, want 1", len(list))
	}
	second := list[0]
	switch {
	case !second.Since.Equal(first[0].Since):
		t.Errorf("since %v after the rekey, want %v", second.Since, first[0].Since)
	case !second.Created.After(first[0].Created):
		t.Errorf("last handshake %v, want after %v", second.Created, first[0].Created)
	case second.User != "alice" || second.RTT <= 0:
		t.Errorf("after the rekey: %+v", second)
	case second.Traffic.ReceivedPackets <= first[0].Traffic.ReceivedPackets ||
		second.Traffic.SentPackets <= first[0].Traffic.SentPackets ||
		second.Traffic.ReceivedBytes <= first[0].Traffic.ReceivedBytes:
		t.Errorf("traffic %+v after the rekey, %+v before: it must add up", second.Traffic, first[0].Traffic)
	}
	ls := alice.LinkStatus()
	if ls.Rekeys < 1 || !ls.Since.Before(ls.Handshake) {
		t.Errorf("operator's link after a rekey: %+v", ls)
	}
}
