package operator

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/dronelink/dronelink/pkg/relay"
)

// relayFlags reach a drone through the NATS relay instead of --drone HOST:PORT: the drone
// connects out to NATS (dronelinkd --relay URL --drone-id NAME), so it needs no address an
// operator can reach (LTE behind carrier-grade NAT).
type relayFlags struct {
	urls, droneID, creds string
}

// relayHelp documents the relay in the --help of send, listen, gcs and pin.
const relayHelp = `A drone that no UDP datagram can reach (LTE behind carrier-grade NAT) is reached
through a NATS relay that both ends connect out to: give --relay nats://HOST:PORT (a
comma-separated list for a cluster) and --drone-id NAME (the drone's dronelinkd
--drone-id) instead of --drone HOST:PORT, and the NATS credentials in --relay-creds, a
TOML file of mode 0600:

  nkey_seed = "SUA..."        # or: user = "alice" with password = "...", or: token = "..."
  name = "alice"              # the name the server's permissions give your downlinks

The relay carries the same sealed datagrams: the drone still checks your key, the PSK
and your password, and you still pin the drone's key. The relay can delay or drop them,
nothing more.`

func (r *relayFlags) register(fs *pflag.FlagSet) {
	fs.StringVar(&r.urls, "relay", "", "reach the drone through the NATS relay at `URL[,URL...]` (nats://HOST:PORT or tls://HOST:PORT), with --drone-id, instead of --drone HOST:PORT")
	fs.StringVar(&r.droneID, "drone-id", "", "the drone's `NAME` on the relay (its dronelinkd --drone-id)")
	fs.StringVar(&r.creds, "relay-creds", "", "NATS credentials file `PATH` (TOML, mode 0600: nkey_seed, user and password, or token; and name)")
}

// fill takes the relay settings the command line did not give from a profile's drone.
func (r *relayFlags) fill(p *droneProfile, fs *pflag.FlagSet, sources map[string]string) {
	p.Fill(fs, map[string]*string{"relay": &r.urls, "drone-id": &r.droneID, "relay-creds": &r.creds}, sources)
}

// used says whether the drone is to be reached through the relay.
func (r *relayFlags) used() bool { return r.urls != "" || r.droneID != "" }

// config checks the relay flags against --drone's value (after the profile) and loads the
// credentials: nil when the relay is not used. source names where a flag's value came from.
func (r *relayFlags) config(drone string, source func(string) string) (*relay.Config, error) {
	if !r.used() {
		if r.creds != "" {
			return nil, usagef("%s needs --relay URL and --drone-id NAME", source("relay-creds"))
		}
		return nil, nil
	}
	switch {
	case r.urls == "":
		return nil, usagef("%s needs --relay URL (the NATS servers)", source("drone-id"))
	case r.droneID == "":
		return nil, usagef("%s needs --drone-id NAME (the drone's id on the relay)", source("relay"))
	case drone != "":
		return nil, usagef("give --drone HOST:PORT, or --relay URL with --drone-id NAME, not both")
	}
	urls, err := relay.ParseURLs(r.urls)
	if err != nil {
		return nil, usagef("bad %s: %v", source("relay"), err)
	}
	if err := relay.CheckToken("drone id", r.droneID); err != nil {
		return nil, usagef("bad %s: %v", source("drone-id"), err)
	}
	cfg := &relay.Config{URLs: urls, DroneID: r.droneID}
	if r.creds != "" {
		if cfg.Creds, err = relay.LoadCreds(r.creds); err != nil {
			if src := source("relay-creds"); src != "--relay-creds" {
				return nil, localf("%v (from %s)", err, src)
			}
			return nil, localf("%v", err)
		}
	}
	return cfg, nil
}

// relayName is how messages name a drone reached through the relay.
func relayName(cfg *relay.Config) string {
	return fmt.Sprintf("%s via the relay %s", cfg.DroneID, strings.Join(cfg.URLs, ","))
}

// dialRelay connects to the relay for cfg's drone within timeout (at most the relay's
// default per server), logging the relay's state changes (lost, back) to standard error.
func (a *app) dialRelay(cfg relay.Config, timeout time.Duration) (*relay.OperatorConn, error) {
	cfg.ConnectTimeout = min(timeout, relay.DefaultConnectTimeout)
	cfg.Logger = slog.New(slog.NewTextHandler(a.stderr, &slog.HandlerOptions{
		Level: slog.LevelWarn,
		ReplaceAttr: func(_ []string, attr slog.Attr) slog.Attr {
			if attr.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return attr
		},
	}))
	conn, err := relay.Dial(cfg)
	switch {
	case errors.Is(err, relay.ErrCredentials), errors.Is(err, relay.ErrPermission):
		return nil, failf(ExitRefused, "%v", err)
	case err != nil:
		return nil, failf(ExitNoAnswer, "%v", err)
	}
	return conn, nil
}
