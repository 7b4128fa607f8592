package link

import (
	"context"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dronelink/dronelink/pkg/app"
)

// captureConn is a PacketConn that keeps a copy of the last datagram written and counts
// them, without allocating; reads block until Close.
type captureConn struct {
	mu     sync.Mutex
	last   []byte
	writes atomic.Int64
	closed chan struct{}
	once   sync.Once
}

func newCaptureConn() *captureConn {
	return &captureConn{last: make([]byte, 0, ReadBufferSize), closed: make(chan struct{})}
}

func (c *captureConn) ReadFrom([]byte) (int, netip.AddrPort, error) {
	<-c.closed
	return 0, netip.AddrPort{}, net.ErrClosed
}

func (c *captureConn) WriteTo(b []byte, _ netip.AddrPort) error {
	c.mu.Lock()
	c.last = append(c.last[:0], b...)
	c.mu.Unlock()
	c.writes.Add(1)
	return nil
}

func (c *captureConn) lastWritten() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]byte(nil), c.last...)
}

func (c *captureConn) LocalAddr() netip.AddrPort { return droneAddr }
func (c *captureConn) Close() error              { c.once.Do(func() { close(c.closed) }); return nil }

// loggedInServer is a drone on a captureConn with its application layer running and one
// operator (alice, testOp1) handshaken and logged in by hand; op is the operator's end of
// the session. No reader goroutine: the test drives handleDatagram.
func loggedInServer(t testing.TB) (s *Server, op *Session, sc *receiveScratch) {
	t.Helper()
	testKeys(t)
	auth := newTestAuth()
	auth.add("alice", "alice-pw", RolePilot, testOp1)
	conn := newCaptureConn()
	s, err := NewServer(ServerConfig{Conn: conn, PSK: testPSK, DroneKey: NewDroneKey(testDrone), Auth: auth,
		Handler: func(context.Context, Command) (AckStatus, []byte) { return AckOK, nil }})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.up.Start(ctx)
	t.Cleanup(func() { cancel(); s.up.Shutdown(CloseShutdown) })
	sc = &receiveScratch{out: make([]byte, 0, MaxDatagramSize)}

	h := wireInitiator(t, testOp1, &testDrone.PublicKey, 0x0101, 0)
	init, err := h.Initiation(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	s.handleDatagram(init, aliceAddr, time.Now(), sc)
	keys, r, err := h.ConsumeResponse(conn.lastWritten())
	if err != nil {
		t.Fatal(err)
	}
	if op, err = NewSession(&keys, 0x0101, r.Sender, 0, time.Now()); err != nil {
		t.Fatal(err)
	}
	login, err := op.Seal(nil, AppendLogin(nil, 7, "alice", []byte("alice-pw")), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	writes := conn.writes.Load()
	s.handleDatagram(login, aliceAddr, time.Now(), sc)
	deadline := time.Now().Add(10 * time.Second)
	for conn.writes.Load() == writes { // the login worker answers on its own goroutine
		if time.Now().After(deadline) {
			t.Fatal("no login result")
		}
		time.Sleep(time.Millisecond)
	}
	reply := conn.lastWritten()
	hdr, _ := ParseDataHeader(reply)
	plain, err := op.Open(nil, reply, hdr, time.Now())
	var m Message
	if err != nil || ParseMessage(plain, &m) != nil || m.Type != MsgLoginResult || LoginStatus(m.Status) != LoginOK {
		t.Fatalf("login: %v %+v", err, m)
	}
	return s, op, sc
}

// The native data path through both layers allocates nothing per packet: an authenticated
// datagram received by the drone and handed to the application layer, a telemetry
// broadcast and a batched broadcast to a logged-in operator, and telemetry received by the
// operator.
func TestLayeredDataPathAllocatesNothing(t *testing.T) {
	s, op, sc := loggedInServer(t)
	seal := func(msg []byte) []byte {
		pkt, err := op.Seal(nil, msg, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		return pkt
	}
	keepalives := make([][]byte, 300)
	for i := range keepalives {
		keepalives[i] = seal(AppendKeepalive(nil))
	}
	next := 0
	if a := testing.AllocsPerRun(200, func() {
		s.handleDatagram(keepalives[next], aliceAddr, time.Now(), sc)
		next++
	}); a != 0 {
		t.Errorf("drone receive: %v allocations per datagram", a)
	}
	payload := make([]byte, 64)
	if raceEnabled {
		t.Skip("sync.Pool drops items under the race detector: the broadcast paths are checked without it")
	}
	if a := testing.AllocsPerRun(200, func() {
		if n, _ := s.Broadcast(payload); n != 1 {
			t.Fatalf("broadcast to %d", n)
		}
	}); a != 0 {
		t.Errorf("Broadcast: %v allocations per call", a)
	}
	batch := make([][]byte, BatchSize)
	for i := range batch {
		batch[i] = payload
	}
	if a := testing.AllocsPerRun(100, func() {
		if n, _ := s.BroadcastBatch(batch); n != BatchSize {
			t.Fatalf("batch sent %d", n)
		}
	}); a != 0 {
		t.Errorf("BroadcastBatch: %v allocations per call", a)
	}

	// The operator's side: telemetry through the channel and the application layer.
	ccfg, err := ClientConfig{Conn: newCaptureConn(), Drone: droneAddr, PSK: testPSK, OperatorKey: testOp1,
		DronePublic: &testDrone.PublicKey, User: "alice", OnTelemetry: func([]byte) {}}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	c, err := newClient(ccfg)
	if err != nil {
		t.Fatal(err)
	}
	mine, drone := sessionPair(t, 0)
	c.current = mine
	telemetry := make([][]byte, 300)
	for i := range telemetry {
		if telemetry[i], err = drone.Seal(nil, AppendTelemetry(nil, payload), time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	next = 0
	if a := testing.AllocsPerRun(200, func() {
		c.handleDatagram(telemetry[next], time.Now())
		next++
	}); a != 0 {
		t.Errorf("operator receive: %v allocations per datagram", a)
	}
}

// BenchmarkDroneReceive: the operator seals a keepalive, the drone opens it and hands it
// to the application layer (both layers of the receive path).
func BenchmarkDroneReceive(b *testing.B) {
	s, op, sc := loggedInServer(b)
	msg := AppendKeepalive(nil)
	buf := make([]byte, 0, MaxDatagramSize)
	b.ReportAllocs()
	for b.Loop() {
		pkt, err := op.Seal(buf[:0], msg, time.Now())
		if err != nil {
			b.Fatal(err)
		}
		s.handleDatagram(pkt, aliceAddr, time.Now(), sc)
	}
}

// BenchmarkBroadcast: one 64-byte telemetry payload to one logged-in operator (application
// layer, seal, socket write to a capturing conn).
func BenchmarkBroadcast(b *testing.B) {
	s, _, _ := loggedInServer(b)
	payload := make([]byte, 64)
	b.ReportAllocs()
	for b.Loop() {
		if n, _ := s.Broadcast(payload); n != 1 {
			b.Fatalf("sent to %d", n)
		}
	}
}

// Frames never travel on a session that is not logged in: a holder of bob's key and the
// PSK, without his password, has a confirmed session, but its frames reach no handler
// (counted as unexpected) and the drone sends it none.
func TestNoFramesWithoutLogin(t *testing.T) {
	var got atomic.Int64
	f := newFakeRig(t, func(c *ServerConfig) { c.OnFrames = func(app.FrameSender, []byte) { got.Add(1) } })
	o := rawHandshake(t, f, bobAddr, InitiatorConfig{PSK: testPSK, OperatorKey: testOp2, DronePublic: &testDrone.PublicKey}, 0)
	o.send(t, AppendCommand(nil, 1, testCommand, []byte("confirm")))
	if ack := o.readUntilAck(t, 1); AckStatus(ack.Status) != AckNotLoggedIn {
		t.Fatalf("command without a login: ack %v", AckStatus(ack.Status))
	}
	unexpected := f.hooks.Drop(DropUnexpected)
	o.send(t, app.AppendFrames(nil, []byte{0xfd, 0, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0}))
	waitFor(t, "the frames to be dropped", func() bool { return f.hooks.Drop(DropUnexpected) > unexpected })
	if got.Load() != 0 {
		t.Fatal("frames from a session that is not logged in reached the handler")
	}
	if n, err := f.server.BroadcastFrames([]byte{0xfd, 0, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0}, time.Time{}); n != 0 || err != nil {
		t.Fatalf("BroadcastFrames went to %d sessions (%v): the only one is not logged in", n, err)
	}
}
