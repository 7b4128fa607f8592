package operator

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"sync/atomic"
	"time"

	"github.com/spf13/cobra"

	"github.com/dronelink/dronelink/internal/buildinfo"
	"github.com/dronelink/dronelink/internal/control"
	"github.com/dronelink/dronelink/pkg/crypto"
	"github.com/dronelink/dronelink/pkg/link"
)

// defaultControlPath is where dronelinkd serves its control socket under the systemd unit
// in deploy/ (RuntimeDirectory=dronelinkd).
const defaultControlPath = "/run/dronelinkd/control.sock"

func (a *app) newStatusCmd() *cobra.Command {
	var path string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "status [--control PATH] [--json]",
		Short: "Show the live sessions of a running dronelinkd, or the link of a running gcs",
		Long: `Show, like "wg show", what a running program says on its control socket (a unix
socket of mode 0600; connect as the user the program runs as, or as root):

  dronelinkd --control PATH    every operator session: user and role, operator key,
                               address, since when, latest handshake, round trip,
                               loss and traffic
  dronelink gcs --control PATH its link to the drone: the same, seen from the operator

The round trip is the latest handshake's (the operator rekeys every 2 minutes): the drone
measures from its response to the operator's first datagram on the new session, the
operator from its initiation to the response (which includes the drone's RSA work). Loss
is estimated from the gaps in the peer's datagram counters: datagrams that never arrived,
as a share of all the peer sent. Traffic counts data datagrams (handshakes aside) since
the session began; rekeys continue a session. The DTLS transport shows sessions without
round trip, loss and traffic.

--json prints the control socket's JSON document instead (the same fields, times in
RFC 3339, round trips in seconds).

Exit codes: 0 shown, 1 no control socket, nothing answering on it, or no permission,
2 usage error.`,
		Args: noArgs,
	}
	cmd.Flags().StringVar(&path, "control", defaultControlPath, "the control socket `PATH` (dronelinkd --control, dronelink gcs --control)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the JSON document")
	cmd.RunE = a.runE(func(cmd *cobra.Command, _ []string) error {
		if path == "" {
			return usagef("--control: want the PATH of a control socket")
		}
		st, err := control.Fetch(cmd.Context(), path)
		if err != nil {
			return localf("%v", err)
		}
		if asJSON {
			b, err := json.MarshalIndent(st, "", "  ")
			if err != nil {
				return localf("cannot encode the status: %v", err)
			}
			_, err = fmt.Fprintf(a.stdout, "%s\n", b)
			return err
		}
		return renderStatus(a.stdout, st)
	})
	return cmd
}

// renderStatus writes a status in the manner of "wg show": a header block for the
// program, then one block per session.
func renderStatus(w io.Writer, st control.Status) error {
	now := st.Now
	if now.IsZero() {
		now = time.Now()
	}
	var b strings.Builder
	line := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	field := func(name, value string) {
		if value != "" {
			line("  %s: %s", name, clean(value))
		}
	}
	gcs := st.Program == control.ProgramGCS
	what := "drone"
	if gcs {
		what = "ground station"
	}
	line("%s: %s %s, transport %s", what, clean(st.Program), clean(st.Build), clean(st.Transport))
	if gcs {
		field("drone", st.Drone)
		field("drone key", st.Key)
	} else {
		field("listening", st.Listen)
		field("key", st.Key)
	}
	if r := st.Relay; r != nil {
		state := "connecting"
		if r.Connected {
			state = "connected to " + r.Server
			if r.ServerName != "" {
				state += " (" + r.ServerName + ")"
			}
		} else if r.Server != "" {
			state = "reconnecting (last " + r.Server + ")"
		}
		field("relay", fmt.Sprintf("drone id %s via %s: %s, %d reconnects", r.DroneID, r.Servers, state, r.Reconnects))
	}
	if !st.Started.IsZero() {
		field("up", ago(now.Sub(st.Started), ""))
	}
	if !gcs {
		field("sessions", fmt.Sprint(len(st.Sessions)))
	}
	for _, s := range st.Sessions {
		line("")
		if gcs {
			line("link: %s", clean(s.State))
		} else {
			line("session: %d", s.Index)
		}
		who := s.User
		if who == "" {
			who = "(not logged in)"
		} else if s.Role != "" {
			who += " (" + s.Role + ")"
		}
		field("user", who)
		if gcs {
			field("drone address", s.Peer)
			if s.Index != 0 {
				field("session", fmt.Sprint(s.Index))
			}
		} else {
			field("state", s.State)
			field("operator key", s.Key)
			field("identity", s.Identity)
			field("address", s.Peer)
		}
		if !s.Since.IsZero() {
			field("since", ago(now.Sub(s.Since), " ago"))
		}
		if !s.Handshake.IsZero() {
			field("latest handshake", ago(now.Sub(s.Handshake), " ago"))
		}
		if !s.LastReceived.IsZero() {
			field("last heard", ago(now.Sub(s.LastReceived), " ago"))
		}
		if s.RTTSeconds > 0 {
			field("round trip", roundTrip(s.RTT()))
		}
		if t := s.Traffic; t != nil {
			field("loss", loss(t))
			field("transfer", fmt.Sprintf("%s received, %s sent (%d / %d datagrams)", bytesIEC(t.RxBytes), bytesIEC(t.TxBytes), t.RxPackets, t.TxPackets))
		}
	}
	_, err := io.WriteString(w, b.String())
	if err != nil {
		return localf("cannot print the status: %v", err)
	}
	return nil
}

// clean makes a string from the socket safe to print on one line (a user name cannot
// play tricks on the terminal).
func clean(s string) string { return render([]byte(s)) }

// ago phrases a duration as "wg show" does: "1 hour, 2 minutes", "12 seconds"; the two
// largest units.
func ago(d time.Duration, suffix string) string {
	if d < time.Second {
		if suffix == "" {
			return "less than a second"
		}
		return "just now"
	}
	units := []struct {
		name string
		size time.Duration
	}{{"day", 24 * time.Hour}, {"hour", time.Hour}, {"minute", time.Minute}, {"second", time.Second}}
	plural := func(n time.Duration, name string) string {
		if n != 1 {
			name += "s"
		}
		return fmt.Sprintf("%d %s", n, name)
	}
	for i, u := range units {
		n := d / u.size
		if n == 0 {
			continue
		}
		s := plural(n, u.name)
		if i+1 < len(units) {
			if m := (d - n*u.size) / units[i+1].size; m > 0 {
				s += ", " + plural(m, units[i+1].name)
			}
		}
		return s + suffix
	}
	return "" // not reached: d >= 1s
}

// roundTrip shows a round trip with a sensible unit.
func roundTrip(d time.Duration) string {
	switch {
	case d < time.Millisecond:
		return fmt.Sprintf("%d µs", d.Microseconds())
	case d < time.Second:
		return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond))
	}
	return fmt.Sprintf("%.2f s", d.Seconds())
}

// loss shows the loss estimate.
func loss(t *control.Traffic) string {
	sent := t.RxPackets + t.LostPackets
	if sent == 0 {
		return "none received yet"
	}
	return fmt.Sprintf("%.1f%% (%d of %d datagrams estimated lost)", 100*float64(t.LostPackets)/float64(sent), t.LostPackets, sent)
}

// bytesIEC shows a byte count as "wg show" does: 1.43 MiB.
func bytesIEC(n uint64) string {
	if n < 1024 {
		return fmt.Sprintf("%d B", n)
	}
	v, unit := float64(n), ""
	for _, u := range []string{"KiB", "MiB", "GiB", "TiB", "PiB"} {
		v /= 1024
		unit = u
		if v < 1024 {
			break
		}
	}
	return fmt.Sprintf("%.2f %s", v, unit)
}

// gcsControl serves a running gcs's link on its control socket (gcs --control).
type gcsControl struct {
	setup   *linkSetup
	link    *gcsStatus
	started time.Time
	client  atomic.Pointer[linkSession] // nil until the first login
}

// openGCSControl creates gcs's control socket (nil without --control), before the
// session is dialled, so that a bad path fails at once.
func openGCSControl(path string) (*control.Listener, error) {
	if path == "" {
		return nil, nil
	}
	l, err := control.Listen(path)
	if err != nil {
		return nil, localf("--control: %v", err)
	}
	return l, nil
}

// status is the answer on gcs's control socket: its one link.
func (g *gcsControl) status() control.Status {
	s := g.setup
	st := control.Status{Program: control.ProgramGCS, Build: buildinfo.Version(), Transport: s.transport, Drone: s.droneName,
		Started: g.started, Now: time.Now()}
	if s.dronePublic != nil {
		st.Key = crypto.Fingerprint(s.dronePublic)
	}
	sess := control.Session{User: s.user, Peer: s.peerName(), State: link.StateHandshake}
	if c := g.client.Load(); c != nil {
		sess.Role = (*c).Role().String()
		g.link.mu.Lock()
		sess.State = control.StateUp
		if g.link.lost {
			sess.State = control.StateLost
		}
		g.link.mu.Unlock()
		if lc, ok := (*c).(*link.Client); ok {
			ls := lc.LinkStatus()
			t := ls.Traffic
			sess.Index, sess.Since, sess.Handshake, sess.LastReceived = ls.Session, ls.Since, ls.Handshake, ls.LastReceived
			sess.RTTSeconds = ls.RTT.Seconds()
			sess.Traffic = &control.Traffic{RxPackets: t.ReceivedPackets, RxBytes: t.ReceivedBytes, TxPackets: t.SentPackets,
				TxBytes: t.SentBytes, LostPackets: t.LostPackets, Loss: t.Loss()}
		}
	}
	st.Sessions = []control.Session{sess}
	return st
}

// serveGCSControl answers on l until ctx ends; the caller waits for done.
func (a *app) serveGCSControl(ctx context.Context, l *control.Listener, g *gcsControl) (done <-chan struct{}) {
	ch := make(chan struct{})
	if l == nil {
		close(ch)
		return ch
	}
	srv := control.NewServer(l, g.status, nil)
	go func() {
		defer close(ch)
		srv.Serve(ctx)
	}()
	return ch
}
