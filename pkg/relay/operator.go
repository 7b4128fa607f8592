package relay

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync/atomic"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nuid"

	"github.com/dronelink/dronelink/pkg/link"
)

// DroneAddr is the address an OperatorConn gives its drone: the link.Client's
// ClientConfig.Drone. It is a unique-local IPv6 address that no network routes; the conn
// has only the one peer.
var DroneAddr = netip.MustParseAddrPort("[fd64:6c6b:7265::1]:1")

// ErrNoDrone is wrapped (with link.ErrNoListener) by the error an OperatorConn reports when
// NATS answers that nobody subscribes to the drone's uplink subject.
var ErrNoDrone = errors.New("no drone serves this id on the relay")

// OperatorConn is an operator's end of the relay: a link.PacketConn whose one peer,
// DroneAddr, is the drone of Config.DroneID. Safe for concurrent use; ReadFrom is meant
// for one reader.
type OperatorConn struct {
	*natsConn
	uplink   string
	downlink string
	report   atomic.Pointer[func(error)]
}

var _ link.UnreachableReporter = (*OperatorConn)(nil)

// Dial connects an operator to the NATS servers of cfg and subscribes to a downlink
// subject of its own: DownlinkSubject(cfg.DroneID, cfg.Creds.OperatorName(), a random
// nonce). It fails on an unreachable server, refused credentials or a refused
// subscription, each with a one-line error.
func Dial(cfg Config) (*OperatorConn, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	cfg.KeepTrying = false
	name := cfg.Creds.OperatorName()
	if cfg.Name == "" {
		cfg.Name = "dronelink " + name
	}
	o := &OperatorConn{
		uplink:   UplinkSubject(cfg.DroneID),
		downlink: DownlinkSubject(cfg.DroneID, name, nuid.Next()),
	}
	if o.natsConn, err = dial(cfg); err != nil {
		return nil, err
	}
	if err = o.subscribe(o.downlink); err != nil {
		o.close()
		return nil, err
	}
	go o.watchDrops()
	return o, nil
}

// Downlink is the subject the conn hears the drone on.
func (o *OperatorConn) Downlink() string { return o.downlink }

// ReadFrom implements link.PacketConn: the drone's next datagram, from DroneAddr.
func (o *OperatorConn) ReadFrom(b []byte) (int, netip.AddrPort, error) {
	for {
		msg, err := o.nextMsg()
		if errors.Is(err, nats.ErrNoResponders) {
			o.cfg.Hooks.Dropped(DropNoResponders)
			if report := o.report.Load(); report != nil {
				(*report)(&noDroneError{droneID: o.cfg.DroneID, servers: strings.Join(o.cfg.URLs, ",")})
			}
			continue
		}
		if err != nil {
			return 0, netip.AddrPort{}, err
		}
		switch {
		case len(msg.Data) == 0:
			o.cfg.Hooks.Dropped(DropEmpty)
		case len(msg.Data) > link.MaxDatagramSize:
			o.cfg.Hooks.Dropped(DropOversize)
		default:
			return copy(b, msg.Data), DroneAddr, nil
		}
	}
}

// WriteTo implements link.PacketConn: it publishes b on the drone's uplink subject, with
// the conn's downlink subject to answer on.
func (o *OperatorConn) WriteTo(b []byte, addr netip.AddrPort) error {
	if addr != DroneAddr {
		return fmt.Errorf("relay: %s is not the drone's address %s", addr, DroneAddr)
	}
	if err := o.nc().PublishRequest(o.uplink, o.downlink, b); err != nil {
		o.cfg.Hooks.Dropped(DropPublish)
		if o.closed.Load() {
			return errClosed
		}
		return fmt.Errorf("relay: publish: %w", err)
	}
	return nil
}

// ReportUnreachable implements link.UnreachableReporter: NATS's "no responders" answer to
// a datagram means that no drone subscribes to the uplink subject.
func (o *OperatorConn) ReportUnreachable(peer netip.AddrPort, report func(err error)) error {
	if peer != DroneAddr {
		return fmt.Errorf("relay: %s is not the drone's address %s", peer, DroneAddr)
	}
	o.report.Store(&report)
	return nil
}

// LocalAddr implements link.PacketConn: the unspecified IPv6 address; the conn's own
// address on the relay is its downlink subject.
func (o *OperatorConn) LocalAddr() netip.AddrPort {
	return netip.AddrPortFrom(netip.IPv6Unspecified(), 0)
}

// Close implements link.PacketConn. Safe to call more than once.
func (o *OperatorConn) Close() error {
	o.close()
	return nil
}

// noDroneError is the report of a "no responders" answer.
type noDroneError struct{ droneID, servers string }

func (e *noDroneError) Error() string {
	return fmt.Sprintf("no drone serves id %q on the relay %s (NATS: no responders on %s)", e.droneID, e.servers, UplinkSubject(e.droneID))
}

// Is makes the error both ErrNoDrone and link.ErrNoListener.
func (e *noDroneError) Is(target error) bool {
	return target == ErrNoDrone || target == link.ErrNoListener
}
