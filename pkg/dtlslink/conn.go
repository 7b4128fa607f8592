package dtlslink

import (
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/transport/v5/deadline"

	"github.com/dronelink/dronelink/pkg/link"
)

// noKind marks "no application write in progress" in sendKind.
const noKind = ^uint32(0)

// peerConn is one association's view of the drone's shared socket: the net.PacketConn that
// pion/dtls reads from and writes to. The server's reader goroutine routes each datagram
// into the queue of the association it belongs to (by connection ID or source address);
// writes go straight to the shared socket. It counts outgoing datagrams for the hooks.
type peerConn struct {
	srv      *Server
	sess     *session
	in       chan inbound
	deadline *deadline.Deadline
	closed   chan struct{}
	once     sync.Once
	// sendKind is the link.PacketKind of the application message being written, set by the
	// session's writer (under its write lock) so the datagram is counted under its kind.
	sendKind atomic.Uint32
}

type inbound struct {
	b    []byte
	from netip.AddrPort
}

func newPeerConn(srv *Server, sess *session) *peerConn {
	pc := &peerConn{srv: srv, sess: sess, in: make(chan inbound, peerQueue), deadline: deadline.New(), closed: make(chan struct{})}
	pc.sendKind.Store(noKind)
	return pc
}

// deliver queues a copy of a datagram for the association; false if its queue is full.
func (pc *peerConn) deliver(b []byte, from netip.AddrPort) bool {
	select {
	case pc.in <- inbound{b: append([]byte(nil), b...), from: from}:
		return true
	default:
		return false
	}
}

// ReadFrom implements net.PacketConn.
func (pc *peerConn) ReadFrom(b []byte) (int, net.Addr, error) {
	select {
	case <-pc.closed:
		return 0, nil, net.ErrClosed
	case <-pc.deadline.Done():
		return 0, nil, os.ErrDeadlineExceeded
	case p := <-pc.in:
		return copy(b, p.b), net.UDPAddrFromAddrPort(p.from), nil
	}
}

// WriteTo implements net.PacketConn.
func (pc *peerConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	select {
	case <-pc.closed:
		return 0, net.ErrClosed
	default:
	}
	if isServerHello(b) {
		// pion sends a ServerHello only to a ClientHello that returned a valid cookie:
		// the peer has proved it receives at its address.
		pc.sess.verified()
	}
	n, err := pc.srv.sock.WriteTo(b, addr)
	if err == nil {
		pc.srv.cfg.Hooks.PacketSent(sentKind(b, link.KindResponse, &pc.sendKind), n)
	}
	return n, err
}

// Close implements net.PacketConn: the association stops receiving; the shared socket stays.
func (pc *peerConn) Close() error {
	pc.once.Do(func() { close(pc.closed) })
	return nil
}

// LocalAddr implements net.PacketConn.
func (pc *peerConn) LocalAddr() net.Addr { return pc.srv.sock.LocalAddr() }

// SetDeadline implements net.PacketConn (reads only: writes never block for long).
func (pc *peerConn) SetDeadline(t time.Time) error { return pc.SetReadDeadline(t) }

// SetReadDeadline implements net.PacketConn.
func (pc *peerConn) SetReadDeadline(t time.Time) error {
	pc.deadline.Set(t)
	return nil
}

// SetWriteDeadline implements net.PacketConn.
func (pc *peerConn) SetWriteDeadline(time.Time) error { return nil }

// sentKind labels an outgoing datagram: handshake flights as handshake, clear alerts as
// error, encrypted records as the application message being written (or data when pion
// writes on its own: encrypted alerts, handshake retransmissions in epoch 1).
func sentKind(b []byte, handshake link.PacketKind, appKind *atomic.Uint32) link.PacketKind {
	switch classify(b) {
	case classHandshake:
		return handshake
	case classAlert:
		return link.KindError
	}
	if k := appKind.Load(); k != noKind {
		return link.PacketKind(k)
	}
	return link.KindData
}

// receivedKind labels an incoming datagram by its first record.
func receivedKind(b []byte, handshake link.PacketKind) link.PacketKind {
	switch classify(b) {
	case classHandshake:
		return handshake
	case classAlert:
		return link.KindError
	}
	return link.KindData
}

// clientConn is the operator's socket for one association: it accepts datagrams only from
// the drone's address, counts traffic for the hooks and reports ClientHello transmissions
// as handshake attempts.
type clientConn struct {
	*net.UDPConn
	drone    netip.AddrPort
	hooks    link.Hooks
	onHello  func(attempt int)
	hellos   atomic.Int32
	sendKind atomic.Uint32
}

func newClientConn(udp *net.UDPConn, drone netip.AddrPort, hooks link.Hooks, onHello func(int)) *clientConn {
	cc := &clientConn{UDPConn: udp, drone: drone, hooks: hooks, onHello: onHello}
	cc.sendKind.Store(noKind)
	return cc
}

// ReadFrom implements net.PacketConn, skipping datagrams from anyone but the drone.
func (cc *clientConn) ReadFrom(b []byte) (int, net.Addr, error) {
	for {
		n, from, err := cc.UDPConn.ReadFromUDPAddrPort(b)
		if err != nil {
			return n, nil, err
		}
		from = netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
		cc.hooks.PacketReceived(receivedKind(b[:n], link.KindResponse), n)
		if from != cc.drone {
			cc.hooks.Dropped(link.DropUnexpected)
			continue
		}
		return n, net.UDPAddrFromAddrPort(from), nil
	}
}

// WriteTo implements net.PacketConn.
func (cc *clientConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	n, err := cc.UDPConn.WriteTo(b, addr)
	if err == nil {
		cc.hooks.PacketSent(sentKind(b, link.KindInitiation, &cc.sendKind), n)
		if isClientHello(b) && cc.onHello != nil {
			cc.onHello(int(cc.hellos.Add(1)))
		}
	}
	return n, err
}
