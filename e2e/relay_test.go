package e2e

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dronelink/dronelink/internal/natstest"
)

// natsRelay is an embedded NATS server running docs/relay/nats-server.conf, the example
// the README ships, with fresh NKeys in place of its placeholders, and a credentials file
// per NATS user of that file.
type natsRelay struct {
	url   string
	creds map[string]string // NATS user (drone-7, drone-8, alice, bob) -> its --relay-creds file
}

// startRelay starts the relay for the test.
func startRelay(t *testing.T, f *fleet) *natsRelay {
	t.Helper()
	conf, seeds, err := natstest.ExampleConfig(filepath.Join("..", "docs", "relay", "nats-server.conf"))
	if err != nil {
		t.Fatal(err)
	}
	r := &natsRelay{creds: map[string]string{}}
	for user, seed := range seeds {
		content := fmt.Sprintf("nkey_seed = %q\n", seed)
		if !strings.HasPrefix(user, "drone") {
			content += fmt.Sprintf("name = %q\n", user)
		}
		r.creds[user] = f.path(user + ".creds")
		writeFile(t, r.creds[user], content)
	}
	s, err := natstest.StartEmbedded(t.TempDir(), conf)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		s.Shutdown()
		s.WaitForShutdown()
	})
	r.url = s.ClientURL()
	registerSecrets(f.dir) // the seeds must not show in any output either
	return r
}

// nkeyPair is a fresh NKey user's seed and public key.
func nkeyPair(t *testing.T) (seed, pub string) {
	t.Helper()
	seed, pub, err := natstest.NewUserKey()
	if err != nil {
		t.Fatal(err)
	}
	return seed, pub
}

// reach are an operator's flags to reach drone id through the relay as NATS user natsUser.
func (r *natsRelay) reach(id, natsUser string) []string {
	return []string{"--relay", r.url, "--drone-id", id, "--relay-creds", r.creds[natsUser]}
}

// operatorRelay are the flags of send and listen for user through the relay.
func (f *fleet) operatorRelay(reach []string, user string) []string {
	return append(reach[:len(reach):len(reach)], "--drone-pub", f.path("drone.key.pub"), "--key", f.path(user+".key"),
		"--psk", f.path("psk"), "--user", user, "--password-file", f.path(user+".pw"))
}

// startRelayDrone runs dronelinkd serving only through the relay (no --listen), as drone-7.
func startRelayDrone(t *testing.T, f *fleet, r *natsRelay, extra ...string) *drone {
	t.Helper()
	d := &drone{tin: freePort(t), done: make(chan error, 1)}
	args := append([]string{"--relay", r.url, "--drone-id", "drone-7", "--relay-creds", r.creds["drone-7"]}, droneFlags(f, d, extra...)...)
	return launchDrone(t, d, []string{filepath.Join(binDir, "dronelinkd")}, args)
}

// A drone that serves only through the relay: its key is pinned, commands are sent and
// telemetry is heard through NATS with the real binaries; the status shows the relay.
func TestRelaySendListenPin(t *testing.T) {
	f := newFleet(t)
	relay := startRelay(t, f)
	sock := filepath.Join(t.TempDir(), "control.sock")
	d := startRelayDrone(t, f, relay, "--control", sock)
	_, logs := d.output()
	if !strings.Contains(logs, "listen=none") || !strings.Contains(logs, "drone_id=drone-7") {
		t.Fatalf("the relay-only daemon's start line:\n%s", logs)
	}
	waitFor(t, "the daemon's relay connection", func() bool {
		_, logs := d.output()
		return strings.Contains(logs, `msg="relay connected"`)
	})

	// pin through the relay, then send with the pinned key.
	sha, _ := fingerprints(t, f.path("drone.key.pub"))
	pinned := f.path("pinned.pub")
	reach := relay.reach("drone-7", "alice")
	r := run(t, "", "dronelink", append(append([]string{"pin"}, reach...), "--psk", f.path("psk"), "--out", pinned, "--expect", sha)...)
	if r.code != 0 || !strings.Contains(r.stdout, "drone-7 via the relay") {
		t.Fatalf("pin through the relay: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	args := f.operatorRelay(reach, "alice")
	args[7] = pinned // --drone-pub
	r = run(t, "", "dronelink", append(append([]string{"send"}, args...), "take off")...)
	if r.code != 0 || r.stdout != "ack ok: executed: take off\n" {
		t.Fatalf("send through the relay: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if n := d.executed("take off"); n != 1 {
		t.Fatalf("take off executed %d times", n)
	}
	// The audit trail names the relayed operator by its downlink subject, not by the
	// synthetic address the link layer knows it by.
	_, logs = d.output()
	for _, msg := range []string{"msg=handshake ", "msg=login ", "msg=command "} {
		found := false
		for _, line := range strings.Split(logs, "\n") {
			found = found || strings.Contains(line, msg) && strings.Contains(line, "from=relay:dronelink.drone-7.down.alice.")
		}
		if !found {
			t.Errorf("no %s line from relay:dronelink.drone-7.down.alice.*:\n%s", msg, logs)
		}
	}

	// listen through the relay: telemetry fed to the drone reaches olga (who uses the NATS
	// user alice: one NATS user, two processes, two downlink subjects).
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	listen := exec.CommandContext(ctx, filepath.Join(binDir, "dronelink"), append([]string{"listen"}, f.operatorRelay(reach, "olga")...)...)
	var mu sync.Mutex
	var lout, lerr bytes.Buffer
	listen.Stdout, listen.Stderr = lockedWriter{&mu, &lout}, lockedWriter{&mu, &lerr}
	if err := listen.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cancel(); listen.Wait() }()
	feed, err := net.Dial("udp", d.tin)
	if err != nil {
		t.Fatal(err)
	}
	defer feed.Close()
	waitFor(t, "telemetry through the relay", func() bool {
		feed.Write([]byte("battery 87%"))
		mu.Lock()
		defer mu.Unlock()
		return strings.Contains(lout.String(), "battery 87%\n")
	})

	// The status names the relay and shows olga's session on its downlink subject.
	r = run(t, "", "dronelink", "status", "--control", sock)
	for _, want := range []string{"relay: drone id drone-7 via " + relay.url + ": connected to " + relay.url,
		"address: relay:dronelink.drone-7.down.alice.", "user: olga (observer)"} {
		if r.code != 0 || !strings.Contains(r.stdout, want) {
			t.Errorf("status does not show %q:\n%s%s", want, r.stdout, r.stderr)
		}
	}
	if strings.Contains(r.stdout, "listening:") {
		t.Errorf("a relay-only drone's status shows a listening address:\n%s", r.stdout)
	}
}

// What goes wrong with the relay is said in one line with the right exit code, and
// nothing is sent that should not be.
func TestRelayRefusals(t *testing.T) {
	f := newFleet(t)
	relay := startRelay(t, f)
	d := startDrone(t, f, "--relay", relay.url, "--drone-id", "drone-7", "--relay-creds", relay.creds["drone-7"])
	waitFor(t, "the daemon's relay connection", func() bool {
		_, logs := d.output()
		return strings.Contains(logs, `msg="relay connected"`)
	})
	send := func(reach []string, extra ...string) result {
		return run(t, "", "dronelink", append(append([]string{"send"}, f.operatorRelay(reach, "alice")...), extra...)...)
	}
	// The drone serves UDP and the relay at once.
	if r := send([]string{"--drone", d.addr}, "over udp"); r.code != 0 {
		t.Fatalf("send over UDP beside the relay: exit %d: %s", r.code, r.stderr)
	}
	if r := send(relay.reach("drone-7", "alice"), "over the relay"); r.code != 0 {
		t.Fatalf("send through the relay beside UDP: exit %d: %s", r.code, r.stderr)
	}

	stranger, _ := nkeyPair(t)
	strangerCreds := f.path("stranger.creds")
	writeFile(t, strangerCreds, fmt.Sprintf("nkey_seed = %q\nname = \"alice\"\n", stranger))
	open := f.path("open.creds")
	writeFile(t, open, fmt.Sprintf("nkey_seed = %q\n", stranger))
	if err := os.Chmod(open, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		reach []string
		code  int
		want  string
	}{
		{"nobody serves the id", relay.reach("drone-8", "alice"), 5, `no drone serves id "drone-8" on the relay`},
		{"unknown NATS key", []string{"--relay", relay.url, "--drone-id", "drone-7", "--relay-creds", strangerCreds}, 3, "refused the credentials"},
		{"bob flies drone-8 only", relay.reach("drone-7", "bob"), 3, "refused the subscription to dronelink.drone-7.down.bob."},
		{"credentials open to others", []string{"--relay", relay.url, "--drone-id", "drone-7", "--relay-creds", open}, 1, "permissions 0644 are too open"},
		{"no drone id", []string{"--relay", relay.url}, 2, "needs --drone-id"},
		{"relay and address", append(relay.reach("drone-7", "alice"), "--drone", d.addr), 2, "not both"},
		{"credentials in the URL", []string{"--relay", "nats://alice:secret@127.0.0.1:4222", "--drone-id", "drone-7"}, 2, "holds credentials"},
		{"not a NATS URL", []string{"--relay", "http://127.0.0.1:4222", "--drone-id", "drone-7"}, 2, "nats:// or tls://"},
		{"bad drone id", []string{"--relay", relay.url, "--drone-id", "drone.7"}, 2, "may hold only letters"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			oneLine(t, send(tc.reach, "refused "+tc.name), tc.code, tc.want)
		})
	}
	for _, msg := range []string{"refused nobody serves the id", "refused unknown NATS key"} {
		if n := d.executed(msg); n != 0 {
			t.Errorf("%q executed %d times", msg, n)
		}
	}

	// The daemon: refused credentials stop it with one line; --check-config says the same,
	// and vouches for good ones.
	daemon := func(args ...string) result {
		return run(t, "", "dronelinkd", append([]string{"--key", f.path("drone.key"), "--psk", f.path("psk"),
			"--users", f.path("users"), "--relay", relay.url}, args...)...)
	}
	r := daemon("--drone-id", "drone-7", "--relay-creds", strangerCreds)
	if r.code != 1 || strings.Count(strings.TrimSpace(r.stderr), "\n") != 0 || !strings.Contains(r.stderr, "refused the credentials (nkey in the --relay-creds file") {
		t.Errorf("dronelinkd with unknown credentials: exit %d, stderr %q", r.code, r.stderr)
	}
	r = daemon("--drone-id", "drone-8", "--relay-creds", relay.creds["drone-7"], "--check-config")
	if r.code != 1 || !strings.Contains(r.stderr, "refused the subscription to dronelink.drone-8.up") {
		t.Errorf("check-config as another drone: exit %d, stderr %q", r.code, r.stderr)
	}
	r = daemon("--drone-id", "drone-7", "--relay-creds", relay.creds["drone-7"], "--check-config")
	if r.code != 0 || !strings.Contains(r.stdout, "relay ok: "+relay.url+" accepts the credentials (nkey) and drone id drone-7") {
		t.Errorf("check-config: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	r = daemon("--relay-creds", relay.creds["drone-7"])
	if r.code != 2 || !strings.Contains(r.stderr, "needs --drone-id") {
		t.Errorf("dronelinkd --relay without --drone-id: exit %d, stderr %q", r.code, r.stderr)
	}
	r = daemon("--drone-id", "drone-7", "--transport", "dtls")
	if r.code != 2 || !strings.Contains(r.stderr, "native protocol only") {
		t.Errorf("dronelinkd --relay --transport dtls: exit %d, stderr %q", r.code, r.stderr)
	}
}

// A pilot's ground station and the autopilot talk through dronelink gcs and the relay.
func TestMAVLinkThroughRelay(t *testing.T) {
	needNode(t)
	f := newFleet(t)
	relay := startRelay(t, f)
	r := &tunnelRig{f: f, mavAddr: freePort(t)}
	r.d = startDrone(t, f, "--mavlink-listen", r.mavAddr, "--relay", relay.url, "--drone-id", "drone-7", "--relay-creds", relay.creds["drone-7"])
	r.autopilot = startPeer(t, "autopilot", "--role", "autopilot", "--remote", r.mavAddr)
	r.autopilot.sendMsg("Heartbeat", map[string]any{"type": 2, "autopilot": 3, "systemStatus": 4})
	station, g := r.gcsVia(t, "alice", relay.reach("drone-7", "alice"))
	if !strings.Contains(g.errors(), "drone-7 via the relay") {
		t.Errorf("gcs does not name the relay:\n%s", g.errors())
	}
	h := r.autopilot.sendMsg("Attitude", map[string]any{"timeBootMs": 1000, "roll": 0.1})
	station.waitFrame("attitude through the relay", hexIs(h))
	arm := station.sendMsg("CommandLong", armFields)
	r.autopilot.waitFrame("the pilot's ARM through the relay", hexIs(arm))
	ack := station.waitFrame("the ARM's COMMAND_ACK through the relay", isMsg(77))
	if fieldNum(ack, "command") != 400 || fieldNum(ack, "result") != 0 {
		t.Fatalf("COMMAND_ACK %v", ack.Fields)
	}
}

// TestRelaySeedsInSecretScan: the secret scan of TestMain must know the relay's NATS
// credentials, as startRelay says. On 0a207a1 registerSecrets looked only at *.pw, *psk and
// *.key files, so the NKey seeds in the *.creds files were never searched for.
func TestRelaySeedsInSecretScan(t *testing.T) {
	f := newFleet(t)
	r := startRelay(t, f)
	for user, path := range r.creds {
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		_, seed, ok := strings.Cut(string(data), `nkey_seed = "`)
		seed, _, _ = strings.Cut(seed, `"`)
		if !ok || seed == "" {
			t.Fatalf("%s: no seed in %q", user, data)
		}
		transcript.mu.Lock()
		_, known := transcript.secrets[seed]
		transcript.mu.Unlock()
		if !known {
			t.Errorf("the secret scan does not look for %s's NKey seed", user)
		}
	}
}
