package relay_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/goleak"

	"github.com/dronelink/dronelink/pkg/link"
	"github.com/dronelink/dronelink/pkg/relay"
)

// natsDir holds the nats-server binary natstest.BuildServer builds for the cluster tests:
// BuildServer builds once per process and remembers the path, so the directory lives as
// long as the test binary.
var natsDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "dronelink-relay-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	natsDir = dir
	goleak.VerifyTestMain(m, goleak.Cleanup(func(code int) {
		if err := os.RemoveAll(dir); err != nil {
			fmt.Fprintln(os.Stderr, err)
		}
		os.Exit(code)
	}))
}

// dialRelay connects user's link.Client to the drone through the relay with cfg; edit, if
// not nil, adjusts the link's configuration first. The client is closed at the test's end.
func dialRelay(t *testing.T, cfg relay.Config, user string, edit func(*link.ClientConfig)) (*link.Client, *relay.OperatorConn) {
	t.Helper()
	conn, err := relay.Dial(cfg)
	if err != nil {
		t.Fatal(err)
	}
	lcfg := operatorConfig(conn, relay.DroneAddr, user)
	if edit != nil {
		edit(&lcfg)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := link.Dial(ctx, lcfg)
	if err != nil {
		conn.Close()
		t.Fatalf("dial through the relay: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c, conn
}

// TestSessionThroughRelay: an operator behind NATS logs in, commands and hears telemetry
// exactly as over UDP, while another operator uses the drone's UDP socket; the drone sees
// one table of sessions and answers each on its own transport.
func TestSessionThroughRelay(t *testing.T) {
	conf, seeds := exampleConfig(t)
	ns := startNATS(t, conf)
	urls := []string{ns.ClientURL()}
	d := startDrone(t, urls, "drone-7", nkeyCreds(seeds["drone-7"], ""))

	telemetry := make(chan string, 16)
	alice, conn := dialRelay(t, relay.Config{URLs: urls, DroneID: "drone-7", Creds: nkeyCreds(seeds["alice"], "alice"), Logger: testLogger()},
		"alice", func(cfg *link.ClientConfig) { cfg.OnTelemetry = func(p []byte) { telemetry <- string(p) } })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if !strings.HasPrefix(conn.Downlink(), "dronelink.drone-7.down.alice.") {
		t.Errorf("downlink subject %q", conn.Downlink())
	}

	udp, err := link.ListenUDP("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	bob, err := link.Dial(ctx, operatorConfig(udp, d.udp, "bob"))
	if err != nil {
		t.Fatal(err)
	}
	defer bob.Close()

	ack, err := alice.Command(ctx, []byte("take off"))
	if err != nil || ack.Status != link.AckOK || string(ack.Payload) != "done take off" {
		t.Fatalf("command through the relay: %+v, %v", ack, err)
	}
	if n := d.execs.count("take off"); n != 1 {
		t.Errorf("take off executed %d times, want 1", n)
	}

	// Both operators are sessions of one table; the relay's is on a relay address.
	sessions := d.server.SessionStatus()
	if len(sessions) != 2 {
		t.Fatalf("%d sessions, want 2", len(sessions))
	}
	relayed := 0
	for _, s := range sessions {
		if d.relay.Owns(s.Peer) {
			relayed++
			if subject, ok := d.relay.Subject(s.Peer); !ok || subject != conn.Downlink() {
				t.Errorf("relay peer %s: subject %q, %v; want %q", s.Peer, subject, ok, conn.Downlink())
			}
			if s.User != "alice" {
				t.Errorf("relayed session of %q, want alice", s.User)
			}
			if name := d.server.AddrName(s.Peer); name != "relay:"+conn.Downlink() {
				t.Errorf("the server names the relayed peer %q", name)
			}
		} else if name := d.server.AddrName(s.Peer); name != "" {
			t.Errorf("the server names the UDP peer %s %q", s.Peer, name)
		}
	}
	if relayed != 1 {
		t.Errorf("%d sessions on relay addresses, want 1", relayed)
	}

	if n, err := d.server.Broadcast([]byte("alt=120")); err != nil || n != 2 {
		t.Fatalf("broadcast reached %d operators (%v), want 2", n, err)
	}
	select {
	case got := <-telemetry:
		if got != "alt=120" {
			t.Errorf("telemetry %q", got)
		}
	case <-ctx.Done():
		t.Fatal("no telemetry through the relay")
	}
	if st := conn.State(); !st.Connected || st.Server == "" {
		t.Errorf("operator relay state %+v", st)
	}
}

// TestNoDroneServesID: a drone id nobody serves fails at once with a clear error (NATS's no
// responders), not at the deadline.
func TestNoDroneServesID(t *testing.T) {
	testKeys(t)
	conf, seeds := exampleConfig(t)
	ns := startNATS(t, conf)
	conn, err := relay.Dial(relay.Config{URLs: []string{ns.ClientURL()}, DroneID: "drone-8", Creds: nkeyCreds(seeds["alice"], "alice")})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, err = link.Dial(ctx, operatorConfig(conn, relay.DroneAddr, "alice"))
	if !errors.Is(err, link.ErrNoListener) || !errors.Is(err, relay.ErrNoDrone) {
		t.Fatalf("dial to a drone id nobody serves: %v, want ErrNoListener and ErrNoDrone", err)
	}
	if ctx.Err() != nil {
		t.Fatal("the dial ran to its deadline")
	}
	if want := `no drone serves id "drone-8" on the relay`; !strings.Contains(err.Error(), want) {
		t.Errorf("error %q does not say %q", err, want)
	}
}

// TestWrongCredentials: a key the server does not know is refused with ErrCredentials and a
// one-line message that names the method, never the secret.
func TestWrongCredentials(t *testing.T) {
	conf, _ := exampleConfig(t)
	ns := startNATS(t, conf)
	seed, _ := newNkey(t)
	for _, listen := range []bool{false, true} {
		cfg := relay.Config{URLs: []string{ns.ClientURL()}, DroneID: "drone-7", Creds: nkeyCreds(seed, "alice"), KeepTrying: listen}
		var err error
		if listen {
			_, err = relay.Listen(cfg)
		} else {
			_, err = relay.Dial(cfg)
		}
		if !errors.Is(err, relay.ErrCredentials) {
			t.Fatalf("listen=%v: %v, want ErrCredentials", listen, err)
		}
		if msg := err.Error(); strings.Contains(msg, "\n") || strings.Contains(msg, seed) || !strings.Contains(msg, "nkey") {
			t.Errorf("listen=%v: message %q", listen, msg)
		}
	}
	// No credentials at all, where the server wants them.
	if _, err := relay.Dial(relay.Config{URLs: []string{ns.ClientURL()}, DroneID: "drone-7"}); !errors.Is(err, relay.ErrCredentials) {
		t.Errorf("without credentials: %v, want ErrCredentials", err)
	}
}

// TestExamplePermissions: the shipped server configuration keeps drones to their own
// subjects and operators to their own downlinks. Each refusal has a control that the
// same flow works where it is allowed.
func TestExamplePermissions(t *testing.T) {
	conf, seeds := exampleConfig(t)
	ns := startNATS(t, conf)
	url := ns.ClientURL()
	cfg := func(id, user, name string) relay.Config {
		return relay.Config{URLs: []string{url}, DroneID: id, Creds: nkeyCreds(seeds[user], name)}
	}

	// A drone cannot take another's uplink.
	if d, err := relay.Listen(cfg("drone-7", "drone-7", "")); err != nil {
		t.Fatalf("drone-7 on its own id: %v", err)
	} else {
		d.Close()
	}
	if d, err := relay.Listen(cfg("drone-8", "drone-7", "")); err == nil {
		d.Close()
		t.Fatal("drone-7's key subscribed to drone-8's uplink")
	} else if !strings.Contains(err.Error(), "refused the subscription to dronelink.drone-8.up") {
		t.Errorf("refusal: %v", err)
	}

	// An operator cannot hear downlinks named after somebody else.
	if o, err := relay.Dial(cfg("drone-8", "alice", "alice")); err != nil {
		t.Fatalf("alice with her name: %v", err)
	} else {
		o.Close()
	}
	if o, err := relay.Dial(cfg("drone-8", "alice", "bob")); err == nil {
		o.Close()
		t.Fatal("alice's key subscribed to bob's downlinks")
	} else if !strings.Contains(err.Error(), "refused the subscription to dronelink.drone-8.down.bob.") {
		t.Errorf("refusal: %v", err)
	}
	// bob flies drone-8 only.
	if o, err := relay.Dial(cfg("drone-7", "bob", "bob")); err == nil {
		o.Close()
		t.Fatal("bob subscribed to drone-7's downlinks")
	}

	// Raw NATS clients: what the permissions let through, and what they stop.
	connect := func(user string) *nats.Conn {
		t.Helper()
		kp := nkeyCreds(seeds[user], "")
		opt, err := nats.NkeyOptionFromSeed(writeSeed(t, kp.NkeySeed))
		if err != nil {
			t.Fatal(err)
		}
		nc, err := nats.Connect(url, opt, nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) {}))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		return nc
	}
	// heard says whether sub got a message since the last call. The publisher flushed
	// (its message reached the server), and the server delivers to a connection in order:
	// once a flush of the subscriber's connection returns, a delivered message is queued.
	heard := func(nc *nats.Conn, sub *nats.Subscription) bool {
		t.Helper()
		if err := nc.Flush(); err != nil {
			t.Fatal(err)
		}
		n, _, err := sub.Pending()
		if err != nil {
			t.Fatal(err)
		}
		for range n {
			if _, err := sub.NextMsg(time.Second); err != nil {
				t.Fatal(err)
			}
		}
		return n > 0
	}
	publish := func(nc *nats.Conn, subject, reply string) {
		t.Helper()
		msg := &nats.Msg{Subject: subject, Reply: reply, Data: []byte("x")}
		if err := nc.PublishMsg(msg); err != nil {
			t.Fatal(err)
		}
		if err := nc.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	bob, alice, d8, d7 := connect("bob"), connect("alice"), connect("drone-8"), connect("drone-7")
	bobDown, err := bob.SubscribeSync("dronelink.drone-8.down.bob.1")
	if err != nil {
		t.Fatal(err)
	}
	d8Up, err := d8.SubscribeSync("dronelink.drone-8.up")
	if err != nil {
		t.Fatal(err)
	}
	if err := bob.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := d8.Flush(); err != nil {
		t.Fatal(err)
	}
	publish(d8, "dronelink.drone-8.down.bob.1", "")
	if !heard(bob, bobDown) {
		t.Fatal("control: drone-8 could not answer bob")
	}
	publish(d7, "dronelink.drone-8.down.bob.1", "")
	if heard(bob, bobDown) {
		t.Error("drone-7 published on drone-8's downlink")
	}
	publish(alice, "dronelink.drone-8.up", "dronelink.drone-8.down.alice.1")
	if !heard(d8, d8Up) {
		t.Fatal("control: alice could not send to drone-8")
	}
	publish(d7, "dronelink.drone-8.up", "")
	if heard(d8, d8Up) {
		t.Error("drone-7 published on drone-8's uplink")
	}
	publish(bob, "dronelink.drone-7.up", "")
	d7Up, err := d7.SubscribeSync("dronelink.drone-7.up")
	if err != nil {
		t.Fatal(err)
	}
	if err := d7.Flush(); err != nil {
		t.Fatal(err)
	}
	publish(bob, "dronelink.drone-7.up", "")
	if heard(d7, d7Up) {
		t.Error("bob published on drone-7's uplink")
	}
}

// writeSeed writes an NKey seed file for nats.NkeyOptionFromSeed.
func writeSeed(t *testing.T, seed string) string {
	t.Helper()
	path := t.TempDir() + "/seed.nk"
	if err := os.WriteFile(path, []byte(seed), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestDroneDropsForeignMessages: messages on the uplink that are not datagrams with a
// downlink of this drone are dropped and counted before the link layer sees them.
func TestDroneDropsForeignMessages(t *testing.T) {
	ns := startNATS(t, "")
	url := ns.ClientURL()
	d := startDrone(t, []string{url}, "drone-7", nil)
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	up := relay.UplinkSubject("drone-7")
	for _, tc := range []struct {
		reply  string
		size   int
		reason relay.DropReason
	}{
		{"", 100, relay.DropBadReply},
		{"dronelink.drone-8.down.alice.1", 100, relay.DropBadReply},
		{"dronelink.drone-7.down.alice", 100, relay.DropBadReply},
		{"dronelink.drone-7.down.al%ce.1", 100, relay.DropBadReply},
		{"dronelink.drone-7.down.alice.1.2", 100, relay.DropBadReply},
		{"dronelink.drone-7.down.alice.1", link.MaxDatagramSize + 1, relay.DropOversize},
		{"dronelink.drone-7.down.alice.1", 0, relay.DropEmpty},
	} {
		before := d.rhooks.drop(tc.reason)
		if err := nc.PublishMsg(&nats.Msg{Subject: up, Reply: tc.reply, Data: make([]byte, tc.size)}); err != nil {
			t.Fatal(err)
		}
		d.rhooks.waitDrop(t, tc.reason, before+1)
	}
	// A well-formed message reaches the link layer, which drops it as malformed.
	before := d.hooks.Drop(link.DropMalformed)
	if err := nc.PublishRequest(up, "dronelink.drone-7.down.alice.1", []byte{0xff, 1, 2}); err != nil {
		t.Fatal(err)
	}
	d.hooks.waitDrop(t, link.DropMalformed, before+1)
}

// TestConnMemory: a relay end holds what its pending limits allow, not nats.go's default
// queue of 65,536 messages per synchronous subscription (512 KB of channel per connection
// whatever the traffic: half a gigabyte for a thousand drones). Heap after GC, before and
// after opening the ends; the embedded server's share of each connection counts too.
func TestConnMemory(t *testing.T) {
	ns := startNATS(t, "")
	urls := []string{ns.ClientURL()}
	const n = 8
	heap := func() uint64 {
		runtime.GC()
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc
	}
	before := heap()
	var ends []interface{ Close() error }
	for i := range n {
		id := fmt.Sprintf("drone-%d", i)
		d, err := relay.Listen(relay.Config{URLs: urls, DroneID: id})
		if err != nil {
			t.Fatal(err)
		}
		o, err := relay.Dial(relay.Config{URLs: urls, DroneID: id})
		if err != nil {
			t.Fatal(err)
		}
		ends = append(ends, d, o)
	}
	after := heap()
	for _, e := range ends {
		e.Close()
	}
	per := int64(after-before) / (2 * n)
	t.Logf("%d bytes of heap per relay end", per)
	if limit := int64(256 << 10); per > limit {
		t.Errorf("%d bytes of heap per relay end, want at most %d", per, limit)
	}
}
