//go:build linux

package link

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"testing"

	"golang.org/x/sys/unix"
)

// TestPackGroupsSegmentationRuns: which datagrams share one segmented send. A run is
// consecutive datagrams to one destination whose lengths equal the first's; a shorter
// one may end it; an empty datagram, a longer one or another destination starts anew.
func TestPackGroupsSegmentationRuns(t *testing.T) {
	a := netip.MustParseAddrPort("127.0.0.1:1000")
	b := netip.MustParseAddrPort("127.0.0.1:2000")
	type d struct {
		to   netip.AddrPort
		size int
	}
	for _, tc := range []struct {
		name string
		in   []d
		want []int // datagrams per header
	}{
		{"one", []d{{a, 10}}, []int{1}},
		{"equal run", []d{{a, 10}, {a, 10}, {a, 10}}, []int{3}},
		{"shorter ends a run", []d{{a, 10}, {a, 10}, {a, 4}, {a, 4}}, []int{3, 1}},
		{"longer starts a run", []d{{a, 4}, {a, 10}, {a, 10}}, []int{1, 2}},
		{"destination change", []d{{a, 10}, {b, 10}, {b, 10}, {a, 10}}, []int{1, 2, 1}},
		{"empty stands alone", []d{{a, 0}, {a, 0}, {a, 10}, {a, 0}}, []int{1, 1, 1, 1}},
		{"size cap", slices.Repeat([]d{{a, MaxDatagramSize}}, BatchSize), []int{BatchSize}},
		{"larger than a link datagram: never segmented", []d{{a, MaxDatagramSize + 1}, {a, MaxDatagramSize + 1}}, []int{1, 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			chunk := make([]Datagram, len(tc.in))
			for i, x := range tc.in {
				chunk[i] = Datagram{Buf: make([]byte, x.size), Addr: x.to}
			}
			b := newMmsgBatch()
			h := b.pack(chunk, false, true)
			if got := b.segs[:h]; !slices.Equal(got, tc.want) {
				t.Fatalf("runs %v, want %v", got, tc.want)
			}
			without := newMmsgBatch()
			if h := without.pack(chunk, false, false); h != len(chunk) {
				t.Fatalf("without segmentation: %d headers for %d datagrams", h, len(chunk))
			}
		})
	}
}

// TestUDPConnWriteBatchSegmentation: with and without UDP segmentation, random mixes of
// sizes and two destinations arrive as exactly the datagrams sent, in order, each at its
// own destination. Segmentation must never merge or split datagrams on the wire.
func TestUDPConnWriteBatchSegmentation(t *testing.T) {
	probe := listenOrSkip(t, "127.0.0.1:0")
	for _, gso := range []bool{true, false} {
		t.Run(fmt.Sprintf("gso=%v", gso), func(t *testing.T) {
			if gso && !probe.batch.gso.Load() {
				t.Skip("this kernel has no UDP_SEGMENT")
			}
			tx := listenOrSkip(t, "127.0.0.1:0")
			tx.batch.gso.Store(gso)
			rx := []*UDPConn{listenOrSkip(t, "127.0.0.1:0"), listenOrSkip(t, "127.0.0.1:0")}
			rng := rand.New(rand.NewPCG(5, 5))
			var msgs []Datagram
			var want [2][][]byte
			for i := range 300 {
				// Mostly runs of one size to one receiver, sometimes a change.
				to := (i / 17) % 2
				size := []int{64, 64, 64, 200, MaxDatagramSize, 1}[(i/5)%6]
				if rng.IntN(8) == 0 {
					size = rng.IntN(MaxDatagramSize) + 1
				}
				p := make([]byte, size)
				for j := range p {
					p[j] = byte(i*7 + j)
				}
				msgs = append(msgs, Datagram{Buf: p, Addr: rx[to].LocalAddr()})
				want[to] = append(want[to], p)
			}
			if n, err := tx.WriteBatch(msgs); n != len(msgs) || err != nil {
				t.Fatalf("WriteBatch: %d, %v", n, err)
			}
			for r := range rx {
				got, _ := readAll(t, rx[r], len(want[r]))
				for i := range want[r] {
					if !bytes.Equal(got[i], want[r][i]) {
						t.Fatalf("receiver %d, datagram %d: got %d bytes, want %d", r, i, len(got[i]), len(want[r][i]))
					}
				}
			}
		})
	}
}

// TestSockaddrRoundTrip: every address the socket can reach survives putSockaddr and
// parseSockaddr, and IPv4 destinations on a dual-stack socket come back unmapped.
func TestSockaddrRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 9))
	for range 10000 {
		var a16 [16]byte
		for i := range a16 {
			a16[i] = byte(rng.Uint32())
		}
		port := uint16(rng.Uint32())
		v4 := netip.AddrPortFrom(netip.AddrFrom4([4]byte(a16[:4])), port)
		v6 := netip.AddrPortFrom(netip.AddrFrom16(a16), port)
		for _, tc := range []struct {
			to    netip.AddrPort
			inet6 bool
			ok    bool
		}{{v4, false, true}, {v4, true, true}, {v6, true, true}, {v6, false, v6.Addr().Is4In6()}} {
			b := newMmsgBatch()
			n, ok := putSockaddr(&b.names[0], tc.to, tc.inet6)
			if ok != tc.ok {
				t.Fatalf("putSockaddr(%v, inet6=%v) ok=%v", tc.to, tc.inet6, ok)
			}
			if !ok {
				continue
			}
			want := netip.AddrPortFrom(tc.to.Addr().Unmap(), port)
			if got := parseSockaddr(&b.names[0], n); got != want {
				t.Fatalf("%v (inet6=%v) came back as %v", tc.to, tc.inet6, got)
			}
		}
	}
	b := newMmsgBatch()
	if got := parseSockaddr(&b.names[0], 0); got.IsValid() {
		t.Fatalf("an empty address parsed as %v", got)
	}
}

// inLoopbackNetns runs open on a thread in a new network namespace whose loopback is up
// with the given MTU; sockets it opens live there and can then be used from any
// goroutine. It skips where namespaces cannot be made (not root). The thread is never
// returned to the scheduler: it ends with its goroutine.
func inLoopbackNetns(t *testing.T, mtu uint32, open func() error) {
	t.Helper()
	done := make(chan string, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with this goroutine
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			done <- "cannot make a network namespace: " + err.Error()
			return
		}
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM, 0)
		if err != nil {
			done <- err.Error()
			return
		}
		defer unix.Close(fd)
		ifr, err := unix.NewIfreq("lo")
		if err != nil {
			done <- err.Error()
			return
		}
		ifr.SetUint32(mtu)
		if err := unix.IoctlIfreq(fd, unix.SIOCSIFMTU, ifr); err != nil {
			done <- "set MTU: " + err.Error()
			return
		}
		ifr.SetUint16(unix.IFF_UP | unix.IFF_LOOPBACK | unix.IFF_RUNNING)
		if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
			done <- "bring lo up: " + err.Error()
			return
		}
		if err := open(); err != nil {
			done <- err.Error()
			return
		}
		done <- ""
	}()
	if msg := <-done; msg != "" {
		if os.Geteuid() != 0 {
			t.Skip(msg)
		}
		t.Fatal(msg)
	}
}

// TestUDPConnSegmentsOverPathMTU: on a path whose MTU is below a segment (here loopback
// at 1000 bytes, like an IPv4 radio or tunnel link), a segmented send is refused by the
// kernel where single datagrams would be fragmented. WriteBatch must resend unsegmented
// and deliver every datagram, as WriteTo would.
func TestUDPConnSegmentsOverPathMTU(t *testing.T) {
	var rx, tx *UDPConn
	inLoopbackNetns(t, 1000, func() (err error) {
		if rx, err = ListenUDP("127.0.0.1:0"); err != nil {
			return err
		}
		tx, err = ListenUDP("127.0.0.1:0")
		return err
	})
	defer rx.Close()
	defer tx.Close()
	if !tx.batch.gso.Load() {
		t.Skip("this kernel has no UDP_SEGMENT")
	}
	msgs := make([]Datagram, 8)
	for i := range msgs {
		msgs[i] = Datagram{Buf: bytes.Repeat([]byte{byte(i)}, 1100), Addr: rx.LocalAddr()}
	}
	msgs = append(msgs, Datagram{Buf: []byte("small"), Addr: rx.LocalAddr()})
	n, err := tx.WriteBatch(msgs)
	if n != len(msgs) || err != nil {
		t.Fatalf("WriteBatch = %d, %v; want all %d sent", n, err, len(msgs))
	}
	got, _ := readAll(t, rx, len(msgs))
	for i := range msgs {
		if !bytes.Equal(got[i], msgs[i].Buf) {
			t.Fatalf("datagram %d: %d bytes, want %d", i, len(got[i]), len(msgs[i].Buf))
		}
	}
	if !tx.batch.gso.Load() {
		t.Error("one path's MTU turned segmentation off for the whole socket")
	}
}

// TestZoneNames: scope ids and interface names map both ways, as the net package's own
// zone cache does, and unknown ones fall back to the number.
func TestZoneNames(t *testing.T) {
	lo, err := net.InterfaceByName("lo")
	if err != nil {
		t.Skip("no lo interface")
	}
	if got := zoneName(uint32(lo.Index)); got != "lo" {
		t.Errorf("zoneName(%d) = %q, want lo", lo.Index, got)
	}
	if got := zoneIndex("lo"); got != uint32(lo.Index) {
		t.Errorf("zoneIndex(lo) = %d, want %d", got, lo.Index)
	}
	if got := zoneIndex("17"); got != 17 {
		t.Errorf("zoneIndex(17) = %d", got)
	}
	if got := zoneName(987654); got != "987654" {
		t.Errorf("zoneName of an unknown index = %q", got)
	}
	if got := zoneIndex("no-such-interface"); got != 0 {
		t.Errorf("zoneIndex of an unknown name = %d", got)
	}
	// A link-local destination with a named zone survives the round trip.
	b := newMmsgBatch()
	to := netip.AddrPortFrom(netip.MustParseAddr("fe80::1").WithZone("lo"), 9)
	n, ok := putSockaddr(&b.names[0], to, true)
	if !ok {
		t.Fatal("putSockaddr refused a link-local destination")
	}
	if got := parseSockaddr(&b.names[0], n); got != to {
		t.Fatalf("%v came back as %v", to, got)
	}
}
