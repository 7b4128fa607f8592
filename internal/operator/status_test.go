package operator

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dronelink/dronelink/internal/control"
)

var statusNow = time.Date(2026, 11, 25, 18, 0, 0, 0, time.UTC)

func TestRenderStatus(t *testing.T) {
	for _, tc := range []struct {
		name string
		st   control.Status
		want string
	}{
		{"drone with a native session", control.Status{Program: control.ProgramDaemon, Build: "v1.2.0", Transport: "native",
			Listen: "0.0.0.0:5000", Key: "SHA256:drone", Started: statusNow.Add(-26 * time.Hour), Now: statusNow,
			Sessions: []control.Session{{Index: 4711, User: "alice", Role: "pilot", Key: "SHA256:alice", Peer: "192.0.2.7:40000",
				State: "active", Since: statusNow.Add(-time.Hour - 2*time.Minute), Handshake: statusNow.Add(-72 * time.Second),
				LastReceived: statusNow.Add(-time.Second), RTTSeconds: 0.0021,
				Traffic: &control.Traffic{RxPackets: 4000, RxBytes: 1500000, TxPackets: 8020, TxBytes: 3565158, LostPackets: 12, Loss: 0.003}}}},
			`drone: dronelinkd v1.2.0, transport native
  listening: 0.0.0.0:5000
  key: SHA256:drone
  up: 1 day, 2 hours
  sessions: 1

session: 4711
  user: alice (pilot)
  state: active
  operator key: SHA256:alice
  address: 192.0.2.7:40000
  since: 1 hour, 2 minutes ago
  latest handshake: 1 minute, 12 seconds ago
  last heard: 1 second ago
  round trip: 2.1 ms
  loss: 0.3% (12 of 4012 datagrams estimated lost)
  transfer: 1.43 MiB received, 3.40 MiB sent (4000 / 8020 datagrams)
`},
		{"drone without sessions", control.Status{Program: control.ProgramDaemon, Build: "dev", Transport: "native",
			Listen: "127.0.0.1:5000", Started: statusNow.Add(-500 * time.Millisecond), Now: statusNow},
			`drone: dronelinkd dev, transport native
  listening: 127.0.0.1:5000
  up: less than a second
  sessions: 0
`},
		{"dtls session, not logged in, hostile name", control.Status{Program: control.ProgramDaemon, Build: "dev", Transport: "dtls",
			Listen: "127.0.0.1:5000", Now: statusNow,
			Sessions: []control.Session{{Index: 9, Identity: "eve\x1b[2J", Peer: "127.0.0.1:1", State: "active", Since: statusNow}}},
			`drone: dronelinkd dev, transport dtls
  listening: 127.0.0.1:5000
  sessions: 1

session: 9
  user: (not logged in)
  state: active
  identity: eve\x1b[2J
  address: 127.0.0.1:1
  since: just now
`},
		{"ground station", control.Status{Program: control.ProgramGCS, Build: "dev", Transport: "native", Drone: "alpha (192.0.2.1:5000)",
			Key: "SHA256:drone", Started: statusNow.Add(-5 * time.Minute), Now: statusNow,
			Sessions: []control.Session{{Index: 4711, User: "alice", Role: "pilot", Peer: "192.0.2.1:5000", State: "up",
				Since: statusNow.Add(-5 * time.Minute), Handshake: statusNow.Add(-3 * time.Minute), LastReceived: statusNow,
				RTTSeconds: 0.000350, Traffic: &control.Traffic{RxPackets: 10, RxBytes: 500, TxPackets: 12, TxBytes: 2048}}}},
			`ground station: dronelink gcs dev, transport native
  drone: alpha (192.0.2.1:5000)
  drone key: SHA256:drone
  up: 5 minutes

link: up
  user: alice (pilot)
  drone address: 192.0.2.1:5000
  session: 4711
  since: 5 minutes ago
  latest handshake: 3 minutes ago
  last heard: just now
  round trip: 350 µs
  loss: 0.0% (0 of 10 datagrams estimated lost)
  transfer: 500 B received, 2.00 KiB sent (10 / 12 datagrams)
`},
		{"ground station connecting", control.Status{Program: control.ProgramGCS, Build: "dev", Transport: "native", Drone: "192.0.2.1:5000",
			Now: statusNow, Sessions: []control.Session{{User: "alice", Peer: "192.0.2.1:5000", State: "handshake"}}},
			`ground station: dronelink gcs dev, transport native
  drone: 192.0.2.1:5000

link: handshake
  user: alice
  drone address: 192.0.2.1:5000
`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var b strings.Builder
			if err := renderStatus(&b, tc.st); err != nil {
				t.Fatal(err)
			}
			if b.String() != tc.want {
				t.Errorf("got\n%s\nwant\n%s", b.String(), tc.want)
			}
		})
	}
}

func TestStatusUnits(t *testing.T) {
	for _, tc := range []struct {
		got, want string
	}{
		{ago(0, " ago"), "just now"},
		{ago(time.Second, " ago"), "1 second ago"},
		{ago(59*time.Second, ""), "59 seconds"},
		{ago(time.Minute, ""), "1 minute"},
		{ago(61*time.Minute+time.Second, ""), "1 hour, 1 minute"},
		{ago(49*time.Hour, ""), "2 days, 1 hour"},
		{bytesIEC(0), "0 B"},
		{bytesIEC(1023), "1023 B"},
		{bytesIEC(1024), "1.00 KiB"},
		{bytesIEC(3 << 30), "3.00 GiB"},
		{roundTrip(350 * time.Microsecond), "350 µs"},
		{roundTrip(2100 * time.Microsecond), "2.1 ms"},
		{roundTrip(1500 * time.Millisecond), "1.50 s"},
		{loss(&control.Traffic{}), "none received yet"},
		{loss(&control.Traffic{RxPackets: 3, LostPackets: 1}), "25.0% (1 of 4 datagrams estimated lost)"},
	} {
		if tc.got != tc.want {
			t.Errorf("%q, want %q", tc.got, tc.want)
		}
	}
}

// serveSample serves st on a control socket in a temporary directory.
func serveSample(t *testing.T, st control.Status) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "c.sock")
	l, err := control.Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		control.NewServer(l, func() control.Status { return st }, nil).Serve(ctx)
		close(done)
	}()
	t.Cleanup(func() { cancel(); <-done })
	return path
}

func TestStatusCommand(t *testing.T) {
	st := control.Status{Program: control.ProgramDaemon, Build: "dev", Transport: "native", Listen: "127.0.0.1:5000",
		Now: statusNow, Sessions: []control.Session{{Index: 1, User: "alice", Role: "pilot", Peer: "127.0.0.1:2", State: "active"}}}
	path := serveSample(t, st)
	r := run(t, "", "status", "--control", path)
	r.want(t, 0)
	if !strings.HasPrefix(r.stdout, "drone: dronelinkd dev, transport native\n") || !strings.Contains(r.stdout, "  user: alice (pilot)\n") {
		t.Errorf("stdout %q", r.stdout)
	}
	r = run(t, "", "status", "--control", path, "--json")
	r.want(t, 0)
	var got control.Status
	if err := json.Unmarshal([]byte(r.stdout), &got); err != nil || got.Version != control.ProtocolVersion || len(got.Sessions) != 1 ||
		got.Sessions[0].User != "alice" {
		t.Errorf("--json: %v %+v\n%s", err, got, r.stdout)
	}
	dir := t.TempDir()
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"status", "--control", filepath.Join(dir, "none.sock")}, 1, "no control socket at"},
		{[]string{"status", "--control", dir}, 1, "is not a socket"},
		{[]string{"status", "--control", ""}, 2, "--control: want the PATH"},
		{[]string{"status", "extra"}, 2, `unexpected argument "extra"`},
	} {
		run(t, "", tc.args...).want(t, tc.code, tc.want)
	}
}

// A running gcs serves its link on --control: logged in, with round trip and traffic.
func TestGCSControl(t *testing.T) {
	f := newFixture(t)
	d := startDrone(t, f)
	station, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer station.Close()
	path := filepath.Join(t.TempDir(), "gcs.sock")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch := make(chan result, 1)
	go func() {
		// Not runCtx: gcs reports its link on standard error by design.
		var stdout, stderr bytes.Buffer
		a := newApp(strings.NewReader(""), &stdout, &stderr)
		code := a.run(ctx, append(append([]string{"gcs"}, linkArgs(f, d.addr, "alice", "alice", "alice.pw")...),
			"--to", station.LocalAddr().String(), "--control", path))
		ch <- result{code, stdout.String(), stderr.String()}
	}()
	var st control.Status
	waitFor(t, "gcs's link on its control socket", func() bool {
		st, err = control.Fetch(context.Background(), path)
		return err == nil && st.Sessions[0].State == control.StateUp
	})
	s := st.Sessions[0]
	if st.Program != control.ProgramGCS || st.Drone != d.addr || s.User != "alice" || s.Role != "pilot" || s.Peer != d.addr ||
		s.RTTSeconds <= 0 || s.Traffic == nil || s.Traffic.TxPackets < 2 || s.Index == 0 || !strings.HasPrefix(st.Key, "SHA256:") {
		t.Errorf("gcs status %+v, session %+v", st, s)
	}
	r := run(t, "", "status", "--control", path)
	r.want(t, 0)
	for _, want := range []string{"ground station: dronelink gcs", "link: up", "user: alice (pilot)", "round trip: ", "transfer: "} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("status does not show %q:\n%s", want, r.stdout)
		}
	}
	cancel()
	select {
	case r := <-ch:
		if r.code != 0 || !strings.Contains(r.stderr, "link up") {
			t.Errorf("gcs: exit %d, stderr %q", r.code, r.stderr)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("gcs did not stop")
	}
	if _, err := control.Fetch(context.Background(), path); err == nil || !strings.Contains(err.Error(), "no control socket") {
		t.Errorf("the control socket outlived gcs: %v", err)
	}
}
