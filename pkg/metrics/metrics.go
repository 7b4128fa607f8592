// Package metrics exports a dronelink link's events as Prometheus metrics.
//
// It is the only package of the module that imports Prometheus: pkg/link reports events
// through the link.Hooks interface, and a [Link] implements that interface with
// Prometheus collectors registered on a caller-supplied prometheus.Registerer (never the
// global registry).
//
// Every label combination is resolved once, in [New], into arrays indexed by the link's
// enums, so each hook call is one atomic operation with no allocation, no lock and no map
// lookup: the hooks run on the per-packet path.
//
// Metrics (every series also carries the constant labels transport and role):
//
//	dronelink_packets_received_total{kind}     counter
//	dronelink_received_bytes_total{kind}       counter
//	dronelink_packets_sent_total{kind}         counter
//	dronelink_sent_bytes_total{kind}           counter
//	dronelink_dropped_packets_total{reason}    counter
//	dronelink_handshakes_total{result}         counter
//	dronelink_logins_total{result}             counter
//	dronelink_commands_total{status}           counter
//	dronelink_command_round_trip_seconds       histogram
//	dronelink_sessions_active                  gauge
//	dronelink_rekeys_total                     counter
//	dronelink_link_transitions_total{state}    counter
//	dronelink_round_trip_time_seconds          gauge (operator)
//	dronelink_retransmission_timeout_seconds   gauge (operator)
//	dronelink_loss_ratio                       gauge (operator)
package metrics

import (
	"errors"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/dronelink/dronelink/pkg/link"
)

// Namespace prefixes every metric name.
const Namespace = "dronelink"

// Transport and role label values accepted by [New].
const (
	TransportNative = "native"
	TransportDTLS   = "dtls"
	RoleDrone       = "drone"
	RoleOperator    = "operator"
)

// unknownLabel labels statuses outside the known range: login and command statuses can
// come from the wire (operator side) or from a command handler (drone side).
const unknownLabel = "unknown"

// RoundTripBuckets are the upper bounds, in seconds, of the command round-trip histogram:
// 1 ms to 30 s in 1-2-5 steps (a factor of 2 to 2.5, the resolution of
// prometheus.ExponentialBucketsRange(0.001, 30, 16) but with readable le labels), for
// radio links from a clean line of sight to a lossy link that retransmits for tens of
// seconds.
var RoundTripBuckets = []float64{0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 30}

// Label-value counts, derived from the link package's own String methods so that a
// status added there gets its own series here without a change.
var (
	numLoginStatuses = countNamed[link.LoginStatus]()
	numAckStatuses   = countNamed[link.AckStatus]()
)

// enum is a link status type whose String returns "unknown" past its last value.
type enum interface {
	~uint8
	String() string
}

// countNamed returns how many consecutive values from 0 have a name.
func countNamed[T enum]() int {
	n := 0
	for n < 256 && T(n).String() != unknownLabel {
		n++
	}
	return n
}

// Options configures [New].
type Options struct {
	// Transport is the transport label: TransportNative ("native", the default) or
	// TransportDTLS ("dtls").
	Transport string
	// Role is the role label: RoleDrone ("drone", the default) or RoleOperator ("operator").
	Role string
}

// Link is a link.Hooks that exports the link's events as Prometheus metrics. Its methods
// are safe for concurrent use and do not allocate or block. Create it with [New].
type Link struct {
	received      [link.NumPacketKinds]prometheus.Counter
	receivedBytes [link.NumPacketKinds]prometheus.Counter
	sent          [link.NumPacketKinds]prometheus.Counter
	sentBytes     [link.NumPacketKinds]prometheus.Counter
	dropped       [link.NumDropReasons]prometheus.Counter
	handshakes    [link.NumHandshakeResults]prometheus.Counter
	logins        []prometheus.Counter // by status; the last element counts unknown statuses
	commands      []prometheus.Counter // by status; the last element counts unknown statuses
	roundTrip     prometheus.Histogram
	sessions      prometheus.Gauge
	rekeys        prometheus.Counter
	linkUp        prometheus.Counter
	linkDown      prometheus.Counter
	work          [link.NumHandshakeWork]prometheus.Counter
	srtt          prometheus.Gauge
	rto           prometheus.Gauge
	loss          prometheus.Gauge
}

var _ link.Hooks = (*Link)(nil)

// New creates the collectors, with the constant labels transport and role from opts, and
// registers them on reg. It returns an error if opts is invalid or registration fails
// (for example a Link with the same labels is already registered on reg); then nothing
// stays registered. Links with different labels (a drone and an operator in one process)
// can share a registry.
func New(reg prometheus.Registerer, opts Options) (*Link, error) {
	if reg == nil {
		return nil, errors.New("metrics: nil Registerer")
	}
	if opts.Transport == "" {
		opts.Transport = TransportNative
	}
	if opts.Role == "" {
		opts.Role = RoleDrone
	}
	if opts.Transport != TransportNative && opts.Transport != TransportDTLS {
		return nil, fmt.Errorf("metrics: transport %q, want %q or %q", opts.Transport, TransportNative, TransportDTLS)
	}
	if opts.Role != RoleDrone && opts.Role != RoleOperator {
		return nil, fmt.Errorf("metrics: role %q, want %q or %q", opts.Role, RoleDrone, RoleOperator)
	}
	constLabels := prometheus.Labels{"transport": opts.Transport, "role": opts.Role}
	counterVec := func(name, help, label string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Name: name, Help: help, ConstLabels: constLabels,
		}, []string{label})
	}

	const dataNote = " A data datagram is counted once as kind=\"data\" when it arrives and once more" +
		" under its message kind (login, command, telemetry, ...) after it decrypts."
	receivedVec := counterVec("packets_received_total",
		"Datagrams read from the socket, by kind: the outer type (initiation, response, error, data,"+
			" key_request, key_answer)"+
			" or the decrypted message type."+dataNote, "kind")
	receivedBytesVec := counterVec("received_bytes_total",
		"Bytes of datagrams read from the socket, by kind. Bytes are counted on arrival only"+
			" (kind=\"data\" for every data datagram, decrypted or not), so the sum over kinds is the"+
			" traffic received.", "kind")
	sentVec := counterVec("packets_sent_total",
		"Datagrams written to the socket, by kind: the outer type, or the message type of a data datagram.", "kind")
	sentBytesVec := counterVec("sent_bytes_total",
		"Bytes of datagrams written to the socket, by kind.", "kind")
	droppedVec := counterVec("dropped_packets_total",
		"Received datagrams dropped, by reason (malformed, bad_mac, rate_limited, stale, unknown_key,"+
			" wrong_drone_key, bad_signature, session_limit, unknown_session, decrypt, replay, expired,"+
			" unexpected, late).", "reason")
	handshakesVec := counterVec("handshakes_total",
		"Completed handshake attempts, by result: ok (session established), refused (the peer refused),"+
			" failed (this side refused the peer's message).", "result")
	loginsVec := counterVec("logins_total",
		"Login answers, by result: sent by the drone (role=drone) or received by the operator"+
			" (role=operator); unknown is a status this build does not know.", "result")
	commandsVec := counterVec("commands_total",
		"Command answers, by status: every answer the drone decided (role=drone), or the final"+
			" acknowledgement received by the operator (role=operator); unknown is a status this build"+
			" does not know.", "status")
	roundTrip := prometheus.NewHistogram(prometheus.HistogramOpts{
		Namespace: Namespace, Name: "command_round_trip_seconds", ConstLabels: constLabels,
		Help:    "Time from a command's first transmission to its acknowledgement, retransmissions included.",
		Buckets: append([]float64(nil), RoundTripBuckets...),
	})
	sessions := prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: Namespace, Name: "sessions_active", ConstLabels: constLabels,
		Help: "Sessions in the drone's session table as of its last change (the operator side does not report it).",
	})
	rekeys := prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: Namespace, Name: "rekeys_total", ConstLabels: constLabels,
		Help: "Sessions replaced by a newer session with the same peer.",
	})
	transitionsVec := counterVec("link_transitions_total",
		"Per-session link state changes: state=\"down\" when no datagram arrived for the link-lost time,"+
			" state=\"up\" when traffic resumed. These are counters, not a gauge of links down: a session"+
			" that expires or closes while down reports no up, so down minus up overstates the links"+
			" down now; use rate(...{state=\"down\"}) to alert on link loss.", "state")

	workVec := counterVec("handshake_operations_total",
		"Expensive handshake operations the drone started, by op: rsa_verify, rsa_unwrap, x25519. Forged or"+
			" replayed initiations are rejected before any of them, so these grow only with real handshakes.", "op")

	gauge := func(name, help string) prometheus.Gauge {
		return prometheus.NewGauge(prometheus.GaugeOpts{Namespace: Namespace, Name: name, ConstLabels: constLabels, Help: help})
	}
	srtt := gauge("round_trip_time_seconds",
		"The operator's smoothed round-trip time to the drone (RFC 6298 SRTT), from its handshake and from"+
			" commands acknowledged after one transmission; 0 before the first measurement (the drone does not report it).")
	rto := gauge("retransmission_timeout_seconds",
		"The operator's retransmission timeout for logins and commands: SRTT + max(10 ms, 4 RTTVAR), 20 ms to 1 s;"+
			" 0 before the first measurement (then the fixed 200 ms applies).")
	loss := gauge("loss_ratio",
		"The operator's estimate of the share of datagrams lost each way, 0 to 1, from unanswered transmissions"+
			" and (native transport) the gaps in the drone's datagram counters; 0 before the first measurement.")

	collectors := []prometheus.Collector{receivedVec, receivedBytesVec, sentVec, sentBytesVec, droppedVec,
		handshakesVec, loginsVec, commandsVec, roundTrip, sessions, rekeys, transitionsVec, workVec, srtt, rto, loss}
	if err := registerAll(reg, collectors); err != nil {
		return nil, err
	}

	l := &Link{
		logins:    make([]prometheus.Counter, numLoginStatuses+1),
		commands:  make([]prometheus.Counter, numAckStatuses+1),
		roundTrip: roundTrip,
		sessions:  sessions,
		rekeys:    rekeys,
		linkUp:    transitionsVec.WithLabelValues("up"),
		linkDown:  transitionsVec.WithLabelValues("down"),
		srtt:      srtt,
		rto:       rto,
		loss:      loss,
	}
	for k := range link.NumPacketKinds {
		name := k.String()
		l.received[k] = receivedVec.WithLabelValues(name)
		l.receivedBytes[k] = receivedBytesVec.WithLabelValues(name)
		l.sent[k] = sentVec.WithLabelValues(name)
		l.sentBytes[k] = sentBytesVec.WithLabelValues(name)
	}
	for r := range link.NumDropReasons {
		l.dropped[r] = droppedVec.WithLabelValues(r.String())
	}
	for r := range link.NumHandshakeResults {
		l.handshakes[r] = handshakesVec.WithLabelValues(r.String())
	}
	for s := range numLoginStatuses {
		l.logins[s] = loginsVec.WithLabelValues(link.LoginStatus(s).String())
	}
	l.logins[numLoginStatuses] = loginsVec.WithLabelValues(unknownLabel)
	for s := range numAckStatuses {
		l.commands[s] = commandsVec.WithLabelValues(link.AckStatus(s).String())
	}
	l.commands[numAckStatuses] = commandsVec.WithLabelValues(unknownLabel)
	for w := range link.NumHandshakeWork {
		l.work[w] = workVec.WithLabelValues(w.String())
	}
	return l, nil
}

// HandshakeWork implements link.Hooks: it counts one expensive handshake operation.
// Operations out of range are ignored.
func (l *Link) HandshakeWork(w link.HandshakeWork) {
	if w < link.NumHandshakeWork {
		l.work[w].Inc()
	}
}

// PacketReceived implements link.Hooks: it counts one datagram of kind and size bytes
// (size 0, for a decrypted data datagram's message kind, adds no bytes). Kinds out of
// range are ignored.
func (l *Link) PacketReceived(kind link.PacketKind, size int) {
	if kind >= link.NumPacketKinds {
		return
	}
	l.received[kind].Inc()
	if size > 0 {
		l.receivedBytes[kind].Add(float64(size))
	}
}

// PacketSent implements link.Hooks. Kinds out of range are ignored.
func (l *Link) PacketSent(kind link.PacketKind, size int) {
	if kind >= link.NumPacketKinds {
		return
	}
	l.sent[kind].Inc()
	if size > 0 {
		l.sentBytes[kind].Add(float64(size))
	}
}

// Dropped implements link.Hooks. Reasons out of range are ignored.
func (l *Link) Dropped(reason link.DropReason) {
	if reason < link.NumDropReasons {
		l.dropped[reason].Inc()
	}
}

// Handshake implements link.Hooks. Results out of range are ignored.
func (l *Link) Handshake(result link.HandshakeResult) {
	if result < link.NumHandshakeResults {
		l.handshakes[result].Inc()
	}
}

// Login implements link.Hooks. Unknown statuses count under result="unknown".
func (l *Link) Login(status link.LoginStatus) {
	l.logins[min(int(status), numLoginStatuses)].Inc()
}

// Command implements link.Hooks. Unknown statuses count under status="unknown".
func (l *Link) Command(status link.AckStatus) {
	l.commands[min(int(status), numAckStatuses)].Inc()
}

// CommandRoundTrip implements link.Hooks.
func (l *Link) CommandRoundTrip(d time.Duration) { l.roundTrip.Observe(d.Seconds()) }

// SessionsActive implements link.Hooks.
func (l *Link) SessionsActive(n int) { l.sessions.Set(float64(n)) }

// Rekeyed implements link.Hooks.
func (l *Link) Rekeyed() { l.rekeys.Inc() }

// LinkState implements link.Hooks.
func (l *Link) LinkState(up bool) {
	if up {
		l.linkUp.Inc()
	} else {
		l.linkDown.Inc()
	}
}

// LinkEstimate implements link.Hooks: it sets the round-trip, timeout and loss gauges.
func (l *Link) LinkEstimate(e link.LinkEstimate) {
	l.srtt.Set(e.SRTT.Seconds())
	l.rto.Set(e.RTO.Seconds())
	l.loss.Set(e.Loss)
}

// registerAll registers every collector on reg, or none: on an error it unregisters those
// it registered.
func registerAll(reg prometheus.Registerer, collectors []prometheus.Collector) error {
	for i, c := range collectors {
		if err := reg.Register(c); err != nil {
			for _, done := range collectors[:i] {
				reg.Unregister(done)
			}
			return fmt.Errorf("metrics: register: %w", err)
		}
	}
	return nil
}
