package link

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dronelink/dronelink/pkg/link/fakenet"
)

var (
	droneAddr    = netip.MustParseAddrPort("10.0.0.1:5000")
	aliceAddr    = netip.MustParseAddrPort("10.0.1.1:40000")
	bobAddr      = netip.MustParseAddrPort("10.0.1.2:40000")
	attackerAddr = netip.MustParseAddrPort("10.6.6.6:666")
)

// fakeRig is a drone on a clean fake network that records every datagram it sees.
type fakeRig struct {
	*rig
	net         *fakenet.Network
	dialTimeout time.Duration // 0: 15 s, generous for a loaded machine
	mu          sync.Mutex
	captured    []fakenet.Datagram
}

func newFakeRig(t *testing.T, mutate func(*ServerConfig)) *fakeRig {
	t.Helper()
	n, err := fakenet.New(fakenet.Config{Seed: 1, QueueLen: 1 << 14})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	conn, err := n.Listen(droneAddr)
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeRig{net: n}
	n.Intercept(func(d fakenet.Datagram) []fakenet.Datagram {
		f.mu.Lock()
		f.captured = append(f.captured, fakenet.Datagram{From: d.From, To: d.To, Payload: bytes.Clone(d.Payload)})
		f.mu.Unlock()
		return []fakenet.Datagram{d}
	})
	f.rig = startServer(t, conn, mutate)
	return f
}

func (f *fakeRig) client(t *testing.T, op string, addr netip.AddrPort, mutate func(*ClientConfig)) (*Client, error) {
	t.Helper()
	conn, err := f.net.Listen(addr)
	if err != nil {
		t.Fatal(err)
	}
	cfg := clientConfig(conn, droneAddr, op)
	if mutate != nil {
		mutate(&cfg)
	}
	timeout := f.dialTimeout
	if timeout == 0 {
		timeout = 15 * time.Second
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	c, err := Dial(ctx, cfg)
	if err != nil {
		conn.Close()
		return nil, err
	}
	t.Cleanup(func() { c.Close() })
	return c, nil
}

// sent returns the captured datagrams from one address of one type.
func (f *fakeRig) sent(from netip.AddrPort, typ byte) [][]byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out [][]byte
	for _, d := range f.captured {
		if d.From == from && len(d.Payload) > 0 && d.Payload[0] == typeByte(typ) {
			out = append(out, d.Payload)
		}
	}
	return out
}

// inject sends a forged or replayed datagram to the drone and waits until it was read.
func (f *fakeRig) inject(t *testing.T, from netip.AddrPort, pkt []byte) {
	t.Helper()
	start := f.conn.position()
	if err := f.net.Inject(fakenet.Datagram{From: from, To: droneAddr, Payload: pkt}); err != nil {
		t.Fatal(err)
	}
	// Wait until the reader has finished with it (it asked for the next datagram), not
	// until it was merely read: a sleep here was a race (it failed 2 runs in 10 under -race).
	f.conn.waitHandled(t, pkt, start)
}

func (f *fakeRig) drops() map[DropReason]uint64 {
	m := map[DropReason]uint64{}
	for r := range NumDropReasons {
		if n := f.hooks.Drop(r); n != 0 {
			m[r] = n
		}
	}
	return m
}

func command(t *testing.T, c *Client, payload string) Ack {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	ack, err := c.Command(ctx, []byte(payload))
	if err != nil {
		t.Fatalf("command %q: %v", payload, err)
	}
	return ack
}

// Each attack on a live session is rejected with its own counted reason and executes
// nothing.
func TestServerRejectsWithCountedReasons(t *testing.T) {
	f := newFakeRig(t, nil)
	alice, err := f.client(t, "alice", aliceAddr, nil)
	if err != nil {
		t.Fatal(err)
	}
	bob, err := f.client(t, "bob", bobAddr, nil)
	if err != nil {
		t.Fatal(err)
	}
	if ack := command(t, alice, "arm"); ack.Status != AckOK {
		t.Fatalf("ack %v", ack.Status)
	}
	command(t, bob, "hover")
	f.execs.check(t, 2)
	aliceData := f.sent(aliceAddr, TypeData)
	bobData := f.sent(bobAddr, TypeData)
	aliceInit := f.sent(aliceAddr, TypeInitiation)
	unwraps := f.key.unwraps.Load()
	lookups := f.auth.lookups.Load()

	otherPSK := testPSK
	otherPSK[3] ^= 0x40
	wrongPSKInit := func() []byte {
		h, _ := NewInitiator(InitiatorConfig{PSK: otherPSK, OperatorKey: testOp1, DronePublic: &testDrone.PublicKey}, 5, 0)
		p, _ := h.Initiation(time.Now())
		return p
	}()
	longest := aliceData[0] // the command datagram, longer than any keepalive
	for _, p := range aliceData {
		if len(p) > len(longest) {
			longest = p
		}
	}
	crossSession := bytes.Clone(bobData[len(bobData)-1])
	copy(crossSession[dataOffReceiver:], aliceData[0][dataOffReceiver:dataOffReceiver+indexSize])

	cases := []struct {
		name string
		pkt  []byte
		want DropReason
	}{
		{"replayed data datagram", aliceData[len(aliceData)-1], DropReplay},
		{"replayed first data datagram", aliceData[0], DropReplay},
		{"replayed initiation", aliceInit[len(aliceInit)-1], DropStale},
		{"wrong PSK initiation", wrongPSKInit, DropBadMAC},
		{"truncated data", longest[:len(longest)-1], DropDecrypt},
		{"extended data", append(bytes.Clone(longest), 0), DropDecrypt},
		{"header and tag without plaintext", aliceData[0][:DataOverhead], DropMalformed},
		{"truncated below header and tag", aliceData[0][:DataOverhead-1], DropMalformed},
		{"truncated initiation", aliceInit[0][:len(aliceInit[0])-1], DropMalformed},
		{"extended initiation", append(bytes.Clone(aliceInit[0]), 0), DropBadMAC},
		{"datagram from another session", crossSession, DropDecrypt},
		{"unknown session", func() []byte { p := bytes.Clone(aliceData[0]); p[1], p[2] = 0, 0; return p }(), DropMalformed},
		{"oversize", make([]byte, MaxDatagramSize+1), DropMalformed},
		{"empty", []byte{}, DropMalformed},
		{"other version", []byte{0x24, 0, 1, 0, 0, 0, 0}, DropMalformed},
		{"response sent to the drone (reflection)", make([]byte, ResponseSize), DropUnexpected},
	}
	cases[len(cases)-1].pkt[0] = typeByte(TypeResponse)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := f.hooks.Drop(tc.want)
			f.inject(t, attackerAddr, tc.pkt)
			if got := f.hooks.Drop(tc.want) - before; got != 1 {
				t.Errorf("%v drops +%d, want +1 (all drops: %v)", tc.want, got, f.drops())
			}
		})
	}
	f.execs.check(t, 2)
	if f.key.unwraps.Load() != unwraps {
		t.Errorf("rejected datagrams cost %d RSA unwraps", f.key.unwraps.Load()-unwraps)
	}
	if f.auth.lookups.Load() != lookups {
		t.Errorf("rejected datagrams cost %d key lookups", f.auth.lookups.Load()-lookups)
	}
	// Roaming must not have been triggered by any of it: the drone still answers alice there.
	if ack := command(t, alice, "still here"); ack.Status != AckOK {
		t.Fatalf("after the attacks: %v", ack.Status)
	}
}

// Every single-bit flip of a command datagram is rejected; the genuine one still runs once.
func TestServerEveryBitFlipOfDataRejected(t *testing.T) {
	f := newFakeRig(t, nil)
	alice, err := f.client(t, "alice", aliceAddr, nil)
	if err != nil {
		t.Fatal(err)
	}
	command(t, alice, "warm-up")
	// Capture the next command datagram by dropping it on the way, and every datagram of
	// alice's after it (the copies of its transmission, its retransmissions).
	var held atomic.Pointer[[]byte]
	f.net.Intercept(func(d fakenet.Datagram) []fakenet.Datagram {
		if d.From == aliceAddr && d.Payload[0] == typeByte(TypeData) && held.Load() != nil {
			return nil
		}
		if d.From == aliceAddr && d.Payload[0] == typeByte(TypeData) && len(d.Payload) > DataOverhead+CommandHeaderSize {
			p := bytes.Clone(d.Payload)
			held.Store(&p)
			return nil
		}
		return []fakenet.Datagram{d}
	})
	go alice.Command(context.Background(), []byte("land now"))
	waitFor(t, "a command datagram", func() bool { return held.Load() != nil })
	f.net.Intercept(func(d fakenet.Datagram) []fakenet.Datagram {
		if d.From == aliceAddr && d.Payload[0] == typeByte(TypeData) {
			return nil // hold back alice's retransmissions during the flips
		}
		return []fakenet.Datagram{d}
	})
	pkt := *held.Load()
	dropsBefore := f.drops()
	for bit := range len(pkt) * 8 {
		p := bytes.Clone(pkt)
		p[bit/8] ^= 1 << (bit % 8)
		f.inject(t, attackerAddr, p)
	}
	f.execs.check(t, 1)
	total := uint64(0)
	for r, n := range f.drops() {
		total += n - dropsBefore[r]
	}
	if total != uint64(len(pkt)*8) {
		t.Errorf("%d flips, %d counted drops: %v", len(pkt)*8, total, f.drops())
	}
	f.inject(t, aliceAddr, pkt)
	waitFor(t, "the genuine command to run", func() bool { f.execs.mu.Lock(); defer f.execs.mu.Unlock(); return f.execs.total == 2 })
	f.execs.check(t, 2)
}

// A flood of garbage and wrong-PSK initiations costs no RSA or key lookups, and a real
// operator still gets through.
func TestServerFloodCostsNoRSA(t *testing.T) {
	f := newFakeRig(t, nil)
	f.net.Intercept(nil)
	otherPSK := testPSK
	otherPSK[0] ^= 1
	h, _ := NewInitiator(InitiatorConfig{PSK: otherPSK, OperatorKey: testOp1, DronePublic: &testDrone.PublicKey}, 5, 0)
	forged, _ := h.Initiation(time.Now())
	rng := rand.New(rand.NewPCG(1, 2))
	const n = 2000
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := range n {
			var p []byte
			switch i % 3 {
			case 0:
				p = forged
			case 1:
				p = make([]byte, rng.IntN(1400))
				for j := range p {
					p[j] = byte(rng.Uint32())
				}
			case 2:
				p = bytes.Clone(forged)
				p[rng.IntN(len(p))] ^= 0x10
			}
			_ = f.net.Inject(fakenet.Datagram{From: attackerAddr, To: droneAddr, Payload: p})
		}
	})
	alice, err := f.client(t, "alice", aliceAddr, nil)
	if err != nil {
		t.Fatalf("operator during the flood: %v", err)
	}
	command(t, alice, "during flood")
	wg.Wait()
	waitFor(t, "the flood to be read", func() bool {
		var d uint64
		for _, v := range f.drops() {
			d += v
		}
		return d >= n-f.net.Stats().QueueFull // what a full queue dropped never arrived
	})
	if f.key.unwraps.Load() != 1 || f.auth.lookups.Load() != 1 {
		t.Errorf("flood reached RSA: %d unwraps, %d lookups (want only alice's 1 and 1)", f.key.unwraps.Load(), f.auth.lookups.Load())
	}
	if f.hooks.Drop(DropBadMAC) == 0 {
		t.Errorf("no bad_mac drops counted: %v", f.drops())
	}
	for w := range NumHandshakeWork {
		if got := f.hooks.Work[w].Load(); got != 1 {
			t.Errorf("%v ran %d times, want once (alice's handshake only)", w, got)
		}
	}
}

func TestClientRefusals(t *testing.T) {
	f := newFakeRig(t, nil)
	otherPSK := testPSK
	otherPSK[9] ^= 2
	cases := []struct {
		name   string
		op     string
		mutate func(*ClientConfig)
		check  func(error) bool
	}{
		{"wrong password", "alice", func(c *ClientConfig) { c.Password = []byte("nope") },
			func(err error) bool {
				var le *LoginError
				return errors.As(err, &le) && le.Status == LoginWrongPassword
			}},
		{"unknown user", "alice", func(c *ClientConfig) { c.User = "mallory" },
			func(err error) bool { var le *LoginError; return errors.As(err, &le) && le.Status == LoginUnknownUser }},
		{"key not authorised for the user", "alice", func(c *ClientConfig) { c.User, c.Password = "bob", []byte("bob-pw") },
			func(err error) bool {
				var le *LoginError
				return errors.As(err, &le) && le.Status == LoginKeyNotAuthorised
			}},
		{"operator key unknown to the drone", "alice", func(c *ClientConfig) { c.OperatorKey = testDrone },
			func(err error) bool { return errors.Is(err, ErrUnknownOperatorKey) }},
		{"pinned the wrong drone key", "alice", func(c *ClientConfig) { c.DronePublic = &testOther.PublicKey },
			func(err error) bool { return errors.Is(err, ErrWrongDroneKey) }},
		{"PSK mismatch", "alice", func(c *ClientConfig) { c.PSK = otherPSK },
			func(err error) bool { return errors.Is(err, context.DeadlineExceeded) }},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f.dialTimeout = 0
			if tc.name == "PSK mismatch" {
				f.dialTimeout = 2 * time.Second // only a timeout can tell
			}
			addr := netip.AddrPortFrom(netip.MustParseAddr(fmt.Sprintf("10.0.2.%d", i+1)), 4000)
			c, err := f.client(t, tc.op, addr, tc.mutate)
			if err == nil {
				c.Close()
				t.Fatal("dial succeeded")
			}
			if !tc.check(err) {
				t.Fatalf("error %q (%T) is not the expected refusal", err, err)
			}
			t.Logf("%s: %v", tc.name, err)
		})
	}
	f.execs.check(t, 0)
}

func TestObserverCannotCommand(t *testing.T) {
	f := newFakeRig(t, nil)
	olga, err := f.client(t, "olga", aliceAddr, nil)
	if err != nil {
		t.Fatal(err)
	}
	if olga.Role() != RoleObserver {
		t.Fatalf("role %v", olga.Role())
	}
	if ack := command(t, olga, "disarm"); ack.Status != AckNotPermitted {
		t.Fatalf("observer command: %v", ack.Status)
	}
	f.execs.check(t, 0)
	// Observers receive telemetry.
	got := make(chan []byte, 1)
	conn, _ := f.net.Listen(bobAddr)
	cfg := clientConfig(conn, droneAddr, "olga")
	cfg.OnTelemetry = func(p []byte) {
		select {
		case got <- bytes.Clone(p):
		default:
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := Dial(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	waitFor(t, "telemetry", func() bool {
		f.server.Broadcast([]byte("battery 87%"))
		select {
		case p := <-got:
			return string(p) == "battery 87%"
		case <-time.After(10 * time.Millisecond):
			return false
		}
	})
}

func TestRevokeEndsSession(t *testing.T) {
	f := newFakeRig(t, nil)
	alice, err := f.client(t, "alice", aliceAddr, nil)
	if err != nil {
		t.Fatal(err)
	}
	command(t, alice, "arm")
	f.auth.remove("alice")
	if n := f.server.Revoke(func(s SessionInfo) bool { _, ok := f.auth.LookupKey(s.OperatorKey); return !ok }); n == 0 {
		t.Fatal("nothing revoked")
	}
	select {
	case <-alice.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the operator was not told")
	}
	var ce *ClosedError
	if !errors.As(alice.Err(), &ce) || ce.Reason != CloseRevoked {
		t.Fatalf("client error %v", alice.Err())
	}
	if _, err := f.client(t, "alice", bobAddr, nil); !errors.Is(err, ErrUnknownOperatorKey) {
		t.Fatalf("login after deletion: %v", err)
	}
	f.execs.check(t, 1)
}

// Rekeying every 300 ms while commands flow loses nothing and executes nothing twice.
func TestRekeyWithoutLoss(t *testing.T) {
	f := newFakeRig(t, func(c *ServerConfig) { c.DedupCapacity = 1 << 20 })
	f.net.Intercept(nil)
	alice, err := f.client(t, "alice", aliceAddr, func(c *ClientConfig) { c.RekeyAfterTime = 300 * time.Millisecond })
	if err != nil {
		t.Fatal(err)
	}
	// Commands flow back to back until the drone has seen three rekeys (the deadline only
	// bounds a broken build).
	deadline := time.Now().Add(30 * time.Second)
	n := 0
	for f.hooks.Rekeys.Load() < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("only %d rekeys after %d commands", f.hooks.Rekeys.Load(), n)
		}
		if ack := command(t, alice, fmt.Sprintf("cmd %d", n)); ack.Status != AckOK {
			t.Fatalf("ack %v", ack.Status)
		}
		n++
	}
	f.execs.check(t, n)
	if d := f.hooks.Drop(DropDecrypt) + f.hooks.Drop(DropUnknownSession) + f.hooks.Drop(DropReplay); d != 0 {
		t.Errorf("rekeying dropped %d datagrams: %v", d, f.drops())
	}
	if f.hooks.Logins[LoginOK].Load() != 1 {
		t.Errorf("%d logins: the login should carry over rekeys", f.hooks.Logins[LoginOK].Load())
	}
}

// An operator whose address changes (NAT rebinding, another radio) keeps its session.
func TestRoaming(t *testing.T) {
	f := newFakeRig(t, nil)
	alice, err := f.client(t, "alice", aliceAddr, nil)
	if err != nil {
		t.Fatal(err)
	}
	command(t, alice, "before")
	newAddr := netip.MustParseAddrPort("10.0.9.9:5555")
	f.net.Intercept(func(d fakenet.Datagram) []fakenet.Datagram {
		if d.From == aliceAddr {
			d.From = newAddr
		}
		if d.To == newAddr {
			d.To = aliceAddr
		}
		return []fakenet.Datagram{d}
	})
	command(t, alice, "after")
	peers := 0
	for _, s := range f.server.Sessions() {
		if s.User == "alice" && s.Peer == newAddr {
			peers++
		}
	}
	if peers != 1 {
		t.Fatalf("drone did not follow the operator: %+v", f.server.Sessions())
	}
}

// A silent drone marks the link lost; when it comes back the operator re-handshakes and
// carries on without a new password check.
func TestLinkLostAndRestored(t *testing.T) {
	f := newFakeRig(t, func(c *ServerConfig) { c.KeepaliveInterval = 50 * time.Millisecond; c.SessionIdleTimeout = time.Second })
	var lost, restored atomic.Int32
	alice, err := f.client(t, "alice", aliceAddr, func(c *ClientConfig) {
		c.KeepaliveInterval = 50 * time.Millisecond
		c.OnEvent = func(e Event) {
			switch e.Kind {
			case EventLinkLost:
				lost.Add(1)
			case EventLinkRestored:
				restored.Add(1)
			}
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	f.net.SetConfig(fakenet.Config{Seed: 1, Loss: 1})
	waitFor(t, "link lost on both sides", func() bool { return lost.Load() > 0 && f.hooks.LinkDowns.Load() > 0 })
	f.net.SetConfig(fakenet.Config{Seed: 1})
	waitFor(t, "link restored", func() bool { return restored.Load() > 0 })
	if ack := command(t, alice, "after outage"); ack.Status != AckOK {
		t.Fatalf("after outage: %v", ack.Status)
	}
	// After a long outage the drone forgot the session; the operator logs in again.
	f.net.SetConfig(fakenet.Config{Seed: 1, Loss: 1})
	waitFor(t, "the drone to forget the session", func() bool { return len(f.server.Sessions()) == 0 })
	f.net.SetConfig(fakenet.Config{Seed: 1})
	if ack := command(t, alice, "after the drone forgot"); ack.Status != AckOK {
		t.Fatalf("after forgetting: %v", ack.Status)
	}
	f.execs.check(t, 2)
}
