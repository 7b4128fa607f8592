package daemon

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
	"github.com/spf13/pflag"

	"github.com/dronelink/dronelink/pkg/relay"
)

// DefaultListen is where the daemon listens unless told otherwise: every interface, UDP
// port 5000, as the prototype did.
const DefaultListen = "0.0.0.0:5000"

// DefaultLoginWorkers is how many password checks the daemon runs at once unless told
// otherwise: one, so that logins take at most one argon2id memory cost (64 MiB by default)
// at a time, and a 512 MB companion computer keeps its memory for everything else. More
// workers answer a burst of logins sooner, for that much more memory each.
const DefaultLoginWorkers = 1

// MaxLoginWorkers bounds --login-workers.
const MaxLoginWorkers = 16

// Config is everything the daemon is told, from flags and the TOML config file.
type Config struct {
	Transport      string
	Listen         string
	Relay          string
	DroneID        string
	RelayCreds     string
	KeyPath        string
	PSKPath        string
	UsersPath      string
	Forward        string
	ForwardWait    time.Duration
	TelemetryIn    string
	MavlinkListen  string
	MavlinkTo      string
	MavlinkAgg     time.Duration
	MavlinkMaxAge  time.Duration
	Metrics        string
	Control        string
	LogFormat      string
	LogLevel       string
	ReplayWindow   int
	MaxSessions    int
	LoginWorkers   int
	ReloadInterval time.Duration
	CheckConfig    bool
	ConfigPath     string

	// fromFile holds the settings (flag names) whose value came from the config file, so
	// that an error about one names the file and the key instead of a flag.
	fromFile map[string]bool
	// listenGiven: --listen was given (flag or file). With --relay, the daemon opens a UDP
	// socket only then: a drone on LTE has no use for one.
	listenGiven bool
	// relayURLs are --relay's URLs, parsed by validate.
	relayURLs []string
}

// configError is a bad setting. One that came from the config file is a configuration
// error (exit 1); one given as a flag a usage error (exit 2).
type configError struct {
	msg    string
	inFile bool
}

func (e *configError) Error() string { return e.msg }

// isUsageError says whether err is about the command line rather than the config file.
func isUsageError(err error) bool {
	ce, ok := errors.AsType[*configError](err)
	return !ok || !ce.inFile
}

// setting names a setting where it was set: "--listen", or `dronelinkd.toml: key "listen"`.
func (c *Config) setting(name string) string {
	if c.fromFile[name] {
		return fmt.Sprintf("%s: key %q", c.ConfigPath, name)
	}
	return "--" + name
}

// invalid is the error for a bad value of a setting: `--listen "x": want HOST:PORT` for a
// flag, `dronelinkd.toml: key "listen": invalid address "x": want HOST:PORT` for a key of
// the config file. value is shown as given (strings quoted); noun is "address" or "value".
func (c *Config) invalid(name, noun, value, want string) error {
	if c.fromFile[name] {
		return &configError{msg: fmt.Sprintf("%s: invalid %s %s: %s", c.setting(name), noun, value, want), inFile: true}
	}
	return &configError{msg: fmt.Sprintf("--%s %s: %s", name, value, want)}
}

// fileError is an error about the config file itself or one of its keys (exit 1).
func fileError(format string, args ...any) error {
	return &configError{msg: fmt.Sprintf(format, args...), inFile: true}
}

// bindFlags declares every flag on fs, writing into c.
func (c *Config) bindFlags(fs *pflag.FlagSet) {
	fs.StringVar(&c.Transport, "transport", TransportNative, "link protocol `native|dtls`: native is the dronelink protocol, dtls is DTLS 1.2 with the fleet PSK (for OpenSSL or mbedTLS peers; needs no --key)")
	fs.StringVar(&c.Listen, "listen", DefaultListen, "UDP `HOST:PORT` to serve operators on (with --relay: only when given)")
	fs.StringVar(&c.Relay, "relay", "", "also serve operators through the NATS relay at `URL[,URL...]` (nats://HOST:PORT or tls://HOST:PORT; the servers of a cluster), connecting out: for a drone no operator can reach over UDP (LTE behind carrier-grade NAT); needs --drone-id")
	fs.StringVar(&c.DroneID, "drone-id", "", "with --relay: this drone's `NAME` on the relay (letters, digits, - and _), which operators give as --drone-id")
	fs.StringVar(&c.RelayCreds, "relay-creds", "", "with --relay: NATS credentials file `PATH` (TOML, mode 0600: nkey_seed, user and password, or token)")
	fs.StringVar(&c.KeyPath, "key", "", "drone private key `PATH` (PEM, PKCS#8, mode 0600: refused if group or others can access it; not used with --transport dtls)")
	fs.StringVar(&c.PSKPath, "psk", "", "fleet pre-shared key `PATH` (64 hex digits, mode 0600: refused if group or others can access it)")
	fs.StringVar(&c.UsersPath, "users", "", "user database `PATH` (reloaded on SIGHUP and when it changes)")
	fs.StringVar(&c.Forward, "forward", "", "hand each executed command's payload as one UDP datagram to `HOST:PORT`; the command is acknowledged \"ok\" only if the kernel took it and reported no refusal (ICMP unreachable) within --forward-wait, else \"failed\"")
	fs.DurationVar(&c.ForwardWait, "forward-wait", DefaultForwardWait, "with --forward: how long each forward waits for the kernel to report the datagram refused before the command counts as executed (0 to 1s; 0: only a refusal that has already arrived)")
	fs.StringVar(&c.TelemetryIn, "telemetry-in", "", "read telemetry datagrams from local applications on UDP `HOST:PORT`")
	fs.StringVar(&c.MavlinkListen, "mavlink-listen", "", "MAVLink tunnel: bind UDP `HOST:PORT` for the autopilot or mavlink-router; frames for it go to the most recent sender")
	fs.StringVar(&c.MavlinkTo, "mavlink-to", "", "MAVLink tunnel: the autopilot's fixed UDP `HOST:PORT`; frames go there and only its datagrams are taken")
	fs.DurationVar(&c.MavlinkAgg, "mavlink-agg", 20*time.Millisecond, "MAVLink tunnel: longest an autopilot frame waits to share a datagram with later ones (0: never)")
	fs.DurationVar(&c.MavlinkMaxAge, "mavlink-max-age", time.Second, "MAVLink tunnel: frames older than this on arrival are dropped, both ways")
	fs.StringVar(&c.Metrics, "metrics", "", "serve Prometheus metrics at http://`HOST:PORT`/metrics (an empty HOST means 127.0.0.1)")
	fs.StringVar(&c.Control, "control", defaultControl(), controlHelp)
	fs.StringVar(&c.LogFormat, "log-format", "text", "log format on standard error: text or json")
	fs.StringVar(&c.LogLevel, "log-level", "info", "log level: debug, info, warn or error")
	fs.IntVar(&c.ReplayWindow, "replay-window", 0, "replay window in packets (0: 2048)")
	fs.IntVar(&c.MaxSessions, "max-sessions", 0, "most concurrent sessions (0: 1024)")
	fs.IntVar(&c.LoginWorkers, "login-workers", DefaultLoginWorkers, "password checks (argon2id) run at once, `N` from 1 to 16; each takes the memory its hash was made with (64 MiB by default), so the daemon's resident memory peaks near 13 MB + N x that; more logins wait in a queue of 16")
	fs.DurationVar(&c.ReloadInterval, "reload-interval", time.Second, "how often to look for changes of the user database")
	fs.BoolVar(&c.CheckConfig, "check-config", false, "check the configuration, the files it names and that every address it would bind is free (--listen, --telemetry-in, --mavlink-listen, --metrics), and that the relay (--relay) takes the credentials and drone id, then exit")
	fs.StringVar(&c.ConfigPath, "config", "", "TOML config `PATH`; its keys are the flag names, flags win")
}

// applyFile sets, from the TOML file at path, every flag the command line did not set, and
// remembers which settings came from the file. Keys are the long flag names; an unknown key
// is an error, so a typo is not ignored. Every error names the file (and the key).
func (c *Config) applyFile(fs *pflag.FlagSet, path string) error {
	c.ConfigPath = path
	var values map[string]any
	md, err := toml.DecodeFile(path, &values)
	if err != nil {
		var perr toml.ParseError
		if errors.As(err, &perr) {
			// The parser quotes the offending input, which may hold a newline: keep the
			// error on one line.
			msg := strconv.QuoteToGraphic(perr.Message)
			return fileError("%s: line %d: %s", path, perr.Position.Line, msg[1:len(msg)-1])
		}
		return fileError("config %s: %v", path, unwrapPathError(err))
	}
	for _, key := range md.Keys() {
		name := key.String()
		if name == "config" || name == "check-config" {
			return fileError("%s: key %q: cannot be set in the config file", path, name)
		}
		f := fs.Lookup(name)
		if f == nil {
			return fileError("%s: key %q: unknown setting", path, name)
		}
		if f.Changed {
			continue // the command line wins
		}
		var text string
		switch v := values[name].(type) {
		case string:
			text = v
		case int64, bool, float64:
			text = fmt.Sprint(v)
		default:
			return fileError("%s: key %q: invalid value: want a string, number or boolean", path, name)
		}
		if c.fromFile == nil {
			c.fromFile = map[string]bool{}
		}
		c.fromFile[name] = true
		if err := f.Value.Set(text); err != nil {
			return c.invalid(name, "value", quoteIfString(values[name]), wantType(f.Value.Type()))
		}
	}
	return nil
}

// quoteIfString shows a TOML value as written: strings quoted, numbers and booleans bare.
func quoteIfString(v any) string {
	if s, ok := v.(string); ok {
		return strconv.Quote(s)
	}
	return fmt.Sprint(v)
}

// wantType says what a flag of a pflag type takes.
func wantType(typ string) string {
	switch typ {
	case "int":
		return "want an integer"
	case "duration":
		return "want a duration such as 500ms or 2s"
	case "bool":
		return "want true or false"
	default:
		return "want a " + typ
	}
}

// unwrapPathError drops the Go-specific "open" prefix of a *PathError for a one-line message.
func unwrapPathError(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// Transports.
const (
	TransportNative = "native" // the dronelink protocol (pkg/link)
	TransportDTLS   = "dtls"   // DTLS 1.2 PSK (pkg/dtlslink)
)

// validate checks the values that need no file access. Each error names the setting
// where it was set: the flag, or the config file and its key (see configError).
func (c *Config) validate() error {
	if c.Transport != TransportNative && c.Transport != TransportDTLS {
		return c.invalid("transport", "value", strconv.Quote(c.Transport), "want native or dtls")
	}
	required := []struct{ name, value string }{{"psk", c.PSKPath}, {"users", c.UsersPath}}
	if c.Transport == TransportNative {
		// DTLS-PSK has no drone key: the fleet PSK alone authenticates the drone.
		required = append([]struct{ name, value string }{{"key", c.KeyPath}}, required...)
	}
	for _, r := range required {
		if r.value == "" {
			if c.ConfigPath != "" {
				return fmt.Errorf("missing --%s (or key %q in %s)", r.name, r.name, c.ConfigPath)
			}
			return fmt.Errorf("missing --%s", r.name)
		}
	}
	for _, a := range []struct {
		name, value string
		optional    bool
	}{{"listen", c.Listen, c.Relay != ""}, {"forward", c.Forward, true}, {"telemetry-in", c.TelemetryIn, true}, {"metrics", c.Metrics, true},
		{"mavlink-listen", c.MavlinkListen, true}, {"mavlink-to", c.MavlinkTo, true}} {
		if a.value == "" && a.optional {
			continue
		}
		if _, err := netip.ParseAddrPort(a.value); err != nil {
			if !strings.Contains(a.value, ":") {
				return c.invalid(a.name, "address", strconv.Quote(a.value), "want HOST:PORT")
			}
			// Host names are resolved when the socket opens.
		}
	}
	if c.Relay == "" {
		for _, name := range []string{"drone-id", "relay-creds"} {
			if (name == "drone-id" && c.DroneID != "") || (name == "relay-creds" && c.RelayCreds != "") {
				return &configError{msg: fmt.Sprintf("%s needs --relay URL", c.setting(name)), inFile: c.fromFile[name]}
			}
		}
	} else {
		urls, err := relay.ParseURLs(c.Relay)
		if err != nil {
			// Never the value itself: it may hold a password or token (ParseURLs says so).
			return c.invalid("relay", "value", strconv.Quote(relay.RedactURLs(c.Relay)), err.Error())
		}
		c.relayURLs = urls
		if c.DroneID == "" {
			return &configError{msg: fmt.Sprintf("%s needs --drone-id NAME (this drone's id on the relay)", c.setting("relay")), inFile: c.fromFile["relay"]}
		}
		if err := relay.CheckToken("drone id", c.DroneID); err != nil {
			return c.invalid("drone-id", "value", strconv.Quote(c.DroneID), "want 1 to 64 letters, digits, - and _")
		}
		if c.Transport != TransportNative {
			return &configError{msg: fmt.Sprintf("%s carries the native protocol only: it cannot be used with --transport %s", c.setting("relay"), c.Transport),
				inFile: c.fromFile["relay"] || c.fromFile["transport"]}
		}
		if !c.listenGiven {
			c.Listen = ""
		}
	}
	if c.MavlinkListen != "" && c.MavlinkTo != "" {
		err := &configError{msg: fmt.Sprintf("give only one of %s and %s", c.setting("mavlink-listen"), c.setting("mavlink-to")),
			inFile: c.fromFile["mavlink-listen"] || c.fromFile["mavlink-to"]}
		return err
	}
	if c.ForwardWait < 0 || c.ForwardWait > time.Second {
		return c.invalid("forward-wait", "value", c.ForwardWait.String(), "want 0 to 1s")
	}
	if c.MavlinkAgg < 0 || c.MavlinkAgg > time.Second {
		return c.invalid("mavlink-agg", "value", c.MavlinkAgg.String(), "want 0 to 1s")
	}
	if c.MavlinkMaxAge <= 0 || c.MavlinkMaxAge > time.Minute {
		return c.invalid("mavlink-max-age", "value", c.MavlinkMaxAge.String(), "want more than 0 and at most 1m")
	}
	if c.LogFormat != "text" && c.LogFormat != "json" {
		return c.invalid("log-format", "value", strconv.Quote(c.LogFormat), "want text or json")
	}
	if _, err := parseLevel(c.LogLevel); err != nil {
		return c.invalid("log-level", "value", strconv.Quote(c.LogLevel), "want debug, info, warn or error")
	}
	if c.ReplayWindow < 0 || c.ReplayWindow > 1<<16 {
		return c.invalid("replay-window", "value", strconv.Itoa(c.ReplayWindow), "want 0 to 65536")
	}
	if c.MaxSessions < 0 || c.MaxSessions > 60000 {
		return c.invalid("max-sessions", "value", strconv.Itoa(c.MaxSessions), "want 0 to 60000")
	}
	if c.LoginWorkers < 1 || c.LoginWorkers > MaxLoginWorkers {
		return c.invalid("login-workers", "value", strconv.Itoa(c.LoginWorkers), "want 1 to 16")
	}
	if c.ReloadInterval < 100*time.Millisecond {
		return c.invalid("reload-interval", "value", c.ReloadInterval.String(), "want at least 100ms")
	}
	return nil
}

func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return 0, fmt.Errorf("--log-level %q: want debug, info, warn or error", s)
	}
	return l, nil
}
