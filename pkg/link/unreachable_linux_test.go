package link

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// closedPort is a loopback UDP address where nothing listens: a port just released.
func closedPort(t *testing.T) netip.AddrPort { return closedPortOn(t, "127.0.0.1:0") }

// closedPortOn is closedPort on address (HOST:0); the test is skipped if the host has no
// such address.
func closedPortOn(t *testing.T, address string) netip.AddrPort {
	t.Helper()
	c := listenOrSkip(t, address)
	addr := c.LocalAddr()
	c.Close()
	return addr
}

// #13 finding 5 (ICMP): dialling an address where nothing listens fails with
// ErrNoListener as soon as the kernel reports the ICMP port unreachable, long before the
// dial's own deadline, with a message that says so. Also from a dual-stack socket (an
// AF_INET6 socket bound to a wildcard address, as the operator CLI opens) to an IPv4
// drone, whose ICMPv4 errors such a socket gets for IPv4-mapped destinations, and over IPv6.
func TestDialNoListener(t *testing.T) {
	testKeys(t)
	for _, tc := range []struct{ name, local, drone string }{
		{"IPv4", "127.0.0.1:0", "127.0.0.1:0"},
		{"dual-stack to IPv4", "0.0.0.0:0", "127.0.0.1:0"},
		{"IPv6", "[::1]:0", "[::1]:0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			drone := closedPortOn(t, tc.drone)
			conn := listenOrSkip(t, tc.local)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			c, err := Dial(ctx, clientConfig(conn, drone, "alice"))
			if err == nil {
				c.Close()
				t.Fatal("Dial succeeded with nothing listening")
			}
			if ctx.Err() != nil {
				t.Fatalf("Dial waited for its deadline: %v", err)
			}
			if !errors.Is(err, ErrNoListener) {
				t.Errorf("Dial: %v, want ErrNoListener", err)
			}
			if want := "nothing listens at " + drone.String(); !strings.Contains(err.Error(), want) {
				t.Errorf("Dial: %v, want an error containing %q", err, want)
			}
		})
	}
}

// Only a port unreachable about the drone's own address and port fails a dial. One about
// another port of the same host (a datagram the application sent on the same socket),
// arriving while the first handshake is under way, is drained and ignored: the dial
// succeeds and nothing is logged about the drone's port.
func TestDialIgnoresPortUnreachableOfOtherPorts(t *testing.T) {
	r := startServer(t, listenOrSkip(t, "127.0.0.1:0"), nil)
	other := closedPort(t)
	conn := listenOrSkip(t, "127.0.0.1:0")
	rec := &recordHandler{}
	cfg := clientConfig(conn, r.address, "alice")
	cfg.Logger = slog.New(rec)
	var sent atomic.Bool
	cfg.OnEvent = func(e Event) {
		if e.Kind == EventHandshakeSent && !sent.Swap(true) {
			// Not the client's own method: a datagram to another port, on its socket.
			if err := conn.WriteTo([]byte("elsewhere"), other); err != nil {
				t.Errorf("write to %v: %v", other, err)
			}
		}
	}
	c := dial(t, cfg)
	w := conn.icmp.Load()
	waitFor(t, "the port unreachable from the other port to be drained", func() bool { return w.drained.Load() > 0 })
	if ack := command(t, c, "after"); ack.Status != AckOK {
		t.Fatalf("command: %v", ack.Status)
	}
	if n := rec.count(msgPortUnreachable) + rec.count("no drone at this address"); n != 0 {
		t.Fatalf("%d log lines about the drone's port being unreachable", n)
	}
}

// The watch on a UDPConn: an ICMP error about another destination is drained and not
// reported; a port unreachable about the peer is reported; the error queue is left empty
// (no POLLERR), the read loop carries on through both, takes a datagram from a source
// other than the peer, and ends without error when the socket is closed.
func TestUDPConnWatchUnreachable(t *testing.T) {
	conn := listenOrSkip(t, "127.0.0.1:0")
	peer, other := closedPort(t), closedPort(t)
	var reports atomic.Int32
	if err := conn.watchUnreachable(peer, func() { reports.Add(1) }); err != nil {
		t.Fatal(err)
	}
	w := conn.icmp.Load()
	from := make(chan netip.AddrPort, 1)
	done := make(chan error, 1)
	go func() {
		done <- readDatagrams(conn, time.Now, func(_ []byte, addr netip.AddrPort, _ time.Time) { from <- addr })
	}()

	if err := conn.WriteTo([]byte("to another port"), other); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the error about the other port to be drained", func() bool { return w.drained.Load() >= 1 })
	if n := reports.Load(); n != 0 {
		t.Fatalf("%d reports for a port unreachable about %v, not the peer %v", n, other, peer)
	}
	if err := conn.WriteTo([]byte("to the peer"), peer); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the peer's port unreachable to be reported", func() bool { return reports.Load() >= 1 })
	waitFor(t, "the error queue to be empty", func() bool { return !pollErr(t, conn) })
	if n := reports.Load(); n != 1 {
		t.Fatalf("%d reports, want 1", n)
	}

	src := listenOrSkip(t, "127.0.0.2:0")
	if err := src.WriteTo([]byte("from elsewhere"), conn.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	if got := <-from; got != src.LocalAddr() {
		t.Fatalf("datagram from %v, want %v", got, src.LocalAddr())
	}
	conn.Close()
	if err := <-done; err != nil {
		t.Fatalf("read loop: %v", err)
	}
}

// pollErr says whether conn's socket has an error pending or queued (POLLERR), without
// waiting or taking it.
func pollErr(t *testing.T, conn *UDPConn) bool {
	t.Helper()
	raw, err := conn.conn.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var revents int16
	var perr error
	if err := raw.Control(func(fd uintptr) {
		fds := []unix.PollFd{{Fd: int32(fd)}} // POLLERR is always reported
		_, perr = unix.Poll(fds, 0)
		revents = fds[0].Revents
	}); err != nil || perr != nil {
		t.Fatalf("poll: %v %v", err, perr)
	}
	return revents&unix.POLLERR != 0
}

// A running client does not die from a transient ICMP port unreachable (the drone's
// daemon restarting, with an operator that survives the drone's shutdown): it reconnects
// once the drone is back and commands again. (The command after the restart is issued once
// the client has its session with the restarted drone: one issued before could have been
// issued before the drone's run began, as far as the drone can tell, and is refused as
// AckRestarted.)
func TestRunningClientSurvivesPortUnreachable(t *testing.T) {
	srvConn, err := ListenUDP("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := srvConn.LocalAddr()
	fast := func(c *ServerConfig) { c.KeepaliveInterval = 100 * time.Millisecond }
	r := startServer(t, srvConn, fast)
	conn, err := ListenUDP("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	rec := &recordHandler{}
	cfg := clientConfig(conn, addr, "alice")
	cfg.KeepaliveInterval = 100 * time.Millisecond
	cfg.Logger = slog.New(rec)
	cfg.SurviveShutdown = true
	var sessions atomic.Int32
	cfg.OnEvent = func(e Event) {
		if e.Kind == EventEstablished {
			sessions.Add(1)
		}
	}
	c := dial(t, cfg)
	if ack := command(t, c, "before"); ack.Status != AckOK {
		t.Fatalf("before: %v", ack.Status)
	}
	r.stop() // the daemon goes away: the client's keepalives meet ICMP port unreachable
	waitFor(t, "the client to see the port unreachable", func() bool { return rec.count(msgPortUnreachable) > 0 })
	srvConn, err = ListenUDP(addr.String())
	if err != nil {
		t.Fatal(err)
	}
	established := sessions.Load()
	startServer(t, srvConn, fast)
	waitFor(t, "a session with the restarted drone", func() bool { return sessions.Load() > established })
	if ack := command(t, c, "after"); ack.Status != AckOK {
		t.Fatalf("after: %v", ack.Status)
	}
}

// splitConn is the socket of a multi-homed drone that listens on one address and answers
// from another: what a daemon listening on 0.0.0.0 does when the kernel's routing picks a
// source address (a secondary address of the interface, another interface) other than the
// one the operator dialled. It reads from in and writes through out.
type splitConn struct {
	in, out *UDPConn
}

func (s *splitConn) ReadFrom(b []byte) (int, netip.AddrPort, error) { return s.in.ReadFrom(b) }
func (s *splitConn) WriteTo(b []byte, addr netip.AddrPort) error    { return s.out.WriteTo(b, addr) }
func (s *splitConn) LocalAddr() netip.AddrPort                      { return s.in.LocalAddr() }
func (s *splitConn) Close() error {
	s.out.Close()
	return s.in.Close()
}

// The client takes the drone's authenticated answers from whatever address they come
// from: an operator that dials 127.0.0.1 sets up a session with a drone that answers from
// 127.0.0.2, and commands it. (A socket connected to the dialled address, as Dial made
// it to hear of ICMP port unreachable, dropped every answer: the dial ran to its deadline.)
func TestDialAcceptsAnswersFromAnotherAddress(t *testing.T) {
	in := listenOrSkip(t, "127.0.0.1:0")
	out := listenOrSkip(t, "127.0.0.2:0")
	if in.LocalAddr().Addr() == out.LocalAddr().Addr() {
		t.Fatalf("the drone answers from the address it listens on, %v", in.LocalAddr())
	}
	r := startServer(t, &splitConn{in: in, out: out}, nil)
	conn := listenOrSkip(t, "127.0.0.1:0")
	c := dial(t, clientConfig(conn, in.LocalAddr(), "alice"))
	if ack := command(t, c, "from elsewhere"); ack.Status != AckOK {
		t.Fatalf("command: %v", ack.Status)
	}
	r.execs.check(t, 1)
}
