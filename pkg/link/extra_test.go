package link

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dronelink/dronelink/pkg/crypto"
	"github.com/dronelink/dronelink/pkg/link/fakenet"
)

// The drone's second socket in these tests, and the peer addresses it owns: a stand-in for
// the NATS relay (package relay), whose peers have synthetic unique-local IPv6 addresses.
var (
	extraDroneAddr = netip.MustParseAddrPort("[fd00::1]:1")
	extraPrefix    = netip.MustParsePrefix("fd00::/16")
)

// prefixConn is an ExtraConn over a fakenet socket that owns the peer addresses in prefix.
// While a gate is set, its WriteTo signals entered and blocks until the gate is closed: a
// relay whose broker stopped reading (a full TCP window, a hostile server).
type prefixConn struct {
	PacketConn
	prefix  netip.Prefix
	gate    atomic.Pointer[chan struct{}]
	entered chan struct{}
}

func (c *prefixConn) Owns(a netip.AddrPort) bool { return c.prefix.Contains(a.Addr()) }

func (c *prefixConn) WriteTo(b []byte, a netip.AddrPort) error {
	if g := c.gate.Load(); g != nil {
		select {
		case c.entered <- struct{}{}:
		default:
		}
		<-*g
	}
	return c.PacketConn.WriteTo(b, a)
}

// block makes the conn's writes block until the returned release is called (idempotent,
// also run at the end of the test).
func (c *prefixConn) block(t *testing.T) (release func()) {
	g := make(chan struct{})
	c.gate.Store(&g)
	var once sync.Once
	release = func() {
		once.Do(func() {
			c.gate.Store(nil)
			close(g)
		})
	}
	t.Cleanup(release)
	return release
}

// newTwoSocketRig runs a drone server on a fakenet "UDP" socket (droneAddr) and, as an
// ExtraConn, a second socket (extraDroneAddr) that owns extraPrefix: two readers calling
// handleDatagram concurrently on one table of sessions, as with --listen and --relay.
func newTwoSocketRig(t *testing.T, mutate func(*ServerConfig)) (*rig, *fakenet.Network, *prefixConn) {
	t.Helper()
	n, err := fakenet.New(fakenet.Config{Seed: 1, QueueLen: 1 << 14})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	udp, err := n.Listen(droneAddr)
	if err != nil {
		t.Fatal(err)
	}
	rc, err := n.Listen(extraDroneAddr)
	if err != nil {
		t.Fatal(err)
	}
	extra := &prefixConn{PacketConn: rc, prefix: extraPrefix, entered: make(chan struct{}, 1)}
	r := startServer(t, udp, func(c *ServerConfig) {
		c.Extra = []ExtraConn{extra}
		if mutate != nil {
			mutate(c)
		}
	})
	return r, n, extra
}

// dualConn is an operator socket with a foot on each of the drone's sockets: each datagram
// goes to the drone's UDP address, to its second socket, or to both (a copy racing on each
// path), and the drone's answers are read from either. The session roams between the two
// sockets with every datagram.
type dualConn struct {
	udp, extra PacketConn
	both       bool
	n          atomic.Uint64
	in         chan []byte
	done       chan struct{}
	closeOnce  sync.Once
	wg         sync.WaitGroup
}

func newDualConn(t *testing.T, n *fakenet.Network, udpAddr, extraAddr netip.AddrPort, both bool) *dualConn {
	t.Helper()
	udp, err := n.Listen(udpAddr)
	if err != nil {
		t.Fatal(err)
	}
	extra, err := n.Listen(extraAddr)
	if err != nil {
		t.Fatal(err)
	}
	d := &dualConn{udp: udp, extra: extra, both: both, in: make(chan []byte, 256), done: make(chan struct{})}
	for _, c := range []PacketConn{udp, extra} {
		d.wg.Go(func() {
			buf := make([]byte, ReadBufferSize)
			for {
				k, _, err := c.ReadFrom(buf)
				if err != nil {
					return
				}
				select {
				case d.in <- bytes.Clone(buf[:k]):
				case <-d.done:
					return
				}
			}
		})
	}
	return d
}

func (d *dualConn) ReadFrom(b []byte) (int, netip.AddrPort, error) {
	select {
	case p := <-d.in:
		return copy(b, p), droneAddr, nil
	case <-d.done:
		return 0, netip.AddrPort{}, fmt.Errorf("dualConn: %w", net.ErrClosed)
	}
}

func (d *dualConn) WriteTo(b []byte, _ netip.AddrPort) error {
	i := d.n.Add(1)
	if d.both || i%2 == 0 {
		if err := d.udp.WriteTo(b, droneAddr); err != nil {
			return err
		}
	}
	if d.both || i%2 == 1 {
		return d.extra.WriteTo(b, extraDroneAddr)
	}
	return nil
}

func (d *dualConn) LocalAddr() netip.AddrPort { return d.udp.LocalAddr() }

func (d *dualConn) Close() error {
	d.closeOnce.Do(func() {
		close(d.done)
		d.udp.Close()
		d.extra.Close()
	})
	d.wg.Wait()
	return nil
}

// TestTwoReadersConcurrently runs, at once, operators on the drone's UDP socket, operators
// on its second socket (the relay's place), and operators whose every datagram goes out on
// one socket or the other alternately (roaming at each datagram) or on both (every copy of
// every handshake and command racing through both readers), each rekeying every 300 ms and
// commanding, while key requests arrive on both sockets and the drone broadcasts telemetry.
// Every command must be acknowledged and executed once. Under -race it checks that the
// handshake path, the session table, roaming, the rate limiters and the application layer
// hold with two readers calling handleDatagram concurrently.
func TestTwoReadersConcurrently(t *testing.T) {
	r, n, _ := newTwoSocketRig(t, nil)
	type op struct {
		name       string
		user       string
		conn       func() PacketConn
		droneAddr  netip.AddrPort
		dual, both bool
	}
	listen := func(a string) func() PacketConn {
		return func() PacketConn {
			c, err := n.Listen(netip.MustParseAddrPort(a))
			if err != nil {
				t.Fatal(err)
			}
			return c
		}
	}
	ops := []op{
		{name: "alice-udp", user: "alice", conn: listen("10.0.1.10:4000"), droneAddr: droneAddr},
		{name: "bob-extra", user: "bob", conn: listen("[fd00::10]:4000"), droneAddr: extraDroneAddr},
		{name: "alice-alternate", user: "alice", droneAddr: droneAddr, dual: true},
		{name: "bob-both", user: "bob", droneAddr: droneAddr, dual: true, both: true},
	}
	const commands, rekeys = 15, 3
	var executed atomic.Int64
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	var wg sync.WaitGroup
	errs := make(chan error, len(ops)+8)
	for i, o := range ops {
		wg.Go(func() {
			var conn PacketConn
			if o.dual {
				conn = newDualConn(t, n, netip.MustParseAddrPort(fmt.Sprintf("10.0.2.%d:4000", i)),
					netip.MustParseAddrPort(fmt.Sprintf("[fd00::2:%d]:4000", i)), o.both)
			} else {
				conn = o.conn()
			}
			cfg := clientConfig(conn, o.droneAddr, o.user)
			cfg.RekeyAfterTime = 100 * time.Millisecond
			hooks := &Counters{}
			cfg.Hooks = hooks
			c, err := Dial(ctx, cfg)
			if err != nil {
				conn.Close()
				errs <- fmt.Errorf("%s: dial: %w", o.name, err)
				return
			}
			defer c.Close()
			// At least `commands` commands, and on until this operator has rekeyed
			// rekeys times: the handshakes of every operator interleave with the others'.
			for k := 0; k < commands || hooks.Rekeys.Load() < rekeys; k++ {
				// Independent: two of these operators share a key, and each process
				// orders its own commands only (one key per device).
				ack, err := c.CommandWith(ctx, fmt.Appendf(nil, "%s %d", o.name, k), CommandOptions{Independent: true})
				if err != nil || ack.Status != AckOK {
					errs <- fmt.Errorf("%s: command %d: %v %v", o.name, k, ack.Status, err)
					return
				}
				executed.Add(1)
			}
		})
	}
	// Key requests on both sockets, and telemetry, meanwhile.
	for i, to := range []netip.AddrPort{droneAddr, extraDroneAddr, droneAddr, extraDroneAddr} {
		wg.Go(func() {
			from := netip.MustParseAddrPort(fmt.Sprintf("10.0.3.%d:4000", i))
			if to == extraDroneAddr {
				from = netip.MustParseAddrPort(fmt.Sprintf("[fd00::3:%d]:4000", i))
			}
			c, err := n.Listen(from)
			if err != nil {
				errs <- err
				return
			}
			if _, err := RequestDroneKey(ctx, KeyRequestConfig{Conn: c, Drone: to, PSK: testPSK}); err != nil {
				errs <- fmt.Errorf("key request to %s: %w", to, err)
			}
		})
	}
	stop := make(chan struct{})
	var telemetry sync.WaitGroup
	telemetry.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := r.server.Broadcast([]byte("telemetry")); err != nil {
				errs <- err
				return
			}
			runtime.Gosched()
		}
	})
	wg.Wait()
	close(stop)
	telemetry.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	r.execs.check(t, int(executed.Load()))
	t.Logf("drone: %s", countersSummary(r.hooks))
}

// keyRequestFor is a key request with a valid PSK MAC and a fixed nonce.
func keyRequestFor(t *testing.T) []byte {
	t.Helper()
	macKey, err := PSKMACKey(&testPSK)
	if err != nil {
		t.Fatal(err)
	}
	var nonce [nonceSize]byte
	nonce[0] = 1
	return appendKeyRequest(nil, &nonce, crypto.NewMAC(macKey))
}

// TestBlockedExtraWriteDoesNotStallOtherSocket: the relay's WriteTo can block: nats.go
// writes to the server's TCP connection itself once 32 KiB wait in its buffer, for up to
// its FlusherTimeout (a minute by default), so a relay server that stops reading (a full
// window on a congested LTE link, or a hostile relay) holds the drone's writes to relay
// peers. Those writes must not hold up the UDP socket's operators: here a key request
// comes through the relay and the drone's answer blocks; then anyone on the radio path
// sends an initiation-type datagram to the UDP socket (one without the PSK MAC, which the
// drone drops at once), and alice, logged in over UDP, commands. On 0a207a1 the relay
// reader held hsMu across the blocked write, the UDP reader waited for hsMu at the forged
// initiation, and alice's command (and everything else on UDP) waited behind it.
func TestBlockedExtraWriteDoesNotStallOtherSocket(t *testing.T) {
	r, n, extra := newTwoSocketRig(t, nil)
	conn, err := n.Listen(aliceAddr)
	if err != nil {
		t.Fatal(err)
	}
	alice := dial(t, clientConfig(conn, droneAddr, "alice"))
	if ack := command(t, alice, "before"); ack.Status != AckOK {
		t.Fatalf("before: %v", ack.Status)
	}

	release := extra.block(t)
	if err := n.Inject(fakenet.Datagram{From: netip.MustParseAddrPort("[fd00::5]:1"), To: extraDroneAddr, Payload: keyRequestFor(t)}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-extra.entered:
	case <-time.After(20 * time.Second):
		t.Fatal("the drone never answered the key request through the second socket")
	}
	forged := make([]byte, MinInitiationSize)
	forged[0] = typeByte(TypeInitiation)
	if err := n.Inject(fakenet.Datagram{From: netip.MustParseAddrPort("10.0.9.9:4000"), To: droneAddr, Payload: forged}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ack, err := alice.Command(ctx, []byte("during"))
	if err != nil || ack.Status != AckOK {
		t.Fatalf("alice's command over UDP while a write to a relay peer is blocked: %v %v (drone: %s)", ack.Status, err, countersSummary(r.hooks))
	}
	release()
}

// TestDatagramFromAnotherSocketsAddressDropped: a peer address belongs to one socket (the
// relay's synthetic addresses to the relay). A datagram that arrives on the UDP socket
// from one of them has a spoofed source (on a local IPv6 network anyone can send from a
// unique-local address); answering it would send the drone's answer, or a session's
// traffic after roaming, to the relay peer that owns the address, and spend that peer's
// handshake rate limit. It is dropped (malformed) instead; the same request from an
// address of the UDP socket's is answered.
func TestDatagramFromAnotherSocketsAddressDropped(t *testing.T) {
	r, n, _ := newTwoSocketRig(t, nil)
	handled := func() uint64 {
		return r.hooks.Sent[KindKeyAnswer].Load() + r.hooks.Drop(DropMalformed)
	}
	for _, tc := range []struct {
		from   string
		answer bool
	}{
		{"[fd00::10]:4000", false}, // owned by the second socket, arriving on UDP
		{"10.0.5.5:4000", true},
	} {
		answers, before := r.hooks.Sent[KindKeyAnswer].Load(), handled()
		if err := n.Inject(fakenet.Datagram{From: netip.MustParseAddrPort(tc.from), To: droneAddr, Payload: keyRequestFor(t)}); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "the drone to handle the key request", func() bool { return handled() > before })
		if got := r.hooks.Sent[KindKeyAnswer].Load() > answers; got != tc.answer {
			t.Errorf("key request on the UDP socket from %s: answered %v, want %v (drone: %s)", tc.from, got, tc.answer, countersSummary(r.hooks))
		}
	}
}

// TestRelaySourcesCannotFillUDPHandshakeTable: the per-source handshake limiter keeps a
// bounded table of sources (4096) and fails closed when it is full of busy buckets. A
// relay source address is whatever reply subject a publisher makes up: one NATS user with
// the PSK (or with one recorded initiation) has as many sources as messages. On 0a207a1
// the relay's sources and the UDP socket's shared one table, so a flood through the relay
// refused every new UDP operator's handshake and key request (rate_limited) while it
// lasted. Here the drone's clock stands still (no bucket refills), 4096 key requests come
// through the second socket from 4096 sources, and then one from a new UDP source must
// still be answered.
func TestRelaySourcesCannotFillUDPHandshakeTable(t *testing.T) {
	start := time.Now()
	r, n, _ := newTwoSocketRig(t, func(c *ServerConfig) {
		c.Now = func() time.Time { return start }
		c.HandshakeRate, c.HandshakeBurst = 10, 20
	})
	req := keyRequestFor(t)
	const sources = 4096
	before := r.hooks.Sent[KindKeyAnswer].Load()
	for i := range sources {
		from := netip.AddrPortFrom(netip.AddrFrom16([16]byte{0: 0xfd, 14: byte(i >> 8), 15: byte(i)}), 4000)
		if err := n.Inject(fakenet.Datagram{From: from, To: extraDroneAddr, Payload: req}); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "the drone to answer the flood", func() bool { return r.hooks.Sent[KindKeyAnswer].Load() >= before+sources })
	answers, limited := r.hooks.Sent[KindKeyAnswer].Load(), r.hooks.Drop(DropRateLimited)
	if err := n.Inject(fakenet.Datagram{From: netip.MustParseAddrPort("10.0.5.6:4000"), To: droneAddr, Payload: req}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the drone to handle the UDP key request", func() bool {
		return r.hooks.Sent[KindKeyAnswer].Load() > answers || r.hooks.Drop(DropRateLimited) > limited
	})
	if r.hooks.Sent[KindKeyAnswer].Load() == answers {
		t.Fatalf("a key request from a new UDP source was refused after %d relay sources (drone: %s)", sources, countersSummary(r.hooks))
	}
}
