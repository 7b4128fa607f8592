package metrics_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"net/netip"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/dronelink/dronelink/pkg/crypto"
	"github.com/dronelink/dronelink/pkg/link"
	"github.com/dronelink/dronelink/pkg/link/fakenet"
	"github.com/dronelink/dronelink/pkg/metrics"
)

// In-memory fakenet addresses: nothing leaves the process.
var (
	droneAddr    = netip.MustParseAddrPort("127.0.0.1:5000")
	operatorAddr = netip.MustParseAddrPort("127.0.0.2:0")
)

var (
	keysOnce    sync.Once
	droneKey    *rsa.PrivateKey
	operatorKey *rsa.PrivateKey
	psk         crypto.PSK
)

func keys(tb testing.TB) {
	tb.Helper()
	keysOnce.Do(func() {
		var err error
		if droneKey, err = crypto.GenerateRSAKey(rand.Reader, 2048); err != nil {
			panic(err)
		}
		if operatorKey, err = crypto.GenerateRSAKey(rand.Reader, 2048); err != nil {
			panic(err)
		}
		if psk, err = crypto.GeneratePSK(rand.Reader); err != nil {
			panic(err)
		}
	})
}

// auth authorises the one operator key and logs every user in as a pilot.
type auth struct{}

func (auth) LookupKey(id crypto.KeyID) (*rsa.PublicKey, bool) {
	if id == crypto.KeyIDOf(&operatorKey.PublicKey) {
		return &operatorKey.PublicKey, true
	}
	return nil, false
}

func (auth) Login(string, []byte, crypto.KeyID) (link.Role, link.LoginStatus) {
	return link.RolePilot, link.LoginOK
}

func (auth) Authorize(string, crypto.KeyID) (link.Role, link.LoginStatus) {
	return link.RolePilot, link.LoginOK
}

// pair is a drone server and one logged-in operator client on a fakenet network.
type pair struct {
	server    *link.Server
	client    *link.Client
	telemetry atomic.Int64 // telemetry payloads the client received
}

func startPair(tb testing.TB, droneHooks, operatorHooks link.Hooks) *pair {
	tb.Helper()
	keys(tb)
	n, err := fakenet.New(fakenet.Config{Seed: 1, QueueLen: 1 << 16})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { n.Close() })
	sconn, err := n.Listen(droneAddr)
	if err != nil {
		tb.Fatal(err)
	}
	srv, err := link.NewServer(link.ServerConfig{
		Conn: sconn, PSK: psk, DroneKey: link.NewDroneKey(droneKey), Auth: auth{},
		Handler: func(context.Context, link.Command) (link.AckStatus, []byte) { return link.AckOK, nil },
		Hooks:   droneHooks,
	})
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	tb.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			tb.Errorf("server Run: %v", err)
		}
	})

	p := &pair{server: srv}
	cconn, err := n.Listen(operatorAddr)
	if err != nil {
		tb.Fatal(err)
	}
	dialCtx, dialCancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer dialCancel()
	p.client, err = link.Dial(dialCtx, link.ClientConfig{
		Conn: cconn, Drone: droneAddr, PSK: psk, OperatorKey: operatorKey, DronePublic: &droneKey.PublicKey,
		User: "alice", Password: []byte("pw"), Hooks: operatorHooks,
		OnTelemetry: func([]byte) { p.telemetry.Add(1) },
	})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { p.client.Close() })
	return p
}

// waitTelemetry waits until the client has received at least n telemetry payloads.
func (p *pair) waitTelemetry(tb testing.TB, n int64) {
	tb.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for p.telemetry.Load() < n {
		if time.Now().After(deadline) {
			tb.Fatalf("client received %d telemetry payloads, want %d", p.telemetry.Load(), n)
		}
		runtime.Gosched()
	}
}

// value returns the value of the counter or gauge series name{labels} in reg.
func value(t *testing.T, reg prometheus.Gatherer, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metric:
		for _, m := range mf.GetMetric() {
			have := map[string]string{}
			for _, lp := range m.GetLabel() {
				have[lp.GetName()] = lp.GetValue()
			}
			for k, v := range labels {
				if have[k] != v {
					continue metric
				}
			}
			switch {
			case m.Counter != nil:
				return m.GetCounter().GetValue()
			case m.Gauge != nil:
				return m.GetGauge().GetValue()
			case m.Histogram != nil:
				return float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	t.Fatalf("no series %s%v", name, labels)
	return 0
}

// TestLinkEndToEnd runs a real drone and operator with metrics on one registry and checks
// that the link's events show up under the right labels.
func TestLinkEndToEnd(t *testing.T) {
	reg := prometheus.NewRegistry()
	drone, err := metrics.New(reg, metrics.Options{Role: metrics.RoleDrone})
	if err != nil {
		t.Fatal(err)
	}
	operator, err := metrics.New(reg, metrics.Options{Role: metrics.RoleOperator})
	if err != nil {
		t.Fatal(err)
	}
	p := startPair(t, drone, operator)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if ack, err := p.client.Command(ctx, []byte("arm")); err != nil || ack.Status != link.AckOK {
		t.Fatalf("command: %+v, %v", ack, err)
	}
	const telemetry = 25
	for range telemetry {
		if n, err := p.server.Broadcast([]byte(strings.Repeat("t", 64))); err != nil || n != 1 {
			t.Fatalf("broadcast: %d, %v", n, err)
		}
	}
	p.waitTelemetry(t, telemetry)

	d := map[string]string{"role": "drone", "transport": "native"}
	o := map[string]string{"role": "operator", "transport": "native"}
	with := func(base map[string]string, k, v string) map[string]string {
		m := map[string]string{k: v}
		for bk, bv := range base {
			m[bk] = bv
		}
		return m
	}
	// Exact where the count cannot depend on timing; at least where a slow run (the race
	// detector on a busy machine) may retransmit a request after RequestRetryInitial.
	for _, c := range []struct {
		name    string
		labels  map[string]string
		want    float64
		atLeast bool
	}{
		{"dronelink_handshakes_total", with(d, "result", "ok"), 1, true},
		{"dronelink_handshakes_total", with(o, "result", "ok"), 1, true},
		{"dronelink_handshakes_total", with(o, "result", "failed"), 0, false},
		{"dronelink_logins_total", with(d, "result", "ok"), 1, true},
		{"dronelink_logins_total", with(o, "result", "ok"), 1, true},
		{"dronelink_logins_total", with(d, "result", "wrong_password"), 0, false},
		{"dronelink_commands_total", with(d, "status", "ok"), 1, false}, // executed once
		{"dronelink_commands_total", with(o, "status", "ok"), 1, false}, // completed once
		{"dronelink_command_round_trip_seconds", o, 1, false},
		{"dronelink_sessions_active", d, 1, false},
		{"dronelink_packets_sent_total", with(d, "kind", "telemetry"), telemetry, false},
		{"dronelink_packets_received_total", with(o, "kind", "telemetry"), telemetry, false},
		{"dronelink_packets_received_total", with(d, "kind", "initiation"), 1, true},
		{"dronelink_packets_sent_total", with(o, "kind", "initiation"), 1, true},
		{"dronelink_packets_received_total", with(d, "kind", "command"), 1, true},
		{"dronelink_packets_received_total", with(o, "kind", "ack"), 1, true},
		{"dronelink_dropped_packets_total", with(o, "reason", "replay"), 0, false},
		{"dronelink_dropped_packets_total", with(d, "reason", "bad_mac"), 0, false},
	} {
		got := value(t, reg, c.name, c.labels)
		if got != c.want && !(c.atLeast && got > c.want) {
			t.Errorf("%s%v = %v, want %v (at least: %v)", c.name, c.labels, got, c.want, c.atLeast)
		}
	}
	// Every data datagram is counted as data on arrival, then under its message kind.
	dataIn := value(t, reg, "dronelink_packets_received_total", with(o, "kind", "data"))
	if dataIn < telemetry+2 { // telemetry, login result, ack
		t.Errorf("operator received %v data datagrams, want >= %d", dataIn, telemetry+2)
	}
	// Bytes are counted once, under the outer kind.
	if b := value(t, reg, "dronelink_received_bytes_total", with(o, "kind", "telemetry")); b != 0 {
		t.Errorf("telemetry bytes counted under the message kind: %v", b)
	}
	if b := value(t, reg, "dronelink_received_bytes_total", with(o, "kind", "data")); b < 64*telemetry {
		t.Errorf("operator received %v data bytes, want >= %d", b, 64*telemetry)
	}
	if b := value(t, reg, "dronelink_sent_bytes_total", with(d, "kind", "telemetry")); b < 64*telemetry {
		t.Errorf("drone sent %v telemetry bytes, want >= %d", b, 64*telemetry)
	}
	if problems, err := testutil.GatherAndLint(reg); err != nil || len(problems) > 0 {
		t.Errorf("lint: %v %v", problems, err)
	}
}

// BenchmarkTelemetryMetrics measures drone-to-operator telemetry throughput over fakenet
// with no-op hooks and with Prometheus hooks on both ends, to bound the metrics overhead.
func BenchmarkTelemetryMetrics(b *testing.B) {
	for _, bc := range []struct {
		name  string
		hooks func(reg prometheus.Registerer) (drone, operator link.Hooks)
	}{
		{"hooks=nop", func(prometheus.Registerer) (link.Hooks, link.Hooks) {
			return link.NopHooks{}, link.NopHooks{}
		}},
		{"hooks=prometheus", func(reg prometheus.Registerer) (link.Hooks, link.Hooks) {
			d, err := metrics.New(reg, metrics.Options{Role: metrics.RoleDrone})
			if err != nil {
				b.Fatal(err)
			}
			o, err := metrics.New(reg, metrics.Options{Role: metrics.RoleOperator})
			if err != nil {
				b.Fatal(err)
			}
			return d, o
		}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			drone, operator := bc.hooks(prometheus.NewRegistry())
			p := startPair(b, drone, operator)
			payload := make([]byte, 64)
			b.ReportAllocs()
			var sent int64
			start := time.Now()
			for b.Loop() {
				if n, err := p.server.Broadcast(payload); err != nil || n != 1 {
					b.Fatalf("broadcast: %d, %v", n, err)
				}
				sent++
				if sent%256 == 0 { // keep the client's queue short
					p.waitTelemetry(b, sent-128)
				}
			}
			p.waitTelemetry(b, sent)
			b.ReportMetric(float64(sent)/time.Since(start).Seconds(), "packets/s")
		})
	}
}

// BenchmarkHooks measures one hook call, for the per-packet cost behind
// BenchmarkTelemetryMetrics (a telemetry datagram costs the drone one PacketSent and the
// operator two PacketReceived calls).
func BenchmarkHooks(b *testing.B) {
	l, err := metrics.New(prometheus.NewRegistry(), metrics.Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Run("PacketReceived", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			l.PacketReceived(link.KindData, 96)
		}
	})
	b.Run("PacketSent", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			l.PacketSent(link.KindTelemetry, 96)
		}
	})
	b.Run("CommandRoundTrip", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			l.CommandRoundTrip(35 * time.Millisecond)
		}
	})
	b.Run("PacketReceived/parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				l.PacketReceived(link.KindData, 96)
			}
		})
	})
}
