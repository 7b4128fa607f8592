package dtlslink

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/pion/dtls/v3"

	"github.com/dronelink/dronelink/pkg/app"
	"github.com/dronelink/dronelink/pkg/crypto"
	"github.com/dronelink/dronelink/pkg/link"
)

// ErrHandshakeRefused: the drone answered the DTLS handshake with a fatal alert (for example
// a PSK identity that is not a valid user name). A wrong PSK is not refused: pion/dtls
// drops the peer's Finished without an alert, so it shows as no answer.
var ErrHandshakeRefused = errors.New("drone refused the DTLS handshake")

// redialTimeout bounds one attempt to set up a new association after the link was lost.
const redialTimeout = 10 * time.Second

// Client is an operator's DTLS endpoint: the DTLS 1.2 PSK channel to the drone (a new
// association when the link is lost) under the application layer (app.Client: login,
// commands until acknowledged, telemetry), whose methods it has. Safe for concurrent use.
type Client struct {
	*app.Client
	up     app.ClientUpcalls
	cfg    ClientConfig
	psk    crypto.PSK
	ctx    context.Context // ends at Shutdown
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu        sync.Mutex
	conn      *dtls.Conn
	pc        *clientConn
	sendEpoch time.Time // when the current association's handshake completed here
	redialing bool
	closed    bool
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
	c := &Client{cfg: cfg, psk: cfg.PSK, ctx: runCtx, cancel: cancel}
	c.Client, c.up, err = app.NewClient(app.ClientConfig{
		Channel: c, User: cfg.User, Password: cfg.Password, Logger: cfg.Logger, Hooks: cfg.Hooks,
		KeepaliveInterval: cfg.KeepaliveInterval, OnTelemetry: cfg.OnTelemetry, OnEvent: cfg.OnEvent,
		OnFrames: cfg.OnFrames, MaxFrameAge: cfg.MaxFrameAge, SurviveShutdown: cfg.SurviveShutdown,
	})
	if err != nil {
		cancel()
		crypto.Wipe(c.psk[:])
		return nil, fmt.Errorf("dtlslink: %w", err)
	}
	started := time.Now()
	conn, pc, err := c.connect(ctx)
	if err != nil {
		c.up.Abort()
		return nil, err
	}
	c.install(conn, pc, started)
	c.up.Start()
	if err := c.up.WaitLogin(ctx); err != nil {
		c.up.Abort()
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

// install makes a fresh association the current one, starts its reader and has the
// application layer log in on it. started is when its handshake began: before the drone's
// side of it existed, so the drone's stamps are judged against it (app.ClientChannel).
func (c *Client) install(conn *dtls.Conn, pc *clientConn, started time.Time) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		conn.Close()
		return
	}
	old := c.conn
	now := time.Now()
	c.conn, c.pc, c.sendEpoch = conn, pc, now
	c.mu.Unlock()
	if old != nil {
		old.Close()
	}
	c.wg.Go(func() { c.readLoop(conn, started) })
	c.up.Established(false, now)
}

// Send implements app.ClientChannel: one application message as one DTLS record on the
// current association.
func (c *Client) Send(plain []byte, kind link.PacketKind, issued time.Time) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.conn == nil || c.closed {
		return false
	}
	app.Stamp(plain, c.sendEpoch, time.Now(), issued)
	c.pc.sendKind.Store(uint32(kind))
	_, err := c.conn.Write(plain)
	c.pc.sendKind.Store(noKind)
	if err != nil {
		c.cfg.Logger.Debug("send failed", "err", err)
		return false
	}
	return true
}

// Reconnect implements app.ClientChannel: set up a new association in the background.
func (c *Client) Reconnect() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.startRedialLocked()
}

// NoSession implements app.ClientChannel. Dial returns the handshake's own error, so once
// the application layer runs there is always an association.
func (c *Client) NoSession(error) error { return nil }

// Shutdown implements app.ClientChannel: stop the goroutines, close the association (with
// close_notify unless the drone is already gone) and wipe the PSK.
func (c *Client) Shutdown(droneGone bool) {
	c.mu.Lock()
	c.closed = true
	conn, pc := c.conn, c.pc
	c.mu.Unlock()
	c.cancel()
	if conn != nil {
		if droneGone {
			// The drone has forgotten the association: no close_notify to it.
			pc.UDPConn.Close()
		}
		conn.Close()
	}
	c.wg.Wait()
	crypto.Wipe(c.psk[:])
}

func (c *Client) event(e link.Event) {
	if c.cfg.OnEvent != nil {
		c.cfg.OnEvent(e)
	}
}

// readLoop reads one association's messages until it ends. If it was the current one and
// the client still runs, a new association is set up at once: the drone ended this one
// (it restarted, or forgot it).
func (c *Client) readLoop(conn *dtls.Conn, recvEpoch time.Time) {
	buf := make([]byte, readBufferSize)
	for {
		n, err := conn.Read(buf)
		if err != nil {
			if c.Err() == nil {
				c.mu.Lock()
				if c.conn == conn {
					c.cfg.Logger.Debug("association ended", "err", err)
					c.startRedialLocked()
				}
				c.mu.Unlock()
			}
			return
		}
		c.mu.Lock()
		current := c.conn == conn
		c.mu.Unlock()
		if !current {
			c.cfg.Hooks.Dropped(link.DropUnknownSession) // a late record of a replaced association
			continue
		}
		now := time.Now()
		c.up.Receive(buf[:n], now, app.SinceEpoch(now, recvEpoch))
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
			started := time.Now()
			conn, pc, err := c.connect(ctx)
			cancel()
			if err == nil {
				c.install(conn, pc, started)
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
