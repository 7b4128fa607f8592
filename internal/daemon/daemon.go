// Package daemon is dronelinkd, the drone's ground-link daemon: it loads the drone key, the
// fleet PSK and the user database, serves operators over the dronelink protocol on UDP,
// prints and forwards every executed command, streams local telemetry to logged-in
// operators, and reloads the user database while running so a removed user or key loses
// its sessions within seconds.
//
// The package keeps flag and file parsing, logging setup and the local UDP plumbing out
// of pkg/link, which stays a library.
package daemon

import (
	"context"
	"crypto/rsa"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/dronelink/dronelink/internal/buildinfo"
	"github.com/dronelink/dronelink/internal/control"
	"github.com/dronelink/dronelink/pkg/app"
	"github.com/dronelink/dronelink/pkg/crypto"
	"github.com/dronelink/dronelink/pkg/dtlslink"
	"github.com/dronelink/dronelink/pkg/link"
	"github.com/dronelink/dronelink/pkg/relay"
	"github.com/dronelink/dronelink/pkg/tunnel"
	"github.com/dronelink/dronelink/pkg/userdb"
)

// Exit codes of dronelinkd.
const (
	ExitOK    = 0 // clean shutdown
	ExitError = 1 // bad configuration, unreadable file, socket error
	ExitUsage = 2 // bad flags
)

// Main runs dronelinkd with args (without the program name) until ctx ends or SIGINT or
// SIGTERM arrives, and returns the exit code. Executed commands go to stdout, logs to stderr.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var cfg Config
	usageErr := false
	cmd := &cobra.Command{
		Use:   "dronelinkd --key PATH --psk PATH --users PATH [flags]",
		Short: "dronelink's ground-link daemon on the drone",
		Long: `dronelinkd serves drone operators over the dronelink protocol on UDP: it authenticates
them (fleet PSK, operator RSA key, user password), executes each command at most once,
prints it to standard output ("USER: MESSAGE"), acknowledges it, and streams telemetry to
logged-in operators. Every flag can also be set in the TOML file given by --config (keys are
the flag names); flags on the command line win. A bad value in the file is named by file
and key (exit 1); a bad flag is a usage error (exit 2).

With --forward HOST:PORT it also hands each command's payload, as one UDP datagram, to a
local application (the autopilot bridge). The acknowledgement "ok" then means: the command
was printed, and the kernel took its datagram and reported no refusal of it (ICMP port,
host or network unreachable) within --forward-wait (20ms); a refused datagram is "failed"
("forward refused: connection refused"), every time. It does not mean the application read
the datagram or the autopilot acted on it: UDP cannot tell. Without --forward, "ok" means
the command was printed to standard output.

With --transport dtls it speaks standard DTLS 1.2 with a pre-shared key instead (for ground
stations built on OpenSSL or mbedTLS): PSK = the fleet PSK, PSK identity = the user name,
then the same password login, commands and telemetry. There is no drone key (--key is not
needed) and no operator key: the fleet PSK alone authenticates the peer.

Signals: SIGINT/SIGTERM shut down gracefully, SIGHUP reloads the user database (it is also
reloaded when the file changes). Exit codes: 0 clean shutdown, 1 configuration or runtime
error, 2 usage error.`,
		Version: buildinfo.Version(),
		Args: func(cmd *cobra.Command, args []string) error {
			if err := cobra.NoArgs(cmd, args); err != nil {
				usageErr = true
				return err
			}
			return nil
		},
		SilenceErrors: true,
		SilenceUsage:  true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if cfg.ConfigPath != "" {
				if err := cfg.applyFile(cmd.Flags(), cfg.ConfigPath); err != nil {
					return err
				}
			}
			cfg.listenGiven = cmd.Flags().Changed("listen") || cfg.fromFile["listen"]
			if err := cfg.validate(); err != nil {
				// A bad flag is a usage error (2); a bad value in the config file is not.
				usageErr = isUsageError(err)
				return err
			}
			return run(ctx, &cfg, stdout, stderr)
		},
	}
	cmd.SetArgs(args)
	cmd.SetOut(stdout)
	cmd.SetErr(stderr)
	cmd.SetFlagErrorFunc(func(_ *cobra.Command, err error) error {
		usageErr = true
		return err
	})
	cfg.bindFlags(cmd.Flags())
	addSubcommands(cmd, &usageErr)
	if failed, err := cmd.ExecuteC(); err != nil {
		if usageErr {
			fmt.Fprintf(stderr, "dronelinkd: %v (see %s --help)\n", err, failed.CommandPath())
			return ExitUsage
		}
		fmt.Fprintf(stderr, "dronelinkd: %v\n", err)
		return ExitError
	}
	return ExitOK
}

// daemon is one running dronelinkd.
type daemon struct {
	cfg    *Config
	log    *slog.Logger
	out    io.Writer
	outMu  sync.Mutex
	users  atomic.Pointer[userdb.DB]
	server linkServer
	fwd    *forwarder // nil without --forward

	started time.Time        // for the control socket's status
	keyName string           // the drone key's fingerprint (native)
	relay   *relay.DroneConn // nil without --relay
}

// listenAddr is the operators' UDP address, or "none" when the drone serves only the relay.
func (d *daemon) listenAddr() string {
	if d.cfg.Listen == "" {
		return "none"
	}
	return d.server.LocalAddr().String()
}

// tunnelOn says whether the MAVLink tunnel is configured.
func (c *Config) tunnelOn() bool { return c.MavlinkListen != "" || c.MavlinkTo != "" }

// linkServer is what the daemon needs of a transport's server: *link.Server (native) and
// *dtlslink.Server (DTLS-PSK) both provide it.
type linkServer interface {
	Run(ctx context.Context) error
	Broadcast(payload []byte) (int, error)
	BroadcastFrames(frames []byte, arrived time.Time) (int, error)
	SendFramesTo(session uint16, frames []byte) bool
	Revoke(revoked func(link.SessionInfo) bool) int
	LocalAddr() netip.AddrPort
}

var (
	_ linkServer               = (*link.Server)(nil)
	_ linkServer               = (*dtlslink.Server)(nil)
	_ dtlslink.PasswordChecker = (*userdb.DB)(nil)
)

// run loads everything, opens the sockets and serves until ctx ends or a signal arrives.
func run(ctx context.Context, cfg *Config, stdout, stderr io.Writer) error {
	level, _ := parseLevel(cfg.LogLevel)
	opts := &slog.HandlerOptions{Level: level}
	var handler slog.Handler = slog.NewTextHandler(stderr, opts)
	if cfg.LogFormat == "json" {
		handler = slog.NewJSONHandler(stderr, opts)
	}
	d := &daemon{cfg: cfg, log: slog.New(handler), out: stdout, started: time.Now()}
	dtlsMode := cfg.Transport == TransportDTLS

	// The loaders refuse a key or PSK file that group or others may access (like ssh),
	// with one line naming the file, its mode and the chmod to run.
	var key *rsa.PrivateKey
	var err error
	if !dtlsMode {
		if key, err = crypto.LoadPrivateKey(cfg.KeyPath); err != nil {
			return cfg.from("key", err)
		}
	}
	psk, err := crypto.LoadPSK(cfg.PSKPath)
	if err != nil {
		return cfg.from("psk", err)
	}
	db, err := userdb.Load(cfg.UsersPath)
	if err != nil {
		return cfg.from("users", fmt.Errorf("user database: %w", err))
	}
	d.users.Store(db)
	// The user database holds no secret, only argon2id hashes and public keys: open to
	// group or others it is still loaded, with a warning.
	if err := crypto.InsecurePermissions(cfg.UsersPath); err != nil {
		d.log.Warn("insecure file permissions", "problem", err.Error())
	}
	var relayCreds *relay.Creds
	if cfg.Relay != "" && cfg.RelayCreds != "" {
		if relayCreds, err = relay.LoadCreds(cfg.RelayCreds); err != nil {
			return cfg.from("relay-creds", err)
		}
	}
	if cfg.CheckConfig {
		if err := cfg.checkAddresses(); err != nil {
			return err
		}
		if err := cfg.checkControl(); err != nil {
			return err
		}
		if err := cfg.checkRelay(stdout, relayCreds); err != nil {
			return err
		}
		if dtlsMode {
			fmt.Fprintf(stdout, "configuration ok: transport dtls, %d users\n", db.Len())
		} else {
			fmt.Fprintf(stdout, "configuration ok: drone key %s, %d users\n", crypto.Fingerprint(&key.PublicKey), db.Len())
		}
		return nil
	}

	// The sockets: the operators' UDP socket (--listen) and the relay (--relay), at least
	// one of them (validate).
	var conn *net.UDPConn
	var relayConn *relay.DroneConn
	closeSockets := func() {
		if conn != nil {
			conn.Close()
		}
		if relayConn != nil {
			relayConn.Close()
		}
	}
	if cfg.Listen != "" {
		if conn, err = listenUDP(cfg.Listen); err != nil {
			return &bindError{setting: cfg.setting("listen"), network: "udp", addr: cfg.Listen, err: err}
		}
	}
	var telemetryConn *net.UDPConn
	if cfg.TelemetryIn != "" {
		addr, err := net.ResolveUDPAddr("udp", cfg.TelemetryIn)
		if err == nil {
			telemetryConn, err = net.ListenUDP("udp", addr)
		}
		if err != nil {
			closeSockets()
			return &bindError{setting: cfg.setting("telemetry-in"), network: "udp", addr: cfg.TelemetryIn, err: err}
		}
		defer telemetryConn.Close()
	}
	if cfg.Forward != "" {
		d.fwd, err = newForwarder(cfg.Forward, cfg.ForwardWait, d.lateRefusal)
		if err != nil {
			closeSockets()
			return fmt.Errorf("cannot forward to %s: %w", cfg.Forward, unwrapSyscall(err))
		}
		defer d.fwd.Close()
	}

	var tun *tunnel.Drone
	var tunnelConn *net.UDPConn
	if cfg.tunnelOn() {
		if tunnelConn, tun, err = d.openTunnel(); err != nil {
			closeSockets()
			return err
		}
		defer tunnelConn.Close()
	}
	var onFrames app.FramesHandler
	if tun != nil {
		onFrames = tun.FromOperator
	}

	var hooks link.Hooks
	var metricsSrv *metricsServer
	if cfg.Metrics != "" {
		metricsSrv, err = startMetrics(cfg.Metrics, cfg.Transport, cfg.Relay != "", d.log)
		if err != nil {
			closeSockets()
			return err
		}
		hooks = metricsSrv.hooks
	}
	if cfg.Relay != "" {
		// Refused credentials or permissions fail here; an unreachable relay does not: the
		// drone serves --listen meanwhile and connects when the relay can be reached.
		relayConn, err = relay.Listen(relay.Config{URLs: cfg.relayURLs, DroneID: cfg.DroneID, Creds: relayCreds,
			Logger: d.log.With("component", "relay"), Hooks: relayHooks(metricsSrv), KeepTrying: true})
		if err != nil {
			closeSockets()
			if metricsSrv != nil {
				metricsSrv.listener.Close()
			}
			return err
		}
		d.relay = relayConn
	}

	mem := newLoginMemory(d.log)
	if dtlsMode {
		d.server, err = dtlslink.NewServer(dtlslink.ServerConfig{
			Conn:         conn,
			PSK:          psk,
			Passwords:    passwordChecker{&d.users, mem},
			Handler:      d.execute,
			Logger:       d.log,
			Hooks:        hooks,
			ReplayWindow: cfg.ReplayWindow,
			MaxSessions:  cfg.MaxSessions,
			LoginWorkers: cfg.LoginWorkers,
			OnFrames:     onFrames,
			MaxFrameAge:  cfg.MavlinkMaxAge,
		})
	} else {
		// One server, one table of sessions, over both sockets: each operator is answered
		// on the socket it came in on (link.ExtraConn).
		var linkConn link.PacketConn
		var extra []link.ExtraConn
		switch {
		case conn != nil && relayConn != nil:
			linkConn, extra = link.NewUDPConn(conn), []link.ExtraConn{relayConn}
		case conn != nil:
			linkConn = link.NewUDPConn(conn)
		default:
			linkConn = relayConn
		}
		d.server, err = link.NewServer(link.ServerConfig{
			Conn:         linkConn,
			Extra:        extra,
			PSK:          psk,
			DroneKey:     link.NewDroneKey(key),
			Auth:         authenticator{&d.users, mem},
			Handler:      d.execute,
			Logger:       d.log,
			Hooks:        hooks,
			ReplayWindow: cfg.ReplayWindow,
			MaxSessions:  cfg.MaxSessions,
			LoginWorkers: cfg.LoginWorkers,
			OnFrames:     onFrames,
			MaxFrameAge:  cfg.MavlinkMaxAge,
		})
	}
	var controlLn *control.Listener
	if err == nil {
		controlLn, err = d.openControl()
	}
	if err != nil {
		closeSockets()
		if metricsSrv != nil {
			metricsSrv.listener.Close()
		}
		return err
	}
	if key != nil {
		d.keyName = crypto.Fingerprint(&key.PublicKey)
	}

	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if telemetryConn != nil {
		wg.Go(func() { d.telemetryLoop(ctx, telemetryConn) })
	}
	wg.Go(func() { d.reloadLoop(ctx) })
	if tun != nil {
		tun.SetHooks(tunnelHooks(metricsSrv))
		wg.Go(func() {
			if err := tun.Run(ctx); err != nil {
				d.log.Error("MAVLink tunnel stopped", "err", err)
			}
		})
	}
	if metricsSrv != nil {
		wg.Go(func() { metricsSrv.serve(ctx, d.log) })
	}
	d.serveControl(ctx, &wg, controlLn)

	started := []any{"version", buildinfo.Version(), "transport", cfg.Transport, "listen", d.listenAddr()}
	if cfg.Relay != "" {
		started = append(started, "relay", cfg.Relay, "drone_id", cfg.DroneID)
	}
	if key != nil {
		started = append(started, "drone_key", crypto.Fingerprint(&key.PublicKey))
	}
	started = append(started, "users", db.Len(), "telemetry_in", cfg.TelemetryIn, "forward", cfg.Forward, "metrics", metricsAddr(metricsSrv))
	if tunnelConn != nil {
		started = append(started, "mavlink", tunnelConn.LocalAddr().String(), "mavlink_to", cfg.MavlinkTo, "mavlink_agg", cfg.MavlinkAgg)
	}
	// The memory formula of README.md ("Memory"): what the password checks may take.
	d.log.Info("password checks", "login_workers", cfg.LoginWorkers,
		"argon2_memory_mib", db.MaxHashMemoryKiB()/1024, "argon2_peak_mib", cfg.LoginWorkers*int(db.MaxHashMemoryKiB()/1024))
	d.log.Info("dronelinkd started", started...)
	err = d.server.Run(ctx)
	cancel()
	if telemetryConn != nil {
		telemetryConn.Close()
	}
	if err != nil {
		return fmt.Errorf("serving: %w", err)
	}
	d.log.Info("dronelinkd stopped")
	return nil
}

// openTunnel opens the MAVLink tunnel's socket towards the autopilot: bound to
// --mavlink-listen, or on an ephemeral port towards --mavlink-to.
func (d *daemon) openTunnel() (*net.UDPConn, *tunnel.Drone, error) {
	cfg := tunnel.DroneConfig{Aggregation: d.cfg.MavlinkAgg, Logger: d.log.With("component", "mavlink"),
		Broadcast: func(frames []byte, arrived time.Time) (int, error) { return d.server.BroadcastFrames(frames, arrived) },
		Reply:     func(session uint16, frames []byte) bool { return d.server.SendFramesTo(session, frames) }}
	var err error
	if d.cfg.MavlinkTo != "" {
		to, rerr := net.ResolveUDPAddr("udp", d.cfg.MavlinkTo)
		if rerr != nil {
			return nil, nil, fmt.Errorf("--mavlink-to %s: %w", d.cfg.MavlinkTo, rerr)
		}
		cfg.Autopilot = to.AddrPort()
		local := &net.UDPAddr{IP: net.IPv4zero}
		if to.IP.To4() == nil {
			local = &net.UDPAddr{IP: net.IPv6zero}
		}
		if to.IP.IsLoopback() {
			local = &net.UDPAddr{IP: to.IP}
		}
		if cfg.Conn, err = net.ListenUDP("udp", local); err != nil {
			return nil, nil, fmt.Errorf("cannot open the MAVLink socket towards %s: %w", d.cfg.MavlinkTo, unwrapSyscall(err))
		}
	} else if cfg.Conn, err = listenUDP(d.cfg.MavlinkListen); err != nil {
		return nil, nil, &bindError{setting: d.cfg.setting("mavlink-listen"), network: "udp", addr: d.cfg.MavlinkListen, err: err}
	}
	if a := cfg.Conn.LocalAddr().(*net.UDPAddr); !a.IP.IsLoopback() {
		d.log.Warn("the MAVLink socket is reachable beyond this computer: whoever can send to it can pose as the autopilot",
			"mavlink", a.String())
	}
	tun, err := tunnel.NewDrone(cfg)
	if err != nil {
		cfg.Conn.Close()
		return nil, nil, err
	}
	return cfg.Conn, tun, nil
}

// listenUDP opens the operators' socket.
func listenUDP(address string) (*net.UDPConn, error) {
	addr, err := net.ResolveUDPAddr("udp", address)
	if err != nil {
		return nil, err
	}
	return net.ListenUDP("udp", addr)
}

// metricsAddr is where metrics are served, or "" when they are not.
func metricsAddr(m *metricsServer) string {
	if m == nil {
		return ""
	}
	return m.listener.Addr().String()
}

// authenticator reads the current user database for every lookup, so a reload takes
// effect on the next handshake or login. Password checks go through mem.
type authenticator struct {
	db  *atomic.Pointer[userdb.DB]
	mem *loginMemory
}

// LookupKey implements link.Authenticator.
func (a authenticator) LookupKey(id crypto.KeyID) (*rsa.PublicKey, bool) {
	return a.db.Load().LookupKey(id)
}

// Authorize implements link.Authenticator.
func (a authenticator) Authorize(user string, key crypto.KeyID) (link.Role, link.LoginStatus) {
	return a.db.Load().Authorize(user, key)
}

// Login implements link.Authenticator.
func (a authenticator) Login(user string, password []byte, key crypto.KeyID) (role link.Role, status link.LoginStatus) {
	a.mem.check(func() { role, status = a.db.Load().Login(user, password, key) })
	return role, status
}

// passwordChecker reads the current user database for every login of the DTLS transport.
// Password checks go through mem.
type passwordChecker struct {
	db  *atomic.Pointer[userdb.DB]
	mem *loginMemory
}

// CheckPassword implements dtlslink.PasswordChecker.
func (p passwordChecker) CheckPassword(user string, password []byte) (role link.Role, status link.LoginStatus) {
	p.mem.check(func() { role, status = p.db.Load().CheckPassword(user, password) })
	return role, status
}

// UserRole implements dtlslink.PasswordChecker.
func (p passwordChecker) UserRole(user string) (link.Role, link.LoginStatus) {
	return p.db.Load().UserRole(user)
}

// execute is the command handler: print, forward, acknowledge. With --forward the
// acknowledgement is "ok" only if the kernel took this command's datagram and reported no
// refusal of it within --forward-wait (see forwarder); otherwise "failed", with the reason.
func (d *daemon) execute(_ context.Context, cmd link.Command) (link.AckStatus, []byte) {
	text := printable(cmd.Payload)
	d.outMu.Lock()
	fmt.Fprintf(d.out, "%s %s: %s\n", time.Now().UTC().Format(time.RFC3339), cmd.User, text)
	d.outMu.Unlock()
	if d.fwd != nil {
		if err := d.fwd.forward(cmd.Payload); err != nil {
			d.log.Error("forward failed", "user", cmd.User, "id", app.FormatID(cmd.ID), "forward", d.fwd.conn.RemoteAddr().String(), "err", unwrapSyscall(err))
			if re, ok := errors.AsType[*refusedError](err); ok {
				return link.AckFailed, []byte(re.Error())
			}
			return link.AckFailed, []byte("forward failed: " + unwrapSyscall(err).Error())
		}
	}
	return link.AckOK, []byte("executed: " + text)
}

// lateRefusal logs a refusal of a forwarded datagram that arrived after its command was
// acknowledged "ok" (later than --forward-wait).
func (d *daemon) lateRefusal(err error) {
	d.log.Warn("a forwarded command was refused after its acknowledgement; consider a longer --forward-wait", "err", err)
}

// batchBroadcaster is a linkServer that can send many telemetry payloads in one go
// (*link.Server: sendmmsg with UDP segmentation on Linux).
type batchBroadcaster interface {
	BroadcastBatch(payloads [][]byte) (int, error)
}

// telemetryLoop streams each local datagram to every logged-in operator. It reads the
// local socket in batches (recvmmsg) and, on the native transport, hands each batch to
// BroadcastBatch, so a burst of telemetry costs a few system calls instead of two per
// datagram per operator. An idle feed still goes out at once: a batch is whatever has
// arrived, one datagram or many.
func (d *daemon) telemetryLoop(ctx context.Context, conn *net.UDPConn) {
	local := link.NewUDPConn(conn)
	msgs := make([]link.Datagram, link.BatchSize)
	// One byte more than the largest payload: a longer datagram is cut to it and so seen
	// to be too large, without 64 KiB buffers.
	bufs := make([]byte, len(msgs)*(link.MaxTelemetryPayload+1))
	for i := range msgs {
		msgs[i].Buf = bufs[i*(link.MaxTelemetryPayload+1) : (i+1)*(link.MaxTelemetryPayload+1)]
	}
	payloads := make([][]byte, 0, len(msgs))
	batcher, batched := d.server.(batchBroadcaster)
	var oversize atomic.Int64
	for {
		n, err := local.ReadBatch(msgs)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			d.log.Warn("telemetry read failed", "err", err)
			continue
		}
		payloads = payloads[:0]
		for _, m := range msgs[:n] {
			if m.N > link.MaxTelemetryPayload {
				if oversize.Add(1) == 1 {
					d.log.Warn("telemetry datagram too large, dropped", "max", link.MaxTelemetryPayload)
				}
				continue
			}
			payloads = append(payloads, m.Buf[:m.N])
		}
		if batched {
			_, _ = batcher.BroadcastBatch(payloads) // sizes checked above: it cannot refuse
			continue
		}
		for _, p := range payloads {
			_, _ = d.server.Broadcast(p)
		}
	}
}

// reloadLoop reloads the user database on SIGHUP and when the file changes, then ends the
// sessions the new database no longer allows.
func (d *daemon) reloadLoop(ctx context.Context) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	ticker := time.NewTicker(d.cfg.ReloadInterval)
	defer ticker.Stop()
	last, _ := fileStamp(d.cfg.UsersPath)
	for {
		force := false
		select {
		case <-ctx.Done():
			return
		case <-hup:
			force = true
		case <-ticker.C:
		}
		stamp, err := fileStamp(d.cfg.UsersPath)
		if !force && (err != nil || stamp == last) {
			continue
		}
		last = stamp
		d.reload()
	}
}

// reload loads the user database; on failure the previous one stays in force.
func (d *daemon) reload() {
	db, err := userdb.Load(d.cfg.UsersPath)
	if err != nil {
		d.log.Error("user database reload failed; keeping the previous one", "err", err)
		return
	}
	d.users.Store(db)
	n := d.server.Revoke(revokedBy(db, d.cfg.Transport))
	d.log.Info("user database reloaded", "users", db.Len(), "sessions_revoked", n)
}

// revokedBy is the predicate that selects the sessions db no longer allows: a removed user
// or changed role, and in native mode also a removed key. DTLS-PSK sessions have no
// operator key; one that has not logged in yet is checked at its login.
func revokedBy(db *userdb.DB, transport string) func(link.SessionInfo) bool {
	return func(s link.SessionInfo) bool {
		if transport == TransportNative && !db.HasKey(s.OperatorKey) {
			return true
		}
		if s.User == "" {
			return false
		}
		u, ok := db.User(s.User)
		if !ok || u.Role != s.Role {
			return true
		}
		return transport == TransportNative && !db.KeyAuthorisedFor(s.User, s.OperatorKey)
	}
}

// fileStamp identifies a version of a file: a change of any field means it was replaced
// or written.
type stamp struct {
	size  int64
	mtime time.Time
	inode uint64
}

func fileStamp(path string) (stamp, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return stamp{}, err
	}
	s := stamp{size: fi.Size(), mtime: fi.ModTime()}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		s.inode = st.Ino
	}
	return s, nil
}

// unwrapSyscall shortens "listen udp 0.0.0.0:5000: bind: address already in use" to its cause.
func unwrapSyscall(err error) error {
	var se *os.SyscallError
	if errors.As(err, &se) {
		return se.Err
	}
	return err
}
