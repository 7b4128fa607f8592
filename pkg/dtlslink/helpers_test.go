package dtlslink

import (
	"context"
	"net"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/dtls/v3"

	"github.com/dronelink/dronelink/pkg/crypto"
	"github.com/dronelink/dronelink/pkg/link"
)

// testPSK is the fleet PSK of the tests.
var testPSK = crypto.PSK{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32}

// testUsers is an in-memory user database: alice and bob are pilots, olga an observer;
// the password is "<name> secret".
type testUsers struct {
	checks atomic.Int64
	mu     sync.Mutex
	roles  map[string]link.Role
}

func newTestUsers() *testUsers {
	return &testUsers{roles: map[string]link.Role{"alice": link.RolePilot, "bob": link.RolePilot, "olga": link.RoleObserver}}
}

func (u *testUsers) UserRole(user string) (link.Role, link.LoginStatus) {
	u.mu.Lock()
	defer u.mu.Unlock()
	role, ok := u.roles[user]
	if !ok {
		return link.RoleNone, link.LoginUnknownUser
	}
	return role, link.LoginOK
}

func (u *testUsers) CheckPassword(user string, password []byte) (link.Role, link.LoginStatus) {
	u.checks.Add(1)
	role, status := u.UserRole(user)
	switch {
	case status != link.LoginOK:
		return link.RoleNone, status
	case string(password) != user+" secret":
		return link.RoleNone, link.LoginWrongPassword
	}
	return role, link.LoginOK
}

// drone is an in-process DTLS server with a recording handler.
type drone struct {
	srv      *Server
	addr     netip.AddrPort
	users    *testUsers
	counters *link.Counters
	stop     func()

	mu       sync.Mutex
	executed []string
}

func (d *drone) handle(_ context.Context, cmd link.Command) (link.AckStatus, []byte) {
	d.mu.Lock()
	d.executed = append(d.executed, cmd.User+": "+string(cmd.Payload))
	d.mu.Unlock()
	return link.AckOK, append([]byte("done: "), cmd.Payload...)
}

func (d *drone) commands() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]string(nil), d.executed...)
}

// startDrone runs a server on loopback; adjust may change its config. The server stops at
// the end of the test (or earlier through d.stop) and must not leak goroutines.
func startDrone(t *testing.T, adjust func(*ServerConfig)) *drone {
	t.Helper()
	checkGoroutines(t)
	d := &drone{users: newTestUsers(), counters: &link.Counters{}}
	cfg := ServerConfig{Listen: "127.0.0.1:0", PSK: testPSK, Passwords: d.users, Handler: d.handle, Hooks: d.counters,
		LoginRate: 1000, LoginBurst: 1000, HandshakeRate: 1000, HandshakeBurst: 1000}
	if adjust != nil {
		adjust(&cfg)
	}
	srv, err := NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	d.srv, d.addr = srv, srv.LocalAddr()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	var once sync.Once
	d.stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("server: %v", err)
				}
			case <-time.After(10 * time.Second):
				t.Error("server did not stop")
			}
		})
	}
	t.Cleanup(d.stop)
	return d
}

// checkGoroutines fails the test if goroutines started during it are still running a
// while after its cleanups (registered first, so it runs last).
func checkGoroutines(t *testing.T) {
	t.Helper()
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		deadline := time.Now().Add(5 * time.Second)
		for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		if n := runtime.NumGoroutine(); n > before {
			buf := make([]byte, 1<<20)
			buf = buf[:runtime.Stack(buf, true)]
			t.Errorf("%d goroutines leaked:\n%s", n-before, buf)
		}
	})
}

// clientConfig is a working client config for user.
func clientConfig(d *drone, user string) ClientConfig {
	return ClientConfig{Drone: d.addr, PSK: testPSK, User: user, Password: []byte(user + " secret")}
}

// dial dials and fails the test on error; the client is closed at the end of the test.
func dial(t *testing.T, cfg ClientConfig) *Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	c, err := Dial(ctx, cfg)
	if err != nil {
		t.Fatalf("dial %s: %v", cfg.User, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// rawDial completes a bare pion/dtls handshake with identity and psk: a foreign DTLS peer.
func rawDial(t *testing.T, addr netip.AddrPort, identity string, psk []byte, timeout time.Duration) (*dtls.Conn, error) {
	t.Helper()
	conn, err := handshakeFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), addr, identity, psk, timeout)
	if err == nil {
		t.Cleanup(func() { conn.Close() })
	}
	return conn, err
}

// handshakeFrom completes a bare pion/dtls handshake from a socket on address src (any
// address of the loopback range: 127.0.0.2 is another host to the drone).
func handshakeFrom(src netip.Addr, addr netip.AddrPort, identity string, psk []byte, timeout time.Duration) (*dtls.Conn, error) {
	udp, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(src, 0)))
	if err != nil {
		return nil, err
	}
	conn, err := dtls.ClientWithOptions(udp, net.UDPAddrFromAddrPort(addr),
		dtls.WithPSK(func([]byte) ([]byte, error) { return psk, nil }),
		dtls.WithPSKIdentityHint([]byte(identity)),
		dtls.WithCipherSuites(dtls.TLS_PSK_WITH_AES_128_GCM_SHA256),
		dtls.WithFlightInterval(200*time.Millisecond),
		dtls.WithLoggerFactory(pionLogger{discard}),
	)
	if err != nil {
		udp.Close()
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := conn.HandshakeContext(ctx); err != nil {
		conn.Close()
		udp.Close()
		return nil, err
	}
	return conn, nil
}

// readMessage reads one message from a raw association.
func readMessage(t *testing.T, conn *dtls.Conn, timeout time.Duration) link.Message {
	t.Helper()
	buf := make([]byte, readBufferSize)
	conn.SetReadDeadline(time.Now().Add(timeout))
	defer conn.SetReadDeadline(time.Time{})
	for {
		n, err := conn.Read(buf)
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		var m link.Message
		if err := link.ParseMessage(append([]byte(nil), buf[:n]...), &m); err != nil {
			t.Fatalf("parse: %v", err)
		}
		if m.Type != link.MsgKeepalive {
			return m
		}
	}
}

// waitFor polls cond for up to 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// testCommand is the header of commands that tests build by hand: issued at the session's
// epoch, 30 s to live, not ordered against the sender's other commands.
var testCommand = link.CommandHeader{Flags: link.CommandIndependent, Lifetime: 30000}
