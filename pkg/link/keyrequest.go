package link

// The key request: an operator who holds the fleet PSK asks the drone for its public key,
// so that it can pin the key after comparing its fingerprint (dronelink pin). The answer
// is authenticated by the PSK MAC only: it keeps everyone without the PSK from answering,
// but any PSK holder on the path can answer with a key of its own, so the fingerprint
// comparison, by a person or against a fingerprint known in advance, is what makes the
// pinned key trustworthy. docs/PROTOCOL.md sections 4.6 and 6.3.

import (
	"bytes"
	"context"
	"crypto/rsa"
	"crypto/subtle"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"sync"
	"time"

	"github.com/dronelink/dronelink/pkg/app"
	"github.com/dronelink/dronelink/pkg/crypto"
)

// Packet kinds of the key request and its answer (app.KindKeyRequest, app.KindKeyAnswer).
const (
	KindKeyRequest = app.KindKeyRequest
	KindKeyAnswer  = app.KindKeyAnswer
)

// ErrBadAnswerKey: a key answer that passed the PSK MAC and echoed the nonce carries no
// usable drone key (not RSA, not in canonical PKIX DER, or out of the accepted sizes).
var ErrBadAnswerKey = errors.New("the drone's answer carries no usable RSA key")

// KeyRequest is a parsed key request datagram.
type KeyRequest struct {
	Nonce [nonceSize]byte // echoed by the answer
}

// ParseKeyRequest checks a key request's length, first byte and zero padding and fills r.
// It does not verify the MAC and allocates nothing.
func ParseKeyRequest(pkt []byte, r *KeyRequest) error {
	if len(pkt) != KeyRequestSize || pkt[keyReqOffType] != typeByte(TypeKeyRequest) || !allZero(pkt[keyReqOffPad:keyReqOffMAC]) {
		return ErrMalformed
	}
	copy(r.Nonce[:], pkt[keyReqOffNonce:keyReqOffPad])
	return nil
}

// appendKeyRequest appends a complete key request (MAC included) to dst.
func appendKeyRequest(dst []byte, nonce *[nonceSize]byte, mac *crypto.MAC) []byte {
	start := len(dst)
	dst = append(dst, typeByte(TypeKeyRequest))
	dst = append(dst, nonce[:]...)
	dst = append(dst, make([]byte, keyReqOffMAC-keyReqOffPad)...)
	return mac.Sum(dst, dst[start:])
}

// KeyAnswer is a parsed key answer datagram. Key aliases the datagram.
type KeyAnswer struct {
	Nonce [nonceSize]byte // the request's nonce
	Key   []byte          // the drone's public key, PKIX DER, MinKeyDERSize..MaxKeyDERSize bytes
}

// ParseKeyAnswer checks a key answer's length, first byte, key length and zero padding
// and fills a. It does not verify the MAC or look inside the key, and allocates nothing.
func ParseKeyAnswer(pkt []byte, a *KeyAnswer) error {
	if len(pkt) != KeyAnswerSize || pkt[keyAnsOffType] != typeByte(TypeKeyAnswer) {
		return ErrMalformed
	}
	n := int(binary.BigEndian.Uint16(pkt[keyAnsOffKeyLen:]))
	if n < MinKeyDERSize || n > MaxKeyDERSize || !allZero(pkt[keyAnsOffKey+n:keyAnsOffMAC]) {
		return ErrMalformed
	}
	copy(a.Nonce[:], pkt[keyAnsOffNonce:keyAnsOffKeyLen])
	a.Key = pkt[keyAnsOffKey : keyAnsOffKey+n : keyAnsOffKey+n]
	return nil
}

// appendKeyAnswer appends a complete key answer (MAC included) for nonce carrying der
// (MinKeyDERSize..MaxKeyDERSize bytes) to dst. It allocates nothing when dst has
// KeyAnswerSize bytes of spare capacity.
func appendKeyAnswer(dst []byte, nonce *[nonceSize]byte, der []byte, mac *crypto.MAC) []byte {
	start := len(dst)
	dst = append(dst, typeByte(TypeKeyAnswer))
	dst = append(dst, nonce[:]...)
	dst = binary.BigEndian.AppendUint16(dst, uint16(len(der)))
	dst = append(dst, der...)
	for len(dst)-start < keyAnsOffMAC {
		dst = append(dst, 0)
	}
	return mac.Sum(dst, dst[start:])
}

// allZero reports whether every byte of b is zero, in time that depends only on len(b).
func allZero(b []byte) bool {
	var acc byte
	for _, x := range b {
		acc |= x
	}
	return acc == 0
}

// droneKeyDER is the PKIX DER encoding of the drone's key that key answers carry, made
// once when the server starts.
func droneKeyDER(pub *rsa.PublicKey) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("link: drone key: %w", err)
	}
	if len(der) < MinKeyDERSize || len(der) > MaxKeyDERSize {
		return nil, fmt.Errorf("link: drone key: PKIX encoding of %d bytes, want %d to %d", len(der), MinKeyDERSize, MaxKeyDERSize)
	}
	return der, nil
}

// Log messages of key requests.
const (
	msgKeyRequestWrongPSK = "key request with a wrong PSK MAC (another PSK?)"
	msgKeyRequestRate     = "key request rate limit"
	msgKeyRequestAnswered = "key request answered"
)

// handleKeyRequest answers a key request, in the order of docs/PROTOCOL.md section 6.3:
// length, first byte and padding; the PSK MAC; the per-source handshake rate limit
// (shared with initiations); then the answer, of the request's own size. Every refusal is
// a counted drop without an answer, and costs no allocation. The answer is returned, to be
// sent (and logged at a bounded rate) once hsMu is released (Server.sendReply).
func (s *Server) handleKeyRequest(pkt []byte, from netip.AddrPort, now time.Time, out []byte) hsReply {
	var req KeyRequest
	if err := ParseKeyRequest(pkt, &req); err != nil {
		s.drop(DropMalformed)
		return hsReply{}
	}
	if !verifyTrailingMAC(s.responder.mac, pkt) {
		s.drop(DropBadMAC)
		s.warnFrom(msgKeyRequestWrongPSK, from)
		return hsReply{}
	}
	if !s.handshakeLimitFor(from).Allow(from.Addr(), now) {
		s.drop(DropRateLimited)
		s.warnFrom(msgKeyRequestRate, from)
		return hsReply{}
	}
	return hsReply{pkt: appendKeyAnswer(out, &req.Nonce, s.keyDER, s.responder.mac), kind: KindKeyAnswer}
}

// KeyRequestConfig configures RequestDroneKey. Zero fields take the documented defaults.
type KeyRequestConfig struct {
	// Conn is the socket; required. RequestDroneKey closes it when it returns.
	Conn PacketConn
	// Drone is the drone's address; required.
	Drone netip.AddrPort
	// PSK is the fleet pre-shared key: only its holders get an answer.
	PSK crypto.PSK
	// Hooks; if nil, NopHooks.
	Hooks Hooks
	// Now is the clock; if nil, time.Now.
	Now func() time.Time
	// Rand is the source of the request's nonce; if nil, crypto/rand.
	Rand io.Reader
	// OnAttempt, if set, is called with the attempt number (1, 2, ...) after each request
	// is sent, on RequestDroneKey's goroutine.
	OnAttempt func(attempt int)
}

// RequestDroneKey asks the drone at cfg.Drone for its public key and returns it. It sends
// a key request and sends it again with the handshake's backoff (HandshakeRetryInitial
// doubling up to HandshakeRetryMax, with jitter) until an answer arrives that carries the
// PSK MAC, echoes the request's nonce and holds an RSA key of an accepted size, or until
// ctx ends. Other datagrams are dropped and counted through cfg.Hooks.
//
// The key is authenticated only by the PSK: any holder of the PSK on the path could have
// answered with a key of its own. Trust it only after its fingerprint was compared with
// the drone's, obtained out of band.
//
// When cfg.Conn is an UnreachableReporter (a *UDPConn on Linux: ICMP port unreachable; the
// NATS relay: no responders), a report that a request reached no listener ends it at once
// with an error satisfying errors.Is(err, ErrNoListener). When ctx ends first, the
// error wraps ctx.Err() and, if an answer was refused for its key, ErrBadAnswerKey too.
func RequestDroneKey(ctx context.Context, cfg KeyRequestConfig) (*rsa.PublicKey, error) {
	if cfg.Conn == nil || !cfg.Drone.IsValid() {
		return nil, errors.New("link: key request config needs Conn and Drone")
	}
	defer cfg.Conn.Close()
	if cfg.Hooks == nil {
		cfg.Hooks = NopHooks{}
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Rand == nil {
		cfg.Rand = cryptoRand
	}
	macKey, err := PSKMACKey(&cfg.PSK)
	if err != nil {
		return nil, err
	}
	mac := crypto.NewMAC(macKey)
	crypto.Wipe(macKey)
	var nonce [nonceSize]byte
	if _, err := io.ReadFull(cfg.Rand, nonce[:]); err != nil {
		return nil, fmt.Errorf("link: key request nonce: %w", err)
	}
	request := appendKeyRequest(make([]byte, 0, KeyRequestSize), &nonce, mac)

	refused := make(chan error, 1)
	if u, ok := cfg.Conn.(UnreachableReporter); ok {
		_ = u.ReportUnreachable(cfg.Drone, func(err error) { // without it, a dial to nothing runs to its deadline
			select {
			case refused <- err:
			default:
			}
		})
	}
	kr := &keyReader{hooks: cfg.Hooks, mac: mac, nonce: nonce, answer: make(chan *rsa.PublicKey, 1)}
	var wg sync.WaitGroup
	defer wg.Wait()        // runs second: the reader has seen the Close
	defer cfg.Conn.Close() // runs first: unblocks the reader
	wg.Go(func() { _ = readDatagrams(cfg.Conn, cfg.Now, kr.handle) })

	timer := time.NewTimer(0)
	defer timer.Stop()
	for attempt := 0; ; {
		select {
		case pub := <-kr.answer:
			return pub, nil
		case err := <-refused:
			return nil, err
		case <-ctx.Done():
			if last := kr.lastRefusal(); last != nil {
				return nil, fmt.Errorf("%w (an answer was refused: %w)", ctx.Err(), last)
			}
			return nil, ctx.Err()
		case <-timer.C:
			if err := cfg.Conn.WriteTo(request, cfg.Drone); err == nil {
				cfg.Hooks.PacketSent(KindKeyRequest, len(request))
			}
			attempt++
			if cfg.OnAttempt != nil {
				cfg.OnAttempt(attempt)
			}
			timer.Reset(RetryDelay(attempt-1, HandshakeRetryInitial, HandshakeRetryMax))
		}
	}
}

// keyReader checks the datagrams that reach a key request's socket.
type keyReader struct {
	hooks  Hooks
	mac    *crypto.MAC // the reader's alone once the request is built
	nonce  [nonceSize]byte
	answer chan *rsa.PublicKey // the first acceptable key

	mu      sync.Mutex
	refusal error // the last answer refused for its key
}

func (kr *keyReader) lastRefusal() error {
	kr.mu.Lock()
	defer kr.mu.Unlock()
	return kr.refusal
}

// handle runs on the reader goroutine: cheap checks first, the key's parsing last.
func (kr *keyReader) handle(pkt []byte, _ netip.AddrPort, _ time.Time) {
	typ, ok := PeekType(pkt)
	if !ok || len(pkt) > MaxDatagramSize {
		kr.hooks.PacketReceived(KindData, len(pkt))
		kr.hooks.Dropped(DropMalformed)
		return
	}
	if typ != TypeKeyAnswer {
		kr.hooks.PacketReceived(kindOfType(typ), len(pkt))
		kr.hooks.Dropped(DropUnexpected)
		return
	}
	kr.hooks.PacketReceived(KindKeyAnswer, len(pkt))
	pub, err := openKeyAnswer(pkt, kr.mac, &kr.nonce)
	if err != nil {
		kr.hooks.Dropped(dropReasonFor(err))
		if errors.Is(err, ErrBadAnswerKey) {
			kr.mu.Lock()
			kr.refusal = err
			kr.mu.Unlock()
		}
		return
	}
	select {
	case kr.answer <- pub:
	default: // an answer is already waiting; this one is a duplicate
	}
}

// openKeyAnswer checks a key answer against the request it should answer: structure,
// PSK MAC, nonce (constant time), then the key: RSA, in canonical PKIX DER (so the
// fingerprint shown is the hash of the bytes the drone sent), of an accepted size. A key
// that fails is ErrBadAnswerKey, which is dropped as malformed.
func openKeyAnswer(pkt []byte, mac *crypto.MAC, nonce *[nonceSize]byte) (*rsa.PublicKey, error) {
	var a KeyAnswer
	if err := ParseKeyAnswer(pkt, &a); err != nil {
		return nil, err
	}
	if !verifyTrailingMAC(mac, pkt) {
		return nil, ErrBadMAC
	}
	if subtle.ConstantTimeCompare(a.Nonce[:], nonce[:]) != 1 {
		return nil, ErrUnknownSession
	}
	parsed, err := x509.ParsePKIXPublicKey(a.Key)
	if err != nil {
		return nil, fmt.Errorf("%w: not a PKIX public key", ErrBadAnswerKey)
	}
	pub, ok := parsed.(*rsa.PublicKey)
	if !ok {
		return nil, fmt.Errorf("%w: not an RSA key", ErrBadAnswerKey)
	}
	if err := crypto.CheckRSAKeySize(pub); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadAnswerKey, err)
	}
	if der, err := x509.MarshalPKIXPublicKey(pub); err != nil || !bytes.Equal(der, a.Key) {
		return nil, fmt.Errorf("%w: not in canonical DER", ErrBadAnswerKey)
	}
	return pub, nil
}

// kindOfType is the traffic-counter kind of a datagram type (KindData for a type without
// one of its own).
func kindOfType(typ byte) PacketKind {
	switch typ {
	case TypeInitiation:
		return KindInitiation
	case TypeResponse:
		return KindResponse
	case TypeError:
		return KindError
	case TypeKeyRequest:
		return KindKeyRequest
	case TypeKeyAnswer:
		return KindKeyAnswer
	}
	return KindData
}
