package dtlslink

import (
	"context"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/dronelink/dronelink/pkg/app"
	"github.com/dronelink/dronelink/pkg/link"
)

// loopbackHost is the i-th extra host on the loopback range (127.0.0.2 and up), a source
// address of its own to the drone.
func loopbackHost(i int) netip.Addr { return netip.AddrFrom4([4]byte{127, 0, 0, byte(2 + i)}) }

// Peers without the PSK, from several addresses, start handshakes as fast as the drone's
// per-source limit lets them; none can finish (pion drops a Finished under the wrong PSK
// without an alert, so each waits out the handshake timeout). They must not fill the
// session table: a real operator connects and commands while they go on. (Before the
// application layer was shared, handshaking associations counted against MaxSessions and
// four such peers kept the operator out.)
func TestWrongPSKFloodDoesNotKeepOperatorOut(t *testing.T) {
	d := startDrone(t, func(c *ServerConfig) { c.MaxSessions = 4; c.HandshakeRate = 10; c.HandshakeBurst = 20 })
	wrong := testPSK
	wrong[0] ^= 0xff
	stop := make(chan struct{})
	var wg sync.WaitGroup
	defer wg.Wait()
	defer close(stop)
	for i := range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				if conn, err := handshakeFrom(loopbackHost(i), d.addr, "mallory", wrong[:], 300*time.Millisecond); err == nil {
					conn.Close()
					t.Error("a handshake with the wrong PSK completed")
				}
			}
		})
	}
	waitFor(t, "the flood to reach the drone", func() bool { return d.counters.Received[link.KindInitiation].Load() >= 40 })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	alice, err := Dial(ctx, clientConfig(d, "alice"))
	if err != nil {
		t.Fatalf("the operator could not connect during the flood: %v", err)
	}
	defer alice.Close()
	if ack, err := alice.Command(ctx, []byte("take off")); err != nil || ack.Status != link.AckOK {
		t.Fatalf("command during the flood: %v %v", ack.Status, err)
	}
}

// Any holder of the fleet PSK may claim any PSK identity. One who claims alice's and
// guesses her password as fast as the limits allow, from three addresses, exhausts only
// the buckets of its own addresses: alice, logging in from hers, gets in at once. (Before,
// the per-user bucket was shared by every address, and three addresses draining it at
// their allowed rate kept her out.)
func TestPasswordGuessingDoesNotLockOutUser(t *testing.T) {
	d := startDrone(t, func(c *ServerConfig) { c.LoginRate = 1; c.LoginBurst = 5 })
	var wg sync.WaitGroup
	defer wg.Wait()
	stop := make(chan struct{})
	defer close(stop)
	const guessers = 3
	limited := make(chan struct{}, guessers)
	for i := range guessers {
		mallory, err := handshakeFrom(loopbackHost(i), d.addr, "alice", testPSK[:], 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer mallory.Close()
		wg.Go(func() { // read the answers until the association ends
			buf := make([]byte, readBufferSize)
			var once sync.Once
			for {
				n, err := mallory.Read(buf)
				if err != nil {
					return
				}
				var m link.Message
				if link.ParseMessage(buf[:n], &m) == nil && m.Type == link.MsgLoginResult && link.LoginStatus(m.Status) == link.LoginRateLimited {
					once.Do(func() { limited <- struct{}{} })
				}
			}
		})
		wg.Go(func() { // guess every 20 ms: every token that comes back is taken at once
			for id := uint64(1); ; id++ {
				if _, err := mallory.Write(link.AppendLogin(nil, id, "alice", []byte("guess"))); err != nil {
					return
				}
				select {
				case <-stop:
					return
				case <-time.After(20 * time.Millisecond):
				}
			}
		})
	}
	for range guessers {
		select {
		case <-limited:
		case <-time.After(10 * time.Second):
			t.Fatal("the guesses were never rate limited")
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	alice, err := Dial(ctx, clientConfig(d, "alice"))
	if err != nil {
		t.Fatalf("alice was kept out by another PSK holder's guesses: %v", err)
	}
	alice.Close()
}

// The per-address login limits do not make a user's password guessable without bound from
// many addresses: over all addresses together, logins for one user stop at
// app.SharedIdentityCeiling times the per-user burst (then rate).
func TestLoginCeilingAcrossAddresses(t *testing.T) {
	d := startDrone(t, func(c *ServerConfig) { c.LoginRate = 0.001; c.LoginBurst = 1 })
	for i := range app.SharedIdentityCeiling + 1 {
		conn, err := handshakeFrom(loopbackHost(i), d.addr, "alice", testPSK[:], 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		if _, err := conn.Write(link.AppendLogin(nil, 1, "alice", []byte("guess"))); err != nil {
			t.Fatal(err)
		}
		want := link.LoginWrongPassword
		if i == app.SharedIdentityCeiling {
			want = link.LoginRateLimited // its own buckets are full: the ceiling refuses it
		}
		if m := readMessage(t, conn, 10*time.Second); m.Type != link.MsgLoginResult || link.LoginStatus(m.Status) != want {
			t.Fatalf("guess from address %d: %+v, want %v", i+1, m, want)
		}
	}
	if n := d.users.checks.Load(); n != app.SharedIdentityCeiling {
		t.Fatalf("%d password checks, want %d", n, app.SharedIdentityCeiling)
	}
}

// handshakingFrom counts the associations from src still handshaking: half-open ones and
// those past the cookie.
func (s *Server) handshakingFrom(src netip.Addr) (halfOpen, pastCookie int) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	for _, o := range s.sessions {
		switch {
		case o.done || o.source != src:
		case o.halfOpen.Load():
			halfOpen++
		default:
			pastCookie++
		}
	}
	return halfOpen, pastCookie
}

// ClientHellos that never return the cookie (as from spoofed addresses, one each) evict
// only each other: a handshake past the cookie, which proved its address, stays while
// any half-open one is there to go first.
func TestHalfOpenFloodSparesHandshakePastCookie(t *testing.T) {
	d := startDrone(t, func(c *ServerConfig) { c.MaxHandshakes = 3; c.HandshakeTimeout = 5 * time.Second })
	wrong := testPSK
	wrong[3] ^= 1
	peer := loopbackHost(0)
	done := make(chan struct{})
	go func() { // past the cookie, then stuck: its Finished is under another PSK
		defer close(done)
		if conn, err := handshakeFrom(peer, d.addr, "alice", wrong[:], 3*time.Second); err == nil {
			conn.Close()
		}
	}()
	defer func() { <-done }()
	waitFor(t, "a handshake past the cookie", func() bool { _, past := d.srv.handshakingFrom(peer); return past == 1 })
	for i := 1; i <= 6; i++ {
		hello, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(loopbackHost(i), 0)))
		if err != nil {
			t.Fatal(err)
		}
		defer hello.Close()
		if _, err := hello.WriteToUDPAddrPort(minimalClientHello(), d.addr); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "four evictions", func() bool { return d.counters.Drop(link.DropSessionLimit) == 4 })
	if _, past := d.srv.handshakingFrom(peer); past != 1 {
		t.Fatal("the handshake past the cookie was evicted while half-open ones were there")
	}
	if h, _ := d.srv.counts(); h != 3 {
		t.Fatalf("%d handshaking, want 3", h)
	}
}
