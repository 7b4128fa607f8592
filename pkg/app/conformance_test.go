package app_test

// The conformance suite: the same application tests, run against both secure channels (the
// native protocol of pkg/link and DTLS-PSK of pkg/dtlslink). Each test takes a transport
// and must hold on both: the application layer is written once, so its behaviour must be
// the same whatever carries it.

import (
	"context"
	cryptorand "crypto/rand"
	"crypto/rsa"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dronelink/dronelink/internal/lossproxy"
	"github.com/dronelink/dronelink/pkg/app"
	"github.com/dronelink/dronelink/pkg/crypto"
	"github.com/dronelink/dronelink/pkg/dtlslink"
	"github.com/dronelink/dronelink/pkg/link"
)

// Keys are 2048-bit (the minimum) so the suite stays fast.
var (
	keysOnce sync.Once
	droneKey *rsa.PrivateKey
	userKeys map[string]*rsa.PrivateKey
	fleetPSK = crypto.PSK{9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 9, 8}
)

func keys(t testing.TB) {
	t.Helper()
	keysOnce.Do(func() {
		userKeys = map[string]*rsa.PrivateKey{}
		var mu sync.Mutex
		var wg sync.WaitGroup
		for _, name := range []string{"", "alice", "bob", "olga", "mallory"} {
			wg.Go(func() {
				k, err := crypto.GenerateRSAKey(cryptorand.Reader, 2048)
				if err != nil {
					panic(err)
				}
				mu.Lock()
				defer mu.Unlock()
				if name == "" {
					droneKey = k
				} else {
					userKeys[name] = k
				}
			})
		}
		wg.Wait()
	})
}

// users is an in-memory user database serving both transports: alice and bob are pilots,
// olga an observer, each with one operator key (mallory has a key but no account); the
// password is "<name> secret". A closed
// gate holds every password check until it is opened.
type users struct {
	mu         sync.Mutex
	roles      map[string]app.Role
	gate       chan struct{}
	authorized map[string]int // cheap checks (Authorize, UserRole) per user
}

func newUsers() *users {
	g := make(chan struct{})
	close(g)
	return &users{roles: map[string]app.Role{"alice": app.RolePilot, "bob": app.RolePilot, "olga": app.RoleObserver}, gate: g,
		authorized: map[string]int{}}
}

func (u *users) setRole(name string, role app.Role) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if role == app.RoleNone {
		delete(u.roles, name)
	} else {
		u.roles[name] = role
	}
}

func (u *users) hold() (open func()) {
	g := make(chan struct{})
	u.mu.Lock()
	u.gate = g
	u.mu.Unlock()
	return sync.OnceFunc(func() { close(g) })
}

// checks is how many cheap checks name has had.
func (u *users) checks(name string) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.authorized[name]
}

func (u *users) UserRole(name string) (app.Role, app.LoginStatus) {
	u.mu.Lock()
	u.authorized[name]++
	u.mu.Unlock()
	return u.role(name)
}

func (u *users) role(name string) (app.Role, app.LoginStatus) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if r, ok := u.roles[name]; ok {
		return r, app.LoginOK
	}
	return app.RoleNone, app.LoginUnknownUser
}

func (u *users) CheckPassword(name string, password []byte) (app.Role, app.LoginStatus) {
	u.mu.Lock()
	gate := u.gate
	u.mu.Unlock()
	<-gate
	role, status := u.role(name)
	switch {
	case status != app.LoginOK:
		return app.RoleNone, status
	case string(password) != name+" secret":
		return app.RoleNone, app.LoginWrongPassword
	}
	return role, app.LoginOK
}

func (u *users) LookupKey(id crypto.KeyID) (*rsa.PublicKey, bool) {
	for _, k := range userKeys {
		if crypto.KeyIDOf(&k.PublicKey) == id {
			return &k.PublicKey, true
		}
	}
	return nil, false
}

func (u *users) Authorize(name string, key crypto.KeyID) (app.Role, app.LoginStatus) {
	role, status := u.UserRole(name)
	if status != app.LoginOK {
		return role, status
	}
	if k := userKeys[name]; k == nil || crypto.KeyIDOf(&k.PublicKey) != key {
		return app.RoleNone, app.LoginKeyNotAuthorised
	}
	return role, app.LoginOK
}

func (u *users) Login(name string, password []byte, key crypto.KeyID) (app.Role, app.LoginStatus) {
	if k := userKeys[name]; k == nil || crypto.KeyIDOf(&k.PublicKey) != key {
		return app.RoleNone, app.LoginKeyNotAuthorised
	}
	return u.CheckPassword(name, password)
}

// executor records every executed command; a closed gate holds the handler.
type executor struct {
	mu      sync.Mutex
	count   map[string]int
	order   []string
	gate    chan struct{}
	started chan string // receives each payload as its handler starts, if not nil
}

func newExecutor() *executor { return &executor{count: map[string]int{}} }

func (e *executor) handle(_ context.Context, cmd app.Command) (app.AckStatus, []byte) {
	e.mu.Lock()
	gate, started := e.gate, e.started
	e.mu.Unlock()
	if started != nil {
		started <- string(cmd.Payload)
	}
	if gate != nil {
		<-gate
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.count[string(cmd.Payload)]++
	e.order = append(e.order, cmd.User+": "+string(cmd.Payload))
	return app.AckOK, []byte("done " + string(cmd.Payload))
}

func (e *executor) times(payload string) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.count[payload]
}

// server is what the suite needs of a drone endpoint of either transport.
type server interface {
	Broadcast(payload []byte) (int, error)
	BroadcastFrames(frames []byte, arrived time.Time) (int, error)
	Sessions() []app.SessionInfo
	Revoke(func(app.SessionInfo) bool) int
}

// client is what the suite needs of an operator endpoint of either transport.
type client interface {
	Command(ctx context.Context, payload []byte) (app.Ack, error)
	CommandWith(ctx context.Context, payload []byte, opts app.CommandOptions) (app.Ack, error)
	SendFrames(frames []byte) error
	Role() app.Role
	Err() error
	Close() error
}

// options shape a rig.
type options struct {
	impair    *lossproxy.Config // a lossy proxy between operators and the drone
	keepalive time.Duration
	onFrames  app.FramesHandler
}

// dialOptions shape one operator.
type dialOptions struct {
	password    string // "" for "<user> secret"
	hooks       link.Hooks
	onFrames    func([]byte)
	onTelemetry func([]byte)
	onEvent     func(app.Event)
	timeout     time.Duration
}

// rig is a running drone of one transport with its user database and executor.
type rig struct {
	users *users
	exec  *executor
	hooks *link.Counters // the drone's
	srv   server
	addr  netip.AddrPort // where operators send: the drone, or the lossy proxy
	proxy *lossproxy.Proxy
	dial  func(user string, o dialOptions) (client, error)
}

// transport starts a rig.
type transport struct {
	name  string
	start func(t *testing.T, r *rig, o options) (server, netip.AddrPort)
	dial  func(r *rig, o options, user string, d dialOptions) (client, error)
}

var transports = []transport{
	{name: "native", start: startNative, dial: dialNative},
	{name: "dtls", start: startDTLS, dial: dialDTLS},
}

// eachTransport runs test against each transport.
func eachTransport(t *testing.T, test func(t *testing.T, tr transport)) {
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) { test(t, tr) })
	}
}

func newRig(t *testing.T, tr transport, o options) *rig {
	t.Helper()
	keys(t)
	if o.keepalive == 0 {
		o.keepalive = time.Second
	}
	r := &rig{users: newUsers(), exec: newExecutor(), hooks: &link.Counters{}}
	var droneAddr netip.AddrPort
	r.srv, droneAddr = tr.start(t, r, o)
	r.addr = droneAddr
	if o.impair != nil {
		cfg := *o.impair
		cfg.Target = droneAddr.String()
		p, err := lossproxy.Start(cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { p.Close() })
		r.proxy, r.addr = p, p.Addr()
	}
	r.dial = func(user string, d dialOptions) (client, error) {
		if d.password == "" {
			d.password = user + " secret"
		}
		if d.timeout == 0 {
			d.timeout = 20 * time.Second
		}
		c, err := tr.dial(r, o, user, d)
		if err == nil {
			t.Cleanup(func() { c.Close() })
		}
		return c, err
	}
	return r
}

func listenLoopback(t *testing.T) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// run serves srv until the test ends.
func run(t *testing.T, runFn func(context.Context) error) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- runFn(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("server: %v", err)
		}
	})
}

func startNative(t *testing.T, r *rig, o options) (server, netip.AddrPort) {
	udp := listenLoopback(t)
	s, err := link.NewServer(link.ServerConfig{Conn: link.NewUDPConn(udp), PSK: fleetPSK, DroneKey: link.NewDroneKey(droneKey),
		Auth: r.users, Handler: r.exec.handle, KeepaliveInterval: o.keepalive, Hooks: r.hooks, OnFrames: o.onFrames})
	if err != nil {
		t.Fatal(err)
	}
	run(t, s.Run)
	return s, s.LocalAddr()
}

func dialNative(r *rig, o options, user string, d dialOptions) (client, error) {
	udp, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), d.timeout)
	defer cancel()
	return link.Dial(ctx, link.ClientConfig{Conn: link.NewUDPConn(udp), Drone: r.addr, PSK: fleetPSK,
		OperatorKey: userKeys[user], DronePublic: &droneKey.PublicKey, User: user, Password: []byte(d.password),
		KeepaliveInterval: o.keepalive, OnTelemetry: d.onTelemetry, OnEvent: d.onEvent, Hooks: d.hooks, OnFrames: d.onFrames})
}

func startDTLS(t *testing.T, r *rig, o options) (server, netip.AddrPort) {
	s, err := dtlslink.NewServer(dtlslink.ServerConfig{Conn: listenLoopback(t), PSK: fleetPSK, Passwords: r.users,
		Handler: r.exec.handle, KeepaliveInterval: o.keepalive, Hooks: r.hooks, OnFrames: o.onFrames})
	if err != nil {
		t.Fatal(err)
	}
	run(t, s.Run)
	return s, s.LocalAddr()
}

func dialDTLS(r *rig, o options, user string, d dialOptions) (client, error) {
	ctx, cancel := context.WithTimeout(context.Background(), d.timeout)
	defer cancel()
	return dtlslink.Dial(ctx, dtlslink.ClientConfig{Drone: r.addr, PSK: fleetPSK, User: user, Password: []byte(d.password),
		KeepaliveInterval: o.keepalive, OnTelemetry: d.onTelemetry, OnEvent: d.onEvent, Hooks: d.hooks, OnFrames: d.onFrames})
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func command(t *testing.T, c client, payload string) app.Ack {
	t.Helper()
	ack, err := c.Command(context.Background(), []byte(payload))
	if err != nil {
		t.Fatalf("command %q: %v", payload, err)
	}
	return ack
}

// Logins: the right password logs in with the user's role; a wrong password, an unknown
// user and an observer's command are refused, each with its own status.
func TestConformanceLogin(t *testing.T) {
	eachTransport(t, func(t *testing.T, tr transport) {
		r := newRig(t, tr, options{})
		for _, tc := range []struct {
			user, password string
			want           app.LoginStatus
			role           app.Role
		}{
			{"alice", "", app.LoginOK, app.RolePilot},
			{"olga", "", app.LoginOK, app.RoleObserver},
			{"bob", "guess", app.LoginWrongPassword, app.RoleNone},
			{"mallory", "", app.LoginUnknownUser, app.RoleNone},
		} {
			t.Run(tc.user, func(t *testing.T) {
				c, err := r.dial(tc.user, dialOptions{password: tc.password})
				var le *app.LoginError
				switch {
				case tc.want == app.LoginOK && err != nil:
					t.Fatalf("dial: %v", err)
				case tc.want == app.LoginOK && c.Role() != tc.role:
					t.Fatalf("role %v, want %v", c.Role(), tc.role)
				case tc.want != app.LoginOK && (!errors.As(err, &le) || le.Status != tc.want):
					t.Fatalf("dial error %v, want login status %v", err, tc.want)
				}
			})
		}
		olga, err := r.dial("olga", dialOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if ack := command(t, olga, "arm"); ack.Status != app.AckNotPermitted {
			t.Fatalf("observer's command: %v", ack.Status)
		}
		alice, err := r.dial("alice", dialOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if ack := command(t, alice, "arm"); ack.Status != app.AckOK || string(ack.Payload) != "done arm" {
			t.Fatalf("pilot's command: %v %q", ack.Status, ack.Payload)
		}
		if n := r.exec.times("arm"); n != 1 {
			t.Fatalf("arm executed %d times, want 1 (the observer's must not run)", n)
		}
	})
}

// Telemetry goes only to logged-in sessions: a session whose password check is still
// running receives none and is not counted by Broadcast; once logged in it is.
func TestConformanceTelemetryOnlyAfterLogin(t *testing.T) {
	eachTransport(t, func(t *testing.T, tr transport) {
		r := newRig(t, tr, options{})
		open := r.users.hold()
		defer open()
		var got atomic.Int64
		dialed := make(chan error, 1)
		go func() {
			_, err := r.dial("olga", dialOptions{onTelemetry: func([]byte) { got.Add(1) }})
			dialed <- err
		}()
		waitFor(t, "olga's session on the drone", func() bool { return len(r.srv.Sessions()) == 1 })
		for range 20 {
			if n, err := r.srv.Broadcast([]byte("position")); n != 0 || err != nil {
				t.Fatalf("Broadcast before login went to %d sessions (%v)", n, err)
			}
		}
		open()
		if err := <-dialed; err != nil {
			t.Fatal(err)
		}
		if got.Load() != 0 {
			t.Fatalf("%d telemetry payloads arrived before the login", got.Load())
		}
		waitFor(t, "telemetry after login", func() bool {
			n, _ := r.srv.Broadcast([]byte("position"))
			return n == 1 && got.Load() > 0
		})
	})
}

// A user demoted (or removed) on the drone while a command waits in the queue: the
// command is refused right before it would run (not_permitted) and never executed.
func TestConformanceRevokedWhileQueued(t *testing.T) {
	for _, change := range []struct {
		name string
		role app.Role
	}{{"demoted", app.RoleObserver}, {"removed", app.RoleNone}} {
		t.Run(change.name, func(t *testing.T) {
			eachTransport(t, func(t *testing.T, tr transport) {
				r := newRig(t, tr, options{})
				alice, err := r.dial("alice", dialOptions{})
				if err != nil {
					t.Fatal(err)
				}
				bob, err := r.dial("bob", dialOptions{})
				if err != nil {
					t.Fatal(err)
				}
				gate, started := make(chan struct{}), make(chan string, 4)
				r.exec.mu.Lock()
				r.exec.gate, r.exec.started = gate, started
				r.exec.mu.Unlock()
				first := make(chan app.Ack, 1)
				go func() { ack, _ := alice.Command(context.Background(), []byte("first")); first <- ack }()
				if p := <-started; p != "first" {
					t.Fatalf("started %q", p)
				}
				// The executor is busy with alice's command: bob's queues behind it once the
				// drone has checked bob's role on its arrival.
				checks := r.users.checks("bob")
				second := make(chan error, 1)
				var secondAck app.Ack
				go func() {
					var err error
					secondAck, err = bob.Command(context.Background(), []byte("second"))
					second <- err
				}()
				waitFor(t, "bob's command to reach the drone", func() bool { return r.users.checks("bob") > checks })
				r.users.setRole("bob", change.role)
				close(gate)
				if ack := <-first; ack.Status != app.AckOK {
					t.Fatalf("first: %v", ack.Status)
				}
				err = <-second
				switch {
				case err == nil && secondAck.Status == app.AckNotPermitted:
				case err != nil && change.role == app.RoleNone:
					// A retransmission that arrived after the removal may be answered first:
					// not logged in, and the new login is refused. Also never executed.
				default:
					t.Fatalf("second: %v %v, want not_permitted", secondAck.Status, err)
				}
				if n := r.exec.times("second"); n != 0 {
					t.Fatalf("second executed %d times", n)
				}
			})
		})
	}
}

// At most once under retransmission, duplication and reordering: over a link that doubles
// every datagram, and over one that loses 30% each way, reorders and duplicates, every
// command is acknowledged and executed exactly once.
func TestConformanceAtMostOnce(t *testing.T) {
	for _, link := range []struct {
		name string
		cfg  lossproxy.Config
	}{
		{"duplicated", lossproxy.Config{Duplicate: 1, Seed: 1}},
		{"lossy", lossproxy.Config{Loss: 0.3, Duplicate: 0.1, Reorder: 0.2, Seed: 2}},
	} {
		t.Run(link.name, func(t *testing.T) {
			eachTransport(t, func(t *testing.T, tr transport) {
				r := newRig(t, tr, options{impair: &link.cfg})
				alice, err := r.dial("alice", dialOptions{timeout: time.Minute})
				if err != nil {
					t.Fatal(err)
				}
				const streams, each = 4, 5
				var wg sync.WaitGroup
				errs := make(chan error, streams*each)
				for s := range streams {
					wg.Go(func() {
						for i := range each {
							payload := fmt.Sprintf("cmd-%d-%d", s, i)
							// Independent: four streams in flight at once, each command must run
							// whatever the order of arrival.
							ack, err := alice.CommandWith(context.Background(), []byte(payload), app.CommandOptions{Independent: true})
							switch {
							case err != nil:
								errs <- fmt.Errorf("%s: %w", payload, err)
							case ack.Status != app.AckOK || string(ack.Payload) != "done "+payload:
								errs <- fmt.Errorf("%s: ack %v %q", payload, ack.Status, ack.Payload)
							}
						}
					})
				}
				wg.Wait()
				close(errs)
				for err := range errs {
					t.Error(err)
				}
				for s := range streams {
					for i := range each {
						if n := r.exec.times(fmt.Sprintf("cmd-%d-%d", s, i)); n != 1 {
							t.Errorf("cmd-%d-%d executed %d times", s, i, n)
						}
					}
				}
				if st := r.proxy.Stats(); st.Duplicated == 0 || (link.cfg.Loss > 0 && st.Dropped == 0) {
					t.Fatalf("the link was not impaired: %+v", st)
				}
			})
		})
	}
}

// Link lost and restored: when nothing gets through, the operator reports the link lost;
// when the radio comes back it reports it restored and commands run again, once each.
func TestConformanceLinkLostAndRestored(t *testing.T) {
	eachTransport(t, func(t *testing.T, tr transport) {
		r := newRig(t, tr, options{impair: &lossproxy.Config{}, keepalive: 100 * time.Millisecond})
		events := make(chan app.EventKind, 64)
		alice, err := r.dial("alice", dialOptions{onEvent: func(e app.Event) {
			if e.Kind == app.EventLinkLost || e.Kind == app.EventLinkRestored {
				select {
				case events <- e.Kind:
				default:
				}
			}
		}})
		if err != nil {
			t.Fatal(err)
		}
		command(t, alice, "before")
		r.proxy.SetLoss(1)
		if e := <-events; e != app.EventLinkLost {
			t.Fatalf("event %v, want link lost", e)
		}
		r.proxy.SetLoss(0)
		if e := <-events; e != app.EventLinkRestored {
			t.Fatalf("event %v, want link restored", e)
		}
		command(t, alice, "after")
		if r.exec.times("before") != 1 || r.exec.times("after") != 1 {
			t.Fatalf("executions: %v", r.exec.order)
		}
	})
}

// Tunnelled frames cross the session byte for byte both ways, with the sender's identity
// and current role on the drone; frames held back on the way (here: everything delayed by
// 1.5 s) are judged late by the receiving side's own clock and dropped, both ways, and
// fresh frames flow again once the delay is gone.
func TestConformanceFrames(t *testing.T) {
	eachTransport(t, func(t *testing.T, tr transport) {
		up := make(chan string, 16)
		r := newRig(t, tr, options{impair: &lossproxy.Config{}, onFrames: func(from app.FrameSender, frames []byte) {
			up <- from.User + "/" + from.Role.String() + ": " + string(frames)
		}})
		down := make(chan string, 16)
		opHooks := &link.Counters{}
		alice, err := r.dial("alice", dialOptions{hooks: opHooks, onFrames: func(f []byte) { down <- string(f) }})
		if err != nil {
			t.Fatal(err)
		}
		exchange := func(what string) {
			t.Helper()
			if err := alice.SendFrames([]byte("up " + what)); err != nil {
				t.Fatal(err)
			}
			if got := <-up; got != "alice/pilot: up "+what {
				t.Fatalf("drone got %q", got)
			}
			if n, err := r.srv.BroadcastFrames([]byte("down "+what), time.Time{}); n != 1 || err != nil {
				t.Fatalf("BroadcastFrames: %d %v", n, err)
			}
			if got := <-down; got != "down "+what {
				t.Fatalf("operator got %q", got)
			}
		}
		exchange("fresh")
		r.proxy.SetDelay(1500 * time.Millisecond)
		if err := alice.SendFrames([]byte("up held")); err != nil {
			t.Fatal(err)
		}
		if _, err := r.srv.BroadcastFrames([]byte("down held"), time.Time{}); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "both ends to drop the held frames as late", func() bool {
			return r.hooks.Drop(app.DropLate) >= 1 && opHooks.Drop(app.DropLate) >= 1
		})
		r.proxy.SetDelay(0)
		exchange("again")
		select {
		case got := <-up:
			t.Fatalf("late frames delivered to the drone: %q", got)
		case got := <-down:
			t.Fatalf("late frames delivered to the operator: %q", got)
		default:
		}
	})
}

// A long-running operator that survives the drone's shutdown (a restart) does not carry a
// command awaiting its acknowledgement over to the restarted drone, whose de-duplication
// memory is gone: the command ends with ErrOutcomeUnknown.
func TestSurviveShutdownAbortsPendingCommands(t *testing.T) {
	keys(t)
	u := newUsers()
	gate, started := make(chan struct{}), make(chan struct{}, 1)
	handler := func(context.Context, app.Command) (app.AckStatus, []byte) {
		started <- struct{}{}
		<-gate
		return app.AckOK, nil
	}
	udp := listenLoopback(t)
	s, err := link.NewServer(link.ServerConfig{Conn: link.NewUDPConn(udp), PSK: fleetPSK, DroneKey: link.NewDroneKey(droneKey),
		Auth: u, Handler: handler})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	conn := listenLoopback(t)
	dctx, dcancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer dcancel()
	c, err := link.Dial(dctx, link.ClientConfig{Conn: link.NewUDPConn(conn), Drone: s.LocalAddr(), PSK: fleetPSK,
		OperatorKey: userKeys["alice"], DronePublic: &droneKey.PublicKey, User: "alice", Password: []byte("alice secret"),
		SurviveShutdown: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	result := make(chan error, 1)
	go func() { _, err := c.Command(context.Background(), []byte("arm")); result <- err }()
	<-started
	cancel() // the drone shuts down while the command runs and before it is acknowledged
	if err := <-result; !errors.Is(err, app.ErrOutcomeUnknown) {
		t.Fatalf("pending command: %v, want ErrOutcomeUnknown", err)
	}
	close(gate)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if c.Err() != nil {
		t.Fatalf("the client stopped on the shutdown: %v", c.Err())
	}
}

// heldCommand is a command payload long enough that its datagrams are the only ones
// longer than heldCommandSize, on either transport: the path attacker picks them by size.
var heldCommand = "arm motors " + strings.Repeat("!", 400)

const heldCommandSize = 400

// isHeldCommand selects the operator's datagrams that carry heldCommand.
func isHeldCommand(_ netip.AddrPort, toTarget bool, b []byte) bool {
	return toTarget && len(b) > heldCommandSize
}

// commandsAnswered is how many commands the drone has answered with status s.
func commandsAnswered(r *rig, s app.AckStatus) uint64 { return r.hooks.Commands[s].Load() }

// #13 finding 1, a command the operator gave up on: an attacker on the path holds back
// every copy of "arm motors"; the operator reports no acknowledgement and sends "land",
// which runs; the attacker then releases the held copies. The drone refuses them as late
// (its own judgement of the command's age against the deadline it carries) and never runs
// "arm motors".
func TestConformanceLateCommand(t *testing.T) {
	eachTransport(t, func(t *testing.T, tr transport) {
		r := newRig(t, tr, options{impair: &lossproxy.Config{}})
		alice, err := r.dial("alice", dialOptions{})
		if err != nil {
			t.Fatal(err)
		}
		r.proxy.Withhold(isHeldCommand)
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if ack, err := alice.Command(ctx, []byte(heldCommand)); err == nil {
			t.Fatalf("arm answered %v through an attacker who holds it back", ack.Status)
		} else if !strings.Contains(err.Error(), "will not execute the command any more") {
			t.Errorf("the operator's report does not say the command is dead: %v", err)
		}
		if r.proxy.Withheld() == 0 {
			t.Fatal("nothing was held back")
		}
		if ack := command(t, alice, "land"); ack.Status != app.AckOK {
			t.Fatalf("land: %v", ack.Status)
		}
		late := commandsAnswered(r, app.AckLate)
		n := r.proxy.Release(nil)
		t.Logf("released %d copies of arm", n)
		waitFor(t, "the drone to answer the released copies", func() bool { return commandsAnswered(r, app.AckLate) > late })
		if got := r.exec.times(heldCommand); got != 0 {
			t.Fatalf("arm motors executed %d times after the operator gave up on it", got)
		}
		if got := commandsAnswered(r, app.AckOK); got != 1 {
			t.Fatalf("%d commands executed, want 1 (land)", got)
		}
	})
}

// #13 finding 1, order: "arm motors" is held back while the operator, still waiting for
// it, sends "land", which runs; the held copies are released before arm's deadline. An
// ordered arm is refused as superseded (never executed after the command that followed
// it); one the operator marked independent runs.
func TestConformanceSupersededCommand(t *testing.T) {
	for _, c := range []struct {
		name        string
		independent bool
		want        app.AckStatus
		runs        int
	}{{"ordered", false, app.AckSuperseded, 0}, {"independent", true, app.AckOK, 1}} {
		t.Run(c.name, func(t *testing.T) {
			eachTransport(t, func(t *testing.T, tr transport) {
				r := newRig(t, tr, options{impair: &lossproxy.Config{}})
				alice, err := r.dial("alice", dialOptions{})
				if err != nil {
					t.Fatal(err)
				}
				r.proxy.Withhold(isHeldCommand)
				type result struct {
					ack app.Ack
					err error
				}
				arm := make(chan result, 1)
				go func() {
					ack, err := alice.CommandWith(context.Background(), []byte(heldCommand), app.CommandOptions{Independent: c.independent})
					arm <- result{ack, err}
				}()
				waitFor(t, "arm to be held back", func() bool { return r.proxy.Withheld() > 0 })
				if ack := command(t, alice, "land"); ack.Status != app.AckOK {
					t.Fatalf("land: %v", ack.Status)
				}
				r.proxy.Release(nil)
				res := <-arm
				if res.err != nil || res.ack.Status != c.want {
					t.Fatalf("arm: %v %v, want %v", res.ack.Status, res.err, c.want)
				}
				if got := r.exec.times(heldCommand); got != c.runs {
					t.Fatalf("arm motors executed %d times, want %d", got, c.runs)
				}
			})
		})
	}
}

// #13 finding 4, a refused command stays refused: a pilot's command waits in the queue,
// the pilot is demoted, the executor refuses it (not_permitted, final for the operator);
// the pilot is promoted again and a copy of the command an attacker held back arrives on
// the live session. The drone answers with the stored refusal and never runs it.
func TestConformanceRefusedCommandStaysRefused(t *testing.T) {
	eachTransport(t, func(t *testing.T, tr transport) {
		r := newRig(t, tr, options{impair: &lossproxy.Config{}})
		alice, err := r.dial("alice", dialOptions{})
		if err != nil {
			t.Fatal(err)
		}
		bob, err := r.dial("bob", dialOptions{})
		if err != nil {
			t.Fatal(err)
		}
		gate, started := make(chan struct{}), make(chan string, 4)
		r.exec.mu.Lock()
		r.exec.gate, r.exec.started = gate, started
		r.exec.mu.Unlock()
		first := make(chan app.Ack, 1)
		go func() { ack, _ := alice.Command(context.Background(), []byte("first")); first <- ack }()
		if p := <-started; p != "first" {
			t.Fatalf("started %q", p)
		}
		// Bob's first copy gets through and queues; the attacker keeps every later one.
		var copies atomic.Int32
		r.proxy.Withhold(func(from netip.AddrPort, toTarget bool, b []byte) bool {
			return isHeldCommand(from, toTarget, b) && copies.Add(1) > 1
		})
		checks := r.users.checks("bob")
		second := make(chan app.Ack, 1)
		go func() { ack, _ := bob.Command(context.Background(), []byte(heldCommand)); second <- ack }()
		waitFor(t, "bob's command to reach the drone", func() bool { return r.users.checks("bob") > checks })
		waitFor(t, "a copy to be held back", func() bool { return r.proxy.Withheld() > 0 })
		r.users.setRole("bob", app.RoleObserver)
		close(gate)
		if ack := <-second; ack.Status != app.AckNotPermitted {
			t.Fatalf("bob's command: %v, want not_permitted", ack.Status)
		}
		r.users.setRole("bob", app.RolePilot)
		refused := commandsAnswered(r, app.AckNotPermitted)
		executed := commandsAnswered(r, app.AckOK)
		answered := func() uint64 {
			var n uint64
			for i := range r.hooks.Commands {
				n += r.hooks.Commands[i].Load()
			}
			return n
		}
		before := answered()
		sent := r.proxy.Release(nil)
		// A repeat of a stored answer is not counted; a new decision is. Wait until the
		// drone has read the released copies: bob's next command is answered after them.
		if ack := command(t, bob, "after"); ack.Status != app.AckOK {
			t.Fatalf("bob's next command: %v", ack.Status)
		}
		if got := r.exec.times(heldCommand); got != 0 {
			t.Fatalf("the refused command executed %d times after %d held copies were released", got, sent)
		}
		if a := answered() - before; a != 1 || commandsAnswered(r, app.AckOK) != executed+1 || commandsAnswered(r, app.AckNotPermitted) != refused {
			t.Fatalf("after the release %d new answers (want 1: bob's next command)", a)
		}
	})
}
