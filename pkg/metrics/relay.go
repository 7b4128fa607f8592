package metrics

import (
	"errors"
	"fmt"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/dronelink/dronelink/pkg/relay"
)

// Relay is a relay.Hooks that exports the state of the NATS relay (dronelinkd --relay),
// each series with the constant label role:
//
//	dronelink_relay_connected                  gauge: 1 while connected to a NATS server
//	dronelink_relay_server_info{server}        gauge: 1 for the server connected to now
//	dronelink_relay_disconnects_total          counter
//	dronelink_relay_reconnects_total           counter
//	dronelink_relay_dropped_total{reason}      counter
//
// server_info keeps one series, the current server's (redacted URL): the servers of one
// relay cluster are few, and a dashboard shows where the drone is connected.
type Relay struct {
	connected   prometheus.Gauge
	serverInfo  *prometheus.GaugeVec
	disconnects prometheus.Counter
	reconnects  prometheus.Counter
	dropped     []prometheus.Counter

	mu     sync.Mutex
	server string // the server of serverInfo's one series
}

var _ relay.Hooks = (*Relay)(nil)

// NewRelay creates the relay's collectors with the constant label role (RoleDrone or
// RoleOperator) and registers them on reg; on error nothing stays registered.
func NewRelay(reg prometheus.Registerer, role string) (*Relay, error) {
	if reg == nil {
		return nil, errors.New("metrics: nil Registerer")
	}
	if role != RoleDrone && role != RoleOperator {
		return nil, fmt.Errorf("metrics: role %q, want %q or %q", role, RoleDrone, RoleOperator)
	}
	constLabels := prometheus.Labels{"role": role}
	connected := prometheus.NewGauge(prometheus.GaugeOpts{Namespace: Namespace, Name: "relay_connected", ConstLabels: constLabels,
		Help: "1 while connected to a NATS server of the relay, 0 while (re)connecting."})
	serverInfo := prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: Namespace, Name: "relay_server_info", ConstLabels: constLabels,
		Help: "1 for the NATS server the relay is connected to, or was last (redacted URL)."}, []string{"server"})
	disconnects := prometheus.NewCounter(prometheus.CounterOpts{Namespace: Namespace, Name: "relay_disconnects_total",
		ConstLabels: constLabels, Help: "Connections to a NATS server of the relay that were lost."})
	reconnects := prometheus.NewCounter(prometheus.CounterOpts{Namespace: Namespace, Name: "relay_reconnects_total",
		ConstLabels: constLabels, Help: "Reconnections to a NATS server of the relay after a loss."})
	dropped := prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: Namespace, Name: "relay_dropped_total",
		ConstLabels: constLabels, Help: "Datagrams the relay dropped, by reason: bad_reply (an uplink message without a downlink" +
			" of this drone to answer on), oversize, empty, unknown_peer (the downlink was forgotten), publish_failed (closed," +
			" or disconnected with the reconnect buffer full), slow_consumer (NATS dropped messages this end read too slowly)," +
			" permission (the server refused an operation), no_responders (no drone serves the id), backlog (the drone's" +
			" datagrams waited too long for the server), peers_full (a new downlink while the drone remembers as many as it" +
			" may, all in use), protocol (the NATS server sent a stream the framing guard refuses: a line too long, a message size" +
			" malformed or too large; the connection was closed and reconnects)."}, []string{"reason"})
	if err := registerAll(reg, []prometheus.Collector{connected, serverInfo, disconnects, reconnects, dropped}); err != nil {
		return nil, err
	}
	r := &Relay{connected: connected, serverInfo: serverInfo, disconnects: disconnects, reconnects: reconnects}
	for _, reason := range relay.DropReasons() {
		r.dropped = append(r.dropped, dropped.WithLabelValues(reason.String()))
	}
	return r, nil
}

// Connected implements relay.Hooks.
func (r *Relay) Connected(server string) {
	r.connected.Set(1)
	r.mu.Lock()
	defer r.mu.Unlock()
	if server != r.server {
		if r.server != "" {
			r.serverInfo.DeleteLabelValues(r.server)
		}
		r.server = server
	}
	r.serverInfo.WithLabelValues(server).Set(1)
}

// Disconnected implements relay.Hooks.
func (r *Relay) Disconnected() {
	r.connected.Set(0)
	r.disconnects.Inc()
}

// Reconnected implements relay.Hooks.
func (r *Relay) Reconnected() { r.reconnects.Inc() }

// Dropped implements relay.Hooks.
func (r *Relay) Dropped(reason relay.DropReason) {
	if int(reason) < len(r.dropped) {
		r.dropped[reason].Inc()
	}
}
