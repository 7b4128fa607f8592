package daemon

import (
	"bytes"
	"errors"
	"net"
	"os"
	"syscall"
	"time"

	"github.com/dronelink/dronelink/internal/icmperr"
	"github.com/dronelink/dronelink/pkg/link"
)

// errQueue reads the socket's error queue (IP_RECVERR, see package icmperr): one entry per
// ICMP error, its data the start of the UDP payload the error quotes, its control message a
// struct sock_extended_err whose first field is the errno.
type errQueue struct {
	raw  syscall.RawConn
	conn *net.UDPConn
	q    *icmperr.Queue // quotes one byte more than the largest command: a longer quote is not ours
}

// open sets IP_RECVERR (and IPV6_RECVERR on an IPv6 socket) on conn.
func (q *errQueue) open(conn *net.UDPConn) error {
	raw, err := conn.SyscallConn()
	if err != nil {
		return err
	}
	if err := icmperr.Enable(raw); err != nil {
		return err
	}
	q.raw, q.conn = raw, conn
	q.q = icmperr.NewQueue(link.MaxCommandPayload + 1)
	return nil
}

// fromICMP says whether a write's errno may be an ICMP error of an earlier datagram that
// the kernel reported on the write.
func (q *errQueue) fromICMP(errno syscall.Errno) bool { return icmperr.FromICMP(errno) }

// next takes one entry off the queue without waiting: its errno, or false when it is empty.
func (q *errQueue) next() (syscall.Errno, bool) {
	errno, _, ok := q.take()
	return errno, ok
}

// take takes one entry off the queue without waiting (Control ignores the deadline).
func (q *errQueue) take() (errno syscall.Errno, quoted []byte, ok bool) {
	_ = q.raw.Control(func(fd uintptr) { errno, quoted, ok = q.recv(fd) })
	return errno, quoted, ok
}

// await waits until deadline for an entry that quotes payload and returns its errno, or 0
// if none came. What is queued already is looked at even if deadline has passed. Entries
// that quote something else are older datagrams' (see drainLate) and are dropped here.
func (q *errQueue) await(payload []byte, deadline time.Time) syscall.Errno {
	ours := func(errno syscall.Errno, quoted []byte) bool {
		return errno != 0 && quoted != nil && bytes.HasPrefix(payload, quoted)
	}
	for {
		errno, quoted, ok := q.take()
		if !ok {
			break
		}
		if ours(errno, quoted) {
			return errno
		}
	}
	if !time.Now().Before(deadline) {
		return 0
	}
	if err := q.conn.SetReadDeadline(deadline); err != nil {
		return 0
	}
	defer q.conn.SetReadDeadline(time.Time{})
	var refused syscall.Errno
	// An ICMP error wakes readers (EPOLLERR); the callback returns false to wait again
	// after anything else woke it, until the deadline.
	err := q.raw.Read(func(fd uintptr) bool {
		for {
			errno, quoted, ok := q.recv(fd)
			if !ok {
				return false
			}
			if ours(errno, quoted) {
				refused = errno
				return true
			}
		}
	})
	if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
		return 0
	}
	return refused
}

// recv reads one error-queue entry: its errno (0 if it carried none) and the quoted
// payload (nil if longer than any command), or false if the queue is empty.
func (q *errQueue) recv(fd uintptr) (syscall.Errno, []byte, bool) {
	e, ok := q.q.Recv(fd)
	return e.Errno, e.Quoted, ok
}
