package daemon

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The relay's settings: what they need, what they exclude, and whether the daemon still
// opens a UDP socket.
func TestRelaySettings(t *testing.T) {
	base := []string{"--key", "k", "--psk", "p", "--users", "u"}
	relay := []string{"--relay", "nats://n1:4222,nats://n2:4222", "--drone-id", "drone-7"}
	for _, tc := range []struct {
		name   string
		args   []string
		file   string
		listen string // Listen after validation
		err    string
		usage  bool
	}{
		{name: "no relay", args: base, listen: DefaultListen},
		{name: "relay only", args: append(base, relay...), listen: ""},
		{name: "relay and listen", args: append(append(base, relay...), "--listen", "127.0.0.1:6000"), listen: "127.0.0.1:6000"},
		{name: "relay and listen in the file", args: append(base, relay...), file: "listen = \"127.0.0.1:6001\"\n", listen: "127.0.0.1:6001"},
		{name: "relay from the file", args: base, file: "relay = \"nats://n1:4222\"\ndrone-id = \"drone-7\"\nrelay-creds = \"/etc/dronelink/relay.creds\"\n", listen: ""},
		{name: "no drone id", args: append(base, "--relay", "nats://n1:4222"), err: "--relay needs --drone-id NAME", usage: true},
		{name: "no drone id, file", args: base, file: "relay = \"nats://n1:4222\"\n", err: `key "relay" needs --drone-id NAME`},
		{name: "drone id without relay", args: append(base, "--drone-id", "drone-7"), err: "--drone-id needs --relay URL", usage: true},
		{name: "creds without relay", args: append(base, "--relay-creds", "c"), err: "--relay-creds needs --relay URL", usage: true},
		{name: "creds in the URL", args: append(base, "--relay", "nats://u:pw@n1:4222", "--drone-id", "d"), err: "holds credentials", usage: true},
		{name: "not NATS", args: append(base, "--relay", "udp://n1:4222", "--drone-id", "d"), err: "nats:// or tls://", usage: true},
		{name: "bad drone id", args: append(base, "--relay", "nats://n1:4222", "--drone-id", "drone.7"), err: `--drone-id "drone.7": want 1 to 64 letters`, usage: true},
		{name: "dtls", args: append(append(base, relay...), "--transport", "dtls"), err: "native protocol only", usage: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := parse(t, tc.args, tc.file)
			if err == nil {
				err = c.validate()
			}
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("%v, want an error saying %q", err, tc.err)
				}
				if isUsageError(err) != tc.usage {
					t.Errorf("usage error: %v, want %v", isUsageError(err), tc.usage)
				}
				if strings.Contains(err.Error(), "pw@") {
					t.Errorf("the error shows the password: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.Listen != tc.listen {
				t.Errorf("listen %q, want %q", c.Listen, tc.listen)
			}
		})
	}
}

// TestRelayURLCredentialsNotEchoed: --relay (flag or config file key) with a password in the
// URL is refused, and the refusal, which goes to the terminal or the journal, must not
// repeat the password. On 0a207a1 validate quoted the whole value.
func TestRelayURLCredentialsNotEchoed(t *testing.T) {
	keyPath, pskPath, usersPath := droneFiles(t)
	const secret = "s3cr3tpw"
	value := "nats://drone-7:" + secret + "@relay.example:4222"
	base := []string{"--key", keyPath, "--psk", pskPath, "--users", usersPath, "--drone-id", "drone-7", "--check-config"}
	code, stdout, stderr := runMain(t, append([]string{"--relay", value}, base...)...)
	if code == 0 {
		t.Fatalf("--relay with a password accepted: %s", stdout)
	}
	if strings.Contains(stderr, secret) || strings.Contains(stdout, secret) {
		t.Errorf("the refusal of --relay repeats the password:\n%s%s", stdout, stderr)
	}

	conf := filepath.Join(t.TempDir(), "dronelinkd.toml")
	if err := os.WriteFile(conf, fmt.Appendf(nil, "relay = %q\n", value), 0o600); err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr = runMain(t, append([]string{"--config", conf}, base...)...)
	if code == 0 {
		t.Fatalf("relay with a password in the config file accepted: %s", stdout)
	}
	if strings.Contains(stderr, secret) || strings.Contains(stdout, secret) {
		t.Errorf("the refusal of the config file's relay repeats the password:\n%s%s", stdout, stderr)
	}
}
