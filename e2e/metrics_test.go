package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/dronelink/dronelink/pkg/crypto"
	"github.com/dronelink/dronelink/pkg/link"
	"github.com/dronelink/dronelink/pkg/metrics"
)

// scrape fetches a /metrics page and returns its sample lines by series.
func scrape(t *testing.T, url string) (map[string]float64, []byte) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("scrape %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape %s: %d %v", url, resp.StatusCode, err)
	}
	samples := map[string]float64{}
	s := bufio.NewScanner(bytes.NewReader(body))
	for s.Scan() {
		line := s.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("bad sample line %q", line)
		}
		samples[line[:i]] = v
	}
	return samples, body
}

// sum adds the samples of a metric whose series contain every fragment.
func sum(samples map[string]float64, metric string, fragments ...string) float64 {
	total := 0.0
	for series, v := range samples {
		if !strings.HasPrefix(series, metric+"{") && series != metric {
			continue
		}
		ok := true
		for _, f := range fragments {
			ok = ok && strings.Contains(series, f)
		}
		if ok {
			total += v
		}
	}
	return total
}

// promtoolCheck runs `promtool check metrics` on an exposition when promtool is installed
// (.ci/run installs it).
func promtoolCheck(t *testing.T, body []byte) {
	t.Helper()
	path, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("promtool is not installed on CI")
		}
		t.Log("SKIPPED promtool check: promtool not installed (apt-get install prometheus)")
		return
	}
	cmd := exec.Command(path, "check", "metrics")
	cmd.Stdin = bytes.NewReader(body)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("promtool check metrics: %v\n%s", err, out)
	}
}

// The daemon's metrics over HTTP: a garbage flood shows up as drops with a reason, a real
// command as one handshake, one login and one ok command; the operator's command round
// trip lands in its histogram.
func TestMetricsScrape(t *testing.T) {
	f := newFleet(t)
	metricsAddr := freePort(t) // a free port number; TCP on the same number is free in practice
	d := startDrone(t, f, "--metrics", metricsAddr)
	url := "http://" + metricsAddr + "/metrics"

	// An operator in this process, with metrics of its own.
	key, err := crypto.LoadPrivateKey(f.path("alice.key"))
	if err != nil {
		t.Fatal(err)
	}
	dronePub, err := crypto.LoadPublicKey(f.path("drone.key.pub"))
	if err != nil {
		t.Fatal(err)
	}
	psk, err := crypto.LoadPSK(f.path("psk"))
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	opHooks, err := metrics.New(reg, metrics.Options{Role: metrics.RoleOperator})
	if err != nil {
		t.Fatal(err)
	}
	operatorMetrics := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	defer operatorMetrics.Close()
	conn, err := link.ListenUDP("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	client, err := link.Dial(ctx, link.ClientConfig{Conn: conn, Drone: netip.MustParseAddrPort(d.addr), PSK: psk,
		OperatorKey: key, DronePublic: dronePub, User: "alice", Password: []byte("alice secret"), Hooks: opHooks})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	ack, err := client.Command(ctx, []byte("take off to 10 m"))
	if err != nil || ack.Status != link.AckOK {
		t.Fatalf("command: %v %v", ack.Status, err)
	}

	// 2000 garbage datagrams from another socket.
	garbage, err := net.Dial("udp", d.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer garbage.Close()
	const flood = 2000
	junk := make([]byte, 200)
	for i := range flood {
		rand.Read(junk)
		junk[0] = byte(i) // every type nibble and version
		garbage.Write(junk[:1+i%len(junk)])
		if i%200 == 0 {
			time.Sleep(time.Millisecond) // stay below the socket buffer on a loaded machine
		}
	}
	var samples map[string]float64
	var body []byte
	waitFor(t, "the flood in the metrics", func() bool {
		samples, body = scrape(t, url)
		return sum(samples, "dronelink_dropped_packets_total") >= flood
	})
	for _, reason := range []string{"malformed", "bad_mac", "unknown_session"} {
		t.Logf("dropped as %s: %v", reason, sum(samples, "dronelink_dropped_packets_total", `reason="`+reason+`"`))
	}
	if sum(samples, "dronelink_dropped_packets_total", `reason="malformed"`) == 0 {
		t.Error("no drop counted with reason malformed")
	}
	checks := []struct {
		metric    string
		fragments []string
		want      float64
	}{
		{"dronelink_handshakes_total", []string{`result="ok"`, `role="drone"`}, 1},
		{"dronelink_logins_total", []string{`result="ok"`}, 1},
		{"dronelink_commands_total", []string{`status="ok"`}, 1},
		{"dronelink_sessions_active", nil, 1},
	}
	for _, c := range checks {
		if got := sum(samples, c.metric, c.fragments...); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.metric, c.fragments, got, c.want)
		}
	}
	if sum(samples, "process_resident_memory_bytes") == 0 || sum(samples, "go_goroutines") == 0 {
		t.Error("the Go and process collectors are missing")
	}
	promtoolCheck(t, body)

	op, opBody := scrape(t, operatorMetrics.URL)
	if got := sum(op, "dronelink_command_round_trip_seconds_count"); got != 1 {
		t.Errorf("operator round-trip histogram count %v, want 1", got)
	}
	if got := sum(op, "dronelink_command_round_trip_seconds_sum"); !(got > 0 && got < 30) {
		t.Errorf("operator round-trip sum %v s", got)
	}
	promtoolCheck(t, opBody)
}

func TestMetricsStayOnLoopback(t *testing.T) {
	f := newFleet(t)
	port := freePort(t)
	_, p, _ := net.SplitHostPort(port)
	d := startDrone(t, f, "--metrics", ":"+p)
	_, errs := d.output()
	if !strings.Contains(errs, "metrics=127.0.0.1:"+p) {
		t.Fatalf("an empty metrics host did not mean loopback: %s", errs)
	}
}
