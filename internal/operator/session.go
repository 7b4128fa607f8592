package operator

import (
	"context"
	"crypto/rsa"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/dronelink/dronelink/pkg/crypto"
	"github.com/dronelink/dronelink/pkg/dtlslink"
	"github.com/dronelink/dronelink/pkg/link"
	"github.com/dronelink/dronelink/pkg/relay"
)

// Transports.
const (
	transportNative = "native" // the dronelink protocol (pkg/link)
	transportDTLS   = "dtls"   // DTLS 1.2 PSK (pkg/dtlslink)
)

// transportHelp documents --transport in the --help texts of send and listen.
const transportHelp = `With --transport dtls the tool speaks standard DTLS 1.2 with a pre-shared key to a
dronelinkd --transport dtls (or any DTLS-PSK peer that speaks the dronelink messages):
PSK = the fleet PSK, PSK identity = the user name, then the same password login. There is
no operator key and no pinned drone key in that mode, so --key and --drone-pub are not
needed (and ignored): the fleet PSK alone authenticates the drone, and the refusals "key
not authorised" and "drone key mismatch" cannot occur.`

// linkFlags are the flags send and listen share.
type linkFlags struct {
	transport, drone, dronePub, key, psk, user string
	password                                   passwordFlags
	relay                                      relayFlags
	timeout                                    time.Duration
	stats                                      bool // send --stats

	cmd     *cobra.Command
	profile *droneProfile     // the drone --drone named in the profile, if it named one
	sources map[string]string // flag -> where its value came from, if not the command line
}

func (f *linkFlags) register(cmd *cobra.Command, timeoutHelp string) {
	f.cmd, f.sources = cmd, map[string]string{}
	fs := cmd.Flags()
	fs.StringVar(&f.transport, "transport", transportNative, "link protocol `native|dtls`: native is the dronelink protocol, dtls is DTLS 1.2 with the fleet PSK")
	fs.StringVar(&f.drone, "drone", "", "the drone's `HOST:PORT`, or the NAME of a drone in the profile (--config), which gives the other flags")
	f.relay.register(fs)
	fs.StringVar(&f.dronePub, "drone-pub", "", "the drone's pinned public key file `PATH` (not needed with --transport dtls)")
	fs.StringVar(&f.key, "key", "", "your private key file `PATH`, mode 0600: refused if group or others can access it (not needed with --transport dtls)")
	fs.StringVar(&f.psk, "psk", "", "the fleet PSK file `PATH`, mode 0600: refused if group or others can access it")
	fs.StringVar(&f.user, "user", "", "log in as user `NAME`")
	f.password.register(cmd)
	fs.DurationVar(&f.timeout, "timeout", 15*time.Second, timeoutHelp)
	// --drone (or --relay with --drone-id), --psk and --user are required unless the
	// profile gives them: applyProfile checks.
}

// linkSetup is everything needed to dial, loaded and checked.
type linkSetup struct {
	transport   string
	drone       netip.AddrPort
	relay       *relay.Config   // reach the drone through the NATS relay (drone is relay.DroneAddr)
	droneName   string          // as given on the command line, for messages ("alpha (HOST:PORT)" for a profile's drone)
	operatorKey *rsa.PrivateKey // native only
	dronePublic *rsa.PublicKey  // native only
	psk         crypto.PSK
	user        string
	password    []byte
	timeout     time.Duration
	stats       bool // print each acknowledgement's stats (send --stats)

	// profileName is the profile's name of the drone, if --drone named one.
	profileName string
	// dronePubSource names where the pinned drone key's path came from, for messages.
	dronePubSource string
}

// peerName is the drone's address as status displays show it: HOST:PORT, or
// "relay:ID" for a drone reached through the relay.
func (s *linkSetup) peerName() string {
	if s.relay != nil {
		return "relay:" + s.relay.DroneID
	}
	return s.drone.String()
}

// wipe clears the secrets the setup holds.
func (s *linkSetup) wipe() {
	crypto.Wipe(s.psk[:])
	crypto.Wipe(s.password)
}

// prepare checks the flags and loads keys, PSK and password, cheapest checks first.
func (a *app) prepare(f *linkFlags) (*linkSetup, error) {
	if err := a.applyProfile(f); err != nil {
		return nil, err
	}
	if f.timeout <= 0 {
		return nil, usagef("--timeout must be positive, got %s", f.timeout)
	}
	if n := len(f.user); n == 0 || n > link.MaxUserNameSize {
		return nil, usagef("--user must be 1 to %d bytes", link.MaxUserNameSize)
	}
	switch f.transport {
	case transportNative:
		var missing []string
		for _, r := range []struct{ name, value string }{{"drone-pub", f.dronePub}, {"key", f.key}} {
			if r.value == "" {
				missing = append(missing, strconv.Quote(r.name))
			}
		}
		if len(missing) > 0 {
			return nil, usagef("required flag(s) %s not set (needed unless --transport dtls)", strings.Join(missing, ", "))
		}
	case transportDTLS:
		if !dtlslink.ValidUserName(f.user) {
			// The user name is the DTLS PSK identity; the drone hands out no PSK for others.
			return nil, usagef("--user %q: with --transport dtls, want 1 to %d characters from A-Z a-z 0-9 . _ -", f.user, link.MaxUserNameSize)
		}
	default:
		return nil, usagef("--transport %q: want native or dtls", f.transport)
	}
	relayCfg, err := f.relay.config(f.drone, f.source)
	if err != nil {
		return nil, err
	}
	s := &linkSetup{transport: f.transport, droneName: f.drone, user: f.user, timeout: f.timeout,
		stats: f.stats, dronePubSource: f.source("drone-pub"), relay: relayCfg}
	if relayCfg != nil {
		if f.transport != transportNative {
			return nil, usagef("--relay carries the native protocol only: it cannot be used with --transport %s", f.transport)
		}
		s.drone, s.droneName = relay.DroneAddr, relayName(relayCfg)
	} else if s.drone, err = resolveDrone(f.drone); err != nil {
		return nil, err
	}
	if f.profile != nil {
		s.droneName, s.profileName = fmt.Sprintf("%s (%s)", f.profile.Name, s.droneName), f.profile.Name
	}
	if f.transport == transportNative {
		if s.dronePublic, err = loadPublicKey(f.dronePub, f.source("drone-pub")); err != nil {
			return nil, err
		}
		if s.operatorKey, err = loadPrivateKey(f.key, f.source("key")); err != nil {
			return nil, err
		}
	}
	if s.psk, err = loadPSK(f.psk, f.source("psk")); err != nil {
		return nil, err
	}
	if s.password, err = a.readPassword(f.password, fmt.Sprintf("Password for %s: ", f.user), false); err != nil {
		s.wipe()
		return nil, err
	}
	return s, nil
}

// resolveDrone parses HOST:PORT, resolving a host name.
func resolveDrone(s string) (netip.AddrPort, error) {
	host, port, err := net.SplitHostPort(s)
	if err != nil || host == "" || port == "" {
		return netip.AddrPort{}, usagef("bad --drone %q: want HOST:PORT", s)
	}
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), nil
	}
	ua, err := net.ResolveUDPAddr("udp", s)
	if err != nil {
		return netip.AddrPort{}, localf("cannot resolve the drone address %s: %v", s, err)
	}
	ap := ua.AddrPort()
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), nil
}

// openConn opens the socket towards the drone: a UDP socket, or the relay's connection.
func (a *app) openConn(drone netip.AddrPort, relayCfg *relay.Config, timeout time.Duration) (link.PacketConn, error) {
	if relayCfg != nil {
		return a.dialRelay(*relayCfg, timeout)
	}
	conn, err := link.ListenUDP(localAddressFor(drone))
	if err != nil {
		return nil, localf("cannot open a UDP socket: %v", err)
	}
	return conn, nil
}

// localAddressFor is the wildcard address of the drone's address family.
func localAddressFor(drone netip.AddrPort) string {
	if drone.Addr().Is4() {
		return "0.0.0.0:0"
	}
	return "[::]:0"
}

// dialState follows a client's progress for the progress line and for error messages.
type dialState struct {
	mu          sync.Mutex
	established bool
	loggedIn    bool
	lastRefusal error // the drone's last non-final refusal of an initiation
	linkLost    bool
}

func (d *dialState) snapshot() (established, loggedIn bool, refusal error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.established, d.loggedIn, d.lastRefusal
}

// linkSession is a logged-in session with a drone, whatever the transport: *link.Client
// (native) and *dtlslink.Client (DTLS-PSK) both provide it.
type linkSession interface {
	// CommandWith sends one command and waits for its acknowledgement.
	CommandWith(ctx context.Context, payload []byte, opts link.CommandOptions) (link.Ack, error)
	// SendFrames sends tunnelled frames once, unacknowledged.
	SendFrames(frames []byte) error
	// Role is the role the drone granted at login.
	Role() link.Role
	// Done is closed when the session ends for good; Err then says why.
	Done() <-chan struct{}
	Err() error
	// Close ends the session, telling the drone.
	Close() error
	// Estimate is the client's view of the link: round trip and loss.
	Estimate() link.LinkEstimate
}

var (
	_ linkSession = (*link.Client)(nil)
	_ linkSession = (*dtlslink.Client)(nil)
)

// session is a dialled client with what send and listen need around it.
type session struct {
	client linkSession
	state  *dialState
	prog   *progress
	setup  *linkSetup
}

// dialOptions are what a command adds to a session: where telemetry and tunnelled frames
// go, how old frames may be, and who else hears of the session's events. Zero fields: none.
type dialOptions struct {
	onTelemetry func([]byte)
	onFrames    func([]byte)
	maxFrameAge time.Duration
	onEvent     func(link.Event)
	survive     bool // reconnect after the drone shuts down (a restart)
}

// events is the OnEvent of a session: the progress line, then o.onEvent.
func (a *app) events(o dialOptions, state *dialState, prog *progress, s *linkSetup) func(link.Event) {
	return func(e link.Event) {
		a.onEvent(e, state, prog, s)
		if o.onEvent != nil {
			o.onEvent(e)
		}
	}
}

// dial sets up a session over the setup's transport, logging in, until ctx ends.
func (a *app) dial(ctx context.Context, s *linkSetup, prog *progress, o dialOptions) (*session, error) {
	if s.transport == transportDTLS {
		return a.dialDTLS(ctx, s, prog, o)
	}
	conn, err := a.openConn(s.drone, s.relay, s.timeout)
	if err != nil {
		return nil, err
	}
	state := &dialState{}
	cfg := link.ClientConfig{
		Conn:        conn,
		Drone:       s.drone,
		PSK:         s.psk,
		OperatorKey: s.operatorKey,
		DronePublic: s.dronePublic,
		User:        s.user,
		Password:    s.password,
		OnTelemetry: o.onTelemetry,
		OnFrames:    o.onFrames,
		MaxFrameAge: o.maxFrameAge,
		OnEvent:     a.events(o, state, prog, s),

		SurviveShutdown: o.survive,
	}
	client, err := link.Dial(ctx, cfg)
	if err != nil {
		_ = conn.Close() // Dial closes it on most failures; closing twice is harmless
		return nil, a.linkFailure(ctx, err, state, s, "")
	}
	return &session{client: client, state: state, prog: prog, setup: s}, nil
}

// dialDTLS sets up a DTLS-PSK session, logging in, until ctx ends.
func (a *app) dialDTLS(ctx context.Context, s *linkSetup, prog *progress, o dialOptions) (*session, error) {
	state := &dialState{}
	client, err := dtlslink.Dial(ctx, dtlslink.ClientConfig{
		Drone:       s.drone,
		PSK:         s.psk,
		User:        s.user,
		Password:    s.password,
		OnTelemetry: o.onTelemetry,
		OnFrames:    o.onFrames,
		MaxFrameAge: o.maxFrameAge,
		OnEvent:     a.events(o, state, prog, s),

		SurviveShutdown: o.survive,
	})
	if err != nil {
		return nil, a.linkFailure(ctx, err, state, s, "")
	}
	return &session{client: client, state: state, prog: prog, setup: s}, nil
}

// onEvent records progress and shows it. It runs on the client's goroutines and must not
// block for long.
func (a *app) onEvent(e link.Event, st *dialState, prog *progress, s *linkSetup) {
	st.mu.Lock()
	switch e.Kind {
	case link.EventEstablished:
		st.established = true
		st.lastRefusal = nil
	case link.EventLoggedIn:
		st.loggedIn = true
	case link.EventRefused:
		st.lastRefusal = e.Err
	case link.EventLinkLost:
		st.linkLost = true
	case link.EventLinkRestored:
		st.linkLost = false
	}
	loggedIn := st.loggedIn
	st.mu.Unlock()

	switch e.Kind {
	case link.EventHandshakeSent:
		if loggedIn {
			prog.show("link to the drone at %s: new handshake, attempt %d", s.droneName, e.Attempt)
		} else {
			prog.showLeft("waiting for the drone at %s: handshake attempt %d", s.droneName, e.Attempt)
		}
	case link.EventEstablished:
		if !loggedIn {
			prog.showLeft("session with the drone at %s: logging in as %s", s.droneName, s.user)
		} else {
			prog.clear()
		}
	case link.EventLoginSent:
		if e.Attempt > 1 {
			prog.showLeft("logging in as %s: attempt %d", s.user, e.Attempt)
		}
	case link.EventLoggedIn:
		prog.clear()
	case link.EventCommandRetry:
		prog.showLeft("waiting for the acknowledgement: attempt %d", e.Attempt)
	case link.EventRefused:
		prog.showLeft("the drone at %s refused the handshake (%v); retrying", s.droneName, e.Err)
	case link.EventLinkLost:
		prog.show("link to the drone at %s lost; reconnecting", s.droneName)
	case link.EventLinkRestored:
		prog.clear()
	}
}

// linkFailure phrases an error from Dial, Command or the session's end as one line with
// its exit code. stage names what was awaited after the login ("acknowledgement"), if
// anything.
func (a *app) linkFailure(ctx context.Context, err error, st *dialState, s *linkSetup, stage string) error {
	var loginErr *link.LoginError
	var closedErr *link.ClosedError
	switch {
	case errors.As(err, &loginErr):
		return failf(ExitRefused, "%s", loginErr.Error())
	case errors.As(err, &closedErr):
		return failf(ExitClosed, "%s", closedErr.Error())
	case errors.Is(err, link.ErrWrongDroneKey):
		return failf(ExitRefused, "drone refused the session: %v (is %s the key of the drone at %s?)", link.ErrWrongDroneKey, s.dronePubSource, s.droneName)
	case errors.Is(err, link.ErrUnknownOperatorKey):
		return failf(ExitRefused, "drone refused the session: %v (ask the drone's administrator to authorise this key, %s)", link.ErrUnknownOperatorKey, crypto.Fingerprint(&s.operatorKey.PublicKey))
	case errors.Is(err, link.ErrBadSignature):
		return failf(ExitRefused, "drone refused the session: %v", link.ErrBadSignature)
	case errors.Is(err, dtlslink.ErrHandshakeRefused):
		return failf(ExitRefused, "%v", err)
	case errors.Is(err, link.ErrNoListener):
		return failf(ExitNoAnswer, "%v", err)
	}
	if ctx.Err() == nil && !errors.Is(err, context.DeadlineExceeded) {
		return localf("%v", err)
	}
	established, loggedIn, refusal := st.snapshot()
	interrupted := errors.Is(ctx.Err(), context.Canceled)
	var what, note string
	switch {
	case !established && refusal != nil:
		what = fmt.Sprintf("no session with the drone at %s: it kept refusing (%v)", s.droneName, refusal)
	case !established:
		what = fmt.Sprintf("no answer from the drone at %s", s.droneName)
	case !loggedIn:
		what = fmt.Sprintf("no answer to the login from the drone at %s", s.droneName)
	case stage != "" && interrupted:
		what = fmt.Sprintf("no %s from the drone at %s", stage, s.droneName)
		note = " (the command may or may not have been executed"
		if deadline, ok := ctx.Deadline(); ok {
			note += "; the drone may still execute it until " + deadline.Format("15:04:05") + ", the deadline it carries, unless a command you issue later runs first"
		}
		note += ")"
	case stage != "":
		what = fmt.Sprintf("no %s from the drone at %s", stage, s.droneName)
		note = " (the command may have been executed, its acknowledgement lost; the drone will not execute the command any more: it carries its deadline)"
	default:
		what = fmt.Sprintf("no answer from the drone at %s", s.droneName)
	}
	if interrupted {
		return failf(ExitNoAnswer, "interrupted: %s yet%s", what, note)
	}
	msg := fmt.Sprintf("%s within %s%s", what, shortDuration(s.timeout), note)
	if !established && refusal == nil {
		msg += " (is it running? same PSK?)"
	}
	return failf(ExitNoAnswer, "%s", msg)
}

// shortDuration prints 15s, 1m30s, 2m rather than 2m0s.
func shortDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// progress is a single status line on a terminal, overwritten in place. Disabled, it
// prints nothing.
type progress struct {
	mu       sync.Mutex
	w        io.Writer
	enabled  bool
	deadline time.Time
	shown    bool
}

func (a *app) newProgress(deadline time.Time) *progress {
	return &progress{w: a.stderr, enabled: a.progress, deadline: deadline}
}

// show replaces the status line.
func (p *progress) show(format string, args ...any) {
	if p == nil || !p.enabled {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	fmt.Fprintf(p.w, "\r%s\x1b[K", oneLine(fmt.Sprintf(format, args...)))
	p.shown = true
}

// showLeft shows the line with the time left before the deadline.
func (p *progress) showLeft(format string, args ...any) {
	if p == nil || !p.enabled {
		return
	}
	msg := fmt.Sprintf(format, args...)
	p.mu.Lock()
	deadline := p.deadline
	p.mu.Unlock()
	if !deadline.IsZero() {
		// Rounded up: the first attempt of a 15s run shows "15s left".
		left := max((time.Until(deadline) + time.Second - 1).Truncate(time.Second), 0)
		msg += fmt.Sprintf(", %s left", shortDuration(left))
	}
	p.show("%s", msg)
}

// setDeadline changes the deadline showLeft counts down to (zero: none).
func (p *progress) setDeadline(d time.Time) {
	if p == nil {
		return
	}
	p.mu.Lock()
	p.deadline = d
	p.mu.Unlock()
}

// clear removes the status line.
func (p *progress) clear() {
	if p == nil || !p.enabled {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.shown {
		fmt.Fprint(p.w, "\r\x1b[K")
		p.shown = false
	}
}
