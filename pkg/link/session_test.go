package link

import (
	"bytes"
	"errors"
	"fmt"
	"testing"
	"time"
)

// sessionPair returns two sessions that talk to each other: a (index 1) sends to b (index 2).
func sessionPair(t testing.TB, window int) (a, b *Session) {
	t.Helper()
	var ka, kb SessionKeys
	for i := range ka.Send {
		ka.Send[i], ka.Recv[i] = byte(i), byte(100+i)
	}
	kb.Send, kb.Recv = ka.Recv, ka.Send
	now := time.Unix(1_700_000_000, 0)
	a, err := NewSession(&ka, 1, 2, window, now)
	if err != nil {
		t.Fatal(err)
	}
	b, err = NewSession(&kb, 2, 1, window, now)
	if err != nil {
		t.Fatal(err)
	}
	return a, b
}

// open parses and opens pkt on s, as an endpoint does.
func open(s *Session, pkt []byte) ([]byte, error) {
	h, err := ParseDataHeader(pkt)
	if err != nil {
		return nil, err
	}
	if h.Receiver != s.local {
		return nil, ErrUnknownSession
	}
	return s.Open(nil, pkt, h, time.Now())
}

func TestSessionRoundTripAndOverhead(t *testing.T) {
	a, b := sessionPair(t, 0)
	for _, size := range []int{1, 64, 1000, MaxPlaintextSize} {
		msg := bytes.Repeat([]byte{0xa5}, size)
		pkt, err := a.Seal(nil, msg, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if over := len(pkt) - len(msg); over != DataOverhead || over > 24 {
			t.Errorf("size %d: overhead %d, want %d", size, over, DataOverhead)
		}
		got, err := open(b, pkt)
		if err != nil || !bytes.Equal(got, msg) {
			t.Fatalf("size %d: open = %v", size, err)
		}
	}
	if _, err := a.Seal(nil, make([]byte, MaxPlaintextSize+1), time.Now()); !errors.Is(err, ErrTooLarge) {
		t.Errorf("oversize seal: %v", err)
	}
	if _, err := a.Seal(nil, nil, time.Now()); !errors.Is(err, ErrTooLarge) {
		t.Errorf("empty seal: %v", err)
	}
}

func TestSessionRejects(t *testing.T) {
	a, b := sessionPair(t, 0)
	// A session with b's indices but other keys: a datagram of one session given to another.
	var ko SessionKeys
	for i := range ko.Recv {
		ko.Recv[i] = 0xee
	}
	other, err := NewSession(&ko, 2, 1, 0, time.Now())
	if err != nil {
		t.Fatal(err)
	}

	pkt, _ := a.Seal(nil, []byte("arm"), time.Now())
	cases := []struct {
		name string
		s    *Session
		pkt  []byte
		want error
	}{
		{"other session's keys", other, pkt, ErrDecrypt},
		{"truncated by one", b, pkt[:len(pkt)-1], ErrDecrypt},
		{"truncated to header", b, pkt[:DataHeaderSize], ErrMalformed},
		{"extended by one", b, append(append([]byte(nil), pkt...), 0), ErrDecrypt},
		{"counter changed", b, func() []byte { p := bytes.Clone(pkt); p[DataHeaderSize-1] ^= 1; return p }(), ErrDecrypt},
		{"genuine", b, pkt, nil},
		{"replayed", b, pkt, ErrReplay},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := open(tc.s, tc.pkt); !errors.Is(err, tc.want) {
				t.Errorf("got %v, want %v", err, tc.want)
			}
		})
	}
}

func TestSessionEveryBitFlipRejected(t *testing.T) {
	a, b := sessionPair(t, 0)
	pkt, _ := a.Seal(nil, []byte("takeoff altitude 30"), time.Now())
	for bit := range len(pkt) * 8 {
		p := bytes.Clone(pkt)
		p[bit/8] ^= 1 << (bit % 8)
		if _, err := open(b, p); err == nil {
			t.Fatalf("bit %d flipped: accepted", bit)
		}
	}
	// The genuine datagram still opens: no forged flip moved the replay window.
	if _, err := open(b, pkt); err != nil {
		t.Fatalf("genuine datagram after forgeries: %v", err)
	}
}

func TestForgeryDoesNotMoveWindow(t *testing.T) {
	a, b := sessionPair(t, 0)
	first, _ := a.Seal(nil, []byte("first"), time.Now())
	// A forged datagram far ahead (counter 1e6, garbage tag) must not move the window.
	forged := appendDataHeader(nil, 2, 1_000_000)
	forged = append(forged, bytes.Repeat([]byte{1}, 20)...)
	if _, err := open(b, forged); !errors.Is(err, ErrDecrypt) {
		t.Fatalf("forged: %v", err)
	}
	if _, err := open(b, first); err != nil {
		t.Fatalf("counter 0 after a forged far jump: %v", err)
	}
}

func TestSessionCounterNeverWraps(t *testing.T) {
	a, b := sessionPair(t, 0)
	a.sendCounter = RejectAfterMessages - 1
	pkt, err := a.Seal(nil, []byte("last"), time.Now())
	if err != nil {
		t.Fatalf("last counter: %v", err)
	}
	if _, err := a.Seal(nil, []byte("one too many"), time.Now()); !errors.Is(err, ErrSessionExpired) {
		t.Fatalf("past the limit: %v", err)
	}
	if _, err := open(b, pkt); err != nil {
		t.Fatalf("open last counter: %v", err)
	}
	// Counter 2^32-1 is never accepted, whatever its tag.
	p := appendDataHeader(nil, 2, 1<<32-1)
	p = append(p, make([]byte, 20)...)
	if _, err := open(b, p); !errors.Is(err, ErrSessionExpired) {
		t.Fatalf("counter 2^32-1: %v", err)
	}
	if !a.needsRekeyAfter(time.Now(), time.Hour) {
		t.Error("a session at the counter limit does not ask for a rekey")
	}
}

func TestSessionReorderedWithinWindow(t *testing.T) {
	a, b := sessionPair(t, 0)
	const n = 3000
	pkts := make([][]byte, n)
	for i := range pkts {
		pkts[i], _ = a.Seal(nil, []byte{byte(i)}, time.Now())
	}
	// Deliver newest first within the 2048 window: all accepted; older ones rejected.
	for i := n - 1; i >= 0; i-- {
		_, err := open(b, pkts[i])
		inWindow := n-1-i < 2048
		if inWindow && err != nil {
			t.Fatalf("packet %d inside the window rejected: %v", i, err)
		}
		if !inWindow && !errors.Is(err, ErrReplay) {
			t.Fatalf("packet %d outside the window: %v", i, err)
		}
	}
}

func TestSessionZeroAllocs(t *testing.T) {
	a, b := sessionPair(t, 0)
	msg := make([]byte, 64)
	out := make([]byte, 0, MaxDatagramSize)
	plain := make([]byte, 0, MaxDatagramSize)
	now := time.Now()
	allocs := testing.AllocsPerRun(1000, func() {
		pkt, err := a.Seal(out[:0], msg, now)
		if err != nil {
			t.Fatal(err)
		}
		h, _ := ParseDataHeader(pkt)
		if _, err := b.Open(plain[:0], pkt, h, now); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Errorf("seal+open allocates %v per packet", allocs)
	}
}

var payloadSizes = []int{64, 256, 1200 - DataOverhead - 1}

func BenchmarkSessionSeal(b *testing.B) {
	for _, size := range payloadSizes {
		b.Run(fmt.Sprintf("%dB", size), func(b *testing.B) {
			a, _ := sessionPair(b, 0)
			msg := make([]byte, size)
			out := make([]byte, 0, MaxDatagramSize)
			now := time.Now()
			b.ReportAllocs()
			b.SetBytes(int64(size))
			for b.Loop() {
				if _, err := a.Seal(out[:0], msg, now); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkSessionOpen(b *testing.B) {
	for _, size := range payloadSizes {
		b.Run(fmt.Sprintf("%dB", size), func(b *testing.B) {
			a, r := sessionPair(b, 0)
			const ring = 1024
			pkts := make([][]byte, ring)
			for i := range pkts {
				pkts[i], _ = a.Seal(nil, make([]byte, size), time.Now())
			}
			plain := make([]byte, 0, MaxDatagramSize)
			now := time.Now()
			b.ReportAllocs()
			b.SetBytes(int64(size))
			i := 0
			for b.Loop() {
				if i%ring == 0 {
					r.filter.Reset() // replay the ring of genuine datagrams
				}
				pkt := pkts[i%ring]
				i++
				h, _ := ParseDataHeader(pkt)
				if _, err := r.Open(plain[:0], pkt, h, now); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkPacketRoundTrip is the whole per-packet cost: seal, parse, open, replay check.
func BenchmarkPacketRoundTrip(b *testing.B) {
	for _, size := range payloadSizes {
		b.Run(fmt.Sprintf("%dB", size), func(b *testing.B) {
			a, r := sessionPair(b, 0)
			msg := make([]byte, size)
			out := make([]byte, 0, MaxDatagramSize)
			plain := make([]byte, 0, MaxDatagramSize)
			now := time.Now()
			b.ReportAllocs()
			b.SetBytes(int64(size))
			for b.Loop() {
				pkt, err := a.Seal(out[:0], msg, now)
				if err != nil {
					b.Fatal(err)
				}
				h, err := ParseDataHeader(pkt)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := r.Open(plain[:0], pkt, h, now); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
