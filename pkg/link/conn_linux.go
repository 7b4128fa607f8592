//go:build linux

package link

import (
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// On Linux, UDPConn moves batches with recvmmsg(2) and sendmmsg(2): one system call for
// up to BatchSize datagrams. golang.org/x/net/ipv4's ReadBatch does the same but
// allocates a net.UDPAddr (and its IP) for every datagram received; here the kernel's
// headers, iovecs and address buffers live in a reusable mmsgBatch and source addresses
// are parsed straight into netip.AddrPort values, so a batch costs no allocation.
//
// Sending also uses UDP generic segmentation offload (UDP_SEGMENT, Linux 4.18) where the
// kernel has it, as wireguard-go and quic-go do: consecutive datagrams of a batch to the
// same destination with the same length (the last may be shorter) go down the stack as
// one buffer that is cut into those datagrams at the bottom (by the NIC, or by the kernel
// just before the driver). On the wire they are the same datagrams; the stack is
// traversed once per run instead of once per datagram. If the device cannot segment
// (EIO), the socket stops using segmentation; if a segment does not fit the path MTU
// (EMSGSIZE or EINVAL: an IPv4 path below 1228 bytes, or a learned path MTU, where a
// single datagram would have been fragmented), that call resends unsegmented. Where the
// system calls are missing or filtered (ENOSYS, or EPERM from a seccomp filter), the
// socket falls back to one datagram per call for good.

// A segmented send is one IP datagram before it is cut, so a run must stay below 64 KiB
// (less headers), and each segment must fit the path MTU: runs are only made of datagrams
// up to MaxDatagramSize (1200, which fits IPv6's minimum MTU), never larger ones, which
// WriteTo would let IP fragment. A whole batch of those fits in one IP datagram:
var _ [65535 - 8 - 40 - BatchSize*MaxDatagramSize]struct{}

// mmsgBatch is the kernel-facing state of one batched call.
type mmsgBatch struct {
	hdrs  [BatchSize]unix.Mmsghdr
	iovs  [BatchSize]unix.Iovec
	names [BatchSize]unix.RawSockaddrInet6 // large enough for either family
	cmsgs [BatchSize][4]uint64             // a UDP_SEGMENT control message per header (uint64: aligned)
	segs  [BatchSize]int                   // datagrams each header carries

	count int           // headers to hand to the kernel
	done  int           // datagrams the kernel moved
	errno syscall.Errno // the call's error, 0 if none

	recvFn, sendFn func(fd uintptr) bool // method values made once, so calls do not allocate
}

func newMmsgBatch() *mmsgBatch {
	b := new(mmsgBatch)
	b.recvFn = b.recv
	b.sendFn = b.send
	return b
}

// recv and send run inside RawConn.Read/Write: returning false means "would block, wait
// for the socket and call again", which is how the runtime's poller is used.
func (b *mmsgBatch) recv(fd uintptr) bool {
	return b.syscall(unix.SYS_RECVMMSG, fd)
}

func (b *mmsgBatch) send(fd uintptr) bool {
	return b.syscall(unix.SYS_SENDMMSG, fd)
}

func (b *mmsgBatch) syscall(trap, fd uintptr) bool {
	for {
		n, _, errno := unix.Syscall6(trap, fd, uintptr(unsafe.Pointer(&b.hdrs[0])), uintptr(b.count),
			unix.MSG_DONTWAIT, 0, 0)
		switch errno {
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return false
		}
		b.done, b.errno = int(n), errno
		if errno != 0 {
			b.done = 0
		}
		return true
	}
}

// setIovec points header i at buf.
func (b *mmsgBatch) setIovec(i int, buf []byte) {
	b.iovs[i] = unix.Iovec{}
	if len(buf) > 0 {
		b.iovs[i].Base = &buf[0]
	}
	b.iovs[i].SetLen(len(buf))
	b.hdrs[i] = unix.Mmsghdr{}
	b.hdrs[i].Hdr.Iov = &b.iovs[i]
	b.hdrs[i].Hdr.SetIovlen(1)
	b.hdrs[i].Hdr.Name = (*byte)(unsafe.Pointer(&b.names[i]))
}

// batchIO is a UDPConn's batched path; nil when the socket gives no raw access.
type batchIO struct {
	raw    syscall.RawConn
	inet6  bool        // the socket is AF_INET6 (dual-stack or IPv6), else AF_INET
	gso    atomic.Bool // the kernel takes UDP_SEGMENT on this socket
	single atomic.Bool // recvmmsg/sendmmsg are unavailable: one datagram per call
	readMu sync.Mutex  // one reader at a time owns readBatch
	read   *mmsgBatch
	pool   sync.Pool // *mmsgBatch for writers, which may be concurrent
}

func newBatchIO(c *net.UDPConn) *batchIO {
	raw, err := c.SyscallConn()
	if err != nil {
		return nil
	}
	var sa unix.Sockaddr
	var serr, gsoErr error
	if err := raw.Control(func(fd uintptr) {
		sa, serr = unix.Getsockname(int(fd))
		_, gsoErr = unix.GetsockoptInt(int(fd), unix.SOL_UDP, unix.UDP_SEGMENT)
	}); err != nil || serr != nil {
		return nil
	}
	bio := &batchIO{raw: raw, read: newMmsgBatch()}
	switch sa.(type) {
	case *unix.SockaddrInet4:
	case *unix.SockaddrInet6:
		bio.inet6 = true
	default:
		return nil
	}
	bio.gso.Store(gsoErr == nil)
	bio.pool.New = func() any { return newMmsgBatch() }
	return bio
}

// ReadBatch implements BatchConn with one recvmmsg(2).
func (u *UDPConn) ReadBatch(msgs []Datagram) (int, error) {
	if u.batch == nil || u.batch.single.Load() {
		return u.readOne(msgs)
	}
	if len(msgs) == 0 {
		return 0, nil
	}
	msgs = msgs[:min(len(msgs), BatchSize)]
	bio := u.batch
	bio.readMu.Lock()
	defer bio.readMu.Unlock()
	b := bio.read
	for {
		for i := range msgs {
			b.setIovec(i, msgs[i].Buf)
			b.hdrs[i].Hdr.Namelen = unix.SizeofSockaddrInet6
		}
		b.count = len(msgs)
		if err := bio.raw.Read(b.recvFn); err != nil {
			return 0, err
		}
		if b.errno == 0 || !u.icmpErrno(b.errno) {
			break
		}
		// An earlier datagram's ICMP error (the socket's pending error, which recvmmsg
		// reports before any datagram, or after the ones it returned on the call before),
		// now drained: read on.
	}
	if b.errno == unix.ENOSYS || b.errno == unix.EPERM {
		bio.single.Store(true) // no recvmmsg here (old kernel, emulator, seccomp)
		return u.readOne(msgs)
	}
	if b.errno != 0 {
		return 0, &net.OpError{Op: "read", Net: "udp", Source: u.conn.LocalAddr(), Err: os.NewSyscallError("recvmmsg", b.errno)}
	}
	for i := range b.done {
		msgs[i].N = int(b.hdrs[i].Len)
		msgs[i].Addr = parseSockaddr(&b.names[i], b.hdrs[i].Hdr.Namelen)
	}
	return b.done, nil
}

// WriteBatch implements BatchConn with sendmmsg(2), BatchSize datagrams per call.
func (u *UDPConn) WriteBatch(msgs []Datagram) (int, error) {
	if u.batch == nil || u.batch.single.Load() {
		return u.writeEach(msgs)
	}
	bio := u.batch
	b := bio.pool.Get().(*mmsgBatch)
	defer bio.pool.Put(b)
	sent := 0
	gso := bio.gso.Load()
	retried := false // an earlier datagram's ICMP error was reported instead of a send
	for sent < len(msgs) {
		chunk := msgs[sent:min(len(msgs), sent+BatchSize)]
		b.count = b.pack(chunk, bio.inet6, gso)
		if b.count == 0 {
			return sent, &net.OpError{Op: "write", Net: "udp", Addr: net.UDPAddrFromAddrPort(chunk[0].Addr),
				Err: errAddressFamily}
		}
		if err := bio.raw.Write(b.sendFn); err != nil {
			return sent, err
		}
		for h := range b.done {
			sent += b.segs[h]
		}
		switch errno := b.errno; {
		case errno == 0:
			continue
		case gso && b.segs[0] > 1 && errno == unix.EIO:
			bio.gso.Store(false) // the device cannot segment: stop, and resend unsegmented
			gso = false
			continue
		case gso && b.segs[0] > 1 && (errno == unix.EMSGSIZE || errno == unix.EINVAL):
			gso = false // a segment is over the path MTU: this call goes unsegmented
			continue
		case !retried && u.icmpErrno(errno):
			retried = true // drained: send again, once
			continue
		case errno == unix.ENOSYS:
			bio.single.Store(true)
			n, err := u.writeEach(msgs[sent:])
			return sent + n, err
		case errno == unix.EPERM:
			// A firewall refusing the destination, or a seccomp filter refusing sendmmsg:
			// try the datagram alone. If that works, it was the system call.
			if err := u.WriteTo(msgs[sent].Buf, msgs[sent].Addr); err != nil {
				return sent, err
			}
			bio.single.Store(true)
			n, err := u.writeEach(msgs[sent+1:])
			return sent + 1 + n, err
		}
		return sent, &net.OpError{Op: "write", Net: "udp", Source: u.conn.LocalAddr(),
			Addr: net.UDPAddrFromAddrPort(msgs[sent].Addr), Err: os.NewSyscallError("sendmmsg", b.errno)}
	}
	return sent, nil
}

// pack fills the headers for chunk and returns how many it used. With gso, a run of
// datagrams to one destination whose lengths equal the first's (the last may be shorter),
// all at most MaxDatagramSize, shares one header: one iovec per datagram and a UDP_SEGMENT control message giving the
// length. It stops before the first destination the socket cannot reach.
func (b *mmsgBatch) pack(chunk []Datagram, inet6, gso bool) int {
	h, iov := 0, 0
	for i := 0; i < len(chunk); h++ {
		namelen, ok := putSockaddr(&b.names[h], chunk[i].Addr, inet6)
		if !ok {
			break
		}
		size := len(chunk[i].Buf)
		k := 1
		for gso && size > 0 && size <= MaxDatagramSize && i+k < len(chunk) {
			next := &chunk[i+k]
			if next.Addr != chunk[i].Addr || len(next.Buf) == 0 || len(next.Buf) > size {
				break
			}
			k++
			if len(next.Buf) < size {
				break // a shorter datagram can only end a run
			}
		}
		b.hdrs[h] = unix.Mmsghdr{}
		hdr := &b.hdrs[h].Hdr
		hdr.Name = (*byte)(unsafe.Pointer(&b.names[h]))
		hdr.Namelen = namelen
		for j := range k {
			b.iovs[iov+j] = unix.Iovec{}
			if buf := chunk[i+j].Buf; len(buf) > 0 {
				b.iovs[iov+j].Base = &buf[0]
			}
			b.iovs[iov+j].SetLen(len(chunk[i+j].Buf))
		}
		hdr.Iov = &b.iovs[iov]
		hdr.SetIovlen(k)
		if k > 1 {
			cmsg := (*unix.Cmsghdr)(unsafe.Pointer(&b.cmsgs[h][0]))
			*cmsg = unix.Cmsghdr{Level: unix.SOL_UDP, Type: unix.UDP_SEGMENT}
			cmsg.SetLen(unix.CmsgLen(2))
			*(*uint16)(unsafe.Add(unsafe.Pointer(cmsg), unix.CmsgLen(0))) = uint16(size)
			hdr.Control = (*byte)(unsafe.Pointer(cmsg))
			hdr.SetControllen(unix.CmsgSpace(2))
		}
		b.segs[h] = k
		iov += k
		i += k
	}
	return h
}

var errAddressFamily = errors.New("destination address family does not match the socket")

// parseSockaddr reads a kernel source address; IPv4-mapped IPv6 addresses are unmapped
// (as ReadFrom does) so one host has one address. Anything else yields the zero AddrPort.
func parseSockaddr(sa *unix.RawSockaddrInet6, namelen uint32) netip.AddrPort {
	raw := (*[unix.SizeofSockaddrInet6]byte)(unsafe.Pointer(sa))
	switch {
	case sa.Family == unix.AF_INET && namelen >= unix.SizeofSockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4([4]byte(raw[4:8])), binary.BigEndian.Uint16(raw[2:4]))
	case sa.Family == unix.AF_INET6 && namelen >= unix.SizeofSockaddrInet6:
		addr := netip.AddrFrom16(sa.Addr).Unmap()
		if sa.Scope_id != 0 && addr.Is6() {
			addr = addr.WithZone(zoneName(sa.Scope_id))
		}
		return netip.AddrPortFrom(addr, binary.BigEndian.Uint16(raw[2:4]))
	}
	return netip.AddrPort{}
}

// putSockaddr writes a destination in the socket's family: IPv4 destinations become
// IPv4-mapped addresses on an AF_INET6 socket; IPv6 ones cannot be reached from AF_INET.
func putSockaddr(sa *unix.RawSockaddrInet6, to netip.AddrPort, inet6 bool) (uint32, bool) {
	raw := (*[unix.SizeofSockaddrInet6]byte)(unsafe.Pointer(sa))
	*sa = unix.RawSockaddrInet6{}
	addr := to.Addr()
	if !addr.IsValid() {
		return 0, false
	}
	if !inet6 {
		addr = addr.Unmap()
		if !addr.Is4() {
			return 0, false
		}
		sa.Family = unix.AF_INET
		binary.BigEndian.PutUint16(raw[2:4], to.Port())
		a4 := addr.As4()
		copy(raw[4:8], a4[:])
		return unix.SizeofSockaddrInet4, true
	}
	sa.Family = unix.AF_INET6
	binary.BigEndian.PutUint16(raw[2:4], to.Port())
	sa.Addr = addr.As16()
	if zone := addr.Zone(); zone != "" {
		sa.Scope_id = zoneIndex(zone)
	}
	return unix.SizeofSockaddrInet6, true
}

// zones maps IPv6 scope ids to interface names and back, as the net package does for
// ReadFrom and WriteTo (whose cache is not exported): so a link-local peer has the same
// address, "fe80::1%wlan0", on the batched and unbatched paths, and a datagram from or to
// one costs a map lookup, not an interface listing. It is refreshed at most once a minute,
// when a lookup misses.
var zones struct {
	sync.Mutex
	byIndex   map[uint32]string
	byName    map[string]uint32
	refreshed time.Time
}

// zoneLookup runs find on the current table, refreshing it first if it is older than a
// minute and find misses.
func zoneLookup(find func() bool) {
	zones.Lock()
	defer zones.Unlock()
	if find() || time.Since(zones.refreshed) < time.Minute && zones.byIndex != nil {
		return
	}
	zones.byIndex, zones.byName = map[uint32]string{}, map[string]uint32{}
	zones.refreshed = time.Now()
	if ifs, err := net.Interfaces(); err == nil {
		for _, ifi := range ifs {
			zones.byIndex[uint32(ifi.Index)] = ifi.Name
			zones.byName[ifi.Name] = uint32(ifi.Index)
		}
	}
	find()
}

// zoneName is the interface name for a scope id, or its number (which the net package
// also accepts as a zone) when no interface has it.
func zoneName(index uint32) string {
	var name string
	zoneLookup(func() bool { name = zones.byIndex[index]; return name != "" })
	if name == "" {
		return strconv.FormatUint(uint64(index), 10)
	}
	return name
}

// zoneIndex is the scope id for a zone given by interface name or number; 0 if unknown.
func zoneIndex(zone string) uint32 {
	if n, err := strconv.ParseUint(zone, 10, 32); err == nil {
		return uint32(n)
	}
	var index uint32
	zoneLookup(func() bool { index = zones.byName[zone]; return index != 0 })
	return index
}
