package dtlslink

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/dtls/v3"

	"github.com/dronelink/dronelink/pkg/crypto"
	"github.com/dronelink/dronelink/pkg/dedup"
	"github.com/dronelink/dronelink/pkg/link"
	"github.com/dronelink/dronelink/pkg/ratelimit"
)

// errBadIdentity refuses a PSK identity that is not a user name.
var errBadIdentity = errors.New("PSK identity is not a valid user name")

// timerTick is how often the server looks at its sessions' timers.
const timerTick = 200 * time.Millisecond

// halfOpenTimeout: an association whose peer has not returned the HelloVerifyRequest
// cookie by then is dropped. A real peer answers within a round trip; on a lossy link it
// retransmits its ClientHello (same random, so the same association) for a few seconds.
const halfOpenTimeout = 5 * time.Second

// Server is the drone's DTLS endpoint: it completes DTLS 1.2 PSK handshakes, checks
// logins, executes commands at most once, acknowledges them and streams telemetry to
// logged-in operators. One DTLS association is one session.
type Server struct {
	cfg  ServerConfig
	sock net.PacketConn

	handshakeLimit *ratelimit.Limiter[netip.Addr]
	loginBySource  *ratelimit.Limiter[netip.Addr]
	loginByUser    *ratelimit.Limiter[string]
	warn           *warnLimiter

	ctx context.Context // Run's context, for handshakes and handlers
	wg  sync.WaitGroup  // session goroutines

	mu         sync.RWMutex
	sessions   map[uint16]*session
	byAddr     map[netip.AddrPort]*session
	byCID      map[string]*session
	unverified atomic.Int64 // associations that have not returned a HelloVerifyRequest cookie
	dedup      map[string]*dedup.Cache
	closing    bool

	logins   chan loginJob
	commands chan commandJob
}

// session is one DTLS association and its login.
type session struct {
	srv     *Server
	index   uint16
	pc      *peerConn
	conn    *dtls.Conn
	random  [randomSize]byte
	created time.Time

	// halfOpen: counted in Server.unverified until the peer proves its address by
	// returning the cookie (pion then sends a ServerHello) or the association ends.
	halfOpen atomic.Bool
	// replaces is the live association from the same address that this one takes over
	// once its handshake completes. Guarded by srv.mu.
	replaces    *session
	established atomic.Bool
	identity    string // PSK identity, set once established
	suite       string
	addr        netip.AddrPort // guarded by srv.mu
	cid         []byte         // guarded by srv.mu
	lastRecv    atomic.Int64   // unix nanoseconds
	lastSend    atomic.Int64
	linkUp      atomic.Bool
	writeMu     sync.Mutex
	endOnce     sync.Once

	loginMu      sync.Mutex
	user         string
	role         link.Role
	loginID      uint64
	loginPending bool
	loginAnswer  bool
	loginStatus  link.LoginStatus
	loginRole    link.Role
}

type loginJob struct {
	sess     *session
	id       uint64
	user     string
	password []byte
	from     netip.AddrPort
}

type commandJob struct {
	sess  *session
	cache *dedup.Cache
	cmd   link.Command
}

// NewServer checks the config, opens the socket if it was given as an address and builds
// a server; Run starts it.
func NewServer(cfg ServerConfig) (*Server, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	hs, ok1 := ratelimit.New[netip.Addr](ratelimit.Config{Rate: cfg.HandshakeRate, Burst: cfg.HandshakeBurst})
	ls, ok2 := ratelimit.New[netip.Addr](ratelimit.Config{Rate: cfg.LoginRate, Burst: cfg.LoginBurst})
	lu, ok3 := ratelimit.New[string](ratelimit.Config{Rate: cfg.LoginRate, Burst: cfg.LoginBurst})
	if !ok1 || !ok2 || !ok3 {
		return nil, errors.New("dtlslink: invalid rate limit")
	}
	sock := cfg.Conn
	if sock == nil {
		addr, err := net.ResolveUDPAddr("udp", cfg.Listen)
		if err != nil {
			return nil, err
		}
		if sock, err = net.ListenUDP("udp", addr); err != nil {
			return nil, err
		}
	}
	return &Server{
		cfg:            cfg,
		sock:           sock,
		handshakeLimit: hs,
		loginBySource:  ls,
		loginByUser:    lu,
		warn:           newWarnLimiter(cfg.Logger, 10*time.Second),
		sessions:       make(map[uint16]*session),
		byAddr:         make(map[netip.AddrPort]*session),
		byCID:          make(map[string]*session),
		dedup:          make(map[string]*dedup.Cache),
		logins:         make(chan loginJob, link.DefaultLoginQueue),
		commands:       make(chan commandJob, link.DefaultCommandQueue),
	}, nil
}

// LocalAddr is the server's socket address.
func (s *Server) LocalAddr() netip.AddrPort {
	if a, ok := s.sock.LocalAddr().(*net.UDPAddr); ok {
		return a.AddrPort()
	}
	return netip.AddrPort{}
}

// Run serves until ctx is cancelled or the socket fails, then tells every operator the
// drone is shutting down, closes the socket and waits for its goroutines. Call it once.
func (s *Server) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s.ctx = ctx
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
	s.mu.Lock()
	s.closing = true
	s.mu.Unlock()
	s.closeAll(link.CloseShutdown)
	cancel()
	s.sock.Close()
	wg.Wait()
	s.wg.Wait()
	return err
}

// readLoop is the only reader of the socket: it routes each datagram to its association,
// opening a new one only for a ClientHello.
func (s *Server) readLoop() error {
	buf := make([]byte, socketBufferSize)
	for {
		n, addr, err := s.sock.ReadFrom(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return err
		}
		ua, ok := addr.(*net.UDPAddr)
		if !ok {
			continue
		}
		from := ua.AddrPort()
		from = netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
		pkt := buf[:n]
		s.cfg.Hooks.PacketReceived(receivedKind(pkt, link.KindInitiation), n)
		if n == len(buf) || classify(pkt) == classGarbage {
			s.cfg.Hooks.Dropped(link.DropMalformed)
			continue
		}
		s.route(pkt, from)
	}
}

// route hands a datagram to its association, or opens one for a new ClientHello.
func (s *Server) route(pkt []byte, from netip.AddrPort) {
	s.mu.RLock()
	var sess *session
	if cid, ok := recordCID(pkt, ConnectionIDSize); ok {
		sess = s.byCID[string(cid)]
	}
	if sess == nil {
		sess = s.byAddr[from]
	}
	s.mu.RUnlock()
	random, hello := clientHelloRandom(pkt)
	switch {
	case sess != nil && (!hello || random == sess.random):
		if !sess.pc.deliver(pkt, from) {
			s.cfg.Hooks.Dropped(link.DropRateLimited)
		}
		return
	case !hello:
		s.cfg.Hooks.Dropped(link.DropUnknownSession)
		return
	}
	// A new ClientHello, possibly from the address of a live association: the peer may have
	// started over (RFC 6347 section 4.2.8). The old association ends only when the new one
	// completes its handshake, so a forged ClientHello from a spoofed address cannot end it.
	s.open(pkt, from, random, sess)
}

// open starts an association for a ClientHello from a new peer: cheap limits first.
func (s *Server) open(pkt []byte, from netip.AddrPort, random [randomSize]byte, replaces *session) {
	now := time.Now()
	if !s.handshakeLimit.Allow(from.Addr(), now) {
		s.cfg.Hooks.Dropped(link.DropRateLimited)
		s.warn.Warn("handshake rate limit", "from", from)
		return
	}
	sess := &session{srv: s, random: random, created: now, addr: from}
	sess.pc = newPeerConn(s, sess)
	var evict *session
	s.mu.Lock()
	if s.closing || len(s.sessions) >= s.cfg.MaxSessions {
		closing := s.closing
		s.mu.Unlock()
		if !closing {
			s.cfg.Hooks.Dropped(link.DropSessionLimit)
			s.warn.Warn("session limit reached", "from", from)
		}
		return
	}
	if s.unverified.Load() >= int64(s.cfg.MaxHandshakes) {
		// Too many half-open associations (spoofed ClientHellos cost the sender nothing):
		// the oldest makes room, so a flood must outpace every real peer's cookie round
		// trip to keep it out.
		for _, o := range s.sessions {
			if o.halfOpen.Load() && (evict == nil || o.created.Before(evict.created)) {
				evict = o
			}
		}
	}
	for range 64 {
		if i := randomIndex(); i != 0 && s.sessions[i] == nil {
			sess.index = i
			break
		}
	}
	if sess.index == 0 {
		s.mu.Unlock()
		s.cfg.Hooks.Dropped(link.DropSessionLimit)
		return
	}
	conn, err := dtls.ServerWithOptions(sess.pc, net.UDPAddrFromAddrPort(from), s.pionOptions(sess)...)
	if err != nil {
		s.mu.Unlock()
		s.cfg.Logger.Error("dtls setup failed", "err", err)
		return
	}
	sess.conn = conn
	sess.replaces = replaces
	s.sessions[sess.index] = sess
	s.byAddr[from] = sess
	sess.halfOpen.Store(true)
	s.unverified.Add(1)
	n := len(s.sessions)
	s.mu.Unlock()
	if evict != nil {
		s.cfg.Hooks.Dropped(link.DropSessionLimit)
		s.warn.Warn("half-open association evicted", "from", evict.peer())
		evict.end()
	}
	s.cfg.Hooks.SessionsActive(n)
	sess.pc.deliver(pkt, from)
	s.wg.Go(sess.run)
}

// pionOptions is the DTLS configuration of one association. Its connection ID generator
// registers the ID it hands out, so records carrying it reach this association from any
// address.
func (s *Server) pionOptions(sess *session) []dtls.ServerOption {
	opts := []dtls.ServerOption{
		dtls.WithPSK(s.pskFor),
		dtls.WithCipherSuites(s.cfg.CipherSuites...),
		dtls.WithExtendedMasterSecret(dtls.RequestExtendedMasterSecret),
		dtls.WithFlightInterval(s.cfg.FlightInterval),
		dtls.WithDisableRetransmitBackoff(!s.cfg.RetransmitBackoff),
		dtls.WithReplayProtectionWindow(s.cfg.ReplayWindow),
		dtls.WithLoggerFactory(pionLogger{s.cfg.Logger}),
		dtls.WithMTU(link.MaxDatagramSize),
	}
	if !s.cfg.DisableConnectionID {
		opts = append(opts, dtls.WithConnectionIDGenerator(func() []byte {
			s.mu.Lock()
			defer s.mu.Unlock()
			if sess.cid == nil {
				for {
					cid := make([]byte, ConnectionIDSize)
					if _, err := rand.Read(cid); err != nil {
						panic(err) // crypto/rand never fails on supported platforms
					}
					if s.byCID[string(cid)] == nil {
						sess.cid = cid
						s.byCID[string(cid)] = sess
						break
					}
				}
			}
			return append([]byte(nil), sess.cid...)
		}))
	}
	return opts
}

// pskFor is the PSK callback: the fleet PSK for any identity with user-name syntax. It
// looks nothing up, so the handshake does not tell which users exist; the login inside
// checks the user.
func (s *Server) pskFor(identity []byte) ([]byte, error) {
	if !ValidUserName(string(identity)) {
		return nil, errBadIdentity
	}
	psk := s.cfg.PSK
	return psk[:], nil
}

// run completes the handshake, then reads the association's messages until it ends.
func (sess *session) run() {
	s := sess.srv
	defer sess.end()
	ctx, cancel := context.WithTimeout(s.ctx, s.cfg.HandshakeTimeout)
	err := sess.conn.HandshakeContext(ctx)
	cancel()
	from := sess.peer()
	if err != nil {
		if s.ctx.Err() != nil {
			return
		}
		s.cfg.Hooks.Handshake(link.HandshakeFailed)
		reason := err.Error()
		if ctx.Err() != nil {
			reason = "timeout (wrong PSK, or the peer gave up)"
		}
		s.warn.Warn("dtls handshake failed", "from", from, "reason", reason)
		return
	}
	state, _ := sess.conn.ConnectionState()
	sess.identity = string(state.IdentityHint)
	sess.suite = dtls.CipherSuiteName(state.CipherSuiteID)
	now := time.Now().UnixNano()
	sess.lastRecv.Store(now)
	sess.lastSend.Store(now)
	sess.linkUp.Store(true)
	sess.established.Store(true)
	s.cfg.Hooks.Handshake(link.HandshakeOK)
	s.cfg.Logger.Info("handshake", "transport", "dtls", "identity", sess.identity, "from", from, "session", sess.index, "suite", sess.suite)
	s.mu.Lock()
	old := sess.replaces
	sess.replaces = nil
	s.mu.Unlock()
	if old != nil {
		s.cfg.Logger.Info("new association replaces the old one", "session", old.index, "by", sess.index, "from", from)
		old.end()
	}

	buf := make([]byte, readBufferSize)
	for {
		n, err := sess.conn.Read(buf)
		if err != nil {
			if s.ctx.Err() == nil && !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
				s.cfg.Logger.Debug("session read ended", "session", sess.index, "err", err)
			}
			return
		}
		if !sess.handle(buf[:n]) {
			return
		}
	}
}

// handle acts on one authenticated application message; false ends the session.
func (sess *session) handle(plain []byte) bool {
	s := sess.srv
	now := time.Now()
	sess.lastRecv.Store(now.UnixNano())
	if !sess.linkUp.Swap(true) {
		s.cfg.Hooks.LinkState(true)
		s.cfg.Logger.Info("link restored", "session", sess.index, "user", sess.loggedInUser())
	}
	sess.followRoaming()
	var m link.Message
	if err := link.ParseMessage(plain, &m); err != nil {
		s.cfg.Hooks.Dropped(link.DropMalformed)
		return true
	}
	s.cfg.Hooks.PacketReceived(kindOf(m.Type), 0)
	switch m.Type {
	case link.MsgKeepalive:
	case link.MsgLogin:
		sess.handleLogin(&m, now)
	case link.MsgCommand:
		sess.handleCommand(&m, now)
	case link.MsgClose:
		s.cfg.Logger.Info("session closed by operator", "session", sess.index, "user", sess.loggedInUser())
		// The operator's close_notify follows: read it (the association then ends) rather
		// than count it as a datagram for no association. A lost one ends it here.
		sess.conn.SetReadDeadline(time.Now().Add(time.Second))
	default:
		s.cfg.Hooks.Dropped(link.DropUnexpected)
	}
	return true
}

// followRoaming records a new peer address once pion has accepted an authenticated record
// carrying the association's connection ID from it (RFC 9146 section 6).
func (sess *session) followRoaming() {
	ua, ok := sess.conn.RemoteAddr().(*net.UDPAddr)
	if !ok {
		return
	}
	now := ua.AddrPort()
	now = netip.AddrPortFrom(now.Addr().Unmap(), now.Port())
	s := sess.srv
	s.mu.Lock()
	old := sess.addr
	if now == old {
		s.mu.Unlock()
		return
	}
	if s.byAddr[old] == sess {
		delete(s.byAddr, old)
	}
	s.byAddr[now] = sess
	sess.addr = now
	s.mu.Unlock()
	s.cfg.Logger.Info("operator roamed", "session", sess.index, "user", sess.loggedInUser(), "to", now)
}

func (sess *session) peer() netip.AddrPort {
	sess.srv.mu.RLock()
	defer sess.srv.mu.RUnlock()
	return sess.addr
}

func (sess *session) loggedInUser() string {
	user, _ := sess.login()
	return user
}

func (sess *session) login() (string, link.Role) {
	sess.loginMu.Lock()
	defer sess.loginMu.Unlock()
	return sess.user, sess.role
}

// send writes one application message as one DTLS record. Only established sessions send:
// a write on an association that has not finished its handshake would start one.
func (sess *session) send(plain []byte, kind link.PacketKind) bool {
	if !sess.established.Load() {
		return false
	}
	sess.writeMu.Lock()
	defer sess.writeMu.Unlock()
	sess.pc.sendKind.Store(uint32(kind))
	_, err := sess.conn.Write(plain)
	sess.pc.sendKind.Store(noKind)
	if err != nil {
		return false
	}
	sess.lastSend.Store(time.Now().UnixNano())
	return true
}

// end closes the association (pion sends close_notify if the handshake finished) and
// forgets it. Safe to call more than once and from any goroutine.
func (sess *session) end() {
	sess.endOnce.Do(func() {
		s := sess.srv
		sess.verified()
		s.mu.Lock()
		if s.sessions[sess.index] == sess {
			delete(s.sessions, sess.index)
		}
		if s.byAddr[sess.addr] == sess {
			delete(s.byAddr, sess.addr)
			// A replacement that never completed gives the address back.
			if old := sess.replaces; old != nil && s.sessions[old.index] == old && old.addr == sess.addr {
				s.byAddr[sess.addr] = old
			}
		}
		sess.replaces = nil
		if sess.cid != nil && s.byCID[string(sess.cid)] == sess {
			delete(s.byCID, string(sess.cid))
		}
		n := len(s.sessions)
		s.mu.Unlock()
		s.cfg.Hooks.SessionsActive(n)
		sess.writeMu.Lock()
		sess.conn.Close()
		sess.writeMu.Unlock()
		sess.pc.Close()
	})
}

// verified takes the association out of the half-open count (once).
func (sess *session) verified() {
	if sess.halfOpen.CompareAndSwap(true, false) {
		sess.srv.unverified.Add(-1)
	}
}

// handleLogin answers a login from the cache or queues the password check. The login's
// user must be the PSK identity the association was opened with.
func (sess *session) handleLogin(m *link.Message, now time.Time) {
	s := sess.srv
	from := sess.peer()
	sess.loginMu.Lock()
	if sess.loginID == m.ID && (sess.loginPending || sess.loginAnswer) {
		pending, status, role := sess.loginPending, sess.loginStatus, sess.loginRole
		sess.loginMu.Unlock()
		if !pending { // a retransmission: answer again without checking again
			sess.send(link.AppendLoginResult(nil, m.ID, status, role), link.KindLoginResult)
		}
		return
	}
	sess.loginMu.Unlock()
	user := string(m.User)
	if user != sess.identity {
		sess.loginMu.Lock()
		sess.user, sess.role = "", link.RoleNone // fail closed
		sess.loginMu.Unlock()
		s.cfg.Hooks.Login(link.LoginKeyNotAuthorised)
		s.warn.Warn("login refused: user differs from the PSK identity", "user", user, "identity", sess.identity, "from", from)
		sess.send(link.AppendLoginResult(nil, m.ID, link.LoginKeyNotAuthorised, link.RoleNone), link.KindLoginResult)
		return
	}
	if !s.loginBySource.Allow(from.Addr(), now) || !s.loginByUser.Allow(user, now) {
		s.cfg.Hooks.Login(link.LoginRateLimited)
		s.warn.Warn("login rate limit", "user", user, "from", from)
		sess.send(link.AppendLoginResult(nil, m.ID, link.LoginRateLimited, link.RoleNone), link.KindLoginResult)
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
		sess.loginMu.Lock()
		sess.loginPending = false
		sess.loginMu.Unlock()
		s.cfg.Hooks.Login(link.LoginBusy)
		sess.send(link.AppendLoginResult(nil, m.ID, link.LoginBusy, link.RoleNone), link.KindLoginResult)
	}
}

// loginWorker checks passwords; only LoginWorkers of them run, so argon2's memory is bounded.
func (s *Server) loginWorker(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case job := <-s.logins:
			role, status := s.cfg.Passwords.CheckPassword(job.user, job.password)
			crypto.Wipe(job.password)
			if status != link.LoginOK {
				role = link.RoleNone
			}
			sess := job.sess
			sess.loginMu.Lock()
			if sess.loginID == job.id {
				sess.loginPending, sess.loginAnswer, sess.loginStatus, sess.loginRole = false, true, status, role
				sess.user, sess.role = "", link.RoleNone // a failed login ends an earlier one
				if status == link.LoginOK {
					sess.user, sess.role = job.user, role
				}
			}
			sess.loginMu.Unlock()
			s.cfg.Hooks.Login(status)
			level := slog.LevelInfo
			if status != link.LoginOK {
				level = slog.LevelWarn
			}
			s.cfg.Logger.Log(ctx, level, "login", "transport", "dtls", "user", job.user, "role", role.String(),
				"from", job.from, "session", sess.index, "result", status.String())
			sess.send(link.AppendLoginResult(nil, job.id, status, role), link.KindLoginResult)
		}
	}
}

// handleCommand checks the role, de-duplicates by command id per user and queues new
// commands.
func (sess *session) handleCommand(m *link.Message, now time.Time) {
	s := sess.srv
	user, role := sess.login()
	if role != link.RolePilot {
		status := link.AckNotPermitted
		if role == link.RoleNone {
			status = link.AckNotLoggedIn
		}
		s.cfg.Hooks.Command(status)
		s.warn.Warn("command refused", "user", user, "id", m.ID, "result", status.String(), "from", sess.peer())
		sess.send(link.AppendAck(nil, m.ID, status, nil), link.KindAck)
		return
	}
	cache := s.dedupFor(user)
	state, status, payload := cache.Begin(m.ID, now)
	switch state {
	case dedup.Done: // executed before: acknowledge again, never execute again
		sess.send(link.AppendAck(nil, m.ID, link.AckStatus(status), payload), link.KindAck)
		return
	case dedup.Running:
		return
	case dedup.Full:
		s.cfg.Hooks.Command(link.AckBusy)
		s.warn.Warn("command de-duplication table full", "user", user)
		sess.send(link.AppendAck(nil, m.ID, link.AckBusy, nil), link.KindAck)
		return
	}
	job := commandJob{sess: sess, cache: cache, cmd: link.Command{
		ID: m.ID, User: user, Role: role, From: sess.peer(), Payload: append([]byte(nil), m.Payload...),
	}}
	select {
	case s.commands <- job:
	default:
		cache.Abort(m.ID)
		s.cfg.Hooks.Command(link.AckBusy)
		sess.send(link.AppendAck(nil, m.ID, link.AckBusy, nil), link.KindAck)
	}
}

// dedupFor returns the command-id cache of a user.
func (s *Server) dedupFor(user string) *dedup.Cache {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.dedup[user]
	if c == nil {
		c = dedup.NewCache(s.cfg.DedupCapacity, link.DedupLifetime)
		s.dedup[user] = c
	}
	return c
}

// commandExecutor runs handlers one at a time, in arrival order.
func (s *Server) commandExecutor(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case job := <-s.commands:
			status, payload := s.cfg.Handler(ctx, job.cmd)
			if len(payload) > link.MaxAckPayload {
				payload = payload[:link.MaxAckPayload]
			}
			job.cache.Finish(job.cmd.ID, uint8(status), payload)
			s.cfg.Hooks.Command(status)
			s.cfg.Logger.Info("command", "transport", "dtls", "user", job.cmd.User, "id", job.cmd.ID, "size", len(job.cmd.Payload),
				"result", status.String(), "from", job.cmd.From)
			job.sess.send(link.AppendAck(nil, job.cmd.ID, status, payload), link.KindAck)
		}
	}
}

// Broadcast sends a telemetry payload to every logged-in operator and returns how many it
// went to. Safe for concurrent use.
func (s *Server) Broadcast(payload []byte) (int, error) {
	if len(payload) > link.MaxTelemetryPayload {
		return 0, link.ErrTooLarge
	}
	plain := link.AppendTelemetry(make([]byte, 0, len(payload)+link.TelemetryHeaderSize), payload)
	sent := 0
	for _, sess := range s.snapshot() {
		if _, role := sess.login(); role == link.RoleNone {
			continue
		}
		if sess.send(plain, link.KindTelemetry) {
			sent++
		}
	}
	return sent, nil
}

// snapshot lists the live sessions.
func (s *Server) snapshot() []*session {
	s.mu.RLock()
	defer s.mu.RUnlock()
	list := make([]*session, 0, len(s.sessions))
	for _, sess := range s.sessions {
		list = append(list, sess)
	}
	return list
}

// Sessions lists the live sessions (associations still handshaking have no user).
// OperatorKey is always zero: DTLS-PSK has no operator key.
func (s *Server) Sessions() []link.SessionInfo {
	list := s.snapshot()
	infos := make([]link.SessionInfo, 0, len(list))
	for _, sess := range list {
		user, role := sess.login()
		infos = append(infos, link.SessionInfo{LocalIndex: sess.index, User: user, Role: role, Peer: sess.peer(), Created: sess.created})
	}
	return infos
}

// Revoke ends every session for which revoked returns true, telling its operator why. The
// daemon calls it after reloading the user database.
func (s *Server) Revoke(revoked func(link.SessionInfo) bool) int {
	n := 0
	for _, sess := range s.snapshot() {
		user, role := sess.login()
		if !revoked(link.SessionInfo{LocalIndex: sess.index, User: user, Role: role, Peer: sess.peer(), Created: sess.created}) {
			continue
		}
		sess.send(link.AppendClose(nil, link.CloseRevoked), link.KindClose)
		sess.end()
		s.cfg.Logger.Warn("session revoked", "transport", "dtls", "session", sess.index, "user", user)
		n++
	}
	return n
}

// closeAll ends every session with reason.
func (s *Server) closeAll(reason link.CloseReason) {
	msg := link.AppendClose(nil, reason)
	for _, sess := range s.snapshot() {
		sess.send(msg, link.KindClose)
		sess.end()
	}
}

// timerLoop closes idle sessions, tracks link state and sends keepalives.
func (s *Server) timerLoop(ctx context.Context) {
	t := time.NewTicker(timerTick)
	defer t.Stop()
	keepalive := link.AppendKeepalive(nil)
	lost := time.Duration(link.LinkLostKeepalives) * s.cfg.KeepaliveInterval
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := time.Now()
		for _, sess := range s.snapshot() {
			if !sess.established.Load() {
				if sess.halfOpen.Load() && now.Sub(sess.created) >= min(halfOpenTimeout, s.cfg.HandshakeTimeout) {
					sess.end() // never returned the cookie: a spoofed or vanished peer
				}
				continue
			}
			silent := now.Sub(time.Unix(0, sess.lastRecv.Load()))
			switch {
			case silent >= s.cfg.SessionIdleTimeout:
				s.cfg.Logger.Debug("session removed", "session", sess.index, "user", sess.loggedInUser(), "reason", "idle")
				sess.end()
				continue
			case silent >= lost && sess.linkUp.Swap(false):
				s.cfg.Hooks.LinkState(false)
				s.cfg.Logger.Warn("link lost", "session", sess.index, "user", sess.loggedInUser(), "silent", silent.Round(time.Second))
			}
			if now.Sub(time.Unix(0, sess.lastSend.Load())) >= s.cfg.KeepaliveInterval {
				sess.send(keepalive, link.KindKeepalive)
			}
		}
		s.handshakeLimit.Sweep(now)
		s.loginBySource.Sweep(now)
		s.loginByUser.Sweep(now)
		s.mu.RLock()
		for _, c := range s.dedup {
			c.Expire(now)
		}
		s.mu.RUnlock()
	}
}

// kindOf maps a message type to its packet kind.
func kindOf(t byte) link.PacketKind {
	if t >= link.MsgLogin && t <= link.MsgClose {
		return link.KindLogin + link.PacketKind(t-link.MsgLogin)
	}
	return link.KindData
}

// randomIndex draws a session index.
func randomIndex() uint16 {
	var b [2]byte
	_, _ = rand.Read(b[:])
	return binary.BigEndian.Uint16(b[:])
}

// warnLimiter logs a warning at most once per interval per message, with a count of how
// many were suppressed, so attack traffic cannot flood the logs.
type warnLimiter struct {
	logger   *slog.Logger
	interval time.Duration
	mu       sync.Mutex
	last     map[string]time.Time
	dropped  map[string]int
}

func newWarnLimiter(logger *slog.Logger, interval time.Duration) *warnLimiter {
	return &warnLimiter{logger: logger, interval: interval, last: map[string]time.Time{}, dropped: map[string]int{}}
}

// Warn logs msg with args unless msg was logged less than interval ago.
func (w *warnLimiter) Warn(msg string, args ...any) {
	now := time.Now()
	w.mu.Lock()
	if now.Sub(w.last[msg]) < w.interval {
		w.dropped[msg]++
		w.mu.Unlock()
		return
	}
	suppressed := w.dropped[msg]
	w.last[msg], w.dropped[msg] = now, 0
	w.mu.Unlock()
	if suppressed > 0 {
		args = append(args, "suppressed", suppressed)
	}
	w.logger.Warn(msg, args...)
}
