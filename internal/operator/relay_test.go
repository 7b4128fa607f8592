package operator

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dronelink/dronelink/internal/natstest"
	"github.com/dronelink/dronelink/pkg/crypto"
	"github.com/dronelink/dronelink/pkg/link"
	"github.com/dronelink/dronelink/pkg/relay"
)

// startNATS runs an embedded NATS server without authentication for the test.
func startNATS(t *testing.T) string {
	t.Helper()
	s, err := natstest.StartEmbedded(t.TempDir(), "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		s.Shutdown()
		s.WaitForShutdown()
	})
	return s.ClientURL()
}

// A drone named in the profile may be reached through the relay: send, pin and the flags
// that override the profile all take it.
func TestRelayFromProfile(t *testing.T) {
	f := newFixture(t)
	url := startNATS(t)
	rc, err := relay.Listen(relay.Config{URLs: []string{url}, DroneID: "bravo"})
	if err != nil {
		t.Fatal(err)
	}
	d := startDroneExtra(t, f, []link.ExtraConn{rc})
	conf := writeProfile(t, f, fleetProfile(d.addr)+fmt.Sprintf(`
[drone.bravo]
relay = %q
drone-id = "bravo"
drone-pub = "drone.key.pub"
`, url))
	r := run(t, "", "send", "--config", conf, "--drone", "bravo", "take", "off")
	r.want(t, 0)
	if r.stdout != "ack ok: done: take off\n" {
		t.Errorf("stdout %q", r.stdout)
	}
	// The same drone from flags alone, with the profile's defaults for the rest.
	r = run(t, "", "send", "--config", conf, "--relay", url, "--drone-id", "bravo", "--drone-pub", f.pub("drone"),
		"--key", f.key("alice"), "--psk", f.path("psk"), "--user", "alice", "--password-file", f.path("alice.pw"), "land")
	r.want(t, 0)
	if got := strings.Join(d.commands(), "|"); got != "alice: take off|alice: land" {
		t.Errorf("executed %q", got)
	}
	// --drone-id on the command line wins over the profile's: nobody serves charlie.
	r = run(t, "", "send", "--config", conf, "--drone", "bravo", "--drone-id", "charlie", "hover")
	r.want(t, 5, `no drone serves id "charlie" on the relay`)
	// pin through the relay, by the profile's name.
	out := f.path("bravo.pub")
	r = run(t, "", "pin", "--config", conf, "--drone", "bravo", "--psk", f.path("psk"), "--out", out, "--expect", crypto.Fingerprint(&keys(t)["drone"].PublicKey))
	r.want(t, 0)
	if !strings.Contains(r.stdout, "bravo via the relay") {
		t.Errorf("pin said %q", r.stdout)
	}
}

// The relay flags are checked before anything is sent, each mistake in one line.
func TestRelayFlagErrors(t *testing.T) {
	f := newFixture(t)
	common := []string{"--drone-pub", f.pub("drone"), "--key", f.key("alice"), "--psk", f.path("psk"), "--user", "alice",
		"--password-file", f.path("alice.pw")}
	for _, tc := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"neither drone nor relay", nil, 2, `required flag(s) "drone" not set (--drone HOST:PORT|NAME, or --relay URL with --drone-id NAME)`},
		{"relay without id", []string{"--relay", "nats://127.0.0.1:4222"}, 2, "--relay needs --drone-id NAME"},
		{"id without relay", []string{"--drone-id", "bravo"}, 2, "--drone-id needs --relay URL"},
		{"creds without relay", []string{"--drone", "127.0.0.1:9", "--relay-creds", "x"}, 2, "--relay-creds needs --relay URL"},
		{"both", []string{"--drone", "127.0.0.1:9", "--relay", "nats://127.0.0.1:4222", "--drone-id", "b"}, 2, "not both"},
		{"password in the URL", []string{"--relay", "nats://u:hunter2@127.0.0.1:4222", "--drone-id", "b"}, 2, "holds credentials"},
		{"dtls", []string{"--transport", "dtls", "--relay", "nats://127.0.0.1:4222", "--drone-id", "b"}, 2, "native protocol only"},
		{"missing creds file", []string{"--relay", "nats://127.0.0.1:4222", "--drone-id", "b", "--relay-creds", f.path("none")}, 1, "credentials file"},
		{"nothing listens", []string{"--relay", "nats://127.0.0.1:9", "--drone-id", "b"}, 5, "cannot connect"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := run(t, "", append(append(append([]string{"send"}, common...), tc.args...), "hello")...)
			r.want(t, tc.code, tc.want)
			if strings.Contains(r.stderr, "hunter2") {
				t.Errorf("stderr shows the password: %q", r.stderr)
			}
		})
	}
	for _, tc := range []struct {
		name, table, want string
	}{
		{"address and drone-id", "address = \"127.0.0.1:9\"\nrelay = \"nats://127.0.0.1:4222\"\ndrone-id = \"b\"\n", `give "address" (HOST:PORT) or "drone-id" (through the relay), not both`},
		{"drone-id without relay", "drone-id = \"b\"\n", `key "relay" missing`},
		{"neither", "drone-pub = \"drone.key.pub\"\n", `key "address" missing`},
		{"bad drone-id", "relay = \"nats://127.0.0.1:4222\"\ndrone-id = \"b.c\"\n", "may hold only letters"},
		{"password in the URL", "relay = \"nats://u:hunter2@127.0.0.1:4222\"\ndrone-id = \"b\"\n", "holds credentials"},
	} {
		t.Run("profile "+tc.name, func(t *testing.T) {
			conf := writeProfile(t, f, "[drone.x]\n"+tc.table)
			r := run(t, "", append(append([]string{"send", "--config", conf, "--drone", "x"}, common...), "hello")...)
			r.want(t, 1, tc.want)
			if strings.Contains(r.stderr, "hunter2") {
				t.Errorf("stderr shows the password: %q", r.stderr)
			}
		})
	}
}

// TestRelayURLCredentialsNotEchoed: a password in --relay, or in a profile's relay key, is
// refused without repeating it. On 0a207a1 the profile's error quoted the whole value, and
// --relay quoted the forms url.Parse reads without a user part ("alice:pw@relay:4222").
func TestRelayURLCredentialsNotEchoed(t *testing.T) {
	const secret = "s3cr3tpw"
	for _, value := range []string{"nats://alice:" + secret + "@relay:4222", "alice:" + secret + "@relay:4222"} {
		r := run(t, "", "pin", "--relay", value, "--drone-id", "drone-7", "--psk", "nowhere.psk", "--out", filepath.Join(t.TempDir(), "d.pub"), "--expect", "SHA256:x")
		if r.code == 0 {
			t.Fatalf("--relay %s accepted", value)
		}
		if strings.Contains(r.stderr+r.stdout, secret) {
			t.Errorf("the refusal of --relay repeats the password: %s", r.stderr)
		}
		conf := writeFile(t, filepath.Join(t.TempDir(), "profile.toml"),
			fmt.Sprintf("[drone.bravo]\nrelay = %q\ndrone-id = \"bravo\"\n", value), 0o600)
		r = run(t, "", "send", "--config", conf, "--drone", "bravo", "x")
		if r.code == 0 {
			t.Fatalf("profile relay %s accepted", value)
		}
		if strings.Contains(r.stderr+r.stdout, secret) {
			t.Errorf("the refusal of the profile's relay repeats the password: %s", r.stderr)
		}
	}
}
