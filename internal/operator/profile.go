package operator

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
	"github.com/spf13/pflag"

	"github.com/dronelink/dronelink/pkg/link"
	"github.com/dronelink/dronelink/pkg/relay"
)

// The operator's profile: named drones, so that
//
//	dronelink send --drone alpha take off
//
// stands for the seven flags. It is a TOML file, by default
// $XDG_CONFIG_HOME/dronelink/config.toml (~/.config/dronelink/config.toml), or the one
// --config names:
//
//	[defaults]                     # for every drone, unless its own table says otherwise
//	key = "alice.key"
//	psk = "fleet.psk"
//	user = "alice"
//	password-file = "alice.pw"
//
//	[drone.alpha]
//	address = "alpha.local:5000"
//	drone-pub = "alpha.pub"
//	timeout = "20s"
//
//	[drone.bravo]                  # on LTE: reached through the NATS relay
//	relay = "nats://relay.example:4222"
//	drone-id = "bravo"
//	relay-creds = "alice.creds"
//	drone-pub = "bravo.pub"
//
// Keys are the flag names (address for --drone's HOST:PORT); drone_pub and password_file
// are accepted for drone-pub and password-file. Relative paths are relative to the file's
// directory, and ~/ is the home directory. The file names files and holds no secret, so
// it may be readable by others; the key, PSK and password files it names are checked as
// when given as flags. Flags given on the command line win over the profile.

// profileKeys are the settings a drone's table may hold, by the flag they stand for.
var profileKeys = []string{"address", "drone-pub", "key", "psk", "user", "password-file", "transport", "timeout",
	"relay", "drone-id", "relay-creds"}

// profilePathKeys hold file paths.
var profilePathKeys = map[string]bool{"drone-pub": true, "key": true, "psk": true, "password-file": true, "relay-creds": true}

// maxDroneName bounds a drone's name.
const maxDroneName = 64

// profileFileName is the profile's name in the configuration directory.
const profileFileName = "config.toml"

// defaultProfilePath is $XDG_CONFIG_HOME/dronelink/config.toml, or
// $HOME/.config/dronelink/config.toml; "" if neither is known.
func defaultProfilePath() string {
	if dir := os.Getenv("XDG_CONFIG_HOME"); filepath.IsAbs(dir) {
		return filepath.Join(dir, "dronelink", profileFileName)
	}
	if home, err := os.UserHomeDir(); err == nil {
		return filepath.Join(home, ".config", "dronelink", profileFileName)
	}
	return ""
}

// droneProfile is one named drone from the profile, with [defaults] applied and paths
// made absolute. Settings holds only what the profile sets, by flag name (address: the
// drone's HOST:PORT).
type droneProfile struct {
	Name     string
	Path     string            // the profile file
	Settings map[string]string // flag name -> value
}

// Where names a setting of this drone in messages: `PATH: drone "alpha": key "psk"`.
func (p *droneProfile) Where(key string) string {
	return fmt.Sprintf("%s: drone %q: key %q", p.Path, p.Name, key)
}

// Address is the drone's HOST:PORT; "" for a drone reached through the relay (drone-id).
func (p *droneProfile) Address() string { return p.Settings["address"] }

// Fill sets each flag in targets (flag name -> variable) that the command line did not
// set and the profile does; sources, if not nil, records for each flag filled where its
// value came from (Where). Flags given on the command line win.
func (p *droneProfile) Fill(fs *pflag.FlagSet, targets map[string]*string, sources map[string]string) {
	for name, v := range targets {
		value, ok := p.Settings[name]
		if !ok || fs.Changed(name) {
			continue
		}
		*v = value
		if sources != nil {
			sources[name] = p.Where(name)
		}
	}
}

// isDroneAddress says whether a --drone value is an address (HOST:PORT, [v6]:PORT) rather
// than the name of a drone in the profile: names never contain a colon.
func isDroneAddress(v string) bool { return strings.Contains(v, ":") }

// profilePath is the profile file this run uses: --config, or the default.
func (a *app) profilePath() string {
	if a.configPath != "" {
		return a.configPath
	}
	return a.defaultProfile
}

// droneProfile resolves a --drone value: nil for a HOST:PORT, else the named drone from
// the profile. An unknown name is a usage error listing the names the profile knows; a
// broken profile a local error naming the file and the key.
//
// Every command that takes --drone resolves it with this (send, listen, gcs; a command
// added later does the same), then takes the settings it needs with Fill.
func (a *app) droneProfile(value string) (*droneProfile, error) {
	if isDroneAddress(value) {
		return nil, nil
	}
	path := a.profilePath()
	if path == "" {
		return nil, usagef("bad --drone %q: want HOST:PORT or the name of a drone in a profile (--config PATH; no home directory for the default)", value)
	}
	drones, err := loadProfile(path, a.warn)
	switch {
	case errors.Is(err, errNoProfile) && a.configPath == "":
		return nil, usagef("bad --drone %q: want HOST:PORT or the name of a drone in the profile (there is no %s)", value, path)
	case errors.Is(err, errNoProfile):
		return nil, localf("cannot read the profile %s (--config): no such file", path)
	case err != nil:
		return nil, err
	}
	if p, ok := drones[value]; ok {
		return p, nil
	}
	names := make([]string, 0, len(drones))
	for n := range drones {
		names = append(names, n)
	}
	slices.Sort(names)
	known := "it names no drone"
	if len(names) > 0 {
		known = "known: " + strings.Join(names, ", ")
	}
	return nil, usagef("bad --drone %q: want HOST:PORT or the name of a drone in %s (%s)", value, path, known)
}

// errNoProfile: the profile file does not exist.
var errNoProfile = errors.New("no profile")

// loadProfile reads and checks the profile at path. An error names the file and, for a
// bad setting, the drone and the key; a missing file is errNoProfile.
func loadProfile(path string, warn func(format string, args ...any)) (map[string]*droneProfile, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, localf("profile %s: %v", path, err)
	}
	fi, err := os.Stat(abs)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, errNoProfile
	}
	if err != nil {
		return nil, localf("cannot read the profile %s: %v", path, pathCause(err))
	}
	if fi.Mode().Perm()&0o022 != 0 {
		// It holds no secret, but whoever may write it may point --drone alpha elsewhere.
		warn("profile %s is writable by group or others (mode %04o): they can redirect your commands; run: chmod go-w %s", path, fi.Mode().Perm(), path)
	}
	var raw map[string]any
	if _, err := toml.DecodeFile(abs, &raw); err != nil {
		var perr toml.ParseError
		if errors.As(err, &perr) {
			msg := strconv.QuoteToGraphic(perr.Message)
			return nil, localf("%s: line %d: %s", path, perr.Position.Line, msg[1:len(msg)-1])
		}
		return nil, localf("%s: %v", path, pathCause(err))
	}
	dir := filepath.Dir(abs)
	var defaults map[string]string
	var tables map[string]any
	for _, key := range sortedKeys(raw) {
		switch key {
		case "defaults":
			t, ok := raw[key].(map[string]any)
			if !ok {
				return nil, localf("%s: key %q: want a table ([defaults])", path, key)
			}
			if defaults, err = profileSettings(t, dir, fmt.Sprintf("%s: [defaults]", path), false); err != nil {
				return nil, err
			}
		case "drone":
			t, ok := raw[key].(map[string]any)
			if !ok {
				return nil, localf("%s: key %q: want tables ([drone.NAME])", path, key)
			}
			tables = t
		default:
			return nil, localf("%s: key %q: unknown setting (want [defaults] and [drone.NAME] tables)", path, key)
		}
	}
	drones := make(map[string]*droneProfile, len(tables))
	for _, name := range sortedKeys(tables) {
		where := fmt.Sprintf("%s: drone %q", path, name)
		if err := checkDroneName(name); err != nil {
			return nil, localf("%s: %v", where, err)
		}
		t, ok := tables[name].(map[string]any)
		if !ok {
			return nil, localf("%s: want a table ([drone.%s])", where, name)
		}
		settings, err := profileSettings(t, dir, where, true)
		if err != nil {
			return nil, err
		}
		for k, v := range defaults {
			if _, ok := settings[k]; !ok {
				settings[k] = v
			}
		}
		switch {
		case settings["address"] != "" && settings["drone-id"] != "":
			return nil, localf("%s: give %q (HOST:PORT) or %q (through the relay), not both", where, "address", "drone-id")
		case settings["drone-id"] != "":
			if settings["relay"] == "" {
				return nil, localf("%s: key %q missing: a drone with a drone-id is reached through the relay (nats://HOST:PORT)", where, "relay")
			}
		case settings["address"] == "":
			return nil, localf("%s: key %q missing: want the drone's HOST:PORT (or drone-id and relay, through the relay)", where, "address")
		}
		drones[name] = &droneProfile{Name: name, Path: path, Settings: settings}
	}
	return drones, nil
}

// checkDroneName accepts names that --drone can tell from an address: 1 to 64 of A-Z a-z
// 0-9 . _ -, not starting with a dot or a dash.
func checkDroneName(name string) error {
	ok := name != "" && len(name) <= maxDroneName && name[0] != '.' && name[0] != '-'
	for _, r := range name {
		ok = ok && (r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-')
	}
	if !ok {
		return fmt.Errorf("bad name: want 1 to %d characters from A-Z a-z 0-9 . _ - (not starting with . or -)", maxDroneName)
	}
	return nil
}

// profileSettings checks one table of the profile and returns its settings by flag name,
// paths made absolute against dir. drone says whether it is a drone's table (which may
// hold the address) or [defaults].
func profileSettings(t map[string]any, dir, where string, drone bool) (map[string]string, error) {
	out := make(map[string]string, len(t))
	for _, raw := range sortedKeys(t) {
		key := strings.ReplaceAll(raw, "_", "-")
		at := fmt.Sprintf("%s: key %q", where, raw)
		if !slices.Contains(profileKeys, key) {
			return nil, localf("%s: unknown setting (want %s)", at, strings.Join(profileKeys, ", "))
		}
		if _, dup := out[key]; dup {
			return nil, localf("%s: given twice (as %s and %s)", at, key, strings.ReplaceAll(key, "-", "_"))
		}
		if (key == "address" || key == "drone-id") && !drone {
			return nil, localf("%s: belongs in a [drone.NAME] table", at)
		}
		value, ok := t[raw].(string)
		if !ok {
			return nil, localf("%s: want a string", at)
		}
		bad := func(want string) error {
			return localf("%s: invalid value %s: %s", at, strconv.QuoteToGraphic(value), want)
		}
		switch {
		case value == "":
			return nil, bad("want a value (leave the key out instead)")
		case key == "address":
			if _, err := splitHostPort(value); err != nil {
				return nil, bad("want HOST:PORT")
			}
		case key == "relay":
			if _, err := relay.ParseURLs(value); err != nil {
				// Never the value itself: it may hold a password or token (ParseURLs says so).
				return nil, localf("%s: invalid value %s: want nats://HOST:PORT[,nats://HOST:PORT...]: %v",
					at, strconv.QuoteToGraphic(relay.RedactURLs(value)), err)
			}
		case key == "drone-id":
			if err := relay.CheckToken("drone id", value); err != nil {
				return nil, bad(err.Error())
			}
		case key == "transport":
			if value != transportNative && value != transportDTLS {
				return nil, bad("want native or dtls")
			}
		case key == "timeout":
			if d, err := time.ParseDuration(value); err != nil || d <= 0 {
				return nil, bad("want a positive duration such as 15s")
			}
		case key == "user":
			if len(value) > link.MaxUserNameSize {
				return nil, bad(fmt.Sprintf("want 1 to %d bytes", link.MaxUserNameSize))
			}
		case profilePathKeys[key]:
			value = expandPath(value, dir)
		}
		out[key] = value
	}
	return out, nil
}

// splitHostPort checks HOST:PORT with both parts present.
func splitHostPort(s string) (string, error) {
	host, port, err := net.SplitHostPort(s)
	if err != nil || host == "" || port == "" {
		return "", errors.New("want HOST:PORT")
	}
	return host, nil
}

// expandPath makes a profile's path absolute: ~/ is the home directory, a relative path is
// relative to dir (the profile's directory).
func expandPath(p, dir string) string {
	if rest, ok := strings.CutPrefix(p, "~/"); ok {
		if home, err := os.UserHomeDir(); err == nil {
			return filepath.Join(home, rest)
		}
	}
	if filepath.IsAbs(p) {
		return filepath.Clean(p)
	}
	return filepath.Join(dir, p)
}

// sortedKeys is m's keys in order, for stable error messages.
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// applyProfile resolves f.drone through the profile, filling the flags the command line
// did not set, and then checks that the required ones are set. It runs first in prepare.
func (a *app) applyProfile(f *linkFlags) error {
	var p *droneProfile
	if f.drone != "" {
		var err error
		if p, err = a.droneProfile(f.drone); err != nil {
			return err
		}
	}
	fs := f.cmd.Flags()
	if p != nil {
		f.profile = p
		f.drone = p.Address()
		p.Fill(fs, map[string]*string{"drone-pub": &f.dronePub, "key": &f.key, "psk": &f.psk, "user": &f.user,
			"transport": &f.transport}, f.sources)
		f.relay.fill(p, fs, f.sources)
		if !fs.Changed("password-file") && !fs.Changed("password-stdin") {
			p.Fill(fs, map[string]*string{"password-file": &f.password.file}, f.sources)
		}
		if t, ok := p.Settings["timeout"]; ok && !fs.Changed("timeout") {
			f.timeout, _ = time.ParseDuration(t) // checked when loaded
		}
	}
	var missing []string
	if f.drone == "" && !f.relay.used() {
		missing = append(missing, strconv.Quote("drone"))
	}
	for _, r := range []struct{ name, value string }{{"psk", f.psk}, {"user", f.user}} {
		if r.value == "" {
			missing = append(missing, strconv.Quote(r.name))
		}
	}
	if len(missing) == 0 {
		return nil
	}
	if p != nil {
		return usagef("required flag(s) %s not set (and not in %s for drone %q)", strings.Join(missing, ", "), p.Path, p.Name)
	}
	if missing[0] == `"drone"` {
		return usagef("required flag(s) %s not set (--drone HOST:PORT|NAME, or --relay URL with --drone-id NAME)", strings.Join(missing, ", "))
	}
	return usagef("required flag(s) %s not set", strings.Join(missing, ", "))
}

// source names where a flag's value came from, for messages: "--psk", or the profile's
// file, drone and key.
func (f *linkFlags) source(name string) string {
	if s, ok := f.sources[name]; ok {
		return s
	}
	return "--" + name
}

// profileHelp documents --drone NAME and the profile in the --help of send, listen, gcs.
const profileHelp = `--drone also takes the name of a drone in your profile, a TOML file
($XDG_CONFIG_HOME/dronelink/config.toml, ~/.config/dronelink/config.toml, or --config PATH)
that gives its address and the other flags; flags on the command line win:

  [defaults]                  # for every drone unless its table says otherwise
  key = "alice.key"           # paths relative to the profile's directory; ~/ works
  psk = "fleet.psk"
  user = "alice"
  password-file = "alice.pw"

  [drone.alpha]
  address = "alpha.local:5000"
  drone-pub = "alpha.pub"
  # transport = "dtls"        # and timeout = "20s"

  [drone.bravo]               # on LTE, through the NATS relay
  relay = "nats://relay.example:4222"
  drone-id = "bravo"
  relay-creds = "alice.creds"
  drone-pub = "bravo.pub"

  dronelink send --drone alpha take off`
