package fakenet

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"math/bits"
	"net"
	"net/netip"
	"os"
	"runtime"
	"sync"
	"testing"
	"time"
)

// packetConn is a copy of pkg/link's PacketConn, which this package must not import.
type packetConn interface {
	ReadFrom(b []byte) (n int, addr netip.AddrPort, err error)
	WriteTo(b []byte, addr netip.AddrPort) error
	LocalAddr() netip.AddrPort
	Close() error
}

var _ packetConn = (*Conn)(nil)

var (
	addrA = netip.MustParseAddrPort("10.0.0.1:1000")
	addrB = netip.MustParseAddrPort("10.0.0.2:2000")
	addrC = netip.MustParseAddrPort("10.0.0.3:3000")
)

// guard bounds every blocking read so a broken implementation fails instead of hanging.
const guard = 5 * time.Second

func newNet(t testing.TB, cfg Config) *Network {
	t.Helper()
	n, err := New(cfg)
	if err != nil {
		t.Fatalf("New(%+v): %v", cfg, err)
	}
	t.Cleanup(func() { n.Close() })
	return n
}

func listen(t testing.TB, n *Network, a netip.AddrPort) *Conn {
	t.Helper()
	c, err := n.Listen(a)
	if err != nil {
		t.Fatalf("Listen(%v): %v", a, err)
	}
	return c
}

func seqPayload(i int) []byte {
	b := make([]byte, 16)
	binary.BigEndian.PutUint64(b, uint64(i))
	binary.BigEndian.PutUint64(b[8:], ^uint64(i))
	return b
}

func mustWrite(t testing.TB, c *Conn, b []byte, to netip.AddrPort) {
	t.Helper()
	if err := c.WriteTo(b, to); err != nil {
		t.Fatalf("WriteTo(%v): %v", to, err)
	}
}

// read reads one datagram within guard.
func read(t testing.TB, c *Conn) ([]byte, netip.AddrPort) {
	t.Helper()
	if err := c.SetReadDeadline(time.Now().Add(guard)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 2048)
	n, from, err := c.ReadFrom(buf)
	if err != nil {
		t.Fatalf("ReadFrom: %v", err)
	}
	return buf[:n], from
}

// drain reads until no datagram arrives for quiet.
func drain(t testing.TB, c *Conn, quiet time.Duration) [][]byte {
	t.Helper()
	// A deadline that passed before ReadFrom runs times out even with datagrams queued, as
	// on a real socket; on a loaded machine (the race detector, parallel packages) a few
	// milliseconds between SetReadDeadline and ReadFrom happen, so never wait less than this.
	quiet = max(quiet, 200*time.Millisecond)
	var out [][]byte
	buf := make([]byte, 2048)
	for {
		if err := c.SetReadDeadline(time.Now().Add(quiet)); err != nil {
			t.Fatal(err)
		}
		n, _, err := c.ReadFrom(buf)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return out
		}
		if err != nil {
			t.Fatalf("ReadFrom: %v", err)
		}
		out = append(out, bytes.Clone(buf[:n]))
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		ok   bool
	}{
		{"zero", Config{}, true},
		{"all max", Config{Loss: 1, Reorder: 1, Duplicate: 1, Corrupt: 1, Delay: time.Second, Jitter: time.Second, QueueLen: 1}, true},
		{"loss negative", Config{Loss: -0.1}, false},
		{"loss above one", Config{Loss: 1.1}, false},
		{"reorder NaN", Config{Reorder: math.NaN()}, false},
		{"duplicate above one", Config{Duplicate: 2}, false},
		{"corrupt negative", Config{Corrupt: -1}, false},
		{"delay negative", Config{Delay: -time.Millisecond}, false},
		{"jitter negative", Config{Jitter: -1}, false},
		{"reorder timeout negative", Config{ReorderTimeout: -1}, false},
		{"queue negative", Config{QueueLen: -1}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if (err == nil) != tt.ok {
				t.Fatalf("Validate() = %v, want ok=%v", err, tt.ok)
			}
			n, err := New(tt.cfg)
			if (err == nil) != tt.ok {
				t.Fatalf("New() error = %v, want ok=%v", err, tt.ok)
			}
			if n != nil {
				n.Close()
			}
		})
	}
}

func TestCleanDeliveryOrderAndContent(t *testing.T) {
	n := newNet(t, Config{})
	a, b := listen(t, n, addrA), listen(t, n, addrB)
	const count = 500
	buf := make([]byte, 0, 32)
	for i := range count {
		buf = append(buf[:0], seqPayload(i)...)
		mustWrite(t, a, buf, addrB)
		buf[0] ^= 0xff // reusing the buffer must not affect what was sent
	}
	for i := range count {
		got, from := read(t, b)
		if from != addrA {
			t.Fatalf("datagram %d from %v, want %v", i, from, addrA)
		}
		if !bytes.Equal(got, seqPayload(i)) {
			t.Fatalf("datagram %d = %x, want %x", i, got, seqPayload(i))
		}
	}
	// And back the other way, including an empty datagram.
	mustWrite(t, b, nil, addrA)
	if got, from := read(t, a); len(got) != 0 || from != addrB {
		t.Fatalf("empty datagram: got %x from %v", got, from)
	}
	st := n.Stats()
	want := Stats{Sent: count + 1, Delivered: count + 1}
	if st != want {
		t.Fatalf("Stats = %+v, want %+v", st, want)
	}
}

func TestLoss(t *testing.T) {
	tests := []struct {
		name     string
		loss     float64
		min, max float64
	}{
		{"none", 0, 0, 0},
		{"all", 1, 1, 1},
		{"30%", 0.3, 0.27, 0.33},
	}
	const count = 10000
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := newNet(t, Config{Seed: 42, Loss: tt.loss, QueueLen: count})
			a, b := listen(t, n, addrA), listen(t, n, addrB)
			for i := range count {
				mustWrite(t, a, seqPayload(i), addrB)
			}
			st := n.Stats()
			if st.Sent != count || st.Delivered+st.Dropped != count {
				t.Fatalf("Stats = %+v: want Sent=%d = Delivered+Dropped", st, count)
			}
			frac := float64(st.Dropped) / count
			if frac < tt.min || frac > tt.max {
				t.Fatalf("drop fraction %.4f, want in [%.2f, %.2f]", frac, tt.min, tt.max)
			}
			// Read exactly what was delivered (generous deadline per read, so a loaded
			// machine cannot cut it short), then make sure nothing more is queued.
			buf := make([]byte, 2048)
			for i := range st.Delivered {
				b.SetReadDeadline(time.Now().Add(5 * time.Second))
				if _, _, err := b.ReadFrom(buf); err != nil {
					t.Fatalf("read %d of %d delivered datagrams: %v", i, st.Delivered, err)
				}
			}
			if extra := len(drain(t, b, 10*time.Millisecond)); extra != 0 {
				t.Fatalf("%d datagrams beyond Stats.Delivered = %d", extra, st.Delivered)
			}
		})
	}
}

func TestDuplicate(t *testing.T) {
	n := newNet(t, Config{Seed: 1, Duplicate: 1})
	a, b := listen(t, n, addrA), listen(t, n, addrB)
	const count = 50
	for i := range count {
		mustWrite(t, a, seqPayload(i), addrB)
	}
	for i := range count {
		for copyNo := range 2 {
			if got, _ := read(t, b); !bytes.Equal(got, seqPayload(i)) {
				t.Fatalf("datagram %d copy %d = %x, want %x", i, copyNo, got, seqPayload(i))
			}
		}
	}
	if st := n.Stats(); st.Duplicated != count || st.Delivered != 2*count {
		t.Fatalf("Stats = %+v, want Duplicated=%d Delivered=%d", st, count, 2*count)
	}
}

func TestCorruptFlipsExactlyOneBit(t *testing.T) {
	n := newNet(t, Config{Seed: 7, Corrupt: 1})
	a, b := listen(t, n, addrA), listen(t, n, addrB)
	const count = 300
	sizes := []int{1, 2, 16, 100, 1400}
	for i := range count {
		p := bytes.Repeat([]byte{byte(i)}, sizes[i%len(sizes)])
		mustWrite(t, a, p, addrB)
		got, _ := read(t, b)
		if len(got) != len(p) {
			t.Fatalf("datagram %d: length %d, want %d", i, len(got), len(p))
		}
		flipped := 0
		for j := range p {
			flipped += bits.OnesCount8(p[j] ^ got[j])
		}
		if flipped != 1 {
			t.Fatalf("datagram %d: %d bits flipped, want 1", i, flipped)
		}
	}
	if st := n.Stats(); st.Corrupted != count {
		t.Fatalf("Corrupted = %d, want %d", st.Corrupted, count)
	}
}

func TestReorder(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
	}{
		{"instant", Config{Seed: 3, Reorder: 0.2}},
		{"delayed", Config{Seed: 3, Reorder: 0.2, Delay: time.Millisecond}},
		{"always", Config{Seed: 3, Reorder: 1, ReorderTimeout: time.Millisecond}}, // timeout-only release: no loss
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := newNet(t, tt.cfg)
			a, b := listen(t, n, addrA), listen(t, n, addrB)
			count := 1000
			if tt.cfg.Reorder == 1 {
				count = 50
			}
			for i := range count {
				mustWrite(t, a, seqPayload(i), addrB)
			}
			seen := make([]bool, count)
			inversions := 0
			prev := -1
			for range count {
				got, _ := read(t, b)
				i := int(binary.BigEndian.Uint64(got))
				if i < 0 || i >= count || seen[i] {
					t.Fatalf("unexpected or repeated datagram %d", i)
				}
				seen[i] = true
				if i < prev {
					inversions++
				}
				prev = i
			}
			st := n.Stats()
			if st.Reordered == 0 || st.Delivered != uint64(count) {
				t.Fatalf("Stats = %+v, want Reordered > 0 and Delivered = %d", st, count)
			}
			if tt.cfg.Reorder < 1 && inversions == 0 {
				t.Fatalf("no out-of-order delivery in %d datagrams (Reordered=%d)", count, st.Reordered)
			}
			t.Logf("%d inversions, %d held", inversions, st.Reordered)
		})
	}
}

func TestDelay(t *testing.T) {
	tests := []struct {
		name          string
		delay, jitter time.Duration
	}{
		{"fixed", 30 * time.Millisecond, 0},
		{"jitter", 20 * time.Millisecond, 10 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := newNet(t, Config{Seed: 5, Delay: tt.delay, Jitter: tt.jitter})
			a, b := listen(t, n, addrA), listen(t, n, addrB)
			const count = 20
			start := time.Now()
			for i := range count {
				mustWrite(t, a, seqPayload(i), addrB)
			}
			for i := range count {
				got, _ := read(t, b)
				if el := time.Since(start); el < tt.delay {
					t.Fatalf("datagram after %v, want >= %v", el, tt.delay)
				}
				// Without jitter a path is FIFO.
				if tt.jitter == 0 && !bytes.Equal(got, seqPayload(i)) {
					t.Fatalf("datagram %d out of order: %x", i, got)
				}
			}
		})
	}
}

func TestQueueOverflow(t *testing.T) {
	n := newNet(t, Config{QueueLen: 4})
	a, b := listen(t, n, addrA), listen(t, n, addrB)
	for i := range 10 {
		mustWrite(t, a, seqPayload(i), addrB) // must not block
	}
	if st := n.Stats(); st.Delivered != 4 || st.QueueFull != 6 {
		t.Fatalf("Stats = %+v, want Delivered=4 QueueFull=6", st)
	}
	for i := range 4 {
		if got, _ := read(t, b); !bytes.Equal(got, seqPayload(i)) {
			t.Fatalf("datagram %d = %x", i, got)
		}
	}
	if extra := drain(t, b, 5*time.Millisecond); len(extra) != 0 {
		t.Fatalf("%d datagrams beyond the queue length", len(extra))
	}
}

func TestNoListener(t *testing.T) {
	n := newNet(t, Config{})
	a := listen(t, n, addrA)
	if err := a.WriteTo([]byte("x"), addrC); err != nil {
		t.Fatalf("WriteTo with no listener: %v, want nil (UDP semantics)", err)
	}
	if st := n.Stats(); st.NoListener != 1 || st.Delivered != 0 {
		t.Fatalf("Stats = %+v, want NoListener=1", st)
	}
}

func TestListen(t *testing.T) {
	n := newNet(t, Config{})
	a := listen(t, n, addrA)
	if _, err := n.Listen(addrA); !errors.Is(err, ErrAddrInUse) {
		t.Fatalf("second Listen(%v) = %v, want ErrAddrInUse", addrA, err)
	}
	if _, err := n.Listen(netip.AddrPort{}); err == nil {
		t.Fatal("Listen(invalid) succeeded")
	}
	a.Close()
	a = listen(t, n, addrA) // free again after Close

	ip := netip.MustParseAddr("192.168.1.1")
	ports := map[uint16]bool{}
	for range 3 {
		c := listen(t, n, netip.AddrPortFrom(ip, 0))
		la := c.LocalAddr()
		if la.Addr() != ip || la.Port() == 0 || ports[la.Port()] {
			t.Fatalf("port-0 Listen gave %v (seen %v)", la, ports)
		}
		ports[la.Port()] = true
	}
	// An allocated port must skip a taken one.
	taken := listen(t, n, netip.AddrPortFrom(ip, n.nextPort))
	if c := listen(t, n, netip.AddrPortFrom(ip, 0)); c.LocalAddr() == taken.LocalAddr() {
		t.Fatalf("allocated a taken port %v", c.LocalAddr())
	}
	// The allocated address is reachable.
	c := listen(t, n, netip.MustParseAddrPort("[fd00::1]:0"))
	mustWrite(t, a, []byte("hi"), c.LocalAddr())
	if got, _ := read(t, c); string(got) != "hi" {
		t.Fatalf("got %q", got)
	}
}

func TestCloseUnblocksRead(t *testing.T) {
	n := newNet(t, Config{})
	b := listen(t, n, addrB)
	errc := make(chan error, 1)
	go func() {
		_, _, err := b.ReadFrom(make([]byte, 10))
		errc <- err
	}()
	time.Sleep(10 * time.Millisecond) // let the reader block (not required for correctness)
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errc:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("ReadFrom after Close = %v, want net.ErrClosed", err)
		}
	case <-time.After(guard):
		t.Fatal("ReadFrom still blocked after Close")
	}
	if err := b.Close(); err != nil {
		t.Fatalf("second Close = %v", err)
	}
	if _, _, err := b.ReadFrom(make([]byte, 10)); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("ReadFrom on closed conn = %v", err)
	}
	if err := b.WriteTo([]byte("x"), addrA); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("WriteTo on closed conn = %v", err)
	}
	if err := b.SetReadDeadline(time.Now()); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("SetReadDeadline on closed conn = %v", err)
	}
}

func TestCloseWithQueuedData(t *testing.T) {
	n := newNet(t, Config{})
	a, b := listen(t, n, addrA), listen(t, n, addrB)
	mustWrite(t, a, []byte("queued"), addrB)
	b.Close()
	if _, _, err := b.ReadFrom(make([]byte, 10)); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("ReadFrom on closed conn with queued data = %v", err)
	}
	mustWrite(t, a, []byte("late"), addrB)
	if st := n.Stats(); st.NoListener != 1 {
		t.Fatalf("Stats = %+v, want NoListener=1 after the receiver closed", st)
	}
}

func TestNetworkClose(t *testing.T) {
	n := newNet(t, Config{Delay: time.Hour})
	a, b := listen(t, n, addrA), listen(t, n, addrB)
	mustWrite(t, a, []byte("never"), addrB)
	errc := make(chan error, 1)
	go func() {
		_, _, err := b.ReadFrom(make([]byte, 10))
		errc <- err
	}()
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errc:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("ReadFrom after Network.Close = %v", err)
		}
	case <-time.After(guard):
		t.Fatal("ReadFrom still blocked after Network.Close")
	}
	if err := a.WriteTo([]byte("x"), addrB); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("WriteTo after Network.Close = %v", err)
	}
	if _, err := n.Listen(addrC); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Listen after Network.Close = %v", err)
	}
	if err := n.Inject(Datagram{From: addrC, To: addrB}); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Inject after Network.Close = %v", err)
	}
	if err := n.SetConfig(Config{}); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("SetConfig after Network.Close = %v", err)
	}
	if err := n.Close(); err != nil {
		t.Fatalf("second Close = %v", err)
	}
}

func TestReadDeadline(t *testing.T) {
	n := newNet(t, Config{})
	a, b := listen(t, n, addrA), listen(t, n, addrB)
	start := time.Now() // before the deadline is set: it is measured from here
	if err := b.SetReadDeadline(start.Add(20 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	_, _, err := b.ReadFrom(make([]byte, 10))
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("ReadFrom past deadline = %v, want os.ErrDeadlineExceeded", err)
	}
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("error %v is not a net.Error timeout", err)
	}
	if el := time.Since(start); el < 20*time.Millisecond {
		t.Fatalf("deadline fired after %v", el)
	}
	// A past deadline fails even with data queued; clearing it reads the data.
	mustWrite(t, a, []byte("x"), addrB)
	if _, _, err := b.ReadFrom(make([]byte, 10)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("ReadFrom with expired deadline = %v", err)
	}
	if err := b.SetReadDeadline(time.Time{}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := b.ReadFrom(make([]byte, 10)); err != nil {
		t.Fatalf("ReadFrom after clearing deadline = %v", err)
	}
	// Moving a deadline into the past unblocks a pending read.
	if err := b.SetReadDeadline(time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() {
		_, _, err := b.ReadFrom(make([]byte, 10))
		errc <- err
	}()
	time.Sleep(5 * time.Millisecond)
	if err := b.SetReadDeadline(time.Now().Add(-time.Second)); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errc:
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("pending ReadFrom = %v", err)
		}
	case <-time.After(guard):
		t.Fatal("pending ReadFrom not unblocked by a past deadline")
	}
}

func TestTruncation(t *testing.T) {
	n := newNet(t, Config{})
	a, b := listen(t, n, addrA), listen(t, n, addrB)
	mustWrite(t, a, []byte("0123456789"), addrB)
	mustWrite(t, a, []byte("ab"), addrB)
	small := make([]byte, 4)
	k, from, err := b.ReadFrom(small)
	if err != nil || k != len(small) || string(small) != "0123" || from != addrA {
		t.Fatalf("ReadFrom = %d %q %v %v, want 4 \"0123\" from %v", k, small[:k], from, err, addrA)
	}
	// The rest of a truncated datagram is discarded.
	k, _, err = b.ReadFrom(small)
	if err != nil || string(small[:k]) != "ab" {
		t.Fatalf("next ReadFrom = %q %v, want \"ab\"", small[:k], err)
	}
}

func TestIntercept(t *testing.T) {
	tests := []struct {
		name string
		hook func(d Datagram) []Datagram
		// want maps receiver address to expected payloads, in order.
		want     map[netip.AddrPort][]string
		wantFrom netip.AddrPort
	}{
		{
			name: "drop",
			hook: func(Datagram) []Datagram { return nil },
			want: map[netip.AddrPort][]string{addrB: nil, addrC: nil},
		},
		{
			name: "modify",
			hook: func(d Datagram) []Datagram {
				d.Payload[0] = 'X'
				return []Datagram{d}
			},
			want:     map[netip.AddrPort][]string{addrB: {"Xello"}, addrC: nil},
			wantFrom: addrA,
		},
		{
			name: "redirect and spoof",
			hook: func(d Datagram) []Datagram {
				d.To, d.From = addrC, netip.MustParseAddrPort("6.6.6.6:666")
				return []Datagram{d}
			},
			want:     map[netip.AddrPort][]string{addrB: nil, addrC: {"hello"}},
			wantFrom: netip.MustParseAddrPort("6.6.6.6:666"),
		},
		{
			name: "duplicate and append",
			hook: func(d Datagram) []Datagram {
				e := d
				e.Payload = append(bytes.Clone(d.Payload), '!')
				return []Datagram{d, e, d}
			},
			want:     map[netip.AddrPort][]string{addrB: {"hello", "hello!", "hello"}, addrC: nil},
			wantFrom: addrA,
		},
		{
			name:     "removed",
			hook:     nil,
			want:     map[netip.AddrPort][]string{addrB: {"hello"}, addrC: nil},
			wantFrom: addrA,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := newNet(t, Config{})
			a := listen(t, n, addrA)
			recv := map[netip.AddrPort]*Conn{addrB: listen(t, n, addrB), addrC: listen(t, n, addrC)}
			var seen []Datagram
			if tt.hook != nil {
				n.Intercept(func(d Datagram) []Datagram {
					seen = append(seen, Datagram{d.From, d.To, bytes.Clone(d.Payload)})
					return tt.hook(d)
				})
			} else {
				n.Intercept(func(Datagram) []Datagram { return nil })
				n.Intercept(nil)
			}
			mustWrite(t, a, []byte("hello"), addrB)
			if tt.hook != nil && (len(seen) != 1 || seen[0].From != addrA || seen[0].To != addrB || string(seen[0].Payload) != "hello") {
				t.Fatalf("hook saw %+v", seen)
			}
			for addr, want := range tt.want {
				for _, w := range want {
					got, from := read(t, recv[addr])
					if string(got) != w || from != tt.wantFrom {
						t.Fatalf("%v got %q from %v, want %q from %v", addr, got, from, w, tt.wantFrom)
					}
				}
				if extra := drain(t, recv[addr], 5*time.Millisecond); len(extra) != 0 {
					t.Fatalf("%v got unexpected %q", addr, extra)
				}
			}
		})
	}
}

func TestInterceptThenImpair(t *testing.T) {
	// Hook output goes through impairments; the hook may call back into the network.
	n := newNet(t, Config{Loss: 1})
	a, b := listen(t, n, addrA), listen(t, n, addrB)
	n.Intercept(func(d Datagram) []Datagram {
		_ = n.Stats()
		if err := n.Inject(Datagram{From: d.From, To: d.To, Payload: []byte("injected")}); err != nil {
			t.Errorf("Inject from hook: %v", err)
		}
		return []Datagram{d}
	})
	mustWrite(t, a, []byte("lost"), addrB)
	if got, _ := read(t, b); string(got) != "injected" {
		t.Fatalf("got %q", got)
	}
	if st := n.Stats(); st.Dropped != 1 || st.Injected != 1 || st.Delivered != 1 {
		t.Fatalf("Stats = %+v", st)
	}
}

func TestInject(t *testing.T) {
	n := newNet(t, Config{Loss: 1, QueueLen: 1}) // impairments must not apply
	b := listen(t, n, addrB)
	forged := netip.MustParseAddrPort("203.0.113.9:4444")
	payload := []byte("replayed")
	if err := n.Inject(Datagram{From: forged, To: addrB, Payload: payload}); err != nil {
		t.Fatalf("Inject: %v", err)
	}
	payload[0] = 'X' // Inject copies
	if err := n.Inject(Datagram{From: forged, To: addrB, Payload: payload}); !errors.Is(err, ErrQueueFull) {
		t.Fatalf("Inject into full queue = %v, want ErrQueueFull", err)
	}
	if err := n.Inject(Datagram{From: forged, To: addrC}); !errors.Is(err, ErrNoListener) {
		t.Fatalf("Inject to nobody = %v, want ErrNoListener", err)
	}
	if err := n.Inject(Datagram{From: forged}); err == nil {
		t.Fatal("Inject to invalid address succeeded")
	}
	got, from := read(t, b)
	if string(got) != "replayed" || from != forged {
		t.Fatalf("got %q from %v, want \"replayed\" from %v", got, from, forged)
	}
	if st := n.Stats(); st.Injected != 3 || st.Delivered != 1 || st.QueueFull != 1 || st.NoListener != 1 || st.Dropped != 0 {
		t.Fatalf("Stats = %+v", st)
	}
}

func TestSetConfig(t *testing.T) {
	n := newNet(t, Config{Seed: 9, Loss: 1})
	a, b := listen(t, n, addrA), listen(t, n, addrB)
	for i := range 10 {
		mustWrite(t, a, seqPayload(i), addrB)
	}
	if st := n.Stats(); st.Dropped != 10 || st.Delivered != 0 {
		t.Fatalf("lossy phase Stats = %+v", st)
	}
	if err := n.SetConfig(Config{Loss: 2}); err == nil {
		t.Fatal("SetConfig accepted Loss=2")
	}
	if n.Config().Loss != 1 {
		t.Fatal("rejected config was applied")
	}
	cfg := n.Config()
	cfg.Loss = 0
	cfg.Duplicate = 1
	if err := n.SetConfig(cfg); err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		mustWrite(t, a, seqPayload(i), addrB)
	}
	if got := drain(t, b, 5*time.Millisecond); len(got) != 20 {
		t.Fatalf("clean phase delivered %d datagrams, want 20", len(got))
	}
}

// fate runs a fixed send sequence and returns what arrived and the stats.
func fate(t *testing.T, cfg Config) ([][]byte, Stats) {
	n := newNet(t, cfg)
	a, b := listen(t, n, addrA), listen(t, n, addrB)
	for i := range 2000 {
		mustWrite(t, a, seqPayload(i), addrB)
	}
	got := drain(t, b, 5*time.Millisecond)
	n.Close()
	return got, n.Stats()
}

func TestDeterministic(t *testing.T) {
	cfg := Config{Seed: 1234, Loss: 0.2, Duplicate: 0.2, Corrupt: 0.2, QueueLen: 5000}
	got1, st1 := fate(t, cfg)
	got2, st2 := fate(t, cfg)
	if st1 != st2 || len(got1) != len(got2) {
		t.Fatalf("same seed, different fates: %+v vs %+v", st1, st2)
	}
	for i := range got1 {
		if !bytes.Equal(got1[i], got2[i]) {
			t.Fatalf("same seed, datagram %d differs: %x vs %x", i, got1[i], got2[i])
		}
	}
	cfg.Seed++
	if _, st3 := fate(t, cfg); st3 == st1 {
		t.Fatalf("different seeds gave identical stats %+v", st1)
	}
}

func TestConcurrentWriters(t *testing.T) {
	n := newNet(t, Config{Seed: 11, Delay: time.Millisecond, Jitter: time.Millisecond, Reorder: 0.1, Duplicate: 0.1, QueueLen: 10000})
	b := listen(t, n, addrB)
	const writers, per = 8, 300
	var wg sync.WaitGroup
	for w := range writers {
		c := listen(t, n, netip.AddrPortFrom(netip.MustParseAddr("10.1.0.1"), uint16(5000+w)))
		wg.Go(func() {
			for i := range per {
				if err := c.WriteTo(seqPayload(i), addrB); err != nil {
					t.Error(err)
					return
				}
				if i%50 == 0 {
					_ = n.Stats()
					_ = n.SetConfig(n.Config())
				}
			}
		})
	}
	wg.Wait()
	// Delayed deliveries may still be in flight on a loaded machine: wait (bounded) until
	// every copy was delivered before counting what arrived.
	deadline := time.Now().Add(10 * time.Second)
	for st := n.Stats(); st.Delivered != writers*per+st.Duplicated && time.Now().Before(deadline); st = n.Stats() {
		time.Sleep(10 * time.Millisecond)
	}
	got := drain(t, b, 50*time.Millisecond)
	st := n.Stats()
	if st.Sent != writers*per || uint64(len(got)) != st.Delivered || st.Delivered != writers*per+st.Duplicated {
		t.Fatalf("read %d, Stats = %+v", len(got), st)
	}
}

func TestNoGoroutineLeak(t *testing.T) {
	before := runtime.NumGoroutine()
	for range 3 {
		n, err := New(Config{Seed: 2, Delay: 50 * time.Millisecond, Jitter: 5 * time.Millisecond, Reorder: 0.5})
		if err != nil {
			t.Fatal(err)
		}
		a, _ := n.Listen(addrA)
		b, _ := n.Listen(addrB)
		_ = b.SetReadDeadline(time.Now().Add(time.Hour))
		var wg sync.WaitGroup
		wg.Go(func() {
			buf := make([]byte, 64)
			for {
				if _, _, err := b.ReadFrom(buf); err != nil {
					return
				}
			}
		})
		for i := range 100 {
			_ = a.WriteTo(seqPayload(i), addrB)
		}
		n.Close() // events are still pending: the scheduler must stop
		readerDone := make(chan struct{})
		go func() { wg.Wait(); close(readerDone) }()
		select {
		case <-readerDone:
		case <-time.After(guard):
			t.Fatal("reader still blocked after Network.Close")
		}
	}
	var after int
	for range 100 {
		if after = runtime.NumGoroutine(); after <= before {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	buf := make([]byte, 1<<16)
	t.Fatalf("goroutines: %d before, %d after Close\n%s", before, after, buf[:runtime.Stack(buf, true)])
}

func BenchmarkWriteRead(b *testing.B) {
	n := newNet(b, Config{})
	a, r := listen(b, n, addrA), listen(b, n, addrB)
	payload := make([]byte, 128)
	buf := make([]byte, 2048)
	b.SetBytes(int64(len(payload)))
	b.ReportAllocs()
	for b.Loop() {
		if err := a.WriteTo(payload, addrB); err != nil {
			b.Fatal(err)
		}
		if _, _, err := r.ReadFrom(buf); err != nil {
			b.Fatal(err)
		}
	}
}
