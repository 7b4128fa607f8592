package relay

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"testing"
)

// newTestDroneConn is a DroneConn without NATS: its address table only.
func newTestDroneConn(t *testing.T, maxPeers int) (*DroneConn, *int64) {
	t.Helper()
	var clock int64
	d := &DroneConn{
		natsConn:  &natsConn{},
		prefix:    DownlinkPrefix("drone-7"),
		maxPeers:  maxPeers,
		now:       func() int64 { clock++; return clock },
		bySubject: map[string]*peer{},
		byAddr:    map[netip.AddrPort]*peer{},
	}
	d.cfg, _ = Config{URLs: []string{"nats://x"}, DroneID: "drone-7"}.withDefaults()
	d.net = [6]byte{0xfd, 1, 2, 3, byte(maxPeers >> 16), byte(maxPeers)}
	for i := range d.key {
		d.key[i] = byte(i * maxPeers)
	}
	return d, &clock
}

// TestSyntheticAddresses: every downlink gets an address of the conn's own /48, the same
// one every time, and no two downlinks share one; no other address is the conn's.
func TestSyntheticAddresses(t *testing.T) {
	d, _ := newTestDroneConn(t, 1<<20)
	other, _ := newTestDroneConn(t, 1<<19)
	seen := map[netip.AddrPort]string{}
	for i := range 10000 {
		subject := DownlinkSubject("drone-7", "alice", fmt.Sprint(i))
		a := d.peerFor(subject)
		if prev, dup := seen[a]; dup {
			t.Fatalf("%s and %s share the address %s", prev, subject, a)
		}
		seen[a] = subject
		if !d.Owns(a) || other.Owns(a) {
			t.Fatalf("%s: owned by its conn %v, by another %v", a, d.Owns(a), other.Owns(a))
		}
		if b := d.addrOf(subject); b != a {
			t.Fatalf("%s: address %s, then %s", subject, a, b)
		}
		if got, ok := d.Subject(a); !ok || got != subject {
			t.Fatalf("Subject(%s) = %q, %v", a, got, ok)
		}
	}
	for _, a := range []string{"127.0.0.1:5000", "[::1]:5000", "[fd00::1]:1", "[::ffff:127.0.0.1]:1", "10.0.0.1:1"} {
		if d.Owns(netip.MustParseAddrPort(a)) {
			t.Errorf("the relay owns %s", a)
		}
	}
	if d.Owns(netip.AddrPort{}) {
		t.Error("the relay owns the zero address")
	}
}

// TestPeerTableAgainstModel: the table keeps at most maxPeers downlinks and forgets the
// least recently heard, as a plain model of recency does; a forgotten downlink heard again
// gets its old address back, and a datagram for a forgotten address is dropped and counted.
func TestPeerTableAgainstModel(t *testing.T) {
	const maxPeers = 8
	for seed := range uint64(20) {
		d, _ := newTestDroneConn(t, maxPeers)
		hooks := &countHooks{}
		d.cfg.Hooks = hooks
		rng := rand.New(rand.NewPCG(seed, 1))
		model := map[string]int{} // subject -> step last heard
		first := map[string]netip.AddrPort{}
		for step := range 500 {
			subject := DownlinkSubject("drone-7", "op", fmt.Sprint(rng.IntN(20)))
			a := d.peerFor(subject)
			if prev, ok := first[subject]; ok && prev != a {
				t.Fatalf("seed %d step %d: %s came back as %s, was %s", seed, step, subject, a, prev)
			}
			first[subject] = a
			if _, ok := model[subject]; !ok && len(model) == maxPeers {
				oldest, when := "", step
				for s, w := range model {
					if w < when {
						oldest, when = s, w
					}
				}
				delete(model, oldest)
			}
			model[subject] = step
			if len(d.bySubject) != len(model) || len(d.byAddr) != len(model) {
				t.Fatalf("seed %d step %d: %d/%d entries, model %d", seed, step, len(d.bySubject), len(d.byAddr), len(model))
			}
			for s := range model {
				if d.bySubject[s] == nil {
					t.Fatalf("seed %d step %d: %s forgotten, the model keeps it", seed, step, s)
				}
			}
		}
		for s, a := range first {
			if _, kept := model[s]; kept {
				continue
			}
			if err := d.WriteTo([]byte{1}, a); !errors.Is(err, errUnknownPeer) {
				t.Fatalf("a datagram for the forgotten %s: %v", s, err)
			}
		}
		if hooks.drops[DropUnknownPeer] == 0 {
			t.Fatal("no unknown_peer drop counted")
		}
	}
}

// countHooks counts drops (single goroutine).
type countHooks struct {
	NopHooks
	drops [numDropReasons]int
}

func (h *countHooks) Dropped(r DropReason) { h.drops[r]++ }
