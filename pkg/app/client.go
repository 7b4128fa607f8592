package app

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	mathrand "math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dronelink/dronelink/pkg/crypto"
)

// EventKind names a client progress event.
type EventKind int

// Client events, for progress display and logs.
const (
	EventHandshakeSent EventKind = iota // a round of initiations went out (Attempt counts rounds from 1)
	EventEstablished                    // a session was agreed
	EventLoginSent                      // a login went out (Attempt counts from 1)
	EventLoggedIn                       // the drone accepted the login
	EventCommandRetry                   // a command was retransmitted (Attempt counts from 2)
	EventLinkLost                       // nothing heard from the drone for the link-lost time
	EventLinkRestored                   // the drone is heard again
	EventRefused                        // the drone refused a handshake (Err says why)
)

// Event is one client progress event.
type Event struct {
	Kind    EventKind
	Attempt int
	Err     error
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
	Attempts  int           // transmissions: the first and each retransmission
	Datagrams int           // datagrams sent: the copies of every transmission
}

// RetryDelay is the capped exponential backoff with jitter: initial doubled attempt times,
// at most maxDelay, plus up to a quarter more at random so that many operators do not
// retransmit in step.
func RetryDelay(attempt int, initial, maxDelay time.Duration) time.Duration {
	d := initial
	for i := 0; i < attempt && d < maxDelay; i++ {
		d *= 2
	}
	d = min(d, maxDelay)
	return d + time.Duration(mathrand.Int64N(int64(d)/4+1))
}

// ClientChannel is the operator's secure channel as the application layer sees it. The
// channel keeps one current session with the drone (and sets up a new one when asked);
// the client calls it with its own lock held, so the channel must not call back into the
// client from these methods.
type ClientChannel interface {
	// Send seals msg on the current session and sends it; false if there is none that can
	// send. A frames message gets the session's time stamped in first (StampFrames, with
	// the time since the session's send epoch: the moment this side learned the session was
	// agreed), so that the stamp always belongs to the session the message goes out on.
	//
	// A command gets its issue time stamped in the same way (StampCommand with issued minus
	// the session's send epoch): issued is the instant the command was issued, on the
	// clock the client and the channel share (zero for every other message). Use Stamp.
	Send(msg []byte, kind PacketKind, issued time.Time) bool
	// Reconnect asks for a new session: the link is lost, and the drone may have forgotten
	// the current one. It is called on every timer tick while the link stays lost, so it
	// must do nothing while a new session is already being set up.
	Reconnect()
	// NoSession explains, when no session has been agreed yet, why (the last refusal, or
	// silence: cause); it returns nil once there is a session.
	NoSession(cause error) error
	// Shutdown stops the channel: it stops its goroutines, closes its socket and wipes its
	// keys. droneGone says the drone already ended the session (no goodbye is owed).
	Shutdown(droneGone bool)
}

// DownlinkCounter is implemented by client channels that can tell how many of the drone's
// datagrams never arrived (the native channel sees the gaps in their counters). The client
// adds the counts to its loss estimate. It is called with the client's lock held, like the
// ClientChannel methods.
type DownlinkCounter interface {
	// Downlink returns how many of the drone's datagrams arrived and how many are missing
	// so far, over every session. Missing may go down: a datagram counted missing that
	// arrived late.
	Downlink() (received, missing uint64)
}

// ClientConfig configures an operator's application layer.
type ClientConfig struct {
	// Channel is the secure channel; required.
	Channel ClientChannel
	// User and Password log in inside each session. Password is copied and kept in memory
	// for logins on later sessions; Close wipes it.
	User     string
	Password []byte
	// Logger; if nil, logs are discarded.
	Logger *slog.Logger
	// Hooks; if nil, NopHooks.
	Hooks Hooks
	// Now is the clock; if nil, time.Now.
	Now func() time.Time
	// Rand draws login and command ids; if nil, crypto/rand.
	Rand io.Reader
	// KeepaliveInterval; if zero, KeepaliveInterval. After LinkLostKeepalives intervals of
	// silence from the drone the link counts as lost and the channel is asked to reconnect.
	KeepaliveInterval time.Duration
	// OnTelemetry receives each telemetry payload, on the channel's reader goroutine; the
	// slice is valid only during the call. If nil, telemetry is dropped.
	OnTelemetry func(payload []byte)
	// OnEvent receives progress events, on internal goroutines, while the client's lock is
	// held: it must not block and must not call the client's methods.
	OnEvent func(Event)
	// OnFrames receives tunnelled frames from the drone, judged fresh, on the channel's
	// reader goroutine; the slice is valid only during the call. If nil, frames are dropped.
	OnFrames func(frames []byte)
	// MaxFrameAge: frames judged older than this on arrival are dropped (DropLate). If
	// zero, DefaultMaxFrameAge.
	MaxFrameAge time.Duration
	// SurviveShutdown: when the drone says it is shutting down, treat the link as lost and
	// keep trying to set up a new session (a daemon restart), instead of ending for good.
	// For long-running operators such as the MAVLink tunnel.
	SurviveShutdown bool
	// FixedTimers turns the adaptive retransmission off: logins and commands are
	// retransmitted on the fixed backoff (RequestRetryInitial doubling to RequestRetryMax),
	// one copy at a time, whatever the round trip and the loss; no estimate is published.
	// The behaviour before round-trip estimation, kept as the benchmarks' baseline.
	FixedTimers bool
}

func (c ClientConfig) withDefaults() (ClientConfig, error) {
	if c.Channel == nil {
		return c, errors.New("app: client config needs Channel")
	}
	if len(c.User) == 0 || len(c.User) > MaxUserNameSize || len(c.Password) > MaxPasswordSize {
		return c, fmt.Errorf("user name must be 1 to %d bytes and password at most %d", MaxUserNameSize, MaxPasswordSize)
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
		c.Rand = rand.Reader
	}
	if c.KeepaliveInterval == 0 {
		c.KeepaliveInterval = KeepaliveInterval
	}
	if c.MaxFrameAge == 0 {
		c.MaxFrameAge = DefaultMaxFrameAge
	}
	if c.KeepaliveInterval < 0 || c.MaxFrameAge < 0 {
		return c, errors.New("app: negative keepalive interval or frame age")
	}
	c.Password = append([]byte(nil), c.Password...)
	return c, nil
}

type pendingCommand struct {
	id        uint64
	header    CommandHeader
	payload   []byte
	first     time.Time     // issued
	lifetime  time.Duration // from first until the caller is told it failed
	next      time.Time
	attempts  int       // transmissions
	datagrams int       // copies sent, over every transmission
	sent      time.Time // the last transmission
	round     round     // the last transmission's outcome, for the loss estimate
	sampled   bool      // its round trip was sampled (Karn: only an answer to the first transmission)
	done      chan Ack
	abort     chan error // the command cannot be acknowledged any more
}

// round is one transmission of a command awaiting its outcome: answered before the next
// transmission or not. Only command rounds feed the loss estimate: a login's answer waits
// for a password check, so its timer often fires before an answer that is on its way.
type round struct {
	copies   int  // 0: no round open
	answered bool // an answer arrived for it
}

// CommandOptions change how one command is ordered.
type CommandOptions struct {
	// Independent: the command is not ordered against this operator's other commands. By
	// default a command is ordered: the drone refuses it (AckSuperseded) once a command
	// issued after it has been executed, so a copy an attacker held back cannot run after
	// the commands that followed it. Mark commands independent when several are in flight
	// at once and each must run whatever the order of arrival.
	Independent bool
}

// ErrOutcomeUnknown: the drone shut down (restarted) while a command awaited its
// acknowledgement. The command may or may not have run; it is not retransmitted to the
// restarted drone, which would not know it had (its de-duplication memory is gone).
var ErrOutcomeUnknown = errors.New("the drone shut down before acknowledging: the command may or may not have been executed")

// Client is an operator's application layer: it logs in on each session the channel
// agrees, sends commands until acknowledged, hands telemetry over, notices a lost link and
// asks the channel for a new session. Safe for concurrent use.
type Client struct {
	cfg    ClientConfig
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu          sync.Mutex
	session     bool // the channel has agreed a session (it keeps one from now on)
	loggedIn    bool // the current session is logged in
	role        Role // the role the drone granted at the last login
	fatal       error
	fatalCh     chan struct{}
	loginID     uint64
	loginNext   time.Time
	loginTries  int
	loginWanted bool
	loginStatus chan LoginStatus
	loginLast   LoginStatus // the last retryable refusal, for the timeout message
	loginDone   uint64      // the id of the last login answered, whose copies are ignored
	frameBuf    []byte      // SendFrames' message, reused under mu
	cmdBuf      []byte      // a command's message, reused under mu
	lastSeq     uint64      // the sequence number of the last command issued
	pending     map[uint64]*pendingCommand
	lastRecv    time.Time
	lastSend    time.Time
	linkUp      bool
	closed      bool

	// The link estimate (estimate.go), under mu; est publishes it for Estimate, which
	// the channel reads with its own lock held (and so must not take mu).
	rtt        rttEstimator
	loss       lossEstimator
	unanswered time.Time // the first request sent since the drone was last heard; zero: none
	downRecv   uint64    // the channel's downlink counts at the last look
	downMiss   uint64
	downAt     time.Time // when the channel's counts were last looked at
	est        publishedEstimate
	wake       chan struct{} // the timer loop re-reads the earliest retransmission
}

// publishedEstimate is the link estimate in atomics, for Estimate.
type publishedEstimate struct {
	srtt, rttvar, rto atomic.Int64
	loss              atomic.Uint64 // float64 bits
	copies            atomic.Int32
	silent            atomic.Bool
}

// ClientUpcalls is how a secure channel drives its Client; kept apart from Client so that
// an embedder holding the Client cannot inject messages.
type ClientUpcalls struct{ c *Client }

// NewClient checks the config and builds the application layer of an operator endpoint.
func NewClient(cfg ClientConfig) (*Client, ClientUpcalls, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, ClientUpcalls{}, err
	}
	c := &Client{
		cfg:         cfg,
		cancel:      func() {},
		fatalCh:     make(chan struct{}),
		loginStatus: make(chan LoginStatus, 1),
		pending:     make(map[uint64]*pendingCommand),
		linkUp:      true,
		loss:        newLossEstimator(),
		wake:        make(chan struct{}, 1),
	}
	c.storeEstimateLocked(time.Time{}) // the prior; the hooks hear of the first measurement
	return c, ClientUpcalls{c}, nil
}

// Start runs the client's timers (login and command retransmission, keepalives, link-lost
// detection) until Close.
func (u ClientUpcalls) Start() {
	c := u.c
	ctx, cancel := context.WithCancel(context.Background())
	c.cancel = cancel
	c.wg.Go(func() { c.timerLoop(ctx) })
}

// WaitLogin waits for the answer to the first login: nil when logged in, else why not
// (a refusal, a final error of the channel, or ctx's end explained).
func (u ClientUpcalls) WaitLogin(ctx context.Context) error {
	c := u.c
	select {
	case status := <-c.loginStatus:
		if status == LoginOK {
			return nil
		}
		return &LoginError{Status: status}
	case <-c.fatalCh:
		return c.Err()
	case <-ctx.Done():
		return c.noAnswer(ctx.Err())
	}
}

// Abort stops the client without telling the drone: a Dial that failed.
func (u ClientUpcalls) Abort() { u.c.shutdown(false) }

// Established tells the client that the channel agreed a new current session at now.
// loginCarried says the drone carried the previous session's login over (a native rekey);
// otherwise the client logs in on it.
func (u ClientUpcalls) Established(loginCarried bool, now time.Time) {
	c := u.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed || c.fatal != nil {
		return
	}
	c.session = true
	c.lastRecv, c.lastSend = now, now
	c.heardLocked(now)
	c.setLinkLocked(true)
	if !loginCarried || !c.loggedIn {
		c.loggedIn = false
		c.startLoginLocked(now)
	}
	for _, p := range c.pending {
		c.transmitLocked(p, now)
	}
}

// RoundTripSample gives the client a round trip the channel measured without ambiguity,
// such as its handshake's (from sending the initiation the drone answered to the response;
// it includes the drone's handshake work). It feeds the round-trip estimate that times the
// retransmission of logins and commands.
func (u ClientUpcalls) RoundTripSample(d time.Duration) {
	c := u.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cfg.FixedTimers {
		return
	}
	c.rtt.sample(d)
	c.publishLocked(c.cfg.Now())
}

// Fail ends the client for good with err (a final refusal by the drone): every waiter
// returns it.
func (u ClientUpcalls) Fail(err error) {
	c := u.c
	c.mu.Lock()
	c.failLocked(err)
	c.mu.Unlock()
}

// Receive acts on one opened application message from the drone; now is when it arrived
// and sessionTime how long before that the session it arrived on began by this side's
// receive epoch (a moment before the drone's epoch: when this side sent what the drone
// answered), against which frames are judged. The message may be decrypted in place in
// the channel's read buffer: it is not kept.
func (u ClientUpcalls) Receive(plain []byte, now time.Time, sessionTime time.Duration) {
	c := u.c
	var m Message
	if err := ParseMessage(plain, &m); err != nil {
		c.cfg.Hooks.Dropped(DropMalformed)
		return
	}
	c.cfg.Hooks.PacketReceived(KindOfMessage(m.Type), 0)
	c.mu.Lock()
	c.lastRecv = now
	c.heardLocked(now)
	c.setLinkLocked(true)
	c.mu.Unlock()
	switch m.Type {
	case MsgTelemetry:
		if c.cfg.OnTelemetry != nil {
			c.cfg.OnTelemetry(m.Payload)
		}
	case MsgKeepalive:
	case MsgLoginResult:
		c.handleLoginResult(&m, now)
	case MsgAck:
		c.handleAck(&m, now)
	case MsgFrames:
		switch age := sessionTime - time.Duration(m.Stamp)*time.Millisecond; {
		case c.cfg.OnFrames == nil:
			c.cfg.Hooks.Dropped(DropUnexpected)
		case age > c.cfg.MaxFrameAge:
			c.cfg.Hooks.Dropped(DropLate)
		default:
			c.cfg.OnFrames(m.Payload)
		}
	case MsgClose:
		c.mu.Lock()
		if m.Reason == CloseShutdown && c.cfg.SurviveShutdown && !c.closed {
			for id, p := range c.pending {
				p.abort <- ErrOutcomeUnknown
				delete(c.pending, id)
			}
			c.loggedIn = false
			c.setLinkLocked(false)
			c.cfg.Channel.Reconnect()
		} else {
			c.failLocked(&ClosedError{Reason: m.Reason})
		}
		c.mu.Unlock()
	default:
		c.cfg.Hooks.Dropped(DropUnexpected)
	}
}

// ErrNotLoggedIn: frames are sent only on a logged-in session.
var ErrNotLoggedIn = errors.New("not logged in")

// SendFrames sends tunnelled frames (whole frames, at most MaxFramesPayload bytes) to the
// drone once, unacknowledged: MAVLink retries what it needs to. It fails with
// ErrNotLoggedIn while the session is not logged in (the drone would drop them).
func (c *Client) SendFrames(frames []byte) error {
	if len(frames) == 0 || len(frames) > MaxFramesPayload {
		return ErrTooLarge
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.fatal != nil || c.closed:
		if c.fatal != nil {
			return c.fatal
		}
		return ErrClosed
	case !c.session || !c.loggedIn:
		return ErrNotLoggedIn
	}
	if c.frameBuf == nil {
		c.frameBuf = make([]byte, 0, MaxPlaintextSize)
	}
	c.frameBuf = AppendFrames(c.frameBuf[:0], frames)
	c.sendLocked(c.frameBuf, KindFrames, c.cfg.Now())
	return nil
}

// noAnswer explains a timeout: the channel's reason if there is no session, else the
// last refusal or plain silence.
func (c *Client) noAnswer(cause error) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.cfg.Channel.NoSession(cause); err != nil {
		return err
	}
	switch {
	case !c.loggedIn && c.role == RoleNone && c.loginLast != LoginOK:
		return fmt.Errorf("%w (still refused when time ran out)", &LoginError{Status: c.loginLast})
	case !c.loggedIn && c.role == RoleNone:
		return fmt.Errorf("no answer to the login: %w", cause)
	}
	return fmt.Errorf("no acknowledgement from the drone: %w", cause)
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

// Done is closed when the session ends for good (the drone closed it or refused us, or
// Close was called); Err then says why.
func (c *Client) Done() <-chan struct{} { return c.fatalCh }

// Err is why the client stopped, or nil while it runs.
func (c *Client) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.fatal
}

// Command sends payload as one ordered command and waits for its acknowledgement,
// retransmitting with backoff until then or until ctx ends (at most MaxCommandLifetime).
// The drone executes it at most once however often it is retransmitted, never after that
// deadline (it carries it), never after a command issued later has been executed, and
// never if it restarted after the command was issued (docs/PROTOCOL.md section 8.2).
func (c *Client) Command(ctx context.Context, payload []byte) (Ack, error) {
	return c.CommandWith(ctx, payload, CommandOptions{})
}

// CommandWith is Command with options.
func (c *Client) CommandWith(ctx context.Context, payload []byte, opts CommandOptions) (Ack, error) {
	if len(payload) > MaxCommandPayload {
		return Ack{}, ErrTooLarge
	}
	ctx, cancel := context.WithTimeout(ctx, MaxCommandLifetime)
	defer cancel()
	deadline, _ := ctx.Deadline()
	now := c.cfg.Now()
	p := &pendingCommand{id: c.randomID(), payload: append([]byte(nil), payload...), first: now,
		lifetime: time.Until(deadline), done: make(chan Ack, 1), abort: make(chan error, 1)}
	// The lifetime the drone is told is rounded down: it must not execute the command after
	// the moment this call reports that it failed.
	p.header.Lifetime = uint32(max(p.lifetime.Milliseconds(), 0))
	if opts.Independent {
		p.header.Flags |= CommandIndependent
	}
	c.mu.Lock()
	if c.fatal != nil || c.closed {
		err := c.fatal
		c.mu.Unlock()
		if err == nil {
			err = ErrClosed
		}
		return Ack{}, err
	}
	c.lastSeq = max(c.lastSeq+1, uint64(max(now.UnixNano(), 0)))
	p.header.Seq = c.lastSeq
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
	case err := <-p.abort:
		return Ack{}, err
	case <-c.fatalCh:
		return Ack{}, c.Err()
	case <-ctx.Done():
		err := c.noAnswer(ctx.Err())
		if time.Now().Before(deadline) { // cancelled, not timed out: the drone may still run it
			err = fmt.Errorf("%w; the drone may still execute the command until %s, its deadline, unless a command issued later runs first",
				err, deadline.Format("15:04:05.000"))
		} else {
			err = fmt.Errorf("%w; the drone will not execute the command any more", err)
		}
		return Ack{}, err
	}
}

// Close tells the drone the session is over and stops the client and its channel.
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
	if notify && c.session && c.fatal == nil {
		c.sendLocked(AppendClose(nil, CloseNormal), KindClose, c.cfg.Now())
	}
	var byDrone *ClosedError
	droneGone := errors.As(c.fatal, &byDrone)
	c.failLocked(ErrClosed)
	c.mu.Unlock()
	c.cancel()
	c.cfg.Channel.Shutdown(droneGone)
	c.wg.Wait()
	crypto.Wipe(c.cfg.Password)
}

func (c *Client) event(e Event) {
	if c.cfg.OnEvent != nil {
		c.cfg.OnEvent(e)
	}
}

// randomID returns a random nonzero 64-bit id.
func (c *Client) randomID() uint64 {
	var b [8]byte
	for {
		if _, err := io.ReadFull(c.cfg.Rand, b[:]); err != nil {
			return mathrand.Uint64() | 1
		}
		if id := binary.BigEndian.Uint64(b[:]); id != 0 {
			return id
		}
	}
}

func (c *Client) sendLocked(msg []byte, kind PacketKind, now time.Time) {
	c.sendIssuedLocked(msg, kind, now, time.Time{})
}

func (c *Client) sendIssuedLocked(msg []byte, kind PacketKind, now, issued time.Time) {
	if c.cfg.Channel.Send(msg, kind, issued) {
		c.lastSend = now
	}
}

// transmitLocked sends a pending command if the session is logged in and its deadline
// has not passed, and schedules its retry: in as many copies as the loss estimate asks
// for (each asking the drone to answer twice), the retry after the retransmission timeout
// doubled per transmission (retryDelayLocked).
func (c *Client) transmitLocked(p *pendingCommand, now time.Time) {
	p.next = now.Add(c.retryDelayLocked(p.attempts, now, 0))
	c.kickLocked()
	if !c.session || !c.loggedIn || now.Sub(p.first) >= p.lifetime {
		return
	}
	c.closeRoundLocked(p, false)
	copies := c.copiesLocked(now)
	p.attempts++
	p.datagrams += copies
	p.sent, p.round = now, round{copies: copies}
	if p.attempts > 1 {
		c.event(Event{Kind: EventCommandRetry, Attempt: p.attempts})
	}
	h := p.header
	if copies > 1 {
		h.Flags |= CommandAckTwice
	}
	c.cmdBuf = AppendCommand(c.cmdBuf[:0], p.id, h, p.payload)
	c.noteRequestLocked(now)
	for range copies {
		c.sendIssuedLocked(c.cmdBuf, KindCommand, now, p.first)
	}
}

// startLoginLocked begins a login with a fresh id (so the drone checks it afresh).
func (c *Client) startLoginLocked(now time.Time) {
	c.loginWanted = true
	c.loginID, c.loginTries = c.randomID(), 0
	c.sendLoginLocked(now)
}

// sendLoginLocked sends the login, in as many copies as a command would go in (the drone
// checks the password once: it ignores a copy of the login it is checking, and answers a
// later one from its memory), and schedules its retry. The retry waits at least
// LoginRetryMin, for the password check.
func (c *Client) sendLoginLocked(now time.Time) {
	c.loginTries++
	c.loginNext = now.Add(c.retryDelayLocked(c.loginTries-1, now, LoginRetryMin))
	c.kickLocked()
	msg := AppendLogin(nil, c.loginID, c.cfg.User, c.cfg.Password)
	c.noteRequestLocked(now)
	for range c.copiesLocked(now) {
		c.sendLocked(msg, KindLogin, now)
	}
	crypto.Wipe(msg) // it holds the password; the channel has sealed it
	c.event(Event{Kind: EventLoginSent, Attempt: c.loginTries})
}

func (c *Client) handleLoginResult(m *Message, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.loginWanted || m.ID != c.loginID {
		if m.ID != c.loginDone || m.ID == 0 {
			c.cfg.Hooks.Dropped(DropUnexpected)
		} // else the second copy of an answer (the drone sends a password check's twice)
		return
	}
	c.loginDone = m.ID
	status := LoginStatus(m.Status)
	c.cfg.Hooks.Login(status)
	if status == LoginBusy || status == LoginRateLimited {
		// Not a verdict on the credentials: try again after the backoff (a new id, so the
		// drone checks again).
		c.loginLast = status
		c.loginID = c.randomID()
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
	c.role, c.loggedIn = m.Role, true
	c.event(Event{Kind: EventLoggedIn})
	select {
	case c.loginStatus <- status:
	default:
	}
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
	c.answeredLocked(p, now)
	status := AckStatus(m.Status)
	switch status {
	case AckBusy:
		return // retransmit later
	case AckNotLoggedIn:
		// The drone lost our login (the session is a new one it did not carry the login
		// over to, or the user's record changed): stop sending commands, log in again,
		// then retransmit them.
		c.loggedIn = false
		if !c.loginWanted {
			c.startLoginLocked(now)
		}
		return
	}
	delete(c.pending, m.ID)
	c.closeRoundLocked(p, true)
	rtt := now.Sub(p.first)
	c.cfg.Hooks.Command(status)
	c.cfg.Hooks.CommandRoundTrip(rtt)
	p.done <- Ack{ID: m.ID, Status: status, Payload: append([]byte(nil), m.Payload...), RoundTrip: rtt,
		Attempts: p.attempts, Datagrams: p.datagrams}
}

// answeredLocked notes that an answer to p arrived at now: its round is answered and, if
// p went out once only (Karn's algorithm: an answer to a retransmitted command could
// answer any of its transmissions), its round trip is a sample.
func (c *Client) answeredLocked(p *pendingCommand, now time.Time) {
	if p.round.copies == 0 {
		return
	}
	p.round.answered = true
	if p.attempts == 1 && !p.sampled && !c.cfg.FixedTimers {
		p.sampled = true
		c.rtt.sample(now.Sub(p.sent))
		c.publishLocked(now)
	}
}

// closeRoundLocked ends p's open round, if any, for the loss estimate: answered if an
// answer arrived for it (or answered says so).
func (c *Client) closeRoundLocked(p *pendingCommand, answered bool) {
	if p.round.copies == 0 {
		return
	}
	if !c.cfg.FixedTimers {
		c.loss.observe(p.round.copies, answered || p.round.answered)
	}
	p.round = round{}
}

// noteRequestLocked notes that a login or command went out at now: if nothing was heard
// since, the silence counts from the first such.
func (c *Client) noteRequestLocked(now time.Time) {
	if c.unanswered.IsZero() {
		c.unanswered = now
	}
}

// heardLocked notes that the drone was heard at now: the link is not silent.
func (c *Client) heardLocked(now time.Time) {
	if !c.unanswered.IsZero() {
		c.unanswered = time.Time{}
		c.publishLocked(now)
	}
}

// silentLocked reports whether requests have gone unanswered, and nothing at all was
// heard from the drone, for SilentAfter (or twice the retransmission timeout, if longer).
func (c *Client) silentLocked(now time.Time) bool {
	return !c.unanswered.IsZero() && now.Sub(c.unanswered) >= max(SilentAfter, 2*c.rtt.rto(RequestRetryMax))
}

// copiesLocked is how many copies of a login or command to send now: what the loss
// estimate asks for, one on a silent link or with fixed timers.
func (c *Client) copiesLocked(now time.Time) int {
	if c.cfg.FixedTimers || c.silentLocked(now) {
		return 1
	}
	return c.loss.copies
}

// retryDelayLocked is how long to wait after transmission number attempt+1 of a login or
// command before the next: the retransmission timeout (at least least), doubled per
// earlier transmission, at most RequestRetryMax, plus up to a quarter more at random
// (RetryDelay). Before the first round-trip sample, on a silent link and with fixed
// timers the timeout is RequestRetryInitial.
func (c *Client) retryDelayLocked(attempt int, now time.Time, least time.Duration) time.Duration {
	base := RequestRetryInitial
	if rto := c.rtt.rto(RequestRetryMax); rto > 0 && !c.cfg.FixedTimers && !c.silentLocked(now) {
		base = max(rto, least)
	}
	return RetryDelay(attempt, base, RequestRetryMax)
}

// kickLocked has the timer loop look at the retransmission times again.
func (c *Client) kickLocked() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// publishLocked publishes the estimate for Estimate and the hooks; now judges silence.
func (c *Client) publishLocked(now time.Time) {
	if !c.cfg.FixedTimers {
		c.cfg.Hooks.LinkEstimate(c.storeEstimateLocked(now))
	}
}

// storeEstimateLocked stores the estimate for Estimate and returns it.
func (c *Client) storeEstimateLocked(now time.Time) LinkEstimate {
	if c.cfg.FixedTimers {
		c.est.copies.Store(1)
		return LinkEstimate{Copies: 1}
	}
	e := LinkEstimate{SRTT: c.rtt.srtt, RTTVar: c.rtt.rttvar, RTO: c.rtt.rto(RequestRetryMax), Loss: c.loss.p,
		Copies: c.copiesLocked(now), Silent: c.silentLocked(now)}
	c.est.srtt.Store(int64(e.SRTT))
	c.est.rttvar.Store(int64(e.RTTVar))
	c.est.rto.Store(int64(e.RTO))
	c.est.loss.Store(math.Float64bits(e.Loss))
	c.est.copies.Store(int32(e.Copies))
	c.est.silent.Store(e.Silent)
	return e
}

// Estimate is the client's current view of the link: round trip, retransmission timeout,
// loss, copies per transmission and silence. It takes no lock: a channel may call it with
// its own lock held. With ClientConfig.FixedTimers it stays zero (one copy).
func (c *Client) Estimate() LinkEstimate {
	return LinkEstimate{
		SRTT: time.Duration(c.est.srtt.Load()), RTTVar: time.Duration(c.est.rttvar.Load()),
		RTO: time.Duration(c.est.rto.Load()), Loss: math.Float64frombits(c.est.loss.Load()),
		Copies: int(c.est.copies.Load()), Silent: c.est.silent.Load(),
	}
}

// countDownlinkLocked adds the channel's count of the drone's datagrams, arrived and
// missing since the last look, to the loss estimate (at most every timerTick).
func (c *Client) countDownlinkLocked(now time.Time) {
	dc, ok := c.cfg.Channel.(DownlinkCounter)
	if !ok || c.cfg.FixedTimers || now.Sub(c.downAt) < timerTick {
		return
	}
	c.downAt = now
	recv, miss := dc.Downlink()
	dr, dm := int64(recv-c.downRecv), int64(miss-c.downMiss)
	if recv < c.downRecv {
		dr = 0 // counts only grow; a channel that restarted them is read afresh
	}
	c.downRecv, c.downMiss = recv, miss
	if dr != 0 || dm != 0 {
		c.loss.observeDatagrams(int(dr), int(dm))
		c.publishLocked(now)
	}
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

// timerLoop retransmits logins and commands, sends keepalives and notices a lost link. It
// wakes every timerTick and at the earliest retransmission due, so round-trip timers of a
// few tens of milliseconds are kept to the scheduler's precision.
func (c *Client) timerLoop(ctx context.Context) {
	t := time.NewTicker(timerTick)
	defer t.Stop()
	retry := time.NewTimer(timerTick)
	defer retry.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-retry.C:
		case <-c.wake:
		}
		now := c.cfg.Now()
		wait := timerTick
		if due := c.tick(now); !due.IsZero() {
			wait = min(max(due.Sub(now), 0), timerTick)
		}
		retry.Reset(wait)
	}
}

// tick does what is due at now and returns the earliest retransmission due next (zero if
// none).
func (c *Client) tick(now time.Time) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed || c.fatal != nil || !c.session {
		return time.Time{}
	}
	var due time.Time
	earliest := func(t time.Time) {
		if due.IsZero() || t.Before(due) {
			due = t
		}
	}
	wasSilent := c.est.silent.Load()
	if c.silentLocked(now) != wasSilent {
		c.publishLocked(now)
	}
	c.countDownlinkLocked(now)
	if c.loginWanted {
		if !now.Before(c.loginNext) {
			c.sendLoginLocked(now)
		}
		earliest(c.loginNext)
	}
	for _, p := range c.pending {
		if !now.Before(p.next) {
			c.transmitLocked(p, now)
		}
		earliest(p.next)
	}
	if now.Sub(c.lastRecv) >= LinkLostKeepalives*c.cfg.KeepaliveInterval {
		c.setLinkLocked(false)
		c.cfg.Channel.Reconnect()
	}
	if now.Sub(c.lastSend) >= c.cfg.KeepaliveInterval {
		c.sendLocked(AppendKeepalive(nil), KindKeepalive, now)
	}
	return due
}
