package tunnel

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/dronelink/dronelink/internal/ratelog"
	"github.com/dronelink/dronelink/pkg/app"
	"github.com/dronelink/dronelink/pkg/mavlink"
)

// GCSConfig configures the operator's end of the tunnel.
type GCSConfig struct {
	// Conn is the socket towards the ground station; required. Run closes it.
	Conn *net.UDPConn
	// Station, if set, is the ground station's fixed address (QGroundControl listens on
	// 127.0.0.1:14550): the drone's frames go there and only datagrams from there are
	// taken. If zero, frames go to the most recent sender to Conn.
	Station netip.AddrPort
	// Send sends frames to the drone (app.Client.SendFrames); required.
	Send func(frames []byte) error
	// Logger; if nil, logs are discarded. Hooks; if nil, NopHooks.
	Logger *slog.Logger
	Hooks  Hooks
}

// GCS is the operator's end of the tunnel.
type GCS struct {
	cfg     GCSConfig
	station peerAddr
	warn    *ratelog.Limiter
	downMu  sync.Mutex // one writer of frames to the station at a time, in order
}

// NewGCS checks the config.
func NewGCS(cfg GCSConfig) (*GCS, error) {
	if cfg.Conn == nil || cfg.Send == nil {
		return nil, errors.New("tunnel: ground station config needs Conn and Send")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Hooks == nil {
		cfg.Hooks = NopHooks{}
	}
	g := &GCS{cfg: cfg, warn: ratelog.New(cfg.Logger, 10*time.Second)}
	if cfg.Station.IsValid() {
		g.station.store(unmap(cfg.Station))
	}
	return g, nil
}

// FromDrone is the operator's frames handler (app.ClientConfig.OnFrames): it hands the
// ground station each frame as a datagram of its own, in order.
func (g *GCS) FromDrone(frames []byte) {
	g.downMu.Lock()
	defer g.downMu.Unlock()
	to, ok := g.station.load()
	n := 0
	mavlink.Scan(frames, func(f mavlink.Frame) {
		n++
		switch {
		case !ok:
			g.cfg.Hooks.Dropped(Down, DropNoPeer)
		default:
			if _, err := g.cfg.Conn.WriteToUDPAddrPort(f.Raw, to); err != nil {
				g.cfg.Hooks.Dropped(Down, DropSendFailed)
				g.warn.Warn("frame for the ground station not sent", "to", to, "err", err)
				return
			}
			g.cfg.Hooks.Frame(Down, len(f.Raw))
		}
	}, func(error) { g.cfg.Hooks.Dropped(Down, DropMalformed) })
	if n > 0 {
		g.cfg.Hooks.Datagram(Down, n)
	}
}

// Run reads the ground station's datagrams until ctx ends or the socket fails and sends
// their well-formed frames to the drone at once. It closes the socket when it returns.
func (g *GCS) Run(ctx context.Context) error {
	stop := context.AfterFunc(ctx, func() { g.cfg.Conn.Close() })
	defer stop()
	defer g.cfg.Conn.Close()
	buf := make([]byte, 1<<16)
	out := make([]byte, 0, app.MaxFramesPayload)
	for {
		n, from, err := g.cfg.Conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			return nilIfClosed(ctx, err)
		}
		from = unmap(from)
		if g.cfg.Station.IsValid() && from != unmap(g.cfg.Station) {
			g.cfg.Hooks.Dropped(Up, DropStranger)
			g.warn.Warn("datagram on the ground station socket from another address dropped", "from", from)
			continue
		}
		frames := 0
		checked := false
		out = out[:0]
		mavlink.Scan(buf[:n], func(f mavlink.Frame) {
			checked = checked || f.Checked
			if len(out)+len(f.Raw) > app.MaxFramesPayload {
				g.send(out, frames)
				out, frames = out[:0], 0
			}
			out = append(out, f.Raw...)
			frames++
		}, func(error) {
			g.cfg.Hooks.Dropped(Up, DropMalformed)
			g.warn.Warn("malformed frame from the ground station dropped", "from", from)
		})
		g.send(out, frames)
		if !g.cfg.Station.IsValid() && checked {
			// The ground station is the most recent sender of a frame whose checksum
			// verified; every change is logged.
			if old, changed := g.station.store(from); changed {
				g.cfg.Logger.Warn("ground station address", "addr", from, "was", old)
			}
		}
	}
}

// send hands frames to the drone.
func (g *GCS) send(out []byte, frames int) {
	if frames == 0 {
		return
	}
	if err := g.cfg.Send(out); err != nil {
		reason := DropSendFailed
		if errors.Is(err, app.ErrNotLoggedIn) {
			reason = DropNoSession
		}
		for range frames {
			g.cfg.Hooks.Dropped(Up, reason)
		}
		return
	}
	g.cfg.Hooks.Datagram(Up, frames)
	mavlink.Scan(out, func(f mavlink.Frame) { g.cfg.Hooks.Frame(Up, len(f.Raw)) }, func(error) {})
}
