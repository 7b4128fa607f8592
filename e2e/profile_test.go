package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// Issue #14: a profile names the drones, one session carries many commands, and
// "dronelink status" shows the live sessions through the daemon's control socket.

// profile writes an operator profile in the fleet's directory: alpha is the drone d, with
// alice's files as defaults; olga overrides the user's files.
func (f *fleet) profile(t *testing.T, d *drone) string {
	t.Helper()
	path := f.path("config.toml")
	writeFile(t, path, fmt.Sprintf(`[defaults]
key = "alice.key"
psk = "psk"
user = "alice"
password-file = "alice.pw"

[drone.alpha]
address = %q
drone-pub = "drone.key.pub"

[drone.alpha-olga]
address = %q
drone-pub = "drone.key.pub"
key = "olga.key"
user = "olga"
password-file = "olga.pw"
`, d.addr, d.addr))
	return path
}

// logLines counts the daemon's log lines with msg=what.
func (d *drone) logLines(what string) int {
	_, stderr := d.output()
	n := 0
	for line := range strings.Lines(stderr) {
		if strings.Contains(line, " msg="+what+" ") {
			n++
		}
	}
	return n
}

// Commands on standard input go over one session: one handshake, one login, each
// command acknowledged in order; the drone's name from the profile stands for the flags.
func TestProfileManyCommandsOneSession(t *testing.T) {
	f := newFleet(t)
	d := startDrone(t, f)
	conf := f.profile(t, d)
	r := run(t, "take off to 10 m\n\n# hold there\nhover 5 s\nland\n", "dronelink", "send", "--config", conf, "--drone", "alpha")
	if r.code != 0 {
		t.Fatalf("send: exit %d: %s", r.code, r.stderr)
	}
	want := "ack ok: executed: take off to 10 m\nack ok: executed: hover 5 s\nack ok: executed: land\n"
	if r.stdout != want {
		t.Errorf("stdout %q, want %q", r.stdout, want)
	}
	out, _ := d.output()
	if i, j, k := strings.Index(out, "alice: take off"), strings.Index(out, "alice: hover"), strings.Index(out, "alice: land"); i < 0 || !(i < j && j < k) {
		t.Errorf("the drone did not run the three commands in order:\n%s", out)
	}
	if h, l := d.logLines("handshake"), d.logLines("login"); h != 1 || l != 1 {
		_, log := d.output()
		t.Errorf("%d handshakes and %d logins for three commands, want one of each:\n%s", h, l, log)
	}
	// The first failure stops the run with its code; the name of another drone entry
	// brings olga's files (an observer).
	r = run(t, "arm\nland\n", "dronelink", "send", "--config", conf, "--drone", "alpha-olga")
	oneLine(t, r, 4, "line 1: command refused")
	if out, _ = d.output(); d.executed("arm") != 0 || strings.Count(out, "land") != 1 {
		t.Error("a refused command ran, or the one after it was sent")
	}
	// An unknown name lists the known ones.
	oneLine(t, run(t, "", "dronelink", "send", "--config", conf, "--drone", "gamma", "hi"), 2, "known: alpha, alpha-olga")
}

// dronelinkd --control serves the live sessions; "dronelink status" shows a listening
// observer's session, and a running gcs serves its own link the same way.
func TestStatusThroughControlSocket(t *testing.T) {
	f := newFleet(t)
	sock := filepath.Join(t.TempDir(), "control.sock")
	d := startDrone(t, f, "--control", sock)
	fi, err := os.Lstat(sock)
	if err != nil || fi.Mode().Type() != fs.ModeSocket || fi.Mode().Perm() != 0o600 {
		t.Fatalf("control socket: %v %v, want a socket with mode 0600", fi.Mode(), err)
	}
	r := run(t, "", "dronelink", "status", "--control", sock)
	if r.code != 0 || !strings.Contains(r.stdout, "drone: dronelinkd ") || !strings.Contains(r.stdout, "sessions: 0") {
		t.Fatalf("status with no session: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	conf := f.profile(t, d)

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	listen := exec.CommandContext(ctx, filepath.Join(binDir, "dronelink"), "listen", "--config", conf, "--drone", "alpha-olga")
	var mu sync.Mutex
	var lout, lerr bytes.Buffer
	listen.Stdout, listen.Stderr = lockedWriter{&mu, &lout}, lockedWriter{&mu, &lerr}
	if err := listen.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cancel(); listen.Wait() }()
	waitFor(t, "olga's session in the status", func() bool {
		r = run(t, "", "dronelink", "status", "--control", sock)
		return r.code == 0 && strings.Contains(r.stdout, "user: olga (observer)")
	})
	for _, want := range []string{"sessions: 1", "state: active", "operator key: SHA256:", "address: 127.0.0.1:", "since: ",
		"latest handshake: ", "round trip: ", "loss: ", "transfer: "} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("status does not show %q:\n%s", want, r.stdout)
		}
	}
	r = run(t, "", "dronelink", "status", "--control", sock, "--json")
	var st struct {
		Program  string
		Sessions []struct {
			User, Role, Key, Peer string
			RTT                   float64 `json:"rtt_seconds"`
			Traffic               *struct {
				RxPackets uint64 `json:"rx_packets"`
			}
		}
	}
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil || st.Program != "dronelinkd" || len(st.Sessions) != 1 ||
		st.Sessions[0].User != "olga" || st.Sessions[0].Role != "observer" || st.Sessions[0].RTT <= 0 ||
		st.Sessions[0].Traffic == nil || st.Sessions[0].Traffic.RxPackets == 0 {
		t.Errorf("--json: %v %+v\n%s", err, st, r.stdout)
	}

	// gcs serves its link on its own control socket.
	gsock := filepath.Join(t.TempDir(), "gcs.sock")
	startGCS(t, "--config", conf, "--drone", "alpha", "--to", freePort(t), "--control", gsock)
	r = run(t, "", "dronelink", "status", "--control", gsock)
	for _, want := range []string{"ground station: dronelink gcs", "drone: alpha (" + d.addr + ")", "link: up", "user: alice (pilot)",
		"round trip: ", "transfer: "} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("gcs status does not show %q:\n%s%s", want, r.stdout, r.stderr)
		}
	}
	waitFor(t, "the daemon to list both sessions", func() bool {
		r = run(t, "", "dronelink", "status", "--control", sock)
		return strings.Contains(r.stdout, "sessions: 2") && strings.Contains(r.stdout, "user: alice (pilot)")
	})

	// Without a daemon behind it: one line, exit 1.
	d.stop(t)
	if _, err := os.Lstat(sock); !os.IsNotExist(err) {
		t.Errorf("the daemon left its control socket behind: %v", err)
	}
	oneLine(t, run(t, "", "dronelink", "status", "--control", sock), 1, "no control socket at "+sock)
}
