package link

import (
	"context"
	"crypto/rsa"
	"crypto/subtle"
	"errors"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dronelink/dronelink/internal/ratelog"
	"github.com/dronelink/dronelink/pkg/app"
	"github.com/dronelink/dronelink/pkg/crypto"
	"github.com/dronelink/dronelink/pkg/ratelimit"
	"github.com/dronelink/dronelink/pkg/replay"
)

// Authenticator is the drone's user database as the link needs it.
type Authenticator interface {
	// LookupKey returns the public key if id is authorised for any user.
	LookupKey(id crypto.KeyID) (*rsa.PublicKey, bool)
	// Login checks a user's password and that key is one of the user's keys. It may be
	// slow (argon2id): the server calls it from a small bounded worker pool.
	Login(user string, password []byte, key crypto.KeyID) (Role, LoginStatus)
	// Authorize is the cheap check, against the current database, that user exists and key
	// is one of the user's keys: it returns the user's role now and LoginOK, or RoleNone and
	// LoginUnknownUser or LoginKeyNotAuthorised. The server calls it before spending any
	// password check and again before executing every command.
	Authorize(user string, key crypto.KeyID) (Role, LoginStatus)
}

// ServerConfig configures the drone's endpoint. Zero fields take the documented defaults.
type ServerConfig struct {
	// Conn is the socket; required. Run closes it when it returns.
	Conn PacketConn
	// Extra are further sockets served beside Conn, each by a reader of its own (the NATS
	// relay): one set of sessions and limits across all of them, each peer answered on the
	// socket that owns its address (see ExtraConn). An Extra socket that fails does not end
	// Run (it is logged); Conn's does. Run closes them when it returns.
	Extra []ExtraConn
	// PSK is the fleet pre-shared key.
	PSK crypto.PSK
	// DroneKey is the drone's RSA key; required.
	DroneKey DroneKey
	// Auth is the user database; required.
	Auth Authenticator
	// Handler executes commands; required.
	Handler CommandHandler
	// Logger receives the audit trail and warnings. If nil, logs are discarded.
	Logger *slog.Logger
	// Hooks receives metrics events. If nil, NopHooks.
	Hooks Hooks
	// Now is the clock. If nil, time.Now.
	Now func() time.Time
	// Rand is the randomness source. If nil, crypto/rand.
	Rand io.Reader
	// ReplayWindow is the replay window in packets. If zero, the replay package default (2048).
	ReplayWindow int
	// MaxSessions bounds live sessions. If zero, DefaultMaxSessions.
	MaxSessions int
	// MaxSessionsPerKey bounds live sessions of one operator key. If zero, DefaultMaxSessionsPerKey.
	MaxSessionsPerKey int
	// DedupCapacity bounds remembered command ids per operator key. If zero, DefaultDedupCapacity.
	DedupCapacity int
	// LoginWorkers bounds concurrent password checks. If zero, DefaultLoginWorkers.
	LoginWorkers int
	// HandshakeRate and HandshakeBurst limit initiations per source address that passed the
	// PSK MAC. If zero, 10 per second with a burst of 20.
	HandshakeRate  float64
	HandshakeBurst int
	// KeyHandshakeRate and KeyHandshakeBurst limit initiations per operator key whose
	// signature verified, before the drone's RSA unwrap: a holder of one authorised key
	// cannot make the drone unwrap faster by spreading (spoofed) source addresses. If zero,
	// DefaultKeyHandshakeRate per second with a burst of DefaultKeyHandshakeBurst.
	KeyHandshakeRate  float64
	KeyHandshakeBurst int
	// LoginRate and LoginBurst limit password checks per operator key and per user. If zero,
	// 1 per second with a burst of 5.
	LoginRate  float64
	LoginBurst int
	// KeepaliveInterval: if zero, KeepaliveInterval. The link counts as lost after
	// LinkLostKeepalives intervals of silence.
	KeepaliveInterval time.Duration
	// SessionIdleTimeout: if zero, SessionIdleTimeout. Must exceed the link-lost time.
	SessionIdleTimeout time.Duration
	// OnFrames receives tunnelled frames from logged-in operators (app.ServerConfig.OnFrames).
	OnFrames app.FramesHandler
	// MaxFrameAge: frames older on arrival are dropped; if zero, app.DefaultMaxFrameAge.
	MaxFrameAge time.Duration
}

// withDefaults fills zero fields and checks the rest.
func (c ServerConfig) withDefaults() (ServerConfig, error) {
	if c.Conn == nil || c.DroneKey == nil || c.Auth == nil || c.Handler == nil {
		return c, errors.New("link: server config needs Conn, DroneKey, Auth and Handler")
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Hooks == nil {
		c.Hooks = NopHooks{}
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Rand == nil {
		c.Rand = cryptoRand
	}
	def := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	def(&c.MaxSessions, DefaultMaxSessions)
	def(&c.MaxSessionsPerKey, DefaultMaxSessionsPerKey)
	def(&c.DedupCapacity, DefaultDedupCapacity)
	def(&c.LoginWorkers, DefaultLoginWorkers)
	def(&c.HandshakeBurst, 20)
	def(&c.KeyHandshakeBurst, DefaultKeyHandshakeBurst)
	def(&c.LoginBurst, 5)
	if c.HandshakeRate == 0 {
		c.HandshakeRate = 10
	}
	if c.KeyHandshakeRate == 0 {
		c.KeyHandshakeRate = DefaultKeyHandshakeRate
	}
	if c.LoginRate == 0 {
		c.LoginRate = 1
	}
	if c.KeepaliveInterval == 0 {
		c.KeepaliveInterval = KeepaliveInterval
	}
	if c.SessionIdleTimeout == 0 {
		c.SessionIdleTimeout = SessionIdleTimeout
	}
	if c.MaxSessions < 0 || c.MaxSessions > 60000 || c.MaxSessionsPerKey < 0 || c.DedupCapacity < 0 ||
		c.LoginWorkers < 0 || c.ReplayWindow < 0 || c.ReplayWindow > replay.MaxWindowSize || c.HandshakeRate < 0 || c.LoginRate < 0 || c.KeyHandshakeRate < 0 ||
		c.KeepaliveInterval < 0 || c.SessionIdleTimeout <= LinkLostKeepalives*c.KeepaliveInterval {
		return c, errors.New("link: server config has a negative or too large limit")
	}
	return c, nil
}

// serverSession is a native session on the drone: keys and counters (Session), the
// operator key that opened it, its place in the session table and its application state.
type serverSession struct {
	*Session
	srv *Server
	key crypto.KeyID
	fp  string // the operator key's fingerprint, for logs
	app *app.Session

	// Guarded by Server.mu.
	confirmed    bool      // the operator has sent on it: the drone may send on it
	replaces     uint16    // index of the session this one rekeys, until confirmed
	supersededAt time.Time // when a newer session of the same operator took over

	// For SessionStatus (status.go); guarded by Server.mu.
	since   time.Time        // the first handshake of the sessions this one continues
	pred    *serverSession   // the live session this one's proven rekey replaces
	succs   []*serverSession // the sessions whose pred this one is
	carried Traffic          // the traffic of removed sessions this one continues

	responded atomic.Int64 // unix nanoseconds when the handshake response went out
	rtt       atomic.Int64 // nanoseconds from the response to the operator's first datagram
}

// login is the session's user and role.
func (ss *serverSession) login() (string, Role) { return ss.app.Login() }

// Send implements app.Peer: seal and send one message.
func (ss *serverSession) Send(msg []byte, kind PacketKind) bool {
	return ss.srv.sealAndSend(ss, msg, kind)
}

// Addr implements app.Peer.
func (ss *serverSession) Addr() netip.AddrPort { return ss.Peer() }

// AddrName implements app.AddrNamer: the name of addr given by the socket that owns it
// (AddrNamer), or "".
func (ss *serverSession) AddrName(addr netip.AddrPort) string { return ss.srv.AddrName(addr) }

// PeerClosed implements app.Peer: the operator closed the session, which leaves the table at once.
func (ss *serverSession) PeerClosed() { ss.Remove() }

// Remove implements app.Peer: the session leaves the table at once.
func (ss *serverSession) Remove() {
	s := ss.srv
	s.mu.Lock()
	if s.sessions[ss.local] == ss {
		s.removeLocked(ss.local)
	}
	n := len(s.sessions)
	s.mu.Unlock()
	s.cfg.Hooks.SessionsActive(n)
}

// Server is the drone's native endpoint: the native secure channel (handshakes, the
// session table, rekeys, roaming, expiry) under the application layer (app.Server: logins,
// commands at most once, acknowledgements, telemetry, revocation), whose methods it has.
type Server struct {
	*app.Server
	up        app.ServerUpcalls
	cfg       ServerConfig
	hsMu      sync.Mutex // serialises the readers' handshake work: the responder and its replay memory; nothing is sent while it is held (hsReply)
	responder *Responder // under hsMu
	keyDER    []byte     // the drone key's PKIX DER, for key answers

	handshakeLimit *ratelimit.Limiter[netip.Addr] // per source address of Conn, before any RSA
	// extraLimits are the per-source limiters of the Extra sockets, one each: their
	// sources (the relay's, made up by whoever publishes) must not fill Conn's table,
	// which fails closed.
	extraLimits []*ratelimit.Limiter[netip.Addr]
	keyLimit    *ratelimit.Limiter[crypto.KeyID] // per verified operator key, before the unwrap
	rekeyLimit  *ratelimit.Limiter[uint16]       // per logged-in session a proven rekey replaces

	mu       sync.RWMutex
	sessions map[uint16]*serverSession
	perKey   map[crypto.KeyID]int

	sendPool  sync.Pool // *[]byte of MaxDatagramSize capacity
	batchPool sync.Pool // *sealScratch
	warn      *ratelog.Limiter
}

// NewServer checks the config and builds a server; Run starts it.
func NewServer(cfg ServerConfig) (*Server, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	responder, err := NewResponder(ResponderConfig{PSK: cfg.PSK, DroneKey: cfg.DroneKey, Operators: cfg.Auth.LookupKey,
		Rand: cfg.Rand, Work: cfg.Hooks.HandshakeWork, Now: cfg.Now})
	if err != nil {
		return nil, err
	}
	keyDER, err := droneKeyDER(cfg.DroneKey.Public())
	if err != nil {
		return nil, err
	}
	hs, ok := ratelimit.New[netip.Addr](ratelimit.Config{Rate: cfg.HandshakeRate, Burst: cfg.HandshakeBurst})
	if !ok {
		return nil, errors.New("link: invalid rate limit")
	}
	ks, ok := ratelimit.New[crypto.KeyID](ratelimit.Config{Rate: cfg.KeyHandshakeRate, Burst: cfg.KeyHandshakeBurst})
	if !ok {
		return nil, errors.New("link: invalid per-key rate limit")
	}
	rs, _ := ratelimit.New[uint16](ratelimit.Config{Rate: cfg.KeyHandshakeRate, Burst: cfg.KeyHandshakeBurst})
	var extraLimits []*ratelimit.Limiter[netip.Addr]
	for range cfg.Extra {
		l, _ := ratelimit.New[netip.Addr](ratelimit.Config{Rate: cfg.HandshakeRate, Burst: cfg.HandshakeBurst})
		extraLimits = append(extraLimits, l)
	}
	s := &Server{
		cfg:            cfg,
		extraLimits:    extraLimits,
		responder:      responder,
		keyDER:         keyDER,
		handshakeLimit: hs,
		keyLimit:       ks,
		rekeyLimit:     rs,
		sessions:       make(map[uint16]*serverSession),
		perKey:         make(map[crypto.KeyID]int),
		warn:           ratelog.New(cfg.Logger, 10*time.Second),
	}
	s.Server, s.up, err = app.NewServer(app.ServerConfig{
		Channel: s, Auth: keyAuthenticator{cfg.Auth}, Handler: cfg.Handler, Logger: cfg.Logger, Hooks: cfg.Hooks,
		Now: cfg.Now, DedupLifetime: DedupLifetime, DedupCapacity: cfg.DedupCapacity, LoginWorkers: cfg.LoginWorkers,
		LoginRate: cfg.LoginRate, LoginBurst: cfg.LoginBurst, KeepaliveInterval: cfg.KeepaliveInterval,
		OnFrames: cfg.OnFrames, MaxFrameAge: cfg.MaxFrameAge,
	})
	if err != nil {
		return nil, err
	}
	s.sendPool.New = func() any { b := make([]byte, 0, MaxDatagramSize); return &b }
	s.batchPool.New = func() any { return &sealScratch{bufs: make([]byte, BatchSize*MaxDatagramSize)} }
	return s, nil
}

// keyAuthenticator adapts the native Authenticator to the application layer: a session's
// identity is the operator key its handshake proved.
type keyAuthenticator struct{ a Authenticator }

func (k keyAuthenticator) Authorize(user string, id app.Identity) (Role, LoginStatus) {
	return k.a.Authorize(user, id.Key)
}

func (k keyAuthenticator) Login(user string, password []byte, id app.Identity) (Role, LoginStatus) {
	return k.a.Login(user, password, id.Key)
}

// Run serves until ctx is cancelled or the socket fails, then tells every operator the
// drone is shutting down, closes the socket and waits for its goroutines.
func (s *Server) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s.up.Start(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { s.timerLoop(ctx) })
	readErr := make(chan error, 1)
	wg.Go(func() { readErr <- s.readLoop(s.cfg.Conn) })
	for _, c := range s.cfg.Extra {
		wg.Go(func() {
			// An extra socket (the relay) is served beside Conn: when it fails or is closed
			// under the server (a broker that ended the connection), Conn's operators and
			// the other sockets' are served on; only Conn's end ends the server.
			err := s.readLoop(c)
			if ctx.Err() == nil {
				s.cfg.Logger.Error("a socket stopped: serving on the others", "socket", c.LocalAddr(), "err", err)
			}
		})
	}

	var err error
	select {
	case <-ctx.Done():
	case err = <-readErr:
	}
	cancel()
	s.up.Shutdown(CloseShutdown)
	s.cfg.Conn.Close()
	for _, c := range s.cfg.Extra {
		c.Close()
	}
	wg.Wait()
	return err
}

// readLoop is the only reader of conn. With Extra sockets, several run at once: the data
// path is safe for that (sessions lock what they share), and the handshake path takes hsMu.
func (s *Server) readLoop(conn PacketConn) error {
	var scratch receiveScratch
	scratch.out = make([]byte, 0, MaxDatagramSize)
	return readDatagrams(conn, s.cfg.Now, func(pkt []byte, from netip.AddrPort, now time.Time) {
		// A peer address belongs to one socket: a datagram from an address another socket
		// owns (a relay address spoofed on the UDP socket) is forged, and answering it, or
		// roaming a session to it, would write to that socket's peer.
		if len(s.cfg.Extra) > 0 && s.connFor(from) != conn {
			s.cfg.Hooks.PacketReceived(KindData, len(pkt))
			s.drop(DropMalformed)
			return
		}
		s.handleDatagram(pkt, from, now, &scratch)
	})
}

// receiveScratch is the reader's reusable state, so a datagram costs no allocation.
type receiveScratch struct {
	out  []byte // MaxDatagramSize capacity, for replies
	init Initiation
}

// hsReply is the answer the handshake path (under hsMu) made for one datagram, sent once
// hsMu is released: a socket's write may block (an ExtraConn's broker that stops reading),
// and must not hold up the handshakes of the other readers, which would stall their
// sockets. pkt is nil when there is nothing to send; sess is the new session a response
// sets up, stamped when the response went out.
type hsReply struct {
	pkt  []byte
	kind PacketKind
	sess *serverSession
}

// sendReply sends a handshake answer made under hsMu, after hsMu was released.
func (s *Server) sendReply(r hsReply, to netip.AddrPort) {
	if r.pkt == nil {
		return
	}
	sent := s.send(r.pkt, to, r.kind)
	if r.sess != nil {
		r.sess.responded.Store(s.cfg.Now().UnixNano())
	}
	if sent && r.kind == KindKeyAnswer {
		// The sender holds the PSK but is not otherwise authenticated: logged at a bounded rate.
		s.warn.Info(msgKeyRequestAnswered, "from", s.logAddr(to))
	}
}

// handleDatagram dispatches one received datagram. Everything it does for a datagram that
// fails the PSK MAC or the AEAD is allocation-free.
// now is when the datagram's batch was read.
func (s *Server) handleDatagram(pkt []byte, from netip.AddrPort, now time.Time, sc *receiveScratch) {
	typ, ok := PeekType(pkt)
	if !ok || len(pkt) > MaxDatagramSize {
		s.cfg.Hooks.PacketReceived(KindData, len(pkt))
		s.drop(DropMalformed)
		return
	}
	switch typ {
	case TypeData:
		s.cfg.Hooks.PacketReceived(KindData, len(pkt))
		s.handleData(pkt, from, now)
	case TypeInitiation:
		s.cfg.Hooks.PacketReceived(KindInitiation, len(pkt))
		s.hsMu.Lock()
		reply := s.handleInitiation(pkt, from, sc.out[:0], &sc.init)
		s.hsMu.Unlock()
		s.sendReply(reply, from)
	case TypeKeyRequest:
		s.cfg.Hooks.PacketReceived(KindKeyRequest, len(pkt))
		s.hsMu.Lock()
		reply := s.handleKeyRequest(pkt, from, now, sc.out[:0])
		s.hsMu.Unlock()
		s.sendReply(reply, from)
	default:
		s.cfg.Hooks.PacketReceived(KindData, len(pkt))
		s.drop(DropUnexpected)
	}
}

func (s *Server) drop(r DropReason) { s.cfg.Hooks.Dropped(r) }

// Log messages of the handshake.
const (
	msgWrongPSK          = "initiation with a wrong PSK MAC (another PSK?)"
	msgHandshakeRate     = "handshake rate limit"
	msgHandshakeRefused  = "handshake refused"
	msgHandshakeAccepted = "handshake"
)

// handleInitiation runs the receive-side order of checks: length and type, PSK MAC, rate
// limit per source, session slot, then (in the Responder) timestamp, keys and signature;
// then, for an authenticated operator, the rate limit per key and the session limit per
// key; then the unwrap and the key agreement. It returns the answer to send (after hsMu
// is released), if any.
func (s *Server) handleInitiation(pkt []byte, from netip.AddrPort, out []byte, init *Initiation) hsReply {
	if err := s.responder.CheckInitiation(pkt, init); err != nil {
		s.drop(dropReasonFor(err))
		if err == ErrBadMAC {
			s.warnFrom(msgWrongPSK, from)
		}
		return hsReply{}
	}
	now := s.cfg.Now()
	if !s.handshakeLimitFor(from).Allow(from.Addr(), now) {
		s.drop(DropRateLimited)
		s.warnFrom(msgHandshakeRate, from)
		return hsReply{}
	}
	local, replaced, flags, err := s.reserve(init, now)
	if err != nil {
		return s.refuse(init, "", from, out, err)
	}
	v, err := s.responder.VerifyInitiation(init)
	if err != nil {
		s.release(local)
		return s.refuse(init, "", from, out, err)
	}
	// Authenticated: the operator key's holder signed this initiation. Everything from
	// here on is logged in full, never suppressed.
	fp := crypto.Fingerprint(v.OperatorPublic)
	if !s.allowKey(init.OperatorKey, replaced, flags, now) {
		s.release(local)
		return s.refuse(init, fp, from, out, ErrRateLimited)
	}
	if err := s.checkRoom(init.OperatorKey, replaced, flags); err != nil {
		s.release(local)
		return s.refuse(init, fp, from, out, err)
	}
	reply, acc, err := s.responder.CompleteInitiation(out, v, local, flags)
	if err != nil {
		s.release(local)
		return s.refuse(init, fp, from, out, err)
	}
	sess, err := NewSession(&acc.Keys, local, acc.OperatorIndex, s.cfg.ReplayWindow, now)
	acc.Keys.wipe()
	if err != nil {
		s.release(local)
		s.cfg.Logger.Error("session setup failed", "key", fp, "err", err)
		return hsReply{}
	}
	sess.setPeer(from)
	ss, err := s.install(sess, acc, fp, replaced, flags, now)
	if err != nil {
		// A session of the key logged in since checkRoom: there is no longer room.
		s.release(local)
		return s.refuse(init, fp, from, out[:0], err)
	}
	s.cfg.Hooks.Handshake(HandshakeOK)
	s.cfg.Logger.Info(msgHandshakeAccepted, "key", fp, "from", s.logAddr(from), "session", local,
		"rekey", replaced != nil, "login_carried", flags&FlagLoginCarried != 0)
	return hsReply{pkt: reply, kind: KindResponse, sess: ss}
}

// allowKey is the handshake rate limit per operator key, applied once the key's signature
// verified and before the unwrap, so only the key's holder spends its budget. A proven rekey
// that carries a login over has a budget of its own, per session it replaces: a holder of
// the key without the password, who can drain the key's budget, cannot starve the rekeys
// of a logged-in operator (whose session would end at RejectAfterTime).
func (s *Server) allowKey(key crypto.KeyID, replaced *serverSession, flags byte, now time.Time) bool {
	if replaced != nil && flags&FlagLoginCarried != 0 {
		return s.rekeyLimit.Allow(replaced.local, now)
	}
	return s.keyLimit.Allow(key, now)
}

// warnFrom logs msg with the source address at a bounded rate (internal/ratelog). It
// allocates nothing when the line is suppressed, so it may sit on the path of forged
// datagrams.
func (s *Server) warnFrom(msg string, from netip.AddrPort) {
	if n, ok := s.warn.Allow(msg); ok {
		if n > 0 {
			s.cfg.Logger.Warn(msg, "from", s.logAddr(from), "suppressed", n)
		} else {
			s.cfg.Logger.Warn(msg, "from", s.logAddr(from))
		}
	}
}

// refuse counts a refused initiation and answers it with an error datagram if that helps
// the operator (the answer is as small as can be: no amplification). fp is the operator
// key's fingerprint once its signature verified: the refusal of an authenticated operator
// is logged every time. Without it the operator is not authenticated (anyone with the PSK
// could have sent the initiation) and the refusal is logged at a bounded rate. The error
// datagram is returned, to be sent once hsMu is released.
func (s *Server) refuse(init *Initiation, fp string, from netip.AddrPort, out []byte, err error) hsReply {
	reason := dropReasonFor(err)
	s.drop(reason)
	s.cfg.Hooks.Handshake(HandshakeFailed)
	if fp != "" {
		s.cfg.Logger.Warn(msgHandshakeRefused, "reason", reason.String(), "key", fp, "from", s.logAddr(from))
	} else if n, ok := s.warn.Allow(msgHandshakeRefused); ok {
		args := []any{"reason", reason.String(), "key", s.keyName(init.OperatorKey, err), "from", s.logAddr(from)}
		if n > 0 {
			args = append(args, "suppressed", n)
		}
		s.cfg.Logger.Warn(msgHandshakeRefused, args...)
	}
	if reply, ok := s.responder.ErrorReply(out, init, err); ok {
		return hsReply{pkt: reply, kind: KindError}
	}
	return hsReply{}
}

// keyName is how the log of an unauthenticated refusal names the operator key id: the
// prefix of its fingerprint that the id fixes, or, for a bad signature, where the key was
// found among the authorised ones, its full fingerprint (as "dronelink fingerprint" and
// "dronelink user list" print it). Other refusals come before the key lookup, and logging
// them costs none.
func (s *Server) keyName(id crypto.KeyID, err error) string {
	if err == ErrBadSignature {
		if pub, ok := s.cfg.Auth.LookupKey(id); ok {
			return crypto.Fingerprint(pub)
		}
	}
	return id.FingerprintPrefix()
}

// reserve picks a free local index for a new session from init, enforcing the global
// session limit, and finds the session it replaces. A rekey counts (it supersedes the old
// session and carries the login over) only if the initiation's resume tag proves the old
// session's secrets: holding the operator's RSA key alone is not enough to inherit a login.
// The slot is held by a nil entry until install.
func (s *Server) reserve(init *Initiation, now time.Time) (uint16, *serverSession, byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.sessions) >= s.cfg.MaxSessions {
		s.expireLocked(now)
		if len(s.sessions) >= s.cfg.MaxSessions {
			return 0, nil, 0, ErrSessionLimit
		}
	}
	var local uint16
	for range 64 {
		if i := uint16(rand.Uint32()); i != 0 {
			if _, used := s.sessions[i]; !used {
				local = i
				break
			}
		}
	}
	if local == 0 {
		return 0, nil, 0, ErrSessionLimit
	}
	s.sessions[local] = nil
	var flags byte
	old := s.sessions[init.Replaces]
	if init.Replaces == 0 || old == nil || old.key != init.OperatorKey ||
		subtle.ConstantTimeCompare(resumeTag(old.resume[:], init.Signed), init.Resume) != 1 {
		return local, nil, 0, nil
	}
	if s.up.CanInherit(old.app) {
		flags |= FlagLoginCarried
	}
	return local, old, flags, nil
}

// checkRoom is the per-key session limit, checked for an authenticated initiation before
// the drone's RSA unwrap; install decides again, authoritatively, under the same rule.
func (s *Server) checkRoom(key crypto.KeyID, replaced *serverSession, flags byte) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	live := replaced != nil && s.sessions[replaced.local] == replaced
	if !live {
		replaced = nil
	}
	_, err := s.roomLocked(key, replaced, live && flags&FlagLoginCarried != 0)
	return err
}

// roomLocked applies the per-key session limit to a new session of key: it returns nil
// if there is room, else the session to evict to make room, or ErrSessionLimit. replaced
// is the live session a proven rekey replaces (nil for a new handshake), loggedIn whether
// the new session carries a login over. The rule:
//
//   - a session that is not logged in never pushes out one that is: a holder of the key
//     without the password cannot end a logged-in session;
//   - among the sessions it may push out, an unconfirmed one goes before a confirmed one,
//     and among those the least recently heard first (sessionEvictRank);
//   - a rekey never evicts the session it replaces (it must still receive during
//     PreviousSessionGrace) and is never refused: with nothing it may push out it exceeds
//     the limit until the session it replaces is retired;
//   - a new handshake that finds nothing it may push out is refused.
//
// s.mu must be held.
func (s *Server) roomLocked(key crypto.KeyID, replaced *serverSession, loggedIn bool) (*serverSession, error) {
	if s.perKey[key] < s.cfg.MaxSessionsPerKey {
		return nil, nil
	}
	var victim *serverSession
	victimRank := 0
	for _, o := range s.sessions {
		if o == nil || o.key != key || o == replaced {
			continue
		}
		rank := sessionEvictRank(o, loggedIn)
		if rank < 0 {
			continue
		}
		if victim == nil || rank < victimRank || (rank == victimRank && o.lastRecv.Load() < victim.lastRecv.Load()) {
			victim, victimRank = o, rank
		}
	}
	if victim == nil && replaced == nil {
		return nil, ErrSessionLimit
	}
	return victim, nil
}

// sessionEvictRank orders the sessions a new session may evict, lowest first, or returns
// -1 for one it must not evict. newLoggedIn is whether the new session is logged in (a
// rekey carrying the login over). s.mu must be held.
func sessionEvictRank(o *serverSession, newLoggedIn bool) int {
	_, role := o.login()
	switch loggedIn := role != RoleNone; {
	case !loggedIn && !o.confirmed:
		return 0 // a handshake attempt whose response was lost or not chosen
	case !loggedIn:
		return 1
	case !newLoggedIn:
		return -1 // never evict a logged-in session for one that is not
	case !o.supersededAt.IsZero():
		return 2 // already rekeyed, in its grace period
	case !o.confirmed:
		return 3 // an earlier attempt of a rekey
	}
	return -1 // a logged-in session in use
}

// release frees a reserved index after a failed handshake.
func (s *Server) release(local uint16) {
	s.mu.Lock()
	if s.sessions[local] == nil {
		delete(s.sessions, local)
	}
	s.mu.Unlock()
}

// install puts an accepted session in the table, carrying the login over from the session
// it rekeys. At the per-key limit it evicts one of the operator key's sessions, or refuses
// the new one with ErrSessionLimit, by the rule of roomLocked. Sibling attempts of the same
// handshake are kept until one of them is confirmed, because the operator may complete any
// of its recent attempts with a late response.
func (s *Server) install(sess *Session, acc *Accepted, fp string, replaced *serverSession, flags byte, now time.Time) (*serverSession, error) {
	ss := &serverSession{Session: sess, srv: s, key: acc.OperatorKey, fp: fp}
	s.mu.Lock()
	var inherit *app.Session
	if replaced != nil && s.sessions[replaced.local] == replaced {
		ss.replaces = replaced.local
		if flags&FlagLoginCarried != 0 {
			inherit = replaced.app
		}
	} else {
		replaced = nil
	}
	victim, err := s.roomLocked(acc.OperatorKey, replaced, inherit != nil)
	if err != nil {
		s.mu.Unlock()
		return nil, err
	}
	var evictedUser string
	if victim != nil {
		evictedUser, _ = victim.login()
		s.removeLocked(victim.local)
	}
	ss.app = s.up.NewSession(ss, app.Identity{Key: acc.OperatorKey, KeyName: fp}, sess.local, now, inherit)
	ss.chainLocked(replaced)
	s.sessions[sess.local] = ss
	s.perKey[acc.OperatorKey]++
	n := len(s.sessions)
	s.mu.Unlock()
	s.cfg.Hooks.SessionsActive(n)
	if victim != nil {
		s.cfg.Logger.Info("session evicted", "session", victim.local, "user", evictedUser, "key", fp,
			"reason", "per-key session limit", "by", sess.local)
	}
	return ss, nil
}

// removeLocked deletes a session; s.mu must be held for writing.
func (s *Server) removeLocked(idx uint16) {
	ss, ok := s.sessions[idx]
	if !ok {
		return
	}
	delete(s.sessions, idx)
	if ss == nil {
		return
	}
	ss.unchainLocked()
	ss.app.Gone()
	if s.perKey[ss.key]--; s.perKey[ss.key] <= 0 {
		delete(s.perKey, ss.key)
	}
}

// lookup returns the live session with local index idx.
func (s *Server) lookup(idx uint16) *serverSession {
	s.mu.RLock()
	ss := s.sessions[idx]
	s.mu.RUnlock()
	return ss
}

// AppendSessions implements app.ServerChannel: every installed session.
func (s *Server) AppendSessions(dst []*app.Session) []*app.Session {
	s.mu.RLock()
	defer s.mu.RUnlock()
	for _, ss := range s.sessions {
		if ss != nil {
			dst = append(dst, ss.app)
		}
	}
	return dst
}

// handleData authenticates a data datagram, then hands its message to the application
// layer.
func (s *Server) handleData(pkt []byte, from netip.AddrPort, now time.Time) {
	h, err := ParseDataHeader(pkt)
	if err != nil {
		s.drop(DropMalformed)
		return
	}
	ss := s.lookup(h.Receiver)
	if ss == nil {
		s.drop(DropUnknownSession)
		return
	}
	if ss.expired(now) {
		s.drop(DropExpired)
		return
	}
	plain, err := ss.Open(pkt[DataHeaderSize:DataHeaderSize], pkt, h, now)
	if err != nil {
		s.drop(dropReasonFor(err))
		return
	}
	// Authenticated from here on.
	if ss.setPeer(from) {
		s.warn.Info("operator roamed", "session", ss.local, "key", ss.fp, "to", s.logAddr(from))
	}
	s.confirm(ss, now)
	s.up.Receive(ss.app, plain, now)
}

// confirm marks a session as confirmed by its operator; the session it rekeys stops being
// sent on and is retired after PreviousSessionGrace.
func (s *Server) confirm(ss *serverSession, now time.Time) {
	s.mu.RLock()
	done := ss.confirmed
	s.mu.RUnlock()
	if done {
		return
	}
	s.mu.Lock()
	rekeyed := false
	if !ss.confirmed {
		ss.confirmed = true
		ss.measureRTT(now)
		// A session superseded before its operator confirmed it (a late datagram of an
		// old attempt) is not sent on again.
		ss.app.SetReady(ss.supersededAt.IsZero())
		// The operator chose this attempt: its unconfirmed siblings are dead.
		for idx, o := range s.sessions {
			if o != nil && o != ss && !o.confirmed && o.key == ss.key && o.remote == ss.remote {
				s.removeLocked(idx)
			}
		}
		if old := s.sessions[ss.replaces]; ss.replaces != 0 && old != nil && old.key == ss.key && old.supersededAt.IsZero() {
			old.supersededAt = now
			old.app.SetReady(false)
			rekeyed = true
		}
		ss.replaces = 0
	}
	s.mu.Unlock()
	if rekeyed {
		s.cfg.Hooks.Rekeyed()
	}
}

// sealScratch is SendBatch's reusable state: room for BatchSize sealed datagrams, so a
// batch costs no allocation.
type sealScratch struct {
	bufs []byte // BatchSize * MaxDatagramSize
	msgs [BatchSize]Datagram
}

// SendBatch implements app.BatchSender: it seals every message for each peer and hands
// the datagrams to the socket BatchSize at a time (one sendmmsg(2) per batch on Linux when
// the Conn is a BatchConn, WriteTo for each otherwise). It returns how many went out.
func (s *Server) SendBatch(peers []app.Peer, msgs [][]byte, kind PacketKind) int {
	sc := s.batchPool.Get().(*sealScratch)
	defer s.batchPool.Put(sc)
	now := s.cfg.Now()
	sent, k := 0, 0
	for _, p := range peers {
		ss, ok := p.(*serverSession)
		if !ok {
			continue
		}
		peer := ss.Peer()
		for _, m := range msgs {
			pkt, err := ss.Seal(sc.bufs[k*MaxDatagramSize:k*MaxDatagramSize:(k+1)*MaxDatagramSize], m, now)
			if err != nil {
				break // this session can send no more (its counter is used up); rekey will follow
			}
			sc.msgs[k] = Datagram{Buf: pkt, Addr: peer}
			if k++; k == BatchSize {
				sent += s.sendBatch(sc.msgs[:k], kind)
				k = 0
			}
		}
	}
	sent += s.sendBatch(sc.msgs[:k], kind)
	clear(sc.msgs[:])
	return sent
}

// AddrName is the name the socket that answers addr gives it (AddrNamer:
// "relay:SUBJECT"), or "" (a UDP address, which names itself).
func (s *Server) AddrName(addr netip.AddrPort) string {
	if n, ok := s.connFor(addr).(AddrNamer); ok {
		return n.AddrName(addr)
	}
	return ""
}

// logAddr is addr for a log line: its name if its socket gives it one, else the address.
func (s *Server) logAddr(addr netip.AddrPort) any {
	if name := s.AddrName(addr); name != "" {
		return name
	}
	return addr
}

// handshakeLimitFor is the per-source handshake limiter of the socket that owns from.
func (s *Server) handshakeLimitFor(from netip.AddrPort) *ratelimit.Limiter[netip.Addr] {
	for i, c := range s.cfg.Extra {
		if c.Owns(from) {
			return s.extraLimits[i]
		}
	}
	return s.handshakeLimit
}

// connFor is the socket that answers addr: the Extra conn that owns it, Conn otherwise.
func (s *Server) connFor(addr netip.AddrPort) PacketConn {
	for _, c := range s.cfg.Extra {
		if c.Owns(addr) {
			return c
		}
	}
	return s.cfg.Conn
}

// sendBatch writes msgs, each on the socket of its address, skipping (and warning about)
// any a socket refuses, and returns how many went out.
func (s *Server) sendBatch(msgs []Datagram, kind PacketKind) int {
	if len(s.cfg.Extra) == 0 {
		return s.sendBatchOn(s.cfg.Conn, msgs, kind)
	}
	sent := 0
	for len(msgs) > 0 { // runs of datagrams for one socket, in order
		conn := s.connFor(msgs[0].Addr)
		n := 1
		for n < len(msgs) && s.connFor(msgs[n].Addr) == conn {
			n++
		}
		sent += s.sendBatchOn(conn, msgs[:n], kind)
		msgs = msgs[n:]
	}
	return sent
}

// sendBatchOn writes msgs on conn, skipping (and warning about) any it refuses, and
// returns how many went out.
func (s *Server) sendBatchOn(conn PacketConn, msgs []Datagram, kind PacketKind) int {
	bc, batched := conn.(BatchConn)
	sent := 0
	for len(msgs) > 0 {
		n := 0
		var err error
		if batched {
			n, err = bc.WriteBatch(msgs)
		} else if err = conn.WriteTo(msgs[0].Buf, msgs[0].Addr); err == nil {
			n = 1
		}
		if n == 0 && err == nil {
			err = io.ErrShortWrite // a Conn that makes no progress must not spin this loop
		}
		for _, m := range msgs[:n] {
			s.cfg.Hooks.PacketSent(kind, len(m.Buf))
		}
		sent += n
		msgs = msgs[n:]
		if err != nil && len(msgs) > 0 {
			s.warn.Warn("send failed", "to", s.logAddr(msgs[0].Addr), "err", err)
			msgs = msgs[1:]
		}
	}
	return sent
}

// sealAndSend seals plaintext on a session and sends it to the session's peer.
func (s *Server) sealAndSend(ss *serverSession, plaintext []byte, kind PacketKind) bool {
	bp := s.sendPool.Get().(*[]byte)
	defer s.sendPool.Put(bp)
	pkt, err := ss.Seal((*bp)[:0], plaintext, s.cfg.Now())
	if err != nil {
		return false
	}
	return s.send(pkt, ss.Peer(), kind)
}

// send writes one datagram, on the socket of its address.
func (s *Server) send(pkt []byte, to netip.AddrPort, kind PacketKind) bool {
	if err := s.connFor(to).WriteTo(pkt, to); err != nil {
		s.warn.Warn("send failed", "to", s.logAddr(to), "err", err)
		return false
	}
	s.cfg.Hooks.PacketSent(kind, len(pkt))
	return true
}

// timerLoop expires sessions and retires rekeyed ones.
func (s *Server) timerLoop(ctx context.Context) {
	t := time.NewTicker(timerTick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := s.cfg.Now()
		s.mu.Lock()
		s.expireLocked(now)
		n := len(s.sessions)
		s.mu.Unlock()
		s.cfg.Hooks.SessionsActive(n)
		s.handshakeLimit.Sweep(now)
		for _, l := range s.extraLimits {
			l.Sweep(now)
		}
		s.keyLimit.Sweep(now)
		s.rekeyLimit.Sweep(now)
	}
}

// expireLocked removes sessions past their time limit, idle too long, or superseded for
// longer than the grace period. s.mu must be held for writing.
func (s *Server) expireLocked(now time.Time) {
	for idx, ss := range s.sessions {
		if ss == nil {
			continue
		}
		reason := ""
		switch {
		case ss.expired(now):
			reason = "expired"
		case ss.sinceRecv(now) >= s.cfg.SessionIdleTimeout:
			reason = "idle"
		case !ss.supersededAt.IsZero() && now.Sub(ss.supersededAt) >= PreviousSessionGrace:
			reason = "rekeyed"
		}
		if reason != "" {
			s.removeLocked(idx)
			user, _ := ss.login()
			s.cfg.Logger.Debug("session removed", "session", idx, "user", user, "reason", reason)
		}
	}
}

// LocalAddr is the address of the server's socket, Conn.
func (s *Server) LocalAddr() netip.AddrPort { return s.cfg.Conn.LocalAddr() }
