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

// State is what an end knows of its NATS connection, for status displays.
type State struct {
	Connected  bool   // connected now
	Server     string // the server connected to (redacted URL), or the last one
	ServerName string // its name in the cluster
	Reconnects uint64 // reconnections after a loss since the start
}

// natsConn is the part both ends share: the connection, its handlers and its state.
type natsConn struct {
	cfg Config
	nc  *nats.Conn

	mu    sync.Mutex
	state State

	// first is a message subscribe took while it checked the subscription; the reader
	// returns it first.
	first *nats.Msg
	// reconnected is signalled at every reconnection (a refused subscription is tried
	// again then).
	reconnected chan struct{}

	closeOnce sync.Once
	closed    atomic.Bool
	ctx       context.Context
	cancel    context.CancelFunc
}

// dial connects to the servers of cfg.
func dial(cfg Config) (*natsConn, error) {
	c := &natsConn{cfg: cfg, reconnected: make(chan struct{}, 1)}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	opts := []nats.Option{
		nats.Name(cfg.Name),
		nats.Timeout(cfg.ConnectTimeout),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(cfg.ReconnectWait),
		nats.ReconnectJitter(cfg.ReconnectWait/4, cfg.ReconnectWait/4),
		nats.PingInterval(cfg.PingInterval),
		nats.MaxPingsOutstanding(MaxPingsOutstanding),
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
	c.nc = nc
	return c, nil
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
		c.cfg.Hooks.Dropped(DropPermission)
		c.cfg.Logger.Error("relay: the NATS server refused an operation (check the user's permissions)", "err", err)
	default:
		c.cfg.Logger.Warn("relay: NATS error", "err", err)
	}
}

// subscribe subscribes to subject for a synchronous reader and waits until the server has
// seen the subscription: a refused subscription fails here, naming the subject, instead
// of leaving the end deaf.
func (c *natsConn) subscribe(subject string) (*nats.Subscription, error) {
	sub, err := c.nc.SubscribeSync(subject)
	if err != nil {
		return nil, fmt.Errorf("relay: subscribe to %s: %w", subject, err)
	}
	if err := sub.SetPendingLimits(PendingMessages, PendingBytes); err != nil {
		return nil, fmt.Errorf("relay: subscribe to %s: %w", subject, err)
	}
	if c.nc.IsConnected() {
		if err := c.nc.FlushTimeout(c.cfg.ConnectTimeout); err != nil {
			return nil, fmt.Errorf("relay: subscribe to %s: %w", subject, err)
		}
		// The server answers a refused subscription before the flush's pong, and the client
		// marks the subscription at once (PermissionErrOnSubscribe): a non-blocking read
		// reports it, or takes a first message the reader will get first.
		msg, err := sub.NextMsg(0)
		switch {
		case errors.Is(err, nats.ErrPermissionViolation):
			_ = sub.Unsubscribe()
			return nil, fmt.Errorf("relay: the NATS server refused the subscription to %s: check the permissions of this user", subject)
		case err == nil:
			c.first = msg
		}
	}
	return sub, nil
}

// State returns the connection's state.
func (c *natsConn) State() State {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.state
}

// watchDrops reports the messages NATS dropped for sub, once a second until the end is
// closed: the client only tells the first of a run of drops to the error handler.
func (c *natsConn) watchDrops(sub *nats.Subscription) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	reported := 0
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-t.C:
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
		c.closed.Store(true)
		c.cancel()
		if c.nc.IsConnected() {
			_ = c.nc.FlushTimeout(time.Second)
		}
		c.nc.Close()
	})
}

// nextMsg is sub's next message. Once the end is closed it fails with an error satisfying
// errors.Is(err, net.ErrClosed); a report of dropped messages is skipped (watchDrops counts
// them); other errors, nats.ErrNoResponders among them, are returned.
func (c *natsConn) nextMsg(sub *nats.Subscription) (*nats.Msg, error) {
	if msg := c.first; msg != nil {
		c.first = nil
		return msg, nil
	}
	for {
		msg, err := sub.NextMsgWithContext(c.ctx)
		if err == nil {
			return msg, nil
		}
		if errors.Is(err, nats.ErrPermissionViolation) {
			// The subscription is refused until the next reconnection (the server's
			// permissions changed): wait for it rather than spin on the error.
			c.cfg.Logger.Error("relay: the NATS server refused this end's subscription; waiting for a reconnection", "err", err)
			select {
			case <-c.ctx.Done():
			case <-c.reconnected:
			}
			continue
		}
		if c.closed.Load() || c.ctx.Err() != nil || errors.Is(err, nats.ErrConnectionClosed) || errors.Is(err, nats.ErrBadSubscription) {
			return nil, errClosed
		}
		if errors.Is(err, nats.ErrSlowConsumer) {
			continue // counted by watchDrops
		}
		return nil, err
	}
}
