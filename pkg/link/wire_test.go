package link

import (
	"bytes"
	"crypto/ecdh"
	cryptorand "crypto/rand"
	"crypto/rsa"
	"encoding/binary"
	"errors"
	"sync"
	"testing"
	"time"
	"unsafe"

	"github.com/dronelink/dronelink/pkg/crypto"
)

// Helpers shared with fuzz_test.go. They are prefixed "wire" so they do not collide with
// helpers of other test files of the package.

// wireWithin reports whether sub lies entirely inside whole[:len(whole)].
func wireWithin(sub, whole []byte) bool {
	if len(sub) == 0 {
		return true
	}
	base := uintptr(unsafe.Pointer(unsafe.SliceData(whole)))
	p := uintptr(unsafe.Pointer(unsafe.SliceData(sub)))
	return p >= base && p+uintptr(len(sub)) <= base+uintptr(len(whole))
}

// wireFill returns n bytes of b.
func wireFill(n int, b byte) []byte { return bytes.Repeat([]byte{b}, n) }

// wireSynthInitiation builds a structurally valid initiation (fake crypto) whose
// wrapped-secret length field says wrapLen, with sigLen signature bytes (0xbb), a 32-byte
// resume tag (0xdd) and a 32-byte MAC (0xcc).
func wireSynthInitiation(wrapLen, sigLen int) []byte {
	init := Initiation{Sender: 0x0102, Replaces: 0x0304, Timestamp: 0x05060708090a0b0c}
	for i := range init.OperatorKey {
		init.OperatorKey[i] = 0x10 + byte(i)
	}
	for i := range init.DroneKey {
		init.DroneKey[i] = 0x20 + byte(i)
	}
	for i := range init.Ephemeral {
		init.Ephemeral[i] = 0x40 + byte(i)
	}
	init.Wrapped = wireFill(wrapLen, 0xaa)
	pkt := appendInitiationBody(nil, &init)
	pkt = append(pkt, wireFill(sigLen, 0xbb)...)
	pkt = append(pkt, wireFill(resumeSize, 0xdd)...)
	return append(pkt, wireFill(macSize, 0xcc)...)
}

// wireSynthResponse builds a structurally valid response (fake crypto).
func wireSynthResponse(sender, receiver uint16, flags byte) []byte {
	pkt := appendResponsePrefix(nil, sender, receiver, flags, wireFill(publicSize, 0x33))
	pkt = append(pkt, wireFill(tagSize, 0x44)...)
	return append(pkt, wireFill(macSize, 0x55)...)
}

// wireSynthError builds a structurally valid error datagram (fake MAC).
func wireSynthError(receiver uint16, code ErrorCode, ts uint64) []byte {
	pkt := appendErrorBody(nil, &ErrorPacket{Receiver: receiver, Code: code, Timestamp: ts})
	return append(pkt, wireFill(macSize, 0x66)...)
}

// wireSynthData builds a data datagram of total length n (fake ciphertext).
func wireSynthData(receiver uint16, counter uint32, n int) []byte {
	pkt := appendDataHeader(nil, receiver, counter)
	return append(pkt, wireFill(n-len(pkt), 0x77)...)
}

// wireAppendMessage re-encodes a parsed message with the package's builders.
// wireMAC is the handshake MAC under testPSK.
func wireMAC(t testing.TB) *crypto.MAC {
	t.Helper()
	key, err := PSKMACKey(&testPSK)
	if err != nil {
		t.Fatal(err)
	}
	return crypto.NewMAC(key)
}

// wireResponder is a Responder for testDrone that knows testOp1 only, with counters.
func wireResponder(t testing.TB) (*Responder, *testAuth, *countingDroneKey) {
	t.Helper()
	testKeys(t)
	auth := newTestAuth()
	auth.add("alice", "alice-pw", RolePilot, testOp1)
	key := &countingDroneKey{DroneKey: NewDroneKey(testDrone)}
	r, err := NewResponder(ResponderConfig{PSK: testPSK, DroneKey: key, Operators: auth.LookupKey})
	if err != nil {
		t.Fatal(err)
	}
	return r, auth, key
}

// wireInitiator is an Initiator from op to the drone key drone.
func wireInitiator(t testing.TB, op *rsa.PrivateKey, drone *rsa.PublicKey, local, replaces uint16) *Initiator {
	t.Helper()
	h, err := NewInitiator(InitiatorConfig{PSK: testPSK, OperatorKey: op, DronePublic: drone}, local, replaces)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func TestWireLayoutConstants(t *testing.T) {
	for _, c := range []struct {
		name      string
		got, want int
	}{
		{"ProtocolVersion", ProtocolVersion, 1},
		{"TypeInitiation", TypeInitiation, 1},
		{"TypeResponse", TypeResponse, 2},
		{"TypeError", TypeError, 3},
		{"TypeData", TypeData, 4},

		{"initOffType", initOffType, 0},
		{"initOffSender", initOffSender, 1},
		{"initOffReplaces", initOffReplaces, 3},
		{"initOffTimestamp", initOffTimestamp, 5},
		{"initOffOperator", initOffOperator, 13},
		{"initOffDrone", initOffDrone, 29},
		{"initOffEphemeral", initOffEphemeral, 45},
		{"initOffWrapLen", initOffWrapLen, 77},
		{"initOffWrapped", initOffWrapped, 79},
		{"resumeSize", resumeSize, 32},
		{"InitiationFixedSize", InitiationFixedSize, 143},

		{"respOffType", respOffType, 0},
		{"respOffSender", respOffSender, 1},
		{"respOffReceiver", respOffReceiver, 3},
		{"respOffFlags", respOffFlags, 5},
		{"respOffEphemeral", respOffEphemeral, 6},
		{"respOffConfirm", respOffConfirm, 38},
		{"respOffMAC", respOffMAC, 54},
		{"ResponseSize", ResponseSize, 86},
		{"FlagLoginCarried", FlagLoginCarried, 1},

		{"errOffType", errOffType, 0},
		{"errOffReceiver", errOffReceiver, 1},
		{"errOffCode", errOffCode, 3},
		{"errOffTimestamp", errOffTimestamp, 4},
		{"errOffMAC", errOffMAC, 12},
		{"ErrorSize", ErrorSize, 44},

		{"dataOffType", dataOffType, 0},
		{"dataOffReceiver", dataOffReceiver, 1},
		{"dataOffCounter", dataOffCounter, 3},
		{"DataHeaderSize", DataHeaderSize, 7},
		{"DataOverhead", DataOverhead, 23},

		{"MaxDatagramSize", MaxDatagramSize, 1200},
		{"MaxPlaintextSize", MaxPlaintextSize, 1177},
		{"MinRSABytes", MinRSABytes, 256},
		{"MaxRSABytes", MaxRSABytes, 512},
		{"MinInitiationSize", MinInitiationSize, 655},
		{"MaxInitiationSize", MaxInitiationSize, 1167},
		{"macSize", macSize, crypto.MACSize},
		{"tagSize", tagSize, crypto.AEADTagSize},
		{"keyIDSize", keyIDSize, len(crypto.KeyID{})},

		{"LoginHeaderSize", LoginHeaderSize, 10},
		{"LoginResultSize", LoginResultSize, 11},
		{"CommandHeaderSize", CommandHeaderSize, 26},
		{"AckHeaderSize", AckHeaderSize, 10},
		{"TelemetryHeaderSize", TelemetryHeaderSize, 1},
		{"CloseSize", CloseSize, 2},
		{"MaxCommandPayload", MaxCommandPayload, 1151},
		{"MaxAckPayload", MaxAckPayload, 1167},
		{"MaxTelemetryPayload", MaxTelemetryPayload, 1176},
	} {
		if c.got != c.want {
			t.Errorf("%s = %d, want %d", c.name, c.got, c.want)
		}
	}
	if MaxInitiationSize > MaxDatagramSize {
		t.Errorf("MaxInitiationSize %d > MaxDatagramSize %d", MaxInitiationSize, MaxDatagramSize)
	}
	if ReadBufferSize <= MaxDatagramSize {
		t.Errorf("ReadBufferSize %d must exceed MaxDatagramSize %d", ReadBufferSize, MaxDatagramSize)
	}
	for typ, want := range map[byte]byte{TypeInitiation: 0x11, TypeResponse: 0x12, TypeError: 0x13, TypeData: 0x14} {
		if got := typeByte(typ); got != want {
			t.Errorf("typeByte(%d) = %#x, want %#x", typ, got, want)
		}
	}
}

// TestWireLayoutInitiationSizes builds real initiations with 2048- and 4096-bit keys: the
// largest (4096-bit operator and drone keys) is exactly MaxInitiationSize and fits a datagram.
func TestWireLayoutInitiationSizes(t *testing.T) {
	if testing.Short() {
		t.Skip("generates two 4096-bit RSA keys")
	}
	testKeys(t)
	var big [2]*rsa.PrivateKey
	var errs [2]error
	var wg sync.WaitGroup
	for i := range big {
		wg.Go(func() { big[i], errs[i] = crypto.GenerateRSAKey(cryptorand.Reader, 4096) })
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	bigOp, bigDrone := big[0], big[1]
	for _, c := range []struct {
		name      string
		op, drone *rsa.PrivateKey
		want      int
	}{
		{"2048/2048", testOp1, testDrone, MinInitiationSize},
		{"op4096/drone2048", bigOp, testDrone, InitiationFixedSize + 512 + 256},
		{"op2048/drone4096", testOp1, bigDrone, InitiationFixedSize + 256 + 512},
		{"4096/4096", bigOp, bigDrone, MaxInitiationSize},
	} {
		t.Run(c.name, func(t *testing.T) {
			h := wireInitiator(t, c.op, &c.drone.PublicKey, 1, 0)
			pkt, err := h.Initiation(time.Now())
			if err != nil {
				t.Fatal(err)
			}
			if len(pkt) != c.want || len(pkt) > MaxDatagramSize {
				t.Fatalf("initiation is %d bytes, want %d (<= %d)", len(pkt), c.want, MaxDatagramSize)
			}
			var init Initiation
			if err := ParseInitiation(pkt, &init); err != nil {
				t.Fatal(err)
			}
			if len(init.Wrapped) != c.drone.Size() || len(init.Signature) != c.op.Size() {
				t.Fatalf("wrapped %d signature %d, want %d %d", len(init.Wrapped), len(init.Signature), c.drone.Size(), c.op.Size())
			}
			// The drone holding the key accepts it: the whole handshake works at every size.
			auth := newTestAuth()
			auth.add("u", "p", RolePilot, c.op)
			r, err := NewResponder(ResponderConfig{PSK: testPSK, DroneKey: NewDroneKey(c.drone), Operators: auth.LookupKey})
			if err != nil {
				t.Fatal(err)
			}
			if err := r.CheckInitiation(pkt, &init); err != nil {
				t.Fatal(err)
			}
			resp, _, err := r.AcceptInitiation(nil, &init, 9, 0)
			if err != nil {
				t.Fatal(err)
			}
			if len(resp) != ResponseSize {
				t.Fatalf("response is %d bytes", len(resp))
			}
			if _, _, err := h.ConsumeResponse(resp); err != nil {
				t.Fatal(err)
			}
		})
	}
	if t.Failed() {
		return
	}
	// The biggest initiation is exactly MaxInitiationSize.
	h := wireInitiator(t, bigOp, &bigDrone.PublicKey, 0xffff, 0xffff)
	pkt, err := h.Initiation(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if len(pkt) != 1167 || len(pkt) > 1200 {
		t.Fatalf("4096/4096 initiation is %d bytes, want 1167", len(pkt))
	}
}

// TestWireInitiationBytes checks every field of a real initiation at its documented offset.
func TestWireInitiationBytes(t *testing.T) {
	testKeys(t)
	h := wireInitiator(t, testOp1, &testDrone.PublicKey, 0x1234, 0xbeef)
	now := time.Now()
	pkt, err := h.Initiation(now)
	if err != nil {
		t.Fatal(err)
	}
	if len(pkt) != MinInitiationSize {
		t.Fatalf("len %d, want %d", len(pkt), MinInitiationSize)
	}
	if pkt[0] != 0x11 {
		t.Errorf("type byte %#x, want 0x11", pkt[0])
	}
	if got := binary.BigEndian.Uint16(pkt[1:3]); got != 0x1234 {
		t.Errorf("sender %#x", got)
	}
	if !bytes.Equal(pkt[1:5], []byte{0x12, 0x34, 0xbe, 0xef}) {
		t.Errorf("sender/replaces bytes % x", pkt[1:5])
	}
	ts := binary.BigEndian.Uint64(pkt[5:13])
	if ts < uint64(now.UnixNano()) {
		t.Errorf("timestamp %d before now %d", ts, now.UnixNano())
	}
	opID, droneID := crypto.KeyIDOf(&testOp1.PublicKey), crypto.KeyIDOf(&testDrone.PublicKey)
	if !bytes.Equal(pkt[13:29], opID[:]) {
		t.Errorf("operator key id % x", pkt[13:29])
	}
	if !bytes.Equal(pkt[29:45], droneID[:]) {
		t.Errorf("drone key id % x", pkt[29:45])
	}
	if _, err := ecdh.X25519().NewPublicKey(pkt[45:77]); err != nil || bytes.Equal(pkt[45:77], make([]byte, 32)) {
		t.Errorf("ephemeral % x: %v", pkt[45:77], err)
	}
	if !bytes.Equal(pkt[77:79], []byte{0x01, 0x00}) {
		t.Errorf("wrapped length % x, want 01 00", pkt[77:79])
	}
	secret, err := crypto.UnwrapSecret(testDrone, pkt[79:335])
	if err != nil || len(secret) != secretSize {
		t.Errorf("unwrap at 79..335: %d bytes, %v", len(secret), err)
	}
	if err := crypto.VerifyPSS(&testOp1.PublicKey, pkt[:335], pkt[335:591]); err != nil {
		t.Errorf("signature at 335..591 over 0..335: %v", err)
	}
	// No resume key was given, so the resume tag is 32 zero bytes (also with replaces != 0).
	if !bytes.Equal(pkt[591:623], make([]byte, 32)) {
		t.Errorf("resume tag at 591..623 is % x, want zeros", pkt[591:623])
	}
	if want := wireMAC(t).Sum(nil, pkt[:623]); !bytes.Equal(pkt[623:], want) {
		t.Errorf("MAC at 623..655 over 0..623 does not verify")
	}

	var init Initiation
	if err := ParseInitiation(pkt, &init); err != nil {
		t.Fatal(err)
	}
	if init.Sender != 0x1234 || init.Replaces != 0xbeef || init.Timestamp != ts || init.OperatorKey != opID ||
		init.DroneKey != droneID || !bytes.Equal(init.Ephemeral[:], pkt[45:77]) ||
		!bytes.Equal(init.Wrapped, pkt[79:335]) || !bytes.Equal(init.Signature, pkt[335:591]) ||
		!bytes.Equal(init.Resume, pkt[591:623]) || !bytes.Equal(init.Signed, pkt[:335]) || !bytes.Equal(init.Raw, pkt) {
		t.Errorf("parsed initiation does not match the bytes: %+v", init)
	}
	for name, s := range map[string][]byte{"Wrapped": init.Wrapped, "Signature": init.Signature, "Resume": init.Resume, "Signed": init.Signed} {
		if !wireWithin(s, pkt) {
			t.Errorf("%s does not alias the datagram", name)
		}
	}
	if body := appendInitiationBody(nil, &init); !bytes.Equal(body, init.Signed) {
		t.Errorf("appendInitiationBody(parsed) != signed part")
	}

	// A retry is a fresh initiation with a strictly newer timestamp.
	pkt2, err := h.Initiation(now)
	if err != nil {
		t.Fatal(err)
	}
	if ts2 := binary.BigEndian.Uint64(pkt2[5:13]); ts2 <= ts {
		t.Errorf("retry timestamp %d not after %d", ts2, ts)
	}
	if bytes.Equal(pkt2[45:77], pkt[45:77]) {
		t.Errorf("retry reuses the ephemeral key")
	}
}

// TestWireInitiationBodyBytes checks the builder against a literal byte layout.
func TestWireInitiationBodyBytes(t *testing.T) {
	pkt := wireSynthInitiation(256, 256)
	want := []byte{0x11, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c}
	for i := range 16 {
		want = append(want, 0x10+byte(i))
	}
	for i := range 16 {
		want = append(want, 0x20+byte(i))
	}
	for i := range 32 {
		want = append(want, 0x40+byte(i))
	}
	want = append(want, 0x01, 0x00)
	want = append(want, wireFill(256, 0xaa)...)
	want = append(want, wireFill(256, 0xbb)...)
	want = append(want, wireFill(32, 0xdd)...)
	want = append(want, wireFill(32, 0xcc)...)
	if !bytes.Equal(pkt, want) {
		t.Fatalf("initiation layout:\n got % x\nwant % x", pkt, want)
	}
	var init Initiation
	if err := ParseInitiation(pkt, &init); err != nil {
		t.Fatal(err)
	}
	if init.Sender != 0x0102 || init.Replaces != 0x0304 || init.Timestamp != 0x05060708090a0b0c {
		t.Errorf("big-endian fields: %#x %#x %#x", init.Sender, init.Replaces, init.Timestamp)
	}
	if init.OperatorKey[0] != 0x10 || init.DroneKey[15] != 0x2f || init.Ephemeral[31] != 0x5f {
		t.Errorf("key fields misplaced")
	}
	// Wrapped 79..335, signature 335..591, resume 591..623, MAC 623..655.
	if !bytes.Equal(init.Wrapped, pkt[79:335]) || !bytes.Equal(init.Signature, pkt[335:591]) ||
		!bytes.Equal(init.Resume, pkt[591:623]) || !bytes.Equal(init.Signed, pkt[:335]) ||
		!bytes.Equal(init.Resume, wireFill(32, 0xdd)) || !bytes.Equal(pkt[623:], wireFill(32, 0xcc)) {
		t.Errorf("variable fields misplaced")
	}
	// The aliased slices are capped so that appending to one cannot overwrite the next.
	for name, s := range map[string][]byte{"Wrapped": init.Wrapped, "Signature": init.Signature, "Resume": init.Resume, "Signed": init.Signed} {
		if cap(s) != len(s) {
			t.Errorf("%s: cap %d != len %d", name, cap(s), len(s))
		}
	}
}

// TestWireHandshakeBytes checks the response and error datagrams a real Responder builds.
func TestWireHandshakeBytes(t *testing.T) {
	r, auth, key := wireResponder(t)
	h := wireInitiator(t, testOp1, &testDrone.PublicKey, 0x1234, 0xbeef)
	pkt, err := h.Initiation(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	var init Initiation
	if err := r.CheckInitiation(pkt, &init); err != nil {
		t.Fatal(err)
	}
	mac := wireMAC(t)

	// Error datagrams, one per refusal that is answered.
	for _, c := range []struct {
		err  error
		code ErrorCode
	}{
		{ErrWrongDroneKey, CodeWrongDroneKey},
		{ErrUnknownOperatorKey, CodeUnknownOperator},
		{ErrStale, CodeStale},
		{ErrRateLimited, CodeBusy},
		{ErrSessionLimit, CodeBusy},
		{ErrBadSignature, CodeBadSignature},
	} {
		out, ok := r.ErrorReply([]byte("xy"), &init, c.err)
		if !ok || !bytes.Equal(out[:2], []byte("xy")) {
			t.Fatalf("%v: no reply or prefix lost", c.err)
		}
		e := out[2:]
		if len(e) != ErrorSize || e[0] != 0x13 || !bytes.Equal(e[1:3], []byte{0x12, 0x34}) || e[3] != byte(c.code) ||
			!bytes.Equal(e[4:12], pkt[5:13]) || !bytes.Equal(e[12:], mac.Sum(nil, e[:12])) {
			t.Errorf("%v: error datagram % x", c.err, e)
		}
		var ep ErrorPacket
		if err := ParseError(e, &ep); err != nil || ep.Receiver != 0x1234 || ep.Code != c.code || ep.Timestamp != init.Timestamp {
			t.Errorf("%v: parsed %+v, %v", c.err, ep, err)
		}
		if !bytes.Equal(append(appendErrorBody(nil, &ep), e[errOffMAC:]...), e) {
			t.Errorf("%v: re-encoding differs", c.err)
		}
		if c.code.Err() != c.err && c.err != ErrSessionLimit {
			t.Errorf("%v: code %v maps back to %v", c.err, c.code, c.code.Err())
		}
		if c.code == CodeStale || c.code == CodeBusy { // non-final: the initiator keeps going
			if got, err := h.ConsumeError(e); err != nil || got != c.code || h.State() != StateInitiationSent {
				t.Errorf("ConsumeError: %v %v state %v", got, err, h.State())
			}
		}
	}
	for _, err := range []error{ErrMalformed, ErrBadMAC, ErrDecrypt, ErrReplay, errors.New("other")} {
		if out, ok := r.ErrorReply([]byte("xy"), &init, err); ok || string(out) != "xy" {
			t.Errorf("%v answered with % x", err, out)
		}
	}
	if key.unwraps.Load() != 0 || auth.lookups.Load() != 0 {
		t.Fatalf("checks and error replies did RSA or lookup work")
	}

	out, acc, err := r.AcceptInitiation([]byte("junk"), &init, 0xabcd, FlagLoginCarried)
	if err != nil {
		t.Fatal(err)
	}
	if key.unwraps.Load() != 1 || auth.lookups.Load() != 1 {
		t.Errorf("unwraps %d lookups %d, want 1 1", key.unwraps.Load(), auth.lookups.Load())
	}
	if !bytes.Equal(out[:4], []byte("junk")) {
		t.Fatalf("AcceptInitiation lost the prefix")
	}
	resp := out[4:]
	if len(resp) != ResponseSize {
		t.Fatalf("response %d bytes", len(resp))
	}
	if resp[0] != 0x12 || !bytes.Equal(resp[1:6], []byte{0xab, 0xcd, 0x12, 0x34, 0x01}) {
		t.Errorf("response header % x", resp[:6])
	}
	if _, err := ecdh.X25519().NewPublicKey(resp[6:38]); err != nil || bytes.Equal(resp[6:38], pkt[45:77]) {
		t.Errorf("response ephemeral % x: %v", resp[6:38], err)
	}
	if !bytes.Equal(resp[54:], mac.Sum(nil, resp[:54])) {
		t.Errorf("response MAC at 54..86 does not verify")
	}
	var rp Response
	if err := ParseResponse(resp, &rp); err != nil {
		t.Fatal(err)
	}
	if rp.Sender != 0xabcd || rp.Receiver != 0x1234 || rp.Flags != FlagLoginCarried ||
		!bytes.Equal(rp.Ephemeral[:], resp[6:38]) || !bytes.Equal(rp.Confirm[:], resp[38:54]) {
		t.Errorf("parsed response %+v", rp)
	}
	re := appendResponsePrefix(nil, rp.Sender, rp.Receiver, rp.Flags, rp.Ephemeral[:])
	re = append(append(re, rp.Confirm[:]...), resp[respOffMAC:]...)
	if !bytes.Equal(re, resp) {
		t.Errorf("re-encoded response differs")
	}
	if acc.OperatorIndex != 0x1234 || acc.Replaces != 0xbeef || acc.Timestamp != init.Timestamp ||
		acc.OperatorKey != crypto.KeyIDOf(&testOp1.PublicKey) {
		t.Errorf("accepted %+v", acc)
	}
	keys, rp2, err := h.ConsumeResponse(resp)
	if err != nil {
		t.Fatal(err)
	}
	if rp2 != rp || keys.Send != acc.Keys.Recv || keys.Recv != acc.Keys.Send || keys.Send == keys.Recv {
		t.Errorf("keys do not mirror")
	}
}

// TestWireDataBytes checks the data header a Session writes and the sizes it produces.
func TestWireDataBytes(t *testing.T) {
	var keys SessionKeys
	for i := range keys.Send {
		keys.Send[i], keys.Recv[i] = byte(i), byte(100+i)
	}
	now := time.Now()
	a, err := NewSession(&keys, 0x0a0b, 0xc0de, 0, now)
	if err != nil {
		t.Fatal(err)
	}
	keys.Send, keys.Recv = keys.Recv, keys.Send
	b, err := NewSession(&keys, 0xc0de, 0x0a0b, 0, now)
	if err != nil {
		t.Fatal(err)
	}
	for i, c := range []struct {
		plaintext []byte
		counter   []byte
	}{
		{AppendKeepalive(nil), []byte{0, 0, 0, 0}},
		{AppendCommand(nil, 7, testCommand, []byte("arm")), []byte{0, 0, 0, 1}},
		{AppendTelemetry(nil, wireFill(MaxTelemetryPayload, 't')), []byte{0, 0, 0, 2}},
	} {
		pkt, err := a.Seal([]byte("p"), c.plaintext, now)
		if err != nil {
			t.Fatal(err)
		}
		if pkt[0] != 'p' {
			t.Fatalf("Seal lost the prefix")
		}
		pkt = pkt[1:]
		if len(pkt) != len(c.plaintext)+DataOverhead || len(pkt) > MaxDatagramSize {
			t.Errorf("%d: len %d for %d-byte plaintext", i, len(pkt), len(c.plaintext))
		}
		if pkt[0] != 0x14 || !bytes.Equal(pkt[1:3], []byte{0xc0, 0xde}) || !bytes.Equal(pkt[3:7], c.counter) {
			t.Errorf("%d: header % x", i, pkt[:7])
		}
		h, err := ParseDataHeader(pkt)
		if err != nil || h.Receiver != 0xc0de || h.Counter != binary.BigEndian.Uint32(c.counter) {
			t.Fatalf("%d: header %+v %v", i, h, err)
		}
		if !bytes.Equal(appendDataHeader(nil, h.Receiver, h.Counter), pkt[:DataHeaderSize]) {
			t.Errorf("%d: re-encoded header differs", i)
		}
		plain, err := b.Open(nil, pkt, h, now)
		if err != nil || !bytes.Equal(plain, c.plaintext) {
			t.Errorf("%d: Open: %v", i, err)
		}
	}
	// Counters are big-endian on the wire.
	a.sendMu.Lock()
	a.sendCounter = 0x01020304
	a.sendMu.Unlock()
	pkt, err := a.Seal(nil, AppendKeepalive(nil), now)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(pkt[:7], []byte{0x14, 0xc0, 0xde, 0x01, 0x02, 0x03, 0x04}) {
		t.Errorf("header % x", pkt[:7])
	}
	// Plaintext size limits.
	for _, n := range []int{0, MaxPlaintextSize + 1} {
		if _, err := a.Seal(nil, make([]byte, n), now); !errors.Is(err, ErrTooLarge) {
			t.Errorf("Seal of %d bytes: %v", n, err)
		}
	}
}

// wireLengths returns every length from lo to hi inclusive plus a few far ones.
func wireLengths(lo, hi int) []int {
	var ns []int
	for n := lo; n <= hi; n++ {
		ns = append(ns, n)
	}
	return ns
}

// wireResize returns pkt cut or zero-extended to n bytes.
func wireResize(pkt []byte, n int) []byte {
	out := make([]byte, n)
	copy(out, pkt)
	return out
}

func TestParseInitiationMalformed(t *testing.T) {
	valid := wireSynthInitiation(256, 256)
	var init Initiation
	if err := ParseInitiation(valid, &init); err != nil {
		t.Fatal(err)
	}
	set := func(off int, v ...byte) []byte {
		b := bytes.Clone(valid)
		copy(b[off:], v)
		return b
	}
	for _, c := range []struct {
		name string
		pkt  []byte
	}{
		{"nil", nil},
		{"version 0", set(0, 0x01)},
		{"version 2", set(0, 0x21)},
		{"version 15", set(0, 0xf1)},
		{"type 0", set(0, 0x10)},
		{"type response", set(0, 0x12)},
		{"type error", set(0, 0x13)},
		{"type data", set(0, 0x14)},
		{"type 15", set(0, 0x1f)},
		{"zero sender", set(1, 0, 0)},
		{"wrap length 0", set(77, 0, 0)},
		{"wrap length 255", set(77, 0, 255)},
		{"wrap length 257 (signature 255)", set(77, 1, 1)},
		{"wrap length 512 (signature 0)", set(77, 2, 0)},
		{"wrap length 513", set(77, 2, 1)},
		{"wrap length 65535", set(77, 0xff, 0xff)},
		{"wrap length exceeds datagram", set(77, 0x02, 0x70)},
		{"wrap 255 signature 257", wireSynthInitiation(255, 257)},
		{"wrap 257 signature 255", wireSynthInitiation(257, 255)},
		{"wrap 513 signature 256", wireSynthInitiation(513, 256)},
		{"wrap 256 signature 513", wireSynthInitiation(256, 513)},
		{"wrap 512 signature 513", wireSynthInitiation(512, 513)},
		{"wrap 513 signature 512", wireSynthInitiation(513, 512)},
		{"wrap 0 signature 512", wireSynthInitiation(0, 512)},
		{"oversize 1168", wireResize(wireSynthInitiation(512, 512), MaxInitiationSize+1)},
		{"previous layout 2048/2048 (623 bytes, no resume tag)", valid[:623]},
		{"datagram max", wireResize(valid, MaxDatagramSize)},
	} {
		t.Run(c.name, func(t *testing.T) {
			if err := ParseInitiation(c.pkt, &init); !errors.Is(err, ErrMalformed) {
				t.Fatalf("got %v, want ErrMalformed", err)
			}
		})
	}
	// Every length around the bounds, for the smallest and largest wrapped secret: only
	// lengths whose implied signature size is 256..512 bytes parse.
	for _, wrap := range []int{MinRSABytes, 384, MaxRSABytes} {
		base := wireSynthInitiation(wrap, MaxRSABytes+64)
		for _, n := range append(wireLengths(0, MaxInitiationSize+2), MaxDatagramSize, ReadBufferSize) {
			pkt := wireResize(base, n)
			sig := n - InitiationFixedSize - wrap
			wantOK := sig >= MinRSABytes && sig <= MaxRSABytes
			err := ParseInitiation(pkt, &init)
			if wantOK != (err == nil) {
				t.Errorf("wrap %d, len %d: err %v, want ok=%v", wrap, n, err, wantOK)
			} else if err != nil && !errors.Is(err, ErrMalformed) {
				t.Errorf("wrap %d, len %d: %v", wrap, n, err)
			} else if err == nil && (len(init.Wrapped) != wrap || len(init.Signature) != sig) {
				t.Errorf("wrap %d, len %d: parsed %d/%d", wrap, n, len(init.Wrapped), len(init.Signature))
			} else if err == nil && (len(init.Resume) != resumeSize || &init.Resume[0] != &pkt[n-resumeSize-macSize]) {
				t.Errorf("wrap %d, len %d: resume tag not the 32 bytes before the MAC", wrap, n)
			}
		}
	}
	// Valid edge cases: zero replaces and timestamp, every wrap/signature size combination.
	for _, c := range [][2]int{{256, 256}, {256, 512}, {512, 256}, {512, 512}, {300, 400}} {
		pkt := wireSynthInitiation(c[0], c[1])
		copy(pkt[3:13], make([]byte, 10))
		if err := ParseInitiation(pkt, &init); err != nil {
			t.Errorf("wrap %d sig %d: %v", c[0], c[1], err)
		}
	}
}

func TestParseResponseMalformed(t *testing.T) {
	valid := wireSynthResponse(0x0102, 0x0304, FlagLoginCarried)
	var r Response
	if err := ParseResponse(valid, &r); err != nil || r.Sender != 0x0102 || r.Receiver != 0x0304 || r.Flags != 1 {
		t.Fatalf("valid response: %+v %v", r, err)
	}
	if err := ParseResponse(wireSynthResponse(0xffff, 0xffff, 0), &r); err != nil {
		t.Fatalf("flags 0: %v", err)
	}
	for _, n := range append(wireLengths(0, ResponseSize+1), MaxDatagramSize, ReadBufferSize) {
		err := ParseResponse(wireResize(valid, n), &r)
		if (n == ResponseSize) != (err == nil) || (err != nil && !errors.Is(err, ErrMalformed)) {
			t.Errorf("len %d: %v", n, err)
		}
	}
	set := func(off int, v ...byte) []byte {
		b := bytes.Clone(valid)
		copy(b[off:], v)
		return b
	}
	for _, c := range []struct {
		name string
		pkt  []byte
	}{
		{"version 0", set(0, 0x02)},
		{"version 2", set(0, 0x22)},
		{"version 15", set(0, 0xf2)},
		{"type initiation", set(0, 0x11)},
		{"type error", set(0, 0x13)},
		{"type data", set(0, 0x14)},
		{"type 0", set(0, 0x10)},
		{"zero sender", set(1, 0, 0)},
		{"zero receiver", set(3, 0, 0)},
		{"flag bit 1", set(5, 0x02)},
		{"flag bits 0 and 1", set(5, 0x03)},
		{"flag bit 7", set(5, 0x80)},
		{"all flags", set(5, 0xff)},
	} {
		t.Run(c.name, func(t *testing.T) {
			if err := ParseResponse(c.pkt, &r); !errors.Is(err, ErrMalformed) {
				t.Fatalf("got %v, want ErrMalformed", err)
			}
		})
	}
}

func TestParseErrorMalformed(t *testing.T) {
	valid := wireSynthError(0x0102, CodeBusy, 0x0102030405060708)
	var e ErrorPacket
	if err := ParseError(valid, &e); err != nil || e.Receiver != 0x0102 || e.Code != CodeBusy || e.Timestamp != 0x0102030405060708 {
		t.Fatalf("valid error: %+v %v", e, err)
	}
	for code := ErrorCode(1); code <= maxErrorCode; code++ {
		if err := ParseError(wireSynthError(1, code, 0), &e); err != nil || e.Code != code {
			t.Errorf("code %d: %v", code, err)
		}
	}
	for _, n := range append(wireLengths(0, ErrorSize+1), ResponseSize, MaxDatagramSize) {
		err := ParseError(wireResize(valid, n), &e)
		if (n == ErrorSize) != (err == nil) || (err != nil && !errors.Is(err, ErrMalformed)) {
			t.Errorf("len %d: %v", n, err)
		}
	}
	set := func(off int, v ...byte) []byte {
		b := bytes.Clone(valid)
		copy(b[off:], v)
		return b
	}
	for _, c := range []struct {
		name string
		pkt  []byte
	}{
		{"version 0", set(0, 0x03)},
		{"version 2", set(0, 0x23)},
		{"type response", set(0, 0x12)},
		{"type data", set(0, 0x14)},
		{"type 0", set(0, 0x10)},
		{"zero receiver", set(1, 0, 0)},
		{"code 0", set(3, 0)},
		{"code max+1", set(3, byte(maxErrorCode)+1)},
		{"code 255", set(3, 255)},
	} {
		t.Run(c.name, func(t *testing.T) {
			if err := ParseError(c.pkt, &e); !errors.Is(err, ErrMalformed) {
				t.Fatalf("got %v, want ErrMalformed", err)
			}
		})
	}
}

func TestParseDataHeaderMalformed(t *testing.T) {
	for _, n := range append(wireLengths(0, DataOverhead+1), MaxDatagramSize-1, MaxDatagramSize, MaxDatagramSize+1, ReadBufferSize) {
		pkt := wireSynthData(0x0102, 0x03040506, max(n, DataHeaderSize))[:n]
		h, err := ParseDataHeader(pkt)
		wantOK := n > DataOverhead && n <= MaxDatagramSize // at least one plaintext byte
		if wantOK != (err == nil) || (err != nil && !errors.Is(err, ErrMalformed)) {
			t.Errorf("len %d: %v", n, err)
		}
		if err == nil && (h.Receiver != 0x0102 || h.Counter != 0x03040506) {
			t.Errorf("len %d: header %+v", n, h)
		}
		if err != nil && h != (DataHeader{}) {
			t.Errorf("len %d: header %+v returned with an error", n, h)
		}
	}
	// Counters 0 and 2^32-1 parse (the session refuses the latter).
	for _, c := range []uint32{0, 1, 0xffffffff} {
		if h, err := ParseDataHeader(wireSynthData(1, c, 30)); err != nil || h.Counter != c {
			t.Errorf("counter %#x: %+v %v", c, h, err)
		}
	}
	valid := wireSynthData(0x0102, 7, 40)
	set := func(off int, v ...byte) []byte {
		b := bytes.Clone(valid)
		copy(b[off:], v)
		return b
	}
	for _, c := range []struct {
		name string
		pkt  []byte
	}{
		{"version 0", set(0, 0x04)},
		{"version 2", set(0, 0x24)},
		{"version 15", set(0, 0xf4)},
		{"type initiation", set(0, 0x11)},
		{"type response", set(0, 0x12)},
		{"type error", set(0, 0x13)},
		{"type 5", set(0, 0x15)},
		{"zero receiver", set(1, 0, 0)},
	} {
		t.Run(c.name, func(t *testing.T) {
			if h, err := ParseDataHeader(c.pkt); !errors.Is(err, ErrMalformed) || h != (DataHeader{}) {
				t.Fatalf("got %+v %v, want ErrMalformed", h, err)
			}
		})
	}
}

// TestParseCrossType feeds each parser the valid datagrams of the other types.
func TestParseCrossType(t *testing.T) {
	pkts := map[byte][]byte{
		TypeInitiation: wireSynthInitiation(256, 256),
		TypeResponse:   wireSynthResponse(1, 2, 0),
		TypeError:      wireSynthError(1, CodeStale, 3),
		TypeData:       wireSynthData(1, 2, 100),
	}
	for typ, pkt := range pkts {
		if got, ok := PeekType(pkt); !ok || got != typ {
			t.Errorf("PeekType of type %d: %d %v", typ, got, ok)
		}
		var init Initiation
		var r Response
		var e ErrorPacket
		_, errData := ParseDataHeader(pkt)
		for ptyp, err := range map[byte]error{
			TypeInitiation: ParseInitiation(pkt, &init),
			TypeResponse:   ParseResponse(pkt, &r),
			TypeError:      ParseError(pkt, &e),
			TypeData:       errData,
		} {
			if (ptyp == typ) != (err == nil) {
				t.Errorf("type %d datagram, parser for type %d: %v", typ, ptyp, err)
			}
		}
	}
	// A response-sized datagram with an error type byte and the other way round.
	resp := wireSynthResponse(1, 2, 0)
	resp[0] = typeByte(TypeError)
	var e ErrorPacket
	if err := ParseError(resp, &e); !errors.Is(err, ErrMalformed) {
		t.Errorf("86-byte error parsed: %v", err)
	}
}

func TestPeekType(t *testing.T) {
	for _, c := range []struct {
		pkt  []byte
		typ  byte
		okay bool
	}{
		{nil, 0, false},
		{[]byte{}, 0, false},
		{[]byte{0x00}, 0, false},
		{[]byte{0x01}, 0, false},
		{[]byte{0x04, 1, 2}, 0, false},
		{[]byte{0x21}, 0, false},
		{[]byte{0x31}, 0, false},
		{[]byte{0xf4}, 0, false},
		{[]byte{0xff}, 0, false},
		{[]byte{0x10}, 0, true},
		{[]byte{0x11}, TypeInitiation, true},
		{[]byte{0x12, 0xff}, TypeResponse, true},
		{[]byte{0x13}, TypeError, true},
		{[]byte{0x14, 0, 0, 0}, TypeData, true},
		{[]byte{0x15}, 5, true},
		{[]byte{0x1f}, 15, true},
	} {
		typ, ok := PeekType(c.pkt)
		if typ != c.typ || ok != c.okay {
			t.Errorf("PeekType(% x) = %d %v, want %d %v", c.pkt, typ, ok, c.typ, c.okay)
		}
	}
}
