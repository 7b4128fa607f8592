package link

import (
	"context"
	"crypto/rsa"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"sync"
	"time"

	"github.com/dronelink/dronelink/pkg/crypto"
	"github.com/dronelink/dronelink/pkg/replay"
)

// EventKind names a client progress event.
type EventKind int

// Client events, for progress display and logs.
const (
	EventHandshakeSent EventKind = iota // an initiation went out (Attempt counts from 1)
	EventEstablished                    // a session was agreed
	EventLoginSent                      // a login went out (Attempt counts from 1)
	EventLoggedIn                       // the drone accepted the login
	EventCommandRetry                   // a command was retransmitted (Attempt counts from 2)
	EventLinkLost                       // nothing heard from the drone for LinkLostAfter
	EventLinkRestored                   // the drone is heard again
	EventRefused                        // the drone refused an initiation (Err says why)
)

// Event is one client progress event.
type Event struct {
	Kind    EventKind
	Attempt int
	Err     error
}

// ClientConfig configures an operator endpoint. Zero fields take the documented defaults.
type ClientConfig struct {
	// Conn is the socket; required. Close closes it.
	Conn PacketConn
	// Drone is the drone's address; required.
	Drone netip.AddrPort
	// PSK is the fleet pre-shared key.
	PSK crypto.PSK
	// OperatorKey is this operator's RSA key; required.
	OperatorKey *rsa.PrivateKey
	// DronePublic is the pinned drone key; required. Answers are accepted only from it.
	DronePublic *rsa.PublicKey
	// User and Password log in inside the session. Password is copied and kept in memory
	// for re-logins after the drone loses the session.
	User     string
	Password []byte
	// Logger; if nil, logs are discarded.
	Logger *slog.Logger
	// Hooks; if nil, NopHooks.
	Hooks Hooks
	// Now is the clock; if nil, time.Now.
	Now func() time.Time
	// Rand; if nil, crypto/rand.
	Rand io.Reader
	// ReplayWindow; if zero, the replay package default.
	ReplayWindow int
	// RekeyAfterTime; if zero, RekeyAfterTime. Must be below RejectAfterTime.
	RekeyAfterTime time.Duration
	// KeepaliveInterval; if zero, KeepaliveInterval. The link counts as lost (and a new
	// handshake starts) after LinkLostKeepalives intervals of silence from the drone.
	KeepaliveInterval time.Duration
	// OnTelemetry receives each telemetry payload, on the reader goroutine; the slice is
	// valid only during the call. If nil, telemetry is dropped.
	OnTelemetry func(payload []byte)
	// OnEvent receives progress events, on internal goroutines, while the client's lock is
	// held: it must not block and must not call the Client's methods.
	OnEvent func(Event)
}

func (c ClientConfig) withDefaults() (ClientConfig, error) {
	if c.Conn == nil || c.OperatorKey == nil || c.DronePublic == nil || !c.Drone.IsValid() {
		return c, errors.New("link: client config needs Conn, Drone, OperatorKey and DronePublic")
	}
	if len(c.User) == 0 || len(c.User) > MaxUserNameSize || len(c.Password) > MaxPasswordSize {
		return c, fmt.Errorf("link: user name must be 1 to %d bytes and password at most %d", MaxUserNameSize, MaxPasswordSize)
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
	if c.RekeyAfterTime == 0 {
		c.RekeyAfterTime = RekeyAfterTime
	}
	if c.KeepaliveInterval == 0 {
		c.KeepaliveInterval = KeepaliveInterval
	}
	if c.RekeyAfterTime < 0 || c.RekeyAfterTime >= RejectAfterTime || c.KeepaliveInterval < 0 ||
		c.ReplayWindow < 0 || c.ReplayWindow > replay.MaxWindowSize {
		return c, errors.New("link: client timers out of range")
	}
	c.Password = append([]byte(nil), c.Password...)
	return c, nil
}

// LoginError is a refused login.
type LoginError struct{ Status LoginStatus }

// Error says what the drone said.
func (e *LoginError) Error() string {
	switch e.Status {
	case LoginUnknownUser:
		return "login refused: unknown user"
	case LoginWrongPassword:
		return "login refused: wrong password"
	case LoginKeyNotAuthorised:
		return "login refused: this key is not authorised for the user"
	case LoginRateLimited:
		return "login refused: too many attempts, try again later"
	case LoginBusy:
		return "login refused: the drone is busy, try again"
	}
	return "login refused: the drone could not check the password"
}

// ClosedError is a session ended by the drone.
type ClosedError struct{ Reason CloseReason }

// Error says why.
func (e *ClosedError) Error() string {
	switch e.Reason {
	case CloseRevoked:
		return "session ended by the drone: user or key revoked"
	case CloseShutdown:
		return "session ended by the drone: shutting down"
	}
	return "session ended by the drone"
}

// Ack is the drone's answer to a command.
type Ack struct {
	ID        uint64
	Status    AckStatus
	Payload   []byte
	RoundTrip time.Duration // from the first transmission to the ack
	Attempts  int           // transmissions
}

type pendingCommand struct {
	id       uint64
	payload  []byte
	first    time.Time
	next     time.Time
	attempts int
	done     chan Ack
}

// Client is an operator's endpoint: it keeps a session with one drone (handshake, rekey,
// re-handshake when the link comes back), logs in, sends commands until acknowledged and
// receives telemetry. Safe for concurrent use.
type Client struct {
	cfg    ClientConfig
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu          sync.Mutex
	current     *Session
	previous    *Session
	previousEnd time.Time
	hs          *Initiator
	hsNext      time.Time
	hsErr       error // the last refusal, for the final error message
	established chan struct{}
	estClosed   bool
	fatal       error // a final refusal or close: every waiter fails with it
	fatalCh     chan struct{}
	role        Role
	loggedIn    chan struct{}
	loginID     uint64
	loginNext   time.Time
	loginTries  int
	loginWanted bool
	loginStatus chan LoginStatus
	loginLast   LoginStatus // the last retryable refusal, for the timeout message
	pending     map[uint64]*pendingCommand
	linkUp      bool
	closed      bool
}

// Dial sets up a session with the drone and logs in, retransmitting over a lossy link until
// ctx ends. It fails fast on a final refusal (wrong drone key, unknown operator key, wrong
// password, ...).
func Dial(ctx context.Context, cfg ClientConfig) (*Client, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	runCtx, cancel := context.WithCancel(context.Background())
	c := &Client{
		cfg:         cfg,
		cancel:      cancel,
		established: make(chan struct{}),
		fatalCh:     make(chan struct{}),
		loggedIn:    make(chan struct{}),
		loginStatus: make(chan LoginStatus, 1),
		pending:     make(map[uint64]*pendingCommand),
		linkUp:      true,
	}
	c.mu.Lock()
	err = c.startHandshakeLocked(0, cfg.Now())
	c.mu.Unlock()
	if err != nil {
		cancel()
		return nil, err
	}
	c.wg.Go(c.readLoop)
	c.wg.Go(func() { c.timerLoop(runCtx) })

	if err := c.waitLogin(ctx); err != nil {
		c.shutdown(false)
		return nil, err
	}
	return c, nil
}

// waitLogin waits for the first login answer.
func (c *Client) waitLogin(ctx context.Context) error {
	for {
		select {
		case status := <-c.loginStatus:
			if status == LoginOK {
				return nil
			}
			return &LoginError{Status: status}
		case <-c.fatalCh:
			return c.fatalErr()
		case <-ctx.Done():
			return c.noAnswer(ctx.Err())
		}
	}
}

// noAnswer explains a timeout: the last refusal if there was one, else plain silence.
func (c *Client) noAnswer(cause error) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.hsErr != nil && c.current == nil:
		return fmt.Errorf("no session with the drone: %w", c.hsErr)
	case c.current == nil:
		return fmt.Errorf("no answer from the drone at %s (wrong address or PSK, or drone down): %w", c.cfg.Drone, cause)
	case c.role == RoleNone && c.loginLast != LoginOK:
		return fmt.Errorf("%w (still refused when time ran out)", &LoginError{Status: c.loginLast})
	case c.role == RoleNone:
		return fmt.Errorf("no answer to the login: %w", cause)
	}
	return fmt.Errorf("no acknowledgement from the drone: %w", cause)
}

func (c *Client) fatalErr() error {
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

// Role is the role the drone granted at login.
func (c *Client) Role() Role {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.role
}

// Done is closed when the session ends for good (the drone closed it or refused us); Err
// then says why.
func (c *Client) Done() <-chan struct{} { return c.fatalCh }

// Err is why the client stopped, or nil while it runs.
func (c *Client) Err() error { return c.fatalErr() }

// Command sends payload as one command and waits for its acknowledgement, retransmitting
// with backoff until then or until ctx ends (at most MaxCommandLifetime). The drone
// executes it at most once however often it is retransmitted.
func (c *Client) Command(ctx context.Context, payload []byte) (Ack, error) {
	if len(payload) > MaxCommandPayload {
		return Ack{}, ErrTooLarge
	}
	ctx, cancel := context.WithTimeout(ctx, MaxCommandLifetime)
	defer cancel()
	now := c.cfg.Now()
	p := &pendingCommand{id: randomID(c.cfg.Rand), payload: append([]byte(nil), payload...), first: now, done: make(chan Ack, 1)}
	c.mu.Lock()
	if c.fatal != nil || c.closed {
		c.mu.Unlock()
		return Ack{}, c.closedErr()
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
		return Ack{}, c.fatalErr()
	case <-ctx.Done():
		return Ack{}, c.noAnswer(ctx.Err())
	}
}

func (c *Client) closedErr() error {
	if c.fatal != nil {
		return c.fatal
	}
	return ErrClosed
}

// transmitLocked sends a pending command if a session is up and schedules its retry.
func (c *Client) transmitLocked(p *pendingCommand, now time.Time) {
	p.next = now.Add(RetryDelay(p.attempts, RequestRetryInitial, RequestRetryMax))
	if c.current == nil || c.role == RoleNone {
		return
	}
	p.attempts++
	if p.attempts > 1 {
		c.event(Event{Kind: EventCommandRetry, Attempt: p.attempts})
	}
	c.sendLocked(c.current, AppendCommand(nil, p.id, p.payload), KindCommand, now)
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
	if notify && c.current != nil && c.fatal == nil {
		c.sendLocked(c.current, AppendClose(nil, CloseNormal), KindClose, c.cfg.Now())
	}
	c.failLocked(ErrClosed)
	c.mu.Unlock()
	c.cancel()
	c.cfg.Conn.Close()
	c.wg.Wait()
	crypto.Wipe(c.cfg.Password)
}

func (c *Client) event(e Event) {
	if c.cfg.OnEvent != nil {
		c.cfg.OnEvent(e)
	}
}

// startHandshakeLocked begins a handshake that (if replaces is nonzero) rekeys the
// drone's session replaces.
func (c *Client) startHandshakeLocked(replaces uint16, now time.Time) error {
	local := uint16(0)
	for local == 0 || (c.current != nil && local == c.current.local) || (c.previous != nil && local == c.previous.local) {
		local = uint16(rand.Uint32())
	}
	cfg := InitiatorConfig{PSK: c.cfg.PSK, OperatorKey: c.cfg.OperatorKey, DronePublic: c.cfg.DronePublic, Rand: c.cfg.Rand}
	if replaces != 0 && c.current != nil && c.current.remote == replaces {
		cfg.ResumeKey = c.current.resume[:]
	}
	hs, err := NewInitiator(cfg, local, replaces)
	if err != nil {
		return err
	}
	c.hs = hs
	return c.sendInitiationLocked(now)
}

func (c *Client) sendInitiationLocked(now time.Time) error {
	pkt, err := c.hs.Initiation(now)
	if err != nil {
		return err
	}
	c.hsNext = now.Add(RetryDelay(c.hs.Attempts()-1, HandshakeRetryInitial, HandshakeRetryMax))
	c.write(pkt, KindInitiation)
	c.event(Event{Kind: EventHandshakeSent, Attempt: c.hs.Attempts()})
	return nil
}

func (c *Client) write(pkt []byte, kind PacketKind) {
	if err := c.cfg.Conn.WriteTo(pkt, c.cfg.Drone); err != nil {
		c.cfg.Logger.Debug("send failed", "err", err)
		return
	}
	c.cfg.Hooks.PacketSent(kind, len(pkt))
}

func (c *Client) sendLocked(s *Session, plaintext []byte, kind PacketKind, now time.Time) {
	if s.expired(now) {
		return // the drone would drop it; a new session is being agreed
	}
	pkt, err := s.Seal(make([]byte, 0, MaxDatagramSize), plaintext, now)
	if err != nil {
		return
	}
	c.write(pkt, kind)
}

// readLoop reads the socket until it is closed.
func (c *Client) readLoop() {
	err := readDatagrams(c.cfg.Conn, c.cfg.Now, func(pkt []byte, _ netip.AddrPort, now time.Time) {
		c.handleDatagram(pkt, now)
	})
	if err != nil {
		c.cfg.Logger.Warn("read failed", "err", err)
	}
}

// handleDatagram dispatches one received datagram; now is when its batch was read.
func (c *Client) handleDatagram(pkt []byte, now time.Time) {
	n := len(pkt)
	typ, ok := PeekType(pkt)
	if !ok || n > MaxDatagramSize {
		c.cfg.Hooks.PacketReceived(KindData, n)
		c.cfg.Hooks.Dropped(DropMalformed)
		return
	}
	switch typ {
	case TypeData:
		c.cfg.Hooks.PacketReceived(KindData, n)
		c.handleData(pkt, now)
	case TypeResponse:
		c.cfg.Hooks.PacketReceived(KindResponse, n)
		c.handleResponse(pkt)
	case TypeError:
		c.cfg.Hooks.PacketReceived(KindError, n)
		c.handleError(pkt)
	default:
		c.cfg.Hooks.PacketReceived(KindData, n)
		c.cfg.Hooks.Dropped(DropUnexpected)
	}
}

func (c *Client) handleResponse(pkt []byte) {
	now := c.cfg.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.hs == nil {
		c.cfg.Hooks.Dropped(DropUnknownSession)
		return
	}
	keys, r, err := c.hs.ConsumeResponse(pkt)
	if err != nil {
		c.cfg.Hooks.Dropped(dropReasonFor(err))
		return
	}
	sess, err := NewSession(&keys, c.hs.local, r.Sender, c.cfg.ReplayWindow, now)
	keys.wipe()
	if err != nil {
		c.cfg.Logger.Error("session setup failed", "err", err)
		return
	}
	c.hs = nil
	c.hsErr = nil
	if c.current != nil {
		c.previous, c.previousEnd = c.current, now.Add(PreviousSessionGrace)
		c.cfg.Hooks.Rekeyed()
	}
	c.current = sess
	c.cfg.Hooks.Handshake(HandshakeOK)
	c.event(Event{Kind: EventEstablished})
	c.setLinkLocked(true)
	if !c.estClosed {
		c.estClosed = true
		close(c.established)
	}
	// Confirm the keys to the drone at once, then log in unless the login carried over.
	c.sendLocked(sess, AppendKeepalive(nil), KindKeepalive, now)
	if r.Flags&FlagLoginCarried == 0 || c.role == RoleNone {
		c.loginWanted = true
		c.loginID, c.loginTries = randomID(c.cfg.Rand), 0
		c.sendLoginLocked(now)
	}
	for _, p := range c.pending {
		c.transmitLocked(p, now)
	}
}

func (c *Client) sendLoginLocked(now time.Time) {
	c.loginTries++
	c.loginNext = now.Add(RetryDelay(c.loginTries-1, RequestRetryInitial, RequestRetryMax))
	c.sendLocked(c.current, AppendLogin(nil, c.loginID, c.cfg.User, c.cfg.Password), KindLogin, now)
	c.event(Event{Kind: EventLoginSent, Attempt: c.loginTries})
}

func (c *Client) handleError(pkt []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.hs == nil {
		c.cfg.Hooks.Dropped(DropUnknownSession)
		return
	}
	code, err := c.hs.ConsumeError(pkt)
	if err != nil {
		c.cfg.Hooks.Dropped(dropReasonFor(err))
		return
	}
	c.cfg.Hooks.Handshake(HandshakeRefused)
	c.hsErr = code.Err()
	c.event(Event{Kind: EventRefused, Err: c.hsErr})
	if c.hs.State() == StateFailed {
		c.hs = nil
		c.failLocked(fmt.Errorf("drone refused the session: %w", code.Err()))
	}
}

// sessionFor returns the session a data datagram is addressed to.
func (c *Client) sessionFor(idx uint16) *Session {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.current != nil && c.current.local == idx:
		return c.current
	case c.previous != nil && c.previous.local == idx:
		return c.previous
	}
	return nil
}

func (c *Client) handleData(pkt []byte, now time.Time) {
	h, err := ParseDataHeader(pkt)
	if err != nil {
		c.cfg.Hooks.Dropped(DropMalformed)
		return
	}
	s := c.sessionFor(h.Receiver)
	if s == nil {
		c.cfg.Hooks.Dropped(DropUnknownSession)
		return
	}
	if s.expired(now) {
		c.cfg.Hooks.Dropped(DropExpired)
		return
	}
	plain, err := s.Open(pkt[DataHeaderSize:DataHeaderSize], pkt, h, now)
	if err != nil {
		c.cfg.Hooks.Dropped(dropReasonFor(err))
		return
	}
	var m Message
	if err := ParseMessage(plain, &m); err != nil {
		c.cfg.Hooks.Dropped(DropMalformed)
		return
	}
	c.cfg.Hooks.PacketReceived(kindOfMessage(m.Type), 0)
	c.mu.Lock()
	c.setLinkLocked(true)
	c.mu.Unlock()
	switch m.Type {
	case MsgTelemetry:
		if c.cfg.OnTelemetry != nil {
			c.cfg.OnTelemetry(m.Payload)
		}
	case MsgKeepalive:
	case MsgLoginResult:
		c.handleLoginResult(&m)
	case MsgAck:
		c.handleAck(&m, now)
	case MsgClose:
		c.mu.Lock()
		c.failLocked(&ClosedError{Reason: m.Reason})
		c.mu.Unlock()
	default:
		c.cfg.Hooks.Dropped(DropUnexpected)
	}
}

func (c *Client) handleLoginResult(m *Message) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.loginWanted || m.ID != c.loginID {
		c.cfg.Hooks.Dropped(DropUnexpected)
		return
	}
	status := LoginStatus(m.Status)
	c.cfg.Hooks.Login(status)
	if status == LoginBusy || status == LoginRateLimited {
		// Not a verdict on the credentials: try again after the backoff (a new id, so the
		// drone checks again).
		c.loginLast = status
		c.loginID = randomID(c.cfg.Rand)
		return
	}
	c.loginWanted = false
	if status != LoginOK {
		if c.role == RoleNone {
			select {
			case c.loginStatus <- status:
			default:
			}
		}
		c.failLocked(&LoginError{Status: status})
		return
	}
	c.role = m.Role
	c.event(Event{Kind: EventLoggedIn})
	select {
	case c.loginStatus <- status:
	default:
	}
	now := c.cfg.Now()
	for _, p := range c.pending {
		c.transmitLocked(p, now)
	}
}

func (c *Client) handleAck(m *Message, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	p := c.pending[m.ID]
	if p == nil {
		return // a duplicate ack of a finished command
	}
	status := AckStatus(m.Status)
	switch status {
	case AckBusy:
		return // retransmit later
	case AckNotLoggedIn:
		// The drone lost our login (it restarted): log in again, then retransmit.
		if !c.loginWanted {
			c.loginWanted = true
			c.loginID, c.loginTries = randomID(c.cfg.Rand), 0
			c.sendLoginLocked(now)
		}
		return
	}
	delete(c.pending, m.ID)
	rtt := now.Sub(p.first)
	c.cfg.Hooks.Command(status)
	c.cfg.Hooks.CommandRoundTrip(rtt)
	p.done <- Ack{ID: m.ID, Status: status, Payload: append([]byte(nil), m.Payload...), RoundTrip: rtt, Attempts: p.attempts}
}

func (c *Client) setLinkLocked(up bool) {
	if c.linkUp == up {
		return
	}
	c.linkUp = up
	c.cfg.Hooks.LinkState(up)
	if up {
		c.cfg.Logger.Info("link restored")
		c.event(Event{Kind: EventLinkRestored})
	} else {
		c.cfg.Logger.Warn("link lost")
		c.event(Event{Kind: EventLinkLost})
	}
}

// timerLoop retransmits initiations, logins and commands, sends keepalives, rekeys and
// re-handshakes when the link is lost.
func (c *Client) timerLoop(ctx context.Context) {
	t := time.NewTicker(timerTick / 2)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		c.tick(c.cfg.Now())
	}
}

func (c *Client) tick(now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed || c.fatal != nil {
		return
	}
	if c.hs != nil && !now.Before(c.hsNext) {
		if err := c.sendInitiationLocked(now); err != nil {
			c.cfg.Logger.Warn("initiation failed", "err", err)
		}
	}
	if c.previous != nil && now.After(c.previousEnd) {
		c.previous = nil
	}
	cur := c.current
	if cur == nil {
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
	if cur.sinceRecv(now) >= LinkLostKeepalives*c.cfg.KeepaliveInterval {
		c.setLinkLocked(false)
	}
	if c.hs == nil {
		switch {
		case cur.expired(now) || cur.needsRekeyAfter(now, c.cfg.RekeyAfterTime):
			c.startHandshakeLocked(cur.remote, now)
		case !c.linkUp:
			// The drone may have lost the session: agree a new one (it carries the login
			// over if the drone still has the old one).
			c.startHandshakeLocked(cur.remote, now)
		}
	}
	if cur.sinceSend(now) >= c.cfg.KeepaliveInterval && !cur.expired(now) {
		c.sendLocked(cur, AppendKeepalive(nil), KindKeepalive, now)
	}
}
