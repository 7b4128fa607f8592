package relay_test

import (
	"context"
	cryptorand "crypto/rand"
	"crypto/rsa"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/dronelink/dronelink/internal/natstest"
	"github.com/dronelink/dronelink/pkg/crypto"
	"github.com/dronelink/dronelink/pkg/link"
	"github.com/dronelink/dronelink/pkg/relay"
)

var (
	keysOnce  sync.Once
	droneKey  *rsa.PrivateKey
	aliceKey  *rsa.PrivateKey
	bobKey    *rsa.PrivateKey
	fleetPSK  crypto.PSK
	keysError error
)

// testKeys makes the dronelink keys once per test binary (2048-bit: the suite stays fast).
func testKeys(t testing.TB) {
	t.Helper()
	keysOnce.Do(func() {
		for _, k := range []**rsa.PrivateKey{&droneKey, &aliceKey, &bobKey} {
			if *k, keysError = crypto.GenerateRSAKey(cryptorand.Reader, 2048); keysError != nil {
				return
			}
		}
		fleetPSK, keysError = crypto.GeneratePSK(cryptorand.Reader)
	})
	if keysError != nil {
		t.Fatal(keysError)
	}
}

// exampleConfig is docs/relay/nats-server.conf, the configuration the README ships, with
// fresh NKeys in place of its placeholders and without its listen address, which natstest
// sets (a loopback address; every node's own in a cluster). seeds maps each user (drone-7,
// drone-8, alice, bob) to its seed.
func exampleConfig(t testing.TB) (conf string, seeds map[string]string) {
	t.Helper()
	conf, seeds, err := natstest.ExampleConfig(filepath.Join("..", "..", "docs", "relay", "nats-server.conf"))
	if err != nil {
		t.Fatal(err)
	}
	return conf, seeds
}

// newNkey makes an NKey user key pair.
func newNkey(t testing.TB) (seed, pub string) {
	t.Helper()
	seed, pub, err := natstest.NewUserKey()
	if err != nil {
		t.Fatal(err)
	}
	return seed, pub
}

// startNATS runs an embedded NATS server with conf for the test.
func startNATS(t testing.TB, conf string) *server.Server {
	t.Helper()
	s, err := natstest.StartEmbedded(t.TempDir(), conf)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		s.Shutdown()
		s.WaitForShutdown()
	})
	return s
}

// nkeyCreds are credentials that present seed, naming the operator's downlinks name.
func nkeyCreds(seed, name string) *relay.Creds {
	return &relay.Creds{NkeySeed: seed, Name: name}
}

// relayHooks counts the relay's events.
type relayHooks struct {
	connected    atomic.Int64
	disconnected atomic.Int64
	reconnected  atomic.Int64
	drops        [16]atomic.Int64
	changed      chan struct{} // a signal after every event
}

func newRelayHooks() *relayHooks { return &relayHooks{changed: make(chan struct{}, 1)} }

func (h *relayHooks) signal() {
	select {
	case h.changed <- struct{}{}:
	default:
	}
}
func (h *relayHooks) Connected(string)              { h.connected.Add(1); h.signal() }
func (h *relayHooks) Disconnected()                 { h.disconnected.Add(1); h.signal() }
func (h *relayHooks) Reconnected()                  { h.reconnected.Add(1); h.signal() }
func (h *relayHooks) Dropped(r relay.DropReason)    { h.drops[r].Add(1); h.signal() }
func (h *relayHooks) drop(r relay.DropReason) int64 { return h.drops[r].Load() }
func (h *relayHooks) waitDrop(t *testing.T, r relay.DropReason, want int64) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for h.drop(r) < want {
		select {
		case <-h.changed:
		case <-deadline:
			t.Fatalf("%s drops = %d, want %d", r, h.drop(r), want)
		}
	}
}

// linkHooks counts the link's events and signals each drop.
type linkHooks struct {
	*link.Counters
	changed chan struct{}
}

func (h *linkHooks) Dropped(r link.DropReason) {
	h.Counters.Dropped(r)
	select {
	case h.changed <- struct{}{}:
	default:
	}
}

func (h *linkHooks) waitDrop(t *testing.T, r link.DropReason, want uint64) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for h.Drop(r) < want {
		select {
		case <-h.changed:
		case <-deadline:
			t.Fatalf("link drops %v = %d, want %d", r, h.Drop(r), want)
		}
	}
}

// testLogger logs to the test's output when DRONELINK_TEST_LOG is set.
func testLogger() *slog.Logger {
	if os.Getenv("DRONELINK_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// testAuth authorises alice (pilot) and bob (observer) with their keys.
type testAuth struct{}

func (testAuth) user(id crypto.KeyID) (string, link.Role, string, bool) {
	switch id {
	case crypto.KeyIDOf(&aliceKey.PublicKey):
		return "alice", link.RolePilot, "alice-pw", true
	case crypto.KeyIDOf(&bobKey.PublicKey):
		return "bob", link.RoleObserver, "bob-pw", true
	}
	return "", link.RoleNone, "", false
}

func (a testAuth) LookupKey(id crypto.KeyID) (*rsa.PublicKey, bool) {
	switch id {
	case crypto.KeyIDOf(&aliceKey.PublicKey):
		return &aliceKey.PublicKey, true
	case crypto.KeyIDOf(&bobKey.PublicKey):
		return &bobKey.PublicKey, true
	}
	return nil, false
}

func (a testAuth) Login(user string, password []byte, key crypto.KeyID) (link.Role, link.LoginStatus) {
	name, role, pw, ok := a.user(key)
	switch {
	case !ok || name != user:
		return link.RoleNone, link.LoginKeyNotAuthorised
	case string(password) != pw:
		return link.RoleNone, link.LoginWrongPassword
	}
	return role, link.LoginOK
}

func (a testAuth) Authorize(user string, key crypto.KeyID) (link.Role, link.LoginStatus) {
	name, role, _, ok := a.user(key)
	if !ok || name != user {
		return link.RoleNone, link.LoginKeyNotAuthorised
	}
	return role, link.LoginOK
}

// execLog records the commands the drone executed.
type execLog struct {
	mu   sync.Mutex
	runs map[string]int
	ran  chan string
}

func newExecLog() *execLog { return &execLog{runs: map[string]int{}, ran: make(chan string, 1024)} }

func (l *execLog) handler(_ context.Context, cmd link.Command) (link.AckStatus, []byte) {
	l.mu.Lock()
	l.runs[string(cmd.Payload)]++
	l.mu.Unlock()
	l.ran <- string(cmd.Payload)
	return link.AckOK, []byte("done " + string(cmd.Payload))
}

func (l *execLog) count(payload string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.runs[payload]
}

// drone is a link.Server serving a UDP socket and the relay.
type drone struct {
	server *link.Server
	relay  *relay.DroneConn
	hooks  *linkHooks
	rhooks *relayHooks
	execs  *execLog
	udp    netip.AddrPort
	cancel context.CancelFunc
	done   chan error
}

// startDrone runs a drone with id on the relay at urls, with creds, beside a UDP socket.
func startDrone(t *testing.T, urls []string, id string, creds *relay.Creds) *drone {
	t.Helper()
	testKeys(t)
	d := &drone{hooks: &linkHooks{Counters: &link.Counters{}, changed: make(chan struct{}, 1)}, rhooks: newRelayHooks(), execs: newExecLog(), done: make(chan error, 1)}
	var err error
	d.relay, err = relay.Listen(relay.Config{URLs: urls, DroneID: id, Creds: creds, Hooks: d.rhooks, Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	udp, err := link.ListenUDP("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	d.udp = udp.LocalAddr()
	d.server, err = link.NewServer(link.ServerConfig{Conn: udp, Extra: []link.ExtraConn{d.relay}, PSK: fleetPSK,
		DroneKey: link.NewDroneKey(droneKey), Auth: testAuth{}, Handler: d.execs.handler, Hooks: d.hooks,
		Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	d.cancel = cancel
	go func() { d.done <- d.server.Run(ctx) }()
	t.Cleanup(d.stop)
	return d
}

func (d *drone) stop() {
	if d.cancel == nil {
		return
	}
	d.cancel()
	d.cancel = nil
	if err := <-d.done; err != nil {
		panic(fmt.Sprintf("server Run: %v", err))
	}
}

// operatorConfig is alice's (or bob's) working link config over conn to drone.
func operatorConfig(conn link.PacketConn, drone netip.AddrPort, user string) link.ClientConfig {
	key, pw := aliceKey, "alice-pw"
	if user == "bob" {
		key, pw = bobKey, "bob-pw"
	}
	return link.ClientConfig{Conn: conn, Drone: drone, PSK: fleetPSK, OperatorKey: key, DronePublic: &droneKey.PublicKey,
		User: user, Password: []byte(pw), Logger: testLogger()}
}
