package app

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dronelink/dronelink/internal/ratelog"
	"github.com/dronelink/dronelink/pkg/crypto"
	"github.com/dronelink/dronelink/pkg/dedup"
	"github.com/dronelink/dronelink/pkg/ratelimit"
)

// Identity is what a secure channel authenticated about a session's peer.
type Identity struct {
	// Key is the operator key that signed the native handshake; zero over DTLS.
	Key crypto.KeyID
	// KeyName is how logs name Key: its fingerprint (crypto.Fingerprint, as "dronelink
	// fingerprint" prints it). If empty, logs print the prefix of it that Key fixes.
	KeyName string
	// Name is the PSK identity of a DTLS session; empty for native sessions.
	Name string
	// Source is set when the identity does not single out one operator: any holder of the
	// fleet PSK may claim any DTLS PSK identity, so there it is the peer's address, which
	// the DTLS cookie exchange verified. Login limits are then kept per source address, so
	// a PSK holder guessing another user's password from its own address exhausts its own
	// buckets, not the user's. An IPv6 address counts as its /64, which one host usually
	// holds whole. Zero for native sessions: the operator key is the proof.
	Source netip.Addr
}

// Authenticator is the drone's user database as the application layer needs it. Each
// channel adapts it to what it authenticated: the native channel checks that the
// session's operator key is one of the user's keys, the DTLS channel that the user is the
// session's PSK identity.
type Authenticator interface {
	// Authorize is the cheap check, against the current database, that user exists and
	// may log in over a session with identity id: it returns the user's role now and
	// LoginOK, or RoleNone and LoginUnknownUser or LoginKeyNotAuthorised. The server calls
	// it before spending any password check and again right before executing every command.
	Authorize(user string, id Identity) (Role, LoginStatus)
	// Login checks the password as well. It may be slow (argon2id): the server calls it
	// from a small bounded worker pool.
	Login(user string, password []byte, id Identity) (Role, LoginStatus)
}

// Command is one command as the drone's handler sees it.
type Command struct {
	ID          uint64
	User        string
	Role        Role
	OperatorKey crypto.KeyID // zero over DTLS
	From        netip.AddrPort
	Payload     []byte // valid only during the handler call
}

// CommandHandler executes a command exactly once and returns the acknowledgement status
// and payload (truncated to MaxAckPayload). Handlers run one at a time, in arrival order,
// on the server's executor goroutine.
type CommandHandler func(ctx context.Context, cmd Command) (AckStatus, []byte)

// FrameSender is who sent tunnelled frames, as the drone's frames handler sees it.
type FrameSender struct {
	User        string
	Role        Role         // the effective role now: min(role at login, role in the current database)
	OperatorKey crypto.KeyID // native sessions
	Identity    string       // DTLS sessions: the PSK identity
	From        netip.AddrPort
	Session     uint16
}

// FramesHandler receives the frames of one datagram from a logged-in operator, judged
// fresh, on the channel's reader goroutine. frames is valid only during the call; the
// handler must not block.
type FramesHandler func(from FrameSender, frames []byte)

// SessionInfo describes a live session, for revocation and status.
type SessionInfo struct {
	LocalIndex  uint16
	OperatorKey crypto.KeyID // native sessions
	Identity    string       // DTLS sessions: the PSK identity
	User        string       // empty until logged in
	Role        Role
	Peer        netip.AddrPort
	Created     time.Time
}

// Peer is the secure channel's side of one session.
type Peer interface {
	// Send seals msg (one application message) and sends it to the peer's current
	// address. It reports whether the message went out.
	Send(msg []byte, kind PacketKind) bool
	// Addr is the peer's current address.
	Addr() netip.AddrPort
	// Remove ends the session in the channel at once, sending nothing. The channel then
	// calls Session.Gone.
	Remove()
	// PeerClosed ends the session the peer said it closed (its close message arrived),
	// after whatever closing the channel itself still expects from the peer (DTLS: its
	// close_notify). The channel calls Session.Gone at once.
	PeerClosed()
}

// ServerChannel is the drone's secure channel as the application layer sees it.
type ServerChannel interface {
	// AppendSessions appends every live session to dst: a snapshot.
	AppendSessions(dst []*Session) []*Session
}

// BatchSender is implemented by channels that can seal and send many messages in one
// system call. SendBatch sends every message of msgs, in order, to each peer, and returns
// how many datagrams went out.
type BatchSender interface {
	SendBatch(peers []Peer, msgs [][]byte, kind PacketKind) int
}

// Session is the application state of one secure-channel session: its login, link state
// and timers. The channel creates it with ServerUpcalls.NewSession once the session's keys
// are agreed and tells it when the session goes (Gone).
type Session struct {
	peer    Peer
	id      Identity
	index   uint16
	created time.Time

	ready    atomic.Bool // the channel may send on it (confirmed, not superseded)
	gone     atomic.Bool // the channel has removed it
	linkUp   atomic.Bool
	lastRecv atomic.Int64 // unix nanoseconds of the last authenticated message
	lastSend atomic.Int64 // unix nanoseconds, to the timer's precision (sent)
	sent     atomic.Bool  // something was sent since the timer last looked

	loginMu      sync.Mutex
	user         string
	role         Role
	loginID      uint64
	loginPending bool
	loginStatus  LoginStatus
	loginRole    Role // the role answered with loginStatus
	loginAnswer  bool // loginStatus and loginRole answer loginID
}

// SetReady says whether the channel may send on the session: telemetry, keepalives and
// close messages go only to ready sessions. The native channel sets it when the operator
// confirms the session and clears it when a rekey supersedes it; DTLS sessions are ready
// from their creation.
func (s *Session) SetReady(ready bool) { s.ready.Store(ready) }

// Gone tells the application layer that the channel removed the session: a command queued
// on it is no longer executed.
func (s *Session) Gone() { s.gone.Store(true) }

// Login is the session's user and role, or RoleNone before a successful login.
func (s *Session) Login() (string, Role) {
	s.loginMu.Lock()
	defer s.loginMu.Unlock()
	return s.user, s.role
}

func (s *Session) info() SessionInfo {
	user, role := s.Login()
	return SessionInfo{LocalIndex: s.index, OperatorKey: s.id.Key, Identity: s.id.Name, User: user, Role: role,
		Peer: s.peer.Addr(), Created: s.created}
}

func (s *Session) sinceRecv(now time.Time) time.Duration {
	return time.Duration(now.UnixNano() - s.lastRecv.Load())
}

// ServerConfig configures the drone's application layer. Zero fields take the documented
// defaults.
type ServerConfig struct {
	// Channel is the secure channel; required.
	Channel ServerChannel
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
	// DedupLifetime is how long an executed command id is remembered: longer than any copy
	// of the command can still be accepted by the channel. Required.
	DedupLifetime time.Duration
	// DedupCapacity bounds remembered command ids per operator. If zero, DefaultDedupCapacity.
	DedupCapacity int
	// LoginWorkers bounds concurrent password checks. If zero, DefaultLoginWorkers.
	LoginWorkers int
	// LoginRate and LoginBurst limit password checks per identity and per user. If zero,
	// 1 per second with a burst of 5.
	LoginRate  float64
	LoginBurst int
	// KeepaliveInterval: if zero, KeepaliveInterval. The link counts as lost after
	// LinkLostKeepalives intervals of silence.
	KeepaliveInterval time.Duration
	// OnFrames receives tunnelled frames from logged-in operators. If nil, frames are
	// dropped as unexpected.
	OnFrames FramesHandler
	// MaxFrameAge: frames judged older than this on arrival are dropped (DropLate). If
	// zero, DefaultMaxFrameAge.
	MaxFrameAge time.Duration
}

func (c ServerConfig) withDefaults() (ServerConfig, error) {
	if c.Channel == nil || c.Auth == nil || c.Handler == nil || c.DedupLifetime <= 0 {
		return c, errors.New("app: server config needs Channel, Auth, Handler and DedupLifetime")
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
	if c.DedupCapacity == 0 {
		c.DedupCapacity = DefaultDedupCapacity
	}
	if c.LoginWorkers == 0 {
		c.LoginWorkers = DefaultLoginWorkers
	}
	if c.LoginBurst == 0 {
		c.LoginBurst = 5
	}
	if c.LoginRate == 0 {
		c.LoginRate = 1
	}
	if c.KeepaliveInterval == 0 {
		c.KeepaliveInterval = KeepaliveInterval
	}
	if c.MaxFrameAge == 0 {
		c.MaxFrameAge = DefaultMaxFrameAge
	}
	if c.DedupCapacity < 0 || c.LoginWorkers < 0 || c.LoginRate < 0 || c.LoginBurst < 0 || c.KeepaliveInterval < 0 ||
		c.MaxFrameAge < 0 {
		return c, errors.New("app: server config has a negative limit")
	}
	return c, nil
}

// SharedIdentityCeiling: for identities anyone with the fleet PSK may claim (DTLS), login
// limits are per source address, so that a PSK holder guessing a user's password cannot
// lock the user out of their own address; a ceiling of this many times the per-user rate
// and burst, over all addresses together, still bounds how fast a user's password can be
// guessed from many addresses. (Native identities are operator keys: their per-user limit
// is the user's alone.)
const SharedIdentityCeiling = 10

// principal keys the per-identity login limit: the operator key of a native session, the
// verified source address of a DTLS session.
type principal struct {
	key    crypto.KeyID
	source netip.Addr
}

// userBucket keys the per-user login limit: the user, and for identities anyone with the
// PSK may claim, the source address (see Identity.Source).
type userBucket struct {
	user   string
	source netip.Addr
}

// dedupKey names one operator's command-id space: the operator key and the user.
type dedupKey struct {
	key  crypto.KeyID
	user string
}

// Server is the drone's application layer: logins, authorisation, at-most-once command
// execution, acknowledgements, telemetry, revocation, keepalives and link state. A secure
// channel drives it through the ServerUpcalls returned with it.
type Server struct {
	cfg  ServerConfig
	warn *ratelog.Limiter

	loginByID   *ratelimit.Limiter[principal]
	loginByUser *ratelimit.Limiter[userBucket]
	userCeiling *ratelimit.Limiter[string] // identities anyone with the PSK may claim

	dedupMu sync.RWMutex
	dedup   map[dedupKey]*dedup.Cache

	// started is when this run of the drone began: a command issued before it may have
	// been executed by an earlier run, so it is refused (AckRestarted).
	started time.Time
	orderMu sync.Mutex
	order   map[orderKey]uint64 // per identity: the sequence of the last ordered command executed

	logins     chan loginJob
	commands   chan commandJob
	msgPool    sync.Pool // *[]byte of MaxPlaintextSize capacity
	targetPool sync.Pool // *[]*Session
	batchPool  sync.Pool // *batchScratch

	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// ServerUpcalls is how a secure channel drives its Server. It is kept apart from Server
// so that an embedder holding the Server cannot inject messages.
type ServerUpcalls struct{ s *Server }

type loginJob struct {
	sess     *Session
	id       uint64
	user     string
	password []byte
	from     netip.AddrPort
}

type commandJob struct {
	sess    *Session
	cache   *dedup.Cache
	cmd     Command
	header  CommandHeader
	arrived time.Time
	left    time.Duration // how long after arrived the command may still start
}

// orderKey is what commands are ordered by: the authenticated identity (the operator key,
// or the DTLS PSK identity).
type orderKey struct {
	key  crypto.KeyID
	name string
}

// NewServer checks the config and builds the application layer of a drone endpoint.
func NewServer(cfg ServerConfig) (*Server, ServerUpcalls, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, ServerUpcalls{}, err
	}
	li, ok1 := ratelimit.New[principal](ratelimit.Config{Rate: cfg.LoginRate, Burst: cfg.LoginBurst})
	lu, ok2 := ratelimit.New[userBucket](ratelimit.Config{Rate: cfg.LoginRate, Burst: cfg.LoginBurst})
	lc, ok3 := ratelimit.New[string](ratelimit.Config{Rate: SharedIdentityCeiling * cfg.LoginRate,
		Burst: SharedIdentityCeiling * cfg.LoginBurst})
	if !ok1 || !ok2 || !ok3 {
		return nil, ServerUpcalls{}, errors.New("app: invalid login rate limit")
	}
	s := &Server{
		cfg:         cfg,
		warn:        ratelog.New(cfg.Logger, 10*time.Second),
		loginByID:   li,
		loginByUser: lu,
		userCeiling: lc,
		dedup:       make(map[dedupKey]*dedup.Cache),
		started:     cfg.Now(),
		order:       make(map[orderKey]uint64),
		logins:      make(chan loginJob, DefaultLoginQueue),
		commands:    make(chan commandJob, DefaultCommandQueue),
	}
	s.msgPool.New = func() any { b := make([]byte, 0, MaxPlaintextSize); return &b }
	s.targetPool.New = func() any { t := make([]*Session, 0, 16); return &t }
	s.batchPool.New = func() any { return &batchScratch{} }
	return s, ServerUpcalls{s}, nil
}

// Start runs the login workers, the command executor and the timers until ctx ends or
// Stop is called.
func (u ServerUpcalls) Start(ctx context.Context) {
	s := u.s
	ctx, s.cancel = context.WithCancel(ctx)
	for range s.cfg.LoginWorkers {
		s.wg.Go(func() { s.loginWorker(ctx) })
	}
	s.wg.Go(func() { s.commandExecutor(ctx) })
	s.wg.Go(func() { s.timerLoop(ctx) })
}

// Shutdown tells every operator the drone is going (reason), ends every session, stops
// the goroutines Start began and waits for them.
func (u ServerUpcalls) Shutdown(reason CloseReason) {
	s := u.s
	s.endSessions(s.cfg.Channel.AppendSessions(nil), reason)
	if s.cancel != nil {
		s.cancel()
	}
	s.wg.Wait()
}

// The upcalls NewSession, CanInherit, Session.SetReady, Session.Gone and Session.Login take
// only the session's own lock and the user database's, never a channel's, so a channel may
// call them with its session table locked.

// NewSession creates the application state of a session whose keys were just agreed.
// index names it in logs and SessionInfo. If inherit is not nil, the session carries over
// inherit's login (a native rekey whose initiation proved the old session's secrets), if
// CanInherit allows it at this moment, with the user's role now if that is lower.
func (u ServerUpcalls) NewSession(peer Peer, id Identity, index uint16, now time.Time, inherit *Session) *Session {
	sess := &Session{peer: peer, id: id, index: index, created: now}
	sess.linkUp.Store(true)
	sess.lastRecv.Store(now.UnixNano())
	sess.lastSend.Store(now.UnixNano())
	if inherit != nil {
		if user, role := u.s.currentRole(inherit); role != RoleNone {
			sess.user, sess.role = user, role
		}
	}
	return sess
}

// CanInherit reports whether a new session may carry over the login of from: from is
// logged in and its user still exists in the current database with from's identity. A
// user deleted (or a key unbound) just before a rekey, while the revocation of its
// sessions is under way, does not pass its login on to the new session.
func (u ServerUpcalls) CanInherit(from *Session) bool {
	_, role := u.s.currentRole(from)
	return role != RoleNone
}

// Receive acts on one opened application message of sess; now is when it arrived. The
// message may be decrypted in place in the channel's read buffer: it is not kept.
func (u ServerUpcalls) Receive(sess *Session, plain []byte, now time.Time) {
	s := u.s
	sess.lastRecv.Store(now.UnixNano())
	if !sess.linkUp.Load() && sess.linkUp.CompareAndSwap(false, true) {
		s.cfg.Hooks.LinkState(true)
		user, _ := sess.Login()
		s.cfg.Logger.Info("link restored", "session", sess.index, "user", user)
	}
	var m Message
	if err := ParseMessage(plain, &m); err != nil {
		s.cfg.Hooks.Dropped(DropMalformed)
		return
	}
	s.cfg.Hooks.PacketReceived(KindOfMessage(m.Type), 0)
	switch m.Type {
	case MsgKeepalive:
	case MsgLogin:
		s.handleLogin(sess, &m, now)
		crypto.Wipe(m.Password) // it lies in the channel's read buffer, which is reused
	case MsgCommand:
		s.handleCommand(sess, &m, now)
	case MsgFrames:
		s.handleFrames(sess, &m, now)
	case MsgClose:
		sess.peer.PeerClosed()
		user, _ := sess.Login()
		s.cfg.Logger.Info("session closed by operator", "session", sess.index, "user", user)
	default:
		s.cfg.Hooks.Dropped(DropUnexpected)
	}
}

// send seals and sends one message on sess. It reads no clock: the timer loop turns the
// sent mark into the last-send time for keepalives (to its 100 ms precision), which keeps
// a clock read off the per-packet path.
func (s *Server) send(sess *Session, msg []byte, kind PacketKind) bool {
	if !sess.peer.Send(msg, kind) {
		return false
	}
	sess.markSent()
	return true
}

// markSent notes that something went out on the session.
func (sess *Session) markSent() {
	if !sess.sent.Load() {
		sess.sent.Store(true)
	}
}

// reply builds a message in a pooled buffer and sends it.
func (s *Server) reply(sess *Session, kind PacketKind, build func([]byte) []byte) {
	bp := s.msgPool.Get().(*[]byte)
	s.send(sess, build((*bp)[:0]), kind)
	s.msgPool.Put(bp)
}

func (s *Server) loginResult(sess *Session, id uint64, status LoginStatus, role Role) {
	s.reply(sess, KindLoginResult, func(b []byte) []byte { return AppendLoginResult(b, id, status, role) })
}

func (s *Server) ack(sess *Session, id uint64, status AckStatus, payload []byte) {
	s.reply(sess, KindAck, func(b []byte) []byte { return AppendAck(b, id, status, payload) })
}

// handleLogin answers a login from the cache or queues the password check.
func (s *Server) handleLogin(sess *Session, m *Message, now time.Time) {
	sess.loginMu.Lock()
	if sess.loginID == m.ID && (sess.loginPending || sess.loginAnswer) {
		pending, status, role := sess.loginPending, sess.loginStatus, sess.loginRole
		sess.loginMu.Unlock()
		if !pending { // a retransmission: answer again without checking again
			s.loginResult(sess, m.ID, status, role)
		}
		return
	}
	sess.loginMu.Unlock()
	user := string(m.User)
	from := sess.peer.Addr()
	// Cheap checks first, keyed by what the channel authenticated. A login naming a user
	// this identity may not log in as costs no password check and cannot drain that
	// user's bucket.
	if !s.loginByID.Allow(principal{sess.id.Key, sess.id.Source}, now) {
		s.refuseLogin(sess, m.ID, user, from, LoginRateLimited)
		return
	}
	if _, status := s.cfg.Auth.Authorize(user, sess.id); status != LoginOK {
		s.refuseLogin(sess, m.ID, user, from, status)
		return
	}
	if !s.loginByUser.Allow(userBucket{user, sess.id.Source}, now) ||
		(sess.id.Source.IsValid() && !s.userCeiling.Allow(user, now)) {
		s.refuseLogin(sess, m.ID, user, from, LoginRateLimited)
		return
	}
	job := loginJob{sess: sess, id: m.ID, user: user, password: append([]byte(nil), m.Password...), from: from}
	sess.loginMu.Lock()
	sess.loginID, sess.loginPending, sess.loginAnswer = m.ID, true, false
	sess.loginMu.Unlock()
	select {
	case s.logins <- job:
	default:
		crypto.Wipe(job.password)
		s.refuseLogin(sess, m.ID, user, from, LoginBusy)
	}
}

// refuseLogin answers a login that gets no password check. The refusal becomes the
// session's current login answer, so a password check still running for an earlier login
// cannot log the session in afterwards, and it ends any earlier login (fail closed). A copy
// of the login (same id) gets the same answer from it, without the checks and without a
// rate-limit token: an operator on a lossy link sends its login in two copies.
func (s *Server) refuseLogin(sess *Session, id uint64, user string, from netip.AddrPort, status LoginStatus) {
	sess.loginMu.Lock()
	sess.user, sess.role = "", RoleNone
	sess.loginID, sess.loginPending, sess.loginAnswer, sess.loginStatus, sess.loginRole = id, false, true, status, RoleNone
	sess.loginMu.Unlock()
	s.cfg.Hooks.Login(status)
	s.cfg.Logger.Warn("login refused", s.who(sess, user, from, "result", status.String())...)
	s.loginResult(sess, id, status, RoleNone)
}

// AddrNamer is a Peer that names its addresses for logs (the relay's "relay:SUBJECT").
type AddrNamer interface {
	// AddrName is addr's name, or "" to log the address itself.
	AddrName(addr netip.AddrPort) string
}

// peerAddr is addr as the audit trail shows it: the peer's name for it, if it has one.
func peerAddr(p Peer, addr netip.AddrPort) any {
	if n, ok := p.(AddrNamer); ok {
		if name := n.AddrName(addr); name != "" {
			return name
		}
	}
	return addr
}

// who is the audit trail's description of a request: user, authenticated identity, address.
func (s *Server) who(sess *Session, user string, from netip.AddrPort, more ...any) []any {
	args := []any{"user", user}
	if sess.id.Name != "" {
		args = append(args, "identity", sess.id.Name)
	} else {
		name := sess.id.KeyName
		if name == "" {
			name = sess.id.Key.FingerprintPrefix()
		}
		args = append(args, "key", name)
	}
	return append(append(args, "from", peerAddr(sess.peer, from), "session", sess.index), more...)
}

// loginWorker checks passwords; only LoginWorkers of them run, so argon2's memory is bounded.
func (s *Server) loginWorker(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			for { // wipe the passwords of logins still queued
				select {
				case job := <-s.logins:
					crypto.Wipe(job.password)
				default:
					return
				}
			}
		case job := <-s.logins:
			role, status := s.cfg.Auth.Login(job.user, job.password, job.sess.id)
			crypto.Wipe(job.password)
			if status != LoginOK {
				role = RoleNone
			}
			sess := job.sess
			sess.loginMu.Lock()
			if sess.loginID == job.id {
				sess.loginPending, sess.loginAnswer, sess.loginStatus, sess.loginRole = false, true, status, role
				// A failed login ends any earlier login of the session: fail closed.
				sess.user, sess.role = "", RoleNone
				if status == LoginOK {
					sess.user, sess.role = job.user, role
				}
			}
			sess.loginMu.Unlock()
			s.cfg.Hooks.Login(status)
			level := slog.LevelInfo
			if status != LoginOK {
				level = slog.LevelWarn
			}
			s.cfg.Logger.Log(ctx, level, "login", s.who(sess, job.user, job.from, "role", role.String(), "result", status.String())...)
			// Twice: a lost answer costs the operator a retransmission round, and a
			// password check is worth an extra datagram (the operator ignores the copy).
			s.loginResult(sess, job.id, status, role)
			s.loginResult(sess, job.id, status, role)
		}
	}
}

// handleCommand checks the login and role, de-duplicates by command id, refuses a command
// that is late, superseded or from before this run (docs/PROTOCOL.md section 8.2) and
// queues the others. Every answer but a repeat is in the audit trail.
func (s *Server) handleCommand(sess *Session, m *Message, now time.Time) {
	user, role := s.currentRole(sess)
	if role == RoleNone {
		s.cfg.Hooks.Command(AckNotLoggedIn)
		s.cfg.Logger.Warn("command refused", s.who(sess, user, sess.peer.Addr(), "id", FormatID(m.ID),
			"result", AckNotLoggedIn.String())...)
		s.ack(sess, m.ID, AckNotLoggedIn, nil)
		return
	}
	cache := s.dedupFor(dedupKey{sess.id.Key, user})
	state, status, payload := cache.Begin(m.ID, now)
	switch state {
	case dedup.Done: // answered before: acknowledge again, never execute again
		s.ack(sess, m.ID, AckStatus(status), payload)
		return
	case dedup.Running:
		return
	case dedup.Full:
		s.cfg.Hooks.Command(AckBusy)
		s.warn.Warn("command de-duplication table full", "user", user)
		s.ack(sess, m.ID, AckBusy, nil)
		return
	}
	h := m.Command
	lifetime := min(time.Duration(h.Lifetime)*time.Millisecond, MaxCommandLifetime)
	age := commandAge(now, sess.created, h.Issued)
	job := commandJob{sess: sess, cache: cache, header: h, arrived: now, left: lifetime - age, cmd: Command{
		ID: m.ID, User: user, Role: role, OperatorKey: sess.id.Key, From: sess.peer.Addr(),
		Payload: append([]byte(nil), m.Payload...),
	}}
	refusal := AckOK
	switch {
	case role != RolePilot:
		refusal = AckNotPermitted
	case issuedBefore(h.Issued, sess.created.Sub(s.started)):
		refusal = AckRestarted
	case job.left <= 0:
		refusal = AckLate
	case s.superseded(sess.id, h):
		refusal = AckSuperseded
	}
	if refusal != AckOK {
		s.finishCommand(job, refusal, nil, age)
		return
	}
	select {
	case s.commands <- job:
	default:
		cache.Abort(m.ID)
		s.cfg.Hooks.Command(AckBusy)
		s.warn.Warn("command queue full", "user", user)
		s.ack(sess, m.ID, AckBusy, nil)
	}
}

// commandAge is a command's age on arrival, on this side's clock, never below the true
// age: the time since the session's receive epoch (its creation here, before the
// response went out) minus the sender's issue time, which counts from the sender's send
// epoch (its receipt of that response, later), plus the clock-drift allowance
// (ClockDriftPPM of both spans) (docs/PROTOCOL.md section 8.2).
func commandAge(now, epoch time.Time, issued int32) time.Duration {
	since := SinceEpoch(now, epoch)
	iss := time.Duration(issued) * time.Millisecond
	drift := (since + iss.Abs()) / (1e6 / ClockDriftPPM)
	return since - iss + drift
}

// issuedBefore reports whether a command whose issue time is issued (session time) may have
// been issued before the drone's run began, gap before the session's receive epoch. A
// command issued after the sender's send epoch (issued >= 0; that epoch follows the
// receive epoch) was not. One issued earlier was not if it was issued less than gap before
// the send epoch, counting clock drift (ClockDriftPPM) against it.
func issuedBefore(issued int32, gap time.Duration) bool {
	if issued >= 0 {
		return false
	}
	back := time.Duration(-int64(issued)) * time.Millisecond
	return back+(back+gap)/(1e6/ClockDriftPPM) >= gap
}

// superseded reports whether an ordered command of id with header h comes too late in its
// sender's order: a command with a later sequence number has been executed.
func (s *Server) superseded(id Identity, h CommandHeader) bool {
	if h.Flags&CommandIndependent != 0 {
		return false
	}
	s.orderMu.Lock()
	defer s.orderMu.Unlock()
	last, ok := s.order[orderKey{id.Key, id.Name}]
	return ok && h.Seq <= last
}

// executeOrdered records that an ordered command is about to execute: every command of the
// same identity with a lower sequence number is superseded from now on.
func (s *Server) executeOrdered(id Identity, h CommandHeader) {
	if h.Flags&CommandIndependent != 0 {
		return
	}
	s.orderMu.Lock()
	k := orderKey{id.Key, id.Name}
	s.order[k] = max(s.order[k], h.Seq)
	s.orderMu.Unlock()
}

// finishCommand stores a command's final answer (so a refused command stays refused and an
// executed one is never executed again), counts it, writes it to the audit trail and
// sends the acknowledgement. age is the command's age on arrival, or -1 when it ran.
func (s *Server) finishCommand(job commandJob, status AckStatus, payload []byte, age time.Duration) {
	job.cache.Finish(job.cmd.ID, uint8(status), payload)
	s.cfg.Hooks.Command(status)
	args := s.who(job.sess, job.cmd.User, job.cmd.From, "id", FormatID(job.cmd.ID), "seq", strconv.FormatUint(job.header.Seq, 10),
		"size", len(job.cmd.Payload), "result", status.String())
	level := slog.LevelInfo
	if !status.Executed() {
		level = slog.LevelWarn
		if age >= 0 {
			args = append(args, "age", age.Round(time.Millisecond), "lifetime", time.Duration(job.header.Lifetime)*time.Millisecond)
		}
	}
	s.cfg.Logger.Log(context.Background(), level, "command", args...)
	s.ack(job.sess, job.cmd.ID, status, payload)
	if job.header.Flags&CommandAckTwice != 0 {
		s.ack(job.sess, job.cmd.ID, status, payload) // the operator sees loss: answer in two copies
	}
}

// FormatID writes a 64-bit command or login id for the logs as 16 hex digits: a string, so
// that JSON readers that hold numbers as doubles (jq, JavaScript) do not round it.
func FormatID(id uint64) string {
	const digits = "0123456789abcdef"
	var b [16]byte
	for i := 15; i >= 0; i-- {
		b[i] = digits[id&0xf]
		id >>= 4
	}
	return string(b[:])
}

// handleFrames hands tunnelled frames to the frames handler if the session is logged in
// (checked against the current user database, as for commands: frames can change the
// vehicle) and the frames are fresh. Their age is judged on this side's clock: the time
// since this session's epoch (its creation, before the response went out) minus the
// operator's session time, which counts from the operator's receipt of that response, so
// the estimate is never below the true age (docs/PROTOCOL.md section 8.4).
func (s *Server) handleFrames(sess *Session, m *Message, now time.Time) {
	if s.cfg.OnFrames == nil {
		s.cfg.Hooks.Dropped(DropUnexpected)
		return
	}
	user, role := s.currentRole(sess)
	if role == RoleNone {
		s.cfg.Hooks.Dropped(DropUnexpected)
		s.warn.Warn("frames on a session that is not logged in", "session", sess.index, "from", peerAddr(sess.peer, sess.peer.Addr()))
		return
	}
	if age := SinceEpoch(now, sess.created) - time.Duration(m.Stamp)*time.Millisecond; age > s.cfg.MaxFrameAge {
		s.cfg.Hooks.Dropped(DropLate)
		s.warn.Warn("late frames dropped", "user", user, "session", sess.index, "age", age.Round(time.Millisecond))
		return
	}
	s.cfg.OnFrames(FrameSender{User: user, Role: role, OperatorKey: sess.id.Key, Identity: sess.id.Name,
		From: sess.peer.Addr(), Session: sess.index}, m.Payload)
}

// BroadcastFrames sends tunnelled frames (whole frames, at most MaxFramesPayload bytes)
// to every logged-in operator's current session and returns how many sessions they went
// to. arrived is when the oldest of them reached the drone (zero: now): each message is
// stamped with that session's time at arrival, so time spent waiting on the drone (the
// tunnel's aggregation) counts in the age the operator judges. Safe for concurrent use.
func (s *Server) BroadcastFrames(frames []byte, arrived time.Time) (int, error) {
	if len(frames) == 0 || len(frames) > MaxFramesPayload {
		return 0, ErrTooLarge
	}
	bp := s.msgPool.Get().(*[]byte)
	defer s.msgPool.Put(bp)
	msg := AppendFrames((*bp)[:0], frames)
	tp := s.targetPool.Get().(*[]*Session)
	defer s.targetPool.Put(tp)
	targets := s.targets((*tp)[:0])
	if arrived.IsZero() {
		arrived = s.cfg.Now()
	}
	sent := 0
	for i, sess := range targets {
		StampFrames(msg, arrived.Sub(sess.created))
		if s.send(sess, msg, KindFrames) {
			sent++
		}
		targets[i] = nil
	}
	*tp = targets[:0]
	return sent, nil
}

// SendFramesTo sends tunnelled frames to one logged-in session, by its index (the tunnel
// answering one operator in its own name). It reports whether they went out.
func (s *Server) SendFramesTo(session uint16, frames []byte) bool {
	if len(frames) == 0 || len(frames) > MaxFramesPayload {
		return false
	}
	var target *Session
	for _, sess := range s.targets(nil) {
		if sess.index == session {
			target = sess
		}
	}
	if target == nil {
		return false
	}
	msg := AppendFrames(make([]byte, 0, FramesHeaderSize+len(frames)), frames)
	StampFrames(msg, s.cfg.Now().Sub(target.created))
	return s.send(target, msg, KindFrames)
}

// currentRole is the session's login checked against the current user database, so a
// user removed or demoted since the login (even in a race with Revoke) cannot command.
func (s *Server) currentRole(sess *Session) (string, Role) {
	user, role := sess.Login()
	if role == RoleNone {
		return user, RoleNone
	}
	now, status := s.cfg.Auth.Authorize(user, sess.id)
	if status != LoginOK {
		return user, RoleNone
	}
	return user, min(role, now)
}

// dedupFor returns the command-id cache of an operator.
func (s *Server) dedupFor(k dedupKey) *dedup.Cache {
	s.dedupMu.RLock()
	c := s.dedup[k]
	s.dedupMu.RUnlock()
	if c != nil {
		return c
	}
	s.dedupMu.Lock()
	defer s.dedupMu.Unlock()
	if c = s.dedup[k]; c == nil {
		c = dedup.NewCache(s.cfg.DedupCapacity, s.cfg.DedupLifetime)
		s.dedup[k] = c
	}
	return c
}

// commandExecutor runs handlers one at a time, in arrival order. Right before each it
// checks again what may have changed while the command waited: the login and role, the
// session, the deadline and the sender's order. A command refused here is never executed
// later: its refusal is stored like an acknowledgement.
func (s *Server) commandExecutor(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case job := <-s.commands:
			_, role := s.currentRole(job.sess)
			switch {
			case job.sess.gone.Load():
				// No answer can reach the operator on a removed session, and none was
				// given: the id is forgotten, so a copy on a live session (after a rekey,
				// say) is judged afresh, deadline and order included.
				job.cache.Abort(job.cmd.ID)
				s.cfg.Logger.Info("command not run: its session ended while it waited", s.who(job.sess, job.cmd.User,
					job.cmd.From, "id", FormatID(job.cmd.ID))...)
			case role != RolePilot:
				s.finishCommand(job, AckNotPermitted, nil, -1)
			case SinceEpoch(s.cfg.Now(), job.arrived) >= job.left:
				s.finishCommand(job, AckLate, nil, -1)
			case s.superseded(job.sess.id, job.header):
				s.finishCommand(job, AckSuperseded, nil, -1)
			default:
				s.executeOrdered(job.sess.id, job.header)
				status, payload := s.cfg.Handler(ctx, job.cmd)
				if len(payload) > MaxAckPayload {
					payload = payload[:MaxAckPayload]
				}
				s.finishCommand(job, status, payload, -1)
			}
		}
	}
}

// targets appends the ready, logged-in sessions to dst.
func (s *Server) targets(dst []*Session) []*Session {
	all := s.cfg.Channel.AppendSessions(dst)
	n := 0
	for _, sess := range all {
		if _, role := sess.Login(); role != RoleNone && sess.ready.Load() {
			all[n] = sess
			n++
		}
	}
	clear(all[n:])
	return all[:n]
}

// Broadcast sends a telemetry payload to every logged-in operator's current session and
// returns how many it went to. Safe for concurrent use.
func (s *Server) Broadcast(payload []byte) (int, error) {
	if len(payload) > MaxTelemetryPayload {
		return 0, ErrTooLarge
	}
	bp := s.msgPool.Get().(*[]byte)
	defer s.msgPool.Put(bp)
	plain := AppendTelemetry((*bp)[:0], payload)
	tp := s.targetPool.Get().(*[]*Session)
	defer s.targetPool.Put(tp)
	targets := s.targets((*tp)[:0])
	sent := 0
	for i, sess := range targets {
		if s.send(sess, plain, KindTelemetry) {
			sent++
		}
		targets[i] = nil
	}
	*tp = targets[:0]
	return sent, nil
}

// batchScratch is BroadcastBatch's reusable state, so a batch costs no allocation once
// the pool has grown to the batch size.
type batchScratch struct {
	plain []byte   // the telemetry messages, back to back
	msgs  [][]byte // slices of plain
	peers []Peer
}

// BroadcastBatch sends each payload, in order, as telemetry to every logged-in operator's
// current session, as calling Broadcast for each payload would, but lets a channel that
// can (BatchSender: sendmmsg on Linux) send them in few system calls. It returns how many
// datagrams went out (payloads times operators when all succeed). A payload above
// MaxTelemetryPayload fails the whole call with ErrTooLarge before anything is sent. The
// operators are those of one snapshot taken at the start of the call, so pass batches of
// about link.BatchSize, not a long backlog, for a revocation to take effect between them.
// Safe for concurrent use.
func (s *Server) BroadcastBatch(payloads [][]byte) (int, error) {
	size := 0
	for _, p := range payloads {
		if len(p) > MaxTelemetryPayload {
			return 0, ErrTooLarge
		}
		size += TelemetryHeaderSize + len(p)
	}
	if len(payloads) == 0 {
		return 0, nil
	}
	tp := s.targetPool.Get().(*[]*Session)
	defer s.targetPool.Put(tp)
	targets := s.targets((*tp)[:0])
	defer func() { clear(targets); *tp = targets[:0] }()
	if len(targets) == 0 {
		return 0, nil
	}
	sc := s.batchPool.Get().(*batchScratch)
	defer s.batchPool.Put(sc)
	if cap(sc.plain) < size {
		sc.plain = make([]byte, 0, size)
	}
	sc.plain, sc.msgs = sc.plain[:0], sc.msgs[:0]
	for _, p := range payloads {
		start := len(sc.plain)
		sc.plain = AppendTelemetry(sc.plain, p)
		sc.msgs = append(sc.msgs, sc.plain[start:len(sc.plain):len(sc.plain)])
	}
	sent := 0
	if bs, ok := s.cfg.Channel.(BatchSender); ok {
		sc.peers = sc.peers[:0]
		for _, sess := range targets {
			sc.peers = append(sc.peers, sess.peer)
		}
		sent = bs.SendBatch(sc.peers, sc.msgs, KindTelemetry)
		clear(sc.peers)
	} else {
		for _, sess := range targets {
			for _, m := range sc.msgs {
				if sess.peer.Send(m, KindTelemetry) {
					sent++
				}
			}
		}
	}
	for _, sess := range targets {
		sess.markSent()
	}
	return sent, nil
}

// Sessions lists the live sessions.
func (s *Server) Sessions() []SessionInfo {
	all := s.cfg.Channel.AppendSessions(nil)
	infos := make([]SessionInfo, 0, len(all))
	for _, sess := range all {
		infos = append(infos, sess.info())
	}
	return infos
}

// Revoke ends every session for which revoked returns true, telling its operator why, and
// returns how many it ended. The daemon calls it after reloading the user database, so a
// deleted user or key loses its sessions at once; new logins and every queued command
// already see the new database.
func (s *Server) Revoke(revoked func(SessionInfo) bool) int {
	var victims []*Session
	for _, sess := range s.cfg.Channel.AppendSessions(nil) {
		if revoked(sess.info()) {
			victims = append(victims, sess)
		}
	}
	s.endSessions(victims, CloseRevoked)
	for _, sess := range victims {
		user, _ := sess.Login()
		s.cfg.Logger.Warn("session revoked", s.who(sess, user, sess.peer.Addr())...)
	}
	return len(victims)
}

// endSessions sends a close message on each ready session and removes every one.
func (s *Server) endSessions(list []*Session, reason CloseReason) {
	msg := AppendClose(nil, reason)
	for _, sess := range list {
		if sess.ready.Load() {
			s.send(sess, msg, KindClose)
		}
		sess.peer.Remove()
	}
}

// timerLoop tracks link state, sends keepalives and expires limiter and command-id entries.
func (s *Server) timerLoop(ctx context.Context) {
	t := time.NewTicker(2 * timerTick)
	defer t.Stop()
	keepalive := AppendKeepalive(nil)
	var list []*Session
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := s.cfg.Now()
		lost := LinkLostKeepalives * s.cfg.KeepaliveInterval
		list = s.cfg.Channel.AppendSessions(list[:0])
		for _, sess := range list {
			if !sess.ready.Load() {
				continue
			}
			if silent := sess.sinceRecv(now); silent >= lost && sess.linkUp.CompareAndSwap(true, false) {
				s.cfg.Hooks.LinkState(false)
				user, _ := sess.Login()
				s.cfg.Logger.Warn("link lost", "session", sess.index, "user", user, "silent", silent.Round(time.Second))
			}
			if sess.sent.Swap(false) {
				sess.lastSend.Store(now.UnixNano())
			}
			if time.Duration(now.UnixNano()-sess.lastSend.Load()) >= s.cfg.KeepaliveInterval {
				s.send(sess, keepalive, KindKeepalive)
			}
		}
		clear(list)
		s.loginByID.Sweep(now)
		s.loginByUser.Sweep(now)
		s.userCeiling.Sweep(now)
		s.dedupMu.RLock()
		for _, c := range s.dedup {
			c.Expire(now)
		}
		s.dedupMu.RUnlock()
	}
}
