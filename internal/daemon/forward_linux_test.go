package daemon

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dronelink/dronelink/pkg/link"
)

// target is a UDP port on loopback that can be listened on and closed again.
type target struct {
	t    *testing.T
	addr string
	sink net.PacketConn // nil while nothing listens
}

func newTarget(t *testing.T, network, host string) *target {
	t.Helper()
	c, err := net.ListenPacket(network, net.JoinHostPort(host, "0"))
	if err != nil {
		t.Skipf("no %s loopback: %v", network, err)
	}
	tg := &target{t: t, addr: c.LocalAddr().String(), sink: c}
	t.Cleanup(func() { tg.listen(false) })
	return tg
}

// listen opens or closes the listener on the target's port.
func (tg *target) listen(on bool) {
	tg.t.Helper()
	switch {
	case on && tg.sink == nil:
		c, err := net.ListenPacket("udp", tg.addr)
		if err != nil {
			tg.t.Fatalf("listen again on %s: %v", tg.addr, err)
		}
		tg.sink = c
	case !on && tg.sink != nil:
		tg.sink.Close()
		tg.sink = nil
	}
}

// receive reads one datagram (a forwarded command arrives before the forward returns).
func (tg *target) receive() string {
	tg.t.Helper()
	buf := make([]byte, 2048)
	tg.sink.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, _, err := tg.sink.ReadFrom(buf)
	if err != nil {
		tg.t.Fatalf("nothing forwarded: %v", err)
	}
	return string(buf[:n])
}

// #13: each forward's acknowledgement is its own. A connected UDP socket reported the
// ICMP refusal of one datagram on the next write, so with nothing listening the
// acknowledgements alternated ok, failed, ok; and after the listener came back the first
// command failed for its predecessor's refusal.
func TestForwardAcknowledgesEachDatagram(t *testing.T) {
	const (
		ok      = link.AckOK
		refused = link.AckFailed
	)
	for _, tc := range []struct {
		name, network, host string
		steps               []bool // for each command: whether the target listens
	}{
		{"nothing listens", "udp4", "127.0.0.1", []bool{false, false, false}},
		{"a listener", "udp4", "127.0.0.1", []bool{true, true, true}},
		{"listener goes and comes back", "udp4", "127.0.0.1", []bool{true, false, false, true, true, false, true}},
		{"nothing listens, IPv6", "udp6", "::1", []bool{false, false, false}},
		{"a listener, IPv6", "udp6", "::1", []bool{true, true, true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tg := newTarget(t, tc.network, tc.host)
			fwd, err := newForwarder(tg.addr, 100*time.Millisecond, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer fwd.Close()
			var out bytes.Buffer
			d := &daemon{log: slog.New(slog.DiscardHandler), out: &out, fwd: fwd}
			for i, listening := range tc.steps {
				tg.listen(listening)
				msg := fmt.Sprintf("waypoint %d", i)
				status, payload := d.execute(context.Background(), link.Command{ID: uint64(i), User: "alice", Payload: []byte(msg)})
				want, wantPayload := ok, "executed: "+msg
				if !listening {
					want, wantPayload = refused, "forward refused: connection refused"
				}
				if status != want || string(payload) != wantPayload {
					t.Fatalf("command %d (listener %v): ack %v %q, want %v %q", i+1, listening, status, payload, want, wantPayload)
				}
				if listening {
					if got := tg.receive(); got != msg {
						t.Fatalf("command %d: forwarded %q, want %q", i+1, got, msg)
					}
				}
			}
		})
	}
}

// A refusal that arrives after its command was acknowledged is not taken for the next
// command's: the next forward logs it as late and reports its own outcome.
func TestForwardLateRefusalIsNotTheNextOnes(t *testing.T) {
	tg := newTarget(t, "udp4", "127.0.0.1")
	tg.listen(false)
	var late []error
	fwd, err := newForwarder(tg.addr, time.Second, func(err error) { late = append(late, err) })
	if err != nil {
		t.Fatal(err)
	}
	defer fwd.Close()
	// An earlier datagram, refused while nobody waited for its outcome.
	if _, err := fwd.conn.Write([]byte("earlier")); err != nil {
		t.Fatal(err)
	}
	waitForSocketError(t, fwd.conn)
	tg.listen(true)
	if err := fwd.forward([]byte("now")); err != nil {
		t.Fatalf("forward to a listener: %v", err)
	}
	if got := tg.receive(); got != "now" {
		t.Fatalf("forwarded %q", got)
	}
	if len(late) != 1 || !errors.Is(late[0], syscall.ECONNREFUSED) {
		t.Fatalf("late refusals %v, want one ECONNREFUSED", late)
	}
}

// waitForSocketError blocks until the socket has an error pending (POLLERR), without
// taking it.
func waitForSocketError(t *testing.T, conn *net.UDPConn) {
	t.Helper()
	raw, err := conn.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var perr error
	var revents int16
	raw.Control(func(fd uintptr) {
		fds := []unix.PollFd{{Fd: int32(fd)}} // POLLERR is always reported
		var n int
		n, perr = unix.Poll(fds, 10_000)
		if n == 1 {
			revents = fds[0].Revents
		}
	})
	if perr != nil || revents&unix.POLLERR == 0 {
		t.Fatalf("no refusal of the earlier datagram: revents %#x, %v", revents, perr)
	}
}
