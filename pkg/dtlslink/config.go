package dtlslink

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"time"

	"github.com/pion/dtls/v3"
	"github.com/pion/logging"

	"github.com/dronelink/dronelink/pkg/app"
	"github.com/dronelink/dronelink/pkg/crypto"
	"github.com/dronelink/dronelink/pkg/link"
	"github.com/dronelink/dronelink/pkg/replay"
)

// Suites are the cipher suites dronelink offers and accepts, in the client's order of
// preference (pion/dtls servers pick the client's first suite they support). Each is an
// AEAD; pion's CBC suites (TLS_PSK_WITH_AES_128_CBC_SHA256,
// TLS_ECDHE_PSK_WITH_AES_128_CBC_SHA256) are left out.
//
//   - TLS_ECDHE_PSK_WITH_CHACHA20_POLY1305_SHA256: the PSK authenticates, an ephemeral
//     X25519 exchange gives forward secrecy; ChaCha20 is fast on ARM cores without AES
//     instructions. OpenSSL 3.0 picks it by default.
//   - TLS_PSK_WITH_CHACHA20_POLY1305_SHA256 and TLS_PSK_WITH_AES_128_GCM_SHA256: PSK only,
//     no forward secrecy, for peers without ECDHE-PSK.
//   - TLS_PSK_WITH_AES_128_CCM_8: PSK only with an 8-byte tag, for constrained peers
//     (mbedTLS and CoAP-style stacks).
var Suites = []dtls.CipherSuiteID{
	dtls.TLS_ECDHE_PSK_WITH_CHACHA20_POLY1305_SHA256,
	dtls.TLS_PSK_WITH_CHACHA20_POLY1305_SHA256,
	dtls.TLS_PSK_WITH_AES_128_GCM_SHA256,
	dtls.TLS_PSK_WITH_AES_128_CCM_8,
}

// Defaults.
const (
	// DefaultFlightInterval is how often an unanswered handshake flight is retransmitted.
	// Retransmission backoff is off by default: on a lossy radio link pion's doubling
	// (uncapped up to a minute) would stretch a handshake that lost a few datagrams to tens
	// of seconds, and handshake flights are a few hundred bytes.
	DefaultFlightInterval = 400 * time.Millisecond
	// DefaultHandshakeTimeout bounds one DTLS handshake on the drone.
	DefaultHandshakeTimeout = 20 * time.Second
	// DefaultMaxHandshakes bounds associations that have not finished their handshake.
	DefaultMaxHandshakes = 64
	// DefaultMaxHandshakesPerSource bounds associations handshaking from one address: a
	// real peer has one at a time (two while it restarts).
	DefaultMaxHandshakesPerSource = 4
	// ConnectionIDSize is the length of the connection IDs the drone asks operators to send
	// (RFC 9146), so an operator keeps its session when its address changes.
	ConnectionIDSize = 8
	// readBufferSize holds any DTLS record (2^14 plaintext) so pion never refuses a read.
	readBufferSize = 1 << 14
	// socketBufferSize is the server's datagram read buffer.
	socketBufferSize = 8192
	// peerQueue is how many datagrams wait for one association's reader before more are dropped.
	peerQueue = 64
)

// PasswordChecker is the drone's user database as the DTLS transport needs it: the fleet
// PSK authenticates the peer, so only the password identifies the user.
type PasswordChecker interface {
	// CheckPassword checks a user's password and returns the user's role. It may be slow
	// (argon2id): the server calls it from a small bounded worker pool. Unknown users must
	// cost as much as known ones, so timing does not reveal which names exist.
	CheckPassword(user string, password []byte) (link.Role, link.LoginStatus)
	// UserRole is the cheap check, without the password, against the current database:
	// the user's role and LoginOK, or RoleNone and LoginUnknownUser. The server calls it
	// before spending a password check and again right before executing every command, so
	// a user removed or demoted since the login cannot command.
	UserRole(user string) (link.Role, link.LoginStatus)
}

// ServerConfig configures the drone's DTLS endpoint. Zero fields take the documented
// defaults.
type ServerConfig struct {
	// Conn is the socket. If nil, Run listens on Listen. Run closes it when it returns.
	Conn net.PacketConn
	// Listen is the UDP HOST:PORT to listen on when Conn is nil.
	Listen string
	// PSK is the fleet pre-shared key: the DTLS PSK for every identity.
	PSK crypto.PSK
	// Passwords checks logins; required.
	Passwords PasswordChecker
	// Handler executes commands; required. Handlers run one at a time, in arrival order.
	Handler link.CommandHandler
	// Logger receives the audit trail and warnings. If nil, logs are discarded. pion/dtls's
	// own messages go to it at Debug level.
	Logger *slog.Logger
	// Hooks receives metrics events. If nil, link.NopHooks.
	Hooks link.Hooks
	// ReplayWindow is the DTLS replay window in records. If zero, 2048 (the native default).
	ReplayWindow int
	// CipherSuites restricts the suites accepted; each must be one of Suites. If nil, Suites.
	CipherSuites []dtls.CipherSuiteID
	// FlightInterval: handshake retransmission interval. If zero, DefaultFlightInterval.
	FlightInterval time.Duration
	// RetransmitBackoff doubles the flight interval after each retransmission (pion's
	// RFC 6347 backoff) instead of keeping it constant.
	RetransmitBackoff bool
	// DisableConnectionID stops asking operators for RFC 9146 connection IDs.
	DisableConnectionID bool
	// HandshakeTimeout bounds one handshake. If zero, DefaultHandshakeTimeout.
	HandshakeTimeout time.Duration
	// MaxSessions bounds established associations. If zero, link.DefaultMaxSessions.
	MaxSessions int
	// MaxHandshakes bounds associations still handshaking (they do not count against
	// MaxSessions). If zero, DefaultMaxHandshakes.
	MaxHandshakes int
	// MaxHandshakesPerSource bounds associations still handshaking from one source
	// address. If zero, DefaultMaxHandshakesPerSource.
	MaxHandshakesPerSource int
	// DedupCapacity bounds remembered command ids per user. If zero, link.DefaultDedupCapacity.
	DedupCapacity int
	// LoginWorkers bounds concurrent password checks. If zero, link.DefaultLoginWorkers.
	LoginWorkers int
	// HandshakeRate and HandshakeBurst limit new associations per source address. If zero,
	// 10 per second with a burst of 20.
	HandshakeRate  float64
	HandshakeBurst int
	// LoginRate and LoginBurst limit logins per source address and per user and source
	// address (any PSK holder can claim any identity, so a user's own address keeps its own
	// bucket). If zero, 1 per second with a burst of 5.
	LoginRate  float64
	LoginBurst int
	// KeepaliveInterval: if zero, link.KeepaliveInterval. The link counts as lost after
	// link.LinkLostKeepalives intervals of silence.
	KeepaliveInterval time.Duration
	// SessionIdleTimeout: an established session silent this long is closed. If zero,
	// link.SessionIdleTimeout. Must exceed the link-lost time.
	SessionIdleTimeout time.Duration
	// OnFrames receives tunnelled frames from logged-in operators (app.ServerConfig.OnFrames).
	OnFrames app.FramesHandler
	// MaxFrameAge: frames older on arrival are dropped; if zero, app.DefaultMaxFrameAge.
	MaxFrameAge time.Duration
}

func (c ServerConfig) withDefaults() (ServerConfig, error) {
	if c.Passwords == nil || c.Handler == nil || (c.Conn == nil && c.Listen == "") {
		return c, errors.New("dtlslink: server config needs Conn or Listen, Passwords and Handler")
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Hooks == nil {
		c.Hooks = link.NopHooks{}
	}
	def := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	def(&c.ReplayWindow, replay.DefaultWindowSize)
	def(&c.MaxSessions, link.DefaultMaxSessions)
	def(&c.MaxHandshakes, DefaultMaxHandshakes)
	def(&c.MaxHandshakesPerSource, DefaultMaxHandshakesPerSource)
	def(&c.DedupCapacity, link.DefaultDedupCapacity)
	def(&c.LoginWorkers, link.DefaultLoginWorkers)
	def(&c.HandshakeBurst, 20)
	def(&c.LoginBurst, 5)
	if c.HandshakeRate == 0 {
		c.HandshakeRate = 10
	}
	if c.LoginRate == 0 {
		c.LoginRate = 1
	}
	if c.FlightInterval == 0 {
		c.FlightInterval = DefaultFlightInterval
	}
	if c.HandshakeTimeout == 0 {
		c.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if c.KeepaliveInterval == 0 {
		c.KeepaliveInterval = link.KeepaliveInterval
	}
	if c.SessionIdleTimeout == 0 {
		c.SessionIdleTimeout = link.SessionIdleTimeout
	}
	suites, err := checkSuites(c.CipherSuites)
	if err != nil {
		return c, err
	}
	c.CipherSuites = suites
	if c.ReplayWindow < 0 || c.ReplayWindow > replay.MaxWindowSize || c.MaxSessions < 0 || c.MaxHandshakes < 0 || c.MaxHandshakesPerSource < 0 ||
		c.DedupCapacity < 0 || c.LoginWorkers < 0 || c.HandshakeRate < 0 || c.LoginRate < 0 ||
		c.FlightInterval < 0 || c.HandshakeTimeout < 0 || c.KeepaliveInterval < 0 ||
		c.SessionIdleTimeout <= link.LinkLostKeepalives*c.KeepaliveInterval {
		return c, errors.New("dtlslink: server config has a negative or too large limit")
	}
	return c, nil
}

// ClientConfig configures an operator's DTLS endpoint. Zero fields take the documented
// defaults.
type ClientConfig struct {
	// Drone is the drone's address; required.
	Drone netip.AddrPort
	// PSK is the fleet pre-shared key.
	PSK crypto.PSK
	// User is the PSK identity and the login name; Password the login password (the
	// application layer keeps a copy to log in again on a new association, and wipes it at
	// Close).
	User     string
	Password []byte
	// Logger; if nil, logs are discarded.
	Logger *slog.Logger
	// Hooks; if nil, link.NopHooks.
	Hooks link.Hooks
	// ReplayWindow is the DTLS replay window in records. If zero, 2048.
	ReplayWindow int
	// CipherSuites offered, in order of preference; each must be one of Suites. If nil, Suites.
	CipherSuites []dtls.CipherSuiteID
	// FlightInterval: handshake retransmission interval. If zero, DefaultFlightInterval.
	FlightInterval time.Duration
	// RetransmitBackoff: see ServerConfig.
	RetransmitBackoff bool
	// KeepaliveInterval: if zero, link.KeepaliveInterval. After link.LinkLostKeepalives
	// intervals of silence from the drone the link counts as lost and the client sets up a
	// new association.
	KeepaliveInterval time.Duration
	// OnTelemetry receives each telemetry payload, on the reader goroutine; the slice is
	// valid only during the call. If nil, telemetry is dropped.
	OnTelemetry func(payload []byte)
	// OnEvent receives progress events (the link package's kinds), on internal goroutines;
	// it must not block.
	OnEvent func(link.Event)
	// OnFrames receives tunnelled frames from the drone (app.ClientConfig.OnFrames).
	OnFrames func(frames []byte)
	// MaxFrameAge: frames older on arrival are dropped; if zero, app.DefaultMaxFrameAge.
	MaxFrameAge time.Duration
	// SurviveShutdown: reconnect after the drone shuts down (app.ClientConfig.SurviveShutdown).
	SurviveShutdown bool
}

func (c ClientConfig) withDefaults() (ClientConfig, error) {
	if !c.Drone.IsValid() {
		return c, errors.New("dtlslink: client config needs Drone")
	}
	if !ValidUserName(c.User) || len(c.Password) > link.MaxPasswordSize {
		return c, fmt.Errorf("dtlslink: user name must be 1 to %d characters from A-Z a-z 0-9 . _ - and password at most %d bytes",
			link.MaxUserNameSize, link.MaxPasswordSize)
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Hooks == nil {
		c.Hooks = link.NopHooks{}
	}
	if c.ReplayWindow == 0 {
		c.ReplayWindow = replay.DefaultWindowSize
	}
	if c.FlightInterval == 0 {
		c.FlightInterval = DefaultFlightInterval
	}
	if c.KeepaliveInterval == 0 {
		c.KeepaliveInterval = link.KeepaliveInterval
	}
	suites, err := checkSuites(c.CipherSuites)
	if err != nil {
		return c, err
	}
	c.CipherSuites = suites
	if c.ReplayWindow < 0 || c.ReplayWindow > replay.MaxWindowSize || c.FlightInterval < 0 || c.KeepaliveInterval < 0 {
		return c, errors.New("dtlslink: client config out of range")
	}
	return c, nil
}

// checkSuites defaults and checks a suite list.
func checkSuites(s []dtls.CipherSuiteID) ([]dtls.CipherSuiteID, error) {
	if s == nil {
		return slices.Clone(Suites), nil
	}
	if len(s) == 0 {
		return nil, errors.New("dtlslink: no cipher suite")
	}
	for _, id := range s {
		if !slices.Contains(Suites, id) {
			return nil, fmt.Errorf("dtlslink: cipher suite %s is not one of the AEAD PSK suites dronelink allows", dtls.CipherSuiteName(id))
		}
	}
	return slices.Clone(s), nil
}

// ValidUserName reports whether name has the user database's name syntax (1 to 64
// characters from A-Z a-z 0-9 . _ -). The drone hands out the PSK for any such identity
// without looking it up, so the handshake does not reveal which users exist.
func ValidUserName(name string) bool {
	if len(name) < 1 || len(name) > link.MaxUserNameSize {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// pionLogger routes pion/dtls's logs to slog at Debug level: they are per packet and can be
// triggered by anyone on the radio path.
type pionLogger struct{ log *slog.Logger }

func (p pionLogger) NewLogger(scope string) logging.LeveledLogger {
	return pionScoped{log: p.log.With("component", "pion/"+scope)}
}

type pionScoped struct{ log *slog.Logger }

func (p pionScoped) enabled() bool { return p.log.Enabled(context.Background(), slog.LevelDebug) }

func (p pionScoped) print(msg string) {
	if p.enabled() {
		p.log.Debug(msg)
	}
}

func (p pionScoped) printf(format string, args ...any) {
	if p.enabled() {
		p.log.Debug(fmt.Sprintf(format, args...))
	}
}

func (p pionScoped) Trace(msg string)                  {}
func (p pionScoped) Tracef(format string, args ...any) {}
func (p pionScoped) Debug(msg string)                  { p.print(msg) }
func (p pionScoped) Debugf(format string, args ...any) { p.printf(format, args...) }
func (p pionScoped) Info(msg string)                   { p.print(msg) }
func (p pionScoped) Infof(format string, args ...any)  { p.printf(format, args...) }
func (p pionScoped) Warn(msg string)                   { p.print(msg) }
func (p pionScoped) Warnf(format string, args ...any)  { p.printf(format, args...) }
func (p pionScoped) Error(msg string)                  { p.print(msg) }
func (p pionScoped) Errorf(format string, args ...any) { p.printf(format, args...) }
