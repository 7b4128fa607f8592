package operator

import (
	"context"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dronelink/dronelink/pkg/crypto"
	"github.com/dronelink/dronelink/pkg/dtlslink"
	"github.com/dronelink/dronelink/pkg/link"
	"github.com/dronelink/dronelink/pkg/userdb"
)

// dtlsDrone is an in-process DTLS-PSK drone with the users of startDrone.
type dtlsDrone struct {
	server *dtlslink.Server
	addr   string

	mu       sync.Mutex
	executed []string
}

func startDTLSDrone(t *testing.T, f *fixture) *dtlsDrone {
	t.Helper()
	k := keys(t)
	db := userdb.Empty()
	for _, u := range []struct {
		name string
		role link.Role
	}{{"alice", link.RolePilot}, {"olga", link.RoleObserver}} {
		hash, err := userdb.HashPassword([]byte(u.name+" secret"), cheapParams)
		if err != nil {
			t.Fatal(err)
		}
		if db, err = db.WithUser(u.name, u.role, hash, &k[u.name].PublicKey); err != nil {
			t.Fatal(err)
		}
	}
	psk, err := crypto.LoadPSK(f.psk)
	if err != nil {
		t.Fatal(err)
	}
	d := &dtlsDrone{}
	srv, err := dtlslink.NewServer(dtlslink.ServerConfig{
		Listen: "127.0.0.1:0", PSK: psk, Passwords: db, Handler: d.handle,
		HandshakeRate: 1000, HandshakeBurst: 1000, LoginRate: 1000, LoginBurst: 1000,
	})
	if err != nil {
		t.Fatal(err)
	}
	d.server, d.addr = srv, srv.LocalAddr().String()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("drone: %v", err)
		}
	})
	return d
}

func (d *dtlsDrone) handle(_ context.Context, cmd link.Command) (link.AckStatus, []byte) {
	d.mu.Lock()
	d.executed = append(d.executed, cmd.User+": "+string(cmd.Payload))
	d.mu.Unlock()
	return link.AckOK, append([]byte("done: "), cmd.Payload...)
}

func (d *dtlsDrone) commands() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]string(nil), d.executed...)
}

// dtlsArgs are working send/listen flags for DTLS mode: no --key, no --drone-pub.
func dtlsArgs(f *fixture, droneAddr, user, pw string) []string {
	return []string{"--transport", "dtls", "--drone", droneAddr, "--psk", f.psk, "--user", user, "--password-file", f.path(pw)}
}

func TestDTLSSendAcknowledged(t *testing.T) {
	f := newFixture(t)
	d := startDTLSDrone(t, f)
	r := run(t, "", append(append([]string{"send"}, dtlsArgs(f, d.addr, "alice", "alice.pw")...), "take", "off")...)
	r.want(t, 0)
	if r.stdout != "ack ok: done: take off\n" {
		t.Errorf("stdout %q", r.stdout)
	}
	if got := d.commands(); strings.Join(got, "|") != "alice: take off" {
		t.Errorf("executed %q", got)
	}
}

// The native refusals hold in DTLS mode; those about keys cannot occur there.
func TestDTLSSendRefusals(t *testing.T) {
	f := newFixture(t)
	d := startDTLSDrone(t, f)
	writeFile(t, f.path("nobody.pw"), "nobody secret\n", 0o600)
	other := writeFile(t, f.path("other.psk"), strings.Repeat("ab", 32)+"\n", 0o600)
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	closed := c.LocalAddr().String()
	c.Close()
	for _, tc := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"wrong password", dtlsArgs(f, d.addr, "alice", "bad.pw"), 3, "login refused: wrong password"},
		{"unknown user", dtlsArgs(f, d.addr, "nobody", "nobody.pw"), 3, "login refused: unknown user"},
		{"observer", dtlsArgs(f, d.addr, "olga", "olga.pw"), 4, "command refused: user role may not command (observer)"},
		{"PSK mismatch", append(dtlsArgs(f, d.addr, "alice", "alice.pw"), "--psk", other, "--timeout", "1s"), 5,
			"no answer from the drone at " + d.addr + " within 1s (is it running? same PSK?)"},
		{"unreachable", append(dtlsArgs(f, closed, "alice", "alice.pw"), "--timeout", "1s"), 5, "no answer from the drone at " + closed},
		{"user name not a PSK identity", dtlsArgs(f, d.addr, "no body", "nobody.pw"), 2, "--transport dtls"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			r := run(t, "", append(append([]string{"send"}, tc.args...), "refused", tc.name)...)
			r.want(t, tc.code, tc.want)
			if el := time.Since(start); el > 10*time.Second {
				t.Errorf("took %v", el)
			}
		})
	}
	for _, c := range d.commands() {
		if strings.Contains(c, "refused") {
			t.Errorf("a refused command was executed: %q", c)
		}
	}
}

func TestDTLSListenCountAndRevoke(t *testing.T) {
	f := newFixture(t)
	d := startDTLSDrone(t, f)
	waitLoggedIn := func(n int) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for time.Now().Before(deadline) {
			got := 0
			for _, s := range d.server.Sessions() {
				if s.Role != link.RoleNone {
					got++
				}
			}
			if got >= n {
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
		t.Fatalf("no %d logged-in sessions", n)
	}
	ch := startListen(t, context.Background(), append(dtlsArgs(f, d.addr, "olga", "olga.pw"), "--count", "2")...)
	waitLoggedIn(1)
	for _, p := range []string{"battery 87%", "alt 10 m"} {
		if n, err := d.server.Broadcast([]byte(p)); n != 1 || err != nil {
			t.Fatalf("broadcast: %d %v", n, err)
		}
	}
	r := waitResult(t, ch)
	r.want(t, 0)
	if r.stdout != "battery 87%\nalt 10 m\n" {
		t.Errorf("stdout %q", r.stdout)
	}

	// The finished listen closed its session; wait until the drone has let it go.
	deadline := time.Now().Add(10 * time.Second)
	for len(d.server.Sessions()) > 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	ch = startListen(t, context.Background(), dtlsArgs(f, d.addr, "olga", "olga.pw")...)
	waitLoggedIn(1)
	if n := d.server.Revoke(func(s link.SessionInfo) bool { return s.User == "olga" }); n != 1 {
		t.Fatalf("revoked %d sessions", n)
	}
	waitResult(t, ch).want(t, 6, "session ended by the drone: user or key revoked")
}

func TestTransportFlags(t *testing.T) {
	f := newFixture(t)
	native := []string{"send", "--drone", "127.0.0.1:9", "--psk", f.psk, "--user", "alice", "--password-file", f.path("alice.pw"), "x"}
	run(t, "", native...).want(t, 2, `required flag(s) "drone-pub", "key" not set (needed unless --transport dtls)`)
	run(t, "", append([]string{"send", "--transport", "quic"}, native[1:]...)...).want(t, 2, `--transport "quic": want native or dtls`)
	help := run(t, "", "listen", "--help")
	help.want(t, 0)
	for _, want := range []string{"--transport", "--transport dtls", "--key and --drone-pub are not"} {
		if !strings.Contains(help.stdout, want) {
			t.Errorf("listen --help lacks %q", want)
		}
	}
}
