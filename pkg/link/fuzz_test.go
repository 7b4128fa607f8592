package link

import (
	"bytes"
	"crypto/rsa"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Fuzz targets for the wire parsers, the cheap initiation check and data-datagram opening.
// Seeds come from f.Add (datagrams built by this process) and from the files under
// testdata/fuzz/<FuzzName>/.
//
// Every parser target copies the input into a buffer with a guard tail so that a parser
// reaching past len(pkt) (inside cap) would be caught by the slice checks.

// fuzzGuarded returns a copy of in followed by spare capacity filled with 0xee.
func fuzzGuarded(in []byte) []byte {
	buf := make([]byte, len(in)+64)
	copy(buf, in)
	for i := len(in); i < len(buf); i++ {
		buf[i] = 0xee
	}
	return buf[:len(in)]
}

// fuzzRealHandshake builds one real initiation, response and error datagram with the test
// keys (random per process, so only f.Add can carry the fully valid ones).
func fuzzRealHandshake(f *testing.F) (initiation, response, errorPkt []byte) {
	f.Helper()
	r, _, _ := wireResponder(f)
	h := wireInitiator(f, testOp1, &testDrone.PublicKey, 0x0101, 0x0202)
	initiation, err := h.Initiation(time.Now())
	if err != nil {
		f.Fatal(err)
	}
	var init Initiation
	if err := r.CheckInitiation(initiation, &init); err != nil {
		f.Fatal(err)
	}
	errorPkt, _ = r.ErrorReply(nil, &init, ErrStale)
	response, _, err = r.AcceptInitiation(nil, &init, 0x0303, FlagLoginCarried)
	if err != nil {
		f.Fatal(err)
	}
	return initiation, response, errorPkt
}

// fuzzSeedFile reads one []byte seed of testdata/fuzz/<target>/<name>.
func fuzzSeedFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) != 2 || lines[0] != "go test fuzz v1" || !strings.HasPrefix(lines[1], "[]byte(") || !strings.HasSuffix(lines[1], ")") {
		t.Fatalf("%s: not a one-[]byte seed file", path)
	}
	v, err := strconv.Unquote(strings.TrimSuffix(strings.TrimPrefix(lines[1], "[]byte("), ")"))
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return []byte(v)
}

// TestFuzzInitiationSeedFiles keeps the initiation seed files in step with the layout:
// the valid-* seeds of FuzzParseInitiation parse (the synthetic ones are exactly what
// wireSynthInitiation builds) and the others do not; the FuzzResponderCheckInitiation
// seeds all parse, so they reach the MAC check, except the one with another version.
func TestFuzzInitiationSeedFiles(t *testing.T) {
	synth := map[string][]byte{
		"valid-synthetic-4096":  wireSynthInitiation(512, 512),
		"valid-synthetic-mixed": wireSynthInitiation(300, 400),
		"synthetic-4096":        wireSynthInitiation(512, 512),
	}
	for _, target := range []string{"FuzzParseInitiation", "FuzzResponderCheckInitiation"} {
		paths, err := filepath.Glob(filepath.Join("testdata", "fuzz", target, "*"))
		if err != nil || len(paths) == 0 {
			t.Fatalf("%s: no seed files (%v)", target, err)
		}
		for _, path := range paths {
			name := filepath.Base(path)
			pkt := fuzzSeedFile(t, path)
			wantOK := strings.HasPrefix(name, "valid-")
			if target == "FuzzResponderCheckInitiation" {
				wantOK = name != "wrong-version"
			}
			var init Initiation
			if err := ParseInitiation(pkt, &init); (err == nil) != wantOK {
				t.Errorf("%s/%s (%d bytes): ParseInitiation %v, want ok=%v", target, name, len(pkt), err, wantOK)
			}
			if want, ok := synth[name]; ok && !bytes.Equal(pkt, want) {
				t.Errorf("%s/%s differs from wireSynthInitiation", target, name)
			}
		}
	}
}

func FuzzParseInitiation(f *testing.F) {
	real, _, _ := fuzzRealHandshake(f)
	f.Add(real)
	rekey, err := NewInitiator(InitiatorConfig{PSK: testPSK, OperatorKey: testOp1, DronePublic: &testDrone.PublicKey,
		ResumeKey: wireFill(32, 0x5a)}, 0x0101, 0x0202)
	if err != nil {
		f.Fatal(err)
	}
	withTag, err := rekey.Initiation(time.Now())
	if err != nil {
		f.Fatal(err)
	}
	f.Add(withTag)
	f.Add(wireSynthInitiation(256, 256))
	f.Add(wireSynthInitiation(512, 512))
	f.Add(wireSynthInitiation(300, 400))
	f.Add(wireSynthInitiation(256, 255))
	f.Add(real[:MinInitiationSize-1])
	f.Fuzz(func(t *testing.T, in []byte) {
		pkt := fuzzGuarded(in)
		var init Initiation
		if err := ParseInitiation(pkt, &init); err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v is not ErrMalformed", err)
			}
			return
		}
		if len(pkt) < MinInitiationSize || len(pkt) > MaxInitiationSize || init.Sender == 0 {
			t.Fatalf("accepted length %d sender %d", len(pkt), init.Sender)
		}
		if len(init.Wrapped) < MinRSABytes || len(init.Wrapped) > MaxRSABytes ||
			len(init.Signature) < MinRSABytes || len(init.Signature) > MaxRSABytes {
			t.Fatalf("wrapped %d signature %d out of range", len(init.Wrapped), len(init.Signature))
		}
		if len(init.Resume) != resumeSize {
			t.Fatalf("resume tag of %d bytes", len(init.Resume))
		}
		for name, s := range map[string][]byte{"Wrapped": init.Wrapped, "Signature": init.Signature, "Resume": init.Resume, "Signed": init.Signed, "Raw": init.Raw} {
			if !wireWithin(s, pkt) {
				t.Fatalf("%s outside the input", name)
			}
		}
		for name, s := range map[string][]byte{"Wrapped": init.Wrapped, "Signature": init.Signature, "Resume": init.Resume, "Signed": init.Signed} {
			if cap(s) != len(s) {
				t.Fatalf("%s: cap %d != len %d", name, cap(s), len(s))
			}
		}
		// The resume tag is the 32 bytes right before the MAC, right after the signature.
		if &init.Resume[0] != &pkt[len(pkt)-macSize-resumeSize] || &init.Signature[0] != &pkt[len(init.Signed)] {
			t.Fatalf("signature or resume tag not where the layout puts them")
		}
		// Round trip: body ‖ signature ‖ resume ‖ MAC is the input, and the body is what is
		// signed.
		body := appendInitiationBody(nil, &init)
		if !bytes.Equal(body, init.Signed) {
			t.Fatalf("re-encoded body differs from the signed part")
		}
		re := append(append(append(body, init.Signature...), init.Resume...), pkt[len(pkt)-macSize:]...)
		if !bytes.Equal(re, pkt) {
			t.Fatalf("round trip:\n got % x\nwant % x", re, pkt)
		}
		if !bytes.Equal(init.Raw, pkt) {
			t.Fatalf("Raw is not the datagram")
		}
	})
}

func FuzzParseResponse(f *testing.F) {
	_, real, _ := fuzzRealHandshake(f)
	f.Add(real)
	f.Add(wireSynthResponse(1, 2, 0))
	f.Add(wireSynthResponse(0xffff, 0xffff, FlagLoginCarried))
	f.Add(wireSynthResponse(1, 2, 2))
	f.Fuzz(func(t *testing.T, in []byte) {
		pkt := fuzzGuarded(in)
		var r Response
		if err := ParseResponse(pkt, &r); err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v is not ErrMalformed", err)
			}
			return
		}
		if len(pkt) != ResponseSize || r.Sender == 0 || r.Receiver == 0 || r.Flags&^respKnownFlags != 0 {
			t.Fatalf("accepted %+v of length %d", r, len(pkt))
		}
		re := appendResponsePrefix(nil, r.Sender, r.Receiver, r.Flags, r.Ephemeral[:])
		re = append(append(re, r.Confirm[:]...), pkt[respOffMAC:]...)
		if !bytes.Equal(re, pkt) {
			t.Fatalf("round trip:\n got % x\nwant % x", re, pkt)
		}
	})
}

func FuzzParseError(f *testing.F) {
	_, _, real := fuzzRealHandshake(f)
	f.Add(real)
	f.Add(wireSynthError(1, CodeWrongDroneKey, 0))
	f.Add(wireSynthError(0xffff, CodeBadSignature, ^uint64(0)))
	f.Add(wireSynthError(1, maxErrorCode+1, 0))
	f.Fuzz(func(t *testing.T, in []byte) {
		pkt := fuzzGuarded(in)
		var e ErrorPacket
		if err := ParseError(pkt, &e); err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v is not ErrMalformed", err)
			}
			return
		}
		if len(pkt) != ErrorSize || e.Receiver == 0 || e.Code == 0 || e.Code > maxErrorCode {
			t.Fatalf("accepted %+v of length %d", e, len(pkt))
		}
		if e.Code.String() == errorCodeUnknownLabel || errors.Is(e.Code.Err(), ErrMalformed) {
			t.Fatalf("accepted code %d has no name or error", e.Code)
		}
		re := append(appendErrorBody(nil, &e), pkt[errOffMAC:]...)
		if !bytes.Equal(re, pkt) {
			t.Fatalf("round trip:\n got % x\nwant % x", re, pkt)
		}
	})
}

func FuzzParseDataHeader(f *testing.F) {
	op, _ := fuzzSessionPair(f)
	sealed, err := op.Seal(nil, AppendCommand(nil, 1, testCommand, []byte("arm")), time.Now())
	if err != nil {
		f.Fatal(err)
	}
	f.Add(sealed)
	f.Add(wireSynthData(1, 0, DataOverhead))
	f.Add(wireSynthData(0xffff, 0xffffffff, MaxDatagramSize))
	f.Add(wireSynthData(0, 1, 30))
	f.Fuzz(func(t *testing.T, in []byte) {
		pkt := fuzzGuarded(in)
		h, err := ParseDataHeader(pkt)
		if err != nil {
			if !errors.Is(err, ErrMalformed) || h != (DataHeader{}) {
				t.Fatalf("error %v, header %+v", err, h)
			}
			return
		}
		if len(pkt) <= DataOverhead || len(pkt) > MaxDatagramSize || h.Receiver == 0 {
			t.Fatalf("accepted %+v of length %d", h, len(pkt))
		}
		if typ, ok := PeekType(pkt); !ok || typ != TypeData {
			t.Fatalf("PeekType disagrees: %d %v", typ, ok)
		}
		re := append(appendDataHeader(nil, h.Receiver, h.Counter), pkt[DataHeaderSize:]...)
		if !bytes.Equal(re, pkt) {
			t.Fatalf("round trip:\n got % x\nwant % x", re, pkt)
		}
	})
}

// FuzzResponderCheckInitiation feeds arbitrary bytes to the cheap first stage of the
// drone's handshake. Only a bit-exact initiation built by an Initiator with the PSK may
// pass it; everything else stops there, before any operator-key lookup or RSA unwrap.
//
// The valid seeds are built at run time with testKeys and testPSK, which are random per
// process: the seed files (and the inputs the fuzzing coordinator sends to its workers)
// are structurally valid initiations whose MAC does not verify here.
func FuzzResponderCheckInitiation(f *testing.F) {
	r, auth, key := wireResponder(f)
	mkResume := func(op *rsa.PrivateKey, drone *rsa.PublicKey, replaces uint16, resumeKey []byte) string {
		h, err := NewInitiator(InitiatorConfig{PSK: testPSK, OperatorKey: op, DronePublic: drone, ResumeKey: resumeKey}, 0x0101, replaces)
		if err != nil {
			f.Fatal(err)
		}
		pkt, err := h.Initiation(time.Now())
		if err != nil {
			f.Fatal(err)
		}
		return string(pkt)
	}
	mk := func(op *rsa.PrivateKey, drone *rsa.PublicKey) string { return mkResume(op, drone, 0, nil) }
	// Valid initiations (MAC and structure), with the outcome AcceptInitiation must have and
	// how many lookups and unwraps it does.
	type outcome struct {
		err              error
		lookups, unwraps int64
	}
	valid := map[string]outcome{}
	valid[mk(testOp1, &testDrone.PublicKey)] = outcome{nil, 1, 1}                   // authorised, right drone key
	valid[mk(testOp1, &testDrone.PublicKey)] = outcome{nil, 1, 1}                   // a retry: another valid datagram
	valid[mk(testOp2, &testDrone.PublicKey)] = outcome{ErrUnknownOperatorKey, 1, 0} // testOp2 is not authorised
	valid[mk(testOp1, &testOther.PublicKey)] = outcome{ErrWrongDroneKey, 0, 0}      // wrapped to testOther
	// A rekey with a nonzero resume tag: the Responder does not judge the tag (the server
	// does, against the replaced session), but the PSK MAC covers it.
	rekey := mkResume(testOp1, &testDrone.PublicKey, 0x0202, wireFill(32, 0x5a))
	valid[rekey] = outcome{nil, 1, 1}
	for pkt := range valid {
		f.Add([]byte(pkt))
		// Structurally valid, MAC broken.
		bad := []byte(pkt)
		bad[len(bad)/2] ^= 0x01
		f.Add(bad)
	}
	// Resume tag changed (zeroed) after the MAC was computed.
	stripped := []byte(rekey)
	clear(stripped[len(stripped)-macSize-resumeSize : len(stripped)-macSize])
	f.Add(stripped)
	f.Add(wireSynthInitiation(256, 256))
	f.Add([]byte{})

	var wantLookups, wantUnwraps int64 // accumulated over the executions that reach AcceptInitiation
	f.Fuzz(func(t *testing.T, pkt []byte) {
		var init Initiation
		err := r.CheckInitiation(pkt, &init)
		if got := auth.lookups.Load(); got != wantLookups {
			t.Fatalf("CheckInitiation looked up operator keys: %d lookups, want %d", got, wantLookups)
		}
		if got := key.unwraps.Load(); got != wantUnwraps {
			t.Fatalf("CheckInitiation unwrapped: %d unwraps, want %d", got, wantUnwraps)
		}
		want, isValid := valid[string(pkt)]
		if err != nil {
			if isValid {
				t.Fatalf("valid initiation refused: %v", err)
			}
			var p Initiation
			perr := ParseInitiation(pkt, &p)
			switch {
			case errors.Is(err, ErrMalformed) && perr != nil:
			case errors.Is(err, ErrBadMAC) && perr == nil:
			default:
				t.Fatalf("CheckInitiation: %v (ParseInitiation: %v)", err, perr)
			}
			return // like the server: AcceptInitiation is never reached
		}
		if !isValid {
			t.Fatalf("CheckInitiation passed % x, which no Initiator built", pkt)
		}
		// A genuine initiation: the expensive stage runs (fresh replay state each time so
		// the outcome does not depend on execution order).
		clear(r.last)
		out, acc, err := r.AcceptInitiation(nil, &init, 0x0707, 0)
		wantLookups += want.lookups
		wantUnwraps += want.unwraps
		if !errors.Is(err, want.err) || (err == nil) != (acc != nil) {
			t.Fatalf("AcceptInitiation: %v, want %v", err, want.err)
		}
		if err == nil && len(out) != ResponseSize {
			t.Fatalf("response of %d bytes", len(out))
		}
		if auth.lookups.Load() != wantLookups || key.unwraps.Load() != wantUnwraps {
			t.Fatalf("lookups %d unwraps %d, want %d %d", auth.lookups.Load(), key.unwraps.Load(), wantLookups, wantUnwraps)
		}
	})
}

// fuzzSessionPair is an operator and a drone session with fixed keys and indices.
func fuzzSessionPair(t testing.TB) (op, drone *Session) {
	t.Helper()
	var toDrone, toOp SessionKeys
	for i := range toDrone.Send {
		toDrone.Send[i] = byte(0x10 + i) // operator → drone
		toDrone.Recv[i] = byte(0x80 + i) // drone → operator
	}
	toOp.Send, toOp.Recv = toDrone.Recv, toDrone.Send
	now := time.Unix(1_700_000_000, 0)
	op, err := NewSession(&toDrone, fuzzOpIndex, fuzzDroneIndex, 0, now)
	if err != nil {
		t.Fatal(err)
	}
	drone, err = NewSession(&toOp, fuzzDroneIndex, fuzzOpIndex, 0, now)
	if err != nil {
		t.Fatal(err)
	}
	return op, drone
}

const (
	fuzzOpIndex    = 0x0a01
	fuzzDroneIndex = 0x0b02
)

// fuzzSealedTraffic seals a fixed conversation. The keys are fixed and the AEAD nonce is
// the counter, so the datagrams are the same in every process (and in the seed files).
func fuzzSealedTraffic(t testing.TB) (toDrone, toOp map[string][]byte) {
	t.Helper()
	op, drone := fuzzSessionPair(t)
	now := time.Unix(1_700_000_000, 0)
	toDrone, toOp = map[string][]byte{}, map[string][]byte{}
	seal := func(s *Session, into map[string][]byte, pt []byte) {
		pkt, err := s.Seal(nil, pt, now)
		if err != nil {
			t.Fatal(err)
		}
		into[string(pkt)] = pt
	}
	seal(op, toDrone, AppendLogin(nil, 1, "alice", []byte("alice-pw")))
	seal(op, toDrone, AppendCommand(nil, 2, testCommand, []byte("arm")))
	seal(op, toDrone, AppendKeepalive(nil))
	seal(op, toDrone, AppendClose(nil, CloseNormal))
	seal(drone, toOp, AppendLoginResult(nil, 1, LoginOK, RolePilot))
	seal(drone, toOp, AppendAck(nil, 2, AckOK, []byte("done:arm")))
	seal(drone, toOp, AppendTelemetry(nil, wireFill(MaxTelemetryPayload, 't')))
	return toDrone, toOp
}

// FuzzSessionOpen: arbitrary bytes through ParseDataHeader and Open never panic and never
// authenticate unless they are a datagram the peer sealed, and then give its plaintext.
func FuzzSessionOpen(f *testing.F) {
	toDrone, toOp := fuzzSealedTraffic(f)
	for _, m := range []map[string][]byte{toDrone, toOp} {
		for pkt := range m {
			f.Add([]byte(pkt))
		}
	}
	f.Add(wireSynthData(fuzzDroneIndex, 0, 40))
	now := time.Unix(1_700_000_000, 0)
	f.Fuzz(func(t *testing.T, in []byte) {
		h, err := ParseDataHeader(in)
		_, sentToDrone := toDrone[string(in)]
		_, sentToOp := toOp[string(in)]
		if err != nil {
			if sentToDrone || sentToOp {
				t.Fatalf("sealed datagram does not parse: %v", err)
			}
			return
		}
		// Fresh sessions per input: the replay window must not make the outcome depend on
		// the order of executions. Both ends try every datagram, whatever its receiver
		// index (the index is authenticated data, so a wrong one must fail too).
		op, drone := fuzzSessionPair(t)
		for _, c := range []struct {
			name  string
			s     *Session
			sent  map[string][]byte
			local uint16
		}{{"drone", drone, toDrone, fuzzDroneIndex}, {"operator", op, toOp, fuzzOpIndex}} {
			pkt := bytes.Clone(in)
			plain, err := c.s.Open(pkt[DataHeaderSize:DataHeaderSize], pkt, h, now)
			want, ok := c.sent[string(in)]
			if err != nil {
				if ok {
					t.Fatalf("%s refused a datagram its peer sealed: %v", c.name, err)
				}
				if !errors.Is(err, ErrDecrypt) && !errors.Is(err, ErrSessionExpired) {
					t.Fatalf("%s: unexpected error %v", c.name, err)
				}
				continue
			}
			if !ok {
				t.Fatalf("%s authenticated % x, which its peer never sealed", c.name, in)
			}
			if !bytes.Equal(plain, want) || h.Receiver != c.local {
				t.Fatalf("%s: plaintext % x, want % x (receiver %#x)", c.name, plain, want, h.Receiver)
			}
			// A second copy is a replay.
			pkt = bytes.Clone(in)
			if _, err := c.s.Open(nil, pkt, h, now); !errors.Is(err, ErrReplay) {
				t.Fatalf("%s: replay not refused: %v", c.name, err)
			}
		}
	})
}
