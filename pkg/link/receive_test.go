package link

import (
	"bytes"
	"context"
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"

	"github.com/dronelink/dronelink/pkg/link/fakenet"
)

// directServer is a Server whose receive path the test drives by hand: no reader goroutine.
func directServer(t testing.TB) (*Server, *testAuth, *countingDroneKey, *Counters) {
	t.Helper()
	s, _, auth, key, hooks := directServerOn(t, nil)
	return s, auth, key, hooks
}

// directServerOn is directServer with its fake network (where an operator can listen for
// the drone's answers) and the config changed by mutate, if not nil.
func directServerOn(t testing.TB, mutate func(*ServerConfig)) (*Server, *fakenet.Network, *testAuth, *countingDroneKey, *Counters) {
	t.Helper()
	testKeys(t)
	n, err := fakenet.New(fakenet.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	conn, err := n.Listen(droneAddr)
	if err != nil {
		t.Fatal(err)
	}
	auth := newTestAuth()
	auth.add("alice", "alice-pw", RolePilot, testOp1)
	key := &countingDroneKey{DroneKey: NewDroneKey(testDrone)}
	hooks := &Counters{}
	cfg := ServerConfig{Conn: conn, PSK: testPSK, DroneKey: key, Auth: auth, Hooks: hooks,
		Handler: func(context.Context, Command) (AckStatus, []byte) { return AckOK, nil }}
	if mutate != nil {
		mutate(&cfg)
	}
	s, err := NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s, n, auth, key, hooks
}

// A datagram without a valid PSK MAC or AEAD tag costs the drone no allocation beyond the
// read buffer, and no RSA, X25519 or key lookup.
func TestForgedTrafficAllocatesNothing(t *testing.T) {
	s, auth, key, _ := directServer(t)
	otherPSK := testPSK
	otherPSK[1] ^= 8
	h, _ := NewInitiator(InitiatorConfig{PSK: otherPSK, OperatorKey: testOp1, DronePublic: &testDrone.PublicKey}, 3, 0)
	forgedInit, _ := h.Initiation(time.Now())
	forgedData := appendDataHeader(nil, 77, 5)
	forgedData = append(forgedData, bytes.Repeat([]byte{7}, 40)...)
	var sc receiveScratch
	sc.out = make([]byte, 0, MaxDatagramSize)
	from := attackerAddr
	for name, pkt := range map[string][]byte{
		"wrong-PSK initiation": forgedInit,
		"data for no session":  forgedData,
		"garbage":              bytes.Repeat([]byte{0xff}, 300),
		"empty":                {},
	} {
		allocs := testing.AllocsPerRun(200, func() { s.handleDatagram(pkt, from, time.Now(), &sc) })
		if allocs != 0 {
			t.Errorf("%s: %v allocations per datagram", name, allocs)
		}
	}
	if auth.lookups.Load() != 0 || key.unwraps.Load() != 0 {
		t.Fatalf("forged traffic reached key lookup (%d) or RSA (%d)", auth.lookups.Load(), key.unwraps.Load())
	}
}

// FuzzServerDatagram feeds arbitrary datagrams to the drone's receive path: it must never
// panic, and nothing without the PSK may reach key lookup or RSA.
func FuzzServerDatagram(f *testing.F) {
	s, auth, key, _ := directServer(f)
	h, _ := NewInitiator(InitiatorConfig{PSK: testPSK, OperatorKey: testOp1, DronePublic: &testDrone.PublicKey}, 3, 0)
	valid, _ := h.Initiation(time.Now())
	f.Add(valid)
	f.Add(appendDataHeader(nil, 1, 0))
	f.Add(append(appendDataHeader(nil, 1, 0), make([]byte, 30)...))
	f.Add([]byte{0x12, 0, 1, 0, 1})
	f.Add([]byte{})
	var sc receiveScratch
	sc.out = make([]byte, 0, MaxDatagramSize)
	rng := rand.New(rand.NewPCG(1, 1))
	f.Fuzz(func(t *testing.T, pkt []byte) {
		genuine := bytes.Equal(pkt, valid)
		before := auth.lookups.Load() + key.unwraps.Load()
		from := netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 9, byte(rng.Uint32()), 1}), 999)
		s.handleDatagram(pkt, from, time.Now(), &sc)
		if !genuine && auth.lookups.Load()+key.unwraps.Load() != before {
			t.Fatalf("a datagram that is not the genuine initiation reached key lookup or RSA: % x", pkt)
		}
	})
}
