package main

import (
	"bytes"
	"context"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// runHarness runs the harness with args and returns its standard output.
func runHarness(t *testing.T, args ...string) string {
	t.Helper()
	var stdout, stderr bytes.Buffer
	if code := run(context.Background(), args, &stdout, &stderr); code != 0 {
		t.Fatalf("bench %s: exit %d: %s\n%s", strings.Join(args, " "), code, stderr.String(), stdout.String())
	}
	t.Logf("output:\n%s", stdout.String())
	return stdout.String()
}

// The table has one line per contender in the documented form and the ratios; only the
// format and a positive packet rate are checked, never a threshold.
func TestThroughputLines(t *testing.T) {
	out := runHarness(t, "--duration", "200ms", "--rounds", "1", "--sizes", "64", "--contenders", "raw-udp,dronelink,dronelink-batch",
		"--handshakes", "0", "--sessions", "0")
	line := regexp.MustCompile(`(?m)^(raw-udp|dronelink|dronelink-batch) pps=(\d+) mbps=(\d+\.\d) overhead=(\d+) loss=(\d+\.\d)%$`)
	matches := line.FindAllStringSubmatch(out, -1)
	if len(matches) != 3 {
		t.Fatalf("want 3 contender lines, got %d", len(matches))
	}
	for _, m := range matches {
		if pps, _ := strconv.Atoi(m[2]); pps <= 0 {
			t.Errorf("%s: pps %s, want positive", m[1], m[2])
		}
		overhead, _ := strconv.Atoi(m[4])
		if want := map[string]int{"raw-udp": 0, "dronelink": 24, "dronelink-batch": 24}[m[1]]; overhead != want {
			t.Errorf("%s: overhead %d, want %d", m[1], overhead, want)
		}
	}
	for _, ratio := range []string{"dronelink/raw-udp", "dronelink-batch/raw-udp", "dronelink-batch/dronelink"} {
		if !regexp.MustCompile(`(?m)^ratio ` + ratio + `=\d+\.\d\d$`).MatchString(out) {
			t.Errorf("no ratio line %s", ratio)
		}
	}
}

// Payloads beyond link.MaxTelemetryPayload are clamped for dronelink, and the output says so.
func TestClampedPayloadNoted(t *testing.T) {
	out := runHarness(t, "--duration", "100ms", "--rounds", "1", "--size", "1200", "--contenders", "dronelink",
		"--handshakes", "0", "--sessions", "0")
	if !strings.Contains(out, "clamped from 1200 to link.MaxTelemetryPayload = 1176") {
		t.Error("no clamping note")
	}
}

// The lossy mode, the handshake rates and the memory figures print their lines.
func TestOtherSections(t *testing.T) {
	if testing.Short() {
		t.Skip("generates RSA keys")
	}
	out := runHarness(t, "--contenders", "", "--duration", "100ms", "--loss", "0.1", "--loss-duration", "200ms",
		"--delay", "2ms", "--concurrency", "4", "--handshakes", "4", "--rsa-bits", "2048", "--sessions", "100",
		"--cold", "2", "--cold-loss", "0")
	for _, re := range []string{
		`(?m)^lossy-fixed loss=10% delay=2ms cmd/s=\d+ p50=\d+\.\d\dms p99=\d+\.\d\dms acked=[1-9]\d* failed=\d+ tx/cmd=\d+\.\d\d acks/cmd=\d+\.\d\d proxy-dropped=\d+/\d+$`,
		`(?m)^lossy loss=10% delay=2ms cmd/s=\d+ p50=\d+\.\d\dms p99=\d+\.\d\dms acked=[1-9]\d* failed=\d+ tx/cmd=\d+\.\d\d acks/cmd=\d+\.\d\d proxy-dropped=\d+/\d+ est-srtt=\d+\.\d\dms est-rto=\d+\.\d\dms est-loss=\d+\.\d%$`,
		`(?m)^cold-fixed loss=0% delay=2ms runs=2 p50=\d+\.\d\dms p90=\S+ p99=\S+ max=\S+ within-2s=\d/2 handshake-p50=\S+ login-p50=\S+ command-p50=\S+ initiations/run=\d+\.\d\d tx/cmd=\d+\.\d\d failed=\d+$`,
		`(?m)^cold loss=0% delay=2ms runs=2 p50=\d+\.\d\dms .* initiations/run=\d+\.\d\d .*failed=\d+$`,
		`(?m)^handshake rsa-2048 n=4 hs/s=[1-9]\d*( hs/cpu-s=\d+)?$`,
		`(?m)^handshake pion-dtls-psk n=[1-9]\d* hs/s=\d+`,
		`(?m)^memory link.NewSession n=100 bytes/session=[1-9]\d* `,
		`(?m)^memory responder n=4 bytes/session=\d+ `,
		`(?m)^memory link.Server n=4 bytes/session=\d+ `,
	} {
		if !regexp.MustCompile(re).MatchString(out) {
			t.Errorf("no line matching %s", re)
		}
	}
}

// The fleet mode runs a small fleet through a 3-node nats-server cluster and over UDP and
// prints its lines: telemetry delivered and commands acknowledged on both transports, the
// relay's datagram accounting, and the goal line. Counts only, never a time.
func TestFleetLines(t *testing.T) {
	if testing.Short() {
		t.Skip("builds nats-server and generates RSA keys")
	}
	out := runHarness(t, "--fleet", "10", "--fleet-duration", "2s", "--fleet-command-every", "300ms", "--fleet-ramp", "4")
	for _, transport := range []string{"relay", "udp"} {
		head := `(?m)^fleet ` + transport + ` round=1 drones=10 `
		m := regexp.MustCompile(head + `telemetry: offered=100/s sent=(\d+) unsent=0 delivered=(\d+) \(\d+\.\d{3}%\) rate=\d+/s lost=-?\d+ reordered=\d+ p50=\S+ p99=\S+ max=\S+ link-drops=\d+ link-downs=\d+$`).FindStringSubmatch(out)
		if m == nil {
			t.Fatalf("%s: no telemetry line in the documented form", transport)
		}
		if sent, _ := strconv.Atoi(m[1]); sent == 0 {
			t.Errorf("%s: no telemetry sent", transport)
		}
		if delivered, _ := strconv.Atoi(m[2]); delivered == 0 {
			t.Errorf("%s: no telemetry delivered", transport)
		}
		m = regexp.MustCompile(head + `commands: acked=(\d+) failed=(\d+) p50=\S+ p99=\S+ max=\S+$`).FindStringSubmatch(out)
		if m == nil {
			t.Fatalf("%s: no commands line in the documented form", transport)
		}
		if acked, _ := strconv.Atoi(m[1]); acked == 0 || m[2] != "0" {
			t.Errorf("%s: %s commands acknowledged, %s failed", transport, m[1], m[2])
		}
		if !regexp.MustCompile(head + `cpu: cpu/1k-msg=\d+\.\dms nats-cpu/1k-msg=\S+ machine-busy=\S+ others=\S+ steal=\S+ idle-cpu=\d+% nats-idle-cpu=\S+ machine-idle-busy=\S+ others=\S+ gc=\d+ sched-p99=\d+\.\d\dms sched-max=\d+\.\d\dms setup=\d+\.\ds$`).MatchString(out) {
			t.Errorf("%s: no cpu line in the documented form", transport)
		}
		if !regexp.MustCompile(head + `memory: heap/drone=\d+\.\dkB heap/pair=\d+\.\dkB heap/pair\+cmd=\d+\.\dkB rss/pair\+cmd=\d+\.\dkB heap-end/pair=\d+\.\dkB rss-end/pair=\d+\.\dkB$`).MatchString(out) {
			t.Errorf("%s: no memory line in the documented form", transport)
		}
	}
	for _, dir := range []string{"down", "up"} {
		m := regexp.MustCompile(`(?m)^fleet relay round=1 drones=10 nats ` + dir + `: written=(\d+) accepted=(\d+) forwarded=(\d+) read=(\d+) never-accepted=-?\d+ lost-in-nats=-?\d+ lost-after-nats=-?\d+ \(each ±\d+\)$`).FindStringSubmatch(out)
		if m == nil {
			t.Fatalf("no nats %s line in the documented form", dir)
		}
		for i, what := range []string{"written", "accepted", "forwarded", "read"} {
			if n, _ := strconv.Atoi(m[i+1]); n == 0 {
				t.Errorf("nats %s: %s = 0", dir, what)
			}
		}
	}
	if !regexp.MustCompile(`(?m)^fleet relay round=1 drones=10 nats: client-drops=\S+ disconnects=\d+ server-slow-consumers=\d+ \(routes \d+\)$`).MatchString(out) {
		t.Error("no nats drops line")
	}
	if !regexp.MustCompile(`(?m)^fleet-goal round=1 command p99 relay-udp=[+-]\d+\.\d\dms \(goal: at most 10ms: (met|NOT met)\)$`).MatchString(out) {
		t.Error("no goal line")
	}
}

func TestBadFlags(t *testing.T) {
	for _, args := range [][]string{
		{"--size", "64", "--sizes", "64"},
		{"--contenders", "nope"},
		{"--sizes", "0"},
		{"--loss", "1.5"},
		{"--argon2", "m=lots"},
		{"--daemon-memory", "-1"},
		{"--cold-loss", "1"},
		{"--delay", "-1ms"},
		{"--cold", "-1"},
		{"--fleet", "10", "--fleet-transport", "tcp"},
		{"--fleet", "10", "--fleet-size", "8"},
		{"--fleet", "10", "--daemon-memory", "1"},
		{"--fleet", "-1"},
		{"extra"},
	} {
		var stdout, stderr bytes.Buffer
		if code := run(context.Background(), args, &stdout, &stderr); code != 2 {
			t.Errorf("%q: exit %d, want 2", args, code)
		}
	}
}

// benchEnv is shared by the benchmarks so the RSA keys are generated once.
var benchEnv env

// BenchmarkContenders runs each default contender for 250 ms windows of 64-byte payloads
// and reports delivered packets per second, loss and overhead (ns/op is the window).
func BenchmarkContenders(b *testing.B) {
	const window = 250 * time.Millisecond
	for _, name := range defaultContenders {
		b.Run(name, func(b *testing.B) {
			var received, sent uint64
			var elapsed time.Duration
			var overhead int
			for b.Loop() {
				r, err := findContender(name).run(context.Background(), &benchEnv, 64, window)
				if err != nil {
					b.Fatal(err)
				}
				received, sent, elapsed, overhead = received+r.received, sent+r.sent, elapsed+r.elapsed, r.overhead
			}
			total := result{received: received, sent: sent, elapsed: elapsed}
			b.ReportMetric(total.pps(), "pps")
			b.ReportMetric(total.loss(), "loss-%")
			b.ReportMetric(float64(overhead), "overhead-B")
		})
	}
}

// The MAVLink mode prints a line for direct UDP, each aggregation timer and the flood, and
// every streamed frame arrives on loopback; only the format and the counts are checked.
func TestMAVLinkLines(t *testing.T) {
	out := runHarness(t, "--contenders", "", "--handshakes", "0", "--sessions", "0", "--mavlink", "0,20ms",
		"--mavlink-duration", "300ms")
	line := regexp.MustCompile(`(?m)^mavlink (direct-udp|tunnel) agg=(\S+) frames/datagram=(\d+\.\d\d) overhead/frame=(\d+\.\d)B down: p50=\S+ p99=\S+ lost=(\d+) up: p50=\S+ p99=\S+ lost=(\d+)$`)
	matches := line.FindAllStringSubmatch(out, -1)
	if len(matches) != 3 {
		t.Fatalf("want 3 MAVLink lines, got %d", len(matches))
	}
	for _, m := range matches {
		if m[1] == "tunnel" && m[2] == "0s" && m[4] != "28.0" {
			t.Errorf("overhead per frame without aggregation %sB, want 28 (23 link + 1 type + 4 session time)", m[4])
		}
	}
	if !regexp.MustCompile(`(?m)^mavlink tunnel-flood agg=20ms frames=\d+ frames/datagram=\d+\.\d\d frames/cpu-s=\d+ `).MatchString(out) {
		t.Error("no flood line")
	}
}

// The daemon memory mode builds and runs the real daemon, logs in, and prints one line in
// the documented form with plausible readings; the figures themselves are not checked
// (e2e TestDaemonMemory asserts the memory goals).
func TestDaemonMemoryLine(t *testing.T) {
	if testing.Short() {
		t.Skip("builds dronelinkd and generates RSA keys")
	}
	if _, err := os.Stat("/proc/self/status"); err != nil {
		t.Skip("no /proc: the daemon memory mode reads /proc/PID/status")
	}
	out := runHarness(t, "--daemon-memory", "2", "--argon2", "m=1024,t=1,p=1", "--memory-settle", "0s",
		"--memory-watch", "1s", "--daemon-flags", "--login-workers 2")
	m := regexp.MustCompile(`(?m)^daemon-memory logins=2 argon2=m=1024,t=1,p=1 flags="--login-workers 2" idle=(\d+\.\d)MB peak=(\d+\.\d)MB hwm=(\d+\.\d)MB after1s=(\d+\.\d)MB after10s=- end=(\d+\.\d)MB under30MB=\S+ logins_took=\S+$`).FindStringSubmatch(out)
	if m == nil {
		t.Fatal("no daemon-memory line in the documented form")
	}
	idle, _ := strconv.ParseFloat(m[1], 64)
	peak, _ := strconv.ParseFloat(m[2], 64)
	hwm, _ := strconv.ParseFloat(m[3], 64)
	if idle <= 0 || peak < idle || hwm < idle {
		t.Errorf("idle %.1f MB, peak %.1f MB, VmHWM %.1f MB: want 0 < idle <= peak, VmHWM", idle, peak, hwm)
	}
}
