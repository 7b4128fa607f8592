package relay_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/dronelink/dronelink/internal/natstest"
	"github.com/dronelink/dronelink/pkg/link"
	"github.com/dronelink/dronelink/pkg/relay"
)

// The NATS server is not trusted (package doc): the relay's operator, or anyone on the
// path of a nats:// (plain TCP) connection, can send the drone's NATS client anything.
// These tests play such a server (fakeNATS) and check that it can drop or delay the
// relay's datagrams, and nothing more: the drone's other socket keeps serving, the relay
// comes back, and the process survives.

// TestRelayServerErrorKeepsDroneServing: a server sends an error line nats.go does not
// know ("-ERR 'Bogus Error'"). nats.go then closes the connection for good, without
// reconnecting. On 0a207a1 the relay's reader returned net.ErrClosed, link.Server.Run took
// that as the end of the server, and closed the UDP socket too: a relay operator (or, with
// nats://, anyone on the drone's LTE path) could end the drone's command link on every
// transport with one line, and dronelinkd exited with status 0, which the shipped systemd
// unit (Restart=on-failure) does not restart. The UDP operator must still get through.
func TestRelayServerErrorKeepsDroneServing(t *testing.T) {
	f := startFakeNATS(t)
	d := startDrone(t, []string{f.URL()}, "drone-7", nil)
	c := f.next(t)
	if err := c.write("-ERR 'Bogus Error'\r\n"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-c.closed:
	case <-time.After(20 * time.Second):
		t.Fatal("the drone's NATS client did not react to the error")
	}

	udp, err := link.ListenUDP("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	alice, err := link.Dial(ctx, operatorConfig(udp, d.udp, "alice"))
	if err != nil {
		t.Fatalf("alice over UDP after the relay's error: %v", err)
	}
	defer alice.Close()
	if ack, err := alice.Command(ctx, []byte("still here")); err != nil || ack.Status != link.AckOK {
		t.Fatalf("alice's command over UDP after the relay's error: %+v %v", ack, err)
	}
	select {
	case err := <-d.done:
		d.done <- err // for d.stop
		t.Fatalf("the drone's server stopped (Run returned %v) after the relay server's error line", err)
	default:
	}
}

// TestDroneRelayComesBackAfterServerError: after such an error the drone's end of the relay
// connects again and goes on reading; on 0a207a1 its ReadFrom failed with net.ErrClosed
// and it never connected again (in relay-only mode the daemon stopped, exit status 0).
func TestDroneRelayComesBackAfterServerError(t *testing.T) {
	f := startFakeNATS(t)
	d, err := relay.Listen(relay.Config{URLs: []string{f.URL()}, DroneID: "drone-7", Logger: testLogger(),
		ReconnectWait: 10 * time.Millisecond, KeepTrying: true})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	type read struct {
		data []byte
		err  error
	}
	reads := make(chan read, 4)
	go func() {
		buf := make([]byte, link.ReadBufferSize)
		for {
			n, _, err := d.ReadFrom(buf)
			reads <- read{bytes.Clone(buf[:n]), err}
			if err != nil {
				return
			}
		}
	}()
	c := f.next(t)
	if err := c.write("-ERR 'Bogus Error'\r\n"); err != nil {
		t.Fatal(err)
	}
	var again *fakeNATSConn
	select {
	case again = <-f.conns:
		t.Cleanup(func() { again.c.Close() })
	case r := <-reads:
		t.Fatalf("the drone's relay failed instead of connecting again: read %q, %v", r.data, r.err)
	case <-time.After(20 * time.Second):
		t.Fatal("the drone's relay did not connect again")
	}
	again.deliver(t, "dronelink.drone-7.down.alice.1", []byte("\x14after"))
	select {
	case r := <-reads:
		if r.err != nil || string(r.data) != "\x14after" {
			t.Fatalf("after reconnecting: read %q, %v", r.data, r.err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("nothing read after reconnecting")
	}
}

// TestHostileRelayMessageSize: a server announces a message of 9e18 bytes. nats.go (v1.55.0,
// parser.go, split-message path) allocates the size the server claims, unchecked, and the
// drone's process panics ("makeslice: cap out of range"; a size of a few GB is a fatal out
// of memory instead): a relay operator, or anyone on a nats:// path, crashes dronelinkd and
// with it the UDP link, and again at every restart. The brief's "never panic on network
// input" holds for the relay's input too. The client runs in a child process, so that the
// crash fails this test instead of the whole test binary. It passes when the client
// survives the message and, its pings unanswered, connects again.
func TestHostileRelayMessageSize(t *testing.T) {
	if os.Getenv("DRONELINK_HOSTILE_CHILD") == "1" {
		hostileMessageSizeChild(t)
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestHostileRelayMessageSize$", "-test.count=1")
	cmd.Env = append(os.Environ(), "DRONELINK_HOSTILE_CHILD=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		msg := string(out)
		if i := strings.Index(msg, "panic:"); i >= 0 {
			msg = msg[i:min(len(msg), i+300)]
		}
		t.Fatalf("the drone's relay client did not survive a message size the server made up: %v\n%s", err, msg)
	}
}

func hostileMessageSizeChild(t *testing.T) {
	f := startFakeNATS(t)
	d, err := relay.Listen(relay.Config{URLs: []string{f.URL()}, DroneID: "drone-7", Logger: testLogger(),
		PingInterval: 20 * time.Millisecond, ReconnectWait: 10 * time.Millisecond, KeepTrying: true})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	c := f.next(t)
	// The header and the start of the payload in one write: the client's parser reaches
	// the end of its read buffer inside the message and sets a buffer aside for the rest.
	if err := c.write("MSG dronelink.drone-7.up " + c.sid + " 9000000000000000000\r\n" + strings.Repeat("x", 64)); err != nil {
		t.Fatal(err)
	}
	// Alive, the client takes the next bytes as payload, gets no PONG, and connects again.
	again := f.next(t)
	again.c.Close()
}

// TestDroneRelayWritesDoNotBlock: a server that stops reading (a hostile relay, or a
// congested LTE uplink) must cost the drone datagrams, like a full UDP socket, not block
// its writers. nats.go writes to the TCP connection itself once 32 KiB wait in its buffer,
// for up to its FlusherTimeout (a minute by default); on 0a207a1 DroneConn.WriteTo did
// that in the caller's goroutine: the drone's command executor (acknowledgements), login
// workers and telemetry broadcast, which serve the UDP operators too, stopped for a minute.
// Here 20000 datagrams of 1200 bytes are written while the server reads nothing: every
// write must return (sent into the buffer, or dropped).
func TestDroneRelayWritesDoNotBlock(t *testing.T) {
	f := startFakeNATS(t)
	d, err := relay.Listen(relay.Config{URLs: []string{f.URL()}, DroneID: "drone-7", Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	c := f.next(t)
	c.deliver(t, "dronelink.drone-7.down.alice.1", []byte("\x14hello"))
	buf := make([]byte, link.ReadBufferSize)
	_, peer, err := d.ReadFrom(buf)
	if err != nil {
		t.Fatal(err)
	}
	resume := c.pause(t)
	done := make(chan int)
	go func() {
		datagram := bytes.Repeat([]byte{0x14}, link.MaxDatagramSize)
		failed := 0
		for range 20000 {
			if d.WriteTo(datagram, peer) != nil {
				failed++
			}
		}
		done <- failed
	}()
	select {
	case failed := <-done:
		t.Logf("%d of 20000 writes dropped while the server read nothing", failed)
	case <-time.After(20 * time.Second):
		resume()
		<-done
		t.Fatal("a write to the relay blocked for more than 20 s while the server read nothing")
	}
}

// TestUplinkFloodKeepsLiveDownlinks: the drone remembers at most DefaultMaxPeers downlink
// subjects, and a new one evicted the least recently heard. Anyone allowed to publish on a
// drone's uplink (here bob, an operator of drone-8 in the shipped server configuration; no
// PSK or dronelink key needed) makes up one reply subject per message: 3 x 4096 one-byte
// messages cut alice, logged in through the relay but quiet for a moment, off her
// telemetry and acknowledgements (DropUnknownPeer) until she next sends, and again after
// every next 4096. The drone must not forget a downlink it is answering.
func TestUplinkFloodKeepsLiveDownlinks(t *testing.T) {
	conf, seeds := exampleConfig(t)
	ns := startNATS(t, conf)
	urls := []string{ns.ClientURL()}
	d := startDrone(t, urls, "drone-8", nkeyCreds(seeds["drone-8"], ""))

	telemetry := make(chan string, 16)
	conn, err := relay.Dial(relay.Config{URLs: urls, DroneID: "drone-8", Creds: nkeyCreds(seeds["alice"], "alice"), Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	cfg := operatorConfig(conn, relay.DroneAddr, "alice")
	cfg.OnTelemetry = func(p []byte) { telemetry <- string(p) }
	cfg.KeepaliveInterval = time.Minute // quiet during the test; the flood takes well under that
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	alice, err := link.Dial(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer alice.Close()

	bob := rawNATS(t, ns.ClientURL(), seeds["bob"])
	handled := func() uint64 { // flood messages the drone is done with: link drops plus relay drops
		n := d.hooks.Drop(link.DropMalformed)
		for i := range d.rhooks.drops {
			n += uint64(d.rhooks.drops[i].Load())
		}
		return n
	}
	const batch, batches = 1024, 3 * relay.DefaultMaxPeers / 1024
	for b := range batches {
		before := handled()
		for i := range batch {
			reply := fmt.Sprintf("dronelink.drone-8.down.bob.%d", b*batch+i)
			if err := bob.PublishRequest("dronelink.drone-8.up", reply, []byte{0}); err != nil {
				t.Fatal(err)
			}
		}
		if err := bob.Flush(); err != nil {
			t.Fatal(err)
		}
		deadline := time.After(20 * time.Second)
		for handled() < before+batch { // each drop signals one of the hooks' changed
			select {
			case <-d.hooks.changed:
			case <-d.rhooks.changed:
			case <-deadline:
				t.Fatalf("the drone handled %d of a batch of %d flood messages", handled()-before, batch)
			}
		}
	}

	unknown := d.rhooks.drop(relay.DropUnknownPeer)
	if _, err := d.server.Broadcast([]byte("alt=120")); err != nil {
		t.Fatal(err)
	}
	if n := d.rhooks.drop(relay.DropUnknownPeer) - unknown; n != 0 {
		t.Fatalf("after a flood of made-up reply subjects the drone no longer knows alice's downlink: %d datagrams to her dropped", n)
	}
	select {
	case got := <-telemetry:
		if got != "alt=120" {
			t.Errorf("telemetry %q", got)
		}
	case <-ctx.Done():
		t.Fatal("no telemetry reached alice after the flood")
	}
}

// rawNATS is a plain NATS client presenting seed.
func rawNATS(t *testing.T, url, seed string, more ...nats.Option) *nats.Conn {
	t.Helper()
	opt, err := nats.NkeyOptionFromSeed(writeSeed(t, seed))
	if err != nil {
		t.Fatal(err)
	}
	opts := append([]nats.Option{opt, nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) {})}, more...)
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// TestDroneHearsAgainAfterPermissionsRestored: the relay's administrator takes the drone's
// subscribe permission away (a mistake in a reload, or on purpose) and gives it back. The
// server drops the subscription at the first reload; on 0a207a1 the drone waited for a
// reconnection to subscribe again, which never comes while the TCP connection lives: the
// drone stayed deaf on the relay until it or the server restarted. It must hear its
// uplink again once the permission is back.
func TestDroneHearsAgainAfterPermissionsRestored(t *testing.T) {
	conf, seeds := exampleConfig(t)
	dir := t.TempDir()
	ns, err := natstest.StartEmbedded(dir, conf)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ns.Shutdown()
		ns.WaitForShutdown()
	})
	reload := func(c string) {
		t.Helper()
		// The listen address the server was started with (StartEmbedded's): a reload may
		// not change it.
		if err := os.WriteFile(filepath.Join(dir, "embedded.conf"), []byte("listen: 127.0.0.1:-1\n"+c), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := ns.Reload(); err != nil {
			t.Fatal(err)
		}
	}
	d := startDrone(t, []string{ns.ClientURL()}, "drone-7", nkeyCreds(seeds["drone-7"], ""))
	alice := rawNATS(t, ns.ClientURL(), seeds["alice"])
	send := func() {
		t.Helper()
		if err := alice.PublishRequest("dronelink.drone-7.up", "dronelink.drone-7.down.alice.1", []byte{0xff}); err != nil {
			t.Fatal(err)
		}
		if err := alice.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	send()
	d.hooks.waitDrop(t, link.DropMalformed, 1)

	allow := `subscribe: { allow: ["dronelink.drone-7.up"] }`
	if !strings.Contains(conf, allow) {
		t.Fatalf("the example config has no %s", allow)
	}
	reload(strings.Replace(conf, allow, `subscribe: { allow: ["dronelink.drone-7.nothing"] }`, 1))
	d.rhooks.waitDrop(t, relay.DropPermission, 1) // the server told the drone
	reload(conf)

	// Send until the drone hears again: it learns of the restored permission only by
	// trying, so nothing here can wait for an event of its own.
	heard := d.hooks.Drop(link.DropMalformed)
	deadline := time.After(20 * time.Second)
	for d.hooks.Drop(link.DropMalformed) == heard {
		send()
		select {
		case <-d.hooks.changed:
		case <-time.After(100 * time.Millisecond):
		case <-deadline:
			t.Fatalf("the drone is still deaf on the relay 20 s after its permission was restored (state %+v)", d.relay.State())
		}
	}
}

// TestOperatorSessionSurvivesNoResponders: NATS answers an operator's datagram with "no
// responders" when no drone subscribes to the uplink (the drone restarting, or its LTE
// link down). Before the first session that fails the dial at once (TestNoDroneServesID);
// afterwards it must not end the operator's client: a relay that drops traffic makes the
// link lost, and the client sets up a new session when the drone is back.
func TestOperatorSessionSurvivesNoResponders(t *testing.T) {
	conf, seeds := exampleConfig(t)
	ns := startNATS(t, conf)
	urls := []string{ns.ClientURL()}
	d := startDrone(t, urls, "drone-7", nkeyCreds(seeds["drone-7"], ""))
	ahooks := newRelayHooks()
	conn, err := relay.Dial(relay.Config{URLs: urls, DroneID: "drone-7", Creds: nkeyCreds(seeds["alice"], "alice"), Hooks: ahooks, Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	cfg := operatorConfig(conn, relay.DroneAddr, "alice")
	cfg.KeepaliveInterval = 50 * time.Millisecond // the link is found lost quickly
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	alice, err := link.Dial(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer alice.Close()
	if ack, err := alice.Command(ctx, []byte("one")); err != nil || ack.Status != link.AckOK {
		t.Fatalf("first command: %+v %v", ack, err)
	}

	d.relay.Close() // the drone leaves the relay (its LTE link is down); it serves UDP on
	ahooks.waitDrop(t, relay.DropNoResponders, 1)
	startDrone(t, urls, "drone-7", nkeyCreds(seeds["drone-7"], ""))
	// The first command after the outage may meet the new drone before the new session
	// (answered "restarted": it cannot tell it from one issued before it started); the
	// client must answer it at all, and the next one must run.
	if _, err := alice.Command(ctx, []byte("two")); err != nil {
		t.Fatalf("the operator's client gave up after no responders: %v", err)
	}
	if ack, err := alice.Command(ctx, []byte("three")); err != nil || ack.Status != link.AckOK {
		t.Fatalf("command after the drone came back: %+v %v", ack, err)
	}
}

// TestExamplePermissionsAgainstNATSUsers: what the shipped server configuration lets a NATS
// user of the fleet do beyond TestExamplePermissions, with raw NATS clients.
//
//   - An operator cannot widen its subscriptions: wildcards over other operators'
//     downlinks, the whole tree, _INBOX, a drone's uplink are refused.
//   - A drone cannot be made to answer on another drone's downlink through a reply
//     subject: the configuration grants no allow_responses, so drone-7 may publish on its
//     own downlinks only, whatever reply subject a message names.
//   - The reply subject itself is the publisher's choice (NATS's publish permissions do not
//     cover it): alice can name bob's downlink, and drone-8 then answers there. Only the
//     link's own checks protect bob (his client drops what fails the PSK MAC or the AEAD).
//   - "No responders" tells an operator allowed to publish on a drone's uplink whether a
//     drone serves that id; NATS delivers it only to the publisher itself, so it cannot be
//     aimed at another operator's downlink.
func TestExamplePermissionsAgainstNATSUsers(t *testing.T) {
	conf, seeds := exampleConfig(t)
	ns := startNATS(t, conf)
	url := ns.ClientURL()
	alice, bob := rawNATS(t, url, seeds["alice"], nats.PermissionErrOnSubscribe(true)), rawNATS(t, url, seeds["bob"])
	d7, d8 := rawNATS(t, url, seeds["drone-7"]), rawNATS(t, url, seeds["drone-8"])

	for _, subject := range []string{"dronelink.*.down.>", "dronelink.drone-8.down.*.>", "dronelink.>", ">", "_INBOX.>",
		"dronelink.drone-8.up", "dronelink.*.up", "dronelink.drone-8.down.bob.1"} {
		sub, err := alice.SubscribeSync(subject)
		if err != nil {
			t.Fatal(err)
		}
		if err := alice.Flush(); err != nil {
			t.Fatal(err)
		}
		if _, err := sub.NextMsg(0); !errors.Is(err, nats.ErrPermissionViolation) {
			t.Errorf("alice subscribed to %s: %v", subject, err)
		}
		_ = sub.Unsubscribe()
	}

	flushAll := func(ncs ...*nats.Conn) {
		t.Helper()
		for _, nc := range ncs {
			if err := nc.Flush(); err != nil {
				t.Fatal(err)
			}
		}
	}
	// heard says whether sub got a message since the last call: the publisher flushed, and
	// once a flush of the subscriber's connection returns, a delivered message is queued.
	heard := func(nc *nats.Conn, sub *nats.Subscription) bool {
		t.Helper()
		flushAll(nc)
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
	up7, err := d7.SubscribeSync("dronelink.drone-7.up")
	if err != nil {
		t.Fatal(err)
	}
	up8, err := d8.SubscribeSync("dronelink.drone-8.up")
	if err != nil {
		t.Fatal(err)
	}
	bobDown, err := bob.SubscribeSync("dronelink.drone-8.down.bob.n1")
	if err != nil {
		t.Fatal(err)
	}
	flushAll(d7, d8, bob)

	// A reply subject on drone-8's downlink, sent to drone-7: drone-7 may not answer there.
	if err := alice.PublishRequest("dronelink.drone-7.up", "dronelink.drone-8.down.bob.n1", []byte("x")); err != nil {
		t.Fatal(err)
	}
	flushAll(alice)
	msg, err := up7.NextMsg(10 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if err := d7.Publish(msg.Reply, []byte("drone-7 posing as drone-8")); err != nil {
		t.Fatal(err)
	}
	flushAll(d7)
	if heard(bob, bobDown) {
		t.Error("drone-7 answered on drone-8's downlink through a reply subject")
	}

	// The same reply subject sent to drone-8: drone-8 answers bob, who never asked.
	if err := alice.PublishRequest("dronelink.drone-8.up", "dronelink.drone-8.down.bob.n1", []byte("x")); err != nil {
		t.Fatal(err)
	}
	flushAll(alice)
	if msg, err = up8.NextMsg(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	if msg.Reply != "dronelink.drone-8.down.bob.n1" {
		t.Fatalf("reply subject %q", msg.Reply)
	}
	if err := d8.Publish(msg.Reply, []byte("answer")); err != nil {
		t.Fatal(err)
	}
	flushAll(d8)
	if !heard(bob, bobDown) {
		t.Error("control: drone-8's answer on the reply subject alice chose did not reach bob")
	}

	// No responders: to the publisher only.
	probe, err := alice.SubscribeSync("dronelink.drone-9.down.alice.p")
	if err != nil {
		t.Fatal(err)
	}
	flushAll(alice)
	if err := alice.PublishRequest("dronelink.drone-9.up", "dronelink.drone-9.down.alice.p", []byte("x")); err != nil {
		t.Fatal(err)
	}
	if _, err := probe.NextMsg(10 * time.Second); !errors.Is(err, nats.ErrNoResponders) {
		t.Errorf("probe of a drone id nobody serves: %v, want no responders", err)
	}
	if err := alice.PublishRequest("dronelink.drone-9.up", "dronelink.drone-8.down.bob.n1", []byte("x")); err != nil {
		t.Fatal(err)
	}
	flushAll(alice)
	if heard(bob, bobDown) {
		t.Error("a no-responders status reached bob's downlink, named as another's reply subject")
	}
}

// spy records every message on dronelink.> of a NATS server without permissions: what the
// relay's operator sees.
type spy struct {
	mu   sync.Mutex
	nc   *nats.Conn
	sub  *nats.Subscription
	msgs []*nats.Msg
}

// startSpy subscribes to everything of the relay, as its operator sees it.
func startSpy(t *testing.T, url string) (*spy, *nats.Conn) {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	s := &spy{nc: nc}
	// A synchronous subscription: the client queues each message as it reads it, so once
	// a flush returns, every message the server sent before its pong is queued (a callback
	// subscription would still be running callbacks on a goroutine of its own).
	if s.sub, err = nc.SubscribeSync("dronelink.>"); err != nil {
		t.Fatal(err)
	}
	if err := s.sub.SetPendingLimits(-1, -1); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return s, nc
}

// collect takes every message the server has sent the spy so far into s.msgs.
func (s *spy) collect(t *testing.T) {
	t.Helper()
	if err := s.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for {
		m, err := s.sub.NextMsg(0)
		if err != nil {
			return
		}
		s.msgs = append(s.msgs, m)
	}
}

func (s *spy) uplink() []*nats.Msg {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*nats.Msg
	for _, m := range s.msgs {
		if strings.HasSuffix(m.Subject, ".up") {
			out = append(out, m)
		}
	}
	return out
}

// TestRelaySeesSealedDatagramsOnly: the relay's operator, who sees every message, finds in
// them neither the password, nor the command, nor its acknowledgement, nor the telemetry:
// only dronelink datagrams, each starting with the native protocol's first byte.
func TestRelaySeesSealedDatagramsOnly(t *testing.T) {
	ns := startNATS(t, "")
	url := ns.ClientURL()
	sp, _ := startSpy(t, url)
	d := startDrone(t, []string{url}, "drone-7", nil)
	telemetry := make(chan string, 4)
	alice, _ := dialRelay(t, relay.Config{URLs: []string{url}, DroneID: "drone-7", Logger: testLogger()}, "alice",
		func(c *link.ClientConfig) { c.OnTelemetry = func(p []byte) { telemetry <- string(p) } })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if ack, err := alice.Command(ctx, []byte("take off to 120 m")); err != nil || ack.Status != link.AckOK {
		t.Fatalf("command: %+v %v", ack, err)
	}
	if _, err := d.server.Broadcast([]byte("altitude 119.5 m")); err != nil {
		t.Fatal(err)
	}
	select {
	case <-telemetry:
	case <-ctx.Done():
		t.Fatal("no telemetry")
	}
	sp.collect(t)
	sp.mu.Lock()
	defer sp.mu.Unlock()
	if len(sp.msgs) < 6 {
		t.Fatalf("the spy saw %d messages", len(sp.msgs))
	}
	for _, m := range sp.msgs {
		for _, secret := range []string{"alice-pw", "take off", "done take off", "altitude"} {
			if bytes.Contains(m.Data, []byte(secret)) {
				t.Errorf("%s carries %q in clear", m.Subject, secret)
			}
		}
		if len(m.Data) == 0 || m.Data[0]>>4 != 1 || m.Data[0]&0xf < 1 || m.Data[0]&0xf > 6 {
			t.Errorf("%s carries something else than a dronelink datagram: % x", m.Subject, m.Data[:min(8, len(m.Data))])
		}
	}
}

// TestRelayOperatorReplaysAndRedirects: the relay's operator holds every datagram of a
// session and publishes each again, three times: with its own reply subject, with the
// reply subject of a downlink of its own, and in reverse order. The drone counts each as a
// drop (stale initiation, replayed data, unknown session), executes the command once, and
// keeps answering the operator on its own downlink (a replay never moves the session).
func TestRelayOperatorReplaysAndRedirects(t *testing.T) {
	ns := startNATS(t, "")
	url := ns.ClientURL()
	sp, spyConn := startSpy(t, url)
	d := startDrone(t, []string{url}, "drone-7", nil)
	telemetry := make(chan string, 4)
	alice, _ := dialRelay(t, relay.Config{URLs: []string{url}, DroneID: "drone-7", Logger: testLogger()}, "alice",
		func(c *link.ClientConfig) { c.OnTelemetry = func(p []byte) { telemetry <- string(p) } })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if ack, err := alice.Command(ctx, []byte("take off")); err != nil || ack.Status != link.AckOK {
		t.Fatalf("command: %+v %v", ack, err)
	}
	sp.collect(t)
	recorded := sp.uplink()
	if len(recorded) < 3 {
		t.Fatalf("recorded %d uplink datagrams", len(recorded))
	}
	drops := func() uint64 {
		var n uint64
		for _, r := range []link.DropReason{link.DropStale, link.DropReplay, link.DropUnknownSession, link.DropDecrypt} {
			n += d.hooks.Drop(r)
		}
		return n
	}
	before := drops()
	var replays []*nats.Msg
	for _, m := range recorded {
		replays = append(replays, &nats.Msg{Subject: m.Subject, Reply: m.Reply, Data: m.Data},
			&nats.Msg{Subject: m.Subject, Reply: "dronelink.drone-7.down.mallory.1", Data: m.Data})
	}
	for i := len(recorded) - 1; i >= 0; i-- {
		replays = append(replays, &nats.Msg{Subject: recorded[i].Subject, Reply: recorded[i].Reply, Data: recorded[i].Data})
	}
	for _, m := range replays {
		if err := spyConn.PublishMsg(m); err != nil {
			t.Fatal(err)
		}
	}
	if err := spyConn.Flush(); err != nil {
		t.Fatal(err)
	}
	want := before + uint64(len(replays))
	deadline := time.After(20 * time.Second)
	for drops() < want {
		select {
		case <-d.hooks.changed:
		case <-deadline:
			t.Fatalf("%d of %d replayed datagrams counted as drops (%+v)", drops()-before, len(replays), d.hooks.Counters)
		}
	}
	if n := d.execs.count("take off"); n != 1 {
		t.Errorf("take off executed %d times", n)
	}
	for _, s := range d.server.SessionStatus() {
		if subject, ok := d.relay.Subject(s.Peer); ok && strings.Contains(subject, "mallory") {
			t.Errorf("session %d follows the replayer's downlink %s", s.LocalIndex, subject)
		}
	}
	if _, err := d.server.Broadcast([]byte("alt=1")); err != nil {
		t.Fatal(err)
	}
	select {
	case <-telemetry:
	case <-ctx.Done():
		t.Fatal("alice no longer hears the drone after the replays")
	}
	if ack, err := alice.Command(ctx, []byte("land")); err != nil || ack.Status != link.AckOK {
		t.Fatalf("command after the replays: %+v %v", ack, err)
	}
}

// TestHostileRelayProtocolDropCounted: a message size over relay.MaxMessageSize (2 MiB,
// which nats.go itself would wait for) fails the connection before nats.go parses it: the
// drop is counted (DropProtocol) and the drone connects again and hears its uplink.
func TestHostileRelayProtocolDropCounted(t *testing.T) {
	f := startFakeNATS(t)
	hooks := newRelayHooks()
	d, err := relay.Listen(relay.Config{URLs: []string{f.URL()}, DroneID: "drone-7", Logger: testLogger(), Hooks: hooks,
		ReconnectWait: 10 * time.Millisecond, KeepTrying: true})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	c := f.next(t)
	if err := c.write(fmt.Sprintf("MSG dronelink.drone-7.up %s dronelink.drone-7.down.alice.1 %d\r\n", c.sid, 2<<20)); err != nil {
		t.Fatal(err)
	}
	hooks.waitDrop(t, relay.DropProtocol, 1)
	again := f.next(t)
	again.deliver(t, "dronelink.drone-7.down.alice.1", []byte("\x14after"))
	buf := make([]byte, link.ReadBufferSize)
	n, _, err := d.ReadFrom(buf)
	if err != nil || string(buf[:n]) != "\x14after" {
		t.Fatalf("after the refused message: read %q, %v", buf[:n], err)
	}
}
