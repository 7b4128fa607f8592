package operator

import (
	"context"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/dronelink/dronelink/pkg/link"
)

func TestAckStats(t *testing.T) {
	ms := time.Millisecond
	for _, c := range []struct {
		ack  link.Ack
		est  link.LinkEstimate
		want string
	}{
		{link.Ack{RoundTrip: 42300 * time.Microsecond, Attempts: 1, Datagrams: 2}, link.LinkEstimate{SRTT: 41 * ms, Loss: 0.03},
			"acknowledged in 42.3 ms, 1 transmission, 2 datagrams; link round trip 41.0 ms, loss 3.0%"},
		{link.Ack{RoundTrip: 1500 * ms, Attempts: 3, Datagrams: 3}, link.LinkEstimate{SRTT: 900 * time.Microsecond, Loss: 0.296},
			"acknowledged in 1.50 s, 3 transmissions, 3 datagrams; link round trip 900 µs, loss 29.6%"},
		// No round trip measured yet (a DTLS session's first command, retransmitted): no link part.
		{link.Ack{RoundTrip: 250 * ms, Attempts: 2, Datagrams: 1}, link.LinkEstimate{},
			"acknowledged in 250.0 ms, 2 transmissions, 1 datagram"},
	} {
		if got := ackStats(c.ack, c.est); got != c.want {
			t.Errorf("ackStats(%+v, %+v) = %q, want %q", c.ack, c.est, got, c.want)
		}
	}
}

var statsLine = regexp.MustCompile(`^dronelink: stats: acknowledged in \d+(\.\d+)? (µs|ms|s), \d+ transmissions?, \d+ datagrams?; link round trip \d+(\.\d+)? (µs|ms|s), loss \d+\.\d%$`)

// send --stats prints one stats line per acknowledgement on standard error, after the
// acknowledgement on standard output, which is unchanged; without it (and without a
// terminal) nothing more is printed.
func TestSendStats(t *testing.T) {
	f := newFixture(t)
	d := startDrone(t, f)
	alice := append([]string{"send"}, linkArgs(f, d.addr, "alice", "alice", "alice.pw")...)
	for _, c := range []struct {
		name, stdin string
		args        []string
		stdout      string
		lines       int
	}{
		{"one command", "", append(append(alice[:len(alice):len(alice)], "--stats"), "take", "off"), "ack ok: done: take off\n", 1},
		{"from standard input", "one\ntwo\n", append(alice[:len(alice):len(alice)], "--stats"), "ack ok: done: one\nack ok: done: two\n", 2},
		{"without --stats", "", append(alice[:len(alice):len(alice)], "land"), "ack ok: done: land\n", 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := run(t, c.stdin, c.args...)
			r.want(t, 0)
			if r.stdout != c.stdout {
				t.Errorf("stdout %q, want %q", r.stdout, c.stdout)
			}
			n := 0
			for line := range strings.Lines(r.stderr) {
				if !statsLine.MatchString(strings.TrimSuffix(line, "\n")) {
					t.Errorf("stderr line %q", line)
				}
				n++
			}
			if n != c.lines {
				t.Errorf("%d stats lines, want %d: %q", n, c.lines, r.stderr)
			}
		})
	}
}

// On a terminal the stats line is shown without --stats, after the progress line is
// cleared.
func TestSendStatsOnTerminal(t *testing.T) {
	f := newFixture(t)
	d := startDrone(t, f)
	var stdout, stderr strings.Builder
	a := newApp(strings.NewReader(""), &stdout, &stderr)
	a.hashParams = cheapParams
	a.progress = true
	if code := a.run(context.Background(), append(append([]string{"send"}, linkArgs(f, d.addr, "alice", "alice", "alice.pw")...), "hover")); code != 0 {
		t.Fatalf("exit %d: %q", code, stderr.String())
	}
	if stdout.String() != "ack ok: done: hover\n" {
		t.Errorf("stdout %q", stdout.String())
	}
	out := stderr.String()
	last := out[strings.LastIndex(strings.TrimSuffix(out, "\n"), "\n")+1:]
	if i := strings.LastIndex(last, "\x1b[K"); i >= 0 {
		last = last[i+len("\x1b[K"):] // after the cleared progress line
	}
	if !statsLine.MatchString(strings.TrimSuffix(last, "\n")) || !strings.HasSuffix(out, "\n") {
		t.Errorf("stderr %q: no stats line at the end", out)
	}
}
