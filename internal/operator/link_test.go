package operator

import (
	"context"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dronelink/dronelink/pkg/crypto"
	"github.com/dronelink/dronelink/pkg/link"
	"github.com/dronelink/dronelink/pkg/userdb"
)

// drone is an in-process drone: a link server with a user database built in the test and
// a handler that echoes.
type drone struct {
	server *link.Server
	addr   string

	mu       sync.Mutex
	executed []string // "user: payload"
}

// startDrone starts a drone on loopback with the fixture's PSK and drone key. Users:
// alice (pilot, alice's key), olga (observer, olga's key), mallory (pilot, mallory's key);
// the stranger key is unknown to it.
func startDrone(t *testing.T, f *fixture) *drone {
	t.Helper()
	return startDroneExtra(t, f, nil)
}

// startDroneExtra is startDrone serving extra sockets too (the relay).
func startDroneExtra(t *testing.T, f *fixture, extra []link.ExtraConn) *drone {
	t.Helper()
	k := keys(t)
	db := userdb.Empty()
	for _, u := range []struct {
		name string
		role link.Role
	}{{"alice", link.RolePilot}, {"olga", link.RoleObserver}, {"mallory", link.RolePilot}} {
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
	conn, err := link.ListenUDP("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	d := &drone{addr: conn.LocalAddr().String()}
	srv, err := link.NewServer(link.ServerConfig{
		Conn: conn, Extra: extra, PSK: psk, DroneKey: link.NewDroneKey(k["drone"]), Auth: db, Handler: d.handle,
		HandshakeRate: 1000, HandshakeBurst: 1000, LoginRate: 1000, LoginBurst: 1000,
	})
	if err != nil {
		t.Fatal(err)
	}
	d.server = srv
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

func (d *drone) handle(ctx context.Context, cmd link.Command) (link.AckStatus, []byte) {
	d.mu.Lock()
	d.executed = append(d.executed, cmd.User+": "+string(cmd.Payload))
	d.mu.Unlock()
	switch string(cmd.Payload) {
	case "fail":
		return link.AckFailed, []byte("motor 3 not responding")
	case "binary":
		return link.AckOK, []byte{0, 1, 2, 0xff}
	case "hang": // never acknowledged while the test runs
		<-ctx.Done()
		return link.AckFailed, nil
	}
	return link.AckOK, append([]byte("done: "), cmd.Payload...)
}

func (d *drone) commands() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]string(nil), d.executed...)
}

// waitLoggedIn waits until n sessions are logged in.
func (d *drone) waitLoggedIn(t *testing.T, n int) {
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

// linkArgs are working send/listen flags for user with key, reading password file pw.
func linkArgs(f *fixture, droneAddr, user, key, pw string) []string {
	return []string{"--drone", droneAddr, "--drone-pub", f.pub("drone"), "--key", f.key(key), "--psk", f.psk,
		"--user", user, "--password-file", f.path(pw)}
}

func TestSendAcknowledged(t *testing.T) {
	f := newFixture(t)
	d := startDrone(t, f)
	r := run(t, "", append(append([]string{"send"}, linkArgs(f, d.addr, "alice", "alice", "alice.pw")...), "take", "off", "to", "10", "m")...)
	r.want(t, 0)
	if r.stdout != "ack ok: done: take off to 10 m\n" {
		t.Errorf("stdout %q", r.stdout)
	}
	r = run(t, "", append(append([]string{"send"}, linkArgs(f, d.addr, "alice", "alice", "alice.pw")...), "binary")...)
	r.want(t, 0)
	if r.stdout != "ack ok: hex:000102ff\n" {
		t.Errorf("stdout %q", r.stdout)
	}
	// Password from standard input.
	args := append(append([]string{"send"}, linkArgs(f, d.addr, "alice", "alice", "alice.pw")[:10]...), "--password-stdin", "land")
	r = run(t, "alice secret\n", args...)
	r.want(t, 0)
	if got := d.commands(); strings.Join(got, "|") != "alice: take off to 10 m|alice: binary|alice: land" {
		t.Errorf("executed %q", got)
	}
}

func TestSendRefusals(t *testing.T) {
	f := newFixture(t)
	d := startDrone(t, f)
	writeFile(t, f.path("nobody.pw"), "whatever\n", 0o600)
	for _, tc := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"wrong password", linkArgs(f, d.addr, "alice", "alice", "bad.pw"), 3, "login refused: wrong password"},
		{"unknown user", linkArgs(f, d.addr, "nobody", "alice", "nobody.pw"), 3, "login refused: unknown user"},
		{"key of another user", linkArgs(f, d.addr, "alice", "mallory", "alice.pw"), 3,
			"login refused: this key is not authorised for the user"},
		{"key unknown to the drone", linkArgs(f, d.addr, "alice", "stranger", "alice.pw"), 3,
			"drone refused the session: operator key not authorised on the drone"},
		{"observer", linkArgs(f, d.addr, "olga", "olga", "olga.pw"), 4,
			"command refused: user role may not command (observer)"},
		{"wrong drone key", append(linkArgs(f, d.addr, "alice", "alice", "alice.pw"), "--drone-pub", f.pub("stranger")), 3,
			"drone refused the session: drone key mismatch: the drone does not hold the pinned key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := run(t, "", append(append([]string{"send"}, tc.args...), "refused", tc.name)...)
			r.want(t, tc.code, tc.want)
			if tc.code == 4 && r.stdout != "ack not_permitted:\n" {
				t.Errorf("stdout %q", r.stdout)
			} else if tc.code != 4 && r.stdout != "" {
				t.Errorf("stdout %q", r.stdout)
			}
		})
	}
	for _, c := range d.commands() {
		if strings.Contains(c, "refused") {
			t.Errorf("a refused command was executed: %q", c)
		}
	}

	r := run(t, "", append(append([]string{"send"}, linkArgs(f, d.addr, "alice", "alice", "alice.pw")...), "fail")...)
	r.want(t, 4, "command failed on the drone: motor 3 not responding")
	if r.stdout != "ack failed: motor 3 not responding\n" {
		t.Errorf("stdout %q", r.stdout)
	}
}

func TestSendNoAnswer(t *testing.T) {
	f := newFixture(t)
	d := startDrone(t, f)

	// Another PSK: the drone drops every datagram without a word.
	other := writeFile(t, f.path("other.psk"), strings.Repeat("ab", 32)+"\n", 0o600)
	args := append(linkArgs(f, d.addr, "alice", "alice", "alice.pw"), "--psk", other, "--timeout", "1s")
	start := time.Now()
	r := run(t, "", append(append([]string{"send"}, args...), "hello")...)
	r.want(t, 5, "no answer from the drone at "+d.addr+" within 1s (is it running? same PSK?)")
	if el := time.Since(start); el > 10*time.Second {
		t.Errorf("took %v with --timeout 1s", el)
	}

	// Nobody listening on the port.
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	closed := c.LocalAddr().String()
	c.Close()
	args = append(linkArgs(f, closed, "alice", "alice", "alice.pw"), "--timeout", "1s")
	// The kernel reports the ICMP port unreachable: the dial says so at once (#13).
	run(t, "", append(append([]string{"send"}, args...), "hello")...).want(t, 5, "nothing listens at "+closed+" (the drone's host answered ICMP port unreachable)")

	// Interrupted (SIGINT cancels the context in real runs).
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	time.AfterFunc(500*time.Millisecond, cancel)
	args = append(linkArgs(f, d.addr, "alice", "alice", "alice.pw"), "--psk", other)
	runCtx(t, ctx, nil, "", append(append([]string{"send"}, args...), "hello")...).want(t, 5, "interrupted: no answer from the drone at "+d.addr+" yet")
	if len(d.commands()) != 0 {
		t.Errorf("executed %q", d.commands())
	}

	// Logged in, but the acknowledgement never comes.
	args = append(linkArgs(f, d.addr, "alice", "alice", "alice.pw"), "--timeout", "1s", "hang")
	run(t, "", append([]string{"send"}, args...)...).want(t, 5,
		"no acknowledgement from the drone at "+d.addr+" within 1s (the command may have been executed, its acknowledgement lost; the drone will not execute the command any more: it carries its deadline)")
}

func TestSendFileProblems(t *testing.T) {
	f := newFixture(t)
	addr := "127.0.0.1:9"
	base := linkArgs(f, addr, "alice", "alice", "alice.pw")
	garbled := writeFile(t, f.path("garbled"), "-----BEGIN NOTHING-----\n", 0o600)
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"--key", f.path("missing.key")}, []string{"cannot read key file " + f.path("missing.key") + " (--key)"}},
		{[]string{"--key", garbled}, []string{"bad key file " + garbled + " (--key)"}},
		{[]string{"--drone-pub", f.key("drone")}, []string{"bad public key file", "(--drone-pub)", "private key"}},
		{[]string{"--psk", garbled}, []string{"bad PSK file " + garbled + " (--psk)"}},
		{[]string{"--psk", f.path("missing.psk")}, []string{"cannot read PSK file"}},
		{[]string{"--password-file", f.path("missing.pw")}, []string{"cannot read password file"}},
	} {
		args := append(append(append([]string{"send"}, base...), tc.args...), "hello")
		run(t, "", args...).want(t, 1, tc.want...)
	}
}

// #13: like ssh, every command that loads a private key or the PSK refuses one that group
// or others may access, before it contacts the drone: exit 1 and one line naming the file,
// its mode and the chmod to run.
func TestRefusesInsecureSecretFiles(t *testing.T) {
	f := newFixture(t)
	addr := "127.0.0.1:9" // never reached
	openKey := writeFile(t, f.path("open.key"), mustRead(t, f.key("alice")), 0o644)
	groupPSK := writeFile(t, f.path("group.psk"), mustRead(t, f.psk), 0o640)
	othersPSK := writeFile(t, f.path("others.psk"), mustRead(t, f.psk), 0o604)
	writablePSK := writeFile(t, f.path("writable.psk"), mustRead(t, f.psk), 0o620)
	refusal := func(path, mode, what, how string) string {
		return path + ": permissions " + mode + " are too open: the " + what + " must not be " + how +
			" by group or others; run: chmod 600 " + path
	}
	native := append(linkArgs(f, addr, "alice", "alice", "alice.pw"), "--timeout", "1s")
	dtls := append(dtlsArgs(f, addr, "alice", "alice.pw"), "--timeout", "1s")
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"send --key 0644", append(append([]string{"send"}, native...), "--key", openKey, "hello"),
			refusal(openKey, "0644", "key", "readable")},
		{"send --psk 0640", append(append([]string{"send"}, native...), "--psk", groupPSK, "hello"),
			refusal(groupPSK, "0640", "PSK", "readable")},
		{"listen --psk 0604", append(append([]string{"listen"}, native...), "--psk", othersPSK, "--count", "1"),
			refusal(othersPSK, "0604", "PSK", "readable")},
		{"listen --key 0644", append(append([]string{"listen"}, native...), "--key", openKey, "--count", "1"),
			refusal(openKey, "0644", "key", "readable")},
		{"dtls send --psk 0620", append(append([]string{"send"}, dtls...), "--psk", writablePSK, "hello"),
			refusal(writablePSK, "0620", "PSK", "writable")},
		{"fingerprint of an open private key", []string{"fingerprint", f.pub("alice"), openKey},
			refusal(openKey, "0644", "key", "readable")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := run(t, "", tc.args...)
			r.want(t, ExitLocal)
			if r.errLine() != tc.want {
				t.Errorf("error line %q\nwant       %q", r.errLine(), tc.want)
			}
		})
	}
	// Public key files are no secret: 0644 is their normal mode.
	run(t, "", "fingerprint", f.pub("alice")).want(t, ExitOK)
}

func mustRead(t *testing.T, path string) string {
	t.Helper()
	s, ok := readFile(t, path)
	if !ok {
		t.Fatalf("%s missing", path)
	}
	return s
}

// startListen runs listen in the background; the result arrives on the channel.
func startListen(t *testing.T, ctx context.Context, args ...string) <-chan result {
	t.Helper()
	ch := make(chan result, 1)
	go func() { ch <- runCtx(t, ctx, nil, "", append([]string{"listen"}, args...)...) }()
	return ch
}

func waitResult(t *testing.T, ch <-chan result) result {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(30 * time.Second):
		t.Fatal("listen did not return")
	}
	return result{}
}

func TestListenCount(t *testing.T) {
	f := newFixture(t)
	d := startDrone(t, f)
	ch := startListen(t, context.Background(), append(linkArgs(f, d.addr, "olga", "olga", "olga.pw"), "--count", "2")...)
	d.waitLoggedIn(t, 1)
	for _, p := range []string{"battery 87%", "alt\n10 m"} {
		if n, err := d.server.Broadcast([]byte(p)); n != 1 || err != nil {
			t.Fatalf("broadcast: %d %v", n, err)
		}
	}
	// More telemetry than asked for is not printed.
	_, _ = d.server.Broadcast([]byte("third"))
	r := waitResult(t, ch)
	r.want(t, 0)
	if r.stdout != "battery 87%\nalt\\n10 m\n" {
		t.Errorf("stdout %q", r.stdout)
	}
}

func TestListenInterrupted(t *testing.T) {
	f := newFixture(t)
	d := startDrone(t, f)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	printed := make(chan struct{}, 10)
	notify := func(a *app) {
		a.stdout = io.MultiWriter(a.stdout, writerFunc(func(p []byte) (int, error) {
			printed <- struct{}{}
			return len(p), nil
		}))
	}
	ch := make(chan result, 1)
	go func() {
		ch <- runCtx(t, ctx, notify, "", append([]string{"listen"}, linkArgs(f, d.addr, "alice", "alice", "alice.pw")...)...)
	}()
	d.waitLoggedIn(t, 1)
	_, _ = d.server.Broadcast([]byte("one"))
	select {
	case <-printed:
	case <-time.After(20 * time.Second):
		t.Fatal("telemetry not printed")
	}
	cancel() // what SIGINT does in a real run
	r := waitResult(t, ch)
	r.want(t, 0)
	if r.stdout != "one\n" {
		t.Errorf("stdout %q", r.stdout)
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

func TestListenSessionClosedByDrone(t *testing.T) {
	f := newFixture(t)
	d := startDrone(t, f)
	ch := startListen(t, context.Background(), linkArgs(f, d.addr, "olga", "olga", "olga.pw")...)
	d.waitLoggedIn(t, 1)
	if n := d.server.Revoke(func(s link.SessionInfo) bool { return s.User == "olga" }); n != 1 {
		t.Fatalf("revoked %d sessions", n)
	}
	r := waitResult(t, ch)
	r.want(t, 6, "session ended by the drone: user or key revoked")
}

func TestListenRefused(t *testing.T) {
	f := newFixture(t)
	d := startDrone(t, f)
	r := run(t, "", append([]string{"listen"}, linkArgs(f, d.addr, "olga", "olga", "bad.pw")...)...)
	r.want(t, 3, "login refused: wrong password")
	r = run(t, "", append([]string{"listen", "--timeout", "1s"}, linkArgs(f, "127.0.0.1:9", "olga", "olga", "olga.pw")...)...)
	r.want(t, 5, "nothing listens at 127.0.0.1:9 (the drone's host answered ICMP port unreachable)")
}

// TestProgressOnTerminal checks the progress line shown when stderr is a terminal: one
// line overwritten with \r, cleared before the final error line.
func TestProgressOnTerminal(t *testing.T) {
	f := newFixture(t)
	d := startDrone(t, f)
	other := writeFile(t, f.path("other.psk"), strings.Repeat("cd", 32)+"\n", 0o600)
	args := append(linkArgs(f, d.addr, "alice", "alice", "alice.pw"), "--psk", other, "--timeout", "1500ms", "hello")
	var r result
	r.code = -1
	stderr := func() string {
		var sb strings.Builder
		a := newApp(strings.NewReader(""), &strings.Builder{}, &sb)
		a.progress = true
		r.code = a.run(context.Background(), append([]string{"send"}, args...))
		return sb.String()
	}()
	if r.code != 5 {
		t.Fatalf("exit %d: %q", r.code, stderr)
	}
	if !strings.Contains(stderr, "\rwaiting for the drone at "+d.addr+": handshake attempt 1, 2s left\x1b[K") ||
		!strings.Contains(stderr, ": handshake attempt 2, ") {
		t.Errorf("no handshake progress: %q", stderr)
	}
	if !strings.HasSuffix(stderr, "\r\x1b[Kdronelink: no answer from the drone at "+d.addr+" within 1.5s (is it running? same PSK?)\n") {
		t.Errorf("progress not cleared before the error line: %q", stderr)
	}
}

func TestLocalAddressFamily(t *testing.T) {
	for in, want := range map[string]string{"127.0.0.1:5000": "0.0.0.0:0", "[::1]:5000": "[::]:0", "[::ffff:10.0.0.1]:5000": "0.0.0.0:0"} {
		ap, err := resolveDrone(in)
		if err != nil {
			t.Fatal(err)
		}
		if got := localAddressFor(ap); got != want {
			t.Errorf("%s: %s, want %s", in, got, want)
		}
	}
	if _, err := resolveDrone("localhost:5000"); err != nil {
		t.Errorf("localhost: %v", err)
	}
}
