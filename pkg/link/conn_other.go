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

// connectTo does nothing on this platform: the client does not learn of ICMP port
// unreachable here, and a dial to an address where nothing listens runs to its deadline.
func (u *UDPConn) connectTo(netip.AddrPort) error { return nil }
