package metrics

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"

	"github.com/dronelink/dronelink/pkg/link"
)

func newTestLink(t *testing.T) (*Link, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	l, err := New(reg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	return l, reg
}

func checkValue(t *testing.T, what string, c prometheus.Collector, want float64) {
	t.Helper()
	if got := testutil.ToFloat64(c); got != want {
		t.Errorf("%s = %v, want %v", what, got, want)
	}
}

// The label counts must follow the link package's enums (LoginOK..LoginInternal,
// AckOK..AckRestarted); a wrong count would mislabel or drop statuses.
func TestStatusCounts(t *testing.T) {
	if numLoginStatuses != int(link.LoginInternal)+1 {
		t.Errorf("numLoginStatuses = %d, want %d", numLoginStatuses, link.LoginInternal+1)
	}
	if numAckStatuses != int(link.AckRestarted)+1 {
		t.Errorf("numAckStatuses = %d, want %d", numAckStatuses, link.AckRestarted+1)
	}
}

func TestHooksCountEvents(t *testing.T) {
	l, _ := newTestLink(t)

	l.PacketReceived(link.KindData, 100)
	l.PacketReceived(link.KindTelemetry, 0) // the same datagram, decrypted: no bytes
	l.PacketReceived(link.KindData, 50)
	l.PacketReceived(link.KindInitiation, 700)
	checkValue(t, "received data", l.received[link.KindData], 2)
	checkValue(t, "received bytes data", l.receivedBytes[link.KindData], 150)
	checkValue(t, "received telemetry", l.received[link.KindTelemetry], 1)
	checkValue(t, "received bytes telemetry", l.receivedBytes[link.KindTelemetry], 0)
	checkValue(t, "received initiation", l.received[link.KindInitiation], 1)
	checkValue(t, "received bytes initiation", l.receivedBytes[link.KindInitiation], 700)
	checkValue(t, "received close", l.received[link.KindClose], 0)

	l.PacketSent(link.KindTelemetry, 64)
	l.PacketSent(link.KindTelemetry, 64)
	l.PacketSent(link.KindKeepalive, 40)
	checkValue(t, "sent telemetry", l.sent[link.KindTelemetry], 2)
	checkValue(t, "sent bytes telemetry", l.sentBytes[link.KindTelemetry], 128)
	checkValue(t, "sent keepalive", l.sent[link.KindKeepalive], 1)
	checkValue(t, "sent bytes keepalive", l.sentBytes[link.KindKeepalive], 40)
	checkValue(t, "sent data", l.sent[link.KindData], 0)

	l.Dropped(link.DropReplay)
	l.Dropped(link.DropReplay)
	l.Dropped(link.DropBadMAC)
	checkValue(t, "dropped replay", l.dropped[link.DropReplay], 2)
	checkValue(t, "dropped bad_mac", l.dropped[link.DropBadMAC], 1)
	checkValue(t, "dropped decrypt", l.dropped[link.DropDecrypt], 0)

	l.Handshake(link.HandshakeOK)
	l.Handshake(link.HandshakeFailed)
	l.Handshake(link.HandshakeFailed)
	checkValue(t, "handshake ok", l.handshakes[link.HandshakeOK], 1)
	checkValue(t, "handshake failed", l.handshakes[link.HandshakeFailed], 2)
	checkValue(t, "handshake refused", l.handshakes[link.HandshakeRefused], 0)

	l.Login(link.LoginOK)
	l.Login(link.LoginWrongPassword)
	l.Login(link.LoginInternal)
	checkValue(t, "login ok", l.logins[link.LoginOK], 1)
	checkValue(t, "login wrong_password", l.logins[link.LoginWrongPassword], 1)
	checkValue(t, "login error", l.logins[link.LoginInternal], 1)
	checkValue(t, "login busy", l.logins[link.LoginBusy], 0)

	l.Command(link.AckOK)
	l.Command(link.AckOK)
	l.Command(link.AckBusy)
	checkValue(t, "command ok", l.commands[link.AckOK], 2)
	checkValue(t, "command busy", l.commands[link.AckBusy], 1)
	checkValue(t, "command failed", l.commands[link.AckFailed], 0)

	l.CommandRoundTrip(20 * time.Millisecond)
	l.CommandRoundTrip(3 * time.Second)
	if n := testutil.CollectAndCount(l.roundTrip); n != 1 {
		t.Errorf("round-trip histogram has %d series, want 1", n)
	}

	l.SessionsActive(3)
	checkValue(t, "sessions", l.sessions, 3)
	l.SessionsActive(1)
	checkValue(t, "sessions", l.sessions, 1)

	l.Rekeyed()
	l.Rekeyed()
	checkValue(t, "rekeys", l.rekeys, 2)

	l.LinkState(false)
	l.LinkState(true)
	l.LinkState(false)
	checkValue(t, "link down", l.linkDown, 2)
	checkValue(t, "link up", l.linkUp, 1)

	l.LinkEstimate(link.LinkEstimate{SRTT: 42 * time.Millisecond, RTO: 60 * time.Millisecond, Loss: 0.25})
	checkValue(t, "round trip", l.srtt, 0.042)
	checkValue(t, "timeout", l.rto, 0.06)
	checkValue(t, "loss", l.loss, 0.25)
}

// Every label value is created up front, so a series exists (at zero) before its first
// event: rate() and absent() work from the first scrape.
func TestSeriesPreCreated(t *testing.T) {
	_, reg := newTestLink(t)
	for name, want := range map[string]int{
		"dronelink_packets_received_total":         int(link.NumPacketKinds),
		"dronelink_received_bytes_total":           int(link.NumPacketKinds),
		"dronelink_packets_sent_total":             int(link.NumPacketKinds),
		"dronelink_sent_bytes_total":               int(link.NumPacketKinds),
		"dronelink_dropped_packets_total":          int(link.NumDropReasons),
		"dronelink_handshakes_total":               int(link.NumHandshakeResults),
		"dronelink_logins_total":                   int(link.LoginInternal) + 2, // + unknown
		"dronelink_commands_total":                 int(link.AckRestarted) + 2,  // + unknown
		"dronelink_command_round_trip_seconds":     1,
		"dronelink_sessions_active":                1,
		"dronelink_rekeys_total":                   1,
		"dronelink_link_transitions_total":         2,
		"dronelink_handshake_operations_total":     int(link.NumHandshakeWork),
		"dronelink_round_trip_time_seconds":        1,
		"dronelink_retransmission_timeout_seconds": 1,
		"dronelink_loss_ratio":                     1,
	} {
		got, err := testutil.GatherAndCount(reg, name)
		if err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Errorf("%s has %d series, want %d", name, got, want)
		}
	}
	total, err := testutil.GatherAndCount(reg)
	if err != nil {
		t.Fatal(err)
	}
	if want := 4*int(link.NumPacketKinds) + int(link.NumDropReasons) + int(link.NumHandshakeResults) +
		int(link.LoginInternal) + 2 + int(link.AckRestarted) + 2 + 5 + int(link.NumHandshakeWork) + 3; total != want {
		t.Errorf("registry has %d series, want %d (a metric added or lost)", total, want)
	}
}

// Out-of-range values must neither panic nor count under a wrong label: internal enums
// are ignored, wire/handler statuses count as unknown.
func TestOutOfRange(t *testing.T) {
	l, reg := newTestLink(t)
	before, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	l.PacketReceived(link.NumPacketKinds, 10)
	l.PacketReceived(255, 10)
	l.PacketSent(link.NumPacketKinds, 10)
	l.Dropped(link.NumDropReasons)
	l.Dropped(255)
	l.Handshake(link.NumHandshakeResults)
	l.PacketReceived(link.KindData, -1) // a negative size must not panic (Counter.Add panics on < 0)
	after, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	if b, a := sumCounters(before), sumCounters(after); a != b+1 { // only the data packet with size -1 counts
		t.Errorf("counter sum went from %v to %v, want +1", b, a)
	}

	l.Login(link.LoginStatus(7))
	l.Login(link.LoginStatus(255))
	l.Command(link.AckStatus(8))
	l.Command(link.AckStatus(200))
	l.Command(link.AckStatus(200))
	checkValue(t, "login unknown", l.logins[numLoginStatuses], 2)
	checkValue(t, "command unknown", l.commands[numAckStatuses], 3)
	checkValue(t, "login error", l.logins[link.LoginInternal], 0)
	checkValue(t, "command busy", l.commands[link.AckBusy], 0)
}

// The hooks run per packet: each must be allocation-free.
func TestHooksDoNotAllocate(t *testing.T) {
	l, _ := newTestLink(t)
	var up bool
	for name, f := range map[string]func(){
		"PacketReceived":        func() { l.PacketReceived(link.KindData, 120) },
		"PacketReceived(size0)": func() { l.PacketReceived(link.KindTelemetry, 0) },
		"PacketSent":            func() { l.PacketSent(link.KindTelemetry, 96) },
		"Dropped":               func() { l.Dropped(link.DropReplay) },
		"Handshake":             func() { l.Handshake(link.HandshakeOK) },
		"Login":                 func() { l.Login(link.LoginOK) },
		"Login(unknown)":        func() { l.Login(99) },
		"Command":               func() { l.Command(link.AckFailed) },
		"Command(unknown)":      func() { l.Command(99) },
		"CommandRoundTrip":      func() { l.CommandRoundTrip(42 * time.Millisecond) },
		"SessionsActive":        func() { l.SessionsActive(7) },
		"Rekeyed":               func() { l.Rekeyed() },
		"LinkState":             func() { up = !up; l.LinkState(up) },
		"HandshakeWork":         func() { l.HandshakeWork(link.WorkUnwrap) },
		"LinkEstimate":          func() { l.LinkEstimate(link.LinkEstimate{SRTT: time.Millisecond, Loss: 0.1}) },
	} {
		if n := testing.AllocsPerRun(1000, f); n != 0 {
			t.Errorf("%s: %v allocations per call, want 0", name, n)
		}
	}
}

// sumCounters adds up every counter series.
func sumCounters(fams []*dto.MetricFamily) float64 {
	var sum float64
	for _, f := range fams {
		for _, m := range f.GetMetric() {
			sum += m.GetCounter().GetValue()
		}
	}
	return sum
}
