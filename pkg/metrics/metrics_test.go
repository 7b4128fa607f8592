package metrics_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/dronelink/dronelink/pkg/link"
	"github.com/dronelink/dronelink/pkg/metrics"
	"github.com/dronelink/dronelink/pkg/tunnel"
)

func newLink(t *testing.T, reg prometheus.Registerer, opts metrics.Options) *metrics.Link {
	t.Helper()
	l, err := metrics.New(reg, opts)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// populate calls every hook at least once.
func populate(l *metrics.Link) {
	for k := range link.NumPacketKinds {
		l.PacketReceived(k, 100+int(k))
		l.PacketSent(k, 200+int(k))
	}
	l.Dropped(link.DropReplay)
	l.Dropped(link.DropReplay)
	l.Dropped(link.DropBadMAC)
	l.Handshake(link.HandshakeOK)
	l.Handshake(link.HandshakeRefused)
	l.Login(link.LoginOK)
	l.Login(link.LoginWrongPassword)
	l.Login(42)
	l.Command(link.AckOK)
	l.Command(link.AckNotPermitted)
	l.CommandRoundTrip(15e6) // 15 ms
	l.CommandRoundTrip(2e9)  // 2 s
	l.SessionsActive(2)
	l.Rekeyed()
	l.LinkState(false)
	l.LinkState(true)
	l.LinkState(false)
}

// TestExposition compares the exact text exposition of some metrics, help included.
func TestExposition(t *testing.T) {
	reg := prometheus.NewRegistry()
	populate(newLink(t, reg, metrics.Options{Transport: metrics.TransportDTLS, Role: metrics.RoleOperator}))

	const want = `
# HELP dronelink_dropped_packets_total Received datagrams dropped, by reason (malformed, bad_mac, rate_limited, stale, unknown_key, wrong_drone_key, bad_signature, session_limit, unknown_session, decrypt, replay, expired, unexpected, late).
# TYPE dronelink_dropped_packets_total counter
dronelink_dropped_packets_total{reason="bad_mac",role="operator",transport="dtls"} 1
dronelink_dropped_packets_total{reason="bad_signature",role="operator",transport="dtls"} 0
dronelink_dropped_packets_total{reason="decrypt",role="operator",transport="dtls"} 0
dronelink_dropped_packets_total{reason="expired",role="operator",transport="dtls"} 0
dronelink_dropped_packets_total{reason="late",role="operator",transport="dtls"} 0
dronelink_dropped_packets_total{reason="malformed",role="operator",transport="dtls"} 0
dronelink_dropped_packets_total{reason="rate_limited",role="operator",transport="dtls"} 0
dronelink_dropped_packets_total{reason="replay",role="operator",transport="dtls"} 2
dronelink_dropped_packets_total{reason="session_limit",role="operator",transport="dtls"} 0
dronelink_dropped_packets_total{reason="stale",role="operator",transport="dtls"} 0
dronelink_dropped_packets_total{reason="unexpected",role="operator",transport="dtls"} 0
dronelink_dropped_packets_total{reason="unknown_key",role="operator",transport="dtls"} 0
dronelink_dropped_packets_total{reason="unknown_session",role="operator",transport="dtls"} 0
dronelink_dropped_packets_total{reason="wrong_drone_key",role="operator",transport="dtls"} 0
# HELP dronelink_link_transitions_total Per-session link state changes: state="down" when no datagram arrived for the link-lost time, state="up" when traffic resumed. These are counters, not a gauge of links down: a session that expires or closes while down reports no up, so down minus up overstates the links down now; use rate(...{state="down"}) to alert on link loss.
# TYPE dronelink_link_transitions_total counter
dronelink_link_transitions_total{role="operator",state="down",transport="dtls"} 2
dronelink_link_transitions_total{role="operator",state="up",transport="dtls"} 1
# HELP dronelink_logins_total Login answers, by result: sent by the drone (role=drone) or received by the operator (role=operator); unknown is a status this build does not know.
# TYPE dronelink_logins_total counter
dronelink_logins_total{result="busy",role="operator",transport="dtls"} 0
dronelink_logins_total{result="error",role="operator",transport="dtls"} 0
dronelink_logins_total{result="key_not_authorised",role="operator",transport="dtls"} 0
dronelink_logins_total{result="ok",role="operator",transport="dtls"} 1
dronelink_logins_total{result="rate_limited",role="operator",transport="dtls"} 0
dronelink_logins_total{result="unknown",role="operator",transport="dtls"} 1
dronelink_logins_total{result="unknown_user",role="operator",transport="dtls"} 0
dronelink_logins_total{result="wrong_password",role="operator",transport="dtls"} 1
# HELP dronelink_sessions_active Sessions in the drone's session table as of its last change (the operator side does not report it).
# TYPE dronelink_sessions_active gauge
dronelink_sessions_active{role="operator",transport="dtls"} 2
# HELP dronelink_command_round_trip_seconds Time from a command's first transmission to its acknowledgement, retransmissions included.
# TYPE dronelink_command_round_trip_seconds histogram
dronelink_command_round_trip_seconds_bucket{role="operator",transport="dtls",le="0.001"} 0
dronelink_command_round_trip_seconds_bucket{role="operator",transport="dtls",le="0.002"} 0
dronelink_command_round_trip_seconds_bucket{role="operator",transport="dtls",le="0.005"} 0
dronelink_command_round_trip_seconds_bucket{role="operator",transport="dtls",le="0.01"} 0
dronelink_command_round_trip_seconds_bucket{role="operator",transport="dtls",le="0.02"} 1
dronelink_command_round_trip_seconds_bucket{role="operator",transport="dtls",le="0.05"} 1
dronelink_command_round_trip_seconds_bucket{role="operator",transport="dtls",le="0.1"} 1
dronelink_command_round_trip_seconds_bucket{role="operator",transport="dtls",le="0.2"} 1
dronelink_command_round_trip_seconds_bucket{role="operator",transport="dtls",le="0.5"} 1
dronelink_command_round_trip_seconds_bucket{role="operator",transport="dtls",le="1"} 1
dronelink_command_round_trip_seconds_bucket{role="operator",transport="dtls",le="2"} 2
dronelink_command_round_trip_seconds_bucket{role="operator",transport="dtls",le="5"} 2
dronelink_command_round_trip_seconds_bucket{role="operator",transport="dtls",le="10"} 2
dronelink_command_round_trip_seconds_bucket{role="operator",transport="dtls",le="20"} 2
dronelink_command_round_trip_seconds_bucket{role="operator",transport="dtls",le="30"} 2
dronelink_command_round_trip_seconds_bucket{role="operator",transport="dtls",le="+Inf"} 2
dronelink_command_round_trip_seconds_sum{role="operator",transport="dtls"} 2.015
dronelink_command_round_trip_seconds_count{role="operator",transport="dtls"} 2
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want),
		"dronelink_dropped_packets_total", "dronelink_link_transitions_total", "dronelink_logins_total",
		"dronelink_sessions_active", "dronelink_command_round_trip_seconds"); err != nil {
		t.Error(err)
	}
}

// TestPacketHelp checks the documented double count of data datagrams.
func TestPacketHelp(t *testing.T) {
	reg := prometheus.NewRegistry()
	l := newLink(t, reg, metrics.Options{})
	l.PacketReceived(link.KindData, 120)
	l.PacketReceived(link.KindTelemetry, 0)
	const want = `
# HELP dronelink_packets_received_total Datagrams read from the socket, by kind: the outer type (initiation, response, error, data, key_request, key_answer) or the decrypted message type. A data datagram is counted once as kind="data" when it arrives and once more under its message kind (login, command, telemetry, ...) after it decrypts.
# TYPE dronelink_packets_received_total counter
dronelink_packets_received_total{kind="ack",role="drone",transport="native"} 0
dronelink_packets_received_total{kind="close",role="drone",transport="native"} 0
dronelink_packets_received_total{kind="command",role="drone",transport="native"} 0
dronelink_packets_received_total{kind="data",role="drone",transport="native"} 1
dronelink_packets_received_total{kind="error",role="drone",transport="native"} 0
dronelink_packets_received_total{kind="frames",role="drone",transport="native"} 0
dronelink_packets_received_total{kind="initiation",role="drone",transport="native"} 0
dronelink_packets_received_total{kind="keepalive",role="drone",transport="native"} 0
dronelink_packets_received_total{kind="key_answer",role="drone",transport="native"} 0
dronelink_packets_received_total{kind="key_request",role="drone",transport="native"} 0
dronelink_packets_received_total{kind="login",role="drone",transport="native"} 0
dronelink_packets_received_total{kind="login_result",role="drone",transport="native"} 0
dronelink_packets_received_total{kind="response",role="drone",transport="native"} 0
dronelink_packets_received_total{kind="telemetry",role="drone",transport="native"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "dronelink_packets_received_total"); err != nil {
		t.Error(err)
	}
}

func TestLint(t *testing.T) {
	reg := prometheus.NewRegistry()
	populate(newLink(t, reg, metrics.Options{Role: metrics.RoleDrone}))
	populate(newLink(t, reg, metrics.Options{Role: metrics.RoleOperator}))
	problems, err := testutil.GatherAndLint(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
	n, err := testutil.GatherAndCount(reg)
	if err != nil {
		t.Fatal(err)
	}
	if n == 0 {
		t.Fatal("nothing gathered")
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if !strings.HasPrefix(mf.GetName(), "dronelink_") {
			t.Errorf("metric %s lacks the dronelink_ prefix", mf.GetName())
		}
	}
}

func TestRegisterTwice(t *testing.T) {
	reg := prometheus.NewRegistry()
	first := newLink(t, reg, metrics.Options{})
	l, err := metrics.New(reg, metrics.Options{Transport: metrics.TransportNative, Role: metrics.RoleDrone})
	if err == nil || l != nil {
		t.Fatalf("second New with the same labels: %v, %v; want an error", l, err)
	}
	var are prometheus.AlreadyRegisteredError
	if !errors.As(err, &are) {
		t.Errorf("error %v is not an AlreadyRegisteredError", err)
	}
	// The failed attempt left the first Link's collectors registered and working.
	first.Rekeyed()
	const want = `
# HELP dronelink_rekeys_total Sessions replaced by a newer session with the same peer.
# TYPE dronelink_rekeys_total counter
dronelink_rekeys_total{role="drone",transport="native"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "dronelink_rekeys_total"); err != nil {
		t.Error(err)
	}
	// Different const labels share the registry.
	newLink(t, reg, metrics.Options{Role: metrics.RoleOperator})
	newLink(t, reg, metrics.Options{Transport: metrics.TransportDTLS})
	if n, err := testutil.GatherAndCount(reg, "dronelink_rekeys_total"); err != nil || n != 3 {
		t.Errorf("rekeys series = %d, %v; want 3", n, err)
	}
}

// A failed registration must not leave some of a Link's collectors behind.
func TestRegisterFailureRollsBack(t *testing.T) {
	reg := prometheus.NewRegistry()
	// A foreign collector that clashes with one registered late in New.
	clash := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "dronelink_rekeys_total", Help: "Sessions replaced by a newer session with the same peer.",
		ConstLabels: prometheus.Labels{"transport": "native", "role": "drone"},
	})
	if err := reg.Register(clash); err != nil {
		t.Fatal(err)
	}
	if _, err := metrics.New(reg, metrics.Options{}); err == nil {
		t.Fatal("New succeeded despite a clashing collector")
	}
	if !reg.Unregister(clash) {
		t.Fatal("clash not registered")
	}
	if n, err := testutil.GatherAndCount(reg); err != nil || n != 0 {
		t.Errorf("registry holds %d series after the failed New (%v), want 0", n, err)
	}
	newLink(t, reg, metrics.Options{}) // and a retry succeeds
}

func TestOptions(t *testing.T) {
	reg := prometheus.NewRegistry()
	if _, err := metrics.New(nil, metrics.Options{}); err == nil {
		t.Error("New(nil) succeeded")
	}
	for _, o := range []metrics.Options{{Transport: "quic"}, {Role: "pilot"}, {Transport: "Native"}} {
		if _, err := metrics.New(reg, o); err == nil {
			t.Errorf("New(%+v) succeeded, want an error", o)
		}
	}
	newLink(t, reg, metrics.Options{}).SessionsActive(4)
	const want = `
# HELP dronelink_sessions_active Sessions in the drone's session table as of its last change (the operator side does not report it).
# TYPE dronelink_sessions_active gauge
dronelink_sessions_active{role="drone",transport="native"} 4
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "dronelink_sessions_active"); err != nil {
		t.Errorf("defaults: %v", err)
	}
}

// The tunnel's metrics: every direction and reason resolved up front, and the hooks count.
func TestTunnelExposition(t *testing.T) {
	reg := prometheus.NewRegistry()
	tm, err := metrics.NewTunnel(reg, metrics.RoleDrone)
	if err != nil {
		t.Fatal(err)
	}
	tm.Frame(tunnel.Down, 40)
	tm.Frame(tunnel.Down, 21)
	tm.Frame(tunnel.Up, 45)
	tm.Dropped(tunnel.Up, tunnel.DropRole)
	tm.Dropped(tunnel.NumDirections, tunnel.DropRole) // out of range: ignored
	tm.Datagram(tunnel.Down, 2)
	const want = `
# HELP dronelink_mavlink_frames_total MAVLink frames the tunnel carried, by direction: up (ground station to autopilot), down.
# TYPE dronelink_mavlink_frames_total counter
dronelink_mavlink_frames_total{direction="down",role="drone"} 2
dronelink_mavlink_frames_total{direction="up",role="drone"} 1
# HELP dronelink_mavlink_frame_bytes_total Bytes of the MAVLink frames the tunnel carried, by direction.
# TYPE dronelink_mavlink_frame_bytes_total counter
dronelink_mavlink_frame_bytes_total{direction="down",role="drone"} 61
dronelink_mavlink_frame_bytes_total{direction="up",role="drone"} 45
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "dronelink_mavlink_frames_total",
		"dronelink_mavlink_frame_bytes_total"); err != nil {
		t.Error(err)
	}
	if n := testutil.CollectAndCount(reg, "dronelink_mavlink_dropped_frames_total"); n != int(tunnel.NumDirections)*int(tunnel.NumDropReasons) {
		t.Fatalf("%d drop series", n)
	}
	if _, err := metrics.NewTunnel(reg, metrics.RoleDrone); err == nil {
		t.Fatal("registered twice")
	}
	if _, err := metrics.NewTunnel(reg, "pilot"); err == nil {
		t.Fatal("a bad role accepted")
	}
}
