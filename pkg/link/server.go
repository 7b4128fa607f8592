package link

import (
	"context"
	"crypto/rsa"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"sync"
	"time"

	"github.com/dronelink/dronelink/pkg/crypto"
	"github.com/dronelink/dronelink/pkg/dedup"
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

// Command is one command as the drone's handler sees it.
type Command struct {
	ID          uint64
	User        string
	Role        Role
	OperatorKey crypto.KeyID
	From        netip.AddrPort
	Payload     []byte // valid only during the handler call
}

// CommandHandler executes a command exactly once and returns the acknowledgement status
// and payload (truncated to MaxAckPayload). Handlers run one at a time, in arrival order,
// on the server's executor goroutine.
type CommandHandler func(ctx context.Context, cmd Command) (AckStatus, []byte)

// ServerConfig configures the drone's endpoint. Zero fields take the documented defaults.
type ServerConfig struct {
	// Conn is the socket; required. Run closes it when it returns.
	Conn PacketConn
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
	// LoginRate and LoginBurst limit password checks per operator key and per user. If zero,
	// 1 per second with a burst of 5.
	LoginRate  float64
	LoginBurst int
	// KeepaliveInterval: if zero, KeepaliveInterval. The link counts as lost after
	// LinkLostKeepalives intervals of silence.
	KeepaliveInterval time.Duration
	// SessionIdleTimeout: if zero, SessionIdleTimeout. Must exceed the link-lost time.
	SessionIdleTimeout time.Duration
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
	def(&c.LoginBurst, 5)
	if c.HandshakeRate == 0 {
		c.HandshakeRate = 10
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
		c.LoginWorkers < 0 || c.ReplayWindow < 0 || c.ReplayWindow > replay.MaxWindowSize || c.HandshakeRate < 0 || c.LoginRate < 0 ||
		c.KeepaliveInterval < 0 || c.SessionIdleTimeout <= LinkLostKeepalives*c.KeepaliveInterval {
		return c, errors.New("link: server config has a negative or too large limit")
	}
	return c, nil
}

// serverSession is a session on the drone with its operator and login state.
type serverSession struct {
	*Session
	key crypto.KeyID

	// Guarded by Server.mu.
	confirmed    bool      // the operator has sent on it: the drone may send on it
	replaces     uint16    // index of the session this one rekeys, until confirmed
	supersededAt time.Time // when a newer session of the same operator took over
	linkUp       bool

	// Guarded by loginMu.
	loginMu      sync.Mutex
	user         string
	role         Role
	loginID      uint64
	loginPending bool
	loginStatus  LoginStatus
	loginRole    Role // the role answered with loginStatus
	loginAnswer  bool // loginStatus and loginRole answer loginID
}

func (s *serverSession) login() (string, Role) {
	s.loginMu.Lock()
	defer s.loginMu.Unlock()
	return s.user, s.role
}

// SessionInfo describes a live session, for revocation and status.
type SessionInfo struct {
	LocalIndex  uint16
	OperatorKey crypto.KeyID
	User        string // empty until logged in
	Role        Role
	Peer        netip.AddrPort
	Created     time.Time
}

// Server is the drone's endpoint: it answers handshakes, checks logins, executes commands
// at most once, acknowledges them and streams telemetry to logged-in operators.
type Server struct {
	cfg       ServerConfig
	responder *Responder // reader goroutine only

	handshakeLimit *ratelimit.Limiter[netip.Addr]
	loginByKey     *ratelimit.Limiter[crypto.KeyID]
	loginByUser    *ratelimit.Limiter[string]

	mu       sync.RWMutex
	sessions map[uint16]*serverSession
	perKey   map[crypto.KeyID]int
	dedup    map[crypto.KeyID]*dedup.Cache

	logins     chan loginJob
	commands   chan commandJob
	sendPool   sync.Pool // *[]byte of MaxDatagramSize capacity
	targetPool sync.Pool // *[]*serverSession, Broadcast's snapshot
	batchPool  sync.Pool // *broadcastScratch
	warn       *warnLimiter
}

type loginJob struct {
	sess     *serverSession
	id       uint64
	user     string
	password []byte
	from     netip.AddrPort
}

type commandJob struct {
	sess  *serverSession
	cache *dedup.Cache
	cmd   Command
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
	hs, ok1 := ratelimit.New[netip.Addr](ratelimit.Config{Rate: cfg.HandshakeRate, Burst: cfg.HandshakeBurst})
	ls, ok2 := ratelimit.New[crypto.KeyID](ratelimit.Config{Rate: cfg.LoginRate, Burst: cfg.LoginBurst})
	lu, ok3 := ratelimit.New[string](ratelimit.Config{Rate: cfg.LoginRate, Burst: cfg.LoginBurst})
	if !ok1 || !ok2 || !ok3 {
		return nil, errors.New("link: invalid rate limit")
	}
	s := &Server{
		cfg:            cfg,
		responder:      responder,
		handshakeLimit: hs,
		loginByKey:     ls,
		loginByUser:    lu,
		sessions:       make(map[uint16]*serverSession),
		perKey:         make(map[crypto.KeyID]int),
		dedup:          make(map[crypto.KeyID]*dedup.Cache),
		logins:         make(chan loginJob, DefaultLoginQueue),
		commands:       make(chan commandJob, DefaultCommandQueue),
		warn:           newWarnLimiter(cfg.Logger, 10*time.Second),
	}
	s.sendPool.New = func() any { b := make([]byte, 0, MaxDatagramSize); return &b }
	s.batchPool.New = func() any {
		return &broadcastScratch{plain: make([]byte, 0, MaxPlaintextSize), bufs: make([]byte, BatchSize*MaxDatagramSize)}
	}
	s.targetPool.New = func() any { t := make([]*serverSession, 0, 16); return &t }
	return s, nil
}

// Run serves until ctx is cancelled or the socket fails, then tells every operator the
// drone is shutting down, closes the socket and waits for its goroutines.
func (s *Server) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	for range s.cfg.LoginWorkers {
		wg.Go(func() { s.loginWorker(ctx) })
	}
	wg.Go(func() { s.commandExecutor(ctx) })
	wg.Go(func() { s.timerLoop(ctx) })
	readErr := make(chan error, 1)
	wg.Go(func() { readErr <- s.readLoop() })

	var err error
	select {
	case <-ctx.Done():
	case err = <-readErr:
	}
	cancel()
	s.closeAll(CloseShutdown)
	s.cfg.Conn.Close()
	wg.Wait()
	return err
}

// readLoop is the only reader of the socket.
func (s *Server) readLoop() error {
	var scratch receiveScratch
	scratch.out = make([]byte, 0, MaxDatagramSize)
	return readDatagrams(s.cfg.Conn, s.cfg.Now, func(pkt []byte, from netip.AddrPort, now time.Time) {
		s.handleDatagram(pkt, from, now, &scratch)
	})
}

// receiveScratch is the reader's reusable state, so a datagram costs no allocation.
type receiveScratch struct {
	out  []byte // MaxDatagramSize capacity, for replies
	init Initiation
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
		s.handleData(pkt, from, now, sc.out[:0])
	case TypeInitiation:
		s.cfg.Hooks.PacketReceived(KindInitiation, len(pkt))
		s.handleInitiation(pkt, from, sc.out[:0], &sc.init)
	default:
		s.cfg.Hooks.PacketReceived(KindData, len(pkt))
		s.drop(DropUnexpected)
	}
}

func (s *Server) drop(r DropReason) { s.cfg.Hooks.Dropped(r) }

// handleInitiation runs the receive-side order of checks: length and type, PSK MAC, rate
// limit per source, then (in the Responder) timestamp, keys, signature and unwrap.
func (s *Server) handleInitiation(pkt []byte, from netip.AddrPort, out []byte, init *Initiation) {
	if err := s.responder.CheckInitiation(pkt, init); err != nil {
		s.drop(dropReasonFor(err))
		return
	}
	now := s.cfg.Now()
	if !s.handshakeLimit.Allow(from.Addr(), now) {
		s.drop(DropRateLimited)
		s.warn.Warn("handshake rate limit", "from", from)
		return
	}
	local, replaced, flags, err := s.reserve(init, now)
	if err != nil {
		s.refuse(init, from, out, err)
		return
	}
	reply, acc, err := s.responder.AcceptInitiation(out, init, local, flags)
	if err != nil {
		s.release(local)
		s.refuse(init, from, out, err)
		return
	}
	sess, err := NewSession(&acc.Keys, local, acc.OperatorIndex, s.cfg.ReplayWindow, now)
	acc.Keys.wipe()
	if err != nil {
		s.release(local)
		s.cfg.Logger.Error("session setup failed", "err", err)
		return
	}
	sess.setPeer(from)
	s.install(sess, acc, replaced, flags)
	s.send(reply, from, KindResponse)
	s.cfg.Hooks.Handshake(HandshakeOK)
	s.cfg.Logger.Info("handshake", "key", acc.OperatorKey.String(), "from", from, "session", local,
		"rekey", replaced != nil, "login_carried", flags&FlagLoginCarried != 0)
}

// refuse counts a refused initiation and answers it with an error datagram if that helps
// the operator (the answer is as small as can be: no amplification).
func (s *Server) refuse(init *Initiation, from netip.AddrPort, out []byte, err error) {
	s.drop(dropReasonFor(err))
	s.cfg.Hooks.Handshake(HandshakeFailed)
	s.warn.Warn("handshake refused", "reason", dropReasonFor(err).String(), "key", init.OperatorKey.String(), "from", from)
	if reply, ok := s.responder.ErrorReply(out, init, err); ok {
		s.send(reply, from, KindError)
	}
}

// reserve picks a free local index for a new session from init, enforcing the session
// limits, and finds the session it replaces. A rekey counts (it supersedes the old session
// and carries the login over) only if the initiation's resume tag proves the old session's
// secrets: holding the operator's RSA key alone is not enough to inherit a login. The slot
// is held by a nil entry until install.
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
	if _, role := old.login(); role != RoleNone {
		flags |= FlagLoginCarried
	}
	return local, old, flags, nil
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
// it rekeys. Beyond the per-key limit it evicts one of the operator key's sessions:
// an unconfirmed one (a handshake attempt whose response was lost) before a confirmed
// one, the least recently heard first. Sibling attempts of the same handshake are kept
// until one of them is confirmed, because the operator may complete any of its recent
// attempts with a late response.
func (s *Server) install(sess *Session, acc *Accepted, replaced *serverSession, flags byte) {
	ss := &serverSession{Session: sess, key: acc.OperatorKey, linkUp: true}
	s.mu.Lock()
	if replaced != nil && s.sessions[replaced.local] == replaced {
		ss.replaces = replaced.local
		if flags&FlagLoginCarried != 0 {
			ss.user, ss.role = replaced.login()
		}
	}
	if s.perKey[acc.OperatorKey] >= s.cfg.MaxSessionsPerKey {
		var victim *serverSession
		for _, o := range s.sessions {
			if o == nil || o.key != acc.OperatorKey {
				continue
			}
			if victim == nil || (!o.confirmed && victim.confirmed) ||
				(o.confirmed == victim.confirmed && o.lastRecv.Load() < victim.lastRecv.Load()) {
				victim = o
			}
		}
		if victim != nil {
			s.removeLocked(victim.local)
		}
	}
	s.sessions[sess.local] = ss
	s.perKey[acc.OperatorKey]++
	n := len(s.sessions)
	s.mu.Unlock()
	s.cfg.Hooks.SessionsActive(n)
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

// handleData authenticates a data datagram, then acts on its message.
func (s *Server) handleData(pkt []byte, from netip.AddrPort, now time.Time, out []byte) {
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
		s.warn.Info("operator roamed", "session", ss.local, "key", ss.key.String(), "to", from)
	}
	s.confirm(ss, now)
	var m Message
	if err := ParseMessage(plain, &m); err != nil {
		s.drop(DropMalformed)
		return
	}
	s.cfg.Hooks.PacketReceived(kindOfMessage(m.Type), 0)
	switch m.Type {
	case MsgKeepalive:
	case MsgLogin:
		s.handleLogin(ss, &m, from, now, out)
	case MsgCommand:
		s.handleCommand(ss, &m, from, now, out)
	case MsgClose:
		s.mu.Lock()
		s.removeLocked(ss.local)
		n := len(s.sessions)
		s.mu.Unlock()
		s.cfg.Hooks.SessionsActive(n)
		user, _ := ss.login()
		s.cfg.Logger.Info("session closed by operator", "session", ss.local, "user", user)
	default:
		s.drop(DropUnexpected)
	}
}

// confirm marks a session as confirmed by its operator (and its link as up); the session it
// rekeys stops being sent on and is retired after PreviousSessionGrace.
func (s *Server) confirm(ss *serverSession, now time.Time) {
	s.mu.RLock()
	done := ss.confirmed && ss.linkUp
	s.mu.RUnlock()
	if done {
		return
	}
	s.mu.Lock()
	if !ss.linkUp {
		ss.linkUp = true
		s.cfg.Hooks.LinkState(true)
		user, _ := ss.login()
		s.cfg.Logger.Info("link restored", "session", ss.local, "user", user)
	}
	rekeyed := false
	if !ss.confirmed {
		ss.confirmed = true
		// The operator chose this attempt: its unconfirmed siblings are dead.
		for idx, o := range s.sessions {
			if o != nil && o != ss && !o.confirmed && o.key == ss.key && o.remote == ss.remote {
				s.removeLocked(idx)
			}
		}
		if old := s.sessions[ss.replaces]; ss.replaces != 0 && old != nil && old.key == ss.key && old.supersededAt.IsZero() {
			old.supersededAt = now
			rekeyed = true
		}
		ss.replaces = 0
	}
	s.mu.Unlock()
	if rekeyed {
		s.cfg.Hooks.Rekeyed()
	}
}

// handleLogin answers a login from the cache or queues the password check.
func (s *Server) handleLogin(ss *serverSession, m *Message, from netip.AddrPort, now time.Time, out []byte) {
	ss.loginMu.Lock()
	if ss.loginID == m.ID && (ss.loginPending || ss.loginAnswer) {
		pending, status, role := ss.loginPending, ss.loginStatus, ss.loginRole
		ss.loginMu.Unlock()
		if !pending { // a retransmission: answer again without checking again
			s.sendMessage(ss, AppendLoginResult(out, m.ID, status, role), KindLoginResult)
		}
		return
	}
	ss.loginMu.Unlock()
	user := string(m.User)
	// Cheap checks first, keyed by what an attacker cannot forge: the session's operator
	// key. A login naming a user whose key this is not costs no password check and cannot
	// drain that user's bucket.
	if !s.loginByKey.Allow(ss.key, now) {
		s.refuseLogin(ss, m.ID, user, from, LoginRateLimited, out)
		return
	}
	if _, status := s.cfg.Auth.Authorize(user, ss.key); status != LoginOK {
		s.refuseLogin(ss, m.ID, user, from, status, out)
		return
	}
	if !s.loginByUser.Allow(user, now) {
		s.refuseLogin(ss, m.ID, user, from, LoginRateLimited, out)
		return
	}
	job := loginJob{sess: ss, id: m.ID, user: user, password: append([]byte(nil), m.Password...), from: from}
	ss.loginMu.Lock()
	ss.loginID, ss.loginPending, ss.loginAnswer = m.ID, true, false
	ss.loginMu.Unlock()
	select {
	case s.logins <- job:
	default:
		crypto.Wipe(job.password)
		s.refuseLogin(ss, m.ID, user, from, LoginBusy, out)
	}
}

// refuseLogin answers a login that gets no password check. The refusal becomes the
// session's current login answer, so a password check still running for an earlier login
// cannot log the session in afterwards, and it ends any earlier login (fail closed).
func (s *Server) refuseLogin(ss *serverSession, id uint64, user string, from netip.AddrPort, status LoginStatus, out []byte) {
	ss.loginMu.Lock()
	ss.user, ss.role = "", RoleNone
	ss.loginID, ss.loginPending, ss.loginAnswer, ss.loginStatus, ss.loginRole = id, false, false, status, RoleNone
	ss.loginMu.Unlock()
	s.cfg.Hooks.Login(status)
	s.warn.Warn("login refused", "user", user, "key", ss.key.String(), "from", from, "result", status.String())
	s.sendMessage(ss, AppendLoginResult(out, id, status, RoleNone), KindLoginResult)
}

// loginWorker checks passwords; only LoginWorkers of them run, so argon2's memory is bounded.
func (s *Server) loginWorker(ctx context.Context) {
	out := make([]byte, 0, MaxDatagramSize)
	for {
		select {
		case <-ctx.Done():
			return
		case job := <-s.logins:
			role, status := s.cfg.Auth.Login(job.user, job.password, job.sess.key)
			crypto.Wipe(job.password)
			if status != LoginOK {
				role = RoleNone
			}
			ss := job.sess
			ss.loginMu.Lock()
			if ss.loginID == job.id {
				ss.loginPending, ss.loginAnswer, ss.loginStatus, ss.loginRole = false, true, status, role
				// A failed login ends any earlier login of the session: fail closed.
				ss.user, ss.role = "", RoleNone
				if status == LoginOK {
					ss.user, ss.role = job.user, role
				}
			}
			ss.loginMu.Unlock()
			s.cfg.Hooks.Login(status)
			level := slog.LevelInfo
			if status != LoginOK {
				level = slog.LevelWarn
			}
			s.cfg.Logger.Log(ctx, level, "login", "user", job.user, "role", role.String(), "key", ss.key.String(),
				"from", job.from, "result", status.String())
			s.sendMessage(ss, AppendLoginResult(out[:0], job.id, status, role), KindLoginResult)
		}
	}
}

// handleCommand checks the role, de-duplicates by command id and queues new commands.
func (s *Server) handleCommand(ss *serverSession, m *Message, from netip.AddrPort, now time.Time, out []byte) {
	user, role := s.currentRole(ss)
	if role != RolePilot {
		status := AckNotPermitted
		if role == RoleNone {
			status = AckNotLoggedIn
		}
		s.cfg.Hooks.Command(status)
		s.warn.Warn("command refused", "user", user, "id", m.ID, "result", status.String(), "from", from)
		s.sendMessage(ss, AppendAck(out, m.ID, status, nil), KindAck)
		return
	}
	cache := s.dedupFor(ss.key)
	state, status, payload := cache.Begin(m.ID, now)
	switch state {
	case dedup.Done: // executed before: acknowledge again, never execute again
		s.sendMessage(ss, AppendAck(out, m.ID, AckStatus(status), payload), KindAck)
		return
	case dedup.Running:
		return
	case dedup.Full:
		s.cfg.Hooks.Command(AckBusy)
		s.warn.Warn("command de-duplication table full", "user", user)
		s.sendMessage(ss, AppendAck(out, m.ID, AckBusy, nil), KindAck)
		return
	}
	job := commandJob{sess: ss, cache: cache, cmd: Command{
		ID: m.ID, User: user, Role: role, OperatorKey: ss.key, From: from,
		Payload: append([]byte(nil), m.Payload...),
	}}
	select {
	case s.commands <- job:
	default:
		cache.Abort(m.ID)
		s.cfg.Hooks.Command(AckBusy)
		s.sendMessage(ss, AppendAck(out, m.ID, AckBusy, nil), KindAck)
	}
}

// currentRole is the session's login checked against the current user database, so a
// user removed or demoted since the login (even in a race with Revoke) cannot command.
func (s *Server) currentRole(ss *serverSession) (string, Role) {
	user, role := ss.login()
	if role == RoleNone {
		return user, RoleNone
	}
	now, status := s.cfg.Auth.Authorize(user, ss.key)
	if status != LoginOK {
		return user, RoleNone
	}
	return user, min(role, now)
}

// dedupFor returns the command-id cache of an operator key.
func (s *Server) dedupFor(key crypto.KeyID) *dedup.Cache {
	s.mu.RLock()
	c := s.dedup[key]
	s.mu.RUnlock()
	if c != nil {
		return c
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if c = s.dedup[key]; c == nil {
		c = dedup.NewCache(s.cfg.DedupCapacity, DedupLifetime)
		s.dedup[key] = c
	}
	return c
}

// commandExecutor runs handlers one at a time, in arrival order.
func (s *Server) commandExecutor(ctx context.Context) {
	out := make([]byte, 0, MaxDatagramSize)
	for {
		select {
		case <-ctx.Done():
			return
		case job := <-s.commands:
			// Queued before a revocation? Check again right before executing. A command
			// refused here was not executed: its id is forgotten, so a retransmission on a
			// session that may command (after a rekey, say) can still run it once.
			var status AckStatus
			var payload []byte
			if _, role := s.currentRole(job.sess); role != RolePilot || s.lookup(job.sess.local) != job.sess {
				status = AckNotPermitted
				job.cache.Abort(job.cmd.ID)
			} else {
				status, payload = s.cfg.Handler(ctx, job.cmd)
				if len(payload) > MaxAckPayload {
					payload = payload[:MaxAckPayload]
				}
				job.cache.Finish(job.cmd.ID, uint8(status), payload)
			}
			s.cfg.Hooks.Command(status)
			s.cfg.Logger.Info("command", "user", job.cmd.User, "id", job.cmd.ID, "size", len(job.cmd.Payload),
				"result", status.String(), "from", job.cmd.From)
			s.sendMessage(job.sess, AppendAck(out[:0], job.cmd.ID, status, payload), KindAck)
		}
	}
}

// Broadcast sends a telemetry payload to every logged-in operator's current session and
// returns how many it went to. Safe for concurrent use. The session table is locked only
// to take a snapshot; sealing and sending happen outside the lock.
func (s *Server) Broadcast(payload []byte) (int, error) {
	if len(payload) > MaxTelemetryPayload {
		return 0, ErrTooLarge
	}
	bp := s.sendPool.Get().(*[]byte)
	defer s.sendPool.Put(bp)
	plain := AppendTelemetry((*bp)[:0], payload)
	tp := s.targetPool.Get().(*[]*serverSession)
	defer s.targetPool.Put(tp)
	targets := s.broadcastTargets((*tp)[:0])
	sent := 0
	for i, ss := range targets {
		if _, role := ss.login(); role != RoleNone && s.sealAndSend(ss, plain, KindTelemetry) {
			sent++
		}
		targets[i] = nil
	}
	*tp = targets[:0]
	return sent, nil
}

// broadcastScratch is BroadcastBatch's reusable state: room for BatchSize sealed
// datagrams, so a batch costs no allocation.
type broadcastScratch struct {
	plain []byte // one telemetry message, MaxPlaintextSize capacity
	bufs  []byte // BatchSize * MaxDatagramSize
	msgs  [BatchSize]Datagram
}

// BroadcastBatch sends each payload, in order, as telemetry to every logged-in operator's
// current session, as calling Broadcast for each payload would, but hands the sealed
// datagrams to the socket BatchSize at a time: one sendmmsg(2) per batch on Linux when the
// Conn is a BatchConn (WriteTo for each otherwise). It returns how many datagrams went out
// (payloads times operators when all succeed). A payload above MaxTelemetryPayload fails
// the whole call with ErrTooLarge before anything is sent. The operators are those of one
// snapshot taken at the start of the call (as with Broadcast), so pass batches of about
// BatchSize, not a long backlog, for a revocation to take effect between them. Safe for
// concurrent use.
func (s *Server) BroadcastBatch(payloads [][]byte) (int, error) {
	for _, p := range payloads {
		if len(p) > MaxTelemetryPayload {
			return 0, ErrTooLarge
		}
	}
	if len(payloads) == 0 {
		return 0, nil
	}
	tp := s.targetPool.Get().(*[]*serverSession)
	defer s.targetPool.Put(tp)
	targets := s.broadcastTargets((*tp)[:0])
	sc := s.batchPool.Get().(*broadcastScratch)
	defer s.batchPool.Put(sc)
	now := s.cfg.Now()
	sent, k := 0, 0
	for i, ss := range targets {
		targets[i] = nil
		if _, role := ss.login(); role == RoleNone {
			continue
		}
		peer := ss.Peer()
		for _, p := range payloads {
			sc.plain = AppendTelemetry(sc.plain[:0], p)
			pkt, err := ss.Seal(sc.bufs[k*MaxDatagramSize:k*MaxDatagramSize:(k+1)*MaxDatagramSize], sc.plain, now)
			if err != nil {
				break // this session can send no more (its counter is used up); rekey will follow
			}
			sc.msgs[k] = Datagram{Buf: pkt, Addr: peer}
			if k++; k == BatchSize {
				sent += s.sendBatch(sc.msgs[:k], KindTelemetry)
				k = 0
			}
		}
	}
	sent += s.sendBatch(sc.msgs[:k], KindTelemetry)
	*tp = targets[:0]
	return sent, nil
}

// broadcastTargets appends the current, confirmed sessions to dst: a snapshot taken under
// the read lock, so sealing and sending happen outside it.
func (s *Server) broadcastTargets(dst []*serverSession) []*serverSession {
	s.mu.RLock()
	defer s.mu.RUnlock()
	for _, ss := range s.sessions {
		if ss != nil && ss.confirmed && ss.supersededAt.IsZero() {
			dst = append(dst, ss)
		}
	}
	return dst
}

// sendBatch writes msgs, skipping (and warning about) any the socket refuses, and returns
// how many went out.
func (s *Server) sendBatch(msgs []Datagram, kind PacketKind) int {
	bc, batched := s.cfg.Conn.(BatchConn)
	sent := 0
	for len(msgs) > 0 {
		n := 0
		var err error
		if batched {
			n, err = bc.WriteBatch(msgs)
		} else if err = s.cfg.Conn.WriteTo(msgs[0].Buf, msgs[0].Addr); err == nil {
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
			s.warn.Warn("send failed", "to", msgs[0].Addr, "err", err)
			msgs = msgs[1:]
		}
	}
	return sent
}

// sendMessage seals plaintext on a session and sends it to the session's peer.
func (s *Server) sendMessage(ss *serverSession, plaintext []byte, kind PacketKind) {
	s.sealAndSend(ss, plaintext, kind)
}

func (s *Server) sealAndSend(ss *serverSession, plaintext []byte, kind PacketKind) bool {
	bp := s.sendPool.Get().(*[]byte)
	defer s.sendPool.Put(bp)
	pkt, err := ss.Seal((*bp)[:0], plaintext, s.cfg.Now())
	if err != nil {
		return false
	}
	return s.send(pkt, ss.Peer(), kind)
}

// send writes one datagram.
func (s *Server) send(pkt []byte, to netip.AddrPort, kind PacketKind) bool {
	if err := s.cfg.Conn.WriteTo(pkt, to); err != nil {
		s.warn.Warn("send failed", "to", to, "err", err)
		return false
	}
	s.cfg.Hooks.PacketSent(kind, len(pkt))
	return true
}

// timerLoop expires sessions, retires rekeyed ones, tracks link state and sends keepalives.
func (s *Server) timerLoop(ctx context.Context) {
	t := time.NewTicker(timerTick)
	defer t.Stop()
	keepalive := AppendKeepalive(nil)
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := s.cfg.Now()
		var idle []*serverSession
		s.mu.Lock()
		s.expireLocked(now)
		for _, ss := range s.sessions {
			if ss == nil || !ss.confirmed {
				continue
			}
			if ss.linkUp && ss.supersededAt.IsZero() && ss.sinceRecv(now) >= LinkLostKeepalives*s.cfg.KeepaliveInterval {
				ss.linkUp = false
				s.cfg.Hooks.LinkState(false)
				user, _ := ss.login()
				s.cfg.Logger.Warn("link lost", "session", ss.local, "user", user, "silent", ss.sinceRecv(now).Round(time.Second))
			}
			if ss.supersededAt.IsZero() && ss.sinceSend(now) >= s.cfg.KeepaliveInterval {
				idle = append(idle, ss)
			}
		}
		n := len(s.sessions)
		s.mu.Unlock()
		s.cfg.Hooks.SessionsActive(n)
		for _, ss := range idle {
			s.sendMessage(ss, keepalive, KindKeepalive)
		}
		s.handshakeLimit.Sweep(now)
		s.loginByKey.Sweep(now)
		s.loginByUser.Sweep(now)
		s.mu.RLock()
		for _, c := range s.dedup {
			c.Expire(now)
		}
		s.mu.RUnlock()
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

// Sessions lists the live sessions.
func (s *Server) Sessions() []SessionInfo {
	s.mu.RLock()
	defer s.mu.RUnlock()
	infos := make([]SessionInfo, 0, len(s.sessions))
	for _, ss := range s.sessions {
		if ss == nil {
			continue
		}
		user, role := ss.login()
		infos = append(infos, SessionInfo{LocalIndex: ss.local, OperatorKey: ss.key, User: user, Role: role, Peer: ss.Peer(), Created: ss.created})
	}
	return infos
}

// Revoke ends every session for which revoked returns true, telling its operator why. The
// daemon calls it after reloading the user database, so a deleted user or key loses its
// sessions at once; new handshakes and logins already see the new database.
func (s *Server) Revoke(revoked func(SessionInfo) bool) int {
	var victims []*serverSession
	for _, info := range s.Sessions() {
		if revoked(info) {
			if ss := s.lookup(info.LocalIndex); ss != nil {
				victims = append(victims, ss)
			}
		}
	}
	s.endSessions(victims, CloseRevoked)
	for _, ss := range victims {
		user, _ := ss.login()
		s.cfg.Logger.Warn("session revoked", "session", ss.local, "user", user, "key", ss.key.String())
	}
	return len(victims)
}

// closeAll ends every session with reason.
func (s *Server) closeAll(reason CloseReason) {
	s.mu.RLock()
	all := make([]*serverSession, 0, len(s.sessions))
	for _, ss := range s.sessions {
		if ss != nil {
			all = append(all, ss)
		}
	}
	s.mu.RUnlock()
	s.endSessions(all, reason)
}

// endSessions sends a close message on each session and removes it.
func (s *Server) endSessions(list []*serverSession, reason CloseReason) {
	msg := AppendClose(nil, reason)
	for _, ss := range list {
		s.mu.RLock()
		confirmed := ss.confirmed
		s.mu.RUnlock()
		if confirmed {
			s.sendMessage(ss, msg, KindClose)
		}
	}
	s.mu.Lock()
	for _, ss := range list {
		if s.sessions[ss.local] == ss {
			s.removeLocked(ss.local)
		}
	}
	n := len(s.sessions)
	s.mu.Unlock()
	s.cfg.Hooks.SessionsActive(n)
}

// LocalAddr is the server's socket address.
func (s *Server) LocalAddr() netip.AddrPort { return s.cfg.Conn.LocalAddr() }

// randomID returns a random nonzero 64-bit id.
func randomID(r io.Reader) uint64 {
	var b [8]byte
	for {
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return rand.Uint64() | 1
		}
		if id := binary.BigEndian.Uint64(b[:]); id != 0 {
			return id
		}
	}
}
