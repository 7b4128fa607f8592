package fakenet

import (
	"bytes"
	"errors"
	"net"
	"net/netip"
	"os"
	"sync"
	"time"
)

// Conn is one datagram socket on a Network, created by Network.Listen. It implements the
// engine's PacketConn interface. WriteTo is safe for concurrent use; ReadFrom is meant
// for one reader at a time (concurrent readers each get distinct datagrams).
type Conn struct {
	net  *Network
	addr netip.AddrPort
	q    chan packet
	done chan struct{} // closed by Close

	closed bool // guarded by net.mu
	rdl    deadline
}

// ReadFrom blocks for the next datagram, copies it into b and returns its length and
// source. A datagram larger than b is truncated to len(b) and the rest discarded. After
// Close it returns an error wrapping net.ErrClosed (even if datagrams are queued); after
// the read deadline it returns an error wrapping os.ErrDeadlineExceeded.
func (c *Conn) ReadFrom(b []byte) (int, netip.AddrPort, error) {
	select {
	case <-c.done:
		return 0, netip.AddrPort{}, c.opErr("read", netip.AddrPort{}, net.ErrClosed)
	default:
	}
	dl := c.rdl.wait()
	select {
	case <-dl:
		return 0, netip.AddrPort{}, c.opErr("read", netip.AddrPort{}, os.ErrDeadlineExceeded)
	default:
	}
	select {
	case p := <-c.q:
		return copy(b, p.payload), p.from, nil
	case <-c.done:
		return 0, netip.AddrPort{}, c.opErr("read", netip.AddrPort{}, net.ErrClosed)
	case <-dl:
		return 0, netip.AddrPort{}, c.opErr("read", netip.AddrPort{}, os.ErrDeadlineExceeded)
	}
}

// WriteTo sends a copy of b to addr through the network's intercept hook and impairments;
// b may be reused as soon as it returns. It never blocks on a slow reader, and sending to
// an address nobody listens on is not an error (as with UDP). After Close it returns an
// error wrapping net.ErrClosed.
func (c *Conn) WriteTo(b []byte, addr netip.AddrPort) error {
	if !addr.IsValid() {
		return c.opErr("write", addr, errors.New("invalid address"))
	}
	if err := c.net.send(c, packet{from: c.addr, to: addr, payload: bytes.Clone(b)}); err != nil {
		return c.opErr("write", addr, err)
	}
	return nil
}

// LocalAddr returns the socket's address (with the allocated port if Listen got port 0).
func (c *Conn) LocalAddr() netip.AddrPort { return c.addr }

// Close unbinds the socket, discards its queued datagrams and unblocks pending reads.
// It is safe to call more than once.
func (c *Conn) Close() error {
	n := c.net
	n.mu.Lock()
	defer n.mu.Unlock()
	if c.closed {
		return nil
	}
	if n.conns[c.addr] == c {
		delete(n.conns, c.addr)
	}
	c.closeLocked()
	return nil
}

// closeLocked marks c closed; n.mu is held.
func (c *Conn) closeLocked() {
	c.closed = true
	close(c.done)
	c.rdl.stop()
}

// SetReadDeadline sets the deadline for pending and future ReadFrom calls; the zero time
// means none. Reads past the deadline fail with an error wrapping os.ErrDeadlineExceeded
// (whose Timeout method reports true).
func (c *Conn) SetReadDeadline(t time.Time) error {
	select {
	case <-c.done:
		return c.opErr("set", netip.AddrPort{}, net.ErrClosed)
	default:
	}
	c.rdl.set(t)
	return nil
}

func (c *Conn) opErr(op string, remote netip.AddrPort, err error) error {
	e := &net.OpError{Op: op, Net: "udp", Source: net.UDPAddrFromAddrPort(c.addr), Err: err}
	if remote.IsValid() {
		e.Addr = net.UDPAddrFromAddrPort(remote)
	}
	return e
}

// deadline is a resettable deadline whose channel is closed when it passes (the scheme
// of net.Pipe): a pending reader waiting on the channel sees later changes.
type deadline struct {
	mu     sync.Mutex
	timer  *time.Timer
	cancel chan struct{}
}

func (d *deadline) set(t time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.timer != nil && !d.timer.Stop() {
		<-d.cancel // the timer fired: wait for its callback to close cancel
	}
	d.timer = nil
	closed := isClosed(d.cancel)
	if t.IsZero() {
		if closed {
			d.cancel = make(chan struct{})
		}
		return
	}
	if dur := time.Until(t); dur > 0 {
		if closed {
			d.cancel = make(chan struct{})
		}
		cancel := d.cancel
		d.timer = time.AfterFunc(dur, func() { close(cancel) })
		return
	}
	if !closed {
		close(d.cancel)
	}
}

func (d *deadline) wait() chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.cancel
}

func (d *deadline) stop() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.timer != nil && d.timer.Stop() {
		d.timer = nil
	}
}

func isClosed(c chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}
