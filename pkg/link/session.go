package link

import (
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dronelink/dronelink/pkg/crypto"
	"github.com/dronelink/dronelink/pkg/replay"
)

// SessionKeys are the two directional ChaCha20-Poly1305 keys of a session, as the local
// endpoint sees them.
type SessionKeys struct {
	Send   [crypto.AEADKeySize]byte
	Recv   [crypto.AEADKeySize]byte
	Resume [crypto.AEADKeySize]byte // proves this session's secrets in the rekey that replaces it
}

// wipe zeroes the keys.
func (k *SessionKeys) wipe() {
	crypto.Wipe(k.Send[:])
	crypto.Wipe(k.Recv[:])
	crypto.Wipe(k.Resume[:])
}

// Session is one established session: keys, counters and the replay window, nothing else.
// Seal and Open are safe for concurrent use; each direction has its own lock.
type Session struct {
	local   uint16 // our index: the receiver index of datagrams sent to us
	remote  uint16 // the peer's index: the receiver index of datagrams we send
	created time.Time
	resume  [crypto.AEADKeySize]byte

	sendMu      sync.Mutex
	sendAEAD    *crypto.AEAD
	sendCounter uint64 // next counter to use: also the number of datagrams sealed
	sentBytes   uint64 // bytes of the datagrams sealed

	recvMu     sync.Mutex
	recvAEAD   *crypto.AEAD
	filter     replay.Filter
	maxCounter uint64 // highest counter accepted so far, plus one (0: none yet)
	accepted   uint64 // datagrams accepted (authenticated, not replayed)
	recvBytes  uint64 // their bytes

	// The traffic counters above are plain fields inside the critical sections Seal and
	// Open hold anyway: counting costs no atomic operation and no allocation per datagram.

	// The operator's epochs of the session (set once, before the session is used): it
	// stamps frames with the time since sendEpoch (when it accepted the response, after
	// the drone created its side) and judges the drone's stamps against recvEpoch (when it
	// built the answered initiation, before the drone created its side), so both ends
	// overestimate an age and never underestimate it.
	sendEpoch, recvEpoch time.Time

	lastRecv atomic.Int64 // unix nanoseconds of the last authenticated datagram
	peer     atomic.Pointer[netip.AddrPort]
}

// NewSession builds a session from its keys and indices. window is the replay window in
// packets (0: the replay package's default). The keys are copied; the caller wipes its copy.
func NewSession(keys *SessionKeys, local, remote uint16, window int, now time.Time) (*Session, error) {
	send, err := crypto.NewAEAD(keys.Send[:])
	if err != nil {
		return nil, err
	}
	recv, err := crypto.NewAEAD(keys.Recv[:])
	if err != nil {
		return nil, err
	}
	s := &Session{local: local, remote: remote, created: now, sendAEAD: send, recvAEAD: recv, resume: keys.Resume}
	if window != 0 && !s.filter.Init(window) {
		return nil, ErrMalformed
	}
	s.lastRecv.Store(now.UnixNano())
	return s, nil
}

// LocalIndex is the index the peer addresses this session by.
func (s *Session) LocalIndex() uint16 { return s.local }

// RemoteIndex is the index this session addresses the peer by.
func (s *Session) RemoteIndex() uint16 { return s.remote }

// Created is when the session's keys were agreed.
func (s *Session) Created() time.Time { return s.created }

// Seal appends to dst one data datagram carrying plaintext under the next send counter.
// It refuses once the counter reaches RejectAfterMessages: a counter never wraps.
func (s *Session) Seal(dst, plaintext []byte, now time.Time) ([]byte, error) {
	if len(plaintext) == 0 || len(plaintext) > MaxPlaintextSize {
		return dst, ErrTooLarge
	}
	s.sendMu.Lock()
	counter := s.sendCounter
	if counter >= RejectAfterMessages {
		s.sendMu.Unlock()
		return dst, ErrSessionExpired
	}
	s.sendCounter++
	start := len(dst)
	dst = appendDataHeader(dst, s.remote, uint32(counter))
	dst = s.sendAEAD.Seal(dst, counter, plaintext, dst[start:start+DataHeaderSize])
	s.sentBytes += uint64(len(dst) - start)
	s.sendMu.Unlock()
	return dst, nil
}

// Open authenticates and decrypts the data datagram pkt (whose header h was parsed by
// ParseDataHeader and names this session) and appends the plaintext to dst. Only after the
// tag verified does the replay window see the counter, so a forged datagram can never move
// the window. dst may be pkt[DataHeaderSize:DataHeaderSize] to decrypt in place.
func (s *Session) Open(dst, pkt []byte, h DataHeader, now time.Time) ([]byte, error) {
	if len(pkt) <= DataOverhead {
		return dst, ErrMalformed
	}
	counter := uint64(h.Counter)
	if counter >= RejectAfterMessages {
		return dst, ErrSessionExpired
	}
	s.recvMu.Lock()
	out, err := s.recvAEAD.Open(dst, counter, pkt[DataHeaderSize:], pkt[:DataHeaderSize])
	if err != nil {
		s.recvMu.Unlock()
		return dst, ErrDecrypt
	}
	if !s.filter.ValidateCounter(counter, RejectAfterMessages) {
		s.recvMu.Unlock()
		return dst, ErrReplay
	}
	if counter+1 > s.maxCounter {
		s.maxCounter = counter + 1
	}
	s.accepted++
	s.recvBytes += uint64(len(pkt))
	s.recvMu.Unlock()
	s.lastRecv.Store(now.UnixNano())
	return out, nil
}

// counters returns how many counters this session has used in each direction, for rekey
// decisions.
func (s *Session) counters() (sent, received uint64) {
	s.sendMu.Lock()
	sent = s.sendCounter
	s.sendMu.Unlock()
	s.recvMu.Lock()
	received = s.maxCounter
	s.recvMu.Unlock()
	return sent, received
}

// needsRekeyAfter reports whether the initiator should start a new handshake for this
// session, given its rekey time.
func (s *Session) needsRekeyAfter(now time.Time, rekeyAfter time.Duration) bool {
	if now.Sub(s.created) >= rekeyAfter {
		return true
	}
	sent, received := s.counters()
	return sent >= RekeyAfterMessages || received >= RekeyAfterMessages
}

// expired reports whether the session is past its hard time limit.
func (s *Session) expired(now time.Time) bool {
	return now.Sub(s.created) >= RejectAfterTime
}

// sinceRecv is how long ago the last authenticated datagram arrived.
func (s *Session) sinceRecv(now time.Time) time.Duration {
	return time.Duration(now.UnixNano() - s.lastRecv.Load())
}

// Peer is the address datagrams for this session go to.
func (s *Session) Peer() netip.AddrPort {
	if p := s.peer.Load(); p != nil {
		return *p
	}
	return netip.AddrPort{}
}

// setPeer records the peer's address; it reports whether it changed (roaming). The
// unchanged case, every datagram, allocates nothing.
func (s *Session) setPeer(addr netip.AddrPort) bool {
	if p := s.peer.Load(); p != nil && *p == addr {
		return false
	}
	s.storePeer(addr)
	return true
}

//go:noinline
func (s *Session) storePeer(addr netip.AddrPort) { s.peer.Store(&addr) }
