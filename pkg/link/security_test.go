package link

// Regression tests for security fixes of the link protocol:
//
//	H1  a rekey carries the login over only if the initiation's resume tag proves the
//	    replaced session's secrets (the operator's RSA key and the PSK are not enough);
//	H2  the drone remembers an executed command id for as long as any copy of the command
//	    can still authenticate, so a copy held back by an attacker never runs it twice;
//	M1  an initiation timestamp far ahead of a set drone clock is refused and not
//	    remembered, so it cannot lock the operator key out;
//	M2  a login naming a user whose key the session's key is not costs no password check
//	    and does not drain that user's login bucket.

import (
	"bytes"
	"crypto/hmac"
	cryptorand "crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/dronelink/dronelink/pkg/crypto"
	"github.com/dronelink/dronelink/pkg/link/fakenet"
)

// fakeClock is a drone clock that stands still until the test moves it.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock(t time.Time) *fakeClock { return &fakeClock{t: t} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Set(t time.Time) {
	c.mu.Lock()
	c.t = t
	c.mu.Unlock()
}

// rawOperator is an operator endpoint on the fake network that the test drives by hand:
// it plays an attacker who holds some of an operator's secrets but not others.
type rawOperator struct {
	t    *testing.T
	conn *fakenet.Conn
	sess *Session
	resp Response // the drone's response: its index and the flags
	buf  []byte
}

const rawLocal = 0x0777 // the raw operator's session index

// rawListen binds addr on the rig's network.
func rawListen(t *testing.T, f *fakeRig, addr netip.AddrPort) *rawOperator {
	t.Helper()
	conn, err := f.net.Listen(addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &rawOperator{t: t, conn: conn, buf: make([]byte, ReadBufferSize)}
}

// rawHandshake runs one handshake from addr with an Initiator built from cfg, through the
// network as a real client does, and sets up the operator's end of the session.
func rawHandshake(t *testing.T, f *fakeRig, addr netip.AddrPort, cfg InitiatorConfig, replaces uint16) *rawOperator {
	t.Helper()
	o := rawListen(t, f, addr)
	h, err := NewInitiator(cfg, rawLocal, replaces)
	if err != nil {
		t.Fatal(err)
	}
	pkt, err := h.Initiation(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := o.conn.WriteTo(pkt, droneAddr); err != nil {
		t.Fatal(err)
	}
	keys, r, err := h.ConsumeResponse(o.read(TypeResponse))
	if err != nil {
		t.Fatalf("response: %v", err)
	}
	o.sess, err = NewSession(&keys, rawLocal, r.Sender, 0, time.Now())
	keys.wipe()
	if err != nil {
		t.Fatal(err)
	}
	o.resp = r
	return o
}

// next returns the next datagram the drone sent to this operator.
func (o *rawOperator) next() []byte {
	o.t.Helper()
	if err := o.conn.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
		o.t.Fatal(err)
	}
	n, _, err := o.conn.ReadFrom(o.buf)
	if err != nil {
		o.t.Fatalf("waiting for the drone: %v", err)
	}
	return bytes.Clone(o.buf[:n])
}

// read returns the next datagram of type typ, skipping others; an error datagram fails
// the test unless typ is TypeError.
func (o *rawOperator) read(typ byte) []byte {
	o.t.Helper()
	for {
		pkt := o.next()
		got, _ := PeekType(pkt)
		if got == typ {
			return pkt
		}
		if got == TypeError {
			var e ErrorPacket
			err := ParseError(pkt, &e)
			o.t.Fatalf("the drone refused the initiation: %v %v", e.Code, err)
		}
	}
}

// request seals msg on the session, sends it and returns the first message of type want
// the drone answers with (keepalives and telemetry are skipped).
func (o *rawOperator) request(msg []byte, want byte) Message {
	o.t.Helper()
	pkt, err := o.sess.Seal(nil, msg, time.Now())
	if err != nil {
		o.t.Fatal(err)
	}
	if err := o.conn.WriteTo(pkt, droneAddr); err != nil {
		o.t.Fatal(err)
	}
	for {
		d := o.read(TypeData)
		h, err := ParseDataHeader(d)
		if err != nil {
			o.t.Fatalf("data header: %v", err)
		}
		plain, err := o.sess.Open(nil, d, h, time.Now())
		if err != nil {
			o.t.Fatalf("a datagram from the drone does not open: %v", err)
		}
		var m Message
		if err := ParseMessage(plain, &m); err != nil {
			o.t.Fatalf("message: %v", err)
		}
		if m.Type == want {
			return m
		}
	}
}

// sessionInfo returns the drone's view of its session idx.
func sessionInfo(f *fakeRig, idx uint16) (SessionInfo, bool) {
	for _, s := range f.server.Sessions() {
		if s.LocalIndex == idx {
			return s, true
		}
	}
	return SessionInfo{}, false
}

// H1: an attacker with alice's RSA key and the PSK, but neither her password nor the
// secrets of her session, names her live session as the one its initiation replaces. The
// drone must neither carry her login over nor let the new session supersede hers.
func TestLoginCarryOverNeedsResumeTag(t *testing.T) {
	f := newFakeRig(t, nil)
	alice, err := f.client(t, "alice", aliceAddr, nil)
	if err != nil {
		t.Fatal(err)
	}
	if ack := command(t, alice, "arm"); ack.Status != AckOK {
		t.Fatalf("alice: ack %v", ack.Status)
	}
	// What the attacker sees on the wire: the drone's index of alice's session.
	aliceData := f.sent(aliceAddr, TypeData)
	aliceIdx := binary.BigEndian.Uint16(aliceData[len(aliceData)-1][dataOffReceiver:])
	if info, ok := sessionInfo(f, aliceIdx); !ok || info.User != "alice" {
		t.Fatalf("captured index %#x is not alice's session: %+v", aliceIdx, f.server.Sessions())
	}
	passwordChecks := f.auth.logins.Load()
	wrongKey := make([]byte, 32)
	if _, err := cryptorand.Read(wrongKey); err != nil {
		t.Fatal(err)
	}
	executed := 1
	for i, tc := range []struct {
		name   string
		resume []byte
	}{
		{"no resume key (zero tag)", nil},
		{"wrong resume key", wrongKey},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rekeys := f.hooks.Rekeys.Load()
			addr := netip.AddrPortFrom(attackerAddr.Addr(), uint16(2000+i))
			o := rawHandshake(t, f, addr, InitiatorConfig{PSK: testPSK, OperatorKey: testOp1,
				DronePublic: &testDrone.PublicKey, ResumeKey: tc.resume}, aliceIdx)
			if o.resp.Flags&FlagLoginCarried != 0 {
				t.Errorf("the response carries alice's login over (flags %#x)", o.resp.Flags)
			}
			ack := o.request(AppendCommand(nil, uint64(0xbad0+i), testCommand, []byte("disarm")), MsgAck)
			if AckStatus(ack.Status) != AckNotLoggedIn {
				t.Errorf("attacker's command: ack %v, want %v", AckStatus(ack.Status), AckNotLoggedIn)
			}
			f.execs.check(t, executed)
			if info, ok := sessionInfo(f, o.resp.Sender); !ok || info.User != "" || info.Role != RoleNone {
				t.Errorf("attacker's session on the drone: %+v %v", info, ok)
			}
			// The attacker's session (now confirmed by its command) superseded nothing.
			if got := f.hooks.Rekeys.Load(); got != rekeys {
				t.Errorf("the drone counted %d rekeys: the attacker's session replaced alice's", got-rekeys)
			}
			f.server.mu.RLock()
			old := f.server.sessions[aliceIdx]
			superseded := old == nil || !old.supersededAt.IsZero()
			f.server.mu.RUnlock()
			if superseded {
				t.Errorf("alice's session is gone or retiring")
			}
			// Alice carries on in her own session.
			if ack := command(t, alice, fmt.Sprintf("still alice %d", i)); ack.Status != AckOK {
				t.Errorf("alice after the attack: ack %v", ack.Status)
			}
			executed++
			f.execs.check(t, executed)
			if info, ok := sessionInfo(f, aliceIdx); !ok || info.User != "alice" || info.Role != RolePilot {
				t.Errorf("alice's session on the drone: %+v %v", info, ok)
			}
		})
	}
	if got := f.auth.logins.Load(); got != passwordChecks {
		t.Errorf("%d password checks during the attack", got-passwordChecks)
	}
	if got := f.hooks.Logins[LoginOK].Load(); got != 1 {
		t.Errorf("%d successful logins, want alice's one", got)
	}

	// Control: the same construction with the right resume key (which only alice's client
	// holds; the test takes it from the drone) carries the login, so what refused the
	// attacker above was the tag and nothing else.
	t.Run("control: right resume key", func(t *testing.T) {
		f.server.mu.RLock()
		resume := bytes.Clone(f.server.sessions[aliceIdx].resume[:])
		f.server.mu.RUnlock()
		rekeys := f.hooks.Rekeys.Load()
		addr := netip.AddrPortFrom(attackerAddr.Addr(), 2100)
		o := rawHandshake(t, f, addr, InitiatorConfig{PSK: testPSK, OperatorKey: testOp1,
			DronePublic: &testDrone.PublicKey, ResumeKey: resume}, aliceIdx)
		if o.resp.Flags&FlagLoginCarried == 0 {
			t.Fatalf("the right resume tag did not carry the login (flags %#x)", o.resp.Flags)
		}
		if ack := o.request(AppendCommand(nil, 0xc0de, testCommand, []byte("hover")), MsgAck); AckStatus(ack.Status) != AckOK {
			t.Fatalf("command on the rekeyed session: ack %v", AckStatus(ack.Status))
		}
		f.execs.check(t, executed+1)
		if f.hooks.Rekeys.Load() != rekeys+1 {
			t.Errorf("the genuine rekey did not supersede the old session")
		}
	})
}

// H1, the genuine path: the Client rekeys with the resume key of its current session, and
// the drone carries the login over every time without another password check.
func TestRekeyCarriesLoginWithResumeTag(t *testing.T) {
	f := newFakeRig(t, nil)
	alice, err := f.client(t, "alice", aliceAddr, func(c *ClientConfig) { c.RekeyAfterTime = 300 * time.Millisecond })
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	n := 0
	for f.hooks.Rekeys.Load() < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("only %d rekeys after %d commands", f.hooks.Rekeys.Load(), n)
		}
		if ack := command(t, alice, fmt.Sprintf("cmd %d", n)); ack.Status != AckOK {
			t.Fatalf("command %d: ack %v", n, ack.Status)
		}
		n++
		time.Sleep(10 * time.Millisecond)
	}
	f.execs.check(t, n)
	if got := f.hooks.Logins[LoginOK].Load(); got != 1 {
		t.Errorf("%d logins: the login should carry over every rekey", got)
	}
	if got := f.auth.logins.Load(); got != 1 {
		t.Errorf("%d password checks, want 1", got)
	}
	// On the wire: the first initiation has a zero tag, every rekey initiation a nonzero
	// one, and the drone answered rekeys with the login carried.
	rekeyInits := 0
	for _, p := range f.sent(aliceAddr, TypeInitiation) {
		var init Initiation
		if err := ParseInitiation(p, &init); err != nil {
			t.Fatal(err)
		}
		zero := bytes.Equal(init.Resume, make([]byte, resumeSize))
		switch {
		case init.Replaces == 0 && !zero:
			t.Errorf("a first handshake carries a resume tag")
		case init.Replaces != 0 && zero:
			t.Errorf("a rekey initiation carries no resume tag")
		case init.Replaces != 0:
			rekeyInits++
		}
	}
	carried := 0
	for _, p := range f.sent(droneAddr, TypeResponse) {
		var r Response
		if err := ParseResponse(p, &r); err != nil {
			t.Fatal(err)
		}
		if r.Flags&FlagLoginCarried != 0 {
			carried++
		}
	}
	if rekeyInits < 2 || carried < 2 {
		t.Errorf("%d rekey initiations, %d responses with the login carried; want at least 2 each", rekeyInits, carried)
	}
}

// H1, unit level: both ends derive the same resume key, distinct from the traffic keys;
// an Initiator puts HMAC-SHA256(resume key, signed part) between the signature and the
// MAC only for a rekey it was given the key for, and zeros otherwise; the signature does
// not cover the tag but the PSK MAC does.
func TestInitiationResumeTag(t *testing.T) {
	r, _, _ := wireResponder(t)
	h1 := wireInitiator(t, testOp1, &testDrone.PublicKey, 0x0101, 0)
	pkt1, err := h1.Initiation(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	var init Initiation
	if err := r.CheckInitiation(pkt1, &init); err != nil {
		t.Fatal(err)
	}
	resp, acc, err := r.AcceptInitiation(nil, &init, 0x0202, 0)
	if err != nil {
		t.Fatal(err)
	}
	keys, _, err := h1.ConsumeResponse(resp)
	if err != nil {
		t.Fatal(err)
	}
	if keys.Resume != acc.Keys.Resume || keys.Resume == [32]byte{} || keys.Resume == keys.Send || keys.Resume == keys.Recv {
		t.Fatalf("resume keys: operator % x, drone % x", keys.Resume, acc.Keys.Resume)
	}
	sess, err := NewSession(&keys, 0x0101, 0x0202, 0, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if sess.resume != keys.Resume {
		t.Errorf("the session does not keep its resume key")
	}

	zeros := make([]byte, resumeSize)
	mac := wireMAC(t)
	for _, c := range []struct {
		name     string
		replaces uint16
		key      []byte
		tagged   bool
	}{
		{"rekey with the resume key", 0x0202, keys.Resume[:], true},
		{"rekey without a resume key", 0x0202, nil, false},
		{"resume key but nothing replaced", 0, keys.Resume[:], false},
	} {
		t.Run(c.name, func(t *testing.T) {
			h, err := NewInitiator(InitiatorConfig{PSK: testPSK, OperatorKey: testOp1, DronePublic: &testDrone.PublicKey, ResumeKey: c.key}, 0x0303, c.replaces)
			if err != nil {
				t.Fatal(err)
			}
			var tags [][]byte
			for range 2 {
				pkt, err := h.Initiation(time.Now())
				if err != nil {
					t.Fatal(err)
				}
				var in Initiation
				if err := r.CheckInitiation(pkt, &in); err != nil {
					t.Fatalf("CheckInitiation: %v", err)
				}
				want := zeros
				if c.tagged {
					m := hmac.New(sha256.New, keys.Resume[:])
					m.Write(in.Signed)
					want = m.Sum(nil)
				}
				n := len(pkt)
				if !bytes.Equal(in.Resume, want) || !bytes.Equal(pkt[n-2*32:n-32], want) {
					t.Errorf("resume tag % x, want % x", in.Resume, want)
				}
				if err := crypto.VerifyPSS(&testOp1.PublicKey, in.Signed, in.Signature); err != nil {
					t.Errorf("the signature does not verify over the signed part alone: %v", err)
				}
				if !mac.Verify(pkt[:n-32], pkt[n-32:]) {
					t.Errorf("the MAC does not cover the resume tag")
				}
				bad := bytes.Clone(pkt)
				bad[n-2*32] ^= 0x01
				if err := r.CheckInitiation(bad, &in); !errors.Is(err, ErrBadMAC) {
					t.Errorf("a changed resume tag passed the PSK MAC: %v", err)
				}
				tags = append(tags, bytes.Clone(pkt[n-2*32:n-32]))
			}
			// The tag is bound to its initiation: a retry (new timestamp, secret and
			// ephemeral key) has another one.
			if c.tagged && bytes.Equal(tags[0], tags[1]) {
				t.Errorf("two initiations share a resume tag")
			}
		})
	}
}

// H2: copies of a command that an attacker held back and delivers 61 s and 179 s later,
// while the session still accepts them, are acknowledged again but never executed again:
// the drone's de-duplication outlives every copy that can still authenticate.
func TestHeldBackCommandCopiesNeverRunTwice(t *testing.T) {
	if DedupLifetime <= MaxCommandLifetime+RejectAfterTime+PreviousSessionGrace {
		t.Fatalf("DedupLifetime %v does not outlive a command's copies", DedupLifetime)
	}
	start := time.Now()
	clock := newFakeClock(start) // the drone's clock; the client keeps real time
	f := newFakeRig(t, func(c *ServerConfig) {
		c.Now = clock.Now
		// The session must stay alive while the drone's clock jumps ahead: it ends only
		// at RejectAfterTime.
		c.SessionIdleTimeout = 10 * time.Minute
		c.KeepaliveInterval = 3 * time.Minute
	})
	alice, err := f.client(t, "alice", aliceAddr, nil)
	if err != nil {
		t.Fatal(err)
	}
	if ack := command(t, alice, "warm-up"); ack.Status != AckOK {
		t.Fatalf("warm-up: ack %v", ack.Status)
	}
	// The attacker holds back the first two datagrams of the next command (two
	// transmissions, or the two copies of one on a link seen as lossy); the third gets
	// through and runs.
	const payload = "land"
	size := DataOverhead + CommandHeaderSize + len(payload)
	var mu sync.Mutex
	var held [][]byte
	f.net.Intercept(func(d fakenet.Datagram) []fakenet.Datagram {
		if d.From == aliceAddr && len(d.Payload) == size && d.Payload[0] == typeByte(TypeData) {
			mu.Lock()
			defer mu.Unlock()
			if len(held) < 2 {
				held = append(held, bytes.Clone(d.Payload))
				return nil
			}
		}
		return []fakenet.Datagram{d}
	})
	ack := command(t, alice, payload)
	if ack.Status != AckOK || ack.Datagrams < 3 {
		t.Fatalf("ack %v after %d datagrams", ack.Status, ack.Datagrams)
	}
	f.execs.check(t, 2)
	mu.Lock()
	copies := held
	mu.Unlock()
	if len(copies) != 2 || bytes.Equal(copies[0][:DataHeaderSize], copies[1][:DataHeaderSize]) {
		t.Fatalf("held %d copies", len(copies))
	}

	for i, later := range []time.Duration{61 * time.Second, 179 * time.Second} {
		clock.Set(start.Add(later))
		time.Sleep(3 * timerTick) // the drone's timer loop expires the cache at the new time
		acks := f.hooks.Sent[KindAck].Load()
		drops := f.drops()
		f.inject(t, aliceAddr, copies[i])
		// The copy authenticated (no drop) and was answered from the cache.
		waitFor(t, "the drone to acknowledge the held-back copy", func() bool { return f.hooks.Sent[KindAck].Load() > acks })
		if got := f.drops(); fmt.Sprint(got) != fmt.Sprint(drops) {
			t.Errorf("+%v: the copy was dropped (%v before, %v after): the test did not reach the de-duplication", later, drops, got)
		}
		f.execs.check(t, 2)
	}
	if len(f.server.Sessions()) == 0 {
		t.Errorf("alice's session expired during the test")
	}
}

// handInitiation builds a genuine initiation from op with any timestamp, as Initiation
// does (the Initiator's timestamps are monotonic across the process, so a future one made
// with it would poison every later handshake of the test binary).
func handInitiation(t testing.TB, op *rsa.PrivateKey, ts uint64, sender uint16) []byte {
	t.Helper()
	eph, err := crypto.GenerateX25519(nil)
	if err != nil {
		t.Fatal(err)
	}
	secret := make([]byte, secretSize)
	if _, err := cryptorand.Read(secret); err != nil {
		t.Fatal(err)
	}
	wrapped, err := crypto.WrapSecret(nil, &testDrone.PublicKey, secret)
	if err != nil {
		t.Fatal(err)
	}
	init := Initiation{Sender: sender, Timestamp: ts, OperatorKey: crypto.KeyIDOf(&op.PublicKey),
		DroneKey: crypto.KeyIDOf(&testDrone.PublicKey), Wrapped: wrapped}
	copy(init.Ephemeral[:], eph.PublicKey().Bytes())
	pkt := appendInitiationBody(nil, &init)
	sig, err := crypto.SignPSS(nil, op, pkt)
	if err != nil {
		t.Fatal(err)
	}
	pkt = append(pkt, sig...)
	pkt = append(pkt, make([]byte, resumeSize)...)
	return wireMAC(t).Sum(pkt, pkt)
}

// M1, unit level.
func TestFutureTimestampRefusedAndNotRemembered(t *testing.T) {
	testKeys(t)
	now := time.Now()
	responder := func(t *testing.T, clock time.Time) (*Responder, *testAuth, *countingDroneKey, *Counters) {
		auth := newTestAuth()
		auth.add("alice", "alice-pw", RolePilot, testOp1)
		key := &countingDroneKey{DroneKey: NewDroneKey(testDrone)}
		hooks := &Counters{}
		r, err := NewResponder(ResponderConfig{PSK: testPSK, DroneKey: key, Operators: auth.LookupKey,
			Work: hooks.HandshakeWork, Now: func() time.Time { return clock }})
		if err != nil {
			t.Fatal(err)
		}
		return r, auth, key, hooks
	}
	accept := func(t *testing.T, r *Responder, pkt []byte) (*Initiation, error) {
		t.Helper()
		init := new(Initiation)
		if err := r.CheckInitiation(pkt, init); err != nil {
			t.Fatalf("CheckInitiation: %v", err)
		}
		_, _, err := r.AcceptInitiation(nil, init, 0x0909, 0)
		return init, err
	}
	at := func(d time.Duration) uint64 { return uint64(now.Add(d).UnixNano()) }

	t.Run("set clock", func(t *testing.T) {
		r, auth, key, hooks := responder(t, now)
		future := handInitiation(t, testOp1, at(MaxClockSkew+time.Second), 0x0101)
		init, err := accept(t, r, future)
		if !errors.Is(err, ErrStale) {
			t.Fatalf("initiation %v ahead: %v, want ErrStale", MaxClockSkew+time.Second, err)
		}
		if auth.lookups.Load() != 0 || key.unwraps.Load() != 0 || hooks.Work[WorkVerify].Load() != 0 {
			t.Errorf("the refusal cost a key lookup or RSA work")
		}
		reply, ok := r.ErrorReply(nil, init, err)
		var e ErrorPacket
		if !ok || ParseError(reply, &e) != nil || e.Code != CodeStale || e.Timestamp != init.Timestamp {
			t.Errorf("error reply %+v (%v)", e, ok)
		}
		// Not remembered: the operator's honest initiation right after is accepted.
		honest, err := wireInitiator(t, testOp1, &testDrone.PublicKey, 0x0102, 0).Initiation(time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := accept(t, r, honest); err != nil {
			t.Fatalf("honest initiation after the future one: %v", err)
		}
		if _, err := accept(t, r, future); !errors.Is(err, ErrStale) {
			t.Errorf("the future initiation again: %v", err)
		}
	})
	t.Run("exactly MaxClockSkew ahead", func(t *testing.T) {
		r, _, _, _ := responder(t, now)
		if _, err := accept(t, r, handInitiation(t, testOp1, at(MaxClockSkew), 0x0103)); err != nil {
			t.Fatalf("%v", err)
		}
	})
	// A drone whose clock was never set cannot judge: the bound is not applied (an
	// operator's correct clock is far ahead of the drone's 1970).
	for _, clock := range []time.Time{time.Unix(0, 0), ClockSaneAfter.Add(-time.Hour), ClockSaneAfter} {
		t.Run("unset clock "+clock.UTC().Format(time.DateOnly), func(t *testing.T) {
			r, _, _, _ := responder(t, clock)
			if _, err := accept(t, r, handInitiation(t, testOp1, at(0), 0x0104)); err != nil {
				t.Fatalf("an initiation at the operator's time: %v", err)
			}
			if _, err := accept(t, r, handInitiation(t, testOp1, at(time.Hour), 0x0105)); err != nil {
				t.Fatalf("an initiation an hour ahead: %v", err)
			}
		})
	}
}

// M1, end to end: a signed initiation of alice's key from a runaway clock an hour ahead
// is answered "stale" and does not lock alice out.
func TestFutureInitiationDoesNotLockOutKey(t *testing.T) {
	f := newFakeRig(t, nil)
	o := rawListen(t, f, attackerAddr)
	future := handInitiation(t, testOp1, uint64(time.Now().Add(time.Hour).UnixNano()), 0x0404)
	if err := o.conn.WriteTo(future, droneAddr); err != nil {
		t.Fatal(err)
	}
	reply := o.next()
	if typ, _ := PeekType(reply); typ != TypeError {
		t.Fatalf("the drone answered the future initiation with a type %d datagram, want an error", typ)
	}
	var e ErrorPacket
	if err := ParseError(reply, &e); err != nil || e.Code != CodeStale || e.Receiver != 0x0404 {
		t.Fatalf("error datagram %+v: %v", e, err)
	}
	if f.hooks.Drop(DropStale) != 1 || f.key.unwraps.Load() != 0 {
		t.Errorf("drops %v, %d unwraps", f.drops(), f.key.unwraps.Load())
	}
	alice, err := f.client(t, "alice", aliceAddr, nil)
	if err != nil {
		t.Fatalf("alice after the future initiation: %v", err)
	}
	if ack := command(t, alice, "arm"); ack.Status != AckOK {
		t.Fatalf("ack %v", ack.Status)
	}
}

// M2: bob's session sending logins for alice gets "key not authorised" without a password
// check, and alice's login bucket stays full: she logs in at the first attempt even with
// the default-like rate (1/s, burst 5) and a drone clock that stands still (no refill).
func TestLoginForAnotherUsersKeyCostsNothing(t *testing.T) {
	clock := newFakeClock(time.Now())
	f := newFakeRig(t, func(c *ServerConfig) {
		c.Now = clock.Now
		c.LoginRate, c.LoginBurst = 1, 5
	})
	bob := rawHandshake(t, f, bobAddr, InitiatorConfig{PSK: testPSK, OperatorKey: testOp2, DronePublic: &testDrone.PublicKey}, 0)
	const attempts = 20
	for i := range attempts {
		res := bob.request(AppendLogin(nil, uint64(100+i), "alice", fmt.Appendf(nil, "guess %d", i)), MsgLoginResult)
		status := LoginStatus(res.Status)
		// The first ones are judged on the key alone; once bob's own key has used its
		// burst it may be rate limited, never alice.
		ok := status == LoginKeyNotAuthorised || (i >= 5 && status == LoginRateLimited)
		if !ok || res.ID != uint64(100+i) || res.Role != RoleNone {
			t.Errorf("attempt %d: %v role %v", i, status, res.Role)
		}
	}
	if got := f.auth.logins.Load(); got != 0 {
		t.Errorf("bob's logins for alice cost %d password checks", got)
	}
	if got := f.hooks.Logins[LoginKeyNotAuthorised].Load(); got < 5 {
		t.Errorf("%d key_not_authorised answers", got)
	}
	hooks := &Counters{}
	alice, err := f.client(t, "alice", aliceAddr, func(c *ClientConfig) { c.Hooks = hooks })
	if err != nil {
		t.Fatalf("alice after %d logins for her from bob's key: %v", attempts, err)
	}
	if hooks.Logins[LoginOK].Load() != 1 || hooks.Logins[LoginRateLimited].Load() != 0 {
		t.Errorf("alice's logins: %d ok, %d rate limited", hooks.Logins[LoginOK].Load(), hooks.Logins[LoginRateLimited].Load())
	}
	if ack := command(t, alice, "arm"); ack.Status != AckOK {
		t.Fatalf("ack %v", ack.Status)
	}
	if got := f.auth.logins.Load(); got != 1 {
		t.Errorf("%d password checks, want alice's 1", got)
	}
}
