package link

import (
	"context"
	"crypto/rsa"
	"net/netip"
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

// lastTo is the last captured datagram of type typ sent to addr, or nil.
func (f *fakeRig) lastTo(addr netip.AddrPort, typ byte) []byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i := len(f.captured) - 1; i >= 0; i-- {
		if d := f.captured[i]; d.To == addr && len(d.Payload) > 0 && d.Payload[0] == typeByte(typ) {
			return d.Payload
		}
	}
	return nil
}

// keyOnlyHandshake completes a handshake with key from addr, as someone who holds the
// operator key but not the password would, and confirms the session with a keepalive. It
// returns the drone's index of the new session, or 0 if the drone did not answer with a
// response.
func (f *fakeRig) keyOnlyHandshake(t *testing.T, key *rsa.PrivateKey, from netip.AddrPort, local uint16) uint16 {
	t.Helper()
	h, err := NewInitiator(InitiatorConfig{PSK: testPSK, OperatorKey: key, DronePublic: &testDrone.PublicKey}, local, 0)
	if err != nil {
		t.Fatal(err)
	}
	p, err := h.Initiation(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	f.inject(t, from, p)
	resp := f.lastTo(from, TypeResponse)
	if resp == nil {
		return 0
	}
	keys, r, err := h.ConsumeResponse(resp)
	if err != nil {
		return 0 // an earlier handshake's response: this one was refused
	}
	sess, err := NewSession(&keys, local, r.Sender, 0, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	ka, err := sess.Seal(nil, AppendKeepalive(nil), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	f.inject(t, from, ka)
	return r.Sender
}

// sessionOf is the drone's session with index idx, if it is installed.
func (f *fakeRig) sessionOf(idx uint16) (SessionInfo, bool) {
	for _, s := range f.server.Sessions() {
		if s.LocalIndex == idx {
			return s, true
		}
	}
	return SessionInfo{}, false
}

// #13 finding 2: a thief of an operator key without the password cannot push a logged-in
// session of that key out of the per-key session limit, however many confirmed sessions
// it opens; the logged-in session keeps its index and still commands.
func TestKeyThiefCannotEvictLoggedInSession(t *testing.T) {
	f := newFakeRig(t, nil)
	alice, err := f.client(t, "alice", aliceAddr, nil)
	if err != nil {
		t.Fatal(err)
	}
	if ack := command(t, alice, "before"); ack.Status != AckOK {
		t.Fatalf("before: %v", ack.Status)
	}
	var aliceIdx uint16
	for _, s := range f.server.Sessions() {
		if s.User == "alice" {
			aliceIdx = s.LocalIndex
		}
	}
	if aliceIdx == 0 {
		t.Fatal("alice has no logged-in session")
	}
	thief := netip.MustParseAddrPort("10.6.6.7:4444")
	accepted := 0
	for i := range DefaultMaxSessionsPerKey {
		if f.keyOnlyHandshake(t, testOp1, thief, uint16(200+i)) != 0 {
			accepted++
		}
	}
	if s, ok := f.sessionOf(aliceIdx); !ok || s.User != "alice" {
		t.Fatalf("alice's logged-in session %d was evicted by %d key-only handshakes", aliceIdx, accepted)
	}
	if accepted != DefaultMaxSessionsPerKey {
		t.Errorf("%d key-only sessions accepted, want all %d (they make room among themselves)", accepted, DefaultMaxSessionsPerKey)
	}
	if ack := command(t, alice, "after"); ack.Status != AckOK {
		t.Fatalf("after: %v", ack.Status)
	}
	if s, ok := f.sessionOf(aliceIdx); !ok || s.User != "alice" {
		t.Fatal("alice commanded on another session than her first")
	}
}

// #13 finding 2, the limit itself: when every session of a key is logged in, a key-only
// handshake is refused (session_limit, a busy answer) rather than evicting one; a rekey of
// the logged-in session is still accepted and carries the login.
func TestKeyOnlyHandshakeRefusedWhenAllLoggedIn(t *testing.T) {
	f := newFakeRig(t, func(c *ServerConfig) { c.MaxSessionsPerKey = 1 })
	aliceHooks := &Counters{}
	alice, err := f.client(t, "alice", aliceAddr, func(c *ClientConfig) {
		c.RekeyAfterTime = 300 * time.Millisecond
		c.Hooks = aliceHooks
	})
	if err != nil {
		t.Fatal(err)
	}
	thief := netip.MustParseAddrPort("10.6.6.7:4444")
	if idx := f.keyOnlyHandshake(t, testOp1, thief, 200); idx != 0 {
		t.Fatalf("a key-only handshake was accepted (session %d) beside a logged-in session at the limit of 1", idx)
	}
	if got := f.hooks.Drop(DropSessionLimit); got != 1 {
		t.Errorf("%d session_limit drops, want 1", got)
	}
	if f.lastTo(thief, TypeError) == nil {
		t.Error("no busy answer to the refused handshake")
	}
	defer func() {
		if t.Failed() { // what the drone and alice saw, to explain a failure
			t.Logf("drone: %s; network: %+v", countersSummary(f.hooks), f.net.Stats())
			t.Logf("alice: %s", countersSummary(aliceHooks))
		}
	}()
	waitFor(t, "alice's rekey", func() bool { return f.hooks.Rekeys.Load() >= 1 })
	if ack := command(t, alice, "after rekey"); ack.Status != AckOK {
		t.Fatalf("after rekey: %v", ack.Status)
	}
	if got := f.hooks.Logins[LoginOK].Load(); got != 1 {
		t.Errorf("%d logins, want 1: the rekey carries the login", got)
	}
}

// #13 finding 5: one authorised key sending from many (spoofed) source addresses gets at
// most the per-key burst of RSA unwraps while the clock stands still; the rest are refused
// after the signature check, before the unwrap, as rate_limited.
func TestHandshakeRateLimitPerKey(t *testing.T) {
	now := time.Now()
	const burst = DefaultKeyHandshakeBurst
	f := newFakeRig(t, func(c *ServerConfig) { c.Now = func() time.Time { return now } })
	const n = 2 * burst
	for i, p := range initiations(t, n) {
		from := netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 7, byte(i >> 8), byte(i)}), 4000)
		f.inject(t, from, p)
	}
	if got := f.key.unwraps.Load(); got != burst {
		t.Errorf("%d RSA unwraps for one key from %d sources, want the burst of %d", got, n, burst)
	}
	if got := f.hooks.Handshakes[HandshakeOK].Load(); got != burst {
		t.Errorf("%d handshakes accepted, want %d", got, burst)
	}
	if got := f.hooks.Drop(DropRateLimited); got != n-burst {
		t.Errorf("%d rate_limited drops, want %d", got, n-burst)
	}
	if got := f.hooks.Work[WorkVerify].Load(); got != n {
		t.Errorf("%d signature checks, want %d: the per-key limit applies to signed initiations only", got, n)
	}
}

// The per-key handshake limit is spent by whoever holds the key: a thief without the
// password who drains it cannot starve the rekeys of a logged-in session (which would end
// at RejectAfterTime), because a proven rekey of a logged-in session has a budget of its own.
func TestKeyThiefCannotStarveRekeys(t *testing.T) {
	now := time.Now()
	f := newFakeRig(t, func(c *ServerConfig) { c.Now = func() time.Time { return now } })
	alice, err := f.client(t, "alice", aliceAddr, func(c *ClientConfig) { c.RekeyAfterTime = 300 * time.Millisecond })
	if err != nil {
		t.Fatal(err)
	}
	// Each initiation is built right before it goes in: alice's rekey (after 300 ms) may
	// come between two of them, and an initiation built before it would then be refused
	// as stale, before the per-key limit this test drains.
	for i := range DefaultKeyHandshakeBurst + 5 {
		f.inject(t, netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 7, 0, byte(i)}), 4000), initiations(t, 1)[0])
	}
	if f.hooks.Drop(DropRateLimited) == 0 {
		t.Fatal("the key's handshake budget was not drained")
	}
	waitFor(t, "alice's rekey", func() bool { return f.hooks.Rekeys.Load() >= 1 })
	if ack := command(t, alice, "after rekey"); ack.Status != AckOK {
		t.Fatalf("after rekey: %v", ack.Status)
	}
}
