package link

import (
	"time"

	"github.com/dronelink/dronelink/pkg/app"
)

// The application protocol (messages, roles, statuses, commands, events) is package app,
// written once for both secure channels. These names keep pkg/link a complete API for
// embedders of the native protocol: each is the app package's own, not a copy.

// Application message types (app.MsgLogin ...).
const (
	MsgLogin       = app.MsgLogin
	MsgLoginResult = app.MsgLoginResult
	MsgCommand     = app.MsgCommand
	MsgAck         = app.MsgAck
	MsgTelemetry   = app.MsgTelemetry
	MsgKeepalive   = app.MsgKeepalive
	MsgClose       = app.MsgClose
	MsgFrames      = app.MsgFrames
)

// Application message sizes and limits (see package app).
const (
	LoginHeaderSize     = app.LoginHeaderSize
	LoginResultSize     = app.LoginResultSize
	CommandHeaderSize   = app.CommandHeaderSize
	AckHeaderSize       = app.AckHeaderSize
	TelemetryHeaderSize = app.TelemetryHeaderSize
	CloseSize           = app.CloseSize
	MaxCommandPayload   = app.MaxCommandPayload
	MaxAckPayload       = app.MaxAckPayload
	MaxTelemetryPayload = app.MaxTelemetryPayload
	MaxUserNameSize     = app.MaxUserNameSize
	MaxPasswordSize     = app.MaxPasswordSize

	DefaultDedupCapacity = app.DefaultDedupCapacity
	DefaultLoginWorkers  = app.DefaultLoginWorkers
	DefaultLoginQueue    = app.DefaultLoginQueue
	DefaultCommandQueue  = app.DefaultCommandQueue

	RequestRetryInitial = app.RequestRetryInitial
	RequestRetryMax     = app.RequestRetryMax
	KeepaliveInterval   = app.KeepaliveInterval
	LinkLostKeepalives  = app.LinkLostKeepalives
	LinkLostAfter       = app.LinkLostAfter
	MaxCommandLifetime  = app.MaxCommandLifetime
)

type (
	// Role is app.Role.
	Role = app.Role
	// LoginStatus is app.LoginStatus.
	LoginStatus = app.LoginStatus
	// AckStatus is app.AckStatus.
	AckStatus = app.AckStatus
	// CloseReason is app.CloseReason.
	CloseReason = app.CloseReason
	// Message is app.Message.
	Message = app.Message
	// Command is app.Command.
	Command = app.Command
	// CommandHeader is app.CommandHeader.
	CommandHeader = app.CommandHeader
	// CommandOptions is app.CommandOptions.
	CommandOptions = app.CommandOptions
	// CommandHandler is app.CommandHandler.
	CommandHandler = app.CommandHandler
	// SessionInfo is app.SessionInfo.
	SessionInfo = app.SessionInfo
	// Ack is app.Ack.
	Ack = app.Ack
	// LoginError is app.LoginError.
	LoginError = app.LoginError
	// ClosedError is app.ClosedError.
	ClosedError = app.ClosedError
	// Event is app.Event.
	Event = app.Event
	// EventKind is app.EventKind.
	EventKind = app.EventKind
	// DropReason is app.DropReason.
	DropReason = app.DropReason
	// PacketKind is app.PacketKind.
	PacketKind = app.PacketKind
	// LinkEstimate is app.LinkEstimate.
	LinkEstimate = app.LinkEstimate
)

// Roles, statuses and reasons (see package app).
const (
	RoleNone     = app.RoleNone
	RoleObserver = app.RoleObserver
	RolePilot    = app.RolePilot

	LoginOK               = app.LoginOK
	LoginUnknownUser      = app.LoginUnknownUser
	LoginWrongPassword    = app.LoginWrongPassword
	LoginKeyNotAuthorised = app.LoginKeyNotAuthorised
	LoginRateLimited      = app.LoginRateLimited
	LoginBusy             = app.LoginBusy
	LoginInternal         = app.LoginInternal
	maxLoginStatus        = app.MaxLoginStatus

	AckOK           = app.AckOK
	AckFailed       = app.AckFailed
	AckNotPermitted = app.AckNotPermitted
	AckNotLoggedIn  = app.AckNotLoggedIn
	AckBusy         = app.AckBusy
	AckLate         = app.AckLate
	AckSuperseded   = app.AckSuperseded
	AckRestarted    = app.AckRestarted
	// CommandIndependent is app.CommandIndependent.
	CommandIndependent = app.CommandIndependent
	// CommandAckTwice is app.CommandAckTwice.
	CommandAckTwice = app.CommandAckTwice
	maxAckStatus    = app.MaxAckStatus

	CloseNormal   = app.CloseNormal
	CloseRevoked  = app.CloseRevoked
	CloseShutdown = app.CloseShutdown
	maxClose      = app.MaxCloseReason
)

// Client events (see app.EventKind).
const (
	EventHandshakeSent = app.EventHandshakeSent
	EventEstablished   = app.EventEstablished
	EventLoginSent     = app.EventLoginSent
	EventLoggedIn      = app.EventLoggedIn
	EventCommandRetry  = app.EventCommandRetry
	EventLinkLost      = app.EventLinkLost
	EventLinkRestored  = app.EventLinkRestored
	EventRefused       = app.EventRefused
)

// Drop reasons (see app.DropReason).
const (
	DropMalformed      = app.DropMalformed
	DropBadMAC         = app.DropBadMAC
	DropRateLimited    = app.DropRateLimited
	DropStale          = app.DropStale
	DropUnknownKey     = app.DropUnknownKey
	DropWrongDroneKey  = app.DropWrongDroneKey
	DropBadSignature   = app.DropBadSignature
	DropSessionLimit   = app.DropSessionLimit
	DropUnknownSession = app.DropUnknownSession
	DropDecrypt        = app.DropDecrypt
	DropReplay         = app.DropReplay
	DropExpired        = app.DropExpired
	DropUnexpected     = app.DropUnexpected
	DropLate           = app.DropLate
	NumDropReasons     = app.NumDropReasons
)

// Packet kinds (see app.PacketKind).
const (
	KindInitiation  = app.KindInitiation
	KindResponse    = app.KindResponse
	KindError       = app.KindError
	KindData        = app.KindData
	KindLogin       = app.KindLogin
	KindLoginResult = app.KindLoginResult
	KindCommand     = app.KindCommand
	KindAck         = app.KindAck
	KindTelemetry   = app.KindTelemetry
	KindKeepalive   = app.KindKeepalive
	KindClose       = app.KindClose
	KindFrames      = app.KindFrames
	NumPacketKinds  = app.NumPacketKinds
)

// ParseRole parses "pilot" or "observer" (app.ParseRole).
func ParseRole(s string) (Role, bool) { return app.ParseRole(s) }

// ParseMessage parses one application message (app.ParseMessage).
func ParseMessage(b []byte, m *Message) error { return app.ParseMessage(b, m) }

// AppendLogin appends a login message (app.AppendLogin).
func AppendLogin(dst []byte, id uint64, user string, password []byte) []byte {
	return app.AppendLogin(dst, id, user, password)
}

// AppendLoginResult appends a login result (app.AppendLoginResult).
func AppendLoginResult(dst []byte, id uint64, status LoginStatus, role Role) []byte {
	return app.AppendLoginResult(dst, id, status, role)
}

// AppendCommand appends a command (app.AppendCommand).
func AppendCommand(dst []byte, id uint64, h CommandHeader, payload []byte) []byte {
	return app.AppendCommand(dst, id, h, payload)
}

// AppendAck appends an acknowledgement (app.AppendAck).
func AppendAck(dst []byte, id uint64, status AckStatus, payload []byte) []byte {
	return app.AppendAck(dst, id, status, payload)
}

// AppendTelemetry appends a telemetry message (app.AppendTelemetry).
func AppendTelemetry(dst []byte, payload []byte) []byte { return app.AppendTelemetry(dst, payload) }

// AppendKeepalive appends a keepalive (app.AppendKeepalive).
func AppendKeepalive(dst []byte) []byte { return app.AppendKeepalive(dst) }

// AppendClose appends a close message (app.AppendClose).
func AppendClose(dst []byte, reason CloseReason) []byte { return app.AppendClose(dst, reason) }

// RetryDelay is the capped exponential backoff before retry number attempt (0-based),
// with up to 25% random jitter so many operators do not retry in lockstep (app.RetryDelay).
func RetryDelay(attempt int, initial, maxDelay time.Duration) time.Duration {
	return app.RetryDelay(attempt, initial, maxDelay)
}

// The native data datagram carries exactly one application message of at most
// app.MaxPlaintextSize bytes: these fail to compile if the two sizes disagree.
const (
	_ uint = MaxPlaintextSize - app.MaxPlaintextSize
	_ uint = app.MaxPlaintextSize - MaxPlaintextSize
)
