package relay

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/dronelink/dronelink/internal/ratelog"
)

// Defaults of Config.
const (
	// DefaultConnectTimeout bounds the dial of one NATS server.
	DefaultConnectTimeout = 5 * time.Second
	// DefaultReconnectWait is the pause between two rounds over the cluster's servers
	// after a connection is lost. Short: a session's datagrams are lost meanwhile.
	DefaultReconnectWait = 250 * time.Millisecond
	// DefaultPingInterval: a server that answers no ping for MaxPingsOutstanding intervals
	// counts as lost (a dead LTE link sends no TCP reset), so 15 s.
	DefaultPingInterval = 5 * time.Second
	// MaxPingsOutstanding is the number of unanswered pings that end a connection.
	MaxPingsOutstanding = 3
	// FlusherTimeout bounds a write of the client library to the server's connection (its
	// default is a minute); a write that takes longer ends the connection, and the client
	// reconnects.
	FlusherTimeout = 5 * time.Second
	// ReconnectBufferSize bounds what the client keeps for the server while reconnecting:
	// a few seconds of a session's datagrams; older traffic is no use to anyone.
	ReconnectBufferSize = 256 << 10
	// PendingMessages and PendingBytes bound what waits for the reader; past them NATS
	// drops messages (DropSlowConsumer) rather than the process growing.
	PendingMessages = 8192
	PendingBytes    = 8 << 20
)

// Config configures one end's connection to the NATS servers.
type Config struct {
	// URLs of the NATS servers (ParseURLs); the client learns the rest of a cluster from
	// them. Required.
	URLs []string
	// DroneID is the drone's id on the relay (CheckToken). Required.
	DroneID string
	// Creds are the NATS credentials; nil connects without any.
	Creds *Creds
	// Name is the connection's name, shown in the server's monitoring.
	Name string
	// Logger receives the relay's state changes. If nil, logs are discarded.
	Logger *slog.Logger
	// Hooks receives events for metrics. If nil, NopHooks.
	Hooks Hooks
	// ConnectTimeout, ReconnectWait, PingInterval: if zero, the defaults above.
	ConnectTimeout time.Duration
	ReconnectWait  time.Duration
	PingInterval   time.Duration
	// KeepTrying (the drone) keeps connecting in the background when no server can be
	// reached at the start, and never gives up on a server that refuses the credentials
	// (an administrator may fix them). Refused credentials at the start still fail.
	KeepTrying bool
}

func (c Config) withDefaults() (Config, error) {
	if len(c.URLs) == 0 {
		return c, errors.New("relay: no NATS server URL")
	}
	if err := CheckToken("drone id", c.DroneID); err != nil {
		return c, fmt.Errorf("relay: %w", err)
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Hooks == nil {
		c.Hooks = NopHooks{}
	}
	if c.ConnectTimeout <= 0 {
		c.ConnectTimeout = DefaultConnectTimeout
	}
	if c.ReconnectWait <= 0 {
		c.ReconnectWait = DefaultReconnectWait
	}
	if c.PingInterval <= 0 {
		c.PingInterval = DefaultPingInterval
	}
	return c, nil
}

// ErrCredentials is wrapped by the error of a connection whose credentials the NATS
// server refused.
var ErrCredentials = errors.New("the NATS server refused the credentials")

// ErrPermission is wrapped by the error of an end whose subscription the NATS server
// refused: the user's permissions do not cover the subject.
var ErrPermission = errors.New("the NATS server refused the subscription")

// State is what an end knows of its NATS connection, for status displays.
type State struct {
	Connected  bool   // connected now
	Server     string // the server connected to (redacted URL), or the last one
	ServerName string // its name in the cluster
	Reconnects uint64 // reconnections after a loss since the start
}

// resubscribeInterval is how often an end whose subscription the server refused (its
// permissions changed while the connection lived) asks for it again.
const resubscribeInterval = 2 * time.Second

// maxRedialWait bounds the pause between two attempts to replace a connection that the
// client library closed for good.
const maxRedialWait = 5 * time.Second

// natsConn is the part both ends share: the connection, its handlers and its state.
type natsConn struct {
	cfg Config
	// conn is the connection, sub the end's one subscription on it. Both are replaced
	// when the client library closes a connection for good (redial), and sub when a
	// refused subscription is made again (resubscribe); only the reader replaces them.
	conn    atomic.Pointer[nats.Conn]
	sub     atomic.Pointer[nats.Subscription]
	subject string
	connMu  sync.Mutex // orders a replacement of conn with close

	mu    sync.Mutex
	state State

	// first is a message subscribe took while it checked the subscription; the reader
	// returns it first.
	first *nats.Msg
	// reconnected is signalled at every reconnection (a refused subscription is tried
	// again then).
	reconnected chan struct{}
	// refused: the reader found the subscription refused and has not yet had it back.
	refused bool
	// readCtx is the context of the reader's wait for a message, readCancel its cancel:
	// the error handler wakes the reader with it when the server refuses the subscription
	// (the client library marks the subscription, but does not wake a reader that waits).
	readCtx    context.Context
	readCancel atomic.Pointer[context.CancelFunc]
	// errLog limits the log of the errors the server reports: permission refusals (one per
	// refused subscription attempt, every resubscribeInterval) and refused credentials (one
	// per reconnection attempt, several a second, while an administrator fixes them).
	errLog *ratelog.Limiter

	// subscribed: subscribe succeeded. Before, a refusal is subscribe's error to return,
	// not the error handler's to log as well.
	subscribed atomic.Bool
	closeOnce  sync.Once
	closed     atomic.Bool
	ctx        context.Context
	cancel     context.CancelFunc
}

// dial connects to the servers of cfg.
func dial(cfg Config) (*natsConn, error) {
	c := &natsConn{cfg: cfg, reconnected: make(chan struct{}, 1), errLog: ratelog.New(cfg.Logger, time.Minute)}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	nc, err := c.connect()
	if err != nil {
		return nil, err
	}
	c.conn.Store(nc)
	return c, nil
}

// nc is the current connection.
func (c *natsConn) nc() *nats.Conn { return c.conn.Load() }

// connect makes a connection to the servers of c.cfg.
func (c *natsConn) connect() (*nats.Conn, error) {
	cfg := c.cfg
	opts := []nats.Option{
		nats.Name(cfg.Name),
		nats.Timeout(cfg.ConnectTimeout),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(cfg.ReconnectWait),
		nats.ReconnectJitter(cfg.ReconnectWait/4, cfg.ReconnectWait/4),
		nats.PingInterval(cfg.PingInterval),
		nats.MaxPingsOutstanding(MaxPingsOutstanding),
		nats.FlusherTimeout(FlusherTimeout),
		nats.ReconnectBufSize(ReconnectBufferSize),
		nats.NoEcho(),
		nats.PermissionErrOnSubscribe(true),
		// The queue of a synchronous subscription is a channel of this many messages,
		// allocated whole at the subscription: nats.go's default, 65,536, is 512 KB per
		// end whatever its traffic. The pending limit (SetPendingLimits) drops messages
		// before the queue could hold more than PendingMessages, so no larger queue is
		// ever used.
		nats.SyncQueueLen(PendingMessages),
		nats.ConnectHandler(c.onConnect),
		nats.ReconnectHandler(c.onReconnect),
		nats.DisconnectErrHandler(c.onDisconnect),
		nats.ErrorHandler(c.onError),
		// Every connection, first or again, reads the server through the framing guard.
		nats.SetCustomDialer(newGuardDialer(cfg.URLs, cfg.ConnectTimeout, c.onProtocolError)),
	}
	creds, err := cfg.Creds.options()
	if err != nil {
		return nil, err
	}
	opts = append(opts, creds...)
	if cfg.KeepTrying {
		opts = append(opts, nats.IgnoreAuthErrorAbort())
	}
	url := strings.Join(cfg.URLs, ",")
	nc, err := nats.Connect(url, opts...)
	if err != nil && cfg.KeepTrying && !isAuthError(err) {
		cfg.Logger.Warn("relay: no NATS server reachable; connecting in the background", "servers", url, "err", err)
		nc, err = nats.Connect(url, append(opts, nats.RetryOnFailedConnect(true))...)
	}
	if err != nil {
		if isAuthError(err) {
			return nil, fmt.Errorf("relay %s: %w (%s in the --relay-creds file; nats: %v)", url, ErrCredentials, cfg.Creds.Method(), err)
		}
		return nil, fmt.Errorf("relay %s: cannot connect: %w", url, err)
	}
	return nc, nil
}

// isAuthError reports whether err is the server's refusal of the credentials.
func isAuthError(err error) bool {
	return errors.Is(err, nats.ErrAuthorization) || errors.Is(err, nats.ErrAuthExpired) ||
		errors.Is(err, nats.ErrAuthRevoked) || errors.Is(err, nats.ErrAccountAuthExpired) ||
		errors.Is(err, nats.ErrNkeysNotSupported)
}

func (c *natsConn) onConnect(nc *nats.Conn) {
	server, name := nc.ConnectedUrlRedacted(), nc.ConnectedServerName()
	c.mu.Lock()
	c.state.Connected, c.state.Server, c.state.ServerName = true, server, name
	c.mu.Unlock()
	c.cfg.Logger.Info("relay connected", "server", server, "server_name", name, "drone_id", c.cfg.DroneID)
	c.cfg.Hooks.Connected(server)
}

func (c *natsConn) onReconnect(nc *nats.Conn) {
	c.mu.Lock()
	c.state.Reconnects++
	c.mu.Unlock()
	c.cfg.Hooks.Reconnected()
	c.onConnect(nc)
	select {
	case c.reconnected <- struct{}{}:
	default:
	}
}

func (c *natsConn) onDisconnect(_ *nats.Conn, err error) {
	if c.closed.Load() {
		return
	}
	c.mu.Lock()
	c.state.Connected = false
	server := c.state.Server
	c.mu.Unlock()
	if err == nil {
		err = errors.New("connection closed")
	}
	c.cfg.Logger.Warn("relay disconnected; reconnecting", "server", server, "err", err)
	c.cfg.Hooks.Disconnected()
}

func (c *natsConn) onError(_ *nats.Conn, _ *nats.Subscription, err error) {
	switch {
	case errors.Is(err, nats.ErrSlowConsumer):
		c.cfg.Logger.Warn("relay: NATS dropped messages that waited too long for this end", "err", err)
	case errors.Is(err, nats.ErrPermissionViolation):
		if !c.subscribed.Load() {
			return
		}
		c.cfg.Hooks.Dropped(DropPermission)
		if cancel := c.readCancel.Load(); cancel != nil {
			(*cancel)() // the reader looks at its subscription again
		}
		const msg = "relay: the NATS server refused an operation (check the user's permissions)"
		if n, ok := c.errLog.Allow(msg); ok {
			c.cfg.Logger.Error(msg, "err", err, "suppressed", n)
		}
	default:
		c.errLog.Warn("relay: NATS error", "err", err)
	}
}

// onProtocolError: the framing guard refused what the server sent and closed the
// connection; nats.go reconnects.
func (c *natsConn) onProtocolError(err error) {
	c.cfg.Hooks.Dropped(DropProtocol)
	c.errLog.Warn("relay: the NATS server sent what the client must not parse; connection closed, reconnecting", "err", err)
}

// subscribe subscribes the end to subject for its synchronous reader (subscribeOn) and
// marks the end subscribed.
func (c *natsConn) subscribe(subject string) error {
	c.subject = subject
	sub, err := c.subscribeOn(c.nc())
	if err != nil {
		return err
	}
	c.sub.Store(sub)
	c.newReadCtx()
	c.subscribed.Store(true)
	return nil
}

// newReadCtx gives the reader a fresh context to wait under.
func (c *natsConn) newReadCtx() {
	ctx, cancel := context.WithCancel(c.ctx)
	c.readCtx = ctx
	c.readCancel.Store(&cancel)
}

// subscribeOn subscribes to c.subject on nc for a synchronous reader and waits until the
// server has seen the subscription: a refused subscription fails here, naming the
// subject, instead of leaving the end deaf.
func (c *natsConn) subscribeOn(nc *nats.Conn) (*nats.Subscription, error) {
	subject := c.subject
	sub, err := nc.SubscribeSync(subject)
	if err != nil {
		return nil, fmt.Errorf("relay: subscribe to %s: %w", subject, err)
	}
	if err := sub.SetPendingLimits(PendingMessages, PendingBytes); err != nil {
		return nil, fmt.Errorf("relay: subscribe to %s: %w", subject, err)
	}
	if nc.IsConnected() {
		if err := nc.FlushTimeout(c.cfg.ConnectTimeout); err != nil {
			_ = sub.Unsubscribe()
			return nil, fmt.Errorf("relay: subscribe to %s: %w", subject, err)
		}
		// The server answers a refused subscription before the flush's pong, and the client
		// marks the subscription at once (PermissionErrOnSubscribe): a non-blocking read
		// reports it, or takes a first message the reader will get first.
		msg, err := sub.NextMsg(0)
		switch {
		case errors.Is(err, nats.ErrPermissionViolation):
			_ = sub.Unsubscribe()
			return nil, fmt.Errorf("relay: %w to %s: check the permissions of this user", ErrPermission, subject)
		case err == nil:
			c.first = msg
		}
	}
	return sub, nil
}

// State returns the connection's state.
func (c *natsConn) State() State {
	c.mu.Lock()
	st := c.state
	c.mu.Unlock()
	if nc := c.nc(); nc.IsConnected() { // the handlers run later than the client's own state changes
		st.Connected, st.Server, st.ServerName = true, nc.ConnectedUrlRedacted(), nc.ConnectedServerName()
	} else {
		st.Connected = false
	}
	return st
}

// watchDrops reports the messages NATS dropped for the end's subscription, once a second
// until the end is closed: the client only tells the first of a run of drops to the error
// handler.
func (c *natsConn) watchDrops() {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	reported := 0
	var watched *nats.Subscription
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-t.C:
		}
		sub := c.sub.Load()
		if sub != watched { // a new subscription counts from zero
			watched, reported = sub, 0
		}
		n, err := sub.Dropped()
		if err != nil {
			continue
		}
		for ; reported < n; reported++ {
			c.cfg.Hooks.Dropped(DropSlowConsumer)
		}
	}
}

// close flushes what was published (the drone's last words to its operators) and closes
// the connection; safe to call more than once.
func (c *natsConn) close() {
	c.closeOnce.Do(func() {
		c.connMu.Lock()
		c.closed.Store(true)
		nc := c.nc()
		c.connMu.Unlock()
		c.cancel()
		if nc.IsConnected() {
			_ = nc.FlushTimeout(time.Second)
		}
		nc.Close()
	})
}

// nextMsg is the next message of the end's subscription. Once the end is closed it fails
// with an error satisfying errors.Is(err, net.ErrClosed); a report of dropped messages is
// skipped (watchDrops counts them); other errors, nats.ErrNoResponders among them, are
// returned. A subscription the server refused is asked for again until it is granted
// (resubscribe), and a connection the client library closed for good is replaced (redial):
// the server can cost the end its messages, never its subscription or its connection.
func (c *natsConn) nextMsg() (*nats.Msg, error) {
	for {
		if msg := c.first; msg != nil {
			c.first = nil
			return msg, nil
		}
		msg, err := c.sub.Load().NextMsgWithContext(c.readCtx)
		if err != nil && c.readCtx.Err() != nil && c.ctx.Err() == nil {
			c.newReadCtx() // woken by the error handler: look at the subscription again
			continue
		}
		if err == nil {
			if c.refused {
				c.refused = false
				c.cfg.Logger.Info("relay: the NATS server accepts this end's subscription again", "subject", c.subject)
			}
			return msg, nil
		}
		switch {
		case c.closed.Load() || c.ctx.Err() != nil:
			return nil, errClosed
		case errors.Is(err, nats.ErrPermissionViolation):
			c.resubscribe(err)
		case errors.Is(err, nats.ErrConnectionClosed), errors.Is(err, nats.ErrBadSubscription):
			if !c.redial() {
				return nil, errClosed
			}
		case errors.Is(err, nats.ErrSlowConsumer):
			// counted by watchDrops
		default:
			return nil, err
		}
	}
}

// resubscribe handles a refused subscription (the server's permissions changed while the
// connection lived, and it dropped the subscription): it waits for a reconnection, at
// which the client library subscribes again by itself, or for resubscribeInterval, and
// then subscribes again. Either may be refused again; the reader then comes back here.
func (c *natsConn) resubscribe(cause error) {
	if !c.refused {
		c.refused = true
		c.cfg.Logger.Error("relay: the NATS server refused this end's subscription; asking again every "+resubscribeInterval.String(),
			"subject", c.subject, "err", cause)
	}
	t := time.NewTimer(resubscribeInterval)
	defer t.Stop()
	select {
	case <-c.ctx.Done():
		return
	case <-c.reconnected:
		return
	case <-t.C:
	}
	sub, err := c.subscribeOn(c.nc())
	if err != nil {
		return
	}
	_ = c.sub.Load().Unsubscribe()
	c.sub.Store(sub)
}

// redial replaces a connection that the client library closed for good (nats.go does so,
// without reconnecting, at an error line from the server that it does not know, or at a
// protocol line too long): it connects again to the configured servers, with a growing
// pause, until it has a connection and the subscription, or the end is closed (false).
func (c *natsConn) redial() bool {
	old := c.nc()
	c.cfg.Logger.Error("relay: the NATS client closed the connection; connecting again", "err", old.LastError())
	wait := c.cfg.ReconnectWait
	t := time.NewTimer(wait)
	defer t.Stop()
	for {
		select {
		case <-c.ctx.Done():
			return false
		case <-t.C:
		}
		nc, err := c.connect()
		if err == nil {
			var sub *nats.Subscription
			if sub, err = c.subscribeOn(nc); err == nil {
				c.connMu.Lock()
				if c.closed.Load() {
					c.connMu.Unlock()
					nc.Close()
					return false
				}
				c.conn.Store(nc)
				c.sub.Store(sub)
				c.connMu.Unlock()
				c.cfg.Logger.Info("relay: connected again", "server", nc.ConnectedUrlRedacted())
				return true
			}
			nc.Close()
		}
		c.cfg.Logger.Warn("relay: cannot connect again yet", "err", err)
		wait = min(2*wait, maxRedialWait)
		t.Reset(wait)
	}
}
