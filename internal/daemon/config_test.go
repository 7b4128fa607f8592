package daemon

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
)

func parse(t *testing.T, args []string, file string) (*Config, error) {
	t.Helper()
	var c Config
	fs := pflag.NewFlagSet("test", pflag.ContinueOnError)
	c.bindFlags(fs)
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if file != "" {
		path := filepath.Join(t.TempDir(), "dronelinkd.toml")
		if err := os.WriteFile(path, []byte(file), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := c.applyFile(fs, path); err != nil {
			return nil, err
		}
	}
	c.listenGiven = fs.Changed("listen") || c.fromFile["listen"] // as Main does
	return &c, nil
}

func TestConfigFileAndFlags(t *testing.T) {
	file := `
listen = "127.0.0.1:6000"
key = "/etc/dronelink/drone.key"
psk = "/etc/dronelink/fleet.psk"
users = "/var/lib/dronelink/users"
telemetry-in = "127.0.0.1:14550"
replay-window = 4096
reload-interval = "2s"
`
	c, err := parse(t, []string{"--listen", "127.0.0.1:7000", "--log-format", "json"}, file)
	if err != nil {
		t.Fatal(err)
	}
	want := Config{Transport: "native", Listen: "127.0.0.1:7000", KeyPath: "/etc/dronelink/drone.key", PSKPath: "/etc/dronelink/fleet.psk",
		UsersPath: "/var/lib/dronelink/users", TelemetryIn: "127.0.0.1:14550", LogFormat: "json", LogLevel: "info",
		ReplayWindow: 4096, ReloadInterval: 2 * time.Second, MavlinkAgg: 20 * time.Millisecond, MavlinkMaxAge: time.Second,
		ForwardWait: DefaultForwardWait, LoginWorkers: DefaultLoginWorkers}
	// The flag won over the file: only the keys the file set count as from the file.
	if c.fromFile["listen"] || !c.fromFile["key"] || !c.fromFile["replay-window"] || c.fromFile["log-format"] {
		t.Errorf("settings from the file: %v", c.fromFile)
	}
	got := *c
	got.fromFile, got.ConfigPath, got.listenGiven = nil, "", false
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got  %+v\nwant %+v", got, want)
	}
	if err := c.validate(); err != nil {
		t.Fatal(err)
	}
}

func TestConfigErrors(t *testing.T) {
	base := []string{"--key", "k", "--psk", "p", "--users", "u"}
	cases := []struct {
		name string
		args []string
		file string
		want string
	}{
		{"unknown key", base, `lisen = "x:1"`, `key "lisen": unknown setting`},
		{"bad syntax", base, "listen = ", "line 1"},
		{"wrong type", base, `replay-window = [1]`, "want a string, number or boolean"},
		{"bad value", base, `replay-window = "many"`, "replay-window"},
		{"config in config", base, `config = "x"`, "cannot be set"},
		{"missing key", []string{"--psk", "p", "--users", "u"}, "", "missing --key"},
		{"bad listen", append(base, "--listen", "5000"), "", "want HOST:PORT"},
		{"bad log format", append(base, "--log-format", "xml"), "", "--log-format"},
		{"bad level", append(base, "--log-level", "loud"), "", "--log-level"},
		{"huge window", append(base, "--replay-window", "100000"), "", "--replay-window"},
		{"bad transport", append(base, "--transport", "quic"), "", `--transport "quic": want native or dtls`},
		{"dtls still needs the PSK", []string{"--transport", "dtls", "--users", "u"}, "", "missing --psk"},
		{"both MAVLink modes", append(base, "--mavlink-listen", "127.0.0.1:14560", "--mavlink-to", "127.0.0.1:14555"), "", "give only one of --mavlink-listen and --mavlink-to"},
		{"bad MAVLink address", append(base, "--mavlink-to", "14555"), "", "--mavlink-to"},
		{"negative aggregation", append(base, "--mavlink-agg", "-1ms"), "", "--mavlink-agg"},
		{"aggregation too long", base, `mavlink-agg = "2s"`, `key "mavlink-agg": invalid value 2s: want 0 to 1s`},
		{"zero frame age", append(base, "--mavlink-max-age", "0s"), "", "--mavlink-max-age"},
		{"no login workers", append(base, "--login-workers", "0"), "", "--login-workers 0: want 1 to 16"},
		{"too many login workers", base, "login-workers = 17", `key "login-workers": invalid value 17: want 1 to 16`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := parse(t, tc.args, tc.file)
			if err == nil {
				err = c.validate()
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want it to mention %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error is not one line: %q", err)
			}
		})
	}
}

// The login worker count comes from the flag or the config file (flags win); one by default.
func TestConfigLoginWorkers(t *testing.T) {
	base := []string{"--key", "k", "--psk", "p", "--users", "u"}
	for _, tc := range []struct {
		args []string
		file string
		want int
	}{
		{base, "", 1},
		{base, "login-workers = 3", 3},
		{append(base, "--login-workers", "2"), "login-workers = 3", 2},
	} {
		c, err := parse(t, tc.args, tc.file)
		if err == nil {
			err = c.validate()
		}
		if err != nil {
			t.Errorf("%v with %q: %v", tc.args, tc.file, err)
		} else if c.LoginWorkers != tc.want {
			t.Errorf("%v with %q: %d login workers, want %d", tc.args, tc.file, c.LoginWorkers, tc.want)
		}
	}
}

// The MAVLink tunnel's settings come from the config file like every flag.
func TestConfigMAVLink(t *testing.T) {
	c, err := parse(t, []string{"--key", "k", "--psk", "p", "--users", "u"},
		"mavlink-listen = \"127.0.0.1:14560\"\nmavlink-agg = \"50ms\"\nmavlink-max-age = \"500ms\"\n")
	if err != nil {
		t.Fatal(err)
	}
	if err := c.validate(); err != nil {
		t.Fatal(err)
	}
	if !c.tunnelOn() || c.MavlinkListen != "127.0.0.1:14560" || c.MavlinkAgg != 50*time.Millisecond || c.MavlinkMaxAge != 500*time.Millisecond {
		t.Fatalf("config %+v", c)
	}
}

// DTLS-PSK mode has no drone key: --key is optional there, and the transport can come
// from the config file like every flag.
func TestConfigDTLS(t *testing.T) {
	c, err := parse(t, []string{"--psk", "p", "--users", "u"}, `transport = "dtls"`)
	if err != nil {
		t.Fatal(err)
	}
	if c.Transport != TransportDTLS {
		t.Fatalf("transport %q", c.Transport)
	}
	if err := c.validate(); err != nil {
		t.Fatalf("dtls without --key: %v", err)
	}
	c, err = parse(t, []string{"--psk", "p", "--users", "u"}, "")
	if err != nil {
		t.Fatal(err)
	}
	if err := c.validate(); err == nil || !strings.Contains(err.Error(), "missing --key") {
		t.Fatalf("native without --key: %v", err)
	}
}

func TestMainUsageAndFileErrors(t *testing.T) {
	dir := t.TempDir()
	cases := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"bad flag", []string{"--bogus"}, ExitUsage, "unknown flag: --bogus"},
		{"argument", []string{"extra"}, ExitUsage, "unknown command"},
		{"missing files", []string{"--key", filepath.Join(dir, "nokey"), "--psk", "p", "--users", "u"}, ExitError, "nokey"},
		{"missing config", []string{"--config", filepath.Join(dir, "none.toml")}, ExitError, "none.toml"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			code := Main(context.Background(), tc.args, &out, &errb)
			if code != tc.code {
				t.Fatalf("exit %d, want %d; stderr %q", code, tc.code, errb.String())
			}
			lines := strings.Split(strings.TrimSpace(errb.String()), "\n")
			if len(lines) != 1 || !strings.Contains(lines[0], tc.want) {
				t.Fatalf("stderr %q, want one line mentioning %q", errb.String(), tc.want)
			}
		})
	}
}

func TestPrintable(t *testing.T) {
	cases := []struct{ in, want string }{
		{"take off to 10 m", "take off to 10 m"},
		{"höhe 30 m ✈", "höhe 30 m ✈"},
		{"two\nlines", `two\nlines`},
		{"esc \x1b[2J", `esc \x1b[2J`},
		{"bad \xff byte", `bad \xff byte`},
		{`back\slash`, `back\\slash`},
		{"tab\there", `tab\there`},
	}
	for _, tc := range cases {
		if got := printable([]byte(tc.in)); got != tc.want {
			t.Errorf("printable(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
