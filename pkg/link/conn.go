package link

import (
	"crypto/rand"
	"net"
	"net/netip"
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

// UDPConn adapts a *net.UDPConn to PacketConn without allocating per datagram.
type UDPConn struct {
	conn *net.UDPConn
}

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
	return &UDPConn{conn: c}, nil
}

// NewUDPConn wraps an open UDP socket.
func NewUDPConn(c *net.UDPConn) *UDPConn { return &UDPConn{conn: c} }

// ReadFrom implements PacketConn. IPv4-mapped IPv6 sources are unmapped so one host has
// one address for rate limiting and roaming.
func (u *UDPConn) ReadFrom(b []byte) (int, netip.AddrPort, error) {
	n, addr, err := u.conn.ReadFromUDPAddrPort(b)
	return n, netip.AddrPortFrom(addr.Addr().Unmap(), addr.Port()), err
}

// WriteTo implements PacketConn.
func (u *UDPConn) WriteTo(b []byte, addr netip.AddrPort) error {
	_, err := u.conn.WriteToUDPAddrPort(b, addr)
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
