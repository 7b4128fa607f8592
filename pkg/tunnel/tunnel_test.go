package tunnel

import (
	"context"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dronelink/dronelink/pkg/app"
	"github.com/dronelink/dronelink/pkg/mavlink"
)

func listen(t *testing.T) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func attitude(i int) []byte {
	p := make([]byte, 28)
	p[0] = byte(i)
	return mavlink.AppendFrame(nil, byte(i), 1, 1, 30, p)
}

// broadcasts records what the drone end hands the application layer.
type broadcasts struct {
	mu    sync.Mutex
	sends [][]byte
	ch    chan struct{}
}

func (b *broadcasts) fn(frames []byte, _ time.Time) (int, error) {
	b.mu.Lock()
	b.sends = append(b.sends, append([]byte(nil), frames...))
	b.mu.Unlock()
	b.ch <- struct{}{}
	return 1, nil
}

// Autopilot frames wait up to the aggregation time to share a datagram; with aggregation
// off, each autopilot datagram goes at once. Malformed bytes are dropped and counted.
func TestDroneAggregation(t *testing.T) {
	for _, c := range []struct {
		agg   time.Duration
		sends int
	}{{0, 3}, {time.Hour, 1}} {
		conn := listen(t)
		b := &broadcasts{ch: make(chan struct{}, 8)}
		hooks := &Counters{}
		d, err := NewDrone(DroneConfig{Conn: conn, Aggregation: c.agg, Broadcast: b.fn, Hooks: hooks})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- d.Run(ctx) }()
		ap := listen(t)
		to := conn.LocalAddr().(*net.UDPAddr).AddrPort()
		var all []byte
		for i := range 3 {
			f := attitude(i)
			all = append(all, f...)
			ap.WriteToUDPAddrPort(append(f, 0xFD, 0x01), to) // a frame and a damaged tail
		}
		if c.agg == 0 {
			for range 3 {
				<-b.ch
			}
		} else {
			// With an hour's timer the pack goes when it is full; three frames never fill it:
			// close the socket through ctx and check nothing went out.
			deadline := time.Now().Add(5 * time.Second)
			for hooks.Drop(Down, DropMalformed) < 3 && time.Now().Before(deadline) {
				time.Sleep(time.Millisecond)
			}
			b.mu.Lock()
			n := len(b.sends)
			b.mu.Unlock()
			if n != 0 {
				t.Fatalf("aggregation %v: %d sends before the timer", c.agg, n)
			}
			d.flush(&pack{buf: append([]byte(nil), all...), arrivals: make([]time.Time, 3), first: time.Now()}, time.Now())
			<-b.ch
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		b.mu.Lock()
		if len(b.sends) != c.sends {
			t.Fatalf("aggregation %v: %d sends, want %d", c.agg, len(b.sends), c.sends)
		}
		var got []byte
		for _, s := range b.sends {
			got = append(got, s...)
		}
		b.mu.Unlock()
		if string(got) != string(all) {
			t.Fatalf("aggregation %v: frames changed", c.agg)
		}
		if n := hooks.Drop(Down, DropMalformed); n != 3 {
			t.Fatalf("%d malformed drops, want 3", n)
		}
	}
}

// An operator's frames reach the autopilot by role, and only once an autopilot is known.
func TestDroneFromOperator(t *testing.T) {
	conn := listen(t)
	hooks := &Counters{}
	ap := listen(t)
	var replies [][]byte
	var replySession uint16
	d, err := NewDrone(DroneConfig{Conn: conn, Autopilot: ap.LocalAddr().(*net.UDPAddr).AddrPort(),
		Broadcast: func([]byte, time.Time) (int, error) { return 0, nil }, Hooks: hooks,
		Reply: func(s uint16, f []byte) bool { replySession = s; replies = append(replies, f); return true }})
	if err != nil {
		t.Fatal(err)
	}
	arm := make([]byte, 33)
	arm[28], arm[29] = 400&0xff, 400>>8
	armFrame := mavlink.AppendFrame(nil, 1, 255, 190, 76, arm)
	list := mavlink.AppendFrame(nil, 2, 255, 190, 21, []byte{1, 1})
	both := append(append([]byte(nil), armFrame...), list...)

	d.FromOperator(app.FrameSender{User: "olga", Role: app.RoleObserver, Session: 77}, both)
	buf := make([]byte, 2048)
	ap.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, _, err := ap.ReadFromUDPAddrPort(buf)
	if err != nil || string(buf[:n]) != string(list) {
		t.Fatalf("observer: autopilot got %x (%v), want only the parameter request", buf[:n], err)
	}
	if hooks.Drop(Up, DropRole) != 1 {
		t.Fatalf("role drops %d", hooks.Drop(Up, DropRole))
	}
	// The refused ARM is answered, to the observer's session only, in the tunnel's name.
	if len(replies) != 1 || replySession != 77 {
		t.Fatalf("%d replies to session %d", len(replies), replySession)
	}
	ack, _, err := mavlink.Next(replies[0])
	if err != nil || !ack.Checked || ack.MsgID != mavlink.MsgCommandAck || ack.CompID != ComponentID ||
		ack.Payload[0] != 400&0xff || ack.Payload[1] != 400>>8 || ack.Payload[2] != resultDenied || ack.Payload[8] != 255 {
		t.Fatalf("reply %+v (%v)", ack, err)
	}
	d.FromOperator(app.FrameSender{User: "alice", Role: app.RolePilot}, both)
	n, _, err = ap.ReadFromUDPAddrPort(buf)
	if err != nil || string(buf[:n]) != string(both) {
		t.Fatalf("pilot: autopilot got %x (%v), want both frames in one datagram", buf[:n], err)
	}

	// Server mode before the autopilot spoke: nothing to send to.
	d2, _ := NewDrone(DroneConfig{Conn: listen(t), Broadcast: func([]byte, time.Time) (int, error) { return 0, nil }, Hooks: hooks})
	d2.FromOperator(app.FrameSender{User: "alice", Role: app.RolePilot}, both)
	if hooks.Drop(Up, DropNoPeer) != 2 {
		t.Fatalf("no-peer drops %d, want 2", hooks.Drop(Up, DropNoPeer))
	}
}

// In server mode the autopilot is the most recent sender of a frame whose checksum
// verified: garbage from another address does not redirect the operators' frames, a real
// frame does.
func TestDroneLearnsAutopilotFromCheckedFrames(t *testing.T) {
	conn := listen(t)
	var broadcasts atomic.Int32
	d, err := NewDrone(DroneConfig{Conn: conn, Broadcast: func([]byte, time.Time) (int, error) { broadcasts.Add(1); return 1, nil }})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	defer func() { cancel(); <-done }()
	to := conn.LocalAddr().(*net.UDPAddr).AddrPort()
	ap1, ap2 := listen(t), listen(t)
	heard := func(want *net.UDPConn) func() bool {
		return func() bool {
			got, ok := d.autopilot.load()
			return ok && got == want.LocalAddr().(*net.UDPAddr).AddrPort()
		}
	}
	ap1.WriteToUDPAddrPort(attitude(1), to)
	waitUntilTrue(t, "the autopilot to be learnt", heard(ap1))
	ap2.WriteToUDPAddrPort([]byte{0xfd, 9, 9, 9, 1, 2, 3}, to)                      // garbage
	ap2.WriteToUDPAddrPort(mavlink.AppendFrame(nil, 0, 1, 1, 60000, []byte{1}), to) // well formed, checksum unknown
	ap1.WriteToUDPAddrPort(attitude(2), to)                                         // read after the two above
	// Three broadcasts: the first attitude, the unchecked frame and the second attitude.
	waitUntilTrue(t, "the datagrams to be read", func() bool { return broadcasts.Load() == 3 })
	if !heard(ap1)() {
		t.Fatal("a datagram without a checked frame redirected the autopilot address")
	}
	ap2.WriteToUDPAddrPort(attitude(3), to)
	waitUntilTrue(t, "the new autopilot address", heard(ap2))
}

// An observer's read requests are limited per user; a pilot's frames are not.
func TestObserverFrameRate(t *testing.T) {
	hooks := &Counters{}
	ap := listen(t)
	d, err := NewDrone(DroneConfig{Conn: listen(t), Autopilot: ap.LocalAddr().(*net.UDPAddr).AddrPort(),
		Broadcast: func([]byte, time.Time) (int, error) { return 0, nil }, Hooks: hooks})
	if err != nil {
		t.Fatal(err)
	}
	var many []byte
	for i := range ObserverFrameBurst + 10 {
		many = append(many, mavlink.AppendFrame(nil, byte(i), 255, 190, 21, []byte{1, 1})...)
	}
	d.FromOperator(app.FrameSender{User: "olga", Role: app.RoleObserver}, many)
	if got := hooks.Drop(Up, DropRateLimited); got != 10 {
		t.Fatalf("%d observer frames rate limited, want 10", got)
	}
	d.FromOperator(app.FrameSender{User: "alice", Role: app.RolePilot}, many)
	if got := hooks.Drop(Up, DropRateLimited); got != 10 {
		t.Fatalf("the pilot's frames were rate limited (%d)", got-10)
	}
}

func waitUntilTrue(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}
