package daemon

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/dronelink/dronelink/internal/buildinfo"
	"github.com/dronelink/dronelink/internal/control"
	"github.com/dronelink/dronelink/pkg/app"
	"github.com/dronelink/dronelink/pkg/link"
)

// ControlSocketName is the control socket's file name under $RUNTIME_DIRECTORY.
const ControlSocketName = "control.sock"

// defaultControl is --control's default: $RUNTIME_DIRECTORY/control.sock when systemd
// gave the service a runtime directory (RuntimeDirectory=, the first one if several),
// else none.
func defaultControl() string {
	dir, _, _ := strings.Cut(os.Getenv("RUNTIME_DIRECTORY"), ":")
	if dir == "" {
		return ""
	}
	return filepath.Join(dir, ControlSocketName)
}

// controlHelp documents --control.
const controlHelp = "serve a read-only status of the live sessions (for \"dronelink status\") on a unix socket at `PATH`, mode 0600; " +
	"default $RUNTIME_DIRECTORY/" + ControlSocketName + " when systemd sets RUNTIME_DIRECTORY, else none; an empty PATH turns it off"

// openControl creates the control socket if one is configured (nil if none).
func (d *daemon) openControl() (*control.Listener, error) {
	if d.cfg.Control == "" {
		return nil, nil
	}
	l, err := control.Listen(d.cfg.Control)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", d.cfg.setting("control"), err)
	}
	return l, nil
}

// serveControl answers status requests on l until ctx ends.
func (d *daemon) serveControl(ctx context.Context, wg *sync.WaitGroup, l *control.Listener) {
	if l == nil {
		return
	}
	d.log.Info("control socket", "path", l.Path())
	srv := control.NewServer(l, d.status, d.log.With("component", "control"))
	wg.Go(func() { srv.Serve(ctx) })
}

// checkControl is --check-config's check of --control: the socket can be created there
// (it is created, then removed).
func (c *Config) checkControl() error {
	if c.Control == "" {
		return nil
	}
	l, err := control.Listen(c.Control)
	if err != nil {
		return fmt.Errorf("%s: %w", c.setting("control"), err)
	}
	return l.Close()
}

// sessionLister is a transport server that lists its sessions without link statistics
// (*dtlslink.Server, through its app.Server).
type sessionLister interface {
	Sessions() []app.SessionInfo
}

// status is the control socket's answer: the daemon and every live session. It holds no
// secret: keys appear as fingerprints.
func (d *daemon) status() control.Status {
	st := control.Status{
		Program:   control.ProgramDaemon,
		Build:     buildinfo.Version(),
		Transport: d.cfg.Transport,
		Listen:    d.server.LocalAddr().String(),
		Key:       d.keyName,
		Started:   d.started,
		Now:       time.Now(),
	}
	if d.cfg.Listen == "" {
		st.Listen = ""
	}
	if d.relay != nil {
		rs := d.relay.State()
		st.Relay = &control.Relay{Servers: d.cfg.Relay, DroneID: d.cfg.DroneID, Connected: rs.Connected,
			Server: rs.Server, ServerName: rs.ServerName, Reconnects: rs.Reconnects}
	}
	switch srv := d.server.(type) {
	case *link.Server:
		for _, s := range srv.SessionStatus() {
			sess := nativeSession(s)
			// A relay address means nothing to a reader; its downlink subject names the
			// operator's NATS user.
			if name := srv.AddrName(s.Peer); name != "" {
				sess.Peer = name
			}
			st.Sessions = append(st.Sessions, sess)
		}
	case sessionLister:
		for _, s := range srv.Sessions() {
			st.Sessions = append(st.Sessions, control.Session{Index: s.LocalIndex, User: s.User, Role: roleName(s.Role),
				Identity: s.Identity, Peer: s.Peer.String(), State: link.StateActive, Since: s.Created})
		}
	}
	return st
}

// nativeSession is a native session as the control socket shows it.
func nativeSession(s link.SessionStatus) control.Session {
	t := s.Traffic
	return control.Session{
		Index:        s.LocalIndex,
		User:         s.User,
		Role:         roleName(s.Role),
		Key:          s.KeyName,
		Peer:         s.Peer.String(),
		State:        s.State,
		Since:        s.Since,
		Handshake:    s.Created,
		LastReceived: s.LastReceived,
		RTTSeconds:   s.RTT.Seconds(),
		Traffic: &control.Traffic{RxPackets: t.ReceivedPackets, RxBytes: t.ReceivedBytes, TxPackets: t.SentPackets,
			TxBytes: t.SentBytes, LostPackets: t.LostPackets, Loss: t.Loss()},
	}
}

// roleName is a role as the status shows it: "" before a login.
func roleName(r link.Role) string {
	if r == link.RoleNone {
		return ""
	}
	return r.String()
}
