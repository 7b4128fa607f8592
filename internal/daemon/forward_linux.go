package daemon

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dronelink/dronelink/pkg/link"
)

// sizeofSockExtendedErr is sizeof(struct sock_extended_err): ee_errno (u32), ee_origin,
// ee_type, ee_code, ee_pad (u8 each), ee_info, ee_data (u32 each).
const sizeofSockExtendedErr = 16

// errQueue reads the socket's error queue (IP_RECVERR, see ip(7)): one entry per ICMP
// error, its data the start of the UDP payload the error quotes, its control message a
// struct sock_extended_err whose first field is the errno.
type errQueue struct {
	raw    syscall.RawConn
	conn   *net.UDPConn
	quoted []byte // one byte more than the largest command: a longer quote is not ours
	oob    []byte
}

// open sets IP_RECVERR (and IPV6_RECVERR on an IPv6 socket) on conn.
func (q *errQueue) open(conn *net.UDPConn) error {
	raw, err := conn.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := raw.Control(func(fd uintptr) {
		sa, err := unix.Getsockname(int(fd))
		if err != nil {
			serr = err
			return
		}
		if _, v6 := sa.(*unix.SockaddrInet6); v6 {
			if serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_RECVERR, 1); serr != nil {
				return
			}
			// IPv4-mapped destinations get ICMPv4 errors, queued only with IP_RECVERR.
			_ = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_RECVERR, 1)
			return
		}
		serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_RECVERR, 1)
	}); err != nil {
		return err
	}
	if serr != nil {
		return os.NewSyscallError("setsockopt", serr)
	}
	q.raw, q.conn = raw, conn
	q.quoted = make([]byte, link.MaxCommandPayload+1)
	q.oob = make([]byte, unix.CmsgSpace(sizeofSockExtendedErr+unix.SizeofSockaddrInet6))
	return nil
}

// fromICMP says whether a write's errno may be an ICMP error of an earlier datagram that
// the kernel reported on the write.
func (q *errQueue) fromICMP(errno syscall.Errno) bool {
	switch errno {
	case unix.ECONNREFUSED, unix.EHOSTUNREACH, unix.ENETUNREACH, unix.EHOSTDOWN, unix.EPROTO, unix.ENOPROTOOPT:
		return true
	}
	return false
}

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
	for {
		n, oobn, flags, _, err := unix.Recvmsg(int(fd), q.quoted, q.oob, unix.MSG_ERRQUEUE|unix.MSG_DONTWAIT)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return 0, nil, false // EAGAIN: empty
		}
		quoted := q.quoted[:n:n]
		if flags&unix.MSG_TRUNC != 0 {
			quoted = nil
		}
		return extendedErrno(q.oob[:oobn]), quoted, true
	}
}

// extendedErrno is the ee_errno of the IP_RECVERR or IPV6_RECVERR control message.
func extendedErrno(oob []byte) syscall.Errno {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return 0
	}
	for _, m := range msgs {
		if (m.Header.Level == unix.SOL_IP && m.Header.Type == unix.IP_RECVERR) ||
			(m.Header.Level == unix.SOL_IPV6 && m.Header.Type == unix.IPV6_RECVERR) {
			if len(m.Data) >= sizeofSockExtendedErr {
				return syscall.Errno(binary.NativeEndian.Uint32(m.Data[:4]))
			}
		}
	}
	return 0
}
