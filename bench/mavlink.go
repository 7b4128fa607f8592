package main

import (
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dronelink/dronelink/pkg/app"
	"github.com/dronelink/dronelink/pkg/link"
	"github.com/dronelink/dronelink/pkg/mavlink"
	"github.com/dronelink/dronelink/pkg/tunnel"
)

// The MAVLink mode: a simulated autopilot streams a typical telemetry mix to a ground
// station and the ground station sends one command a second, through the tunnel
// (dronelinkd's tunnel.Drone under a link.Server, dronelink gcs's tunnel.GCS under a
// link.Client) and directly over UDP, on loopback.

// mavStream is the autopilot's telemetry: message id, rate and payload size.
var mavStream = []struct {
	msgID   uint32
	hz      int
	payload int
}{
	{30, 50, 28}, // ATTITUDE (40-byte frame)
	{33, 10, 28}, // GLOBAL_POSITION_INT (40)
	{1, 2, 31},   // SYS_STATUS (43)
	{0, 1, 9},    // HEARTBEAT (21)
}

// mavCommandHz is the ground station's COMMAND_LONG rate.
const mavCommandHz = 1

// mavResult is one run of the MAVLink mode.
type mavResult struct {
	name             string
	agg              time.Duration
	framesDown       int
	framesUp         int
	wireBytesDown    int64 // UDP payload bytes on the link carrying the downlink frames
	frameBytesDown   int64 // the frames' own bytes
	datagramsDown    int64
	down, up         []time.Duration // per-frame latency, sender to receiver
	lostDown, lostUp int
	cpu              time.Duration // process CPU time of a flood run
}

func (r mavResult) line() string {
	if r.cpu > 0 && len(r.down) == 0 {
		return fmt.Sprintf("mavlink %s agg=%s frames=%d frames/datagram=%.2f frames/cpu-s=%.0f # the whole process: autopilot, drone, operator, station",
			r.name, r.agg, r.framesDown, float64(r.framesDown)/float64(max(r.datagramsDown, 1)), float64(r.framesDown)/r.cpu.Seconds())
	}
	slices.Sort(r.down)
	slices.Sort(r.up)
	perFrame := float64(r.wireBytesDown-r.frameBytesDown) / float64(max(r.framesDown, 1))
	if r.name == "direct-udp" {
		perFrame = 0
	}
	return fmt.Sprintf("mavlink %s agg=%s frames/datagram=%.2f overhead/frame=%.1fB down: p50=%s p99=%s lost=%d up: p50=%s p99=%s lost=%d",
		r.name, r.agg, float64(r.framesDown)/float64(max(r.datagramsDown, 1)), perFrame,
		ms(percentile(r.down, 0.5)), ms(percentile(r.down, 0.99)), r.lostDown,
		ms(percentile(r.up, 0.5)), ms(percentile(r.up, 0.99)), r.lostUp)
}

// stamps records when each numbered frame was sent and measures its arrival.
type stamps struct {
	mu   sync.Mutex
	sent map[uint32]time.Time
	lat  []time.Duration
}

func newStamps() *stamps { return &stamps{sent: map[uint32]time.Time{}} }

func (s *stamps) send(id uint32, t time.Time) {
	s.mu.Lock()
	s.sent[id] = t
	s.mu.Unlock()
}

func (s *stamps) arrive(id uint32, t time.Time) {
	s.mu.Lock()
	if at, ok := s.sent[id]; ok {
		s.lat = append(s.lat, t.Sub(at))
		delete(s.sent, id)
	}
	s.mu.Unlock()
}

// numbered builds a frame of msgID whose first four payload bytes carry id.
func numbered(msgID uint32, size int, id uint32, seq uint8, sys, comp uint8) []byte {
	p := make([]byte, size)
	binary.LittleEndian.PutUint32(p, id)
	p[size-1] = 1 // keep the payload untrimmed, as real frames mostly are
	if msgID == mavlink.MsgCommandLong {
		binary.LittleEndian.PutUint16(p[28:], 400)
	}
	return mavlink.AppendFrame(nil, seq, sys, comp, msgID, p)
}

// frameIDs calls fn with the id of each frame in datagram.
func frameIDs(datagram []byte, fn func(id uint32)) {
	mavlink.Scan(datagram, func(f mavlink.Frame) {
		if len(f.Payload) >= 4 {
			fn(binary.LittleEndian.Uint32(f.Payload))
		}
	}, func(error) {})
}

// frameWire counts the link's frames datagrams.
type frameWire struct {
	link.NopHooks
	bytes, datagrams atomic.Int64
}

func (w *frameWire) PacketSent(kind link.PacketKind, size int) {
	if kind == link.KindFrames {
		w.bytes.Add(int64(size))
		w.datagrams.Add(1)
	}
}

// runMAVLink runs the stream for d through the tunnel with aggregation agg, or directly
// over UDP when direct is true. With flood, the autopilot sends ATTITUDE frames as fast as
// it can instead, and the result's cpu is the process's CPU time for the run.
func runMAVLink(ctx context.Context, e *env, agg time.Duration, d time.Duration, direct, flood bool) (mavResult, error) {
	r := mavResult{name: "tunnel", agg: agg}
	autopilot, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return r, err
	}
	defer autopilot.Close()
	station, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return r, err
	}
	defer station.Close()
	var toAutopilotSide, toStationSide netip.AddrPort // where each end sends
	wire := &frameWire{}
	tun := &tunnel.Counters{}
	if direct {
		r.name = "direct-udp"
		toAutopilotSide = autopilot.LocalAddr().(*net.UDPAddr).AddrPort()
		toStationSide = station.LocalAddr().(*net.UDPAddr).AddrPort()
	} else {
		ids, err := e.identities()
		if err != nil {
			return r, err
		}
		tunnelConn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			return r, err
		}
		var srv *link.Server
		dt, err := tunnel.NewDrone(tunnel.DroneConfig{Conn: tunnelConn, Aggregation: agg, Hooks: tun,
			Broadcast: func(f []byte, at time.Time) (int, error) { return srv.BroadcastFrames(f, at) }})
		if err != nil {
			return r, err
		}
		dr, err := startDrone(ids, wire, func(c *link.ServerConfig) { c.OnFrames = dt.FromOperator })
		if err != nil {
			return r, err
		}
		defer dr.stop()
		srv = dr.server
		runCtx, cancel := context.WithCancel(ctx)
		defer cancel()
		go dt.Run(runCtx)
		gcsConn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			return r, err
		}
		var client atomic.Pointer[link.Client]
		g, err := tunnel.NewGCS(tunnel.GCSConfig{Conn: gcsConn, Station: station.LocalAddr().(*net.UDPAddr).AddrPort(),
			Send: func(f []byte) error {
				if c := client.Load(); c != nil {
					return c.SendFrames(f)
				}
				return app.ErrNotLoggedIn
			}})
		if err != nil {
			return r, err
		}
		go g.Run(runCtx)
		c, err := dialPilot(ctx, ids, 0, dr.server.LocalAddr(), nil, func(c *link.ClientConfig) { c.OnFrames = g.FromDrone })
		if err != nil {
			return r, err
		}
		defer c.Close()
		client.Store(c)
		toAutopilotSide = gcsConn.LocalAddr().(*net.UDPAddr).AddrPort()  // the station sends to gcs
		toStationSide = tunnelConn.LocalAddr().(*net.UDPAddr).AddrPort() // the autopilot sends to the tunnel
	}

	down, up := newStamps(), newStamps()
	var recv sync.WaitGroup
	received := func(conn *net.UDPConn, s *stamps, count *int) {
		buf := make([]byte, 65536)
		for {
			n, _, err := conn.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			now := time.Now()
			frameIDs(buf[:n], func(id uint32) { s.arrive(id, now); *count++ })
		}
	}
	recv.Go(func() { received(station, down, &r.framesDown) })
	recv.Go(func() { received(autopilot, up, &r.framesUp) })

	var send sync.WaitGroup
	nextID := atomic.Uint32{}
	stream := func(conn *net.UDPConn, to netip.AddrPort, s *stamps, msgID uint32, hz, size int, sys, comp uint8) {
		t := time.NewTicker(time.Second / time.Duration(hz))
		defer t.Stop()
		stop := time.After(d)
		seq := uint8(0)
		for {
			select {
			case <-stop:
				return
			case <-t.C:
			}
			id := nextID.Add(1)
			seq++
			f := numbered(msgID, size, id, seq, sys, comp)
			s.send(id, time.Now())
			conn.WriteToUDPAddrPort(f, to)
		}
	}
	cpu0, _ := processCPU()
	if flood {
		r.name += "-flood"
		send.Go(func() {
			stop := time.Now().Add(d)
			for seq := uint8(0); time.Now().Before(stop); seq++ {
				autopilot.WriteToUDPAddrPort(numbered(30, 28, nextID.Add(1), seq, 1, 1), toStationSide)
			}
		})
	} else {
		for _, m := range mavStream {
			send.Go(func() { stream(autopilot, toStationSide, down, m.msgID, m.hz, m.payload, 1, 1) })
		}
		send.Go(func() { stream(station, toAutopilotSide, up, mavlink.MsgCommandLong, mavCommandHz, 33, 255, 190) })
	}
	send.Wait()
	cpu1, _ := processCPU()
	r.cpu = cpu1 - cpu0
	// Frames still in flight arrive within the aggregation time and a round trip.
	time.Sleep(agg + 200*time.Millisecond)
	station.Close()
	autopilot.Close()
	recv.Wait()
	r.down, r.up = down.lat, up.lat
	r.lostDown, r.lostUp = len(down.sent), len(up.sent)
	if direct {
		r.datagramsDown = int64(r.framesDown) // one frame per datagram, no overhead beyond UDP's
	} else {
		r.wireBytesDown = wire.bytes.Load()
		r.frameBytesDown = int64(tun.Bytes[tunnel.Down].Load())
		r.datagramsDown = int64(tun.Datagrams[tunnel.Down].Load())
	}
	return r, nil
}
