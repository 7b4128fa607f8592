package link

import (
	"context"
	"testing"
	"time"
)

// initiations builds n fresh initiations from op1, each from its own handshake (its own
// operator index), as n separate operator processes would.
func initiations(t *testing.T, n int) [][]byte {
	t.Helper()
	var out [][]byte
	for i := range n {
		h, err := NewInitiator(InitiatorConfig{PSK: testPSK, OperatorKey: testOp1, DronePublic: &testDrone.PublicKey}, uint16(100+i), 0)
		if err != nil {
			t.Fatal(err)
		}
		p, err := h.Initiation(time.Now())
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, p)
	}
	return out
}

func (f *fakeRig) sessionCount() int { return len(f.server.Sessions()) }

func (f *fakeRig) work() uint64 {
	var n uint64
	for w := range NumHandshakeWork {
		n += f.hooks.Work[w].Load()
	}
	return n
}

// The per-source handshake limiter admits the burst, then refuses before any RSA work.
func TestHandshakeRateLimitPerSource(t *testing.T) {
	f := newFakeRig(t, func(c *ServerConfig) { c.HandshakeRate = 0.001; c.HandshakeBurst = 2 })
	for _, p := range initiations(t, 5) {
		f.inject(t, attackerAddr, p)
	}
	if got := f.hooks.Handshakes[HandshakeOK].Load(); got != 2 {
		t.Errorf("%d handshakes accepted, want the burst of 2", got)
	}
	if got := f.hooks.Drop(DropRateLimited); got != 3 {
		t.Errorf("%d rate_limited drops, want 3", got)
	}
	if got := f.work(); got != 2*uint64(NumHandshakeWork) {
		t.Errorf("%d expensive operations, want only the admitted handshakes' %d", got, 2*NumHandshakeWork)
	}
	// Another source is not affected.
	f.inject(t, bobAddr, initiations(t, 1)[0])
	if got := f.hooks.Handshakes[HandshakeOK].Load(); got != 3 {
		t.Errorf("another source was refused: %d handshakes", got)
	}
}

// A full session table refuses new handshakes with a counted reason (and a busy error
// datagram) rather than growing.
func TestSessionTableLimit(t *testing.T) {
	f := newFakeRig(t, func(c *ServerConfig) { c.MaxSessions = 3; c.MaxSessionsPerKey = 8 })
	for _, p := range initiations(t, 4) {
		f.inject(t, attackerAddr, p)
	}
	if n := f.sessionCount(); n != 3 {
		t.Errorf("%d sessions, want the limit of 3", n)
	}
	if got := f.hooks.Drop(DropSessionLimit); got != 1 {
		t.Errorf("%d session_limit drops, want 1", got)
	}
	if got := len(f.sent(droneAddr, TypeError)); got != 1 {
		t.Errorf("%d error datagrams, want one busy answer", got)
	}
}

// One key cannot hold more than MaxSessionsPerKey sessions: the oldest unconfirmed one
// makes room.
func TestSessionLimitPerKey(t *testing.T) {
	f := newFakeRig(t, func(c *ServerConfig) { c.MaxSessionsPerKey = 2 })
	for _, p := range initiations(t, 5) {
		f.inject(t, attackerAddr, p)
	}
	if n := f.sessionCount(); n != 2 {
		t.Errorf("%d sessions of one key, want 2", n)
	}
	if got := f.hooks.Handshakes[HandshakeOK].Load(); got != 5 {
		t.Errorf("%d handshakes, want all 5 accepted (eviction, not refusal)", got)
	}
}

// When the de-duplication memory is full of ids that could still be retransmitted, a new
// command is answered busy and not executed; nothing is evicted and nothing runs twice.
func TestCommandBusyWhenDedupFull(t *testing.T) {
	f := newFakeRig(t, func(c *ServerConfig) { c.DedupCapacity = 1 })
	alice, err := f.client(t, "alice", aliceAddr, nil)
	if err != nil {
		t.Fatal(err)
	}
	if ack := command(t, alice, "first"); ack.Status != AckOK {
		t.Fatalf("first: %v", ack.Status)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
	defer cancel()
	if _, err := alice.Command(ctx, []byte("second")); err == nil {
		t.Fatal("a command was accepted into a full de-duplication memory")
	}
	if f.hooks.Commands[AckBusy].Load() == 0 {
		t.Error("no busy answer counted")
	}
	f.execs.check(t, 1)
}
