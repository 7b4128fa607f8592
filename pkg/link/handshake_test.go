package link

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"github.com/dronelink/dronelink/pkg/crypto"
)

// handshakeRig is an Initiator and a Responder with counting test doubles, no I/O.
type handshakeRig struct {
	auth *testAuth
	key  *countingDroneKey
	resp *Responder
}

func newHandshakeRig(t *testing.T) *handshakeRig {
	t.Helper()
	testKeys(t)
	r := &handshakeRig{auth: newTestAuth(), key: &countingDroneKey{DroneKey: NewDroneKey(testDrone)}}
	r.auth.add("alice", "pw", RolePilot, testOp1)
	resp, err := NewResponder(ResponderConfig{PSK: testPSK, DroneKey: r.key, Operators: r.auth.LookupKey})
	if err != nil {
		t.Fatal(err)
	}
	r.resp = resp
	return r
}

func (r *handshakeRig) expensive() int64 { return r.auth.lookups.Load() + r.key.unwraps.Load() }

func newInit(t *testing.T, psk crypto.PSK, op, drone func() *InitiatorConfig) *Initiator {
	t.Helper()
	cfg := InitiatorConfig{PSK: psk, OperatorKey: testOp1, DronePublic: &testDrone.PublicKey}
	if op != nil {
		cfg = *op()
	}
	h, err := NewInitiator(cfg, 77, 0)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func TestHandshakeEstablishesMatchingKeys(t *testing.T) {
	r := newHandshakeRig(t)
	h := newInit(t, testPSK, nil, nil)
	pkt, err := h.Initiation(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	var init Initiation
	if err := r.resp.CheckInitiation(pkt, &init); err != nil {
		t.Fatal(err)
	}
	reply, acc, err := r.resp.AcceptInitiation(nil, &init, 5, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(reply) != ResponseSize || acc.OperatorIndex != 77 || acc.OperatorKey != crypto.KeyIDOf(&testOp1.PublicKey) {
		t.Fatalf("accepted %+v, reply %d bytes", acc, len(reply))
	}
	keys, resp, err := h.ConsumeResponse(reply)
	if err != nil {
		t.Fatal(err)
	}
	if resp.Sender != 5 || h.State() != StateEstablished {
		t.Fatalf("drone index %d state %v", resp.Sender, h.State())
	}
	if keys.Send != acc.Keys.Recv || keys.Recv != acc.Keys.Send || keys.Send == keys.Recv {
		t.Fatal("directional keys do not pair up")
	}
	// A second handshake agrees different keys: fresh secret and ephemerals each time.
	h2 := newInit(t, testPSK, nil, nil)
	pkt2, _ := h2.Initiation(time.Now())
	r.resp.CheckInitiation(pkt2, &init)
	_, acc2, err := r.resp.AcceptInitiation(nil, &init, 6, 0)
	if err != nil {
		t.Fatal(err)
	}
	if acc2.Keys.Send == acc.Keys.Send {
		t.Fatal("two handshakes agreed the same keys")
	}
}

func TestHandshakeRefusals(t *testing.T) {
	testKeys(t)
	otherPSK := testPSK
	otherPSK[0] ^= 1
	cases := []struct {
		name      string
		cfg       InitiatorConfig
		wantCheck error // from CheckInitiation
		wantErr   error // from AcceptInitiation
		expensive int64 // lookups + unwraps allowed
	}{
		{"wrong PSK", InitiatorConfig{PSK: otherPSK, OperatorKey: testOp1, DronePublic: &testDrone.PublicKey}, ErrBadMAC, nil, 0},
		{"wrong drone key", InitiatorConfig{PSK: testPSK, OperatorKey: testOp1, DronePublic: &testOther.PublicKey}, nil, ErrWrongDroneKey, 0},
		{"unknown operator key", InitiatorConfig{PSK: testPSK, OperatorKey: testOp2, DronePublic: &testDrone.PublicKey}, nil, ErrUnknownOperatorKey, 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := newHandshakeRig(t)
			h, err := NewInitiator(tc.cfg, 9, 0)
			if err != nil {
				t.Fatal(err)
			}
			pkt, err := h.Initiation(time.Now())
			if err != nil {
				t.Fatal(err)
			}
			var init Initiation
			err = r.resp.CheckInitiation(pkt, &init)
			if !errors.Is(err, tc.wantCheck) {
				t.Fatalf("check: %v, want %v", err, tc.wantCheck)
			}
			if err == nil {
				out, _, err := r.resp.AcceptInitiation(nil, &init, 1, 0)
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("accept: %v, want %v", err, tc.wantErr)
				}
				reply, ok := r.resp.ErrorReply(out, &init, err)
				if !ok {
					t.Fatal("no error reply")
				}
				code, err := h.ConsumeError(reply)
				if err != nil || code.Err() != tc.wantErr || h.State() != StateFailed {
					t.Fatalf("operator reads %v %v, state %v", code, err, h.State())
				}
			}
			if got := r.expensive(); got != tc.expensive {
				t.Errorf("%d key lookups + RSA unwraps, want %d", got, tc.expensive)
			}
			if r.key.unwraps.Load() != 0 {
				t.Errorf("a refused initiation reached the RSA unwrap")
			}
		})
	}
}

func TestHandshakeReplayedInitiationRejectedBeforeRSA(t *testing.T) {
	r := newHandshakeRig(t)
	h := newInit(t, testPSK, nil, nil)
	first, _ := h.Initiation(time.Now())
	second, _ := h.Initiation(time.Now()) // a retry: newer timestamp
	var init Initiation
	accept := func(pkt []byte) error {
		if err := r.resp.CheckInitiation(pkt, &init); err != nil {
			return err
		}
		_, _, err := r.resp.AcceptInitiation(nil, &init, 3, 0)
		return err
	}
	if err := accept(second); err != nil {
		t.Fatal(err)
	}
	before := r.expensive()
	for _, pkt := range [][]byte{second, first, second} { // the same one again, an older one, again
		if err := accept(pkt); !errors.Is(err, ErrStale) {
			t.Fatalf("replayed initiation: %v", err)
		}
	}
	if r.expensive() != before {
		t.Errorf("replayed initiations cost %d lookups/unwraps", r.expensive()-before)
	}
}

func TestHandshakeForgedSignature(t *testing.T) {
	r := newHandshakeRig(t)
	// Bob (holding the PSK and his own key) claims Alice's key id and signs with his key.
	h, _ := NewInitiator(InitiatorConfig{PSK: testPSK, OperatorKey: testOp2, DronePublic: &testDrone.PublicKey}, 9, 0)
	h.operatorID = crypto.KeyIDOf(&testOp1.PublicKey)
	pkt, _ := h.Initiation(time.Now())
	var init Initiation
	if err := r.resp.CheckInitiation(pkt, &init); err != nil {
		t.Fatal(err)
	}
	if _, _, err := r.resp.AcceptInitiation(nil, &init, 1, 0); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("forged signature: %v", err)
	}
	if r.key.unwraps.Load() != 0 {
		t.Error("a bad signature reached the RSA unwrap")
	}
}

func TestHandshakeEveryBitFlipRejected(t *testing.T) {
	r := newHandshakeRig(t)
	h := newInit(t, testPSK, nil, nil)
	pkt, _ := h.Initiation(time.Now())
	var init Initiation
	for bit := range len(pkt) * 8 {
		p := bytes.Clone(pkt)
		p[bit/8] ^= 1 << (bit % 8)
		if err := r.resp.CheckInitiation(p, &init); err == nil {
			t.Fatalf("initiation bit %d flipped: passed the MAC", bit)
		}
	}
	if r.expensive() != 0 {
		t.Fatal("flipped initiations reached key lookup or RSA")
	}
	if err := r.resp.CheckInitiation(pkt, &init); err != nil {
		t.Fatal(err)
	}
	reply, _, err := r.resp.AcceptInitiation(nil, &init, 4, 0)
	if err != nil {
		t.Fatal(err)
	}
	for bit := range len(reply) * 8 {
		p := bytes.Clone(reply)
		p[bit/8] ^= 1 << (bit % 8)
		if _, _, err := h.ConsumeResponse(p); err == nil {
			t.Fatalf("response bit %d flipped: accepted", bit)
		}
	}
	if _, _, err := h.ConsumeResponse(reply); err != nil {
		t.Fatalf("genuine response after forgeries: %v", err)
	}
}

// An attacker who holds the PSK but not the drone's RSA key cannot answer an initiation:
// the key confirmation needs the unwrapped secret.
func TestResponseWithoutDroneKeyRejected(t *testing.T) {
	testKeys(t)
	h := newInit(t, testPSK, nil, nil)
	pkt, _ := h.Initiation(time.Now())
	// The impostor runs a responder with its own key, claiming the drone's key id.
	impostorAuth := newTestAuth()
	impostorAuth.add("alice", "pw", RolePilot, testOp1)
	imp, err := NewResponder(ResponderConfig{PSK: testPSK, DroneKey: NewDroneKey(testOther), Operators: impostorAuth.LookupKey})
	if err != nil {
		t.Fatal(err)
	}
	imp.droneID = crypto.KeyIDOf(&testDrone.PublicKey)
	var init Initiation
	if err := imp.CheckInitiation(pkt, &init); err != nil {
		t.Fatal(err)
	}
	if _, _, err := imp.AcceptInitiation(nil, &init, 2, 0); err == nil {
		t.Fatal("the impostor unwrapped a secret wrapped to the real drone key")
	}
	// Even forging a response with its own ephemeral key fails the confirmation.
	forged := appendResponsePrefix(nil, 2, 77, 0, bytes.Repeat([]byte{9}, publicSize))
	forged = append(forged, make([]byte, tagSize)...)
	macKey, _ := PSKMACKey(&testPSK)
	forged = crypto.NewMAC(macKey).Sum(forged, forged)
	if _, _, err := h.ConsumeResponse(forged); !errors.Is(err, ErrDecrypt) {
		t.Fatalf("forged response: %v", err)
	}
}

func TestErrorDatagramBoundToInitiation(t *testing.T) {
	r := newHandshakeRig(t)
	h := newInit(t, testPSK, nil, nil)
	pkt, _ := h.Initiation(time.Now())
	var init Initiation
	r.resp.CheckInitiation(pkt, &init)
	reply, _ := r.resp.ErrorReply(nil, &init, ErrStale)
	// A recorded error with another timestamp (an older initiation) is not believed.
	stale := bytes.Clone(reply)
	stale[errOffTimestamp+7] ^= 1
	macKey, _ := PSKMACKey(&testPSK)
	stale = crypto.NewMAC(macKey).Sum(stale[:errOffMAC], stale[:errOffMAC])
	if _, err := h.ConsumeError(stale); !errors.Is(err, ErrUnknownSession) {
		t.Fatalf("error for another initiation: %v", err)
	}
	// Stale is not final: the handshake keeps retrying.
	if code, err := h.ConsumeError(reply); err != nil || code != CodeStale || h.State() != StateInitiationSent {
		t.Fatalf("stale error: %v %v state %v", code, err, h.State())
	}
}

func TestRetryDelayBackoff(t *testing.T) {
	prevMax := time.Duration(0)
	for attempt := range 12 {
		d := RetryDelay(attempt, 100*time.Millisecond, time.Second)
		base := min(100*time.Millisecond<<attempt, time.Second)
		if d < base || d > base+base/4 {
			t.Fatalf("attempt %d: delay %v outside [%v, %v]", attempt, d, base, base+base/4)
		}
		prevMax = max(prevMax, d)
	}
	if prevMax > time.Second+time.Second/4 {
		t.Fatalf("backoff not capped: %v", prevMax)
	}
}
