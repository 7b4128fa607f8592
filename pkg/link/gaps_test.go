package link

// Tests that close gaps listed in docs/THREAT-MODEL.md section 5 (G2, G6, G7, G10, G11,
// G12, G13). Each names its gap.

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dronelink/dronelink/pkg/crypto"
	"github.com/dronelink/dronelink/pkg/link/fakenet"
)

// recordHandler is a slog.Handler that keeps every record, to count log lines.
type recordHandler struct {
	mu      sync.Mutex
	records []slog.Record
}

func (h *recordHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *recordHandler) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *recordHandler) WithGroup(string) slog.Handler            { return h }
func (h *recordHandler) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	h.records = append(h.records, r.Clone())
	h.mu.Unlock()
	return nil
}

// count returns how many records have message msg ("" for all).
func (h *recordHandler) count(msg string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, r := range h.records {
		if msg == "" || r.Message == msg {
			n++
		}
	}
	return n
}

func totalDrops(h *Counters) uint64 {
	var n uint64
	for r := range NumDropReasons {
		n += h.Drop(r)
	}
	return n
}

// injectTo delivers pkt from from to to and waits until the endpoint reading rc has
// finished handling it (not merely read it), so its effects can be checked at once.
func injectTo(t *testing.T, n *fakenet.Network, rc *recordingConn, from, to netip.AddrPort, pkt []byte) {
	t.Helper()
	start := rc.position()
	if err := n.Inject(fakenet.Datagram{From: from, To: to, Payload: pkt}); err != nil {
		t.Fatal(err)
	}
	rc.waitHandled(t, pkt, start)
}

// remacError recomputes an error datagram's PSK MAC under psk.
func remacError(t *testing.T, pkt []byte, psk crypto.PSK) []byte {
	t.Helper()
	key, err := PSKMACKey(&psk)
	if err != nil {
		t.Fatal(err)
	}
	p := bytes.Clone(pkt[:errOffMAC])
	return crypto.NewMAC(key).Sum(p, p)
}

// G10: error datagrams to the operator with a wrong PSK MAC, and every single-bit flip of a
// genuine one, are counted drops; the operator's dial goes on and succeeds. A genuine error
// with a non-final code is believed (the control), so the forgeries were refused for their
// MAC and not for some other reason.
func TestClientIgnoresForgedErrorDatagrams(t *testing.T) {
	f := newFakeRig(t, nil)
	var mu sync.Mutex
	var held [][]byte
	var block atomic.Bool
	block.Store(true)
	f.net.Intercept(func(d fakenet.Datagram) []fakenet.Datagram {
		if block.Load() && d.From == aliceAddr && len(d.Payload) > 0 && d.Payload[0] == typeByte(TypeInitiation) {
			mu.Lock()
			held = append(held, bytes.Clone(d.Payload))
			mu.Unlock()
			return nil // the drone never sees the initiation: only our error datagrams answer it
		}
		return []fakenet.Datagram{d}
	})
	hooks := &Counters{}
	conn, err := f.net.Listen(aliceAddr)
	if err != nil {
		t.Fatal(err)
	}
	rc := newRecordingConn(conn)
	cfg := clientConfig(rc, droneAddr, "alice")
	cfg.Hooks = hooks
	type result struct {
		c   *Client
		err error
	}
	done := make(chan result, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	go func() {
		c, err := Dial(ctx, cfg)
		done <- result{c, err}
	}()
	waitFor(t, "alice's initiation", func() bool { mu.Lock(); defer mu.Unlock(); return len(held) > 0 })

	responder, _, _ := wireResponder(t)
	// genuine answers alice's latest initiation with err, as the drone would.
	genuine := func(err error) []byte {
		mu.Lock()
		latest := held[len(held)-1]
		mu.Unlock()
		var init Initiation
		if e := responder.CheckInitiation(latest, &init); e != nil {
			t.Fatalf("alice's initiation: %v", e)
		}
		reply, ok := responder.ErrorReply(nil, &init, err)
		if !ok {
			t.Fatalf("no error reply for %v", err)
		}
		return reply
	}
	otherPSK := testPSK
	otherPSK[5] ^= 0x20
	type forged struct {
		name string
		pkt  func() []byte
		mac  bool // must fail the PSK MAC (and nothing before it)
	}
	// Final codes: believing any of these would end alice's dial.
	cases := []forged{
		{"wrong PSK MAC, unknown operator", func() []byte { return remacError(t, genuine(ErrUnknownOperatorKey), otherPSK) }, true},
		{"wrong PSK MAC, wrong drone key", func() []byte { return remacError(t, genuine(ErrWrongDroneKey), otherPSK) }, true},
		{"wrong PSK MAC, bad signature", func() []byte { return remacError(t, genuine(ErrBadSignature), otherPSK) }, true},
	}
	for bit := range ErrorSize * 8 {
		cases = append(cases, forged{fmt.Sprintf("bit %d", bit), func() []byte {
			p := genuine(ErrUnknownOperatorKey)
			p[bit/8] ^= 1 << (bit % 8)
			return p
		}, bit >= errOffMAC*8})
	}
	dropsBefore := totalDrops(hooks)
	for _, tc := range cases {
		badMAC := hooks.Drop(DropBadMAC)
		injectTo(t, f.net, rc, droneAddr, aliceAddr, tc.pkt())
		if tc.mac && hooks.Drop(DropBadMAC) != badMAC+1 {
			t.Errorf("%s: not dropped as bad_mac: %v", tc.name, dropMap(hooks))
		}
		if got := hooks.Handshakes[HandshakeRefused].Load(); got != 0 {
			t.Fatalf("%s: the operator believed a forged error datagram", tc.name)
		}
		select {
		case r := <-done:
			t.Fatalf("%s: the dial ended: %v", tc.name, r.err)
		default:
		}
	}
	if got := totalDrops(hooks) - dropsBefore; got != uint64(len(cases)) {
		t.Errorf("%d forged error datagrams, %d counted drops", len(cases), got)
	}
	// Control: the genuine error datagram (a non-final code) is believed.
	injectTo(t, f.net, rc, droneAddr, aliceAddr, genuine(ErrStale))
	if got := hooks.Handshakes[HandshakeRefused].Load(); got != 1 {
		t.Fatalf("the genuine stale error was not believed (%d refusals, drops %d)", got, totalDrops(hooks)-dropsBefore)
	}
	block.Store(false)
	r := <-done
	if r.err != nil {
		t.Fatalf("alice's dial after the forged errors: %v", r.err)
	}
	defer r.c.Close()
	if ack := command(t, r.c, "arm"); ack.Status != AckOK {
		t.Fatalf("ack %v", ack.Status)
	}
}

// G7: the drone's view of a session's peer address does not move for replayed, bit-flipped,
// forged, spliced, truncated or extended datagrams from other addresses; only an
// authenticated datagram moves it. Alice's own traffic is held back during the
// injections, so nothing genuine could move it back.
func TestPeerAddressUnchangedByForgedDatagrams(t *testing.T) {
	f := newFakeRig(t, nil)
	alice, err := f.client(t, "alice", aliceAddr, nil)
	if err != nil {
		t.Fatal(err)
	}
	bob, err := f.client(t, "bob", bobAddr, nil)
	if err != nil {
		t.Fatal(err)
	}
	command(t, alice, "arm")
	command(t, bob, "hover")
	aliceData := f.sent(aliceAddr, TypeData)
	bobData := f.sent(bobAddr, TypeData)
	last := aliceData[len(aliceData)-1]
	idx := binary.BigEndian.Uint16(last[dataOffReceiver:])
	peer := func() netip.AddrPort {
		t.Helper()
		info, ok := sessionInfo(f, idx)
		if !ok {
			t.Fatalf("alice's session %#x is gone", idx)
		}
		return info.Peer
	}
	if p := peer(); p != aliceAddr {
		t.Fatalf("alice's peer %v before the attack", p)
	}
	f.net.Intercept(func(d fakenet.Datagram) []fakenet.Datagram {
		if d.From == aliceAddr {
			return nil
		}
		return []fakenet.Datagram{d}
	})
	reAddressed := func(p []byte) []byte {
		q := bytes.Clone(p)
		binary.BigEndian.PutUint16(q[dataOffReceiver:], idx)
		return q
	}
	var flips [][]byte
	for bit := range len(last) * 8 {
		p := bytes.Clone(last)
		p[bit/8] ^= 1 << (bit % 8)
		flips = append(flips, p)
	}
	forged := appendDataHeader(nil, idx, 1<<20)
	forged = append(forged, bytes.Repeat([]byte{0x5a}, 60)...)
	var spliced [][]byte
	for _, p := range bobData {
		spliced = append(spliced, reAddressed(p))
	}
	attacker2 := netip.MustParseAddrPort("10.6.6.7:4444")
	cases := []struct {
		name string
		pkts [][]byte
	}{
		{"replayed", aliceData},
		{"bit-flipped", flips},
		{"forged", [][]byte{forged}},
		{"spliced from bob's session", spliced},
		{"truncated", [][]byte{last[:len(last)-1]}},
		{"extended", [][]byte{append(bytes.Clone(last), 0)}},
	}
	executed := 2
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for i, p := range tc.pkts {
				from := attackerAddr
				if i%2 == 1 {
					from = attacker2
				}
				drops := totalDrops(f.hooks)
				f.inject(t, from, p)
				if got := peer(); got != aliceAddr {
					t.Fatalf("datagram %d from %v moved alice's peer address to %v", i, from, got)
				}
				if totalDrops(f.hooks) != drops+1 {
					t.Errorf("datagram %d was not a counted drop: %v", i, f.drops())
				}
			}
			f.execs.check(t, executed)
		})
	}
	// Released, alice's own traffic reaches the drone from her address as before.
	f.net.Intercept(nil)
	if ack := command(t, alice, "still here"); ack.Status != AckOK {
		t.Fatalf("after the attack: %v", ack.Status)
	}
	if p := peer(); p != aliceAddr {
		t.Fatalf("alice's peer %v after the attack", p)
	}
}

// readUntilAck reads the raw operator's datagrams until the ack of id, failing on any
// telemetry before it. The fake network delivers one path's datagrams in order, and
// Broadcast sends before it returns, so telemetry sent earlier would arrive first.
func (o *rawOperator) readUntilAck(t *testing.T, id uint64) Message {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second) // keepalives alone must not keep it waiting
	for {
		if time.Now().After(deadline) {
			t.Fatalf("no ack for command %d", id)
		}
		d := o.read(TypeData)
		h, err := ParseDataHeader(d)
		if err != nil {
			t.Fatal(err)
		}
		plain, err := o.sess.Open(nil, d, h, time.Now())
		if err != nil {
			t.Fatalf("a datagram from the drone does not open: %v", err)
		}
		var m Message
		if err := ParseMessage(plain, &m); err != nil {
			t.Fatal(err)
		}
		switch {
		case m.Type == MsgTelemetry:
			t.Errorf("a session that never logged in received telemetry %q", m.Payload)
		case m.Type == MsgAck && m.ID == id:
			return m
		}
	}
}

// send seals msg on the raw operator's session and sends it.
func (o *rawOperator) send(t *testing.T, msg []byte) {
	t.Helper()
	pkt, err := o.sess.Seal(nil, msg, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := o.conn.WriteTo(pkt, droneAddr); err != nil {
		t.Fatal(err)
	}
}

// G11: a confirmed session whose operator never logged in (bob's key and the PSK, no
// password) receives no telemetry from Broadcast or BroadcastBatch, while a logged-in
// operator receives all of it.
func TestNoTelemetryWithoutLogin(t *testing.T) {
	f := newFakeRig(t, nil)
	var got atomic.Int64
	alice, err := f.client(t, "alice", aliceAddr, func(c *ClientConfig) {
		c.OnTelemetry = func([]byte) { got.Add(1) }
	})
	if err != nil {
		t.Fatal(err)
	}
	_ = alice
	o := rawHandshake(t, f, bobAddr, InitiatorConfig{PSK: testPSK, OperatorKey: testOp2, DronePublic: &testDrone.PublicKey}, 0)
	// The command confirms the session (the drone may now send on it): it is answered, not run.
	o.send(t, AppendCommand(nil, 1, testCommand, []byte("disarm")))
	if ack := o.readUntilAck(t, 1); AckStatus(ack.Status) != AckNotLoggedIn {
		t.Fatalf("command without a login: ack %v", AckStatus(ack.Status))
	}
	if info, ok := sessionInfo(f, o.resp.Sender); !ok || info.Role != RoleNone {
		t.Fatalf("raw session on the drone: %+v %v", info, ok)
	}
	want := int64(0)
	for i, tc := range []struct {
		name string
		send func() (int, error)
		n    int // payloads sent
	}{
		{"Broadcast", func() (int, error) { return f.server.Broadcast([]byte("battery 80%")) }, 1},
		{"BroadcastBatch", func() (int, error) {
			return f.server.BroadcastBatch([][]byte{[]byte("gps 1"), []byte("gps 2"), []byte("gps 3")})
		}, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sent := f.hooks.Sent[KindTelemetry].Load()
			n, err := tc.send()
			if err != nil {
				t.Fatal(err)
			}
			if n != tc.n || f.hooks.Sent[KindTelemetry].Load()-sent != uint64(tc.n) {
				t.Errorf("sent %d telemetry datagrams (%d counted), want %d: alice's only", n, f.hooks.Sent[KindTelemetry].Load()-sent, tc.n)
			}
			id := uint64(10 + i)
			o.send(t, AppendCommand(nil, id, testCommand, []byte("probe")))
			o.readUntilAck(t, id)
			want += int64(tc.n)
			waitFor(t, "alice's telemetry", func() bool { return got.Load() >= want })
		})
	}
	f.execs.check(t, 0)
}

// gapDirectServer is a Server with a test-controlled clock whose receive path the test
// drives by hand (no reader or timer goroutine), on a fake network where an operator can
// listen for its answers.
func gapDirectServer(t *testing.T, clock *fakeClock) (*Server, *fakenet.Network, *Counters) {
	t.Helper()
	s, n, _, _, hooks := directServerOn(t, func(c *ServerConfig) { c.Now = clock.Now })
	return s, n, hooks
}

// G12, drone side: data on a session as old as RejectAfterTime or older is dropped as
// expired before it is opened; one nanosecond younger it is accepted.
func TestServerDropsDataOnExpiredSession(t *testing.T) {
	start := time.Now()
	clock := newFakeClock(start)
	s, n, hooks := gapDirectServer(t, clock)
	op, err := n.Listen(aliceAddr)
	if err != nil {
		t.Fatal(err)
	}
	var sc receiveScratch
	sc.out = make([]byte, 0, MaxDatagramSize)
	h := wireInitiator(t, testOp1, &testDrone.PublicKey, 0x0101, 0)
	pkt, err := h.Initiation(start)
	if err != nil {
		t.Fatal(err)
	}
	s.handleDatagram(pkt, aliceAddr, start, &sc)
	buf := make([]byte, ReadBufferSize)
	if err := op.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	m, _, err := op.ReadFrom(buf)
	if err != nil {
		t.Fatal(err)
	}
	keys, r, err := h.ConsumeResponse(buf[:m])
	if err != nil {
		t.Fatalf("response: %v", err)
	}
	sess, err := NewSession(&keys, 0x0101, r.Sender, 0, start)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		age     time.Duration
		expired bool
	}{
		{"at the limit", RejectAfterTime, true},
		{"an hour old", time.Hour, true},
		{"one nanosecond before the limit", RejectAfterTime - 1, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pkt, err := sess.Seal(nil, AppendKeepalive(nil), start)
			if err != nil {
				t.Fatal(err)
			}
			expired, drops, keepalives := hooks.Drop(DropExpired), totalDrops(hooks), hooks.Received[KindKeepalive].Load()
			s.handleDatagram(pkt, aliceAddr, start.Add(tc.age), &sc)
			if tc.expired {
				if hooks.Drop(DropExpired) != expired+1 || hooks.Received[KindKeepalive].Load() != keepalives {
					t.Errorf("data on a session %v old was not dropped as expired: %v drops", tc.age, hooks.Drop(DropExpired)-expired)
				}
				return
			}
			if totalDrops(hooks) != drops || hooks.Received[KindKeepalive].Load() != keepalives+1 {
				t.Errorf("data on a session %v old was not accepted", tc.age)
			}
		})
	}
}

// G12, operator side: once its session is RejectAfterTime old by the operator's clock, the
// operator drops the drone's data on it as expired (a telemetry datagram held back by the
// network is not delivered) and sends nothing on it (a command is not transmitted while no
// new session can be agreed).
func TestClientExpiredSession(t *testing.T) {
	f := newFakeRig(t, nil) // the drone keeps real time
	start := time.Now()
	clock := newFakeClock(start)
	hooks := &Counters{}
	var telemetry atomic.Int64
	var rc *recordingConn
	alice, err := f.client(t, "alice", aliceAddr, func(c *ClientConfig) {
		rc = newRecordingConn(c.Conn)
		c.Conn, c.Now, c.Hooks = rc, clock.Now, hooks
		c.OnTelemetry = func([]byte) { telemetry.Add(1) }
	})
	if err != nil {
		t.Fatal(err)
	}
	if ack := command(t, alice, "arm"); ack.Status != AckOK {
		t.Fatalf("ack %v", ack.Status)
	}
	payload := []byte("telemetry to hold back, 0123456789")
	size := DataOverhead + TelemetryHeaderSize + len(payload)
	var mu sync.Mutex
	var held []byte
	var aliceData atomic.Int64
	f.net.Intercept(func(d fakenet.Datagram) []fakenet.Datagram {
		if d.From == droneAddr && d.To == aliceAddr {
			if len(d.Payload) == size && d.Payload[0] == typeByte(TypeData) {
				mu.Lock()
				if held == nil {
					held = bytes.Clone(d.Payload)
				}
				mu.Unlock()
			}
			return nil // nothing from the drone reaches alice from here on but what the test injects
		}
		if d.From == aliceAddr {
			if len(d.Payload) > 0 && d.Payload[0] == typeByte(TypeData) {
				aliceData.Add(1)
			}
			return nil // and the drone hears nothing from alice: no new session can be agreed
		}
		return []fakenet.Datagram{d}
	})
	if _, err := f.server.Broadcast(payload); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the telemetry datagram", func() bool { mu.Lock(); defer mu.Unlock(); return held != nil })
	clock.Set(start.Add(RejectAfterTime))
	aliceData.Store(0)
	commands := hooks.Sent[KindCommand].Load()

	t.Run("drops data", func(t *testing.T) {
		expired := hooks.Drop(DropExpired)
		injectTo(t, f.net, rc, droneAddr, aliceAddr, held)
		if hooks.Drop(DropExpired) != expired+1 || telemetry.Load() != 0 {
			t.Errorf("telemetry on an expired session: %d expired drops, %d delivered", hooks.Drop(DropExpired)-expired, telemetry.Load())
		}
	})
	t.Run("sends nothing", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if _, err := alice.Command(ctx, []byte("land")); err == nil {
			t.Fatal("a command was acknowledged on an expired session")
		}
		if got := hooks.Sent[KindCommand].Load() - commands; got != 0 {
			t.Errorf("the operator sent %d commands on an expired session", got)
		}
		if got := aliceData.Load(); got != 0 {
			t.Errorf("the operator sent %d data datagrams on an expired session", got)
		}
	})
	f.execs.check(t, 1)
}

// G2, key schedule: with the same PSK, secret s and transcript, a different X25519 shared
// secret gives different keys in every output.
func TestEphemeralContributionToKeys(t *testing.T) {
	testKeys(t)
	h := wireInitiator(t, testOp1, &testDrone.PublicKey, 0x0101, 0)
	init, err := h.Initiation(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	prefix := bytes.Repeat([]byte{0x42}, respOffConfirm)
	secret := bytes.Repeat([]byte{0x17}, secretSize)
	ei, err := crypto.GenerateX25519(nil)
	if err != nil {
		t.Fatal(err)
	}
	var scheds []schedule
	for range 2 {
		er, err := crypto.GenerateX25519(nil)
		if err != nil {
			t.Fatal(err)
		}
		shared, err := crypto.X25519(ei, er.PublicKey().Bytes())
		if err != nil {
			t.Fatal(err)
		}
		var k schedule
		if err := deriveKeys(&k, &testPSK, secret, shared, init, prefix); err != nil {
			t.Fatal(err)
		}
		scheds = append(scheds, k)
	}
	a, b := scheds[0], scheds[1]
	if a.toDrone == b.toDrone || a.toOperator == b.toOperator || a.resume == b.resume || a.confirm == b.confirm {
		t.Fatal("keys do not depend on the ephemeral keys")
	}
}

// G2, handshake: a recorded initiation replayed to a fresh responder (a rebooted drone,
// which has forgotten the timestamps) is accepted, with the same secret s, the same PSK and
// even the same drone index, but the drone's fresh ephemeral key makes every key differ.
func TestReplayedInitiationToFreshResponderGetsNewKeys(t *testing.T) {
	testKeys(t)
	h := wireInitiator(t, testOp1, &testDrone.PublicKey, 0x0101, 0)
	pkt, err := h.Initiation(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	var accepted []*Accepted
	for range 2 {
		r, _, _ := wireResponder(t) // a drone process that never saw the initiation
		var init Initiation
		if err := r.CheckInitiation(pkt, &init); err != nil {
			t.Fatal(err)
		}
		_, acc, err := r.AcceptInitiation(nil, &init, 0x0202, 0)
		if err != nil {
			t.Fatalf("a fresh drone refused the recorded initiation: %v", err)
		}
		accepted = append(accepted, acc)
	}
	a, b := accepted[0].Keys, accepted[1].Keys
	if a.Send == b.Send || a.Recv == b.Recv || a.Resume == b.Resume {
		t.Fatal("a replayed initiation agreed the original session's keys")
	}
}

// G2, end to end: alice's recorded initiations replayed to a restarted drone give
// sessions with other keys; her recorded data datagrams are dropped there and execute
// nothing, and would not open under the new keys even had the drone reused the index.
func TestReplayAfterDroneRestart(t *testing.T) {
	f := newFakeRig(t, nil)
	alice, err := f.client(t, "alice", aliceAddr, nil)
	if err != nil {
		t.Fatal(err)
	}
	if ack := command(t, alice, "arm"); ack.Status != AckOK {
		t.Fatalf("ack %v", ack.Status)
	}
	inits := f.sent(aliceAddr, TypeInitiation)
	data := f.sent(aliceAddr, TypeData)
	var oldResume [][crypto.AEADKeySize]byte
	f.server.mu.RLock()
	for _, ss := range f.server.sessions {
		if ss != nil {
			oldResume = append(oldResume, ss.resume)
		}
	}
	f.server.mu.RUnlock()
	if len(oldResume) == 0 {
		t.Fatal("no session on the first drone")
	}
	alice.Close()
	f.rig.stop() // the drone goes down and forgets everything
	conn, err := f.net.Listen(droneAddr)
	if err != nil {
		t.Fatal(err)
	}
	r2 := startServer(t, conn, nil)
	for _, p := range inits {
		injectTo(t, f.net, r2.conn, aliceAddr, droneAddr, p)
	}
	if r2.hooks.Handshakes[HandshakeOK].Load() == 0 {
		t.Fatalf("the restarted drone accepted none of %d recorded initiations (drops %v)", len(inits), dropMap(r2.hooks))
	}
	r2.server.mu.RLock()
	var fresh []*Session
	for _, ss := range r2.server.sessions {
		if ss == nil {
			continue
		}
		fresh = append(fresh, ss.Session)
		for _, old := range oldResume {
			if ss.resume == old {
				t.Errorf("a replayed initiation agreed the keys of the original session")
			}
		}
	}
	r2.server.mu.RUnlock()
	for i, p := range data {
		drops := totalDrops(r2.hooks)
		injectTo(t, f.net, r2.conn, aliceAddr, droneAddr, p)
		if totalDrops(r2.hooks) != drops+1 {
			t.Errorf("recorded data datagram %d was not dropped", i)
		}
		hdr, err := ParseDataHeader(p)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range fresh {
			if _, err := s.Open(nil, bytes.Clone(p), hdr, time.Now()); !errors.Is(err, ErrDecrypt) {
				t.Errorf("recorded data datagram %d under a new session's keys: %v, want ErrDecrypt", i, err)
			}
		}
	}
	if got := r2.hooks.Drop(DropUnknownSession) + r2.hooks.Drop(DropDecrypt); got != uint64(len(data)) {
		t.Errorf("%d unknown_session or decrypt drops of %d recorded data datagrams: %v", got, len(data), dropMap(r2.hooks))
	}
	r2.execs.check(t, 0)
}

// G13, through the server: 50 replayed initiations (each refused as stale, from several
// addresses) produce one warning line.
func TestRefusalWarningsRateLimited(t *testing.T) {
	h := &recordHandler{}
	f := newFakeRig(t, func(c *ServerConfig) { c.Logger = slog.New(h) })
	alice, err := f.client(t, "alice", aliceAddr, nil)
	if err != nil {
		t.Fatal(err)
	}
	command(t, alice, "arm")
	inits := f.sent(aliceAddr, TypeInitiation)
	before, refusedBefore := h.count(""), h.count("handshake refused")
	start := time.Now()
	for i := range 50 {
		from := netip.AddrPortFrom(attackerAddr.Addr(), uint16(1000+i))
		f.inject(t, from, inits[len(inits)-1])
	}
	if got := f.hooks.Drop(DropStale); got != 50 {
		t.Errorf("%d stale drops, want 50", got)
	}
	// One line per 10 s interval the injections spanned (one, unless the machine is very slow).
	allowed := 1 + int(time.Since(start)/(10*time.Second))
	if got := h.count("handshake refused") - refusedBefore; got > allowed {
		t.Errorf("%d \"handshake refused\" lines for 50 refusals", got)
	}
	if got := h.count("") - before; got > allowed {
		t.Errorf("%d log lines for 50 refused initiations", got)
	}
}

// G13, operator side: forged traffic to the operator's receive path (Client.handleDatagram)
// costs no allocation: error datagrams with a wrong PSK MAC or flipped bits, forged
// responses, data with a bad tag or for no session, the operator's own initiation and data
// reflected back to it, garbage and empty datagrams. Each is a counted drop.
func TestForgedTrafficToOperatorAllocatesNothing(t *testing.T) {
	testKeys(t)
	n, err := fakenet.New(fakenet.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	conn, err := n.Listen(aliceAddr)
	if err != nil {
		t.Fatal(err)
	}
	hooks := &Counters{}
	cfg := clientConfig(conn, droneAddr, "alice")
	cfg.Hooks = hooks
	if cfg, err = cfg.withDefaults(); err != nil {
		t.Fatal(err)
	}
	// A client in the middle of a rekey: a live session and an outstanding handshake, with
	// no goroutines, so only the receive path runs.
	c, err := newClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	op, drone := sessionPair(t, 0)
	c.current = op
	c.hs = wireInitiator(t, testOp1, &testDrone.PublicKey, 0x0101, op.remote)
	initPkt, err := c.hs.Initiation(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	now := op.Created().Add(time.Second) // the session is young

	responder, _, _ := wireResponder(t)
	var init Initiation
	if err := responder.CheckInitiation(initPkt, &init); err != nil {
		t.Fatal(err)
	}
	genuineErr, _ := responder.ErrorReply(nil, &init, ErrUnknownOperatorKey)
	otherPSK := testPSK
	otherPSK[2] ^= 4
	flippedErr := bytes.Clone(genuineErr)
	flippedErr[errOffCode] ^= 1
	forgedData := appendDataHeader(nil, op.local, 9)
	forgedData = append(forgedData, bytes.Repeat([]byte{7}, 40)...)
	noSession := appendDataHeader(nil, 0x4444, 9)
	noSession = append(noSession, bytes.Repeat([]byte{7}, 40)...)
	ownData, err := op.Seal(nil, AppendKeepalive(nil), now)
	if err != nil {
		t.Fatal(err)
	}
	_ = drone
	for _, tc := range []struct {
		name string
		pkt  []byte
		want DropReason
	}{
		{"error with a wrong PSK MAC", remacError(t, genuineErr, otherPSK), DropBadMAC},
		{"error with a flipped bit", flippedErr, DropBadMAC},
		{"forged response", wireSynthResponse(0x0202, 0x0101, 0), DropBadMAC},
		{"data with a bad tag", forgedData, DropDecrypt},
		{"data for no session", noSession, DropUnknownSession},
		{"own initiation reflected", initPkt, DropUnexpected},
		{"own data reflected", ownData, DropUnknownSession},
		{"garbage", bytes.Repeat([]byte{0xff}, 300), DropMalformed},
		{"empty", []byte{}, DropMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before, all := hooks.Drop(tc.want), totalDrops(hooks)
			c.handleDatagram(bytes.Clone(tc.pkt), now)
			if hooks.Drop(tc.want) != before+1 || totalDrops(hooks) != all+1 {
				t.Errorf("not dropped as %v: %v", tc.want, dropMap(hooks))
			}
			buf := bytes.Clone(tc.pkt)
			allocs := testing.AllocsPerRun(200, func() {
				copy(buf, tc.pkt) // the receive path decrypts in place
				c.handleDatagram(buf, now)
			})
			if allocs != 0 {
				t.Errorf("%v allocations per datagram", allocs)
			}
		})
	}
	if c.hs == nil || c.hs.State() != StateInitiationSent || c.Err() != nil || c.current != op {
		t.Errorf("forged traffic changed the client's state: hs %v, fatal %v", c.hs, c.Err())
	}
}

// G6: with the executor busy and the command queue full, further commands are answered
// busy and forgotten; once the executor is free, their retransmissions run, each once,
// and a retransmission of a command that ran is answered from the de-duplication cache.
func TestCommandBusyWhenQueueFull(t *testing.T) {
	gate := make(chan struct{})
	var once sync.Once
	release := func() { once.Do(func() { close(gate) }) }
	t.Cleanup(release)
	var execs *execLog
	f := newFakeRig(t, func(c *ServerConfig) {
		inner := c.Handler
		c.Handler = func(ctx context.Context, cmd Command) (AckStatus, []byte) {
			<-gate
			return inner(ctx, cmd)
		}
	})
	execs = f.execs
	o := rawHandshake(t, f, aliceAddr, InitiatorConfig{PSK: testPSK, OperatorKey: testOp1, DronePublic: &testDrone.PublicKey}, 0)
	if res := o.request(AppendLogin(nil, 1, "alice", []byte("alice-pw")), MsgLoginResult); LoginStatus(res.Status) != LoginOK {
		t.Fatalf("login: %v", LoginStatus(res.Status))
	}
	const total = DefaultCommandQueue + 10
	received := f.hooks.Received[KindCommand].Load()
	for id := uint64(100); id < 100+total; id++ {
		o.send(t, AppendCommand(nil, id, testCommand, fmt.Appendf(nil, "cmd %d", id)))
	}
	waitFor(t, "the drone to read every command", func() bool { return f.hooks.Received[KindCommand].Load()-received == total })
	busy := f.hooks.Commands[AckBusy].Load()
	// One command runs (blocked in the handler), the queue holds DefaultCommandQueue; the
	// executor may not have taken the first one yet.
	if busy < total-DefaultCommandQueue-1 || busy > total-DefaultCommandQueue {
		t.Fatalf("%d busy answers for %d commands and a queue of %d", busy, total, DefaultCommandQueue)
	}
	acks := map[uint64]AckStatus{}
	readAck := func() Message {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second) // keepalives alone must not keep it waiting
		for {
			if time.Now().After(deadline) {
				t.Fatal("no ack from the drone")
			}
			d := o.read(TypeData)
			hdr, _ := ParseDataHeader(d)
			plain, err := o.sess.Open(nil, d, hdr, time.Now())
			if err != nil {
				t.Fatal(err)
			}
			var m Message
			if err := ParseMessage(plain, &m); err != nil {
				t.Fatal(err)
			}
			if m.Type == MsgAck {
				return m
			}
		}
	}
	var busyIDs []uint64
	for range busy {
		m := readAck()
		if AckStatus(m.Status) != AckBusy {
			t.Fatalf("command %d answered %v before the executor was free", m.ID, AckStatus(m.Status))
		}
		busyIDs = append(busyIDs, m.ID)
		acks[m.ID] = AckBusy
	}
	execs.check(t, 0)
	release()
	for range total - int(busy) {
		m := readAck()
		if AckStatus(m.Status) != AckOK {
			t.Fatalf("queued command %d: %v", m.ID, AckStatus(m.Status))
		}
		if _, dup := acks[m.ID]; dup {
			t.Fatalf("command %d answered twice", m.ID)
		}
		acks[m.ID] = AckOK
	}
	execs.check(t, total-int(busy))
	// The busy ones were forgotten: their retransmissions run, once each.
	for _, id := range busyIDs {
		o.send(t, AppendCommand(nil, id, testCommand, fmt.Appendf(nil, "cmd %d", id)))
		if m := readAck(); m.ID != id || AckStatus(m.Status) != AckOK {
			t.Fatalf("retransmitted busy command %d: ack %d %v", id, m.ID, AckStatus(m.Status))
		}
	}
	// A command that ran is answered again, not run again.
	o.send(t, AppendCommand(nil, 100, testCommand, []byte("cmd 100")))
	if m := readAck(); m.ID != 100 || AckStatus(m.Status) != AckOK {
		t.Fatalf("retransmission of command 100: ack %d %v", m.ID, AckStatus(m.Status))
	}
	execs.check(t, total)
}

// dropMap is the nonzero drop counts by reason.
func dropMap(h *Counters) map[DropReason]uint64 {
	m := map[DropReason]uint64{}
	for r := range NumDropReasons {
		if n := h.Drop(r); n != 0 {
			m[r] = n
		}
	}
	return m
}

// #13 finding 3: a holder of the PSK who answers a running client's rekey with a genuine
// final refusal (the initiation's timestamp is in clear) must not end the client: the
// session goes on, and the rekey is tried again later and succeeds.
func TestRunningClientSurvivesRefusedRekey(t *testing.T) {
	f := newFakeRig(t, nil)
	var mu sync.Mutex
	var held [][]byte
	var block atomic.Bool
	f.net.Intercept(func(d fakenet.Datagram) []fakenet.Datagram {
		if block.Load() && d.From == aliceAddr && len(d.Payload) > 0 && d.Payload[0] == typeByte(TypeInitiation) {
			mu.Lock()
			held = append(held, bytes.Clone(d.Payload))
			mu.Unlock()
			return nil
		}
		return []fakenet.Datagram{d}
	})
	hooks := &Counters{}
	conn, err := f.net.Listen(aliceAddr)
	if err != nil {
		t.Fatal(err)
	}
	rc := newRecordingConn(conn)
	cfg := clientConfig(rc, droneAddr, "alice")
	cfg.Hooks = hooks
	cfg.RekeyAfterTime = time.Second
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	alice, err := Dial(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer alice.Close()
	block.Store(true)
	waitFor(t, "alice's rekey initiation", func() bool { mu.Lock(); defer mu.Unlock(); return len(held) > 0 })
	responder, _, _ := wireResponder(t)
	mu.Lock()
	latest := held[len(held)-1]
	mu.Unlock()
	var init Initiation
	if err := responder.CheckInitiation(latest, &init); err != nil {
		t.Fatal(err)
	}
	refusal, ok := responder.ErrorReply(nil, &init, ErrUnknownOperatorKey)
	if !ok {
		t.Fatal("no error reply")
	}
	injectTo(t, f.net, rc, droneAddr, aliceAddr, refusal)
	if got := hooks.Handshakes[HandshakeRefused].Load(); got != 1 {
		t.Fatalf("the refusal was not believed (%d)", got)
	}
	if err := alice.Err(); err != nil {
		t.Fatalf("a refused rekey ended the running client: %v", err)
	}
	rekeys := hooks.Rekeys.Load()
	block.Store(false)
	waitFor(t, "a later rekey", func() bool { return hooks.Rekeys.Load() > rekeys })
	if ack := command(t, alice, "still flying"); ack.Status != AckOK {
		t.Fatalf("ack %v", ack.Status)
	}
}
