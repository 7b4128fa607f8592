package relay_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/dronelink/dronelink/internal/natstest"
	"github.com/dronelink/dronelink/pkg/link"
	"github.com/dronelink/dronelink/pkg/relay"
)

// waitLimit bounds every wait of the cluster tests: far above what anything takes, it
// only turns a hang into a failure with the cluster's logs.
const waitLimit = 20 * time.Second

// startCluster runs a three-node nats-server cluster with the configuration text auth for
// the test, and logs the nodes' logs if the test fails. The binary is built once per test
// binary into natsDir (TestMain); without the go command the test fails.
func startCluster(t *testing.T, auth string) *natstest.Cluster {
	t.Helper()
	bin, err := natstest.BuildServer(natsDir)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	c, err := natstest.StartCluster(ctx, bin, t.TempDir(), 3, auth)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.Close()
		if t.Failed() {
			t.Logf("cluster logs:\n%s", c.Logs())
		}
	})
	return c
}

// sentHooks counts a link endpoint's events and signals each datagram sent.
type sentHooks struct {
	*link.Counters
	changed chan struct{}
}

func (h *sentHooks) PacketSent(k link.PacketKind, size int) {
	h.Counters.PacketSent(k, size)
	select {
	case h.changed <- struct{}{}:
	default:
	}
}

// waitEvent waits until cond holds, looking again at each signal on changed (the hooks
// signal after they have counted, and the relay updates its State before it calls them).
func waitEvent(t *testing.T, changed <-chan struct{}, cond func() bool, what string) {
	t.Helper()
	deadline := time.After(waitLimit)
	for !cond() {
		select {
		case <-changed:
		case <-deadline:
			t.Fatalf("%s did not happen within %v", what, waitLimit)
		}
	}
}

// waitUplink waits until the node at url sends the drone's uplink to the drone. The drone
// subscribed on another node, and the subscription reaches the others through the routes
// a moment later; an operator who dialled before then would be told at once that no drone
// serves the id. As alice, it publishes a probe that the drone's link layer drops as
// malformed, and publishes it again each time the node answers "no responders", until the
// drone has counted one.
func waitUplink(t *testing.T, url, aliceSeed string, d *drone) {
	t.Helper()
	opt, err := nats.NkeyOptionFromSeed(writeSeed(t, aliceSeed))
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(url, opt)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	reply := relay.DownlinkSubject("drone-7", "alice", "probe")
	answers := make(chan *nats.Msg, 16)
	sub, err := nc.ChanSubscribe(reply, answers)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	before := d.hooks.Drop(link.DropMalformed)
	deadline := time.After(waitLimit)
	for probes := 1; ; probes++ {
		if err := nc.PublishRequest(relay.UplinkSubject("drone-7"), reply, []byte{0xff}); err != nil {
			t.Fatal(err)
		}
	answer:
		for {
			select {
			case msg := <-answers:
				if msg.Header.Get("Status") == "503" { // no responders: probe again
					break answer
				}
				t.Fatalf("probe answered with %q %v", msg.Data, msg.Header)
			case <-d.hooks.changed:
				if d.hooks.Drop(link.DropMalformed) > before {
					t.Logf("the drone's uplink reached %s after %d probe(s)", url, probes)
					return
				}
			case <-deadline:
				t.Fatalf("the drone's uplink did not reach %s within %v (%d probes)", url, waitLimit, probes)
			}
		}
	}
}

// relayEnd is one end of the relay, as the fail-over test watches it.
type relayEnd struct {
	name  string
	state func() relay.State
	hooks *relayHooks
}

// TestClusterNodeFailure is issue #16's acceptance test of a failing NATS server, on a
// real three-node cluster running the example configuration: the drone connects to node
// A only and alice to node B only, each learning the others from its server. Node A, the
// drone's, fails; then the node alice is on. Each failure first freezes the node (it stops
// answering, as a hung server would) while alice issues commands, whose datagrams it
// swallows, then kills it, and alice issues more while the ends reconnect. Both ends must
// reconnect to a node still alive, the dronelink session must go on (no new handshake:
// the link is connectionless), every command must be acknowledged and executed exactly
// once, and telemetry must reach alice afterwards.
func TestClusterNodeFailure(t *testing.T) {
	testKeys(t)
	conf, seeds := exampleConfig(t)
	cluster := startCluster(t, conf)
	nodeA, nodeB := cluster.Nodes[0], cluster.Nodes[1]

	d := startDrone(t, []string{nodeA.URL}, "drone-7", nkeyCreds(seeds["drone-7"], ""))
	waitUplink(t, nodeB.URL, seeds["alice"], d)

	ohooks := newRelayHooks()
	ahooks := &sentHooks{Counters: &link.Counters{}, changed: make(chan struct{}, 1)}
	telemetry := make(chan string, 16)
	var retries atomic.Int64
	alice, conn := dialRelay(t, relay.Config{URLs: []string{nodeB.URL}, DroneID: "drone-7",
		Creds: nkeyCreds(seeds["alice"], "alice"), Hooks: ohooks, Logger: testLogger()}, "alice",
		func(cfg *link.ClientConfig) {
			cfg.Hooks = ahooks
			cfg.OnTelemetry = func(p []byte) {
				select {
				case telemetry <- string(p):
				default:
				}
			}
			cfg.OnEvent = func(e link.Event) {
				if e.Kind == link.EventCommandRetry {
					retries.Add(1)
				}
			}
		})
	ends := []relayEnd{
		{"drone", d.relay.State, d.rhooks},
		{"alice", conn.State, ohooks},
	}
	for i, e := range ends {
		if st := e.state(); !st.Connected || cluster.Index(st.Server) != i {
			t.Fatalf("%s: relay state %+v, want connected to %s (%s)", e.name, st, cluster.Nodes[i].Name, cluster.Nodes[i].URL)
		}
	}

	// The session the failures must not replace.
	session := alice.LinkStatus()
	handshakes := d.hooks.Handshakes[link.HandshakeOK].Load()
	sessions := d.server.SessionStatus()
	if session.Session == 0 || handshakes == 0 || len(sessions) != 1 {
		t.Fatalf("after the dial: session %d, %d handshakes, %d sessions on the drone; want one", session.Session, handshakes, len(sessions))
	}
	peer := sessions[0].Peer

	var issued []string
	command := func(payload string) { // an ordered command, alone in flight
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
		defer cancel()
		issued = append(issued, payload)
		ack, err := alice.Command(ctx, []byte(payload))
		if err != nil || ack.Status != link.AckOK || string(ack.Payload) != "done "+payload {
			t.Fatalf("command %q: %+v, %v", payload, ack, err)
		}
	}
	type result struct {
		payload string
		ack     link.Ack
		err     error
	}
	var results []chan result
	// issue issues n independent commands at once, each awaiting its ack on its own
	// goroutine; check collects them.
	issue := func(prefix string, n int) {
		for i := range n {
			payload := fmt.Sprintf("%s-%d", prefix, i)
			issued = append(issued, payload)
			done := make(chan result, 1)
			results = append(results, done)
			go func() {
				// The retransmissions must outlast a fail-over and the routes' news of the
				// subscriptions that moved.
				ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
				defer cancel()
				ack, err := alice.CommandWith(ctx, []byte(payload), link.CommandOptions{Independent: true})
				done <- result{payload, ack, err}
			}()
		}
	}
	check := func() {
		t.Helper()
		for _, done := range results {
			r := <-done // each ends by its context's deadline at the latest
			if r.err != nil || r.ack.Status != link.AckOK || string(r.ack.Payload) != "done "+r.payload {
				t.Errorf("command %q: %+v, %v", r.payload, r.ack, r.err)
			}
		}
		results = nil
		if t.Failed() {
			t.FailNow()
		}
	}

	command("before-1")
	command("before-2")

	killed := map[int]bool{}
	// fail makes node i fail while alice commands, and waits until the ends that were
	// connected to it have reconnected to another node.
	fail := func(phase string, i int) {
		t.Helper()
		if i < 0 {
			t.Fatalf("%s: no node of the cluster to fail (drone %+v, alice %+v)", phase, d.relay.State(), conn.State())
		}
		var moving []relayEnd
		var reconnects []uint64
		for _, e := range ends {
			if st := e.state(); cluster.Index(st.Server) == i {
				moving = append(moving, e)
				reconnects = append(reconnects, st.Reconnects)
			}
		}
		if err := cluster.Freeze(i); err != nil {
			t.Fatal(err)
		}
		// Commands into the frozen node, whose datagrams are lost with it: wait until alice
		// has sent as many command datagrams as commands, normally the first copy of each.
		// (Should a retransmission or an extra copy the link's loss estimate adds end the
		// wait before the last first copy, that command goes out while the ends reconnect,
		// as the next ones do: the assertions hold for any order.)
		sent := ahooks.Sent[link.KindCommand].Load()
		issue(phase+"-frozen", 4)
		waitEvent(t, ahooks.changed, func() bool { return ahooks.Sent[link.KindCommand].Load() >= sent+4 },
			"alice sending the commands")
		cluster.Kill(i)
		killed[i] = true
		// Commands while the ends reconnect.
		issue(phase+"-killed", 4)
		for k, e := range moving {
			waitEvent(t, e.hooks.changed, func() bool {
				st := e.state()
				live := cluster.Index(st.Server) >= 0 && !killed[cluster.Index(st.Server)]
				return st.Connected && live && st.Reconnects > reconnects[k] && e.hooks.reconnected.Load() > 0
			}, e.name+"'s reconnection after "+phase)
			st := e.state()
			t.Logf("%s: %s moved from %s to %s (%s)", phase, e.name, cluster.Nodes[i].Name, st.ServerName, st.Server)
		}
		check()
	}

	fail("drone-node", cluster.Index(d.relay.State().Server))
	command("between")
	fail("alice-node", cluster.Index(conn.State().Server))
	command("after")

	// Telemetry after both fail-overs. The ack of "after" came the way it goes, after both
	// ends had reconnected: the drone's node knows alice's subscription.
	if n, err := d.server.Broadcast([]byte("alt=150")); err != nil || n != 1 {
		t.Fatalf("broadcast reached %d operators (%v), want 1", n, err)
	}
	select {
	case got := <-telemetry:
		if got != "alt=150" {
			t.Errorf("telemetry %q, want alt=150", got)
		}
	case <-time.After(waitLimit):
		t.Fatal("no telemetry after the fail-overs")
	}

	// No command lost or run twice.
	for _, p := range issued {
		if n := d.execs.count(p); n != 1 {
			t.Errorf("command %q executed %d times, want 1", p, n)
		}
	}
	if n := len(d.execs.ran); n != len(issued) {
		t.Errorf("the drone executed %d commands, want %d", n, len(issued))
	}

	// The same session, with no new handshake, from the same relay address.
	if st := alice.LinkStatus(); st.Session != session.Session || st.Rekeys != 0 || !st.Since.Equal(session.Since) {
		t.Errorf("alice's link: session %d (%d rekeys, since %v), want %d as before (since %v)",
			st.Session, st.Rekeys, st.Since, session.Session, session.Since)
	}
	if n := d.hooks.Handshakes[link.HandshakeOK].Load(); n != handshakes {
		t.Errorf("the drone counted %d handshakes, want %d as before the failures", n, handshakes)
	}
	if sessions := d.server.SessionStatus(); len(sessions) != 1 || sessions[0].Peer != peer || sessions[0].User != "alice" {
		t.Errorf("drone's sessions after the failures: %+v, want alice's alone from %s", sessions, peer)
	}

	// Both ends reconnected to a node that is still alive, and counted it.
	for _, e := range ends {
		st := e.state()
		if !st.Connected || st.Reconnects < 1 || killed[cluster.Index(st.Server)] || cluster.Index(st.Server) < 0 {
			t.Errorf("%s: relay state %+v, want connected to a live node after a reconnection", e.name, st)
		}
		if n := e.hooks.reconnected.Load(); n < 1 || uint64(n) != st.Reconnects {
			t.Errorf("%s: hooks counted %d reconnections, state %d", e.name, n, st.Reconnects)
		}
	}
	t.Logf("%d commands, %d retransmissions; alice heard %d no-responders",
		len(issued), retries.Load(), ohooks.drop(relay.DropNoResponders))
}
