package dtlslink

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pion/dtls/v3"

	"github.com/dronelink/dronelink/internal/lossproxy"
	"github.com/dronelink/dronelink/pkg/link"
)

var discard = slog.New(slog.DiscardHandler)

func TestLoginCommandAndClose(t *testing.T) {
	d := startDrone(t, nil)
	ops := &link.Counters{}
	cfg := clientConfig(d, "alice")
	cfg.Hooks = ops
	var events []link.EventKind
	var evMu = make(chan struct{}, 1)
	evMu <- struct{}{}
	cfg.OnEvent = func(e link.Event) { <-evMu; events = append(events, e.Kind); evMu <- struct{}{} }
	c := dial(t, cfg)
	if c.Role() != link.RolePilot {
		t.Fatalf("role %v", c.Role())
	}
	ack, err := c.Command(context.Background(), []byte("take off to 10 m"))
	if err != nil {
		t.Fatal(err)
	}
	if ack.Status != link.AckOK || string(ack.Payload) != "done: take off to 10 m" {
		t.Fatalf("ack %v %q", ack.Status, ack.Payload)
	}
	if got := d.commands(); !slices.Equal(got, []string{"alice: take off to 10 m"}) {
		t.Fatalf("executed %q", got)
	}
	sessions := d.srv.Sessions()
	if len(sessions) != 1 || sessions[0].User != "alice" || sessions[0].Role != link.RolePilot {
		t.Fatalf("sessions %+v", sessions)
	}
	c.Close()
	waitFor(t, "the session to end", func() bool { return len(d.srv.Sessions()) == 0 })
	time.Sleep(50 * time.Millisecond)
	if n := d.counters.Drop(link.DropUnknownSession); n != 0 {
		t.Errorf("a normal close left %d datagrams for no association", n)
	}

	<-evMu
	for _, k := range []link.EventKind{link.EventHandshakeSent, link.EventEstablished, link.EventLoginSent, link.EventLoggedIn} {
		if !slices.Contains(events, k) {
			t.Errorf("no event %d in %v", k, events)
		}
	}
	evMu <- struct{}{}
	for name, n := range map[string]uint64{
		"drone handshakes ok":     d.counters.Handshakes[link.HandshakeOK].Load(),
		"operator handshakes ok":  ops.Handshakes[link.HandshakeOK].Load(),
		"drone logins ok":         d.counters.Logins[link.LoginOK].Load(),
		"drone commands ok":       d.counters.Commands[link.AckOK].Load(),
		"drone received command":  d.counters.Received[link.KindCommand].Load(),
		"drone received login":    d.counters.Received[link.KindLogin].Load(),
		"drone received flights":  d.counters.Received[link.KindInitiation].Load(),
		"drone sent ack":          d.counters.Sent[link.KindAck].Load(),
		"drone sent login result": d.counters.Sent[link.KindLoginResult].Load(),
		"drone sent flights":      d.counters.Sent[link.KindResponse].Load(),
		"operator sent command":   ops.Sent[link.KindCommand].Load(),
		"operator received ack":   ops.Received[link.KindAck].Load(),
		"operator acks ok":        ops.Commands[link.AckOK].Load(),
		"operator round trips":    ops.RoundTrips.Load(),
	} {
		if n == 0 {
			t.Errorf("%s: 0", name)
		}
	}
	if d.counters.Sessions.Load() != 0 {
		t.Errorf("sessions gauge %d after close", d.counters.Sessions.Load())
	}
}

func TestLoginRefusals(t *testing.T) {
	d := startDrone(t, nil)
	for _, tc := range []struct {
		user, password string
		want           link.LoginStatus
	}{
		{"alice", "wrong", link.LoginWrongPassword},
		{"nobody", "nobody secret", link.LoginUnknownUser},
	} {
		t.Run(tc.want.String(), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			start := time.Now()
			_, err := Dial(ctx, ClientConfig{Drone: d.addr, PSK: testPSK, User: tc.user, Password: []byte(tc.password)})
			var le *link.LoginError
			if !errors.As(err, &le) || le.Status != tc.want {
				t.Fatalf("err %v, want login error %v", err, tc.want)
			}
			if el := time.Since(start); el > 5*time.Second {
				t.Errorf("refusal took %v", el)
			}
		})
	}
	if got := d.counters.Logins[link.LoginWrongPassword].Load() + d.counters.Logins[link.LoginUnknownUser].Load(); got != 2 {
		t.Errorf("refused logins counted %d", got)
	}
}

func TestObserverMayNotCommand(t *testing.T) {
	d := startDrone(t, nil)
	c := dial(t, clientConfig(d, "olga"))
	ack, err := c.Command(context.Background(), []byte("land"))
	if err != nil || ack.Status != link.AckNotPermitted {
		t.Fatalf("ack %v, %v", ack.Status, err)
	}
	if len(d.commands()) != 0 {
		t.Fatalf("executed %q", d.commands())
	}
}

// A foreign DTLS peer whose login names another user than its PSK identity is refused
// before any password check.
func TestLoginMustMatchIdentity(t *testing.T) {
	d := startDrone(t, nil)
	conn, err := rawDial(t, d.addr, "alice", testPSK[:], 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Write(link.AppendLogin(nil, 7, "bob", []byte("bob secret"))); err != nil {
		t.Fatal(err)
	}
	m := readMessage(t, conn, 5*time.Second)
	if m.Type != link.MsgLoginResult || m.ID != 7 || link.LoginStatus(m.Status) != link.LoginKeyNotAuthorised || m.Role != link.RoleNone {
		t.Fatalf("answer %+v", m)
	}
	if n := d.users.checks.Load(); n != 0 {
		t.Errorf("%d password checks for a mismatched identity", n)
	}
	// A command on the association is not executed.
	conn.Write(link.AppendCommand(nil, 8, testCommand, []byte("take off")))
	if m := readMessage(t, conn, 5*time.Second); m.Type != link.MsgAck || link.AckStatus(m.Status) != link.AckNotLoggedIn {
		t.Fatalf("answer %+v", m)
	}
	if len(d.commands()) != 0 {
		t.Fatalf("executed %q", d.commands())
	}
}

// An identity that is not a user name gets no PSK: the handshake fails with an alert.
func TestBadIdentityRefused(t *testing.T) {
	d := startDrone(t, nil)
	start := time.Now()
	if _, err := rawDial(t, d.addr, "not a user!", testPSK[:], 5*time.Second); err == nil {
		t.Fatal("handshake with a bad identity succeeded")
	}
	if el := time.Since(start); el > 4*time.Second {
		t.Errorf("refusal took %v (an alert should end it at once)", el)
	}
	waitFor(t, "the failed handshake to be counted", func() bool { return d.counters.Handshakes[link.HandshakeFailed].Load() == 1 })
}

// The same command id, sent many times (duplicates and retransmissions), runs once; every
// copy is acknowledged with the stored answer.
func TestCommandExecutedOnce(t *testing.T) {
	d := startDrone(t, nil)
	conn, err := rawDial(t, d.addr, "alice", testPSK[:], 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	conn.Write(link.AppendLogin(nil, 1, "alice", []byte("alice secret")))
	for range 2 { // the result of a password check comes twice
		if m := readMessage(t, conn, 5*time.Second); m.Type != link.MsgLoginResult || link.LoginStatus(m.Status) != link.LoginOK {
			t.Fatalf("login %+v", m)
		}
	}
	// The login retransmitted with the same id is answered again without a second check.
	conn.Write(link.AppendLogin(nil, 1, "alice", []byte("alice secret")))
	if m := readMessage(t, conn, 5*time.Second); m.Type != link.MsgLoginResult || link.LoginStatus(m.Status) != link.LoginOK {
		t.Fatalf("login again %+v", m)
	}
	if n := d.users.checks.Load(); n != 1 {
		t.Errorf("%d password checks", n)
	}
	cmd := link.AppendCommand(nil, 42, testCommand, []byte("arm"))
	const copies = 5
	for range copies {
		conn.Write(cmd)
	}
	acks := 0
	for acks < copies {
		m := readMessage(t, conn, 5*time.Second)
		if m.Type != link.MsgAck || m.ID != 42 || link.AckStatus(m.Status) != link.AckOK || string(m.Payload) != "done: arm" {
			t.Fatalf("answer %+v", m)
		}
		acks++
		if acks == 1 {
			// The copies sent while it ran were dropped as running; send more now.
			for range copies - 1 {
				conn.Write(cmd)
			}
		}
	}
	if got := d.commands(); !slices.Equal(got, []string{"alice: arm"}) {
		t.Fatalf("executed %q", got)
	}
	// The same id from a new association of the same user is not executed again either.
	conn2, err := rawDial(t, d.addr, "alice", testPSK[:], 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	conn2.Write(link.AppendLogin(nil, 2, "alice", []byte("alice secret")))
	readMessage(t, conn2, 5*time.Second)
	readMessage(t, conn2, 5*time.Second) // its second copy
	conn2.Write(cmd)
	if m := readMessage(t, conn2, 5*time.Second); m.Type != link.MsgAck || m.ID != 42 {
		t.Fatalf("answer %+v", m)
	}
	if n := len(d.commands()); n != 1 {
		t.Fatalf("executed %d times", n)
	}
}

func TestTelemetryOnlyToLoggedIn(t *testing.T) {
	d := startDrone(t, nil)
	got := make(chan string, 10)
	cfg := clientConfig(d, "olga")
	cfg.OnTelemetry = func(p []byte) { got <- string(p) }
	dial(t, cfg)
	// An association that never logged in receives nothing.
	raw, err := rawDial(t, d.addr, "bob", testPSK[:], 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if n, err := d.srv.Broadcast([]byte("battery 87%")); n != 1 || err != nil {
		t.Fatalf("broadcast to %d, %v", n, err)
	}
	select {
	case p := <-got:
		if p != "battery 87%" {
			t.Fatalf("telemetry %q", p)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no telemetry")
	}
	raw.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	buf := make([]byte, 2048)
	for {
		n, err := raw.Read(buf)
		if err != nil {
			break
		}
		if buf[0] != link.MsgKeepalive {
			t.Fatalf("association without login received %q", buf[:n])
		}
	}
	if _, err := d.srv.Broadcast(make([]byte, link.MaxTelemetryPayload+1)); !errors.Is(err, link.ErrTooLarge) {
		t.Errorf("oversize telemetry: %v", err)
	}
}

func TestRevokeEndsSession(t *testing.T) {
	d := startDrone(t, nil)
	olga := dial(t, clientConfig(d, "olga"))
	alice := dial(t, clientConfig(d, "alice"))
	if n := d.srv.Revoke(func(s link.SessionInfo) bool { return s.User == "olga" }); n != 1 {
		t.Fatalf("revoked %d", n)
	}
	select {
	case <-olga.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("revoked client still running")
	}
	var ce *link.ClosedError
	if !errors.As(olga.Err(), &ce) || ce.Reason != link.CloseRevoked {
		t.Fatalf("err %v", olga.Err())
	}
	if _, err := alice.Command(context.Background(), []byte("still here")); err != nil {
		t.Fatalf("other session: %v", err)
	}
}

func TestShutdownTellsOperators(t *testing.T) {
	d := startDrone(t, nil)
	c := dial(t, clientConfig(d, "olga"))
	d.stop()
	select {
	case <-c.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("client did not notice the shutdown")
	}
	var ce *link.ClosedError
	if !errors.As(c.Err(), &ce) || ce.Reason != link.CloseShutdown {
		t.Fatalf("err %v", c.Err())
	}
}

// A wrong PSK gets no alert from pion/dtls: the client sees no answer until its deadline,
// and the drone counts a failed handshake when its own timeout ends it.
func TestWrongPSKTimesOut(t *testing.T) {
	// The timeout ends the forged half-open association below; it also bounds the genuine
	// handshake, which on a loaded machine under the race detector can take over a second
	// (the drone then gives up on it and never registers the session).
	d := startDrone(t, func(c *ServerConfig) { c.HandshakeTimeout = 4 * time.Second })
	cfg := clientConfig(d, "alice")
	cfg.PSK[0] ^= 1
	ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := Dial(ctx, cfg)
	if err == nil || !strings.Contains(err.Error(), "no answer from the drone") || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err %v", err)
	}
	if el := time.Since(start); el > 4*time.Second {
		t.Errorf("took %v", el)
	}
	waitFor(t, "the failed handshake to be counted", func() bool { return d.counters.Handshakes[link.HandshakeFailed].Load() >= 1 })
	if d.users.checks.Load() != 0 || len(d.commands()) != 0 {
		t.Fatal("work done for a wrong PSK")
	}
}

// Datagrams that are not DTLS, and DTLS records for no association, are counted drops and
// open nothing.
func TestStrayDatagramsDropped(t *testing.T) {
	d := startDrone(t, nil)
	c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(d.addr))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte("hello, drone"))
	appData := []byte{contentApplicationData, 0xfe, 0xfd, 0, 1, 0, 0, 0, 0, 0, 9, 0, 3, 1, 2, 3}
	c.Write(appData)
	waitFor(t, "the drops", func() bool {
		return d.counters.Drop(link.DropMalformed) == 1 && d.counters.Drop(link.DropUnknownSession) == 1
	})
	if n := len(d.srv.Sessions()); n != 0 {
		t.Fatalf("%d sessions", n)
	}
}

// counts is how many associations are handshaking and established.
func (s *Server) counts() (handshaking, established int) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.handshakingLocked(), s.established
}

// Associations still handshaking (here half-open: a ClientHello whose sender never
// returns the cookie, as with a spoofed source) are bounded apart from established
// sessions: beyond MaxHandshakes the oldest of the busiest source is evicted, so a real
// operator still gets in, and they time out. MaxSessions is a hard limit on established
// sessions.
func TestHandshakeLimits(t *testing.T) {
	d := startDrone(t, func(c *ServerConfig) { c.MaxHandshakes = 2; c.MaxSessions = 3; c.HandshakeTimeout = time.Second })
	for range 3 {
		hello, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(d.addr))
		if err != nil {
			t.Fatal(err)
		}
		defer hello.Close()
		hello.Write(minimalClientHello())
	}
	waitFor(t, "an eviction", func() bool { return d.counters.Drop(link.DropSessionLimit) == 1 })
	if h, e := d.srv.counts(); h != 2 || e != 0 {
		t.Fatalf("%d handshaking, %d established; want 2, 0", h, e)
	}
	alice := dial(t, clientConfig(d, "alice")) // evicts another half-open one
	waitFor(t, "the half-open associations to time out", func() bool { h, e := d.srv.counts(); return h == 0 && e == 1 })
	dial(t, clientConfig(d, "bob"))
	dial(t, clientConfig(d, "olga"))
	before := d.counters.Drop(link.DropSessionLimit)
	if _, err := rawDial(t, d.addr, "alice", testPSK[:], 500*time.Millisecond); err == nil {
		t.Fatal("a fourth session beyond MaxSessions")
	}
	if d.counters.Drop(link.DropSessionLimit) == before {
		t.Fatal("no session_limit drop")
	}
	if _, err := alice.Command(context.Background(), []byte("still flying")); err != nil {
		t.Fatal(err)
	}
}

// minimalClientHello is the start of a ClientHello datagram: enough for the demultiplexer
// to open an association (pion then waits for a valid one).
func minimalClientHello() []byte {
	b := make([]byte, clientHelloAt+8)
	b[recOffType], b[recOffVersion], b[recOffVersion+1] = contentHandshake, 0xfe, 0xff
	b[hsOffType] = handshakeClientHello
	for i := range randomSize {
		b[chOffRandom+i] = byte(i)
	}
	return b
}

// The client sets up a new association and logs in again when the drone forgot the old one
// (here: the drone restarted on the same port). A command issued while the drone was down
// is answered "restarted", not executed: the drone cannot know whether its earlier run
// executed it. One issued after the new login runs.
func TestReconnectAfterDroneRestart(t *testing.T) {
	d := startDrone(t, nil)
	cfg := clientConfig(d, "alice")
	cfg.KeepaliveInterval = 200 * time.Millisecond
	hooks := &link.Counters{}
	cfg.Hooks = hooks
	logins := make(chan struct{}, 4)
	cfg.OnEvent = func(e link.Event) {
		if e.Kind == link.EventLoggedIn {
			logins <- struct{}{}
		}
	}
	c := dial(t, cfg)
	<-logins
	if _, err := c.Command(context.Background(), []byte("one")); err != nil {
		t.Fatal(err)
	}
	addr := d.addr
	// Stop the drone without telling the client (a crash): with its socket closed first,
	// the shutdown's close messages never leave.
	d.srv.sock.Close()
	d.stop()
	sent := hooks.Sent[link.KindCommand].Load()
	type result struct {
		ack link.Ack
		err error
	}
	pending := make(chan result, 1)
	go func() {
		ack, err := c.Command(context.Background(), []byte("two"))
		pending <- result{ack, err}
	}()
	waitFor(t, "the command to go out to the stopped drone", func() bool { return hooks.Sent[link.KindCommand].Load() > sent })
	d2 := startDrone(t, func(s *ServerConfig) { s.Listen = addr.String() })
	if r := <-pending; r.err != nil || r.ack.Status != link.AckRestarted {
		t.Fatalf("a command issued before the restart: %v %v, want restarted", r.ack.Status, r.err)
	}
	<-logins
	ack, err := c.Command(context.Background(), []byte("three"))
	if err != nil || ack.Status != link.AckOK {
		t.Fatalf("after restart: %v %v", ack.Status, err)
	}
	if got := d2.commands(); !slices.Equal(got, []string{"alice: three"}) {
		t.Fatalf("executed %q", got)
	}
}

// Over a link that loses 30% of datagrams in each direction (and duplicates and reorders
// some), the handshake, the login and commands complete in bounded time, and each command
// runs once. Several seeds, so the handshake meets losses in different flights.
func TestLossyLink(t *testing.T) {
	d := startDrone(t, nil)
	var dropped uint64
	var slowest time.Duration
	for seed := uint64(1); seed <= 3; seed++ {
		proxy, err := lossproxy.Start(lossproxy.Config{Target: d.addr.String(), Loss: 0.3, Duplicate: 0.1, Reorder: 0.1, Seed: seed})
		if err != nil {
			t.Fatal(err)
		}
		cfg := clientConfig(d, "alice")
		cfg.Drone = proxy.Addr()
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		start := time.Now()
		c, err := Dial(ctx, cfg)
		if err != nil {
			cancel()
			proxy.Close()
			t.Fatalf("seed %d: dial over 30%% loss: %v", seed, err)
		}
		dialTime := time.Since(start)
		for i := range 2 {
			msg := fmt.Sprintf("seed %d command %d", seed, i)
			ack, err := c.Command(ctx, []byte(msg))
			if err != nil || ack.Status != link.AckOK {
				t.Fatalf("%s: %v %v", msg, ack.Status, err)
			}
		}
		c.Close()
		cancel()
		proxy.Close()
		st := proxy.Stats()
		dropped += st.Dropped
		slowest = max(slowest, dialTime)
		t.Logf("seed %d: handshake and login %v, with commands %v; proxy %+v", seed, dialTime.Round(time.Millisecond),
			time.Since(start).Round(time.Millisecond), st)
	}
	got := d.commands()
	if len(got) != 6 {
		t.Fatalf("executed %d commands, want 6: %q", len(got), got)
	}
	slices.Sort(got)
	if len(slices.Compact(got)) != 6 {
		t.Fatalf("a command ran twice: %q", got)
	}
	if dropped < 10 {
		t.Fatalf("the proxy dropped only %d datagrams", dropped)
	}
	t.Logf("slowest handshake and login: %v", slowest.Round(time.Millisecond))
}

func netip127() netip.AddrPort { return netip.MustParseAddrPort("127.0.0.1:9") }

func TestConfigChecks(t *testing.T) {
	users := newTestUsers()
	h := func(context.Context, link.Command) (link.AckStatus, []byte) { return link.AckOK, nil }
	for name, cfg := range map[string]ServerConfig{
		"no socket":   {Passwords: users, Handler: h},
		"no handler":  {Listen: "127.0.0.1:0", Passwords: users},
		"CBC suite":   {Listen: "127.0.0.1:0", Passwords: users, Handler: h, CipherSuites: []dtls.CipherSuiteID{dtls.TLS_PSK_WITH_AES_128_CBC_SHA256}},
		"cert suite":  {Listen: "127.0.0.1:0", Passwords: users, Handler: h, CipherSuites: []dtls.CipherSuiteID{dtls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256}},
		"no suites":   {Listen: "127.0.0.1:0", Passwords: users, Handler: h, CipherSuites: []dtls.CipherSuiteID{}},
		"huge window": {Listen: "127.0.0.1:0", Passwords: users, Handler: h, ReplayWindow: 1 << 20},
	} {
		if _, err := NewServer(cfg); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	for _, user := range []string{"", "white space", strings.Repeat("x", 65), "naïve"} {
		if _, err := Dial(context.Background(), ClientConfig{Drone: netip127(), User: user}); err == nil {
			t.Errorf("user %q accepted", user)
		}
	}
	for _, user := range []string{"alice", "a.b_c-D9", strings.Repeat("x", 64)} {
		if !ValidUserName(user) {
			t.Errorf("%q refused", user)
		}
	}
}

// Neither end logs a password or the PSK, not even at Debug level with pion's own messages.
func TestLogsHoldNoSecrets(t *testing.T) {
	var droneLog, opLog logBuffer
	debug := &slog.HandlerOptions{Level: slog.LevelDebug}
	d := startDrone(t, func(c *ServerConfig) { c.Logger = slog.New(slog.NewTextHandler(&droneLog, debug)) })
	cfg := clientConfig(d, "alice")
	cfg.Logger = slog.New(slog.NewTextHandler(&opLog, debug))
	c := dial(t, cfg)
	if _, err := c.Command(context.Background(), []byte("arm")); err != nil {
		t.Fatal(err)
	}
	c.Close()
	bad := clientConfig(d, "alice")
	bad.Password = []byte("hunter2-wrong")
	bad.Logger = cfg.Logger
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := Dial(ctx, bad); err == nil {
		t.Fatal("wrong password accepted")
	}
	waitFor(t, "the logs", func() bool { return strings.Contains(droneLog.String(), "result=wrong_password") })
	for name, log := range map[string]string{"drone": droneLog.String(), "operator": opLog.String()} {
		if !strings.Contains(log, "handshake") {
			t.Errorf("%s log has no handshake line:\n%s", name, log)
		}
		for _, secret := range []string{"alice secret", "hunter2-wrong", fmt.Sprintf("%x", testPSK[:]), string(testPSK[:])} {
			if strings.Contains(log, secret) {
				t.Errorf("%s log contains a secret %q", name, secret)
			}
		}
	}
}

// logBuffer collects log output for assertions.
type logBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// A forged ClientHello "from" a live operator's address (a spoofed source) does not end its
// association: it opens a half-open one that times out, and the address goes back to the
// live association. Here the operator is a foreign peer without connection IDs, so its
// records are routed by address only.
func TestForgedClientHelloKeepsSession(t *testing.T) {
	// The timeout ends the forged half-open association below; it also bounds the genuine
	// handshake, which on a loaded machine under the race detector can take over a second
	// (the drone then gives up on it and never registers the session).
	d := startDrone(t, func(c *ServerConfig) { c.HandshakeTimeout = 4 * time.Second })
	conn, err := rawDial(t, d.addr, "alice", testPSK[:], 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	// The client's handshake ends when the drone's last flight arrives; the drone finishes
	// its side, and registers the session, on its own goroutine, possibly just after.
	waitFor(t, "the drone to register the session", func() bool { return len(d.srv.Sessions()) == 1 })
	peer := d.srv.Sessions()[0].Peer
	d.srv.route(minimalClientHello(), peer) // as the reader goroutine would for a spoofed datagram
	waitFor(t, "the half-open association", func() bool { h, e := d.srv.counts(); return h == 1 && e == 1 })
	waitFor(t, "the half-open association to time out", func() bool { h, e := d.srv.counts(); return h == 0 && e == 1 })
	conn.Write(link.AppendLogin(nil, 1, "alice", []byte("alice secret")))
	if m := readMessage(t, conn, 5*time.Second); m.Type != link.MsgLoginResult || link.LoginStatus(m.Status) != link.LoginOK {
		t.Fatalf("login after the forged ClientHello: %+v", m)
	}
}
