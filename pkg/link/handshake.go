package link

// The handshake, as two state machines that perform no I/O. The operator's Initiator
// builds initiations and consumes the drone's answer; the drone's Responder checks and
// answers initiations. Keys, the PSK, operator-key lookup and randomness are passed in, so
// tests can count every RSA operation and run the machines without sockets.
//
//	operator (Initiator)                                   drone (Responder)
//	  Idle
//	   │ Initiation(): fresh secret s, ephemeral e_i,
//	   │ timestamp t; wrap s to the pinned drone key,
//	   │ sign, MAC with the PSK
//	  InitiationSent ──────── initiation ───────────────►  length, type → PSK MAC →
//	   │  ▲ retry (new t, s, e_i) with capped backoff       rate limit → t > last(key) →
//	   │  └───────────────────────────┘                      drone key id → operator key →
//	   │                                                     signature → per-key limits →
//	   │                                                     unwrap s → ephemeral e_r,
//	   │                                                     keys, confirm
//	   │ ◄──────────────────── response ─────────────────────┘ (or error, PSK MAC'd)
//	   │ PSK MAC → index → DH → keys → confirm
//	  Established                                         session exists; the drone
//	                                                      sends on it once the operator
//	                                                      has sent on it (key confirmed)

import (
	"crypto/ecdh"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/subtle"
	"io"
	"sync/atomic"
	"time"

	"github.com/dronelink/dronelink/pkg/crypto"
)

// Key schedule labels. Changing any of them changes the protocol version.
const (
	labelMAC        = "dronelink v1 psk mac"
	labelConfirm    = "dronelink v1 confirm"
	labelToDrone    = "dronelink v1 operator to drone"
	labelToOperate  = "dronelink v1 drone to operator"
	labelTranscript = "dronelink v1 transcript"
	labelResume     = "dronelink v1 resume"
	secretSize      = 32
)

// HandshakeState is where an Initiator is.
type HandshakeState int

// Initiator states.
const (
	StateIdle           HandshakeState = iota // nothing sent yet
	StateInitiationSent                       // waiting for the drone's answer
	StateEstablished                          // keys agreed
	StateFailed                               // the drone refused with a final error
)

// String names the state for logs.
func (s HandshakeState) String() string {
	switch s {
	case StateIdle:
		return "idle"
	case StateInitiationSent:
		return "initiation-sent"
	case StateEstablished:
		return "established"
	case StateFailed:
		return "failed"
	}
	return "unknown"
}

// PSKMACKey derives the key of the handshake MACs from the PSK, so the PSK itself is only
// ever used as HKDF input.
func PSKMACKey(psk *crypto.PSK) ([]byte, error) {
	return crypto.HKDF(psk[:], nil, labelMAC, macSize)
}

// lastTimestamp makes initiation timestamps strictly increasing within the process even if
// the wall clock stalls or steps back.
var lastTimestamp atomic.Uint64

// nextTimestamp returns a timestamp strictly greater than any returned before.
func nextTimestamp(now time.Time) uint64 {
	want := uint64(now.UnixNano())
	for {
		last := lastTimestamp.Load()
		ts := max(want, last+1)
		if lastTimestamp.CompareAndSwap(last, ts) {
			return ts
		}
	}
}

// schedule is the output of the key schedule.
type schedule struct {
	confirm    [tagSize]byte
	toDrone    [crypto.AEADKeySize]byte
	toOperator [crypto.AEADKeySize]byte
	resume     [crypto.AEADKeySize]byte
}

func (k *schedule) wipe() {
	crypto.Wipe(k.toDrone[:])
	crypto.Wipe(k.toOperator[:])
	crypto.Wipe(k.resume[:])
}

// deriveKeys runs the key schedule shared by both sides into k, which the caller wipes
// (the keys are written in place, never copied through a returned value):
//
//	th      = SHA-256(label || initiation || response prefix)
//	prk     = HKDF-Extract(salt = th, ikm = PSK || s || X25519(e_i, e_r))
//	k_o→d   = HKDF-Expand(prk, "dronelink v1 operator to drone", 32)
//	k_d→o   = HKDF-Expand(prk, "dronelink v1 drone to operator", 32)
//	resume  = HKDF-Expand(prk, "dronelink v1 resume", 32)
//	confirm = ChaCha20-Poly1305(HKDF-Expand(prk, "dronelink v1 confirm", 32), nonce 0, "", ad = th)
//
// The resume key never protects traffic: a later rekey proves with it that the operator
// holds this session's secrets, not only the operator's RSA key. Every intermediate
// secret (the HKDF input, the PRK, each expanded key) is wiped before it returns, on every
// path; on failure k is wiped too.
func deriveKeys(k *schedule, psk *crypto.PSK, secret, shared, initiation, responsePrefix []byte) (err error) {
	defer func() {
		if err != nil {
			k.wipe()
		}
	}()
	h := sha256.New()
	h.Write([]byte(labelTranscript))
	h.Write(initiation)
	h.Write(responsePrefix)
	var th [sha256.Size]byte
	h.Sum(th[:0])

	ikm := make([]byte, 0, len(psk)+len(secret)+len(shared))
	ikm = append(append(append(ikm, psk[:]...), secret...), shared...)
	defer crypto.Wipe(ikm)
	prk, err := crypto.HKDFExtract(ikm, th[:])
	if err != nil {
		return err
	}
	defer crypto.Wipe(prk)
	for _, out := range []struct {
		label string
		key   []byte
	}{{labelToDrone, k.toDrone[:]}, {labelToOperate, k.toOperator[:]}, {labelResume, k.resume[:]}} {
		b, err := crypto.HKDFExpand(prk, out.label, crypto.AEADKeySize)
		if err != nil {
			return err
		}
		copy(out.key, b)
		crypto.Wipe(b)
	}
	confirmKey, err := crypto.HKDFExpand(prk, labelConfirm, crypto.AEADKeySize)
	if err != nil {
		return err
	}
	defer crypto.Wipe(confirmKey)
	aead, err := crypto.NewAEAD(confirmKey)
	if err != nil {
		return err
	}
	aead.Seal(k.confirm[:0], 0, nil, th[:])
	return nil
}

// resumeTag proves knowledge of the replaced session's resume key: HMAC-SHA256 over the
// signed part of the initiation.
func resumeTag(resumeKey, signed []byte) []byte {
	return crypto.NewMAC(resumeKey).Sum(make([]byte, 0, resumeSize), signed)
}

// InitiatorConfig is what the operator side of a handshake needs.
type InitiatorConfig struct {
	PSK         crypto.PSK
	OperatorKey *rsa.PrivateKey // signs initiations
	DronePublic *rsa.PublicKey  // the pinned drone key: the secret is wrapped to it
	Rand        io.Reader       // nil: crypto/rand
	// ResumeKey is the resume key of the session this handshake replaces (with a nonzero
	// replaces index): it proves to the drone that the login may carry over.
	ResumeKey []byte
}

// maxAttempts is how many recent initiations an Initiator can still complete with a late
// response, so a slow link does not waste an answer that arrives after a retry: two rounds
// of a cold start (ColdStartInitiations each).
const maxAttempts = 2 * ColdStartInitiations

type attempt struct {
	built     time.Time // when Initiation built it: just before it was sent
	timestamp uint64
	ephemeral *ecdh.PrivateKey
	secret    []byte
	packet    []byte
}

// Initiator is the operator side of one handshake: a state machine with no I/O. Not safe
// for concurrent use.
type Initiator struct {
	cfg        InitiatorConfig
	mac        *crypto.MAC
	operatorID crypto.KeyID
	droneID    crypto.KeyID
	local      uint16
	replaces   uint16
	state      HandshakeState
	attempts   []attempt
	sent       int
	answered   time.Time // when the attempt the response answered was built
}

// NewInitiator prepares a handshake for local index local. replaces is the drone's index
// of the session this one rekeys (0 for none).
func NewInitiator(cfg InitiatorConfig, local, replaces uint16) (*Initiator, error) {
	if cfg.OperatorKey == nil || cfg.DronePublic == nil || local == 0 {
		return nil, ErrMalformed
	}
	if err := crypto.CheckRSAKeySize(&cfg.OperatorKey.PublicKey); err != nil {
		return nil, err
	}
	if err := crypto.CheckRSAKeySize(cfg.DronePublic); err != nil {
		return nil, err
	}
	if cfg.Rand == nil {
		cfg.Rand = cryptoRand
	}
	macKey, err := PSKMACKey(&cfg.PSK)
	if err != nil {
		return nil, err
	}
	defer crypto.Wipe(macKey)
	return &Initiator{
		cfg:        cfg,
		mac:        crypto.NewMAC(macKey),
		operatorID: crypto.KeyIDOf(&cfg.OperatorKey.PublicKey),
		droneID:    crypto.KeyIDOf(cfg.DronePublic),
		local:      local,
		replaces:   replaces,
	}, nil
}

// State is where the handshake is.
func (h *Initiator) State() HandshakeState { return h.state }

// Attempts is how many initiations have been built.
func (h *Initiator) Attempts() int { return h.sent }

// AnsweredAttempt is when the initiation that the accepted response answered was built
// (the zero time before a response was accepted): a moment before the drone created its
// side of the session, from which the operator judges the age of what the drone stamps.
func (h *Initiator) AnsweredAttempt() time.Time { return h.answered }

// LocalIndex is the operator's index for the session being set up.
func (h *Initiator) LocalIndex() uint16 { return h.local }

// Initiation builds a fresh initiation: a new timestamp, secret and ephemeral key every
// time, so a retry is never mistaken for a replay of the previous attempt.
func (h *Initiator) Initiation(now time.Time) ([]byte, error) {
	if h.state == StateEstablished || h.state == StateFailed {
		return nil, ErrClosed
	}
	eph, err := crypto.GenerateX25519(h.cfg.Rand)
	if err != nil {
		return nil, err
	}
	secret := make([]byte, secretSize)
	if _, err := io.ReadFull(h.cfg.Rand, secret); err != nil {
		return nil, err
	}
	wrapped, err := crypto.WrapSecret(h.cfg.Rand, h.cfg.DronePublic, secret)
	if err != nil {
		crypto.Wipe(secret)
		return nil, err
	}
	init := Initiation{
		Sender:      h.local,
		Replaces:    h.replaces,
		Timestamp:   nextTimestamp(now),
		OperatorKey: h.operatorID,
		DroneKey:    h.droneID,
		Wrapped:     wrapped,
	}
	copy(init.Ephemeral[:], eph.PublicKey().Bytes())
	pkt := appendInitiationBody(make([]byte, 0, MaxInitiationSize), &init)
	sig, err := crypto.SignPSS(h.cfg.Rand, h.cfg.OperatorKey, pkt)
	if err != nil {
		crypto.Wipe(secret)
		return nil, err
	}
	pkt = append(pkt, sig...)
	if h.replaces != 0 && len(h.cfg.ResumeKey) != 0 {
		pkt = append(pkt, resumeTag(h.cfg.ResumeKey, pkt[:len(pkt)-len(sig)])...)
	} else {
		pkt = append(pkt, make([]byte, resumeSize)...)
	}
	pkt = h.mac.Sum(pkt, pkt)
	if len(h.attempts) == maxAttempts {
		crypto.Wipe(h.attempts[0].secret)
		h.attempts = append(h.attempts[:0], h.attempts[1:]...)
	}
	h.attempts = append(h.attempts, attempt{built: now, timestamp: init.Timestamp, ephemeral: eph, secret: secret, packet: pkt})
	h.state = StateInitiationSent
	h.sent++
	return pkt, nil
}

// ConsumeResponse verifies a response (PSK MAC, receiver index, key confirmation) against
// the outstanding initiations. On success it returns the session keys and the parsed
// response (the drone's index and flags) and the handshake is established.
func (h *Initiator) ConsumeResponse(pkt []byte) (keys SessionKeys, r Response, err error) {
	if err := ParseResponse(pkt, &r); err != nil {
		return keys, r, err
	}
	if !verifyTrailingMAC(h.mac, pkt) {
		return keys, r, ErrBadMAC
	}
	if h.state != StateInitiationSent || r.Receiver != h.local {
		return keys, r, ErrUnknownSession
	}
	for i := len(h.attempts) - 1; i >= 0; i-- {
		a := &h.attempts[i]
		shared, err := crypto.X25519(a.ephemeral, r.Ephemeral[:])
		if err != nil {
			return keys, r, ErrDecrypt
		}
		var k schedule
		err = deriveKeys(&k, &h.cfg.PSK, a.secret, shared, a.packet, pkt[:respOffConfirm])
		crypto.Wipe(shared)
		if err != nil {
			return keys, r, err
		}
		if subtle.ConstantTimeCompare(k.confirm[:], r.Confirm[:]) == 1 {
			keys.Send, keys.Recv, keys.Resume = k.toDrone, k.toOperator, k.resume
			k.wipe()
			h.answered = a.built
			h.finish(StateEstablished)
			return keys, r, nil
		}
		k.wipe()
	}
	return keys, r, ErrDecrypt
}

// ConsumeError verifies an error datagram (PSK MAC, receiver index, echoed timestamp of an
// outstanding initiation) and returns the drone's reason. Final reasons (wrong drone key,
// unknown operator key, bad signature) fail the handshake; the others leave it retrying.
func (h *Initiator) ConsumeError(pkt []byte) (ErrorCode, error) {
	var e ErrorPacket
	if err := ParseError(pkt, &e); err != nil {
		return 0, err
	}
	if !verifyTrailingMAC(h.mac, pkt) {
		return 0, ErrBadMAC
	}
	if h.state != StateInitiationSent || e.Receiver != h.local {
		return 0, ErrUnknownSession
	}
	for _, a := range h.attempts {
		if a.timestamp == e.Timestamp {
			switch e.Code {
			case CodeWrongDroneKey, CodeUnknownOperator, CodeBadSignature:
				h.finish(StateFailed)
			}
			return e.Code, nil
		}
	}
	return 0, ErrUnknownSession
}

// finish wipes the attempts' secrets and moves to a final state.
func (h *Initiator) finish(state HandshakeState) {
	for _, a := range h.attempts {
		crypto.Wipe(a.secret)
	}
	h.attempts = nil
	h.state = state
}

// DroneKey is the drone's long-term RSA key as the handshake uses it: an interface so a
// test can count RSA operations and a hardware-backed key could stand in.
type DroneKey interface {
	// Public is the drone's public key.
	Public() *rsa.PublicKey
	// UnwrapSecret RSA-OAEP-decrypts a wrapped session secret.
	UnwrapSecret(wrapped []byte) ([]byte, error)
}

// NewDroneKey wraps an RSA private key as a DroneKey.
func NewDroneKey(priv *rsa.PrivateKey) DroneKey { return rsaDroneKey{priv} }

type rsaDroneKey struct{ priv *rsa.PrivateKey }

func (k rsaDroneKey) Public() *rsa.PublicKey { return &k.priv.PublicKey }
func (k rsaDroneKey) UnwrapSecret(w []byte) ([]byte, error) {
	return crypto.UnwrapSecret(k.priv, w)
}

// OperatorKeyLookup returns the public key of an authorised operator key, or false.
type OperatorKeyLookup func(id crypto.KeyID) (*rsa.PublicKey, bool)

// ResponderConfig is what the drone side of the handshake needs.
type ResponderConfig struct {
	PSK       crypto.PSK
	DroneKey  DroneKey
	Operators OperatorKeyLookup
	Rand      io.Reader // nil: crypto/rand
	// Work, if set, is told about every expensive operation just before it runs, so tests
	// and metrics can show that forged traffic never reaches one.
	Work func(HandshakeWork)
	// Now is the drone's clock, for the future-timestamp bound; nil: time.Now.
	Now func() time.Time
}

// HandshakeWork names an expensive operation of the drone's handshake.
type HandshakeWork uint8

// Expensive handshake operations, in the order the responder performs them.
const (
	WorkVerify HandshakeWork = iota // RSA-PSS signature verification
	WorkUnwrap                      // RSA-OAEP decryption of the wrapped secret
	WorkX25519                      // ephemeral key generation and agreement
	NumHandshakeWork
)

// String is the operation's metric label.
func (w HandshakeWork) String() string {
	switch w {
	case WorkVerify:
		return "rsa_verify"
	case WorkUnwrap:
		return "rsa_unwrap"
	case WorkX25519:
		return "x25519"
	}
	return "unknown"
}

func (r *Responder) work(w HandshakeWork) {
	if r.cfg.Work != nil {
		r.cfg.Work(w)
	}
}

// Responder is the drone side of the handshake: it checks initiations in the order that
// makes forged traffic cheap and answers them. It keeps the last accepted timestamp per
// operator key (the handshake replay protection). Not safe for concurrent use.
type Responder struct {
	cfg     ResponderConfig
	mac     *crypto.MAC
	droneID crypto.KeyID
	last    map[crypto.KeyID]uint64
}

// NewResponder builds a responder.
func NewResponder(cfg ResponderConfig) (*Responder, error) {
	if cfg.DroneKey == nil || cfg.Operators == nil {
		return nil, ErrMalformed
	}
	if err := crypto.CheckRSAKeySize(cfg.DroneKey.Public()); err != nil {
		return nil, err
	}
	if cfg.Rand == nil {
		cfg.Rand = cryptoRand
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	macKey, err := PSKMACKey(&cfg.PSK)
	if err != nil {
		return nil, err
	}
	defer crypto.Wipe(macKey)
	return &Responder{
		cfg:     cfg,
		mac:     crypto.NewMAC(macKey),
		droneID: crypto.KeyIDOf(cfg.DroneKey.Public()),
		last:    make(map[crypto.KeyID]uint64),
	}, nil
}

// CheckInitiation is the cheap first stage: length, type, structure and the PSK MAC. It
// allocates nothing and does no public-key work, so forged datagrams cost almost nothing.
func (r *Responder) CheckInitiation(pkt []byte, init *Initiation) error {
	if err := ParseInitiation(pkt, init); err != nil {
		return err
	}
	if !verifyTrailingMAC(r.mac, pkt) {
		return ErrBadMAC
	}
	return nil
}

// Accepted is an initiation that passed every check, with the keys of its new session.
type Accepted struct {
	OperatorKey    crypto.KeyID
	OperatorPublic *rsa.PublicKey
	OperatorIndex  uint16 // the operator's index: receiver index of our datagrams
	Replaces       uint16 // our index of the session this one rekeys, or 0
	Timestamp      uint64
	Keys           SessionKeys
}

// AcceptInitiation is the expensive second stage, for an initiation that passed
// CheckInitiation (and the caller's rate limit): VerifyInitiation, then the unwrap and the
// key agreement. On success it records the timestamp and appends the response for local
// index local to out. On failure the error maps to an error datagram through ErrorReply.
// flags go into the response as they are.
func (r *Responder) AcceptInitiation(out []byte, init *Initiation, local uint16, flags byte) ([]byte, *Accepted, error) {
	v, err := r.VerifyInitiation(init)
	if err != nil {
		return out, nil, err
	}
	return r.CompleteInitiation(out, v, local, flags)
}

// Verified is an initiation whose operator signature verified: from here on its operator
// key's holder is authenticated, and only that holder can make the drone go further.
type Verified struct {
	init           *Initiation
	OperatorPublic *rsa.PublicKey
}

// VerifyInitiation runs the checks of AcceptInitiation up to the operator's signature, in
// order: timestamp freshness, drone key id, operator key lookup, signature (an RSA public
// operation). It records nothing. A caller can apply limits per operator key between it
// and CompleteInitiation, where only the key's holder can spend them.
func (r *Responder) VerifyInitiation(init *Initiation) (*Verified, error) {
	if last, ok := r.last[init.OperatorKey]; ok && init.Timestamp <= last {
		return nil, ErrStale
	}
	// A timestamp far ahead of a set clock is refused and never remembered: remembering it
	// would lock the key out until the drone restarts. A drone whose clock was never set
	// (no RTC, no GPS or NTP yet) cannot judge and skips the bound.
	if now := r.cfg.Now(); now.After(ClockSaneAfter) && init.Timestamp > uint64(now.Add(MaxClockSkew).UnixNano()) {
		return nil, ErrStale
	}
	if init.DroneKey != r.droneID || len(init.Wrapped) != r.cfg.DroneKey.Public().Size() {
		return nil, ErrWrongDroneKey
	}
	opPub, ok := r.cfg.Operators(init.OperatorKey)
	if !ok {
		return nil, ErrUnknownOperatorKey
	}
	if len(init.Signature) != opPub.Size() {
		return nil, ErrBadSignature
	}
	r.work(WorkVerify)
	if crypto.VerifyPSS(opPub, init.Signed, init.Signature) != nil {
		return nil, ErrBadSignature
	}
	return &Verified{init: init, OperatorPublic: opPub}, nil
}

// CompleteInitiation is the rest of AcceptInitiation for an initiation VerifyInitiation
// passed: the timestamp is checked again (another initiation of the key may have been
// accepted since), then the RSA-OAEP unwrap (the drone's private-key operation), the
// timestamp is recorded, and the ephemeral agreement, key schedule and response follow.
// Every intermediate secret is wiped before it returns.
func (r *Responder) CompleteInitiation(out []byte, v *Verified, local uint16, flags byte) ([]byte, *Accepted, error) {
	if v == nil || v.init == nil {
		return out, nil, ErrMalformed
	}
	init := v.init
	if last, ok := r.last[init.OperatorKey]; ok && init.Timestamp <= last {
		return out, nil, ErrStale
	}
	r.work(WorkUnwrap)
	secret, err := r.cfg.DroneKey.UnwrapSecret(init.Wrapped)
	if err != nil || len(secret) != secretSize {
		// The signature verified, so the operator wrapped garbage on purpose or to another
		// key with our id: treat it as a key mismatch.
		crypto.Wipe(secret)
		return out, nil, ErrWrongDroneKey
	}
	defer crypto.Wipe(secret)
	r.last[init.OperatorKey] = init.Timestamp

	r.work(WorkX25519)
	eph, err := crypto.GenerateX25519(r.cfg.Rand)
	if err != nil {
		return out, nil, err
	}
	shared, err := crypto.X25519(eph, init.Ephemeral[:])
	if err != nil {
		return out, nil, ErrMalformed
	}
	defer crypto.Wipe(shared)
	start := len(out)
	out = appendResponsePrefix(out, local, init.Sender, flags, eph.PublicKey().Bytes())
	var k schedule
	defer k.wipe()
	if err := deriveKeys(&k, &r.cfg.PSK, secret, shared, init.Raw, out[start:]); err != nil {
		return out[:start], nil, err
	}
	out = append(out, k.confirm[:]...)
	out = r.mac.Sum(out, out[start:])
	return out, &Accepted{
		OperatorKey:    init.OperatorKey,
		OperatorPublic: v.OperatorPublic,
		OperatorIndex:  init.Sender,
		Replaces:       init.Replaces,
		Timestamp:      init.Timestamp,
		Keys:           SessionKeys{Send: k.toOperator, Recv: k.toDrone, Resume: k.resume},
	}, nil
}

// ErrorReply appends the error datagram telling the operator why init was refused, or
// returns false when err deserves no answer.
func (r *Responder) ErrorReply(out []byte, init *Initiation, err error) ([]byte, bool) {
	var code ErrorCode
	switch err {
	case ErrWrongDroneKey:
		code = CodeWrongDroneKey
	case ErrUnknownOperatorKey:
		code = CodeUnknownOperator
	case ErrStale:
		code = CodeStale
	case ErrRateLimited, ErrSessionLimit:
		code = CodeBusy
	case ErrBadSignature:
		code = CodeBadSignature
	default:
		return out, false
	}
	start := len(out)
	out = appendErrorBody(out, &ErrorPacket{Receiver: init.Sender, Code: code, Timestamp: init.Timestamp})
	return r.mac.Sum(out, out[start:]), true
}
