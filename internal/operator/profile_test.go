package operator

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dronelink/dronelink/pkg/crypto"
	"github.com/dronelink/dronelink/pkg/link"
)

// waitFor polls cond until it holds (the deadline only bounds a broken build).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// writeProfile writes a profile in the fixture's directory (so its relative paths name
// the fixture's files) and returns its path.
func writeProfile(t *testing.T, f *fixture, content string) string {
	t.Helper()
	return writeFile(t, f.path("config.toml"), content, 0o644)
}

// fleetProfile names the drone at addr alpha, with alice's files as [defaults], and beta
// (nowhere) with olga's.
func fleetProfile(addr string) string {
	return fmt.Sprintf(`# the operator's drones
[defaults]
key = "alice.key"
psk = "psk"
user = "alice"
password-file = "alice.pw"

[drone.alpha]
address = %q
drone_pub = "drone.key.pub"   # the underscore spelling is accepted too
timeout = "20s"

[drone.beta]
address = "127.0.0.1:9"
drone-pub = "drone.key.pub"
key = "olga.key"
user = "olga"
password_file = "olga.pw"
`, addr)
}

// A drone's name stands for its flags; flags on the command line win over the profile.
func TestProfileSendAndListen(t *testing.T) {
	f := newFixture(t)
	d := startDrone(t, f)
	conf := writeProfile(t, f, fleetProfile(d.addr))
	r := run(t, "", "send", "--config", conf, "--drone", "alpha", "take", "off")
	r.want(t, 0)
	if r.stdout != "ack ok: done: take off\n" {
		t.Errorf("stdout %q", r.stdout)
	}
	// The flags win: olga (observer) with her own key and password.
	r = run(t, "", "send", "--config", conf, "--drone", "alpha", "--user", "olga", "--key", f.key("olga"),
		"--password-file", f.path("olga.pw"), "arm")
	r.want(t, 4, "user role may not command (observer)")
	// --password-stdin wins over the profile's password file.
	r = run(t, "alice secret\n", "send", "--config", conf, "--drone", "alpha", "--password-stdin", "land")
	r.want(t, 0)
	if got := strings.Join(d.commands(), "|"); got != "alice: take off|alice: land" {
		t.Errorf("executed %q", got)
	}
	// listen takes the name too.
	ch := startListen(t, context.Background(), "--config", conf, "--drone", "alpha", "--user", "olga", "--key", f.key("olga"),
		"--password-file", f.path("olga.pw"), "--count", "1")
	waitFor(t, "olga's login", func() bool {
		for _, s := range d.server.Sessions() {
			if s.User == "olga" && s.Role == link.RoleObserver {
				return true
			}
		}
		return false
	})
	if _, err := d.server.Broadcast([]byte("battery 80%")); err != nil {
		t.Fatal(err)
	}
	if r := waitResult(t, ch); r.code != 0 || r.stdout != "battery 80%\n" {
		t.Errorf("listen: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
}

// The default profile is $XDG_CONFIG_HOME/dronelink/config.toml, else
// ~/.config/dronelink/config.toml.
func TestDefaultProfilePath(t *testing.T) {
	for _, tc := range []struct{ xdg, home, want string }{
		{"/x/conf", "/home/u", "/x/conf/dronelink/config.toml"},
		{"", "/home/u", "/home/u/.config/dronelink/config.toml"},
		{"relative/ignored", "/home/u", "/home/u/.config/dronelink/config.toml"},
	} {
		t.Setenv("XDG_CONFIG_HOME", tc.xdg)
		t.Setenv("HOME", tc.home)
		if got := defaultProfilePath(); got != tc.want {
			t.Errorf("XDG_CONFIG_HOME=%q HOME=%q: %q, want %q", tc.xdg, tc.home, got, tc.want)
		}
	}
}

// Every profile problem is one line naming the file (and the drone and key); an unknown
// name lists the known ones.
func TestProfileErrors(t *testing.T) {
	f := newFixture(t)
	good := fleetProfile("127.0.0.1:9")
	for _, tc := range []struct {
		name    string
		profile string // "" for none
		drone   string
		args    []string
		code    int
		want    []string
	}{
		{"unknown name", good, "gamma", nil, 2, []string{`bad --drone "gamma"`, "known: alpha, beta"}},
		{"no drones", "[defaults]\nuser = \"alice\"\n", "alpha", nil, 2, []string{`bad --drone "alpha"`, "names no drone"}},
		{"syntax", "[drone.alpha\naddress = 1\n", "alpha", nil, 1, []string{"config.toml: line 2"}},
		{"unknown key", "[drone.alpha]\naddress = \"h:1\"\npks = \"x\"\n", "alpha", nil, 1,
			[]string{`config.toml: drone "alpha": key "pks": unknown setting`}},
		{"unknown top-level key", "user = \"alice\"\n", "alpha", nil, 1, []string{`config.toml: key "user": unknown setting`}},
		{"bad address", "[drone.alpha]\naddress = \"nohost\"\n", "alpha", nil, 1,
			[]string{`drone "alpha": key "address": invalid value "nohost": want HOST:PORT`}},
		{"no address", "[drone.alpha]\nuser = \"alice\"\n", "alpha", nil, 1, []string{`drone "alpha": key "address" missing`}},
		{"address in defaults", "[defaults]\naddress = \"h:1\"\n", "alpha", nil, 1,
			[]string{`[defaults]: key "address": belongs in a [drone.NAME] table`}},
		{"bad transport", "[drone.alpha]\naddress = \"h:1\"\ntransport = \"tcp\"\n", "alpha", nil, 1,
			[]string{`key "transport": invalid value "tcp": want native or dtls`}},
		{"bad timeout", "[drone.alpha]\naddress = \"h:1\"\ntimeout = \"-1s\"\n", "alpha", nil, 1,
			[]string{`key "timeout": invalid value "-1s": want a positive duration`}},
		{"not a string", "[drone.alpha]\naddress = \"h:1\"\ntimeout = 15\n", "alpha", nil, 1, []string{`key "timeout": want a string`}},
		{"empty value", "[drone.alpha]\naddress = \"h:1\"\npsk = \"\"\n", "alpha", nil, 1, []string{`key "psk": invalid value ""`}},
		{"twice", "[drone.alpha]\naddress = \"h:1\"\ndrone-pub = \"a\"\ndrone_pub = \"b\"\n", "alpha", nil, 1, []string{"given twice"}},
		{"bad name", "[drone.\"a b\"]\naddress = \"h:1\"\n", "alpha", nil, 1, []string{`drone "a b": bad name`}},
		{"drone not a table", "drone = \"alpha\"\n", "alpha", nil, 1, []string{`key "drone": want tables`}},
		{"missing psk", "[drone.alpha]\naddress = \"h:1\"\nuser = \"alice\"\n", "alpha", nil, 2,
			[]string{`required flag(s) "psk" not set (and not in`, `for drone "alpha"`}},
		{"psk file missing", "[drone.alpha]\naddress = \"127.0.0.1:9\"\nuser = \"alice\"\npsk = \"gone.psk\"\nkey = \"alice.key\"\ndrone-pub = \"drone.key.pub\"\n",
			"alpha", nil, 1, []string{"cannot read PSK file", `drone "alpha": key "psk"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conf := writeProfile(t, f, tc.profile)
			args := append([]string{"send", "--config", conf, "--drone", tc.drone}, tc.args...)
			r := run(t, "", append(args, "hi")...)
			r.want(t, tc.code, tc.want...)
			if strings.Contains(r.stderr, "secret") {
				t.Errorf("stderr %q", r.stderr)
			}
		})
	}
}

// Without --config, a name needs the default profile; --config naming a missing file is
// a local error; a HOST:PORT never reads a profile (not even a broken one).
func TestProfileMissing(t *testing.T) {
	f := newFixture(t)
	noProfile := func(a *app) { a.defaultProfile = f.path("none/config.toml") }
	r := runCtx(t, context.Background(), noProfile, "", "send", "--drone", "alpha", "hi")
	r.want(t, 2, `bad --drone "alpha": want HOST:PORT or the name of a drone in the profile (there is no `)
	r = run(t, "", "send", "--config", f.path("missing.toml"), "--drone", "alpha", "hi")
	r.want(t, 1, "cannot read the profile", "missing.toml (--config): no such file")
	broken := writeProfile(t, f, "[[[")
	r = run(t, "", append(append([]string{"send", "--config", broken}, linkArgs(f, "127.0.0.1:9", "alice", "alice", "alice.pw")...),
		"--timeout", "1ms", "hi")...)
	r.want(t, 5) // no answer: the profile was not read
}

// The profile holds no secret and may be readable by all; one writable by others draws a
// warning. The files it names are checked as flags' are: an open PSK file is refused.
func TestProfilePermissions(t *testing.T) {
	f := newFixture(t)
	conf := writeProfile(t, f, fleetProfile("127.0.0.1:9"))
	if err := os.Chmod(conf, 0o666); err != nil {
		t.Fatal(err)
	}
	psk, _ := readFile(t, f.psk)
	open := writeFile(t, f.path("open.psk"), psk, 0o644)
	r := run(t, "", "send", "--config", conf, "--drone", "alpha", "--psk", open, "hi")
	r.want(t, 1, "open.psk", "too open")
	if !strings.Contains(r.stderr, "dronelink: warning: profile "+conf+" is writable by group or others") {
		t.Errorf("no warning about the writable profile: %q", r.stderr)
	}
	if err := os.Chmod(f.psk, 0o640); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(conf, 0o644); err != nil {
		t.Fatal(err)
	}
	r = run(t, "", "send", "--config", conf, "--drone", "alpha", "hi")
	r.want(t, 1, filepath.Base(f.psk), "too open")
	if strings.Contains(r.stderr, "warning") {
		t.Errorf("a warning about a profile only others can read: %q", r.stderr)
	}
}

// pin takes a drone's name too: the profile gives the address and the PSK.
func TestPinFromProfile(t *testing.T) {
	f := newFixture(t)
	d := startDrone(t, f)
	conf := writeProfile(t, f, fleetProfile(d.addr))
	k := keys(t)
	out := f.path("pinned.pub")
	r := run(t, "", "pin", "--config", conf, "--drone", "alpha", "--out", out, "--expect", crypto.Fingerprint(&k["drone"].PublicKey))
	r.want(t, 0)
	got, _ := readFile(t, out)
	want, _ := readFile(t, f.pub("drone"))
	if got != want {
		t.Fatalf("pinned %q, want the drone's public key", got)
	}
	// Without a profile drone and without --psk: a usage error naming the flag.
	run(t, "", "pin", "--drone", d.addr, "--out", f.path("other.pub"), "--expect", "SHA256:x").want(t, 2, `"psk"`)
}
