package operator

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spf13/cobra"

	linkapp "github.com/dronelink/dronelink/pkg/app"
	"github.com/dronelink/dronelink/pkg/link"
	"github.com/dronelink/dronelink/pkg/tunnel"
)

// defaultStation is where QGroundControl listens for MAVLink by default.
const defaultStation = "127.0.0.1:14550"

func (a *app) newGCSCmd() *cobra.Command {
	var f linkFlags
	var to, listen, controlPath string
	var maxAge time.Duration
	cmd := &cobra.Command{
		Use:   "gcs [--transport native|dtls] {--drone HOST:PORT|NAME | --relay URL --drone-id NAME} --drone-pub PATH --key PATH --psk PATH --user NAME --password-file PATH [--to HOST:PORT | --listen HOST:PORT]",
		Short: "Tunnel MAVLink between a ground control station and the drone's autopilot",
		Long: `Log in to a drone and carry MAVLink between a ground control station here
(QGroundControl, Mission Planner, MAVProxy) and the autopilot on the drone (dronelinkd
--mavlink-listen or --mavlink-to), inside the encrypted, authenticated session.

  --to HOST:PORT      send the drone's frames to a ground station listening there (default
                      127.0.0.1:14550, where QGroundControl listens) and take what it sends
                      back to this tool's socket
  --listen HOST:PORT  bind there and answer the most recent sender (for a ground station
                      set up to connect to a UDP server)

What your role allows reaches the autopilot: a pilot's frames all pass; an observer's only
when they read (parameters, missions, logs, data requests), never heartbeats, commands
that change the vehicle, or stick input. Frames held back on the radio path longer than
--max-age are dropped, both ways, rather than shown or executed late.

It runs until interrupted (exit 0) or until the drone ends the session for good (the user
or key revoked: exit 6). The first login must succeed within --timeout; after that a lost
link, a rekey or a restart of the drone's daemon is reconnected on its own while the ground
station's socket stays open.
Standard error says when the link is up, lost and back.

` + relayHelp + `

` + transportHelp + `

` + gcsExitCodes,
		Args: noArgs,
	}
	f.register(cmd, "give up when the first login has not succeeded within this `DURATION`")
	fs := cmd.Flags()
	fs.StringVar(&to, "to", "", "send the drone's frames to a ground station at `HOST:PORT` (default "+defaultStation+")")
	fs.StringVar(&listen, "listen", "", "bind `HOST:PORT` for the ground station and answer the most recent sender")
	fs.DurationVar(&maxAge, "max-age", linkapp.DefaultMaxFrameAge, "drop frames from the drone older than this on arrival")
	fs.StringVar(&controlPath, "control", "", "serve this link's status (for \"dronelink status --control PATH\") on a unix socket at `PATH`, mode 0600")
	cmd.RunE = a.runE(func(cmd *cobra.Command, _ []string) error {
		if to != "" && listen != "" {
			return usagef("--to and --listen: give one of them")
		}
		if maxAge <= 0 || maxAge > time.Minute {
			return usagef("--max-age %v: want more than 0 and at most 1m", maxAge)
		}
		if to == "" && listen == "" {
			to = defaultStation
		}
		conn, station, err := openStation(to, listen)
		if err != nil {
			return err
		}
		if local := conn.LocalAddr().(*net.UDPAddr); !local.IP.IsLoopback() {
			fmt.Fprintf(a.stderr, "dronelink gcs: warning: the ground station socket %s is reachable beyond this computer: whoever can send to it flies with your role\n", local)
		}
		setup, err := a.prepare(&f)
		if err != nil {
			conn.Close()
			return err
		}
		defer setup.wipe()
		return a.gcs(cmd.Context(), setup, conn, station, maxAge, controlPath)
	})
	return cmd
}

// gcsExitCodes are the exit codes of gcs (of exitCodesHelp, all but 4: gcs sends no
// command of its own, and a drone's shutdown is a link loss it survives).
const gcsExitCodes = `Exit codes:
  0  interrupted: the normal way to stop
  1  local error: missing or garbled file, bad input, the ground station's socket
  2  usage error: bad flags or arguments
  3  refused by the drone at handshake or login: wrong password, unknown user,
     key not authorised for the user, operator key not authorised on the drone,
     drone key mismatch
  5  the first login did not succeed within --timeout: no answer (drone down or
     unreachable, nothing listening there, PSK mismatch), or interrupted before it
  6  session closed by the drone for good: user or key revoked`

// openStation opens the ground station's socket: bound to listen, or on an ephemeral port
// of the family (and, for a loopback station, the interface) of to.
func openStation(to, listen string) (*net.UDPConn, netip.AddrPort, error) {
	if listen != "" {
		addr, err := net.ResolveUDPAddr("udp", listen)
		if err != nil {
			return nil, netip.AddrPort{}, usagef("bad --listen %q: want HOST:PORT", listen)
		}
		conn, err := net.ListenUDP("udp", addr)
		if err != nil {
			return nil, netip.AddrPort{}, localf("cannot listen for the ground station on %s: %v", listen, err)
		}
		return conn, netip.AddrPort{}, nil
	}
	addr, err := net.ResolveUDPAddr("udp", to)
	if err != nil || addr.Port == 0 {
		return nil, netip.AddrPort{}, usagef("bad --to %q: want HOST:PORT", to)
	}
	local := &net.UDPAddr{IP: net.IPv4zero}
	switch {
	case addr.IP.IsLoopback():
		local = &net.UDPAddr{IP: addr.IP}
	case addr.IP.To4() == nil:
		local = &net.UDPAddr{IP: net.IPv6zero}
	}
	conn, err := net.ListenUDP("udp", local)
	if err != nil {
		return nil, netip.AddrPort{}, localf("cannot open a UDP socket for the ground station: %v", err)
	}
	station := addr.AddrPort()
	return conn, netip.AddrPortFrom(station.Addr().Unmap(), station.Port()), nil
}

// gcs logs in and runs the tunnel until ctx ends or the session does.
func (a *app) gcs(ctx context.Context, s *linkSetup, conn *net.UDPConn, station netip.AddrPort, maxAge time.Duration, controlPath string) error {
	ctx, stopSignals := a.signalContext(ctx)
	defer stopSignals()
	controlLn, err := openGCSControl(controlPath)
	if err != nil {
		conn.Close()
		return err
	}
	var client atomic.Pointer[linkSession]
	gcs, err := tunnel.NewGCS(tunnel.GCSConfig{Conn: conn, Station: station,
		Send: func(frames []byte) error {
			if c := client.Load(); c != nil {
				return (*c).SendFrames(frames)
			}
			return linkapp.ErrNotLoggedIn
		}})
	if err != nil {
		conn.Close()
		if controlLn != nil {
			controlLn.Close()
		}
		return err
	}
	var runWG sync.WaitGroup
	defer runWG.Wait()
	runCtx, stopRun := context.WithCancel(ctx)
	defer stopRun()
	runWG.Go(func() {
		if err := gcs.Run(runCtx); err != nil {
			fmt.Fprintf(a.stderr, "dronelink gcs: ground station socket: %v\n", err)
		}
	})

	where := "to the ground station at " + station.String()
	if !station.IsValid() {
		where = "for a ground station on " + conn.LocalAddr().String()
	}
	status := &gcsStatus{a: a, drone: s.droneName, user: s.user, where: where}
	ctl := &gcsControl{setup: s, link: status, started: time.Now()}
	ctlCtx, stopCtl := context.WithCancel(ctx)
	ctlDone := a.serveGCSControl(ctlCtx, controlLn, ctl)
	defer func() { stopCtl(); <-ctlDone }()
	deadline := time.Now().Add(s.timeout)
	dialCtx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	prog := a.newProgress(deadline)
	defer prog.clear()
	sess, err := a.dial(dialCtx, s, prog, dialOptions{onFrames: gcs.FromDrone, maxFrameAge: maxAge, onEvent: status.event, survive: true})
	if err != nil {
		return err
	}
	client.Store(&sess.client)
	ctl.client.Store(&sess.client)
	prog.setDeadline(time.Time{})
	status.up(sess.client.Role())
	select {
	case <-ctx.Done():
	case <-sess.client.Done():
	}
	sessionErr := sess.client.Err()
	sess.client.Close()
	if ctx.Err() != nil {
		return nil // interrupted: the normal way to stop
	}
	return a.linkFailure(ctx, sessionErr, sess.state, s, "")
}

// gcsStatus writes one line to standard error for each change of the tunnel's link.
type gcsStatus struct {
	a                  *app
	drone, user, where string
	mu                 sync.Mutex
	started, lost      bool
}

func (g *gcsStatus) printf(format string, args ...any) {
	fmt.Fprintf(g.a.stderr, "dronelink gcs: "+format+"\n", args...)
}

// up reports the first login.
func (g *gcsStatus) up(role link.Role) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.started = true
	g.printf("link up: logged in to the drone at %s as %s (%s); MAVLink %s", g.drone, g.user, role, g.where)
}

// event follows the session; it runs under the client's lock and only prints.
func (g *gcsStatus) event(e link.Event) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.started {
		return
	}
	switch e.Kind {
	case link.EventLinkLost:
		if !g.lost {
			g.lost = true
			g.printf("link lost: the drone at %s is silent or restarting; reconnecting", g.drone)
		}
	case link.EventLinkRestored, link.EventLoggedIn:
		if g.lost {
			g.lost = false
			g.printf("link back: the drone at %s is heard again", g.drone)
		}
	}
}
