package link

import (
	"bytes"
	"context"
	"crypto/rsa"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"math/big"
	"net/netip"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dronelink/dronelink/pkg/crypto"
	"github.com/dronelink/dronelink/pkg/link/fakenet"
)

// testMAC is the PSK MAC of psk.
func testMAC(t testing.TB, psk crypto.PSK) *crypto.MAC {
	t.Helper()
	k, err := PSKMACKey(&psk)
	if err != nil {
		t.Fatal(err)
	}
	return crypto.NewMAC(k)
}

// otherTestPSK is a PSK that is not the drone's.
func otherTestPSK() crypto.PSK {
	p := testPSK
	p[3] ^= 0x40
	return p
}

// rawRSA is a public key with any modulus size and exponent, unchecked: for keys the
// link must refuse.
func rawRSA(bits, e int) *rsa.PublicKey {
	n := new(big.Int).Sub(new(big.Int).Lsh(big.NewInt(1), uint(bits)), big.NewInt(1))
	return &rsa.PublicKey{N: n, E: e}
}

func mustDER(t testing.TB, pub *rsa.PublicKey) []byte {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// remac replaces the trailing PSK MAC of pkt with the one under psk.
func remac(t testing.TB, pkt []byte, psk crypto.PSK) []byte {
	t.Helper()
	body := pkt[:len(pkt)-macSize]
	return testMAC(t, psk).Sum(bytes.Clone(body), body)
}

// The sizes the layout promises: the answer is never larger than the request, both fit a
// datagram, and the key bounds are those of the accepted RSA keys.
func TestKeyRequestSizes(t *testing.T) {
	if KeyRequestSize != 602 || KeyAnswerSize != 602 || KeyRequestSize < KeyAnswerSize || KeyRequestSize > MaxDatagramSize {
		t.Fatalf("request %d, answer %d", KeyRequestSize, KeyAnswerSize)
	}
	for _, tt := range []struct {
		name string
		pub  *rsa.PublicKey
		size int
	}{
		{"4096 bits, largest exponent", rawRSA(MaxRSABytes*8, 1<<31-1), MaxKeyDERSize},
		{"2048 bits, exponent 3", rawRSA(MinRSABytes*8, 3), MinKeyDERSize},
	} {
		if n := len(mustDER(t, tt.pub)); n != tt.size {
			t.Errorf("%s: %d bytes of DER, want %d", tt.name, n, tt.size)
		}
	}
	testKeys(t)
	if der, err := droneKeyDER(&testDrone.PublicKey); err != nil || len(der) < MinKeyDERSize {
		t.Fatalf("droneKeyDER of the test key: %d bytes, %v", len(der), err)
	}
	if _, err := droneKeyDER(rawRSA(1024, 65537)); err == nil {
		t.Fatal("droneKeyDER accepted a 1024-bit key")
	}
}

func TestParseKeyRequest(t *testing.T) {
	testKeys(t)
	nonce := [nonceSize]byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}
	good := appendKeyRequest(nil, &nonce, testMAC(t, testPSK))
	with := func(f func(p []byte) []byte) []byte { return f(bytes.Clone(good)) }
	tests := []struct {
		name string
		pkt  []byte
		ok   bool
	}{
		{"good", good, true},
		{"truncated", good[:len(good)-1], false},
		{"one byte more", append(bytes.Clone(good), 0), false},
		{"too small for the largest answer", good[:KeyAnswerSize-1], false},
		{"a data type byte", with(func(p []byte) []byte { p[0] = typeByte(TypeData); return p }), false},
		{"another version", with(func(p []byte) []byte { p[0] = 2<<4 | TypeKeyRequest; return p }), false},
		{"nonzero padding", with(func(p []byte) []byte { p[keyReqOffMAC-1] = 1; return p }), false},
		{"empty", nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var r KeyRequest
			err := ParseKeyRequest(tt.pkt, &r)
			if (err == nil) != tt.ok || (err != nil && !errors.Is(err, ErrMalformed)) {
				t.Fatalf("ParseKeyRequest: %v, want ok=%v", err, tt.ok)
			}
			if tt.ok && r.Nonce != nonce {
				t.Fatalf("nonce %x", r.Nonce)
			}
		})
	}
	if len(good) != KeyRequestSize || !verifyTrailingMAC(testMAC(t, testPSK), good) || verifyTrailingMAC(testMAC(t, otherTestPSK()), good) {
		t.Fatal("the request's MAC is not the PSK MAC over everything before it")
	}
}

// The operator's checks of an answer, in order, each with its drop reason.
func TestOpenKeyAnswer(t *testing.T) {
	testKeys(t)
	mac := testMAC(t, testPSK)
	nonce := [nonceSize]byte{0xa0, 0xa1, 0xa2}
	der := mustDER(t, &testDrone.PublicKey)
	good := appendKeyAnswer(nil, &nonce, der, mac)
	answer := func(n *[nonceSize]byte, key []byte) []byte { return appendKeyAnswer(nil, n, key, mac) }
	edit := func(f func(p []byte)) []byte { p := bytes.Clone(good); f(p); return remac(t, p, testPSK) }
	wrongNonce := nonce
	wrongNonce[15] ^= 1
	badOID := bytes.Clone(der)
	badOID[bytes.Index(badOID, []byte{0x2a, 0x86, 0x48})+8] ^= 0x7f // rsaEncryption -> an unknown algorithm
	tests := []struct {
		name string
		pkt  []byte
		err  error
		drop DropReason
	}{
		{"good", good, nil, 0},
		{"good, 4096-bit key with the largest exponent", answer(&nonce, mustDER(t, rawRSA(4096, 1<<31-1))), nil, 0},
		{"bad MAC (another PSK)", remac(t, good, otherTestPSK()), ErrBadMAC, DropBadMAC},
		{"truncated", good[:len(good)-1], ErrMalformed, DropMalformed},
		{"one byte more", append(bytes.Clone(good), 0), ErrMalformed, DropMalformed},
		{"a request instead", appendKeyRequest(nil, &nonce, mac), ErrMalformed, DropMalformed},
		{"wrong nonce", answer(&wrongNonce, der), ErrUnknownSession, DropUnknownSession},
		{"key length below the smallest key", edit(func(p []byte) { binary.BigEndian.PutUint16(p[keyAnsOffKeyLen:], MinKeyDERSize-1) }), ErrMalformed, DropMalformed},
		{"key length above the largest key", edit(func(p []byte) { binary.BigEndian.PutUint16(p[keyAnsOffKeyLen:], MaxKeyDERSize+1) }), ErrMalformed, DropMalformed},
		{"key length 0xffff", edit(func(p []byte) { binary.BigEndian.PutUint16(p[keyAnsOffKeyLen:], 0xffff) }), ErrMalformed, DropMalformed},
		{"nonzero padding", edit(func(p []byte) { p[keyAnsOffMAC-1] = 1 }), ErrMalformed, DropMalformed},
		{"not a PKIX key", answer(&nonce, badOID), ErrBadAnswerKey, DropMalformed},
		{"undersized key (2040 bits)", answer(&nonce, mustDER(t, rawRSA(2040, 1<<31-1))), ErrBadAnswerKey, DropMalformed},
		{"oversized key (4104 bits)", answer(&nonce, mustDER(t, rawRSA(4104, 3))), ErrBadAnswerKey, DropMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pub, err := openKeyAnswer(tt.pkt, mac, &nonce)
			if tt.err == nil {
				if err != nil || pub == nil || len(tt.pkt) != KeyAnswerSize {
					t.Fatalf("openKeyAnswer: %v", err)
				}
				return
			}
			if !errors.Is(err, tt.err) || pub != nil || dropReasonFor(err) != tt.drop {
				t.Fatalf("openKeyAnswer: %v (drop %v), want %v (drop %v)", err, dropReasonFor(err), tt.err, tt.drop)
			}
		})
	}
	if pub, err := openKeyAnswer(good, mac, &nonce); err != nil || !pub.Equal(&testDrone.PublicKey) {
		t.Fatalf("the good answer does not give the drone's key: %v", err)
	}
}

// keyOperator is a socket on the drone's fake network from which a test sends key
// requests by hand and reads the answers.
type keyOperator struct {
	conn  *fakenet.Conn
	mac   *crypto.MAC
	nonce byte // the next request's nonce is 16 bytes of this value
}

func newKeyOperator(t *testing.T, n *fakenet.Network, addr netip.AddrPort, psk crypto.PSK) *keyOperator {
	t.Helper()
	conn, err := n.Listen(addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &keyOperator{conn: conn, mac: testMAC(t, psk)}
}

// request builds a request with a new nonce and returns it with the nonce.
func (o *keyOperator) request() ([]byte, [nonceSize]byte) {
	o.nonce++
	var n [nonceSize]byte
	for i := range n {
		n[i] = o.nonce
	}
	return appendKeyRequest(nil, &n, o.mac), n
}

// next reads the next datagram the drone sent this operator.
func (o *keyOperator) next(t *testing.T) []byte {
	t.Helper()
	buf := make([]byte, ReadBufferSize)
	n, _, err := o.conn.ReadFrom(buf)
	if err != nil {
		t.Fatal(err)
	}
	return buf[:n]
}

// The drone answers a genuine request with its key, in a datagram as large as the request,
// and nothing else: requests with a bad MAC, a bad layout or over the rate get no answer,
// each counted with its reason, and no request costs RSA work or a key lookup.
func TestServerKeyRequests(t *testing.T) {
	s, n, auth, key, hooks := directServerOn(t, func(c *ServerConfig) { c.HandshakeRate, c.HandshakeBurst = 1e-6, 3 })
	alice := newKeyOperator(t, n, aliceAddr, testPSK)
	stranger := newKeyOperator(t, n, attackerAddr, otherTestPSK())
	var sc receiveScratch
	sc.out = make([]byte, 0, MaxDatagramSize)
	handle := func(pkt []byte, from netip.AddrPort) { s.handleDatagram(pkt, from, time.Now(), &sc) }

	req1, nonce1 := alice.request()
	handle(req1, aliceAddr)
	ans := alice.next(t)
	if len(ans) != len(req1) {
		t.Fatalf("answer of %d bytes to a request of %d", len(ans), len(req1))
	}
	pub, err := openKeyAnswer(ans, alice.mac, &nonce1)
	if err != nil || !pub.Equal(&testDrone.PublicKey) {
		t.Fatalf("answer: %v", err)
	}

	forged, _ := stranger.request() // another PSK: bad MAC
	handle(forged, aliceAddr)
	handle(forged, attackerAddr)
	padded, _ := alice.request()
	padded[keyReqOffPad] = 1
	handle(remac(t, padded, testPSK), aliceAddr) // malformed even with a good MAC
	handle(req1[:len(req1)-1], aliceAddr)        // truncated: malformed
	handle(ans, aliceAddr)                       // an answer sent to the drone: unexpected
	req2, nonce2 := alice.request()
	handle(req2, aliceAddr) // the second of the burst of 3
	req3, nonce3 := alice.request()
	handle(req3, aliceAddr) // the third
	req4, _ := alice.request()
	handle(req4, aliceAddr) // over the rate: no answer

	// Datagrams arrive in order on the fake network: had anything between the first and
	// the second genuine request been answered, it would come first.
	for _, want := range [][nonceSize]byte{nonce2, nonce3} {
		if _, err := openKeyAnswer(alice.next(t), alice.mac, &want); err != nil {
			t.Fatalf("expected the answer to nonce %x: %v", want[0], err)
		}
	}
	// The initiations share the per-source budget: alice's is spent.
	h, _ := NewInitiator(InitiatorConfig{PSK: testPSK, OperatorKey: testOp1, DronePublic: &testDrone.PublicKey}, 9, 0)
	init, _ := h.Initiation(time.Now())
	handle(init, aliceAddr)
	// The stranger got nothing at all: the next thing it reads is what the test sends it.
	if err := n.Inject(fakenet.Datagram{From: droneAddr, To: attackerAddr, Payload: []byte("end")}); err != nil {
		t.Fatal(err)
	}
	if got := stranger.next(t); string(got) != "end" {
		t.Fatalf("a request with another PSK was answered: % x", got[:8])
	}

	for reason, want := range map[DropReason]uint64{DropBadMAC: 2, DropMalformed: 2, DropUnexpected: 1, DropRateLimited: 2} {
		if got := hooks.Drop(reason); got != want {
			t.Errorf("drops %v = %d, want %d", reason, got, want)
		}
	}
	if got := hooks.Received[KindKeyRequest].Load(); got != 8 {
		t.Errorf("received key requests %d, want 8", got)
	}
	if got := hooks.Sent[KindKeyAnswer].Load(); got != 3 {
		t.Errorf("sent key answers %d, want 3", got)
	}
	if auth.lookups.Load() != 0 || key.unwraps.Load() != 0 || hooks.Work[WorkVerify].Load() != 0 {
		t.Fatal("a key request reached a key lookup or RSA")
	}
}

// Refusing a key request costs the drone no allocation, as every other refusal of
// unauthenticated traffic.
func TestKeyRequestRefusalsAllocateNothing(t *testing.T) {
	s, n, _, _, _ := directServerOn(t, func(c *ServerConfig) { c.HandshakeRate, c.HandshakeBurst = 1e-6, 1 })
	alice := newKeyOperator(t, n, aliceAddr, testPSK)
	stranger := newKeyOperator(t, n, attackerAddr, otherTestPSK())
	var sc receiveScratch
	sc.out = make([]byte, 0, MaxDatagramSize)
	good, _ := alice.request()
	s.handleDatagram(good, aliceAddr, time.Now(), &sc) // spends alice's burst
	alice.next(t)
	forged, _ := stranger.request()
	padded := bytes.Clone(good)
	padded[keyReqOffPad+5] = 0xff
	for name, c := range map[string]struct {
		pkt  []byte
		from netip.AddrPort
	}{
		"wrong PSK":       {forged, attackerAddr},
		"nonzero padding": {remac(t, padded, testPSK), aliceAddr},
		"truncated":       {good[:100], aliceAddr},
		"rate limited":    {good, aliceAddr},
	} {
		if a := testing.AllocsPerRun(200, func() { s.handleDatagram(c.pkt, c.from, time.Now(), &sc) }); a != 0 {
			t.Errorf("%s: %v allocations per request", name, a)
		}
	}
}

// A running drone answers RequestDroneKey over a clean and a lossy network; the operator
// retransmits until an answer comes through, and counts what it sent and received.
func TestRequestDroneKey(t *testing.T) {
	for _, tt := range []struct {
		name string
		cfg  fakenet.Config
	}{
		{"clean", fakenet.Config{Seed: 1}},
		{"50% loss, reordering, duplication", fakenet.Config{Seed: 7, Loss: 0.5, Reorder: 0.3, Duplicate: 0.3}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			n, err := fakenet.New(tt.cfg)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { n.Close() })
			dc, err := n.Listen(droneAddr)
			if err != nil {
				t.Fatal(err)
			}
			r := startServer(t, dc, nil)
			oc, err := n.Listen(aliceAddr)
			if err != nil {
				t.Fatal(err)
			}
			hooks := &Counters{}
			attempts := 0
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute) // only bounds a broken build
			defer cancel()
			pub, err := RequestDroneKey(ctx, KeyRequestConfig{Conn: oc, Drone: droneAddr, PSK: testPSK,
				Hooks: hooks, OnAttempt: func(n int) { attempts = n }})
			if err != nil || !pub.Equal(&testDrone.PublicKey) {
				t.Fatalf("RequestDroneKey: %v", err)
			}
			if attempts < 1 || hooks.Sent[KindKeyRequest].Load() != uint64(attempts) || hooks.Received[KindKeyAnswer].Load() < 1 {
				t.Fatalf("attempts %d, sent %d, received %d", attempts, hooks.Sent[KindKeyRequest].Load(), hooks.Received[KindKeyAnswer].Load())
			}
			if _, _, err := oc.ReadFrom(make([]byte, 1)); err == nil {
				t.Fatal("RequestDroneKey left its socket open")
			}
			r.stop()
			if r.key.unwraps.Load() != 0 {
				t.Fatal("a key request cost the drone RSA work")
			}
		})
	}
}

// fakeDrone answers every datagram it receives with what answer returns (nothing for nil),
// until the test ends.
func fakeDrone(t *testing.T, n *fakenet.Network, answer func(req []byte) [][]byte) {
	t.Helper()
	conn, err := n.Listen(droneAddr)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { conn.Close(); wg.Wait() })
	wg.Go(func() {
		buf := make([]byte, ReadBufferSize)
		for {
			k, from, err := conn.ReadFrom(buf)
			if err != nil {
				return
			}
			for _, a := range answer(bytes.Clone(buf[:k])) {
				_ = conn.WriteTo(a, from)
			}
		}
	})
}

// What the operator makes of answers that are not the drone's: every one is dropped with
// its reason, and the request goes on until a good answer comes, or until the caller gives
// up, reporting an answer refused for its key. One that carries the PSK MAC and another key
// is accepted: the PSK only keeps outsiders out, and the fingerprint check is the caller's.
func TestRequestDroneKeyAnswers(t *testing.T) {
	testKeys(t)
	mac := testMAC(t, testPSK)
	droneDER := mustDER(t, &testDrone.PublicKey)
	otherDER := mustDER(t, &testOther.PublicKey)
	nonceOf := func(req []byte) *[nonceSize]byte {
		var r KeyRequest
		if ParseKeyRequest(req, &r) != nil {
			return nil
		}
		return &r.Nonce
	}
	// junk is what every case sends before (or instead of) its answer.
	junk := func(req []byte) [][]byte {
		nonce := nonceOf(req)
		other := *nonce
		other[0] ^= 1
		return [][]byte{
			remac(t, appendKeyAnswer(nil, nonce, droneDER, mac), otherTestPSK()), // bad_mac
			appendKeyAnswer(nil, &other, droneDER, mac),                          // unknown_session
			appendKeyAnswer(nil, nonce, mustDER(t, rawRSA(2040, 1<<31-1)), mac),  // malformed: the key
			appendKeyAnswer(nil, nonce, droneDER, mac)[:100],                     // malformed: the layout
			bytes.Clone(req), // unexpected
		}
	}
	for _, tt := range []struct {
		name    string
		answer  func(req []byte) [][]byte
		want    *rsa.PublicKey // nil: no usable answer
		wantErr error
	}{
		{"junk, then the drone's key", func(req []byte) [][]byte {
			return append(junk(req), appendKeyAnswer(nil, nonceOf(req), droneDER, mac))
		}, &testDrone.PublicKey, nil},
		{"a PSK holder answers with its own key", func(req []byte) [][]byte {
			return [][]byte{appendKeyAnswer(nil, nonceOf(req), otherDER, mac)}
		}, &testOther.PublicKey, nil},
		{"only junk", junk, nil, ErrBadAnswerKey},
		{"silence (another PSK)", func([]byte) [][]byte { return nil }, nil, context.Canceled},
	} {
		t.Run(tt.name, func(t *testing.T) {
			n, err := fakenet.New(fakenet.Config{Seed: 3})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { n.Close() })
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var mu sync.Mutex
			requests := 0
			fakeDrone(t, n, func(req []byte) [][]byte {
				mu.Lock()
				requests++
				if requests == 2 && tt.name == "silence (another PSK)" {
					cancel() // the operator retransmitted: give up
				}
				mu.Unlock()
				return tt.answer(req)
			})
			oc, err := n.Listen(aliceAddr)
			if err != nil {
				t.Fatal(err)
			}
			hooks := &dropSignal{Counters: &Counters{}, on: func(r DropReason) {
				if r == DropUnexpected && tt.want == nil {
					cancel() // the last of the junk is handled: every answer was refused
				}
			}}
			pub, err := RequestDroneKey(ctx, KeyRequestConfig{Conn: oc, Drone: droneAddr, PSK: testPSK, Hooks: hooks})
			if tt.want != nil {
				if err != nil || !pub.Equal(tt.want) {
					t.Fatalf("RequestDroneKey: %v", err)
				}
			} else if pub != nil || !errors.Is(err, tt.wantErr) || !errors.Is(err, context.Canceled) {
				t.Fatalf("RequestDroneKey: %v, want %v", err, tt.wantErr)
			}
			if tt.name == "silence (another PSK)" {
				return
			}
			for reason, least := range map[DropReason]uint64{DropBadMAC: 1, DropUnknownSession: 1, DropMalformed: 2, DropUnexpected: 1} {
				if tt.name == "a PSK holder answers with its own key" {
					least = 0
				}
				if got := hooks.Counters.Drop(reason); got < least {
					t.Errorf("drops %v = %d, want at least %d", reason, got, least)
				}
			}
		})
	}
}

// dropSignal is Counters that also tells on of every drop.
type dropSignal struct {
	*Counters
	on func(DropReason)
}

func (d *dropSignal) Dropped(r DropReason) {
	d.Counters.Dropped(r)
	d.on(r)
}

// TestFuzzKeySeedFiles keeps the seed files of the key request and answer parsers in step
// with the layout: the valid-* seeds parse, the others do not.
func TestFuzzKeySeedFiles(t *testing.T) {
	parsers := map[string]func([]byte) error{
		"FuzzParseKeyRequest": func(p []byte) error { var r KeyRequest; return ParseKeyRequest(p, &r) },
		"FuzzParseKeyAnswer":  func(p []byte) error { var a KeyAnswer; return ParseKeyAnswer(p, &a) },
	}
	for target, parse := range parsers {
		paths, err := filepath.Glob(filepath.Join("testdata", "fuzz", target, "*"))
		if err != nil || len(paths) < 5 {
			t.Fatalf("%s: %d seed files (%v)", target, len(paths), err)
		}
		for _, path := range paths {
			name := filepath.Base(path)
			if err := parse(fuzzSeedFile(t, path)); (err == nil) != strings.HasPrefix(name, "valid") {
				t.Errorf("%s/%s: %v", target, name, err)
			}
		}
	}
}

func FuzzParseKeyRequest(f *testing.F) {
	testKeys(f)
	nonce := [nonceSize]byte{9}
	f.Add(appendKeyRequest(nil, &nonce, testMAC(f, testPSK)))
	f.Add(make([]byte, KeyRequestSize))
	f.Fuzz(func(t *testing.T, in []byte) {
		pkt := fuzzGuarded(in)
		var r KeyRequest
		if err := ParseKeyRequest(pkt, &r); err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v is not ErrMalformed", err)
			}
			return
		}
		if len(pkt) != KeyRequestSize || !allZero(pkt[keyReqOffPad:keyReqOffMAC]) {
			t.Fatalf("accepted a request of %d bytes", len(pkt))
		}
		re := append(appendKeyRequest(nil, &r.Nonce, testMAC(t, testPSK))[:keyReqOffMAC], pkt[keyReqOffMAC:]...)
		if !bytes.Equal(re, pkt) {
			t.Fatalf("round trip:\n got % x\nwant % x", re, pkt)
		}
	})
}

// FuzzParseKeyAnswer fuzzes the answer's parser and, for what parses, the operator's whole
// check with a valid MAC and nonce, so the fuzzer reaches the key's DER parsing.
func FuzzParseKeyAnswer(f *testing.F) {
	testKeys(f)
	mac := testMAC(f, testPSK)
	nonce := [nonceSize]byte{7}
	f.Add(appendKeyAnswer(nil, &nonce, mustDER(f, &testDrone.PublicKey), mac))
	f.Add(appendKeyAnswer(nil, &nonce, mustDER(f, rawRSA(4104, 3)), mac))
	f.Fuzz(func(t *testing.T, in []byte) {
		pkt := fuzzGuarded(in)
		var a KeyAnswer
		if err := ParseKeyAnswer(pkt, &a); err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v is not ErrMalformed", err)
			}
			return
		}
		if len(pkt) != KeyAnswerSize || len(a.Key) < MinKeyDERSize || len(a.Key) > MaxKeyDERSize || cap(a.Key) != len(a.Key) {
			t.Fatalf("accepted an answer of %d bytes with a key of %d", len(pkt), len(a.Key))
		}
		re := appendKeyAnswer(nil, &a.Nonce, a.Key, mac)
		if !bytes.Equal(re[:keyAnsOffMAC], pkt[:keyAnsOffMAC]) {
			t.Fatalf("round trip:\n got % x\nwant % x", re, pkt)
		}
		pub, err := openKeyAnswer(re, mac, &a.Nonce)
		if err != nil {
			if !errors.Is(err, ErrBadAnswerKey) {
				t.Fatalf("an answer with a good MAC and nonce refused for %v", err)
			}
			return
		}
		if crypto.CheckRSAKeySize(pub) != nil || !bytes.Equal(mustDER(t, pub), a.Key) {
			t.Fatal("accepted a key out of range or not in canonical DER")
		}
	})
}
