package metrics_test

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/dronelink/dronelink/pkg/metrics"
	"github.com/dronelink/dronelink/pkg/relay"
)

// The relay's series exist from the start, every drop reason at zero, and follow its
// events; server_info keeps only the server connected to now.
func TestRelayMetrics(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	r, err := metrics.NewRelay(reg, metrics.RoleDrone)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := metrics.NewRelay(reg, metrics.RoleDrone); err == nil {
		t.Error("registered twice")
	}
	if _, err := metrics.NewRelay(prometheus.NewRegistry(), "pilot"); err == nil {
		t.Error("accepted role pilot")
	}
	var want strings.Builder
	want.WriteString("# HELP dronelink_relay_dropped_total x\n# TYPE dronelink_relay_dropped_total counter\n")
	for _, reason := range relay.DropReasons() {
		n := 0
		if reason == relay.DropBadReply {
			n = 2
		}
		want.WriteString(`dronelink_relay_dropped_total{reason="` + reason.String() + `",role="drone"} ` + string(rune('0'+n)) + "\n")
	}
	r.Dropped(relay.DropBadReply)
	r.Dropped(relay.DropBadReply)
	r.Dropped(relay.DropReason(200)) // out of range: ignored, no panic
	if err := testutil.CollectAndCompare(reg, strings.NewReader(strings.Replace(want.String(), "x", helpOf(t, reg, "dronelink_relay_dropped_total"), 1)), "dronelink_relay_dropped_total"); err != nil {
		t.Error(err)
	}

	r.Connected("nats://n1:4222")
	r.Disconnected()
	r.Reconnected()
	r.Connected("nats://n2:4222")
	for _, tc := range []struct {
		name string
		want float64
	}{
		{"dronelink_relay_connected", 1},
		{"dronelink_relay_disconnects_total", 1},
		{"dronelink_relay_reconnects_total", 1},
	} {
		if got := gather(t, reg, tc.name); len(got) != 1 || got[0] != tc.want {
			t.Errorf("%s = %v, want %v", tc.name, got, tc.want)
		}
	}
	if n := testutil.CollectAndCount(reg, "dronelink_relay_server_info"); n != 1 {
		t.Errorf("%d server_info series, want 1 (the current server's)", n)
	}
	if err := testutil.CollectAndCompare(reg, strings.NewReader(`# HELP dronelink_relay_server_info `+helpOf(t, reg, "dronelink_relay_server_info")+`
# TYPE dronelink_relay_server_info gauge
dronelink_relay_server_info{role="drone",server="nats://n2:4222"} 1
`), "dronelink_relay_server_info"); err != nil {
		t.Error(err)
	}
	r.Disconnected()
	if got := gather(t, reg, "dronelink_relay_connected"); len(got) != 1 || got[0] != 0 {
		t.Errorf("connected after a loss = %v", got)
	}
}

// gather is the values of every series of name.
func gather(t *testing.T, reg *prometheus.Registry, name string) []float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var out []float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			switch {
			case m.Gauge != nil:
				out = append(out, m.GetGauge().GetValue())
			case m.Counter != nil:
				out = append(out, m.GetCounter().GetValue())
			}
		}
	}
	return out
}

// helpOf is name's help text.
func helpOf(t *testing.T, reg *prometheus.Registry, name string) string {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetHelp()
		}
	}
	t.Fatalf("no %s", name)
	return ""
}
