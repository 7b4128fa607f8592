package daemon

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dronelink/dronelink/pkg/crypto"
	"github.com/dronelink/dronelink/pkg/link"
	"github.com/dronelink/dronelink/pkg/userdb"
)

// droneFiles writes a drone key, a PSK and a user database (alice, pilot), all 0600.
func droneFiles(t *testing.T) (keyPath, pskPath, usersPath string) {
	t.Helper()
	dir := t.TempDir()
	keyPath, pskPath, usersPath = filepath.Join(dir, "drone.key"), filepath.Join(dir, "fleet.psk"), filepath.Join(dir, "users")
	key, err := crypto.GenerateRSAKey(nil, 2048)
	if err != nil {
		t.Fatal(err)
	}
	if err := crypto.SavePrivateKey(keyPath, key); err != nil {
		t.Fatal(err)
	}
	psk, err := crypto.GeneratePSK(nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := crypto.SavePSK(pskPath, psk); err != nil {
		t.Fatal(err)
	}
	hash, err := userdb.HashPassword([]byte("pw"), userdb.Params{Time: 1, MemoryKiB: 64, Threads: 1, SaltLen: 16, KeyLen: 32})
	if err != nil {
		t.Fatal(err)
	}
	if err := userdb.Update(usersPath, true, func(db *userdb.DB) (*userdb.DB, error) {
		return db.WithUser("alice", link.RolePilot, hash, &key.PublicKey)
	}); err != nil {
		t.Fatal(err)
	}
	return keyPath, pskPath, usersPath
}

// runMain runs dronelinkd and returns its exit code, standard output and error.
func runMain(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := Main(context.Background(), args, &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

// A bad value in the config file exits 1 with one line naming the file and the key, never
// a flag the user did not pass; the same value given as a flag is a usage error naming
// the flag.
func TestConfigFileValueErrors(t *testing.T) {
	keyPath, pskPath, usersPath := droneFiles(t)
	conf := filepath.Join(t.TempDir(), "dronelinkd.toml")
	files := fmt.Sprintf("listen = \"127.0.0.1:0\"\nkey = %q\npsk = %q\nusers = %q\n", keyPath, pskPath, usersPath)
	for _, tc := range []struct {
		key, value string // value as written in TOML
		want       string // after `PATH: key "KEY": `
	}{
		{"listen", `"x"`, `invalid address "x": want HOST:PORT`},
		{"telemetry-in", `"14550"`, `invalid address "14550": want HOST:PORT`},
		{"forward", `"nowhere"`, `invalid address "nowhere": want HOST:PORT`},
		{"metrics", `"9500"`, `invalid address "9500": want HOST:PORT`},
		{"mavlink-to", `"14555"`, `invalid address "14555": want HOST:PORT`},
		{"transport", `"quic"`, `invalid value "quic": want native or dtls`},
		{"log-format", `"xml"`, `invalid value "xml": want text or json`},
		{"log-level", `"loud"`, `invalid value "loud": want debug, info, warn or error`},
		{"replay-window", `100000`, `invalid value 100000: want 0 to 65536`},
		{"replay-window", `"many"`, `invalid value "many": want an integer`},
		{"max-sessions", `-1`, `invalid value -1: want 0 to 60000`},
		{"mavlink-agg", `"2s"`, `invalid value 2s: want 0 to 1s`},
		{"forward-wait", `"-5ms"`, `invalid value -5ms: want 0 to 1s`},
		{"mavlink-max-age", `"forever"`, `invalid value "forever": want a duration such as 500ms or 2s`},
		{"reload-interval", `"10ms"`, `invalid value 10ms: want at least 100ms`},
		{"check-config", `true`, `cannot be set in the config file`},
		{"lisen", `"127.0.0.1:5000"`, `unknown setting`},
	} {
		t.Run(tc.key+"="+tc.value, func(t *testing.T) {
			content := files + tc.key + " = " + tc.value + "\n"
			if tc.key == "listen" {
				content = strings.Replace(content, "listen = \"127.0.0.1:0\"\n", "", 1)
			}
			if err := os.WriteFile(conf, []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
			code, stdout, stderr := runMain(t, "--config", conf, "--check-config")
			want := fmt.Sprintf("dronelinkd: %s: key %q: %s\n", conf, tc.key, tc.want)
			if code != ExitError || stderr != want || stdout != "" {
				t.Fatalf("exit %d, stderr %q\nwant exit 1, %q", code, stderr, want)
			}
		})
	}
	// A file named in the config file that cannot be used: the error says where it was set.
	if err := os.WriteFile(conf, fmt.Appendf(nil, "key = %q\npsk = %q\nusers = %q\n", keyPath+".missing", pskPath, usersPath), 0o600); err != nil {
		t.Fatal(err)
	}
	code, _, stderr := runMain(t, "--config", conf, "--check-config")
	if want := fmt.Sprintf("dronelinkd: %s: key \"key\": private key %s.missing: no such file or directory\n", conf, keyPath); code != ExitError || stderr != want {
		t.Fatalf("missing key file: exit %d, stderr %q\nwant exit 1, %q", code, stderr, want)
	}

	// Given as a flag, a bad value is a usage error about the flag.
	if err := os.WriteFile(conf, []byte(files), 0o600); err != nil {
		t.Fatal(err)
	}
	code, _, stderr = runMain(t, "--config", conf, "--listen", "x", "--check-config")
	if want := "dronelinkd: --listen \"x\": want HOST:PORT (see dronelinkd --help)\n"; code != ExitUsage || stderr != want {
		t.Fatalf("flag: exit %d, stderr %q, want exit 2, %q", code, stderr, want)
	}
	// Both MAVLink modes, one from the file and one from a flag: each named where it was set.
	if err := os.WriteFile(conf, []byte(files+"mavlink-to = \"127.0.0.1:14555\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, _, stderr = runMain(t, "--config", conf, "--mavlink-listen", "127.0.0.1:0", "--check-config")
	if want := fmt.Sprintf("dronelinkd: give only one of --mavlink-listen and %s: key \"mavlink-to\"\n", conf); code != ExitError || stderr != want {
		t.Fatalf("MAVLink modes: exit %d, stderr %q, want exit 1, %q", code, stderr, want)
	}
}

// --check-config binds every address the daemon would bind (and releases it): one that is
// busy is one line naming the setting, where it was set, and the address; exit 1.
func TestCheckConfigBusyAddresses(t *testing.T) {
	keyPath, pskPath, usersPath := droneFiles(t)
	busyUDP, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busyUDP.Close()
	busyTCP, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busyTCP.Close()
	udp, tcp := busyUDP.LocalAddr().String(), busyTCP.Addr().String()
	free := func(network string) string {
		t.Helper()
		if network == "tcp" {
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			return l.Addr().String()
		}
		c, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		return c.LocalAddr().String()
	}
	conf := filepath.Join(t.TempDir(), "dronelinkd.toml")
	if err := os.WriteFile(conf, fmt.Appendf(nil, "listen = %q\n", udp), 0o600); err != nil {
		t.Fatal(err)
	}
	files := []string{"--key", keyPath, "--psk", pskPath, "--users", usersPath, "--check-config"}
	listen := free("udp")
	for _, tc := range []struct {
		name string
		args []string
		want string // the error line after "dronelinkd: ", or "" for ok
	}{
		{"all free", []string{"--listen", listen, "--telemetry-in", free("udp"), "--mavlink-listen", free("udp"), "--metrics", free("tcp")}, ""},
		{"listen busy", []string{"--listen", udp}, "--listen: cannot bind UDP " + udp + ": address already in use (is dronelinkd already running?)"},
		{"telemetry-in busy", []string{"--listen", listen, "--telemetry-in", udp}, "--telemetry-in: cannot bind UDP " + udp + ": address already in use (is dronelinkd already running?)"},
		{"mavlink-listen busy", []string{"--listen", listen, "--mavlink-listen", udp}, "--mavlink-listen: cannot bind UDP " + udp + ": address already in use (is dronelinkd already running?)"},
		{"metrics busy", []string{"--listen", listen, "--metrics", tcp}, "--metrics: cannot bind TCP " + tcp + ": address already in use (is dronelinkd already running?)"},
		{"two settings, one address", []string{"--listen", listen, "--telemetry-in", listen}, "--telemetry-in: cannot bind UDP " + listen + ": address already in use (is dronelinkd already running?)"},
		{"listen from the file busy", []string{"--config", conf}, conf + `: key "listen": cannot bind UDP ` + udp + ": address already in use (is dronelinkd already running?)"},
		{"dtls listen busy", []string{"--transport", "dtls", "--listen", udp}, "--listen: cannot bind UDP " + udp + ": address already in use (is dronelinkd already running?)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, stdout, stderr := runMain(t, append(append([]string{}, files...), tc.args...)...)
			if tc.want == "" {
				if code != ExitOK || !strings.HasPrefix(stdout, "configuration ok") {
					t.Fatalf("exit %d, stdout %q, stderr %q", code, stdout, stderr)
				}
				return
			}
			if want := "dronelinkd: " + tc.want + "\n"; code != ExitError || stderr != want {
				t.Fatalf("exit %d, stderr %q\nwant exit 1, %q", code, stderr, want)
			}
		})
	}
	// Checking released every address: the daemon can bind them now.
	c, err := net.ListenPacket("udp", listen)
	if err != nil {
		t.Fatalf("--check-config kept %s: %v", listen, err)
	}
	c.Close()
}
