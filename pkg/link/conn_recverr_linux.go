package link

import (
	"errors"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/dronelink/dronelink/internal/icmperr"
)

// icmpWatch is a UDPConn's watch for ICMP port unreachable from one peer (the client's
// drone), with IP_RECVERR (IPV6_RECVERR) set on its socket, which stays unconnected: it
// takes datagrams from any source, so a multi-homed drone may answer from another address
// than the one dialled.
//
// With the option set, the kernel queues every ICMP error about a datagram the socket sent
// on the socket's error queue and reports it as the socket's pending error: the next read
// or write fails with its errno (ECONNREFUSED for a port unreachable) and clears it, and
// the socket polls with POLLERR while the queue holds entries, which count against the
// socket's receive buffer. So when a read or write fails with such an errno, the UDPConn
// drains the whole queue (drain), reports a port unreachable whose failed datagram went to
// the peer, ignores the others (errors about datagrams to other destinations, host or
// network unreachable, ...), and reads on, or sends again once: the kernel reported the
// earlier datagram's error instead of sending this one.
type icmpWatch struct {
	raw    syscall.RawConn
	peer   netip.AddrPort // unmapped, without zone
	report func()         // called after a drain that found a port unreachable from peer

	mu sync.Mutex     // one drainer owns q
	q  *icmperr.Queue // quotes are not looked at: the destination says whose error it is

	drained atomic.Uint64 // entries taken off the queue (tests wait for it)
}

// watchUnreachable sets IP_RECVERR on the socket and calls report, on the goroutine that
// read or wrote, whenever the kernel reports ICMP port unreachable for a datagram sent to
// peer. report must not block (a writer may hold its caller's locks). Reads and writes
// retry past every ICMP error reported in their stead (see icmpWatch).
func (u *UDPConn) watchUnreachable(peer netip.AddrPort, report func()) error {
	raw, err := u.conn.SyscallConn()
	if err != nil {
		return err
	}
	if err := icmperr.Enable(raw); err != nil {
		return err
	}
	u.icmp.Store(&icmpWatch{
		raw:    raw,
		peer:   netip.AddrPortFrom(peer.Addr().Unmap().WithZone(""), peer.Port()),
		report: report,
		q:      icmperr.NewQueue(DataHeaderSize),
	})
	return nil
}

// icmpReported says whether err, from a read or write, is the report of an earlier
// datagram's ICMP error on a watched socket; it drains the error queue first. The caller
// reads again, or sends again.
func (u *UDPConn) icmpReported(err error) bool {
	var errno syscall.Errno
	return errors.As(err, &errno) && u.icmpErrno(errno)
}

// icmpErrno is icmpReported for a bare errno.
func (u *UDPConn) icmpErrno(errno syscall.Errno) bool {
	w := u.icmp.Load()
	if w == nil || !icmperr.FromICMP(errno) {
		return false
	}
	w.drain()
	return true
}

// drain empties the error queue and reports a port unreachable from the peer once.
func (w *icmpWatch) drain() {
	w.mu.Lock()
	hit := false
	_ = w.raw.Control(func(fd uintptr) {
		for {
			e, ok := w.q.Recv(fd)
			if !ok {
				return
			}
			w.drained.Add(1)
			hit = hit || w.fromPeer(&e)
		}
	})
	w.mu.Unlock()
	if hit {
		w.report()
	}
}

// fromPeer says whether e refuses a datagram sent to the peer: an ICMP or ICMPv6 port
// unreachable (or ECONNREFUSED) whose failed datagram's destination is the peer's address.
// Who sent the ICMP error does not matter (the drone's host, or a firewall that rejects
// with port unreachable on its behalf); what the datagram was sent to does.
func (w *icmpWatch) fromPeer(e *icmperr.Entry) bool {
	return (e.PortUnreachable() || e.Errno == unix.ECONNREFUSED) && e.Dest == w.peer
}
