package icmperr

import (
	"encoding/binary"
	"net/netip"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// sizeofSockExtendedErr is sizeof(struct sock_extended_err): ee_errno (u32), ee_origin,
// ee_type, ee_code, ee_pad (u8 each), ee_info, ee_data (u32 each).
const sizeofSockExtendedErr = 16

// ee_origin values (linux/errqueue.h).
const (
	OriginLocal = unix.SO_EE_ORIGIN_LOCAL
	OriginICMP  = unix.SO_EE_ORIGIN_ICMP
	OriginICMP6 = unix.SO_EE_ORIGIN_ICMP6
)

// Enable sets IP_RECVERR on raw's socket, and IPV6_RECVERR as well on an AF_INET6 one:
// an AF_INET6 socket that sends to IPv4-mapped addresses gets ICMPv4 errors for them,
// which are queued only with IP_RECVERR.
func Enable(raw syscall.RawConn) error {
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
			// An IPv6-only socket may refuse it; it has no IPv4-mapped destinations then.
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
	return nil
}

// FromICMP says whether errno is one the kernel may report as a socket's pending error
// for an ICMP error (icmp_err_convert, icmpv6_err_convert): then the read or write that
// returned it failed because of an earlier datagram's ICMP error, not its own doing, and
// the error queue holds the details.
func FromICMP(errno syscall.Errno) bool {
	switch errno {
	case unix.ECONNREFUSED, unix.EHOSTUNREACH, unix.ENETUNREACH, unix.EHOSTDOWN, unix.ENONET,
		unix.EPROTO, unix.ENOPROTOOPT, unix.EMSGSIZE, unix.EOPNOTSUPP, unix.EACCES:
		return true
	}
	return false
}

// Entry is one error-queue entry.
type Entry struct {
	// Errno is ee_errno (ECONNREFUSED for a port unreachable); 0 if the entry carried no
	// extended error.
	Errno syscall.Errno
	// Origin, Type and Code are ee_origin, ee_type and ee_code: for OriginICMP and
	// OriginICMP6, the ICMP error's type and code.
	Origin, Type, Code uint8
	// Dest is the failed datagram's destination (IPv4-mapped addresses unmapped, no zone);
	// the zero AddrPort if the kernel did not give it.
	Dest netip.AddrPort
	// Offender is the address of the host that sent the ICMP error (SO_EE_OFFENDER);
	// the zero Addr if there is none (a local error).
	Offender netip.Addr
	// Quoted is the start of the failed datagram's payload, in the Queue's buffer (valid
	// until its next Recv); nil if the payload was longer than the buffer.
	Quoted []byte
}

// PortUnreachable says whether e is an ICMP or ICMPv6 port unreachable.
func (e *Entry) PortUnreachable() bool {
	switch e.Origin {
	case OriginICMP:
		return e.Type == 3 && e.Code == 3 // ICMP_DEST_UNREACH, ICMP_PORT_UNREACH
	case OriginICMP6:
		return e.Type == 1 && e.Code == 4 // ICMPV6_DEST_UNREACH, ICMPV6_PORT_UNREACH
	}
	return false
}

// Queue reads a socket's error queue into its own buffers: one Queue per reader, or a
// lock around it.
type Queue struct {
	quoted []byte
	oob    []byte
}

// NewQueue makes a Queue whose entries quote up to quote bytes of payload: a longer
// payload is reported as Quoted == nil.
func NewQueue(quote int) *Queue {
	return &Queue{
		quoted: make([]byte, quote),
		oob:    make([]byte, unix.CmsgSpace(sizeofSockExtendedErr+unix.SizeofSockaddrInet6)),
	}
}

// Recv takes one entry off the queue of the socket fd without waiting, or returns false
// when the queue is empty. Call it inside syscall.RawConn.Control or Read.
func (q *Queue) Recv(fd uintptr) (Entry, bool) {
	for {
		n, oobn, flags, from, err := unix.Recvmsg(int(fd), q.quoted, q.oob, unix.MSG_ERRQUEUE|unix.MSG_DONTWAIT)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return Entry{}, false // EAGAIN: empty
		}
		e := Entry{Dest: addrPort(from), Quoted: q.quoted[:n:n]}
		if flags&unix.MSG_TRUNC != 0 {
			e.Quoted = nil
		}
		e.parse(q.oob[:oobn])
		return e, true
	}
}

// parse fills e from the IP_RECVERR or IPV6_RECVERR control message.
func (e *Entry) parse(oob []byte) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return
	}
	for _, m := range msgs {
		v4 := m.Header.Level == unix.SOL_IP && m.Header.Type == unix.IP_RECVERR
		v6 := m.Header.Level == unix.SOL_IPV6 && m.Header.Type == unix.IPV6_RECVERR
		if !(v4 || v6) || len(m.Data) < sizeofSockExtendedErr {
			continue
		}
		d := m.Data
		e.Errno = syscall.Errno(binary.NativeEndian.Uint32(d[0:4]))
		e.Origin, e.Type, e.Code = d[4], d[5], d[6]
		e.Offender = offender(d[sizeofSockExtendedErr:])
		return
	}
}

// offender parses the struct sockaddr_in or sockaddr_in6 that follows the extended error
// (all zero, family AF_UNSPEC, when there is none).
func offender(b []byte) netip.Addr {
	if len(b) < 2 {
		return netip.Addr{}
	}
	switch binary.NativeEndian.Uint16(b[0:2]) {
	case unix.AF_INET:
		if len(b) >= unix.SizeofSockaddrInet4 {
			return netip.AddrFrom4([4]byte(b[4:8]))
		}
	case unix.AF_INET6:
		if len(b) >= unix.SizeofSockaddrInet6 {
			return netip.AddrFrom16([16]byte(b[8:24])).Unmap()
		}
	}
	return netip.Addr{}
}

// addrPort is a datagram's destination as recvmsg gave it.
func addrPort(sa unix.Sockaddr) netip.AddrPort {
	switch sa := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), uint16(sa.Port))
	case *unix.SockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr).Unmap(), uint16(sa.Port))
	}
	return netip.AddrPort{}
}
