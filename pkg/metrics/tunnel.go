package metrics

import (
	"errors"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/dronelink/dronelink/pkg/tunnel"
)

// TunnelDelayBuckets are the upper bounds, in seconds, of the tunnel delay histogram:
// 0.1 ms to 200 ms, around the aggregation timers (0, 20, 50 ms).
var TunnelDelayBuckets = []float64{0.0001, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.2}

// FramesPerDatagramBuckets are the upper bounds of the frames-per-datagram histogram.
var FramesPerDatagramBuckets = []float64{1, 2, 3, 4, 6, 8, 12, 16, 24, 32}

// Tunnel is a tunnel.Hooks that exports the MAVLink tunnel's events as Prometheus metrics,
// each series labelled with its direction (up: ground station to autopilot; down: the
// other way) and the constant label role:
//
//	dronelink_mavlink_frames_total{direction}               counter
//	dronelink_mavlink_frame_bytes_total{direction}          counter
//	dronelink_mavlink_dropped_frames_total{direction,reason} counter
//	dronelink_mavlink_frames_per_datagram{direction}        histogram
//	dronelink_mavlink_tunnel_delay_seconds{direction}       histogram
//
// Like Link, every label combination is resolved in NewTunnel: a hook call is one atomic
// operation, with no allocation.
type Tunnel struct {
	frames   [tunnel.NumDirections]prometheus.Counter
	bytes    [tunnel.NumDirections]prometheus.Counter
	dropped  [tunnel.NumDirections][tunnel.NumDropReasons]prometheus.Counter
	perDgram [tunnel.NumDirections]prometheus.Observer
	delay    [tunnel.NumDirections]prometheus.Observer
}

var _ tunnel.Hooks = (*Tunnel)(nil)

// NewTunnel creates the tunnel's collectors with the constant label role (RoleDrone or
// RoleOperator) and registers them on reg; on error nothing stays registered.
func NewTunnel(reg prometheus.Registerer, role string) (*Tunnel, error) {
	if reg == nil {
		return nil, errors.New("metrics: nil Registerer")
	}
	if role != RoleDrone && role != RoleOperator {
		return nil, fmt.Errorf("metrics: role %q, want %q or %q", role, RoleDrone, RoleOperator)
	}
	constLabels := prometheus.Labels{"role": role}
	frames := prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: Namespace, Name: "mavlink_frames_total",
		ConstLabels: constLabels, Help: "MAVLink frames the tunnel carried, by direction: up (ground station to autopilot), down."},
		[]string{"direction"})
	bytes := prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: Namespace, Name: "mavlink_frame_bytes_total",
		ConstLabels: constLabels, Help: "Bytes of the MAVLink frames the tunnel carried, by direction."}, []string{"direction"})
	dropped := prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: Namespace, Name: "mavlink_dropped_frames_total",
		ConstLabels: constLabels, Help: "MAVLink frames the tunnel dropped, by direction and reason: malformed (one per damaged" +
			" run of bytes), role (an observer's frame that is not read-only), no_peer (no autopilot or ground station heard" +
			" yet), no_session (the operator was not logged in), send_failed, stranger (from another address than the" +
			" fixed peer's). Frames held back on the radio path are the link's drops, reason late."},
		[]string{"direction", "reason"})
	perDgram := prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: Namespace, Name: "mavlink_frames_per_datagram",
		ConstLabels: constLabels, Help: "MAVLink frames per tunnelled datagram, by direction.",
		Buckets: append([]float64(nil), FramesPerDatagramBuckets...)}, []string{"direction"})
	delay := prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: Namespace, Name: "mavlink_tunnel_delay_seconds",
		ConstLabels: constLabels, Help: "Time a MAVLink frame waited in the tunnel before it went on (aggregation), by direction.",
		Buckets: append([]float64(nil), TunnelDelayBuckets...)}, []string{"direction"})
	collectors := []prometheus.Collector{frames, bytes, dropped, perDgram, delay}
	if err := registerAll(reg, collectors); err != nil {
		return nil, err
	}
	t := &Tunnel{}
	for d := range tunnel.NumDirections {
		dir := d.String()
		t.frames[d] = frames.WithLabelValues(dir)
		t.bytes[d] = bytes.WithLabelValues(dir)
		t.perDgram[d] = perDgram.WithLabelValues(dir)
		t.delay[d] = delay.WithLabelValues(dir)
		for r := range tunnel.NumDropReasons {
			t.dropped[d][r] = dropped.WithLabelValues(dir, r.String())
		}
	}
	return t, nil
}

// Frame implements tunnel.Hooks.
func (t *Tunnel) Frame(d tunnel.Direction, size int) {
	if d < tunnel.NumDirections {
		t.frames[d].Inc()
		t.bytes[d].Add(float64(size))
	}
}

// Dropped implements tunnel.Hooks.
func (t *Tunnel) Dropped(d tunnel.Direction, r tunnel.DropReason) {
	if d < tunnel.NumDirections && r < tunnel.NumDropReasons {
		t.dropped[d][r].Inc()
	}
}

// Datagram implements tunnel.Hooks.
func (t *Tunnel) Datagram(d tunnel.Direction, frames int) {
	if d < tunnel.NumDirections {
		t.perDgram[d].Observe(float64(frames))
	}
}

// Delay implements tunnel.Hooks.
func (t *Tunnel) Delay(d tunnel.Direction, delay time.Duration) {
	if d < tunnel.NumDirections {
		t.delay[d].Observe(delay.Seconds())
	}
}
