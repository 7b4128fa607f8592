package daemon

import (
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"

	"github.com/dronelink/dronelink/pkg/relay"
)

// checkAddresses binds, for --check-config, every address the daemon would bind: the
// operators' UDP socket (--listen), the local telemetry socket (--telemetry-in), the
// MAVLink socket (--mavlink-listen) and the metrics endpoint (TCP, --metrics). It holds
// them all until the last is bound, so two settings on one address are caught too, and
// then releases them. The first that cannot be bound is the error: one line naming the
// setting (the flag, or the config file and its key) and the address. --forward and
// --mavlink-to bind nothing of their own (an ephemeral port each).
func (c *Config) checkAddresses() error {
	var held []io.Closer
	defer func() {
		for _, h := range held {
			h.Close()
		}
	}()
	for _, a := range []struct{ name, network, addr string }{
		{"listen", "udp", c.Listen},
		{"telemetry-in", "udp", c.TelemetryIn},
		{"mavlink-listen", "udp", c.MavlinkListen},
		{"metrics", "tcp", c.Metrics},
	} {
		if a.addr == "" {
			continue
		}
		var h io.Closer
		var err error
		if a.network == "tcp" {
			var addr string
			if addr, _, err = metricsAddress(a.addr); err == nil {
				a.addr = addr
				h, err = net.Listen("tcp", addr)
			}
		} else {
			h, err = listenUDP(a.addr)
		}
		if err != nil {
			return &bindError{setting: c.setting(a.name), network: a.network, addr: a.addr, err: err}
		}
		held = append(held, h)
	}
	return nil
}

// from names where a setting whose file could not be used was set, when that was the
// config file: `dronelinkd.toml: key "key": private key /etc/drone.key: ...`. An error
// about a flag's file already names the file the user typed and is returned as it is.
func (c *Config) from(name string, err error) error {
	if !c.fromFile[name] {
		return err
	}
	return fmt.Errorf("%s: %w", c.setting(name), err)
}

// bindError is an address the daemon cannot bind.
type bindError struct {
	setting, network, addr string
	err                    error
}

func (e *bindError) Error() string {
	network := "UDP"
	if e.network == "tcp" {
		network = "TCP"
	}
	msg := fmt.Sprintf("%s: cannot bind %s %s: %v", e.setting, network, e.addr, unwrapSyscall(e.err))
	if errors.Is(e.err, syscall.EADDRINUSE) {
		msg += " (is dronelinkd already running?)"
	}
	return msg
}

func (e *bindError) Unwrap() error { return e.err }

// checkRelay is --check-config's check of --relay: it connects to the relay and subscribes
// to the drone's uplink subject as the daemon would, then disconnects. Credentials or
// permissions the relay refuses are an error; a relay that cannot be reached now is only
// reported, since the running daemon keeps trying (the LTE link may come up later).
func (c *Config) checkRelay(out io.Writer, creds *relay.Creds) error {
	if c.Relay == "" {
		return nil
	}
	conn, err := relay.Listen(relay.Config{URLs: c.relayURLs, DroneID: c.DroneID, Creds: creds})
	switch {
	case errors.Is(err, relay.ErrCredentials), errors.Is(err, relay.ErrPermission):
		return err
	case err != nil:
		fmt.Fprintf(out, "relay not reachable now (%v); dronelinkd keeps trying while it runs\n", err)
		return nil
	}
	st := conn.State()
	conn.Close()
	fmt.Fprintf(out, "relay ok: %s accepts the credentials (%s) and drone id %s\n", st.Server, creds.Method(), c.DroneID)
	return nil
}
