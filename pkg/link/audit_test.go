package link

import (
	cryptorand "crypto/rand"
	"crypto/rsa"
	"log/slog"
	"net/netip"
	"testing"
	"time"

	"github.com/dronelink/dronelink/pkg/crypto"
)

// logged returns the records with message msg whose attribute key has the value want
// ("" for any).
func (h *recordHandler) logged(msg, key, want string) []slog.Record {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []slog.Record
	for _, r := range h.records {
		if r.Message != msg {
			continue
		}
		match := key == ""
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == key && (want == "" || a.Value.String() == want) {
				match = true
			}
			return !match
		})
		if match {
			out = append(out, r)
		}
	}
	return out
}

// wrongWrapInitiation is a correctly signed and MAC'd initiation of key whose secret is
// wrapped to another RSA key than the drone's (under the drone's key id): the drone
// refuses it after the signature verified, at the unwrap.
func wrongWrapInitiation(t *testing.T, key *rsa.PrivateKey, local uint16) []byte {
	t.Helper()
	init := Initiation{Sender: local, Timestamp: nextTimestamp(time.Now()), OperatorKey: crypto.KeyIDOf(&key.PublicKey),
		DroneKey: crypto.KeyIDOf(&testDrone.PublicKey)}
	var err error
	if init.Wrapped, err = crypto.WrapSecret(cryptorand.Reader, &testOther.PublicKey, make([]byte, secretSize)); err != nil {
		t.Fatal(err)
	}
	eph, err := crypto.GenerateX25519(cryptorand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	copy(init.Ephemeral[:], eph.PublicKey().Bytes())
	pkt := appendInitiationBody(nil, &init)
	sig, err := crypto.SignPSS(cryptorand.Reader, key, pkt)
	if err != nil {
		t.Fatal(err)
	}
	pkt = append(append(pkt, sig...), make([]byte, resumeSize)...)
	macKey, err := PSKMACKey(&testPSK)
	if err != nil {
		t.Fatal(err)
	}
	return crypto.NewMAC(macKey).Sum(pkt, pkt)
}

// #13 audit trail: every handshake of an authenticated operator (its signature verified) is
// logged, accepted at Info and refused at Warn, none suppressed by the warning limiter; a
// refusal of an unauthenticated initiation stays rate-limited. Keys print as their
// fingerprint ("dronelink fingerprint"), or a prefix of it when only the key id is known.
func TestHandshakeAuditTrail(t *testing.T) {
	rec := &recordHandler{}
	f := newFakeRig(t, func(c *ServerConfig) { c.Logger = slog.New(rec) })
	f.auth.remove("olga") // testOther becomes an unknown key
	fp := crypto.Fingerprint(&testOp1.PublicKey)
	unknown := crypto.Fingerprint(&testOther.PublicKey)
	unknownPrefix := unknown[:len("SHA256:")+21] + "…"

	f.inject(t, aliceAddr, initiations(t, 1)[0])
	if got := rec.logged("handshake", "key", fp); len(got) != 1 || got[0].Level != slog.LevelInfo {
		t.Errorf("accepted handshake: %d Info records with key=%s, want 1 (all: %d)", len(got), fp, rec.count("handshake"))
	}

	const n = 5
	for i := range n {
		f.inject(t, aliceAddr, wrongWrapInitiation(t, testOp1, uint16(50+i)))
	}
	if got := f.hooks.Drop(DropWrongDroneKey); got != n {
		t.Fatalf("%d wrong_drone_key drops, want %d", got, n)
	}
	refused := rec.logged("handshake refused", "key", fp)
	if len(refused) != n {
		t.Errorf("%d of %d refusals of a signed initiation logged with key=%s, want all", len(refused), n, fp)
	}
	for _, r := range refused {
		if r.Level != slog.LevelWarn {
			t.Errorf("refusal logged at %v, want Warn", r.Level)
		}
	}

	for i := range n {
		h, err := NewInitiator(InitiatorConfig{PSK: testPSK, OperatorKey: testOther, DronePublic: &testDrone.PublicKey}, uint16(70+i), 0)
		if err != nil {
			t.Fatal(err)
		}
		p, err := h.Initiation(time.Now())
		if err != nil {
			t.Fatal(err)
		}
		f.inject(t, attackerAddr, p)
	}
	if got := f.hooks.Drop(DropUnknownKey); got != n {
		t.Fatalf("%d unknown_key drops, want %d", got, n)
	}
	if got := rec.logged("handshake refused", "key", unknownPrefix); len(got) != 1 {
		t.Errorf("%d log lines for %d initiations of an unknown key with key=%s, want 1 (rate-limited)", len(got), n, unknownPrefix)
	}
	if got := rec.logged("handshake refused", "key", ""); len(got) != n+1 {
		t.Errorf("%d refusal log lines, want %d", len(got), n+1)
	}
}

// #13 finding 4: an initiation whose PSK MAC fails (an operator with another PSK, or
// garbage) is counted and logged with its source, at a bounded rate.
func TestWrongPSKInitiationLogged(t *testing.T) {
	rec := &recordHandler{}
	f := newFakeRig(t, func(c *ServerConfig) { c.Logger = slog.New(rec) })
	otherPSK := testPSK
	otherPSK[0] ^= 1
	from := netip.MustParseAddrPort("10.0.0.5:40000")
	const n = 5
	for i := range n {
		h, err := NewInitiator(InitiatorConfig{PSK: otherPSK, OperatorKey: testOp1, DronePublic: &testDrone.PublicKey}, uint16(10+i), 0)
		if err != nil {
			t.Fatal(err)
		}
		p, err := h.Initiation(time.Now())
		if err != nil {
			t.Fatal(err)
		}
		f.inject(t, from, p)
	}
	if got := f.hooks.Drop(DropBadMAC); got != n {
		t.Errorf("%d bad_mac drops, want %d", got, n)
	}
	const msg = "initiation with a wrong PSK MAC (another PSK?)"
	if got := rec.logged(msg, "from", from.String()); len(got) != 1 || got[0].Level != slog.LevelWarn {
		t.Errorf("%d Warn records %q from=%s for %d initiations, want 1 (rate-limited)", len(got), msg, from, n)
	}
	if f.key.unwraps.Load() != 0 || f.hooks.Work[WorkVerify].Load() != 0 {
		t.Error("an initiation with a wrong PSK MAC reached RSA")
	}
}
