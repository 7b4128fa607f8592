package link

import (
	"crypto/rand"
	"errors"
	"net"
	"net/netip"
	"sync/atomic"
	"syscall"
	"time"
)

// cryptoRand is the default source of randomness for keys, secrets and ids.
var cryptoRand = rand.Reader

// PacketConn is one datagram socket: all of the link's I/O goes through it, so tests and
// benchmarks can run the real endpoints over an in-memory network (package fakenet).
type PacketConn interface {
	// ReadFrom blocks for the next datagram, copies it into b and returns its length and
	// source. A datagram larger than b is truncated to len(b). After Close it returns an
	// error satisfying errors.Is(err, net.ErrClosed).
	ReadFrom(b []byte) (n int, addr netip.AddrPort, err error)
	// WriteTo sends one datagram to addr; b may be reused as soon as it returns.
	WriteTo(b []byte, addr netip.AddrPort) error
	// LocalAddr is the socket's own address.
	LocalAddr() netip.AddrPort
	// Close unblocks pending reads; safe to call more than once.
	Close() error
}

// BatchSize is the most datagrams one batched call moves, and the batch the Server and
// Client read with. 32 is where wireguard-go's and quic-go's receive paths settle: the
// system-call cost is spread thin, and a batch's buffers (64 KiB) stay small.
const BatchSize = 32

// Datagram is one datagram of a batch.
type Datagram struct {
	// Buf is the datagram to send, or the buffer to receive into (its length is what is
	// offered; a longer datagram is truncated to it, as with ReadFrom).
	Buf []byte
	// N is the received datagram's length (set by ReadBatch).
	N int
	// Addr is the destination (WriteBatch) or the source (set by ReadBatch).
	Addr netip.AddrPort
}

// BatchConn is a PacketConn that can move several datagrams per system call. The Server
// and Client read with ReadBatch, and Server.BroadcastBatch writes with WriteBatch, when
// their Conn implements it; otherwise they fall back to ReadFrom and WriteTo.
type BatchConn interface {
	PacketConn
	// ReadBatch blocks until at least one datagram has arrived, then fills msgs[:n] with
	// up to len(msgs) datagrams that are already waiting (Buf[:N] and Addr). It is meant
	// for one reader at a time. Errors are those of ReadFrom.
	ReadBatch(msgs []Datagram) (n int, err error)
	// WriteBatch sends msgs in order and returns how many went out; on an error, msgs[n]
	// was not sent and neither were the ones after it. Safe for concurrent use.
	WriteBatch(msgs []Datagram) (n int, err error)
}

// ExtraConn is a further socket a Server serves on beside ServerConfig.Conn: the NATS relay
// of package relay, which carries the same datagrams over a message broker. It owns a set
// of peer addresses that no other socket of the Server produces (the relay's are synthetic
// IPv6 unique-local addresses), so the Server answers each peer on the socket its datagrams
// came in on: the first ExtraConn whose Owns claims the address, ServerConfig.Conn
// otherwise. A session that roams from one socket to another is answered on the new one.
type ExtraConn interface {
	PacketConn
	// Owns reports whether addr is one of the conn's peer addresses. It is called for
	// every datagram sent, so it must be cheap and must not block.
	Owns(addr netip.AddrPort) bool
}

// AddrNamer is an ExtraConn that names its peer addresses for logs and status displays:
// the relay's synthetic addresses mean nothing to a reader, their subjects do
// ("relay:dronelink.drone-7.down.alice.NUID").
type AddrNamer interface {
	// AddrName is addr's name, or "" if the conn does not know it.
	AddrName(addr netip.AddrPort) string
}

// UnreachableReporter is a PacketConn that can learn that a datagram it sent reached no
// listener: an ICMP port unreachable for a UDPConn (on Linux), a "no responders" answer
// for the NATS relay. Dial and RequestDroneKey ask it to report such datagrams to the
// drone's address, and fail at once with ErrNoListener before the first answer instead of
// waiting for their deadline.
type UnreachableReporter interface {
	// ReportUnreachable arranges for report to be called each time the conn learns that a
	// datagram it sent to peer reached no listener; err describes it (one line, naming
	// where nobody listened) and satisfies errors.Is(err, ErrNoListener). report may be
	// called from the conn's reader or writer goroutines and must not block. An error
	// means the conn cannot watch, and nothing will be reported.
	ReportUnreachable(peer netip.AddrPort, report func(err error)) error
}

// UDPConn adapts a *net.UDPConn to PacketConn and BatchConn without allocating per
// datagram. On Linux its batches use recvmmsg(2) and sendmmsg(2).
type UDPConn struct {
	conn  *net.UDPConn
	batch *batchIO                  // nil: one datagram per system call
	icmp  atomic.Pointer[icmpWatch] // nil unless a Client watches for ICMP port unreachable (Linux)
}

var _ BatchConn = (*UDPConn)(nil)

// ListenUDP opens a UDP socket on address ("host:port"; port 0 picks a free one).
func ListenUDP(address string) (*UDPConn, error) {
	addr, err := net.ResolveUDPAddr("udp", address)
	if err != nil {
		return nil, err
	}
	c, err := net.ListenUDP("udp", addr)
	if err != nil {
		return nil, err
	}
	return NewUDPConn(c), nil
}

// NewUDPConn wraps an open UDP socket.
func NewUDPConn(c *net.UDPConn) *UDPConn { return &UDPConn{conn: c, batch: newBatchIO(c)} }

// ReportUnreachable implements UnreachableReporter. On Linux it sets IP_RECVERR
// (IPV6_RECVERR) on the socket, which stays unconnected, and reports each ICMP port
// unreachable for a datagram sent to peer (see watchUnreachable); elsewhere it reports
// nothing.
func (u *UDPConn) ReportUnreachable(peer netip.AddrPort, report func(err error)) error {
	err := &noListenerError{peer}
	return u.watchUnreachable(peer, func() { report(err) })
}

// ReadFrom implements PacketConn. IPv4-mapped IPv6 sources are unmapped so one host has
// one address for rate limiting and roaming.
func (u *UDPConn) ReadFrom(b []byte) (int, netip.AddrPort, error) {
	for {
		n, addr, err := u.conn.ReadFromUDPAddrPort(b)
		if err != nil && u.icmpReported(err) {
			continue // an earlier datagram's ICMP error, now drained: read on
		}
		return n, netip.AddrPortFrom(addr.Addr().Unmap(), addr.Port()), err
	}
}

// WriteTo implements PacketConn.
func (u *UDPConn) WriteTo(b []byte, addr netip.AddrPort) error {
	_, err := u.conn.WriteToUDPAddrPort(b, addr)
	if err != nil && u.icmpReported(err) {
		// The kernel reported an earlier datagram's ICMP error instead of sending this
		// one; it is drained now: send again, once.
		if _, err = u.conn.WriteToUDPAddrPort(b, addr); err != nil {
			u.icmpReported(err)
		}
	}
	return err
}

// LocalAddr implements PacketConn.
func (u *UDPConn) LocalAddr() netip.AddrPort {
	if a, ok := u.conn.LocalAddr().(*net.UDPAddr); ok {
		return a.AddrPort()
	}
	return netip.AddrPort{}
}

// Close implements PacketConn.
func (u *UDPConn) Close() error { return u.conn.Close() }

// readOne is ReadBatch without batching: one ReadFrom into msgs[0].
func (u *UDPConn) readOne(msgs []Datagram) (int, error) {
	if len(msgs) == 0 {
		return 0, nil
	}
	n, from, err := u.ReadFrom(msgs[0].Buf)
	if err != nil {
		return 0, err
	}
	msgs[0].N, msgs[0].Addr = n, from
	return 1, nil
}

// writeEach is WriteBatch without batching: one WriteTo per message.
func (u *UDPConn) writeEach(msgs []Datagram) (int, error) {
	for i := range msgs {
		if err := u.WriteTo(msgs[i].Buf, msgs[i].Addr); err != nil {
			return i, err
		}
	}
	return len(msgs), nil
}

// readDatagrams reads conn until it is closed and hands each datagram to handle together
// with the time its batch was read: one clock read per batch instead of per datagram
// (time.Now is a third of a data packet's receive cost on some virtual machines). It reads
// BatchSize datagrams per call when conn is a BatchConn. Read timeouts are retried; so is
// ECONNREFUSED (the report of an earlier datagram's ICMP port unreachable by a PacketConn
// over a connected socket, which the kernel clears as it reports it; a UDPConn that
// watches for it drains and reads on by itself). It returns nil once conn is closed, or
// the first other error.
func readDatagrams(conn PacketConn, clock func() time.Time, handle func(pkt []byte, from netip.AddrPort, now time.Time)) error {
	bc, batched := conn.(BatchConn)
	msgs := make([]Datagram, 1, BatchSize)
	if batched {
		msgs = msgs[:BatchSize]
	}
	bufs := make([]byte, len(msgs)*ReadBufferSize)
	for i := range msgs {
		msgs[i].Buf = bufs[i*ReadBufferSize : (i+1)*ReadBufferSize : (i+1)*ReadBufferSize]
	}
	for {
		n := 1
		var err error
		if batched {
			n, err = bc.ReadBatch(msgs)
		} else {
			msgs[0].N, msgs[0].Addr, err = conn.ReadFrom(msgs[0].Buf)
		}
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			if errors.Is(err, syscall.ECONNREFUSED) {
				continue
			}
			return err
		}
		now := clock()
		for i := range n {
			handle(msgs[i].Buf[:msgs[i].N], msgs[i].Addr, now)
		}
	}
}
