// Package tunnel carries MAVLink between an autopilot on the drone and a ground control
// station at the operator, inside dronelink sessions: the layer above the application
// protocol (package app's frames messages), next to text commands and telemetry.
//
// On the drone, Drone reads the autopilot's datagrams (or mavlink-router's), keeps the
// well-formed frames, packs small ones into one datagram until it would pass the message
// size or the aggregation timer fires, and sends them to every logged-in operator. It
// hands the autopilot what operators send, by role: a pilot's frames all pass, an
// observer's only when read-only (mavlink.ObserverMay). At the operator, GCS hands the
// ground station the drone's frames one per datagram, in order, and sends the ground
// station's frames to the drone at once: frames towards the autopilot are never held back.
//
// The tunnel speaks for nobody: it never builds a frame in a ground station's name towards
// an autopilot. Freshness (frames held back on the radio path are dropped, not delivered
// late) and at-most-once delivery are the application layer's, for every frames message.
package tunnel

import (
	"net/netip"
	"sync/atomic"
	"time"
)

// Direction is which way frames go.
type Direction uint8

// Directions.
const (
	Up   Direction = iota // ground station → autopilot
	Down                  // autopilot → ground station
	NumDirections
)

// String is the direction's metric label.
func (d Direction) String() string {
	switch d {
	case Up:
		return "up"
	case Down:
		return "down"
	}
	return "unknown"
}

// DropReason says why the tunnel dropped a frame. The names are the metric labels.
type DropReason uint8

// Drop reasons.
const (
	DropMalformed   DropReason = iota // not a well-formed frame (length, flags, checksum)
	DropRole                          // an observer's frame that is not read-only
	DropNoPeer                        // no autopilot or ground station address known yet
	DropNoSession                     // the operator's session is not logged in (reconnecting)
	DropSendFailed                    // the socket refused it
	DropStranger                      // a datagram from an address other than the fixed peer's
	DropRateLimited                   // an observer's frames beyond its rate
	NumDropReasons
)

var dropNames = [NumDropReasons]string{"malformed", "role", "no_peer", "no_session", "send_failed", "stranger", "rate_limited"}

// String is the reason's metric label.
func (r DropReason) String() string {
	if r < NumDropReasons {
		return dropNames[r]
	}
	return "unknown"
}

// Hooks receives the tunnel's events, for metrics. Every method must be cheap and must not
// block or allocate.
type Hooks interface {
	// Frame counts one frame carried, of size bytes.
	Frame(dir Direction, size int)
	// Dropped counts one dropped frame (or, for DropMalformed, one damaged run of bytes).
	Dropped(dir Direction, reason DropReason)
	// Datagram observes how many frames one tunnelled datagram carried.
	Datagram(dir Direction, frames int)
	// Delay observes how long a frame waited in the tunnel before it went on.
	Delay(dir Direction, d time.Duration)
}

// NopHooks ignores every event.
type NopHooks struct{}

func (NopHooks) Frame(Direction, int)           {}
func (NopHooks) Dropped(Direction, DropReason)  {}
func (NopHooks) Datagram(Direction, int)        {}
func (NopHooks) Delay(Direction, time.Duration) {}

// Counters is a Hooks that counts with atomics: for tests and embedders.
type Counters struct {
	Frames    [NumDirections]atomic.Uint64
	Bytes     [NumDirections]atomic.Uint64
	Drops     [NumDirections][NumDropReasons]atomic.Uint64
	Datagrams [NumDirections]atomic.Uint64
}

// Frame implements Hooks.
func (c *Counters) Frame(d Direction, size int) {
	if d < NumDirections {
		c.Frames[d].Add(1)
		c.Bytes[d].Add(uint64(size))
	}
}

// Dropped implements Hooks.
func (c *Counters) Dropped(d Direction, r DropReason) {
	if d < NumDirections && r < NumDropReasons {
		c.Drops[d][r].Add(1)
	}
}

// Datagram implements Hooks.
func (c *Counters) Datagram(d Direction, _ int) {
	if d < NumDirections {
		c.Datagrams[d].Add(1)
	}
}

// Delay implements Hooks.
func (*Counters) Delay(Direction, time.Duration) {}

// Drop returns the count of one reason in one direction.
func (c *Counters) Drop(d Direction, r DropReason) uint64 { return c.Drops[d][r].Load() }

// peerAddr is an address that one goroutine sets and others read.
type peerAddr struct {
	p atomic.Pointer[netip.AddrPort]
}

func (a *peerAddr) load() (netip.AddrPort, bool) {
	if p := a.p.Load(); p != nil {
		return *p, true
	}
	return netip.AddrPort{}, false
}

// store records addr and reports whether it changed; it allocates only then.
func (a *peerAddr) store(addr netip.AddrPort) (old netip.AddrPort, changed bool) {
	p := a.p.Load()
	if p != nil && *p == addr {
		return addr, false
	}
	if p != nil {
		old = *p
	}
	a.p.Store(&addr)
	return old, true
}

// unmap keeps IPv4 addresses in their 4-byte form, as the sockets report them.
func unmap(a netip.AddrPort) netip.AddrPort { return netip.AddrPortFrom(a.Addr().Unmap(), a.Port()) }
