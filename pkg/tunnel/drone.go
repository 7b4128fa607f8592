package tunnel

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dronelink/dronelink/internal/ratelog"
	"github.com/dronelink/dronelink/pkg/app"
	"github.com/dronelink/dronelink/pkg/mavlink"
	"github.com/dronelink/dronelink/pkg/ratelimit"
)

// DefaultAggregation is the longest the drone holds an autopilot frame to pack more with it.
const DefaultAggregation = 20 * time.Millisecond

// ObserverFrameRate and ObserverFrameBurst bound the frames an observer may send towards
// the autopilot (per user): read requests make the autopilot answer at length, on the
// downlink every operator shares.
const (
	ObserverFrameRate  = 20
	ObserverFrameBurst = 40
)

// DroneConfig configures the drone's end of the tunnel.
type DroneConfig struct {
	// Conn is the socket towards the autopilot (or mavlink-router); required. Run closes it.
	Conn *net.UDPConn
	// Autopilot, if set, is the autopilot's fixed address ("normal" mode): frames go there
	// and only datagrams from there are taken. If zero, frames go to the most recent sender
	// to Conn ("server" mode).
	Autopilot netip.AddrPort
	// Aggregation: frames from the autopilot wait at most this long to share a datagram
	// with later ones; zero sends each autopilot datagram's frames at once.
	Aggregation time.Duration
	// Broadcast sends packed frames to every logged-in operator, stamped with when the
	// oldest of them arrived (app.Server.BroadcastFrames); required.
	Broadcast func(frames []byte, arrived time.Time) (int, error)
	// Reply, if set, sends frames to one operator's session (app.Server.SendFramesTo): the
	// tunnel answers an observer's refused command with a denied COMMAND_ACK in its own
	// name, so the ground station says why.
	Reply func(session uint16, frames []byte) bool
	// Logger; if nil, logs are discarded. Hooks; if nil, NopHooks.
	Logger *slog.Logger
	Hooks  Hooks
}

// The tunnel's own MAVLink identity when it answers a ground station: the vehicle's
// system id (as the autopilot's frames carry it) and a component id of its own.
const (
	// ComponentID is MAV_COMP_ID_UDP_BRIDGE.
	ComponentID = 240
	// resultDenied is MAV_RESULT_DENIED.
	resultDenied = 2
)

// Drone is the drone's end of the tunnel.
type Drone struct {
	cfg       DroneConfig
	autopilot peerAddr
	warn      *ratelog.Limiter
	observers *ratelimit.Limiter[string] // frames per observer
	vehicle   atomic.Uint32              // the autopilot's system id, from its frames (0: not yet)
	ackSeq    atomic.Uint32

	upMu sync.Mutex
	up   []byte // the frames of one operator message that may pass, under upMu
}

// NewDrone checks the config.
func NewDrone(cfg DroneConfig) (*Drone, error) {
	if cfg.Conn == nil || cfg.Broadcast == nil || cfg.Aggregation < 0 {
		return nil, errors.New("tunnel: drone config needs Conn and Broadcast, and no negative aggregation")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Hooks == nil {
		cfg.Hooks = NopHooks{}
	}
	observers, _ := ratelimit.New[string](ratelimit.Config{Rate: ObserverFrameRate, Burst: ObserverFrameBurst})
	d := &Drone{cfg: cfg, warn: ratelog.New(cfg.Logger, 10*time.Second), observers: observers,
		up: make([]byte, 0, app.MaxFramesPayload)}
	if cfg.Autopilot.IsValid() {
		d.autopilot.store(unmap(cfg.Autopilot))
	}
	return d, nil
}

// SetHooks replaces the hooks; call it before Run.
func (d *Drone) SetHooks(h Hooks) {
	if h != nil {
		d.cfg.Hooks = h
	}
}

// FromOperator is the drone's frames handler (app.FramesHandler): it hands the autopilot
// the frames the sender's role allows, as one datagram, at once.
func (d *Drone) FromOperator(from app.FrameSender, frames []byte) {
	d.upMu.Lock()
	defer d.upMu.Unlock()
	out := d.up[:0]
	n := 0
	now := time.Now()
	mavlink.Scan(frames, func(f mavlink.Frame) {
		if from.Role != app.RolePilot && !mavlink.ObserverMay(&f) {
			d.cfg.Hooks.Dropped(Up, DropRole)
			d.warn.WarnFor(from.User, "frame refused: the user may not change the vehicle", "user", from.User,
				"role", from.Role.String(), "msgid", f.MsgID, "command", mavlink.Command(&f))
			d.deny(from, &f)
			return
		}
		if from.Role != app.RolePilot && !d.observers.Allow(from.User, now) {
			d.cfg.Hooks.Dropped(Up, DropRateLimited)
			d.warn.WarnFor(from.User, "frames refused: the observer sends too many", "user", from.User)
			return
		}
		out = append(out, f.Raw...)
		n++
	}, func(error) {
		d.cfg.Hooks.Dropped(Up, DropMalformed)
		d.warn.Warn("malformed frame from an operator dropped", "user", from.User)
	})
	d.up = out
	if n == 0 {
		return
	}
	to, ok := d.autopilot.load()
	if !ok {
		for range n {
			d.cfg.Hooks.Dropped(Up, DropNoPeer)
		}
		d.warn.Warn("frames for the autopilot dropped: it has not been heard yet")
		return
	}
	if _, err := d.cfg.Conn.WriteToUDPAddrPort(out, to); err != nil {
		for range n {
			d.cfg.Hooks.Dropped(Up, DropSendFailed)
		}
		d.warn.Warn("frames for the autopilot not sent", "to", to, "err", err)
		return
	}
	d.cfg.Hooks.Datagram(Up, n)
	mavlink.Scan(out, func(f mavlink.Frame) { d.cfg.Hooks.Frame(Up, len(f.Raw)) }, func(error) {})
}

// deny answers a refused COMMAND_LONG or COMMAND_INT with COMMAND_ACK result DENIED, in
// the tunnel's own name, to the operator who sent it: the ground station then says the
// command was refused instead of timing out. Other refused frames get no answer.
func (d *Drone) deny(from app.FrameSender, f *mavlink.Frame) {
	if d.cfg.Reply == nil || (f.MsgID != mavlink.MsgCommandLong && f.MsgID != mavlink.MsgCommandInt) {
		return
	}
	cmd := mavlink.Command(f)
	// command, result, progress, result_param2, target_system, target_component
	ack := []byte{byte(cmd), byte(cmd >> 8), resultDenied, 0, 0, 0, 0, 0, f.SysID, f.CompID}
	sys := byte(d.vehicle.Load())
	if sys == 0 {
		sys = 1
	}
	d.cfg.Reply(from.Session, mavlink.AppendFrame(nil, byte(d.ackSeq.Add(1)), sys, ComponentID, mavlink.MsgCommandAck, ack))
}

// pack is the autopilot frames waiting to go out together.
type pack struct {
	buf      []byte
	arrivals []time.Time // one per frame
	first    time.Time
}

// Run reads the autopilot's datagrams until ctx ends or the socket fails, and sends their
// frames to the operators, packed. It closes the socket when it returns.
func (d *Drone) Run(ctx context.Context) error {
	stop := context.AfterFunc(ctx, func() { d.cfg.Conn.Close() })
	defer stop()
	defer d.cfg.Conn.Close()
	buf := make([]byte, 1<<16)
	p := &pack{buf: make([]byte, 0, app.MaxFramesPayload)}
	var err error
	for {
		if len(p.buf) > 0 {
			err = d.cfg.Conn.SetReadDeadline(p.first.Add(d.cfg.Aggregation))
		} else {
			err = d.cfg.Conn.SetReadDeadline(time.Time{})
		}
		if err != nil {
			return nilIfClosed(ctx, err)
		}
		n, from, rerr := d.cfg.Conn.ReadFromUDPAddrPort(buf)
		now := time.Now()
		if rerr != nil {
			if errors.Is(rerr, os.ErrDeadlineExceeded) {
				d.flush(p, now)
				continue
			}
			return nilIfClosed(ctx, rerr)
		}
		from = unmap(from)
		if d.cfg.Autopilot.IsValid() && from != unmap(d.cfg.Autopilot) {
			d.cfg.Hooks.Dropped(Down, DropStranger)
			d.warn.Warn("datagram on the autopilot socket from another address dropped", "from", from)
			continue
		}
		checked := false
		mavlink.Scan(buf[:n], func(f mavlink.Frame) {
			checked = checked || f.Checked
			if f.Checked && f.MsgID == mavlink.MsgHeartbeat {
				d.vehicle.Store(uint32(f.SysID))
			}
			if len(p.buf)+len(f.Raw) > app.MaxFramesPayload {
				d.flush(p, now)
			}
			if len(p.buf) == 0 {
				p.first = now
			}
			p.buf = append(p.buf, f.Raw...)
			p.arrivals = append(p.arrivals, now)
		}, func(error) {
			d.cfg.Hooks.Dropped(Down, DropMalformed)
			d.warn.Warn("malformed frame from the autopilot dropped", "from", from)
		})
		if !d.cfg.Autopilot.IsValid() && checked {
			// The autopilot is the most recent sender of a frame whose checksum verified:
			// a stray or garbage datagram does not redirect the operators' frames.
			if old, changed := d.autopilot.store(from); changed {
				d.cfg.Logger.Info("autopilot address", "addr", from, "was", old)
			}
		}
		if d.cfg.Aggregation == 0 || (len(p.buf) > 0 && now.Sub(p.first) >= d.cfg.Aggregation) {
			d.flush(p, now)
		}
	}
}

// flush sends the pack to the operators.
func (d *Drone) flush(p *pack, now time.Time) {
	if len(p.buf) == 0 {
		return
	}
	sent, err := d.cfg.Broadcast(p.buf, p.first)
	if err != nil {
		d.warn.Warn("frames not sent to the operators", "err", err)
	}
	if sent > 0 { // with no operator logged in, nothing was carried
		d.cfg.Hooks.Datagram(Down, len(p.arrivals))
		i := 0
		mavlink.Scan(p.buf, func(f mavlink.Frame) {
			d.cfg.Hooks.Frame(Down, len(f.Raw))
			d.cfg.Hooks.Delay(Down, now.Sub(p.arrivals[i]))
			i++
		}, func(error) {})
	}
	p.buf, p.arrivals = p.buf[:0], p.arrivals[:0]
}

// nilIfClosed: a socket closed because ctx ended is a clean stop.
func nilIfClosed(ctx context.Context, err error) error {
	if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}
