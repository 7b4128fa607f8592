package dtlslink

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/pion/dtls/v3"

	"github.com/dronelink/dronelink/pkg/crypto"
	"github.com/dronelink/dronelink/pkg/link"
)

// ErrHandshakeRefused: the drone answered the DTLS handshake with a fatal alert (for example
// a PSK identity that is not a valid user name). A wrong PSK is not refused: pion/dtls
// drops the peer's Finished without an alert, so it shows as no answer.
var ErrHandshakeRefused = errors.New("drone refused the DTLS handshake")

// clientTick is how often the client looks at its timers.
const clientTick = 50 * time.Millisecond

// redialTimeout bounds one attempt to set up a new association after the link was lost.
const redialTimeout = 10 * time.Second

// pendingCommand is a command awaiting its acknowledgement.
type pendingCommand struct {
	id       uint64
	payload  []byte
	first    time.Time
	next     time.Time
	attempts int
	done     chan link.Ack
}

// Client is an operator's DTLS endpoint: it sets up a DTLS 1.2 PSK association with the
// drone, logs in, sends commands until acknowledged and receives telemetry. When the link
// is lost it sets up a new association and logs in again. Its methods are those of
// *link.Client that the command-line tool uses. Safe for concurrent use.
type Client struct {
	cfg    ClientConfig
	psk    crypto.PSK
	ctx    context.Context // ends at Close
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu          sync.Mutex
	conn        *dtls.Conn
	pc          *clientConn
	fatal       error
	fatalCh     chan struct{}
	role        link.Role
	loggedIn    bool // the current association is logged in
	loginID     uint64
	loginWanted bool
	loginNext   time.Time
	loginTries  int
	loginStatus chan link.LoginStatus
	loginLast   link.LoginStatus
	pending     map[uint64]*pendingCommand
	lastRecv    time.Time
	lastSend    time.Time
	linkUp      bool
	redialing   bool
	closed      bool
}

// Dial sets up a DTLS association with the drone and logs in, retransmitting over a lossy
// link until ctx ends. It fails fast on a final refusal (wrong password, unknown user, a
// handshake alert).
func Dial(ctx context.Context, cfg ClientConfig) (*Client, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	runCtx, cancel := context.WithCancel(context.Background())
	c := &Client{
		cfg:         cfg,
		psk:         cfg.PSK,
		ctx:         runCtx,
		cancel:      cancel,
		fatalCh:     make(chan struct{}),
		loginStatus: make(chan link.LoginStatus, 1),
		pending:     make(map[uint64]*pendingCommand),
	}
	conn, pc, err := c.connect(ctx)
	if err != nil {
		cancel()
		c.wipe()
		return nil, err
	}
	c.install(conn, pc)
	c.wg.Go(c.timerLoop)
	if err := c.waitLogin(ctx); err != nil {
		c.shutdown(false)
		return nil, err
	}
	return c, nil
}

// connect opens a socket and completes a DTLS handshake on it.
func (c *Client) connect(ctx context.Context) (*dtls.Conn, *clientConn, error) {
	local := &net.UDPAddr{IP: net.IPv4zero}
	if !c.cfg.Drone.Addr().Is4() {
		local = &net.UDPAddr{IP: net.IPv6zero}
	}
	udp, err := net.ListenUDP("udp", local)
	if err != nil {
		return nil, nil, fmt.Errorf("cannot open a UDP socket: %w", err)
	}
	pc := newClientConn(udp, c.cfg.Drone, c.cfg.Hooks, func(attempt int) {
		c.event(link.Event{Kind: link.EventHandshakeSent, Attempt: attempt})
	})
	conn, err := dtls.ClientWithOptions(pc, net.UDPAddrFromAddrPort(c.cfg.Drone),
		dtls.WithPSK(func([]byte) ([]byte, error) { return c.psk[:], nil }),
		dtls.WithPSKIdentityHint([]byte(c.cfg.User)),
		dtls.WithCipherSuites(c.cfg.CipherSuites...),
		dtls.WithExtendedMasterSecret(dtls.RequestExtendedMasterSecret),
		dtls.WithFlightInterval(c.cfg.FlightInterval),
		dtls.WithDisableRetransmitBackoff(!c.cfg.RetransmitBackoff),
		dtls.WithReplayProtectionWindow(c.cfg.ReplayWindow),
		// The client sends the drone's connection ID but needs none itself.
		dtls.WithConnectionIDGenerator(dtls.OnlySendCIDGenerator()),
		dtls.WithLoggerFactory(pionLogger{c.cfg.Logger}),
		dtls.WithMTU(link.MaxDatagramSize),
	)
	if err != nil {
		udp.Close()
		return nil, nil, err
	}
	if err := conn.HandshakeContext(ctx); err != nil {
		conn.Close()
		var alert interface{ IsFatalOrCloseNotify() bool }
		switch {
		case errors.As(err, &alert):
			c.cfg.Hooks.Handshake(link.HandshakeRefused)
			err = fmt.Errorf("%w: %v", ErrHandshakeRefused, err)
			c.event(link.Event{Kind: link.EventRefused, Err: err})
			return nil, nil, err
		case ctx.Err() != nil:
			return nil, nil, fmt.Errorf("no answer from the drone at %s (wrong address or PSK, or drone down): %w", c.cfg.Drone, ctx.Err())
		}
		return nil, nil, fmt.Errorf("DTLS handshake with the drone at %s: %w", c.cfg.Drone, err)
	}
	state, _ := conn.ConnectionState()
	c.cfg.Hooks.Handshake(link.HandshakeOK)
	c.cfg.Logger.Info("handshake", "transport", "dtls", "drone", c.cfg.Drone, "suite", dtls.CipherSuiteName(state.CipherSuiteID))
	c.event(link.Event{Kind: link.EventEstablished})
	return conn, pc, nil
}

// install makes a fresh association the current one, logs in on it and starts its reader.
func (c *Client) install(conn *dtls.Conn, pc *clientConn) {
	c.mu.Lock()
	if c.closed || c.fatal != nil {
		c.mu.Unlock()
		conn.Close()
		return
	}
	old := c.conn
	c.conn, c.pc = conn, pc
	now := time.Now()
	c.lastRecv, c.lastSend = now, now
	c.loggedIn = false
	c.loginWanted, c.loginID, c.loginTries = true, randomID(), 0
	c.setLinkLocked(true)
	c.sendLoginLocked(now)
	c.mu.Unlock()
	if old != nil {
		old.Close()
	}
	c.wg.Go(func() { c.readLoop(conn) })
}

// waitLogin waits for the first login answer.
func (c *Client) waitLogin(ctx context.Context) error {
	select {
	case status := <-c.loginStatus:
		if status == link.LoginOK {
			return nil
		}
		return &link.LoginError{Status: status}
	case <-c.fatalCh:
		return c.Err()
	case <-ctx.Done():
		return c.noAnswer(ctx.Err())
	}
}

// noAnswer explains a timeout.
func (c *Client) noAnswer(cause error) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.role == link.RoleNone && c.loginLast != link.LoginOK:
		return fmt.Errorf("%w (still refused when time ran out)", &link.LoginError{Status: c.loginLast})
	case c.role == link.RoleNone:
		return fmt.Errorf("no answer to the login: %w", cause)
	}
	return fmt.Errorf("no acknowledgement from the drone: %w", cause)
}

// Role is the role the drone granted at login.
func (c *Client) Role() link.Role {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.role
}

// Done is closed when the session ends for good (the drone closed it or refused the
// login, or Close was called); Err then says why.
func (c *Client) Done() <-chan struct{} { return c.fatalCh }

// Err is why the client stopped, or nil while it runs.
func (c *Client) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.fatal
}

// failLocked records a final error and wakes every waiter.
func (c *Client) failLocked(err error) {
	if c.fatal == nil {
		c.fatal = err
		close(c.fatalCh)
	}
}

// Command sends payload as one command and waits for its acknowledgement, retransmitting
// with backoff until then or until ctx ends (at most link.MaxCommandLifetime). The drone
// executes it at most once however often it is retransmitted.
func (c *Client) Command(ctx context.Context, payload []byte) (link.Ack, error) {
	if len(payload) > link.MaxCommandPayload {
		return link.Ack{}, link.ErrTooLarge
	}
	ctx, cancel := context.WithTimeout(ctx, link.MaxCommandLifetime)
	defer cancel()
	now := time.Now()
	p := &pendingCommand{id: randomID(), payload: append([]byte(nil), payload...), first: now, done: make(chan link.Ack, 1)}
	c.mu.Lock()
	if c.fatal != nil || c.closed {
		err := c.fatal
		c.mu.Unlock()
		if err == nil {
			err = link.ErrClosed
		}
		return link.Ack{}, err
	}
	c.pending[p.id] = p
	c.transmitLocked(p, now)
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.pending, p.id)
		c.mu.Unlock()
	}()
	select {
	case ack := <-p.done:
		return ack, nil
	case <-c.fatalCh:
		return link.Ack{}, c.Err()
	case <-ctx.Done():
		return link.Ack{}, c.noAnswer(ctx.Err())
	}
}

// transmitLocked sends a pending command if the association is logged in and schedules
// its retry.
func (c *Client) transmitLocked(p *pendingCommand, now time.Time) {
	p.next = now.Add(link.RetryDelay(p.attempts, link.RequestRetryInitial, link.RequestRetryMax))
	if c.conn == nil || !c.loggedIn {
		return
	}
	p.attempts++
	if p.attempts > 1 {
		c.event(link.Event{Kind: link.EventCommandRetry, Attempt: p.attempts})
	}
	c.sendLocked(link.AppendCommand(nil, p.id, p.payload), link.KindCommand, now)
}

func (c *Client) sendLoginLocked(now time.Time) {
	c.loginTries++
	c.loginNext = now.Add(link.RetryDelay(c.loginTries-1, link.RequestRetryInitial, link.RequestRetryMax))
	c.sendLocked(link.AppendLogin(nil, c.loginID, c.cfg.User, c.cfg.Password), link.KindLogin, now)
	c.event(link.Event{Kind: link.EventLoginSent, Attempt: c.loginTries})
}

// sendLocked writes one application message as one DTLS record on the current association.
func (c *Client) sendLocked(plain []byte, kind link.PacketKind, now time.Time) {
	if c.conn == nil {
		return
	}
	c.pc.sendKind.Store(uint32(kind))
	_, err := c.conn.Write(plain)
	c.pc.sendKind.Store(noKind)
	if err != nil {
		c.cfg.Logger.Debug("send failed", "err", err)
		return
	}
	c.lastSend = now
}

// Close tells the drone the session is over and stops the client.
func (c *Client) Close() error {
	c.shutdown(true)
	return nil
}

func (c *Client) shutdown(notify bool) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.closed = true
	if notify && c.fatal == nil {
		c.sendLocked(link.AppendClose(nil, link.CloseNormal), link.KindClose, time.Now())
	}
	var closedByDrone *link.ClosedError
	byDrone := errors.As(c.fatal, &closedByDrone)
	c.failLocked(link.ErrClosed)
	conn, pc := c.conn, c.pc
	c.mu.Unlock()
	c.cancel()
	if conn != nil {
		if byDrone {
			// The drone has forgotten the association: no close_notify to it.
			pc.UDPConn.Close()
		}
		conn.Close()
	}
	c.wg.Wait()
	c.wipe()
}

// wipe clears the secrets the client holds.
func (c *Client) wipe() {
	crypto.Wipe(c.cfg.Password)
	crypto.Wipe(c.psk[:])
}

func (c *Client) event(e link.Event) {
	if c.cfg.OnEvent != nil {
		c.cfg.OnEvent(e)
	}
}

// readLoop reads one association's messages until it ends. If it was the current one and
// the client still runs, the link counts as lost and a new association is set up.
func (c *Client) readLoop(conn *dtls.Conn) {
	buf := make([]byte, readBufferSize)
	for {
		n, err := conn.Read(buf)
		if err != nil {
			c.mu.Lock()
			if c.conn == conn && !c.closed && c.fatal == nil {
				c.cfg.Logger.Debug("association ended", "err", err)
				c.setLinkLocked(false)
				c.startRedialLocked()
			}
			c.mu.Unlock()
			return
		}
		c.handle(conn, buf[:n])
	}
}

// handle acts on one message from the drone.
func (c *Client) handle(conn *dtls.Conn, plain []byte) {
	var m link.Message
	if err := link.ParseMessage(plain, &m); err != nil {
		c.cfg.Hooks.Dropped(link.DropMalformed)
		return
	}
	c.cfg.Hooks.PacketReceived(kindOf(m.Type), 0)
	now := time.Now()
	c.mu.Lock()
	current := c.conn == conn
	if current {
		c.lastRecv = now
		c.setLinkLocked(true)
	}
	c.mu.Unlock()
	switch m.Type {
	case link.MsgTelemetry:
		if c.cfg.OnTelemetry != nil {
			c.cfg.OnTelemetry(m.Payload)
		}
	case link.MsgKeepalive:
	case link.MsgLoginResult:
		c.handleLoginResult(conn, &m)
	case link.MsgAck:
		c.handleAck(&m, now)
	case link.MsgClose:
		c.mu.Lock()
		if current {
			c.failLocked(&link.ClosedError{Reason: m.Reason})
		}
		c.mu.Unlock()
	default:
		c.cfg.Hooks.Dropped(link.DropUnexpected)
	}
}

func (c *Client) handleLoginResult(conn *dtls.Conn, m *link.Message) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.conn != conn || !c.loginWanted || m.ID != c.loginID {
		c.cfg.Hooks.Dropped(link.DropUnexpected)
		return
	}
	status := link.LoginStatus(m.Status)
	c.cfg.Hooks.Login(status)
	if status == link.LoginBusy || status == link.LoginRateLimited {
		// Not a verdict on the credentials: try again after the backoff with a new id.
		c.loginLast = status
		c.loginID = randomID()
		return
	}
	c.loginWanted = false
	if status != link.LoginOK {
		if c.role == link.RoleNone {
			select {
			case c.loginStatus <- status:
			default:
			}
		}
		c.failLocked(&link.LoginError{Status: status})
		return
	}
	c.role, c.loggedIn = link.Role(m.Role), true
	c.event(link.Event{Kind: link.EventLoggedIn})
	select {
	case c.loginStatus <- status:
	default:
	}
	now := time.Now()
	for _, p := range c.pending {
		c.transmitLocked(p, now)
	}
}

func (c *Client) handleAck(m *link.Message, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	p := c.pending[m.ID]
	if p == nil {
		return // a duplicate ack of a finished command
	}
	status := link.AckStatus(m.Status)
	switch status {
	case link.AckBusy:
		return // retransmit later
	case link.AckNotLoggedIn:
		if !c.loginWanted {
			c.loggedIn = false
			c.loginWanted, c.loginID, c.loginTries = true, randomID(), 0
			c.sendLoginLocked(now)
		}
		return
	}
	delete(c.pending, m.ID)
	rtt := now.Sub(p.first)
	c.cfg.Hooks.Command(status)
	c.cfg.Hooks.CommandRoundTrip(rtt)
	p.done <- link.Ack{ID: m.ID, Status: status, Payload: append([]byte(nil), m.Payload...), RoundTrip: rtt, Attempts: p.attempts}
}

func (c *Client) setLinkLocked(up bool) {
	if c.linkUp == up {
		return
	}
	c.linkUp = up
	c.cfg.Hooks.LinkState(up)
	if up {
		c.cfg.Logger.Info("link restored")
		c.event(link.Event{Kind: link.EventLinkRestored})
	} else {
		c.cfg.Logger.Warn("link lost")
		c.event(link.Event{Kind: link.EventLinkLost})
	}
}

// timerLoop retransmits logins and commands, sends keepalives and notices a lost link.
func (c *Client) timerLoop() {
	t := time.NewTicker(clientTick)
	defer t.Stop()
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-t.C:
		}
		c.tick(time.Now())
	}
}

func (c *Client) tick(now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed || c.fatal != nil || c.conn == nil {
		return
	}
	if c.loginWanted && !now.Before(c.loginNext) {
		c.sendLoginLocked(now)
	}
	for _, p := range c.pending {
		if !now.Before(p.next) {
			c.transmitLocked(p, now)
		}
	}
	if now.Sub(c.lastRecv) >= link.LinkLostKeepalives*c.cfg.KeepaliveInterval {
		c.setLinkLocked(false)
		c.startRedialLocked()
	}
	if now.Sub(c.lastSend) >= c.cfg.KeepaliveInterval {
		c.sendLocked(link.AppendKeepalive(nil), link.KindKeepalive, now)
	}
}

// startRedialLocked sets up a new association in the background, once at a time: the drone
// may have forgotten the old one (restart, idle timeout). The old one keeps working until
// the new one is ready.
func (c *Client) startRedialLocked() {
	if c.redialing || c.closed {
		return
	}
	c.redialing = true
	c.wg.Go(func() {
		defer func() {
			c.mu.Lock()
			c.redialing = false
			c.mu.Unlock()
		}()
		for attempt := 0; c.ctx.Err() == nil && c.Err() == nil; attempt++ {
			ctx, cancel := context.WithTimeout(c.ctx, redialTimeout)
			conn, pc, err := c.connect(ctx)
			cancel()
			if err == nil {
				c.install(conn, pc)
				return
			}
			c.cfg.Logger.Debug("new association failed", "err", err)
			select {
			case <-c.ctx.Done():
			case <-time.After(link.RetryDelay(attempt, link.HandshakeRetryInitial, link.HandshakeRetryMax)):
			}
		}
	})
}

// randomID returns a random nonzero 64-bit id.
func randomID() uint64 {
	var b [8]byte
	for {
		_, _ = rand.Read(b[:])
		if id := binary.BigEndian.Uint64(b[:]); id != 0 {
			return id
		}
	}
}
