package link

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dronelink/dronelink/pkg/link/fakenet"
)

// rig is a drone server and its test doubles.
type rig struct {
	server  *Server
	auth    *testAuth
	key     *countingDroneKey
	execs   *execLog
	hooks   *Counters
	conn    *recordingConn
	cancel  context.CancelFunc
	done    chan error
	address netip.AddrPort
}

func startServer(t *testing.T, conn PacketConn, mutate func(*ServerConfig)) *rig {
	t.Helper()
	testKeys(t)
	r := &rig{auth: newTestAuth(), key: &countingDroneKey{DroneKey: NewDroneKey(testDrone)}, execs: newExecLog(),
		hooks: &Counters{}, conn: newRecordingConn(conn), done: make(chan error, 1), address: conn.LocalAddr()}
	r.auth.add("alice", "alice-pw", RolePilot, testOp1)
	r.auth.add("bob", "bob-pw", RolePilot, testOp2)
	r.auth.add("olga", "olga-pw", RoleObserver, testOther)
	cfg := ServerConfig{Conn: r.conn, PSK: testPSK, DroneKey: r.key, Auth: r.auth, Handler: r.execs.handler,
		Hooks: r.hooks, Logger: testLogger(), HandshakeRate: 1000, HandshakeBurst: 1000, LoginRate: 1000, LoginBurst: 1000}
	if mutate != nil {
		mutate(&cfg)
	}
	srv, err := NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	r.server = srv
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	go func() { r.done <- srv.Run(ctx) }()
	t.Cleanup(r.stop)
	return r
}

func (r *rig) stop() {
	if r.cancel == nil {
		return
	}
	r.cancel()
	r.cancel = nil
	if err := <-r.done; err != nil {
		panic(fmt.Sprintf("server Run: %v", err))
	}
}

// clientConfig is a working operator config for op as user.
func clientConfig(conn PacketConn, drone netip.AddrPort, op string) ClientConfig {
	key, user, pw := testOp1, "alice", "alice-pw"
	switch op {
	case "bob":
		key, user, pw = testOp2, "bob", "bob-pw"
	case "olga":
		key, user, pw = testOther, "olga", "olga-pw"
	}
	return ClientConfig{Conn: conn, Drone: drone, PSK: testPSK, OperatorKey: key, DronePublic: &testDrone.PublicKey,
		User: user, Password: []byte(pw), Logger: testLogger()}
}

func dial(t *testing.T, cfg ClientConfig) *Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := Dial(ctx, cfg)
	if err != nil {
		t.Fatalf("dial %s: %v", cfg.User, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// lossyScenario: two operators send commands concurrently over a link with loss,
// reordering and duplication while the drone streams telemetry. Every command must be
// acknowledged, each executed exactly once, telemetry must flow, and the replay filter may
// reject only true repeats.
func lossyScenario(t *testing.T, serverConn PacketConn, clientConn func(i int) PacketConn, commandsPerOperator int) {
	r := startServer(t, serverConn, nil)
	var telemetry [2]atomic.Int64
	var hooks [2]*Counters
	var conns [2]*recordingConn
	clients := make([]*Client, 2)
	for i, op := range []string{"alice", "bob"} {
		conns[i] = newRecordingConn(clientConn(i))
		hooks[i] = &Counters{}
		cfg := clientConfig(conns[i], r.address, op)
		cfg.Hooks = hooks[i]
		cfg.OnTelemetry = func(p []byte) {
			if strings.HasPrefix(string(p), "telemetry ") {
				telemetry[i].Add(1)
			}
		}
		dialStart := time.Now()
		clients[i] = dial(t, cfg)
		t.Logf("%s logged in after %v", op, time.Since(dialStart))
		if clients[i].Role() != RolePilot {
			t.Fatalf("%s role %v", op, clients[i].Role())
		}
	}

	stopTelemetry := make(chan struct{})
	var telemetryWG sync.WaitGroup
	telemetryWG.Go(func() {
		for n := 0; ; n++ {
			select {
			case <-stopTelemetry:
				return
			case <-time.After(2 * time.Millisecond):
			}
			var err error
			if n%2 == 0 {
				_, err = r.server.Broadcast(fmt.Appendf(nil, "telemetry %d", n))
			} else { // the batched path: both payloads in one BroadcastBatch
				_, err = r.server.BroadcastBatch([][]byte{fmt.Appendf(nil, "telemetry %d", n), fmt.Appendf(nil, "telemetry %d+", n)})
			}
			if err != nil {
				t.Error(err)
			}
		}
	})

	const inFlight = 48
	var wg sync.WaitGroup
	var acked atomic.Int64
	var maxMu sync.Mutex
	var maxRTT time.Duration
	var maxAttempts int
	start := time.Now()
	for i, c := range clients {
		work := make(chan int)
		for range inFlight {
			wg.Go(func() {
				for n := range work {
					payload := fmt.Sprintf("op%d cmd %d", i, n)
					ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
					ack, err := c.CommandWith(ctx, []byte(payload), CommandOptions{Independent: true}) // several streams in flight
					cancel()
					if err != nil {
						t.Errorf("command %q: %v", payload, err)
						continue
					}
					if ack.Status != AckOK || string(ack.Payload) != "done:"+payload {
						t.Errorf("command %q: ack %v %q", payload, ack.Status, ack.Payload)
						continue
					}
					acked.Add(1)
					maxMu.Lock()
					if ack.RoundTrip > maxRTT {
						maxRTT, maxAttempts = ack.RoundTrip, ack.Attempts
					}
					maxMu.Unlock()
				}
			})
		}
		wg.Go(func() {
			for n := range commandsPerOperator {
				work <- n
			}
			close(work)
		})
	}
	wg.Wait()
	t.Logf("commands took %v; slowest round trip %v after %d transmissions", time.Since(start), maxRTT, maxAttempts)
	close(stopTelemetry)
	telemetryWG.Wait()

	if got := acked.Load(); got != int64(2*commandsPerOperator) {
		t.Errorf("acked %d of %d commands", got, 2*commandsPerOperator)
	}
	r.execs.check(t, 2*commandsPerOperator)
	for i := range clients {
		if telemetry[i].Load() == 0 {
			t.Errorf("operator %d received no telemetry", i)
		}
	}
	// No false replay rejection: every replay drop is an exact repeat of a datagram
	// received before, and every repeat is dropped as a replay.
	if got, want := r.hooks.Drop(DropReplay), uint64(r.conn.Repeats()); got != want {
		t.Errorf("drone replay drops %d, repeated datagrams received %d", got, want)
	}
	for i := range clients {
		if got, want := hooks[i].Drop(DropReplay), uint64(conns[i].Repeats()); got != want {
			t.Errorf("operator %d replay drops %d, repeated datagrams received %d", i, got, want)
		}
	}
	for _, reason := range []DropReason{DropDecrypt, DropBadMAC, DropMalformed} {
		if n := r.hooks.Drop(reason); n != 0 {
			t.Errorf("drone dropped %d datagrams as %v on a link that does not corrupt", n, reason)
		}
	}
	t.Logf("drone: %d replay drops, %d executed; operators: %d/%d telemetry", r.hooks.Drop(DropReplay), r.execs.total,
		telemetry[0].Load(), telemetry[1].Load())
}

func TestLossyEndToEndFakeNetwork(t *testing.T) {
	t.Parallel()
	n, err := fakenet.New(fakenet.Config{Seed: 7, Loss: 0.30, Reorder: 0.10, Duplicate: 0.05, Jitter: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	droneAddr := netip.MustParseAddrPort("10.0.0.1:5000")
	serverConn, err := n.Listen(droneAddr)
	if err != nil {
		t.Fatal(err)
	}
	lossyScenario(t, serverConn, func(i int) PacketConn {
		c, err := n.Listen(netip.AddrPortFrom(netip.MustParseAddr(fmt.Sprintf("10.0.1.%d", i+1)), 0))
		if err != nil {
			t.Fatal(err)
		}
		return c
	}, 500)
	st := n.Stats()
	t.Logf("network: %+v", st)
	if st.Dropped == 0 || st.Duplicated == 0 || st.Reordered == 0 {
		t.Errorf("the network did not impair: %+v", st)
	}
}

func TestLossyEndToEndUDP(t *testing.T) {
	t.Parallel()
	serverUDP, err := ListenUDP("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	server := newImpairedConn(serverUDP, 11, 0.30, 0.10, 0.05)
	var impaired []*impairedConn
	lossyScenario(t, server, func(i int) PacketConn {
		c, err := ListenUDP("127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ic := newImpairedConn(c, uint64(20+i), 0.30, 0.10, 0.05)
		impaired = append(impaired, ic)
		return ic
	}, 500)
	for _, c := range append(impaired, server) {
		if c.dropped.Load() == 0 || c.reorders.Load() == 0 {
			t.Errorf("a socket was not impaired: %d sent, %d dropped, %d reordered", c.sent.Load(), c.dropped.Load(), c.reorders.Load())
		}
	}
}
