package link

import "time"

// Protocol numbers: every size, offset, timer and limit of the wire protocol lives here so
// that docs/PROTOCOL.md can be checked against one file.

// ProtocolVersion is carried in the high nibble of the first byte of every datagram.
const ProtocolVersion = 1

// Datagram types, carried in the low nibble of the first byte.
const (
	TypeInitiation = 1 // operator → drone: start a session
	TypeResponse   = 2 // drone → operator: accept it
	TypeError      = 3 // drone → operator: refuse it, with a reason
	TypeData       = 4 // either way: one AEAD-sealed application message
	TypeKeyRequest = 5 // operator → drone: ask for the drone's public key (keyrequest.go)
	TypeKeyAnswer  = 6 // drone → operator: the drone's public key
)

// Sizes of fields shared by several datagrams.
const (
	indexSize     = 2  // session index, big-endian; 0 means "none"
	timestampSize = 8  // unix nanoseconds, big-endian
	keyIDSize     = 16 // crypto.KeyIDSize
	publicSize    = 32 // X25519 public key
	macSize       = 32 // HMAC-SHA256 under the PSK MAC key
	tagSize       = 16 // Poly1305
	counterSize   = 4  // data counter, big-endian
)

// Initiation layout (operator → drone): fields, wrapped secret (W bytes, the drone modulus
// size, also given explicitly), signature (S bytes, the operator modulus size), resume tag,
// PSK MAC.
const (
	initOffType      = 0
	initOffSender    = 1
	initOffReplaces  = initOffSender + indexSize        // 3
	initOffTimestamp = initOffReplaces + indexSize      // 5
	initOffOperator  = initOffTimestamp + timestampSize // 13
	initOffDrone     = initOffOperator + keyIDSize      // 29
	initOffEphemeral = initOffDrone + keyIDSize         // 45
	initOffWrapLen   = initOffEphemeral + publicSize    // 77
	initOffWrapped   = initOffWrapLen + 2               // 79

	// The signature (S bytes) follows the wrapped secret, then the resume tag, then the MAC.
	resumeSize = 32 // HMAC-SHA256 under the replaced session's resume key, or zeros

	// InitiationFixedSize is the initiation's size without the wrapped secret and signature.
	InitiationFixedSize = initOffWrapped + resumeSize + macSize // 143
)

// Response layout (drone → operator).
const (
	respOffType      = 0
	respOffSender    = 1
	respOffReceiver  = respOffSender + indexSize     // 3
	respOffFlags     = respOffReceiver + indexSize   // 5
	respOffEphemeral = respOffFlags + 1              // 6
	respOffConfirm   = respOffEphemeral + publicSize // 38
	respOffMAC       = respOffConfirm + tagSize      // 54

	// ResponseSize is the response datagram's size.
	ResponseSize = respOffMAC + macSize // 86

	// FlagLoginCarried in the response flags: the initiation replaced a live session of the
	// same operator key that was logged in, and the login carries over to the new session.
	FlagLoginCarried = 1 << 0
	respKnownFlags   = FlagLoginCarried
)

// Error layout (drone → operator).
const (
	errOffType      = 0
	errOffReceiver  = 1
	errOffCode      = errOffReceiver + indexSize      // 3
	errOffTimestamp = errOffCode + 1                  // 4
	errOffMAC       = errOffTimestamp + timestampSize // 12

	// ErrorSize is the error datagram's size.
	ErrorSize = errOffMAC + macSize // 44
)

// Key request layout (operator → drone): a random nonce, zero padding up to the key
// answer's size, PSK MAC. It is as large as the answer, so answering never amplifies.
const (
	nonceSize      = 16 // key request nonce, echoed by the answer
	keyReqOffType  = 0
	keyReqOffNonce = 1
	keyReqOffPad   = keyReqOffNonce + nonceSize // 17
	keyReqOffMAC   = KeyRequestSize - macSize   // 570

	// KeyRequestSize is the key request's size: that of the key answer, so the drone's
	// answer is never larger than the request that caused it.
	KeyRequestSize = KeyAnswerSize // 602

	_ uint = KeyRequestSize - KeyAnswerSize // no amplification: fails to compile if the answer is larger
	_ uint = keyReqOffMAC - keyReqOffPad
)

// Key answer layout (drone → operator): the request's nonce, the drone's public key as
// PKIX DER with its length, zero padding to a fixed size, PSK MAC.
const (
	keyAnsOffType   = 0
	keyAnsOffNonce  = 1
	keyAnsOffKeyLen = keyAnsOffNonce + nonceSize   // 17
	keyAnsOffKey    = keyAnsOffKeyLen + 2          // 19
	keyAnsOffMAC    = keyAnsOffKey + MaxKeyDERSize // 570

	// KeyAnswerSize is the key answer's size, whatever the size of the key it carries.
	KeyAnswerSize = keyAnsOffMAC + macSize // 602

	// MinKeyDERSize and MaxKeyDERSize bound the PKIX DER encoding of an RSA public key of
	// MinRSABytes to MaxRSABytes with an exponent from 3 to 2^31-1 (the largest crypto/rsa
	// uses): 2048 bits with exponent 3 encode to 292 bytes, 4096 bits with exponent
	// 2^31-1 to 551 (65537, the usual exponent, gives 294 and 550).
	MinKeyDERSize = 292
	MaxKeyDERSize = 551
)

// Data layout (either direction). The 7-byte header is the AEAD's associated data.
const (
	dataOffType     = 0
	dataOffReceiver = 1
	dataOffCounter  = dataOffReceiver + indexSize // 3

	// DataHeaderSize is the clear header of a data datagram.
	DataHeaderSize = dataOffCounter + counterSize // 7
	// DataOverhead is what a data datagram adds to its plaintext: header and tag.
	DataOverhead = DataHeaderSize + tagSize // 23
)

// Size limits.
const (
	// MaxDatagramSize is the largest datagram dronelink sends or accepts. It keeps every
	// datagram inside a 1280-byte IPv6 minimum MTU path with room for IP and UDP headers.
	MaxDatagramSize = 1200
	// MaxPlaintextSize is the largest sealed message (message type byte included).
	MaxPlaintextSize = MaxDatagramSize - DataOverhead
	// ReadBufferSize is larger than any valid datagram so oversize ones are seen and dropped.
	ReadBufferSize = 2048
	// MinRSABytes and MaxRSABytes bound the wrapped-secret and signature fields (2048 to 4096 bits).
	MinRSABytes = 256
	MaxRSABytes = 512
	// MinInitiationSize and MaxInitiationSize bound an initiation before anything else is looked at.
	MinInitiationSize = InitiationFixedSize + 2*MinRSABytes // 655
	MaxInitiationSize = InitiationFixedSize + 2*MaxRSABytes // 1167
)

// Counter limits. The send counter never wraps: a session is rekeyed at RekeyAfterMessages
// and refuses to send or accept at RejectAfterMessages.
const (
	RekeyAfterMessages  = 1 << 31
	RejectAfterMessages = 1<<32 - 1

	// Compile-time ordering checks: these constants overflow (and fail to compile) if the
	// rekey limit is not strictly below the reject limit, or if the reject limit does not
	// fit the 32-bit wire counter.
	_ uint64 = RejectAfterMessages - RekeyAfterMessages - 1
	_ uint32 = RejectAfterMessages
)

// Timers. Each endpoint config may override them; zero means these defaults.
const (
	// RekeyAfterTime: the operator starts a new handshake once a session is this old.
	RekeyAfterTime = 120 * time.Second
	// RejectAfterTime: a session this old is neither used nor accepted any more.
	RejectAfterTime = 180 * time.Second
	// PreviousSessionGrace: a replaced session still receives for this long, so packets
	// already in flight during a rekey are not lost.
	PreviousSessionGrace = 10 * time.Second
	// HandshakeRetryInitial and HandshakeRetryMax: capped exponential backoff (with jitter)
	// for initiations; each retry is a fresh initiation with a newer timestamp.
	HandshakeRetryInitial = 400 * time.Millisecond
	HandshakeRetryMax     = 2 * time.Second
	// ColdStartInitiations and ColdStartRounds: before an operator's first session, when
	// its first initiation went unanswered (no response, no refusal), each of the next
	// ColdStartRounds rounds sends ColdStartInitiations fresh initiations at once. Nothing
	// tells loss from a dead drone yet: this costs up to 8 extra initiations on a dead
	// link, then single ones on the backoff above, as before.
	ColdStartInitiations = 4
	ColdStartRounds      = 2
	// SessionIdleTimeout: the drone forgets a session that has been silent this long.
	SessionIdleTimeout = 60 * time.Second
	// DedupLifetime: the drone remembers an executed command id this long: longer than any
	// copy of it can still be accepted. A copy held back by an attacker stays acceptable as
	// long as its session lives (RejectAfterTime, plus PreviousSessionGrace once replaced)
	// and the operator may send the first copy up to MaxCommandLifetime after the command
	// was issued; after all of that, no copy of it can authenticate any more.
	DedupLifetime = MaxCommandLifetime + RejectAfterTime + PreviousSessionGrace + 10*time.Second

	_ uint64 = uint64(RejectAfterTime - RekeyAfterTime - 1)
	_ uint64 = uint64(DedupLifetime - MaxCommandLifetime - RejectAfterTime - PreviousSessionGrace - 1)
	// MaxClockSkew: an initiation timestamp further than this ahead of the drone's clock is
	// refused (and not remembered), so a runaway clock cannot lock a key out; the check
	// applies only once the drone's clock is plausibly set (after ClockSaneAfter).
	MaxClockSkew        = 10 * time.Minute
	_            uint64 = uint64(SessionIdleTimeout - LinkLostAfter - 1)
)

// ClockSaneAfter: a drone clock before this instant has not been set, and the
// future-timestamp bound (MaxClockSkew) is not applied.
var ClockSaneAfter = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)

// Capacity limits, defaults for the server config.
const (
	DefaultMaxSessions       = 1024
	DefaultMaxSessionsPerKey = 8
)

// timerTick is how often endpoints look at their timers.
const timerTick = 100 * time.Millisecond

// Handshake limits per operator key, defaults for the server config: initiations whose
// operator signature verified, before the drone's RSA unwrap.
const (
	DefaultKeyHandshakeRate  = 5  // per second
	DefaultKeyHandshakeBurst = 20 // initiations
)
