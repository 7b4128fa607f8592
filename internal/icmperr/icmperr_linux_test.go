package icmperr

import (
	"errors"
	"net"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// listen opens a UDP socket on address, skipping the test if the host has no such address.
func listen(t *testing.T, address string) *net.UDPConn {
	t.Helper()
	addr, err := net.ResolveUDPAddr("udp", address)
	if err != nil {
		t.Skipf("%s: %v", address, err)
	}
	c, err := net.ListenUDP("udp", addr)
	if err != nil {
		t.Skipf("no %s on this host: %v", address, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// A datagram to a port where nothing listens comes back as one entry: a port unreachable
// from the loopback address, about the datagram's destination, quoting its payload; the
// read that comes first reports ECONNREFUSED, and the queue is empty afterwards. Also on a
// dual-stack socket sending to an IPv4 address (ICMPv4 on an AF_INET6 socket).
func TestRecvPortUnreachable(t *testing.T) {
	for _, tc := range []struct {
		name, local, closed string
		origin              uint8
	}{
		{"IPv4", "127.0.0.1:0", "127.0.0.1:0", OriginICMP},
		{"dual-stack to IPv4", "[::]:0", "127.0.0.1:0", OriginICMP},
		{"IPv6", "[::1]:0", "[::1]:0", OriginICMP6},
	} {
		t.Run(tc.name, func(t *testing.T) {
			gone := listen(t, tc.closed)
			dest := gone.LocalAddr().(*net.UDPAddr).AddrPort()
			gone.Close()
			conn := listen(t, tc.local)
			raw, err := conn.SyscallConn()
			if err != nil {
				t.Fatal(err)
			}
			if err := Enable(raw); err != nil {
				t.Fatal(err)
			}
			payload := []byte("hello")
			if _, err := conn.WriteToUDPAddrPort(payload, dest); err != nil {
				t.Fatal(err)
			}
			waitForError(t, raw)
			_, _, err = conn.ReadFromUDPAddrPort(make([]byte, 16))
			var errno syscall.Errno
			if !errors.As(err, &errno) || errno != unix.ECONNREFUSED || !FromICMP(errno) {
				t.Fatalf("read: %v, want ECONNREFUSED", err)
			}
			q := NewQueue(64)
			var e Entry
			var ok, more bool
			raw.Control(func(fd uintptr) {
				e, ok = q.Recv(fd)
				_, more = q.Recv(fd)
			})
			if !ok || more {
				t.Fatalf("entries: first %v, second %v; want exactly one", ok, more)
			}
			if e.Errno != unix.ECONNREFUSED || e.Origin != tc.origin || !e.PortUnreachable() {
				t.Errorf("entry errno %v origin %d type %d code %d, want a port unreachable", e.Errno, e.Origin, e.Type, e.Code)
			}
			if e.Dest != dest {
				t.Errorf("destination %v, want %v", e.Dest, dest)
			}
			if e.Offender != dest.Addr() {
				t.Errorf("offender %v, want %v", e.Offender, dest.Addr())
			}
			if string(e.Quoted) != string(payload) {
				t.Errorf("quoted %q, want %q", e.Quoted, payload)
			}
		})
	}
}

// A quote longer than the Queue's buffer is nil.
func TestRecvLongQuote(t *testing.T) {
	gone := listen(t, "127.0.0.1:0")
	dest := gone.LocalAddr().(*net.UDPAddr).AddrPort()
	gone.Close()
	conn := listen(t, "127.0.0.1:0")
	raw, err := conn.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	if err := Enable(raw); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.WriteToUDPAddrPort(make([]byte, 100), dest); err != nil {
		t.Fatal(err)
	}
	waitForError(t, raw)
	q := NewQueue(10)
	var e Entry
	var ok bool
	raw.Control(func(fd uintptr) { e, ok = q.Recv(fd) })
	if !ok || e.Quoted != nil || e.Dest != dest {
		t.Fatalf("entry %v: %+v, want one to %v quoting nil", ok, e, dest)
	}
}

// waitForError blocks until the socket has an error pending (POLLERR), without taking it.
func waitForError(t *testing.T, raw syscall.RawConn) {
	t.Helper()
	var revents int16
	var perr error
	raw.Control(func(fd uintptr) {
		fds := []unix.PollFd{{Fd: int32(fd)}} // POLLERR is always reported
		var n int
		n, perr = unix.Poll(fds, 10_000)
		if n == 1 {
			revents = fds[0].Revents
		}
	})
	if perr != nil || revents&unix.POLLERR == 0 {
		t.Fatalf("no ICMP error: revents %#x, %v", revents, perr)
	}
}
