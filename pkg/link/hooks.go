package link

import (
	"sync/atomic"
	"time"
)

// DropReason says why a received datagram was dropped. The names are the metric labels.
type DropReason uint8

// Drop reasons, cheapest check first.
const (
	DropMalformed      DropReason = iota // wrong size, type, version or message layout
	DropBadMAC                           // PSK MAC did not verify
	DropRateLimited                      // a rate limiter refused it
	DropStale                            // initiation not newer than the last accepted one
	DropUnknownKey                       // initiation from an operator key not authorised
	DropWrongDroneKey                    // initiation wrapped to another drone key
	DropBadSignature                     // operator signature did not verify
	DropSessionLimit                     // session table full
	DropUnknownSession                   // receiver index names no live session
	DropDecrypt                          // AEAD tag or key confirmation did not verify
	DropReplay                           // data counter already seen or too old
	DropExpired                          // session past its counter or time limit
	DropUnexpected                       // authentic but not valid here (direction or state)
	NumDropReasons                       // count of reasons, for arrays indexed by reason
)

var dropNames = [NumDropReasons]string{
	"malformed", "bad_mac", "rate_limited", "stale", "unknown_key", "wrong_drone_key",
	"bad_signature", "session_limit", "unknown_session", "decrypt", "replay", "expired", "unexpected",
}

// String is the reason's metric label.
func (r DropReason) String() string {
	if r < NumDropReasons {
		return dropNames[r]
	}
	return "unknown"
}

// dropReasonFor maps a protocol error to its drop reason.
func dropReasonFor(err error) DropReason {
	switch err {
	case ErrBadMAC:
		return DropBadMAC
	case ErrRateLimited:
		return DropRateLimited
	case ErrStale:
		return DropStale
	case ErrUnknownOperatorKey:
		return DropUnknownKey
	case ErrWrongDroneKey:
		return DropWrongDroneKey
	case ErrBadSignature:
		return DropBadSignature
	case ErrSessionLimit:
		return DropSessionLimit
	case ErrUnknownSession:
		return DropUnknownSession
	case ErrDecrypt:
		return DropDecrypt
	case ErrReplay:
		return DropReplay
	case ErrSessionExpired:
		return DropExpired
	}
	return DropMalformed
}

// PacketKind labels datagrams in traffic counters: the outer type, or for data datagrams
// (once decrypted) the message type.
type PacketKind uint8

// Packet kinds.
const (
	KindInitiation PacketKind = iota
	KindResponse
	KindError
	KindData // a data datagram not (yet) decrypted
	KindLogin
	KindLoginResult
	KindCommand
	KindAck
	KindTelemetry
	KindKeepalive
	KindClose
	NumPacketKinds
)

var kindNames = [NumPacketKinds]string{
	"initiation", "response", "error", "data", "login", "login_result", "command", "ack",
	"telemetry", "keepalive", "close",
}

// String is the kind's metric label.
func (k PacketKind) String() string {
	if k < NumPacketKinds {
		return kindNames[k]
	}
	return "unknown"
}

// kindOfMessage maps a plaintext message type to its packet kind.
func kindOfMessage(t byte) PacketKind {
	if t >= MsgLogin && t <= MsgClose {
		return KindLogin + PacketKind(t-MsgLogin)
	}
	return KindData
}

// HandshakeResult labels handshake outcomes.
type HandshakeResult uint8

// Handshake results.
const (
	HandshakeOK      HandshakeResult = iota // session established
	HandshakeRefused                        // the peer refused (stale, unknown key, ...)
	HandshakeFailed                         // this side refused the peer's message
	NumHandshakeResults
)

// String is the result's metric label.
func (r HandshakeResult) String() string {
	switch r {
	case HandshakeOK:
		return "ok"
	case HandshakeRefused:
		return "refused"
	case HandshakeFailed:
		return "failed"
	}
	return "unknown"
}

// Hooks receives the link's events, for metrics. Every method must be cheap, must not
// block and must not allocate: they run on the per-packet path. Embed NopHooks to
// implement only some of them.
type Hooks interface {
	// PacketReceived counts a datagram read from the socket: kind is the outer type, or
	// the message type once a data datagram is decrypted (then size is 0 so bytes are
	// counted once).
	PacketReceived(kind PacketKind, size int)
	// PacketSent counts a datagram written to the socket.
	PacketSent(kind PacketKind, size int)
	// Dropped counts a datagram dropped for reason.
	Dropped(reason DropReason)
	// Handshake counts a completed handshake attempt by result.
	Handshake(result HandshakeResult)
	// Login counts a login answer by status.
	Login(status LoginStatus)
	// Command counts a command answer by status (drone side) or received ack (operator side).
	Command(status AckStatus)
	// CommandRoundTrip observes the time from a command's first transmission to its ack.
	CommandRoundTrip(d time.Duration)
	// SessionsActive reports the number of live sessions after a change.
	SessionsActive(n int)
	// Rekeyed counts a session replaced by a newer one with the same peer.
	Rekeyed()
	// LinkState reports a session's link going down (no datagram for LinkLostAfter) or up.
	LinkState(up bool)
	// HandshakeWork counts an expensive handshake operation (RSA or X25519) about to run.
	HandshakeWork(w HandshakeWork)
}

// NopHooks ignores every event.
type NopHooks struct{}

func (NopHooks) PacketReceived(PacketKind, int) {}
func (NopHooks) PacketSent(PacketKind, int)     {}
func (NopHooks) Dropped(DropReason)             {}
func (NopHooks) Handshake(HandshakeResult)      {}
func (NopHooks) Login(LoginStatus)              {}
func (NopHooks) Command(AckStatus)              {}
func (NopHooks) CommandRoundTrip(time.Duration) {}
func (NopHooks) SessionsActive(int)             {}
func (NopHooks) Rekeyed()                       {}
func (NopHooks) LinkState(bool)                 {}
func (NopHooks) HandshakeWork(HandshakeWork)    {}

// Counters is a Hooks that counts every event with atomics: for tests, and for embedders
// that want numbers without Prometheus.
type Counters struct {
	Received   [NumPacketKinds]atomic.Uint64
	Sent       [NumPacketKinds]atomic.Uint64
	Drops      [NumDropReasons]atomic.Uint64
	Handshakes [NumHandshakeResults]atomic.Uint64
	Logins     [maxLoginStatus + 1]atomic.Uint64
	Commands   [maxAckStatus + 1]atomic.Uint64
	RoundTrips atomic.Uint64
	Sessions   atomic.Int64
	Rekeys     atomic.Uint64
	LinkDowns  atomic.Uint64
	LinkUps    atomic.Uint64
	Work       [NumHandshakeWork]atomic.Uint64
}

// PacketReceived implements Hooks.
func (c *Counters) PacketReceived(k PacketKind, _ int) {
	if k < NumPacketKinds {
		c.Received[k].Add(1)
	}
}

// PacketSent implements Hooks.
func (c *Counters) PacketSent(k PacketKind, _ int) {
	if k < NumPacketKinds {
		c.Sent[k].Add(1)
	}
}

// Dropped implements Hooks.
func (c *Counters) Dropped(r DropReason) {
	if r < NumDropReasons {
		c.Drops[r].Add(1)
	}
}

// Handshake implements Hooks.
func (c *Counters) Handshake(r HandshakeResult) {
	if r < NumHandshakeResults {
		c.Handshakes[r].Add(1)
	}
}

// Login implements Hooks.
func (c *Counters) Login(s LoginStatus) {
	if s <= maxLoginStatus {
		c.Logins[s].Add(1)
	}
}

// Command implements Hooks.
func (c *Counters) Command(s AckStatus) {
	if s <= maxAckStatus {
		c.Commands[s].Add(1)
	}
}

// CommandRoundTrip implements Hooks.
func (c *Counters) CommandRoundTrip(time.Duration) { c.RoundTrips.Add(1) }

// SessionsActive implements Hooks.
func (c *Counters) SessionsActive(n int) { c.Sessions.Store(int64(n)) }

// Rekeyed implements Hooks.
func (c *Counters) Rekeyed() { c.Rekeys.Add(1) }

// LinkState implements Hooks.
func (c *Counters) LinkState(up bool) {
	if up {
		c.LinkUps.Add(1)
	} else {
		c.LinkDowns.Add(1)
	}
}

// HandshakeWork implements Hooks.
func (c *Counters) HandshakeWork(w HandshakeWork) {
	if w < NumHandshakeWork {
		c.Work[w].Add(1)
	}
}

// Drop returns the count for one reason.
func (c *Counters) Drop(r DropReason) uint64 { return c.Drops[r].Load() }
