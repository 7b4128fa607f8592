//go:build !linux

package link

import (
	"net"
	"net/netip"
)

// batchIO is empty where recvmmsg/sendmmsg are not available: UDPConn's batch methods
// move one datagram per system call there.
type batchIO struct{}

func newBatchIO(*net.UDPConn) *batchIO { return nil }

// ReadBatch implements BatchConn; on this platform it reads one datagram per call.
func (u *UDPConn) ReadBatch(msgs []Datagram) (int, error) { return u.readOne(msgs) }

// WriteBatch implements BatchConn; on this platform it writes one datagram per call.
func (u *UDPConn) WriteBatch(msgs []Datagram) (int, error) { return u.writeEach(msgs) }

// icmpWatch is Linux's IP_RECVERR watch; there is none on this platform.
type icmpWatch struct{}

// watchUnreachable does nothing on this platform: the client does not learn of ICMP port
// unreachable here, and a dial to an address where nothing listens runs to its deadline.
func (u *UDPConn) watchUnreachable(netip.AddrPort, func()) error { return nil }

// icmpReported is always false: no ICMP error is reported in a read's or write's stead.
func (u *UDPConn) icmpReported(error) bool { return false }
