package app

import (
	"encoding/binary"
	"math"
	"strconv"
	"time"
)

// Message types: the first plaintext byte of every data datagram.
const (
	MsgLogin       = 1 // operator → drone: id, user name, password
	MsgLoginResult = 2 // drone → operator: id, status, role
	MsgCommand     = 3 // operator → drone: id, flags, sequence, issue time, lifetime, payload
	MsgAck         = 4 // drone → operator: id, status, payload
	MsgTelemetry   = 5 // drone → operator: payload
	MsgKeepalive   = 6 // either way: nothing
	MsgClose       = 7 // either way: reason; the session ends
	MsgFrames      = 8 // either way: the sender's session time, tunnelled frames (MAVLink)
)

// Message field sizes.
const (
	msgIDSize = 8
	// LoginHeaderSize: type, id, user-name length.
	LoginHeaderSize = 1 + msgIDSize + 1
	// LoginResultSize: type, id, status, role.
	LoginResultSize = 1 + msgIDSize + 1 + 1
	// CommandHeaderSize: type, id, flags, sequence (BE64), issue time (signed BE32
	// milliseconds of session time), lifetime (BE32 milliseconds).
	CommandHeaderSize = 1 + msgIDSize + 1 + 8 + 4 + 4
	// AckHeaderSize: type, id, status.
	AckHeaderSize = 1 + msgIDSize + 1
	// TelemetryHeaderSize: type.
	TelemetryHeaderSize = 1
	// CloseSize: type, reason.
	CloseSize = 2
	// FramesHeaderSize: type, session time (BE32 milliseconds).
	FramesHeaderSize = 1 + 4

	// MaxCommandPayload is the largest command payload that fits one datagram.
	MaxCommandPayload = MaxPlaintextSize - CommandHeaderSize
	// MaxAckPayload is the largest acknowledgement payload that fits one datagram.
	MaxAckPayload = MaxPlaintextSize - AckHeaderSize
	// MaxTelemetryPayload is the largest telemetry payload that fits one datagram.
	MaxTelemetryPayload = MaxPlaintextSize - TelemetryHeaderSize
	// MaxFramesPayload is the most tunnelled frame bytes one datagram carries.
	MaxFramesPayload = MaxPlaintextSize - FramesHeaderSize
)

// Role is what a logged-in user may do.
type Role byte

// Roles.
const (
	RoleNone     Role = 0 // not logged in
	RoleObserver Role = 1 // receives telemetry
	RolePilot    Role = 2 // receives telemetry and sends commands
)

// String names the role as the user database spells it.
func (r Role) String() string {
	switch r {
	case RoleObserver:
		return "observer"
	case RolePilot:
		return "pilot"
	case RoleNone:
		return "none"
	}
	return "role(" + strconv.Itoa(int(r)) + ")"
}

// ParseRole parses "pilot" or "observer".
func ParseRole(s string) (Role, bool) {
	switch s {
	case "pilot":
		return RolePilot, true
	case "observer":
		return RoleObserver, true
	}
	return RoleNone, false
}

// LoginStatus is the drone's answer to a login.
type LoginStatus byte

// Login statuses.
const (
	LoginOK               LoginStatus = 0
	LoginUnknownUser      LoginStatus = 1
	LoginWrongPassword    LoginStatus = 2
	LoginKeyNotAuthorised LoginStatus = 3 // the session's key is not one of the user's keys
	LoginRateLimited      LoginStatus = 4
	LoginBusy             LoginStatus = 5 // the password checker is saturated; retry
	LoginInternal         LoginStatus = 6 // the drone could not check (internal error)
	// MaxLoginStatus is the highest login status defined; a higher one is malformed.
	MaxLoginStatus LoginStatus = 6
)

// String names the status for logs and metrics labels.
func (s LoginStatus) String() string {
	switch s {
	case LoginOK:
		return "ok"
	case LoginUnknownUser:
		return "unknown_user"
	case LoginWrongPassword:
		return "wrong_password"
	case LoginKeyNotAuthorised:
		return "key_not_authorised"
	case LoginRateLimited:
		return "rate_limited"
	case LoginBusy:
		return "busy"
	case LoginInternal:
		return "error"
	}
	return "unknown"
}

// AckStatus is the drone's answer to a command.
type AckStatus byte

// Acknowledgement statuses.
const (
	AckOK           AckStatus = 0 // executed
	AckFailed       AckStatus = 1 // executed by the handler, which reported failure
	AckNotPermitted AckStatus = 2 // the user's role may not command; not executed
	AckNotLoggedIn  AckStatus = 3 // no login on this session; not executed
	AckBusy         AckStatus = 4 // the drone could not take it now; not executed, retry
	// AckLate: not executed, and never will be: it reached the drone (or its turn came)
	// after its sender's deadline, when the sender may already have reported it failed.
	AckLate AckStatus = 5
	// AckSuperseded: not executed, and never will be: a command its sender issued later
	// (same operator key, not marked independent) was executed first.
	AckSuperseded AckStatus = 6
	// AckRestarted: not executed by this run of the drone, and never will be: it was issued
	// before the drone's current run began, so an earlier run may have executed it. Its
	// outcome is unknown to the drone.
	AckRestarted AckStatus = 7
	// MaxAckStatus is the highest acknowledgement status defined.
	MaxAckStatus AckStatus = 7
)

// Final reports whether the operator stops retransmitting a command on this status.
// AckBusy and AckNotLoggedIn are not final.
func (s AckStatus) Final() bool { return s != AckBusy && s != AckNotLoggedIn }

// Executed reports whether the status says the handler ran: AckOK or AckFailed.
func (s AckStatus) Executed() bool { return s == AckOK || s == AckFailed }

// String names the status for logs and metrics labels.
func (s AckStatus) String() string {
	switch s {
	case AckOK:
		return "ok"
	case AckFailed:
		return "failed"
	case AckNotPermitted:
		return "not_permitted"
	case AckNotLoggedIn:
		return "not_logged_in"
	case AckBusy:
		return "busy"
	case AckLate:
		return "late"
	case AckSuperseded:
		return "superseded"
	case AckRestarted:
		return "restarted"
	}
	return "unknown"
}

// Command flags (the flags byte of a command; undefined bits must be zero).
const (
	// CommandIndependent marks a command that is not ordered against its sender's other
	// commands: it is executed even if a later command of the same operator key already
	// was, and its execution does not supersede earlier ones.
	CommandIndependent = 1 << 0
	// CommandAckTwice asks the drone to send its final answer twice: the sender sends this
	// transmission in more than one copy because the link loses datagrams, and the answer
	// must not be the weak side (docs/PROTOCOL.md section 8.2).
	CommandAckTwice = 1 << 1
	// commandFlagsKnown are the flags this version defines.
	commandFlagsKnown = CommandIndependent | CommandAckTwice
)

// CommandHeader is what a command carries besides its id and payload: what the drone
// needs to refuse it when it is late, superseded or from before a restart
// (docs/PROTOCOL.md section 8.2).
type CommandHeader struct {
	Flags byte
	// Seq orders the commands of one operator key: the sender's wall-clock time of issue in
	// Unix nanoseconds, strictly increasing within one sender.
	Seq uint64
	// Issued is the issue time as a session time: signed milliseconds from the send epoch
	// of the session the command goes out on (negative if it was issued before that
	// session was agreed). The channel fills it in as it seals (StampCommand).
	Issued int32
	// Lifetime is how long after its issue the sender waits for the acknowledgement, in
	// milliseconds: once that long has passed the sender may report the command failed, so
	// the drone never executes it after that.
	Lifetime uint32
}

// CloseReason says why a session ended.
type CloseReason byte

// Close reasons.
const (
	CloseNormal   CloseReason = 0 // the peer is done
	CloseRevoked  CloseReason = 1 // the user or key was removed from the drone
	CloseShutdown CloseReason = 2 // the drone is shutting down
	// MaxCloseReason is the highest close reason defined.
	MaxCloseReason CloseReason = 2
)

// String names the reason.
func (r CloseReason) String() string {
	switch r {
	case CloseNormal:
		return "normal"
	case CloseRevoked:
		return "revoked"
	case CloseShutdown:
		return "shutdown"
	}
	return "unknown"
}

// Message is a parsed plaintext message. Its slices alias the buffer it was parsed from.
type Message struct {
	Type     byte
	ID       uint64 // login or command id
	Status   byte   // LoginStatus or AckStatus
	Role     Role   // login result
	Reason   CloseReason
	User     []byte // login
	Password []byte // login
	Payload  []byte // command, ack, telemetry, frames
	Stamp    uint32 // frames: the sender's session time in milliseconds
	Command  CommandHeader
}

// ParseMessage parses one plaintext message into m, checking every length. It allocates
// nothing.
func ParseMessage(b []byte, m *Message) error {
	*m = Message{}
	if len(b) == 0 || len(b) > MaxPlaintextSize {
		return ErrMalformed
	}
	m.Type = b[0]
	switch m.Type {
	case MsgLogin:
		if len(b) < LoginHeaderSize {
			return ErrMalformed
		}
		m.ID = binary.BigEndian.Uint64(b[1:])
		n := int(b[1+msgIDSize])
		rest := b[LoginHeaderSize:]
		if n == 0 || n > MaxUserNameSize || n > len(rest) || len(rest)-n > MaxPasswordSize {
			return ErrMalformed
		}
		m.User, m.Password = rest[:n:n], rest[n:]
	case MsgLoginResult:
		if len(b) != LoginResultSize {
			return ErrMalformed
		}
		m.ID = binary.BigEndian.Uint64(b[1:])
		m.Status, m.Role = b[1+msgIDSize], Role(b[2+msgIDSize])
		if LoginStatus(m.Status) > MaxLoginStatus || m.Role > RolePilot {
			return ErrMalformed
		}
	case MsgCommand:
		if len(b) < CommandHeaderSize {
			return ErrMalformed
		}
		m.ID = binary.BigEndian.Uint64(b[1:])
		h := b[1+msgIDSize:]
		m.Command = CommandHeader{Flags: h[0], Seq: binary.BigEndian.Uint64(h[1:]),
			Issued: int32(binary.BigEndian.Uint32(h[9:])), Lifetime: binary.BigEndian.Uint32(h[13:])}
		if m.Command.Flags&^commandFlagsKnown != 0 {
			return ErrMalformed
		}
		m.Payload = b[CommandHeaderSize:]
	case MsgAck:
		if len(b) < AckHeaderSize {
			return ErrMalformed
		}
		m.ID = binary.BigEndian.Uint64(b[1:])
		m.Status = b[1+msgIDSize]
		if AckStatus(m.Status) > MaxAckStatus {
			return ErrMalformed
		}
		m.Payload = b[AckHeaderSize:]
	case MsgTelemetry:
		m.Payload = b[TelemetryHeaderSize:]
	case MsgKeepalive:
		if len(b) != 1 {
			return ErrMalformed
		}
	case MsgFrames:
		if len(b) <= FramesHeaderSize {
			return ErrMalformed
		}
		m.Stamp = binary.BigEndian.Uint32(b[1:])
		m.Payload = b[FramesHeaderSize:]
	case MsgClose:
		if len(b) != CloseSize || CloseReason(b[1]) > MaxCloseReason {
			return ErrMalformed
		}
		m.Reason = CloseReason(b[1])
	default:
		return ErrMalformed
	}
	return nil
}

// AppendLogin appends a login message. The caller checks the sizes (see ParseMessage).
func AppendLogin(dst []byte, id uint64, user string, password []byte) []byte {
	dst = append(dst, MsgLogin)
	dst = binary.BigEndian.AppendUint64(dst, id)
	dst = append(dst, byte(len(user)))
	dst = append(dst, user...)
	return append(dst, password...)
}

// AppendLoginResult appends a login result.
func AppendLoginResult(dst []byte, id uint64, status LoginStatus, role Role) []byte {
	dst = append(dst, MsgLoginResult)
	dst = binary.BigEndian.AppendUint64(dst, id)
	return append(dst, byte(status), byte(role))
}

// AppendCommand appends a command. Its issue time is h.Issued; a sender that does not
// know the session yet leaves it zero and the channel stamps it (StampCommand).
func AppendCommand(dst []byte, id uint64, h CommandHeader, payload []byte) []byte {
	dst = append(dst, MsgCommand)
	dst = binary.BigEndian.AppendUint64(dst, id)
	dst = append(dst, h.Flags)
	dst = binary.BigEndian.AppendUint64(dst, h.Seq)
	dst = binary.BigEndian.AppendUint32(dst, uint32(h.Issued))
	dst = binary.BigEndian.AppendUint32(dst, h.Lifetime)
	return append(dst, payload...)
}

// StampCommand writes a command's issue time as a session time: issuedSinceEpoch is the
// issue instant minus the send epoch of the session the command goes out on (negative
// when it was issued first), in whole milliseconds rounded down, so that the receiver's
// estimate of the command's age is never too small (docs/PROTOCOL.md section 8.2). It
// does nothing to other messages.
func StampCommand(msg []byte, issuedSinceEpoch time.Duration) {
	if len(msg) >= CommandHeaderSize && msg[0] == MsgCommand {
		binary.BigEndian.PutUint32(msg[1+msgIDSize+1+8:], uint32(issueMillis(issuedSinceEpoch)))
	}
}

// issueMillis is a signed session time in milliseconds, rounded towards minus infinity
// and saturating at the int32 range.
func issueMillis(d time.Duration) int32 {
	ms := d.Milliseconds() // rounds towards zero
	if d < 0 && d%time.Millisecond != 0 {
		ms--
	}
	switch {
	case ms < math.MinInt32:
		return math.MinInt32
	case ms > math.MaxInt32:
		return math.MaxInt32
	}
	return int32(ms)
}

// AppendAck appends an acknowledgement.
func AppendAck(dst []byte, id uint64, status AckStatus, payload []byte) []byte {
	dst = append(dst, MsgAck)
	dst = binary.BigEndian.AppendUint64(dst, id)
	dst = append(dst, byte(status))
	return append(dst, payload...)
}

// AppendTelemetry appends a telemetry message.
func AppendTelemetry(dst []byte, payload []byte) []byte {
	return append(append(dst, MsgTelemetry), payload...)
}

// AppendKeepalive appends a keepalive.
func AppendKeepalive(dst []byte) []byte { return append(dst, MsgKeepalive) }

// AppendClose appends a close message.
func AppendClose(dst []byte, reason CloseReason) []byte {
	return append(dst, MsgClose, byte(reason))
}

// AppendFrames appends a frames message with a zero session time, which the channel
// fills in when it seals the message (StampFrames).
func AppendFrames(dst []byte, frames []byte) []byte {
	dst = append(dst, MsgFrames, 0, 0, 0, 0)
	return append(dst, frames...)
}

// Stamp fills in the session times of a message as its sender seals it on a session whose
// send epoch is sendEpoch: a frames message gets now as its session time (StampFrames), a
// command its issue instant (StampCommand). Other messages are left alone.
func Stamp(msg []byte, sendEpoch, now, issued time.Time) {
	if len(msg) == 0 {
		return
	}
	switch msg[0] {
	case MsgFrames:
		StampFrames(msg, now.Sub(sendEpoch))
	case MsgCommand:
		StampCommand(msg, issued.Sub(sendEpoch))
	}
}

// StampFrames writes the sender's session time into a frames message: the time since the
// epoch from which the receiver judges the frames' age (docs/PROTOCOL.md section 8.4). The
// sender fills it in right before sealing, on the session the message goes out on. It does
// nothing to other messages.
func StampFrames(msg []byte, sinceEpoch time.Duration) {
	if len(msg) >= FramesHeaderSize && msg[0] == MsgFrames {
		binary.BigEndian.PutUint32(msg[1:], sessionMillis(sinceEpoch))
	}
}

// SinceEpoch is how long ago epoch was at now, for session times: the larger of the
// monotonic and the wall-clock difference. The monotonic clock stops while the machine
// sleeps; frames held back across a suspend must still count as old, so the larger
// (never the smaller) of the two is the age's base. A wall clock stepped forward can only
// make frames count as older (dropped until the next session), never younger.
func SinceEpoch(now, epoch time.Time) time.Duration {
	return max(now.Sub(epoch), now.Round(0).Sub(epoch.Round(0)))
}

// sessionMillis is a session time in whole milliseconds, 0 before the epoch and saturating
// far beyond any session's life.
func sessionMillis(d time.Duration) uint32 {
	ms := d.Milliseconds()
	switch {
	case ms < 0:
		return 0
	case ms > 1<<32-1:
		return 1<<32 - 1
	}
	return uint32(ms)
}
