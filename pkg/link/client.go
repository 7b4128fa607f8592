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
	"sync/atomic"
	"time"

	"github.com/dronelink/dronelink/pkg/app"
	"github.com/dronelink/dronelink/pkg/crypto"
	"github.com/dronelink/dronelink/pkg/replay"
)

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
	// OnFrames receives tunnelled frames from the drone (app.ClientConfig.OnFrames).
	OnFrames func(frames []byte)
	// MaxFrameAge: frames older on arrival are dropped; if zero, app.DefaultMaxFrameAge.
	MaxFrameAge time.Duration
	// SurviveShutdown: reconnect after the drone shuts down (app.ClientConfig.SurviveShutdown).
	SurviveShutdown bool
	// FixedTimers turns the adaptive retransmission off (app.ClientConfig.FixedTimers), and
	// with it the round-trip timing of initiations and the extra initiations of a cold
	// start: every initiation goes out alone, on the fixed backoff. The benchmarks' baseline.
	FixedTimers bool
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
	return c, nil
}

// Client is an operator's native endpoint: the native secure channel (handshake, rekey,
// a new handshake when the link comes back) under the application layer (app.Client: login,
// commands until acknowledged, telemetry), whose methods it has. Safe for concurrent use.
type Client struct {
	*app.Client
	up     app.ClientUpcalls
	cfg    ClientConfig
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu          sync.Mutex
	current     *Session
	previous    *Session
	previousEnd time.Time
	hs          *Initiator
	hsNext      time.Time
	hsRound     int       // rounds of initiations of hs sent
	hsHeard     bool      // the drone answered hs, if only with a refusal
	hsErr       error     // the last refusal, for the final error message
	failed      bool      // a final refusal of the first handshake: no more handshakes
	rekeyAfter  time.Time // a refused rekey is not tried again before this
	closed      bool
	sealBuf     []byte // MaxDatagramSize capacity: datagrams are sealed into it under mu

	// For LinkStatus (status.go).
	since    time.Time     // the first session
	rtt      time.Duration // the last handshake's round trip
	rekeys   int
	carried  Traffic // the traffic of sessions no longer kept
	attempts attemptTimes

	refused    atomic.Bool   // ICMP port unreachable for a datagram to the drone; the timer acts on it
	refusedErr atomic.Value  // error: the conn's description of the last report
	wake       chan struct{} // wakes the timer for refused
}

// Dial sets up a session with the drone and logs in, retransmitting over a lossy link until
// ctx ends. It fails fast on a final refusal (wrong drone key, unknown operator key, wrong
// password, ...), and with ErrNoListener when the drone's host answers the first handshake
// with ICMP port unreachable.
//
// When cfg.Conn is an UnreachableReporter, Dial asks it for reports of datagrams to the
// drone that reached no listener. A *UDPConn on Linux sets IP_RECVERR (IPV6_RECVERR) on its
// socket so that the kernel reports ICMP errors about the datagrams it sends; the socket
// stays unconnected and takes the drone's answers from any source address (a multi-homed
// drone may answer from another address than the one dialled). The NATS relay reports a
// drone id that nobody serves.
func Dial(ctx context.Context, cfg ClientConfig) (*Client, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	c, err := newClient(cfg)
	if err != nil {
		return nil, err
	}
	if u, ok := cfg.Conn.(UnreachableReporter); ok {
		if err := u.ReportUnreachable(cfg.Drone, c.noteUnreachable); err != nil {
			cfg.Logger.Debug("cannot watch the socket for unreachable reports (ICMP errors); they will go unnoticed", "err", err)
		}
	}
	runCtx, cancel := context.WithCancel(context.Background())
	c.cancel = cancel
	c.mu.Lock()
	err = c.startHandshakeLocked(0, cfg.Now())
	c.mu.Unlock()
	if err != nil {
		cancel()
		return nil, err
	}
	c.wg.Go(c.readLoop)
	c.wg.Go(func() { c.timerLoop(runCtx) })
	c.up.Start()
	if err := c.up.WaitLogin(ctx); err != nil {
		c.up.Abort()
		return nil, err
	}
	return c, nil
}

// newClient builds the channel and its application layer, without goroutines.
func newClient(cfg ClientConfig) (*Client, error) {
	c := &Client{cfg: cfg, cancel: func() {}, sealBuf: make([]byte, 0, MaxDatagramSize), wake: make(chan struct{}, 1)}
	var err error
	c.Client, c.up, err = app.NewClient(app.ClientConfig{
		Channel: c, User: cfg.User, Password: cfg.Password, Logger: cfg.Logger, Hooks: cfg.Hooks, Now: cfg.Now,
		Rand: cfg.Rand, KeepaliveInterval: cfg.KeepaliveInterval, OnTelemetry: cfg.OnTelemetry, OnEvent: cfg.OnEvent,
		OnFrames: cfg.OnFrames, MaxFrameAge: cfg.MaxFrameAge, SurviveShutdown: cfg.SurviveShutdown,
		FixedTimers: cfg.FixedTimers,
	})
	if err != nil {
		return nil, fmt.Errorf("link: %w", err)
	}
	return c, nil
}

// Downlink implements app.DownlinkCounter: the drone's data datagrams that arrived and
// those missing (the gaps in their counters), over every session.
func (c *Client) Downlink() (received, missing uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := c.carried
	for _, s := range []*Session{c.current, c.previous} {
		if s != nil {
			t.add(s.Traffic())
		}
	}
	return t.ReceivedPackets, t.LostPackets
}

// Send implements app.ClientChannel: seal msg on the current session and send it.
func (c *Client) Send(msg []byte, kind PacketKind, issued time.Time) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.current == nil || c.closed {
		return false
	}
	now := c.cfg.Now()
	app.Stamp(msg, c.current.sendEpoch, now, issued)
	return c.sendLocked(c.current, msg, kind, now)
}

// Reconnect implements app.ClientChannel: the link is lost, so agree a new session (it
// carries the login over if the drone still has the old one).
func (c *Client) Reconnect() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if now := c.cfg.Now(); c.hs == nil && c.current != nil && !c.closed && !c.failed && !now.Before(c.rekeyAfter) {
		c.startHandshakeLocked(c.current.remote, now)
	}
}

// NoSession implements app.ClientChannel: why there is no session yet, if there is none.
func (c *Client) NoSession(cause error) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.current != nil:
		return nil
	case c.hsErr != nil:
		return fmt.Errorf("no session with the drone: %w", c.hsErr)
	}
	return fmt.Errorf("no answer from the drone at %s (wrong address or PSK, or drone down): %w", c.cfg.Drone, cause)
}

// Shutdown implements app.ClientChannel: stop the goroutines and close the socket.
func (c *Client) Shutdown(bool) {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	c.cancel()
	c.cfg.Conn.Close()
	c.wg.Wait()
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
	c.hs, c.hsRound, c.hsHeard = hs, 0, false
	return c.sendInitiationLocked(now)
}

// sendInitiationLocked sends the next round of initiations of the handshake and schedules
// the one after (docs/PROTOCOL.md section 6.1). A round is one fresh initiation, except on
// a cold start: before the client's first session, while the drone has not answered at
// all, rounds 2 to 1+ColdStartRounds send ColdStartInitiations fresh initiations each,
// any of which the drone may answer.
func (c *Client) sendInitiationLocked(now time.Time) error {
	c.hsRound++
	n := 1
	if c.current == nil && !c.hsHeard && !c.cfg.FixedTimers && c.hsRound > 1 && c.hsRound <= 1+ColdStartRounds {
		n = ColdStartInitiations
	}
	for i := range n {
		built := now
		if i > 0 {
			built = c.cfg.Now() // the previous initiation's RSA signature took a while
		}
		pkt, err := c.hs.Initiation(built)
		if err != nil {
			return err
		}
		c.write(pkt, KindInitiation)
		c.attempts.record(built, c.cfg.Now())
	}
	c.hsNext = now.Add(c.initiationDelayLocked(now))
	c.event(Event{Kind: EventHandshakeSent, Attempt: c.hsRound})
	return nil
}

// initiationDelayLocked is how long after round c.hsRound of initiations the next one
// goes out. Once the client has had a session and the link is not silent, the first wait
// is the application layer's retransmission timeout plus however much longer the last
// handshake took than the smoothed round trip (the drone's RSA work: a spurious
// initiation costs the drone an RSA decryption), doubling per round up to
// HandshakeRetryMax. Before any session (no round trip measured), on a silent link and
// with fixed timers it is the fixed HandshakeRetryInitial instead. Jitter as RetryDelay's.
func (c *Client) initiationDelayLocked(now time.Time) time.Duration {
	base := HandshakeRetryInitial
	if e := c.Client.Estimate(); c.current != nil && !c.cfg.FixedTimers && e.RTO > 0 && !e.Silent {
		base = min(e.RTO+max(c.rtt-e.SRTT, 0), HandshakeRetryMax)
	}
	return RetryDelay(c.hsRound-1, base, HandshakeRetryMax)
}

func (c *Client) write(pkt []byte, kind PacketKind) bool {
	if err := c.cfg.Conn.WriteTo(pkt, c.cfg.Drone); err != nil {
		c.cfg.Logger.Debug("send failed", "err", err)
		return false
	}
	c.cfg.Hooks.PacketSent(kind, len(pkt))
	return true
}

func (c *Client) sendLocked(s *Session, plaintext []byte, kind PacketKind, now time.Time) bool {
	if s.expired(now) {
		return false // the drone would drop it; a new session is being agreed
	}
	pkt, err := s.Seal(c.sealBuf[:0], plaintext, now)
	if err != nil {
		return false
	}
	return c.write(pkt, kind)
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

// msgPortUnreachable is logged when a running client hears ICMP port unreachable.
const msgPortUnreachable = "the drone's port is unreachable (ICMP port unreachable): retrying"

// noteUnreachable is the socket's report that a datagram sent to the drone's address
// reached no listener (UnreachableReporter: an ICMP port unreachable, a relay's "no
// responders"). It comes from the reader or from a writer, which holds c.mu: the timer
// goroutine acts on it, at once.
func (c *Client) noteUnreachable(err error) {
	c.refusedErr.Store(err)
	c.refused.Store(true)
	select {
	case c.wake <- struct{}{}:
	default: // a wake is pending; it will see refused
	}
}

// portUnreachable handles an ICMP port unreachable for the drone's address (reported by
// noteUnreachable, acted on by the timer goroutine). Before the first session nothing
// listens there, and Dial fails at once with ErrNoListener instead of waiting for its
// deadline. A client that has had a session keeps going: the drone's daemon may be
// restarting, and the client reconnects as after any link loss.
func (c *Client) portUnreachable() {
	err, _ := c.refusedErr.Load().(error)
	if err == nil {
		err = &noListenerError{c.cfg.Drone}
	}
	c.mu.Lock()
	first := c.current == nil && c.hs != nil && !c.failed && !c.closed
	if first {
		c.hs = nil
		c.failed = true
		c.hsErr = err
	}
	closed := c.closed
	c.mu.Unlock()
	switch {
	case first:
		c.cfg.Logger.Warn("no drone at this address", "err", err)
		c.up.Fail(err)
	case !closed:
		c.cfg.Logger.Debug(msgPortUnreachable, "drone", c.cfg.Drone)
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
	if c.hs == nil {
		c.mu.Unlock()
		c.cfg.Hooks.Dropped(DropUnknownSession)
		return
	}
	keys, r, err := c.hs.ConsumeResponse(pkt)
	if err != nil {
		c.mu.Unlock()
		c.cfg.Hooks.Dropped(dropReasonFor(err))
		return
	}
	sess, err := NewSession(&keys, c.hs.local, r.Sender, c.cfg.ReplayWindow, now)
	keys.wipe()
	if err != nil {
		c.mu.Unlock()
		c.cfg.Logger.Error("session setup failed", "err", err)
		return
	}
	sess.sendEpoch, sess.recvEpoch = now, c.hs.AnsweredAttempt()
	c.rtt = max(now.Sub(c.attempts.sentAt(sess.recvEpoch)), 0)
	rtt := c.rtt
	c.hs = nil
	c.hsErr = nil
	if c.current != nil {
		if c.previous != nil {
			c.carried.add(c.previous.Traffic())
		}
		c.previous, c.previousEnd = c.current, now.Add(PreviousSessionGrace)
		c.rekeys++
		c.cfg.Hooks.Rekeyed()
	} else {
		c.since = now
	}
	c.current = sess
	c.cfg.Hooks.Handshake(HandshakeOK)
	c.event(Event{Kind: EventEstablished})
	// Confirm the keys to the drone at once.
	c.sendLocked(sess, AppendKeepalive(nil), KindKeepalive, now)
	c.mu.Unlock()
	// The key confirmation names the initiation answered: an unambiguous round trip.
	c.up.RoundTripSample(rtt)
	c.up.Established(r.Flags&FlagLoginCarried != 0, now)
}

func (c *Client) handleError(pkt []byte) {
	c.mu.Lock()
	if c.hs == nil {
		c.mu.Unlock()
		c.cfg.Hooks.Dropped(DropUnknownSession)
		return
	}
	code, err := c.hs.ConsumeError(pkt)
	if err != nil {
		c.mu.Unlock()
		c.cfg.Hooks.Dropped(dropReasonFor(err))
		return
	}
	c.cfg.Hooks.Handshake(HandshakeRefused)
	c.hsErr = code.Err()
	c.hsHeard = true
	c.event(Event{Kind: EventRefused, Err: c.hsErr})
	final := c.hs.State() == StateFailed
	if final && c.current != nil {
		// A running client keeps its session: any holder of the PSK can forge a refusal
		// of a rekey (the initiation's timestamp is in clear), so it ends only this
		// handshake, and a new one is tried after the backoff. A drone that really
		// revoked the key closes the session itself.
		c.hs = nil
		c.rekeyAfter = c.cfg.Now().Add(HandshakeRetryMax)
		c.cfg.Logger.Warn("the drone refused a rekey; keeping the current session", "err", c.hsErr)
		final = false
	} else if final {
		c.hs = nil
		c.failed = true
	}
	c.mu.Unlock()
	if final {
		c.up.Fail(fmt.Errorf("drone refused the session: %w", code.Err()))
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
	c.up.Receive(plain, now, app.SinceEpoch(now, s.recvEpoch))
}

// timerLoop retransmits initiations and rekeys.
func (c *Client) timerLoop(ctx context.Context) {
	t := time.NewTicker(timerTick / 2)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-c.wake:
			if c.refused.Swap(false) {
				c.portUnreachable()
			}
			continue
		case <-t.C:
		}
		c.tick(c.cfg.Now())
	}
}

func (c *Client) tick(now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed || c.failed {
		return
	}
	if c.hs != nil && !now.Before(c.hsNext) {
		if err := c.sendInitiationLocked(now); err != nil {
			c.cfg.Logger.Warn("initiation failed", "err", err)
		}
	}
	if c.previous != nil && now.After(c.previousEnd) {
		c.carried.add(c.previous.Traffic())
		c.previous = nil
	}
	if cur := c.current; cur != nil && c.hs == nil && !now.Before(c.rekeyAfter) &&
		(cur.expired(now) || cur.needsRekeyAfter(now, c.cfg.RekeyAfterTime)) {
		c.startHandshakeLocked(cur.remote, now)
	}
}
