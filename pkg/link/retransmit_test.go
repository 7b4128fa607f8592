package link

import (
	"crypto/rsa"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/dronelink/dronelink/pkg/app"
	"github.com/dronelink/dronelink/pkg/crypto"
)

// The operator's initiation schedule, driven through the client's timer function on a
// fake clock (no goroutines, no sleeping, no real time measured).

// initiationConn records when each initiation was written, on the client's clock.
type initiationConn struct {
	now    func() time.Time
	mu     sync.Mutex
	at     []time.Time
	last   []byte
	closed chan struct{}
	once   sync.Once
}

func newInitiationConn(now func() time.Time) *initiationConn {
	return &initiationConn{now: now, closed: make(chan struct{})}
}

func (c *initiationConn) ReadFrom([]byte) (int, netip.AddrPort, error) {
	<-c.closed
	return 0, netip.AddrPort{}, net.ErrClosed
}

func (c *initiationConn) WriteTo(b []byte, _ netip.AddrPort) error {
	if typ, ok := PeekType(b); ok && typ == TypeInitiation {
		c.mu.Lock()
		c.at = append(c.at, c.now())
		c.last = append(c.last[:0], b...)
		c.mu.Unlock()
	}
	return nil
}

func (c *initiationConn) LocalAddr() netip.AddrPort { return aliceAddr }
func (c *initiationConn) Close() error              { c.once.Do(func() { close(c.closed) }); return nil }

// rounds groups the initiations by the instant their round began (a round's initiations
// go out together, each after the previous one's RSA signature: within a few
// milliseconds of real time, at one instant of the fake clock).
func (c *initiationConn) rounds() (starts []time.Time, sizes []int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, at := range c.at {
		if n := len(starts); n > 0 && at.Equal(starts[n-1]) {
			sizes[n-1]++
			continue
		}
		starts, sizes = append(starts, at), append(sizes, 1)
	}
	return starts, sizes
}

// scheduleRig is a client on an initiationConn and a fake clock, with no goroutines.
type scheduleRig struct {
	clock *fakeClock
	conn  *initiationConn
	c     *Client
}

func newScheduleRig(t *testing.T, fixed bool) *scheduleRig {
	t.Helper()
	testKeys(t)
	clock := newFakeClock(time.Unix(1_700_000_000, 0))
	conn := newInitiationConn(clock.Now)
	cfg, err := ClientConfig{Conn: conn, Drone: droneAddr, PSK: testPSK, OperatorKey: testOp1,
		DronePublic: &testDrone.PublicKey, User: "alice", Now: clock.Now, FixedTimers: fixed}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	c, err := newClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &scheduleRig{clock: clock, conn: conn, c: c}
}

// start starts a handshake, replacing the drone's index replaces (0 for none).
func (r *scheduleRig) start(t *testing.T, replaces uint16) {
	t.Helper()
	r.c.mu.Lock()
	err := r.c.startHandshakeLocked(replaces, r.clock.Now())
	r.c.mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
}

// run ticks the client every 5 ms of fake time for d.
func (r *scheduleRig) run(d time.Duration) {
	for end := r.clock.Now().Add(d); r.clock.Now().Before(end); {
		r.clock.Set(r.clock.Now().Add(5 * time.Millisecond))
		r.c.tick(r.clock.Now())
	}
}

// checkGaps checks that round i+1 began base·2^i (at most HandshakeRetryMax) after round
// i, plus at most a quarter of jitter and the 5 ms tick.
func checkGaps(t *testing.T, starts []time.Time, base func(round int) time.Duration) {
	t.Helper()
	for i := 1; i < len(starts); i++ {
		d := min(base(i)<<(i-1), HandshakeRetryMax)
		if gap := starts[i].Sub(starts[i-1]); gap < d || gap > d+d/4+5*time.Millisecond {
			t.Errorf("round %d began %v after round %d, want %v to %v", i+1, gap, i, d, d+d/4+5*time.Millisecond)
		}
	}
}

// A cold start: before the first session, while the drone says nothing, rounds 2 and 3
// send ColdStartInitiations initiations each; then single ones on the fixed backoff. A
// refusal from the drone (it is there, and busy) or FixedTimers keeps every round single.
func TestColdStartInitiations(t *testing.T) {
	cold := []int{1, ColdStartInitiations, ColdStartInitiations, 1, 1}
	for _, c := range []struct {
		name    string
		fixed   bool
		refused bool
		want    []int
	}{
		{"nothing heard", false, false, cold},
		{"fixed timers", true, false, []int{1, 1, 1, 1, 1}},
		{"refused", false, true, []int{1, 1, 1, 1, 1}},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := newScheduleRig(t, c.fixed)
			r.start(t, 0)
			if c.refused {
				refuseBusy(t, r)
			}
			r.run(7 * time.Second)
			starts, sizes := r.conn.rounds()
			if len(sizes) < len(c.want) {
				t.Fatalf("rounds %v", sizes)
			}
			for i, want := range c.want {
				if sizes[i] != want {
					t.Errorf("rounds of %v initiations, want %v", sizes[:len(c.want)], c.want)
					break
				}
			}
			checkGaps(t, starts, func(int) time.Duration { return HandshakeRetryInitial })
			if got := r.c.hs.Attempts(); got != sum(sizes) {
				t.Errorf("the initiator built %d initiations, %d went out", got, sum(sizes))
			}
		})
	}
}

// refuseBusy answers the last initiation of r's client with a busy refusal, as a drone
// at its handshake rate limit does.
func refuseBusy(t *testing.T, r *scheduleRig) {
	t.Helper()
	resp, err := NewResponder(ResponderConfig{PSK: testPSK, DroneKey: NewDroneKey(testDrone),
		Operators: func(crypto.KeyID) (*rsa.PublicKey, bool) { return nil, false }})
	if err != nil {
		t.Fatal(err)
	}
	r.conn.mu.Lock()
	pkt := append([]byte(nil), r.conn.last...)
	r.conn.mu.Unlock()
	var init Initiation
	if err := ParseInitiation(pkt, &init); err != nil {
		t.Fatal(err)
	}
	reply, ok := resp.ErrorReply(nil, &init, ErrRateLimited)
	if !ok {
		t.Fatal("no busy reply")
	}
	r.c.handleError(reply)
	if !r.c.hsHeard || r.c.hs == nil {
		t.Fatal("the refusal was not taken")
	}
}

func sum(s []int) int {
	n := 0
	for _, v := range s {
		n += v
	}
	return n
}

// A rekey's initiations follow the round trip: the application layer's retransmission
// timeout plus however much longer the last handshake took than the smoothed round trip,
// doubling per round up to HandshakeRetryMax. With fixed timers: HandshakeRetryInitial.
func TestRekeyInitiationsFollowTheRoundTrip(t *testing.T) {
	for _, fixed := range []bool{false, true} {
		r := newScheduleRig(t, fixed)
		mine, _ := sessionPair(t, 0)
		r.c.current = mine
		r.c.rtt = 45 * time.Millisecond // the last handshake: the drone's RSA work on top
		for range 40 {
			r.c.up.RoundTripSample(40 * time.Millisecond)
		}
		e := r.c.Client.Estimate()
		base := HandshakeRetryInitial
		if !fixed {
			if e.RTO != 50*time.Millisecond || e.SRTT != 40*time.Millisecond {
				t.Fatalf("estimate %+v", e)
			}
			base = e.RTO + 5*time.Millisecond
		}
		r.start(t, mine.remote)
		r.run(5 * time.Second)
		starts, sizes := r.conn.rounds()
		for _, n := range sizes {
			if n != 1 {
				t.Fatalf("fixed %v: a rekey sent rounds of %v initiations", fixed, sizes)
			}
		}
		if len(starts) < 4 {
			t.Fatalf("fixed %v: %d rounds", fixed, len(starts))
		}
		checkGaps(t, starts, func(int) time.Duration { return base })
	}
}

// The handshake's round trip (from the initiation the drone answered to its response) is
// the estimate's first sample: after Dial, before any command, the estimate is RFC 6298's
// after one sample R (SRTT R, RTTVAR R/2). The login's answer is no sample: it waits for a
// password check.
func TestHandshakeRoundTripSeedsTheEstimate(t *testing.T) {
	f := newFakeRig(t, nil)
	alice, err := f.client(t, "alice", aliceAddr, nil)
	if err != nil {
		t.Fatal(err)
	}
	r := alice.LinkStatus().RTT
	e := alice.Estimate()
	// 4·(R/2), not 2R: RTTVAR is R/2 in whole nanoseconds, as RFC 6298 stores it.
	want := min(max(r+max(app.RTOGranularity, 4*(r/2)), app.RTOMin), RequestRetryMax)
	if r <= 0 || e.SRTT != r || e.RTTVar != r/2 || e.RTO != want {
		t.Errorf("after a handshake of %v: estimate %+v, want SRTT %v RTTVAR %v RTO %v", r, e, r, r/2, want)
	}
	// Downlink reports what LinkStatus counts of the drone's datagrams.
	for {
		recv, miss := alice.Downlink()
		st := alice.LinkStatus().Traffic
		if again, missAgain := alice.Downlink(); again != recv || missAgain != miss {
			continue // a datagram arrived meanwhile
		}
		if recv != st.ReceivedPackets || miss != st.LostPackets || recv == 0 {
			t.Errorf("Downlink %d received %d missing, LinkStatus %+v", recv, miss, st)
		}
		break
	}
}
