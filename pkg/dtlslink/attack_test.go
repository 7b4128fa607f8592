package dtlslink

import (
	"context"
	"net/netip"
	"sync"
	"testing"
	"time"

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
