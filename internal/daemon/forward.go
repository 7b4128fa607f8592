package daemon

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"syscall"
	"time"
)

// DefaultForwardWait is how long each forward waits, by default, for the kernel to report
// that the datagram was refused (--forward-wait).
const DefaultForwardWait = 20 * time.Millisecond

// forwarder hands each executed command's payload, as one UDP datagram, to the local
// application at --forward, and reports for each datagram its own outcome.
//
// A UDP send succeeds as soon as the kernel takes the datagram; a refusal (nothing
// listening: ICMP port unreachable; or host or network unreachable) comes back afterwards
// as an ICMP error. On a plain connected socket the kernel reports that error on the next
// write, so the refusal of one command used to fail the next one instead (acknowledgements
// alternated ok, failed, ok). Here the socket has IP_RECVERR (IPV6_RECVERR) set: every
// ICMP error is queued with the start of the datagram it refers to. Each forward first
// drains errors left from earlier datagrams, then writes, then waits at most wait for an
// error that quotes this datagram (MSG_ERRQUEUE). Such an error is this forward's failure;
// none within wait means the kernel accepted the datagram, which is all "ok" can promise:
// UDP says nothing about whether the application read it, let alone acted on it.
//
// On loopback the kernel answers a datagram to a closed port with its ICMP error while the
// send is still in progress, so the wait only matters on a loaded machine; towards another
// host, an error later than wait (or one the kernel's ICMP rate limit suppressed) is not
// seen, and one that arrives later is logged as a late refusal of an earlier command.
// Forwards are serialised (the command executor calls one at a time anyway).
type forwarder struct {
	mu   sync.Mutex
	conn *net.UDPConn
	wait time.Duration
	errq errQueue
	late func(err error) // a refusal of an earlier, acknowledged datagram turned up
}

// refusedError is a forward the kernel refused.
type refusedError struct{ errno syscall.Errno }

func (e *refusedError) Error() string { return "forward refused: " + e.errno.Error() }
func (e *refusedError) Unwrap() error { return e.errno }

// newForwarder opens the socket towards address (HOST:PORT).
func newForwarder(address string, wait time.Duration, late func(error)) (*forwarder, error) {
	addr, err := net.ResolveUDPAddr("udp", address)
	if err != nil {
		return nil, err
	}
	conn, err := net.DialUDP("udp", nil, addr)
	if err != nil {
		return nil, err
	}
	f := &forwarder{conn: conn, wait: wait, late: late}
	if err := f.errq.open(conn); err != nil {
		conn.Close()
		return nil, fmt.Errorf("cannot watch for refusals: %w", err)
	}
	return f, nil
}

// Close closes the socket.
func (f *forwarder) Close() error { return f.conn.Close() }

// forward sends payload and returns nil if the kernel took it and reported no refusal of
// it within the wait, a *refusedError if it refused it, or the write's error.
func (f *forwarder) forward(payload []byte) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.drainLate()
	_, err := f.conn.Write(payload)
	var errno syscall.Errno
	if errors.As(err, &errno) && f.errq.fromICMP(errno) {
		// A refusal of an earlier datagram arrived between the drain and the write, and
		// the kernel reported it on this write instead of sending: this datagram was not
		// sent. Take that error for what it is and send again, once.
		f.drainLate()
		_, err = f.conn.Write(payload)
	}
	if err != nil {
		return err
	}
	if errno := f.errq.await(payload, time.Now().Add(f.wait)); errno != 0 {
		return &refusedError{errno}
	}
	return nil
}

// drainLate empties the error queue of refusals that quote earlier datagrams.
func (f *forwarder) drainLate() {
	for {
		errno, ok := f.errq.next()
		if !ok {
			return
		}
		if f.late != nil {
			f.late(errno)
		}
	}
}
