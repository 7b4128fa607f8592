package dtlslink

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/dtls/v3"

	"github.com/dronelink/dronelink/internal/ratelog"
	"github.com/dronelink/dronelink/pkg/app"
	"github.com/dronelink/dronelink/pkg/link"
	"github.com/dronelink/dronelink/pkg/ratelimit"
)

// errBadIdentity refuses a PSK identity that is not a user name.
var errBadIdentity = errors.New("PSK identity is not a valid user name")

// timerTick is how often the server looks at its associations' timers.
const timerTick = 200 * time.Millisecond

// halfOpenTimeout: an association whose peer has not returned the HelloVerifyRequest
// cookie by then is dropped. A real peer answers within a round trip; on a lossy link it
// retransmits its ClientHello (same random, so the same association) for a few seconds.
const halfOpenTimeout = 5 * time.Second

// Server is the drone's DTLS endpoint: the DTLS 1.2 PSK channel (one association per
// operator session) under the application layer (app.Server: logins, commands at most
// once, acknowledgements, telemetry, revocation), whose methods it has.
type Server struct {
	*app.Server
	up   app.ServerUpcalls
	cfg  ServerConfig
	sock net.PacketConn

	handshakeLimit *ratelimit.Limiter[netip.Addr]
	warn           *ratelog.Limiter

	ctx context.Context // Run's context, for handshakes
	wg  sync.WaitGroup  // association goroutines

	mu          sync.RWMutex
	sessions    map[uint16]*session
	byAddr      map[netip.AddrPort]*session
	byCID       map[string]*session
	established int                // associations past their handshake
	handshaking map[netip.Addr]int // associations still handshaking, per source address
	closing     bool
}

// session is one DTLS association and, once its handshake is done, its application state.
type session struct {
	srv     *Server
	index   uint16
	pc      *peerConn
	conn    *dtls.Conn
	random  [randomSize]byte
	created time.Time
	source  netip.Addr // the address the ClientHello came from

	// halfOpen: the peer has not yet proved its address by returning the cookie (pion
	// then sends a ServerHello).
	halfOpen atomic.Bool
	// Guarded by srv.mu: done is set when the handshake completed (the association moved
	// from handshaking to established); replaces is the live association from the same
	// address that this one takes over once its handshake completes.
	done     bool
	replaces *session
	app      *app.Session // set once, before done
	identity string       // PSK identity, set once established
	suite    string
	addr     netip.AddrPort // guarded by srv.mu
	cid      []byte         // guarded by srv.mu
	lastRecv atomic.Int64   // unix nanoseconds
	writeMu  sync.Mutex
	endOnce  sync.Once
}

// NewServer checks the config, opens the socket if it was given as an address and builds
// a server; Run starts it.
func NewServer(cfg ServerConfig) (*Server, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	hs, ok := ratelimit.New[netip.Addr](ratelimit.Config{Rate: cfg.HandshakeRate, Burst: cfg.HandshakeBurst})
	if !ok {
		return nil, errors.New("dtlslink: invalid rate limit")
	}
	s := &Server{
		cfg:            cfg,
		handshakeLimit: hs,
		warn:           ratelog.New(cfg.Logger, 10*time.Second),
		sessions:       make(map[uint16]*session),
		byAddr:         make(map[netip.AddrPort]*session),
		byCID:          make(map[string]*session),
		handshaking:    make(map[netip.Addr]int),
	}
	s.Server, s.up, err = app.NewServer(app.ServerConfig{
		Channel: s, Auth: identityAuth{cfg.Passwords}, Handler: cfg.Handler, Logger: cfg.Logger.With("transport", "dtls"),
		Hooks: cfg.Hooks, DedupLifetime: link.DedupLifetime, DedupCapacity: cfg.DedupCapacity, LoginWorkers: cfg.LoginWorkers,
		LoginRate: cfg.LoginRate, LoginBurst: cfg.LoginBurst, KeepaliveInterval: cfg.KeepaliveInterval,
		OnFrames: cfg.OnFrames, MaxFrameAge: cfg.MaxFrameAge,
	})
	if err != nil {
		return nil, err
	}
	s.sock = cfg.Conn
	if s.sock == nil {
		addr, err := net.ResolveUDPAddr("udp", cfg.Listen)
		if err != nil {
			return nil, err
		}
		if s.sock, err = net.ListenUDP("udp", addr); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// identityAuth adapts the user database to the application layer: a DTLS session's
// identity is its PSK identity, and it may log in only as the user of that name.
type identityAuth struct{ p PasswordChecker }

func (a identityAuth) Authorize(user string, id app.Identity) (link.Role, link.LoginStatus) {
	if user != id.Name {
		return link.RoleNone, link.LoginKeyNotAuthorised
	}
	return a.p.UserRole(user)
}

func (a identityAuth) Login(user string, password []byte, id app.Identity) (link.Role, link.LoginStatus) {
	if user != id.Name {
		return link.RoleNone, link.LoginKeyNotAuthorised
	}
	return a.p.CheckPassword(user, password)
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
	s.up.Start(ctx)
	var wg sync.WaitGroup
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
	s.up.Shutdown(link.CloseShutdown)
	for _, sess := range s.snapshot() { // associations still handshaking
		sess.end()
	}
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
//
// Associations still handshaking are kept apart from established ones: they never count
// against MaxSessions, and at most MaxHandshakes of them exist, at most
// MaxHandshakesPerSource from one source address. When a new one needs room, one is
// evicted (evictionLocked): half-open ones first, then from the busiest source. Peers
// without the PSK, which can never finish a handshake, therefore cannot keep an operator
// out of the session table, and once past the cookie an operator's single handshake from
// its own address is evicted only after every half-open one and every one of a busier
// address.
func (s *Server) open(pkt []byte, from netip.AddrPort, random [randomSize]byte, replaces *session) {
	now := time.Now()
	if !s.handshakeLimit.Allow(from.Addr(), now) {
		s.cfg.Hooks.Dropped(link.DropRateLimited)
		s.warn.Warn("handshake rate limit", "from", from)
		return
	}
	sess := &session{srv: s, random: random, created: now, addr: from, source: from.Addr()}
	sess.pc = newPeerConn(s, sess)
	s.mu.Lock()
	if s.closing || s.established >= s.cfg.MaxSessions {
		closing := s.closing
		s.mu.Unlock()
		if !closing {
			s.cfg.Hooks.Dropped(link.DropSessionLimit)
			s.warn.Warn("session limit reached", "from", from)
		}
		return
	}
	var evict *session
	if s.handshaking[sess.source] >= s.cfg.MaxHandshakesPerSource {
		evict = s.evictionLocked(sess.source, true)
	} else if s.handshakingLocked() >= s.cfg.MaxHandshakes {
		evict = s.evictionLocked(sess.source, false)
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
	s.handshaking[sess.source]++
	sess.halfOpen.Store(true)
	s.mu.Unlock()
	if evict != nil {
		s.cfg.Hooks.Dropped(link.DropSessionLimit)
		s.warn.Warn("handshaking association evicted", "from", evict.peer())
		evict.end()
	}
	sess.pc.deliver(pkt, from)
	s.wg.Go(sess.run)
}

// handshakingLocked counts the associations still handshaking.
func (s *Server) handshakingLocked() int { return len(s.sessions) - s.established }

// evictionLocked picks the handshaking association to end for a new one, from the new
// one's source address if ownSource (that address is at its limit) or else from all. A
// half-open association goes first (its ClientHello may come from a spoofed address and
// costs nothing to send), then one past the cookie (a real address); within each, one of
// the source address holding the most, and of those the oldest. So spoofed ClientHellos,
// however many addresses they claim, evict only each other while any of them is there, and
// peers that returned the cookie from a few addresses evict their own first.
func (s *Server) evictionLocked(src netip.Addr, ownSource bool) *session {
	var victim *session
	for _, o := range s.sessions {
		if o.done || (ownSource && o.source != src) {
			continue
		}
		if victim == nil || s.evictsBeforeLocked(o, victim) {
			victim = o
		}
	}
	return victim
}

// evictsBeforeLocked orders handshaking associations for eviction (see evictionLocked).
func (s *Server) evictsBeforeLocked(a, b *session) bool {
	if ah, bh := a.halfOpen.Load(), b.halfOpen.Load(); ah != bh {
		return ah
	}
	if na, nb := s.handshaking[a.source], s.handshaking[b.source]; na != nb {
		return na > nb
	}
	return a.created.Before(b.created)
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
// checks the user, and its limits are per identity and source address (app.Identity).
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
	now := time.Now()
	sess.lastRecv.Store(now.UnixNano())
	sess.verified()
	if !sess.establish(now) {
		return
	}
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
		now := time.Now()
		sess.lastRecv.Store(now.UnixNano())
		sess.followRoaming()
		s.up.Receive(sess.app, buf[:n], now)
	}
}

// establish moves a handshaken association into the session table, if it has room, with
// its application state.
func (sess *session) establish(now time.Time) bool {
	s := sess.srv
	s.mu.Lock()
	if s.sessions[sess.index] != sess || s.closing || s.established >= s.cfg.MaxSessions {
		full := s.sessions[sess.index] == sess && !s.closing
		s.mu.Unlock()
		if full {
			// The peer completed the handshake (it holds the PSK): its refusal is part of
			// the audit trail, logged every time.
			s.cfg.Hooks.Dropped(link.DropSessionLimit)
			s.cfg.Logger.Warn("handshake refused", "transport", "dtls", "reason", link.DropSessionLimit.String(),
				"identity", sess.identity, "from", sess.peer(), "session", sess.index)
		}
		return false
	}
	// The session's epoch is the first ClientHello's arrival: after the operator began
	// the handshake, before it can have finished it and started stamping (app.ClientChannel).
	sess.app = s.up.NewSession(sess, app.Identity{Name: sess.identity, Source: limitSource(sess.source)}, sess.index, sess.created, nil)
	sess.app.SetReady(true)
	sess.done = true
	s.established++
	s.releaseHandshakeLocked(sess.source)
	n := s.established
	s.mu.Unlock()
	s.cfg.Hooks.SessionsActive(n)
	return true
}

// limitSource is the address login limits are kept for: an IPv4 address, or the /64 of an
// IPv6 address (one host usually holds a whole /64, so its addresses share one bucket).
func limitSource(a netip.Addr) netip.Addr {
	if a.Is4() || a.Is4In6() {
		return a.Unmap()
	}
	p, err := a.Prefix(64)
	if err != nil {
		return a
	}
	return p.Addr()
}

// releaseHandshakeLocked takes one association of src out of the handshaking count.
func (s *Server) releaseHandshakeLocked(src netip.Addr) {
	if s.handshaking[src]--; s.handshaking[src] <= 0 {
		delete(s.handshaking, src)
	}
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
	user, _ := sess.app.Login()
	s.cfg.Logger.Info("operator roamed", "session", sess.index, "user", user, "to", now)
}

func (sess *session) peer() netip.AddrPort {
	sess.srv.mu.RLock()
	defer sess.srv.mu.RUnlock()
	return sess.addr
}

// Addr implements app.Peer.
func (sess *session) Addr() netip.AddrPort { return sess.peer() }

// Remove implements app.Peer: the association ends at once.
func (sess *session) Remove() { sess.end() }

// PeerClosed implements app.Peer: the operator's close message came; its close_notify
// follows. The session is gone for the application layer at once, and the association
// ends when that close_notify is read (rather than it arriving for no association), or a
// second later if it was lost.
func (sess *session) PeerClosed() {
	sess.app.SetReady(false)
	sess.app.Gone()
	sess.conn.SetReadDeadline(time.Now().Add(time.Second))
}

// Send implements app.Peer: one application message as one DTLS record.
func (sess *session) Send(plain []byte, kind link.PacketKind) bool {
	sess.writeMu.Lock()
	defer sess.writeMu.Unlock()
	sess.pc.sendKind.Store(uint32(kind))
	_, err := sess.conn.Write(plain)
	sess.pc.sendKind.Store(noKind)
	return err == nil
}

// end closes the association (pion sends close_notify if the handshake finished) and
// forgets it. Safe to call more than once and from any goroutine.
func (sess *session) end() {
	sess.endOnce.Do(func() {
		s := sess.srv
		s.mu.Lock()
		if s.sessions[sess.index] == sess {
			delete(s.sessions, sess.index)
			if sess.done {
				s.established--
			} else {
				s.releaseHandshakeLocked(sess.source)
			}
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
		n, app := s.established, sess.app
		s.mu.Unlock()
		if app != nil {
			app.Gone()
		}
		s.cfg.Hooks.SessionsActive(n)
		sess.writeMu.Lock()
		sess.conn.Close()
		sess.writeMu.Unlock()
		sess.pc.Close()
	})
}

// verified notes that the peer returned the cookie (once).
func (sess *session) verified() { sess.halfOpen.Store(false) }

// AppendSessions implements app.ServerChannel: the established associations.
func (s *Server) AppendSessions(dst []*app.Session) []*app.Session {
	s.mu.RLock()
	defer s.mu.RUnlock()
	for _, sess := range s.sessions {
		if sess.done {
			dst = append(dst, sess.app)
		}
	}
	return dst
}

// snapshot lists every association, handshaking or established.
func (s *Server) snapshot() []*session {
	s.mu.RLock()
	defer s.mu.RUnlock()
	list := make([]*session, 0, len(s.sessions))
	for _, sess := range s.sessions {
		list = append(list, sess)
	}
	return list
}

// timerLoop ends associations whose peer never returned the cookie, and established ones
// silent for SessionIdleTimeout.
func (s *Server) timerLoop(ctx context.Context) {
	t := time.NewTicker(timerTick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := time.Now()
		for _, sess := range s.snapshot() {
			s.mu.RLock()
			done := sess.done
			s.mu.RUnlock()
			switch {
			case !done && sess.halfOpen.Load() && now.Sub(sess.created) >= min(halfOpenTimeout, s.cfg.HandshakeTimeout):
				sess.end() // never returned the cookie: a spoofed or vanished peer
			case done && now.Sub(time.Unix(0, sess.lastRecv.Load())) >= s.cfg.SessionIdleTimeout:
				user, _ := sess.app.Login()
				s.cfg.Logger.Debug("session removed", "session", sess.index, "user", user, "reason", "idle")
				sess.end()
			}
		}
		s.handshakeLimit.Sweep(now)
	}
}

// randomIndex draws a session index.
func randomIndex() uint16 {
	var b [2]byte
	_, _ = rand.Read(b[:])
	return binary.BigEndian.Uint16(b[:])
}
