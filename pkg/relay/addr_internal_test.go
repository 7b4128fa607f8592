package relay

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"
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
		a, ok := d.peerFor(subject)
		if !ok {
			t.Fatalf("%s refused by a table with room", subject)
		}
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

// TestPeerTableAgainstModel: the table keeps at most maxPeers downlinks. When it is full a
// new one takes the place of the earliest added that the drone never answered, else of the
// least recently heard of those not answered for PeerKeepTime, else it is refused; as a
// plain model of that rule says, over random sequences of datagrams heard and answered at
// random times. A forgotten downlink heard again gets its old address back, and a datagram
// for a forgotten address is dropped and counted.
func TestPeerTableAgainstModel(t *testing.T) {
	const maxPeers = 8
	type entry struct{ added, heard, answered int64 }
	for seed := range uint64(30) {
		d, clock := newTestDroneConn(t, maxPeers)
		hooks := &countHooks{}
		d.cfg.Hooks = hooks
		rng := rand.New(rand.NewPCG(seed, 1))
		model := map[string]*entry{}
		addrs := map[string]netip.AddrPort{}
		added := int64(0)
		// Long steps let answered downlinks age past PeerKeepTime; short ones keep them all
		// young, so that a full table refuses.
		maxStep := int64(20 * time.Second)
		if seed%2 == 1 {
			maxStep = int64(200 * time.Millisecond)
		}
		for step := range 2000 {
			*clock += 1 + rng.Int64N(maxStep) // newTestDroneConn's clock adds 1 per read
			subject := DownlinkSubject("drone-7", "op", fmt.Sprint(rng.IntN(24)))
			if rng.IntN(3) == 0 { // the drone answers a downlink it knows
				if a, ok := addrs[subject]; ok {
					now := *clock + 1
					_ = d.WriteTo([]byte{1}, a)
					if e := model[subject]; e != nil {
						e.answered = now
					}
				}
				continue
			}
			now := *clock + 1
			a, ok := d.peerFor(subject)
			e := model[subject]
			wantOK := true
			if e == nil && len(model) == maxPeers {
				var victim string
				for s, m := range model { // the earliest added never answered
					if m.answered == 0 && (victim == "" || m.added < model[victim].added) {
						victim = s
					}
				}
				if victim == "" { // the least recently heard not answered for PeerKeepTime
					for s, m := range model {
						if now-m.answered >= int64(PeerKeepTime) && (victim == "" || m.heard < model[victim].heard) {
							victim = s
						}
					}
				}
				if victim == "" {
					wantOK = false
				} else {
					delete(model, victim)
				}
			}
			if ok != wantOK {
				t.Fatalf("seed %d step %d: %s accepted %v, the model says %v", seed, step, subject, ok, wantOK)
			}
			if ok {
				if e == nil {
					added++
					e = &entry{added: added}
					model[subject] = e
				}
				e.heard = now
				if prev, seen := addrs[subject]; seen && prev != a {
					t.Fatalf("seed %d step %d: %s came back as %s, was %s", seed, step, subject, a, prev)
				}
				addrs[subject] = a
			}
			if len(d.bySubject) != len(model) || len(d.byAddr) != len(model) {
				t.Fatalf("seed %d step %d: %d/%d entries, model %d", seed, step, len(d.bySubject), len(d.byAddr), len(model))
			}
			for s := range model {
				if d.bySubject[s] == nil {
					t.Fatalf("seed %d step %d: %s forgotten, the model keeps it", seed, step, s)
				}
			}
		}
		for s, a := range addrs {
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
