package app

import (
	"errors"
	"time"
)

// Sentinel errors. Compare with errors.Is. None of them ever carries key material or
// message contents.
var (
	// ErrMalformed: wrong length, type or field value.
	ErrMalformed = errors.New("malformed datagram")
	// ErrTooLarge: a message that does not fit one datagram.
	ErrTooLarge = errors.New("message too large for one datagram")
	// ErrClosed: the endpoint was closed.
	ErrClosed = errors.New("link closed")
)

// DropReason says why a received datagram was dropped. The names are the metric labels.
// The secure channels and this package share one list so that the metrics have one label
// set whatever the transport.
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
	DropLate                             // frames older on arrival than the freshness bound
	NumDropReasons                       // count of reasons, for arrays indexed by reason
)

var dropNames = [NumDropReasons]string{
	"malformed", "bad_mac", "rate_limited", "stale", "unknown_key", "wrong_drone_key",
	"bad_signature", "session_limit", "unknown_session", "decrypt", "replay", "expired", "unexpected",
	"late",
}

// String is the reason's metric label.
func (r DropReason) String() string {
	if r < NumDropReasons {
		return dropNames[r]
	}
	return "unknown"
}

// PacketKind labels datagrams in traffic counters: the channel's outer type, or for data
// (once decrypted) the application message type.
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
	KindFrames
	KindKeyRequest // the native channel's request for the drone's public key
	KindKeyAnswer  // the drone's answer to it
	NumPacketKinds
)

var kindNames = [NumPacketKinds]string{
	"initiation", "response", "error", "data", "login", "login_result", "command", "ack",
	"telemetry", "keepalive", "close", "frames", "key_request", "key_answer",
}

// String is the kind's metric label.
func (k PacketKind) String() string {
	if k < NumPacketKinds {
		return kindNames[k]
	}
	return "unknown"
}

// KindOfMessage maps an application message type to its packet kind.
func KindOfMessage(t byte) PacketKind {
	if t >= MsgLogin && t <= MsgFrames {
		return KindLogin + PacketKind(t-MsgLogin)
	}
	return KindData
}

// Hooks receives the application layer's events, for metrics. Every method must be cheap,
// must not block and must not allocate: they run on the per-packet path. The channels'
// hooks (link.Hooks) extend this interface with their own events.
type Hooks interface {
	// PacketReceived counts a message: kind is its message kind and size is 0, because the
	// channel counted the datagram's bytes when it read it.
	PacketReceived(kind PacketKind, size int)
	// Dropped counts a message dropped for reason.
	Dropped(reason DropReason)
	// Login counts a login answer by status.
	Login(status LoginStatus)
	// Command counts a command answer by status (drone side) or received ack (operator side).
	Command(status AckStatus)
	// CommandRoundTrip observes the time from a command's first transmission to its ack.
	CommandRoundTrip(d time.Duration)
	// LinkState reports a session's link going down (nothing heard for LinkLostKeepalives
	// keepalive intervals) or up.
	LinkState(up bool)
	// LinkEstimate reports the operator's estimate of its link (round trip, retransmission
	// timeout, loss) each time it changes: after a round-trip sample, a command's round,
	// the channel's datagram counts, or the link falling silent or being heard again.
	// Operators only.
	LinkEstimate(e LinkEstimate)
}

// NopHooks ignores every event.
type NopHooks struct{}

func (NopHooks) PacketReceived(PacketKind, int) {}
func (NopHooks) Dropped(DropReason)             {}
func (NopHooks) Login(LoginStatus)              {}
func (NopHooks) Command(AckStatus)              {}
func (NopHooks) CommandRoundTrip(time.Duration) {}
func (NopHooks) LinkState(bool)                 {}
func (NopHooks) LinkEstimate(LinkEstimate)      {}

// Limits and timers of the application protocol. Each endpoint config may override the
// timers; zero means these defaults.
const (
	// MaxPlaintextSize is the largest application message (type byte included): what one
	// native data datagram of link.MaxDatagramSize bytes carries after its 23 bytes of
	// header and tag. The DTLS transport keeps the same limit so messages fit either.
	MaxPlaintextSize = 1177
	// MaxUserNameSize and MaxPasswordSize bound the login fields.
	MaxUserNameSize = 64
	MaxPasswordSize = 256

	// DefaultDedupCapacity: executed command ids remembered per operator (key and user).
	DefaultDedupCapacity = 16384
	// DefaultLoginWorkers: concurrent password checks (argon2 is memory-hard).
	DefaultLoginWorkers = 2
	// DefaultLoginQueue: logins waiting for a worker before more are answered busy.
	DefaultLoginQueue = 16
	// DefaultCommandQueue: commands waiting for the executor before more are answered busy.
	DefaultCommandQueue = 64

	// RequestRetryInitial and RequestRetryMax: backoff for logins and commands awaiting an answer.
	RequestRetryInitial = 200 * time.Millisecond
	RequestRetryMax     = time.Second
	// KeepaliveInterval: an established endpoint that has sent nothing for this long sends a keepalive.
	KeepaliveInterval = 5 * time.Second
	// LinkLostKeepalives: no authenticated message for this many keepalive intervals marks
	// the link lost.
	LinkLostKeepalives = 3
	// LinkLostAfter is the link-lost time with the default keepalive interval.
	LinkLostAfter = LinkLostKeepalives * KeepaliveInterval
	// MaxCommandLifetime caps how long an operator retransmits one command, and so the
	// lifetime a command may carry: the drone never starts one that is older.
	MaxCommandLifetime = 30 * time.Second
	// ClockDriftPPM is the drift, in parts per million, allowed between the operator's and
	// the drone's clocks when the drone judges a command's age: the age is raised by this
	// share of the spans each side measured. Quartz clocks drift by tens of ppm.
	ClockDriftPPM = 1000
	// DefaultMaxFrameAge: tunnelled frames judged older than this on arrival are dropped
	// (DropLate), so frames an attacker held back are never delivered as current.
	DefaultMaxFrameAge = time.Second
)

// timerTick is how often endpoints look at their timers.
const timerTick = 50 * time.Millisecond
