package link

import (
	"math"
	"sync/atomic"
	"time"

	"github.com/dronelink/dronelink/pkg/app"
)

// dropReasonFor maps a protocol error to its drop reason.
func dropReasonFor(err error) DropReason {
	switch err {
	case ErrBadMAC:
		return DropBadMAC
	case ErrRateLimited:
		return DropRateLimited
	case ErrStale:
		return DropStale
	case ErrUnknownOperatorKey:
		return DropUnknownKey
	case ErrWrongDroneKey:
		return DropWrongDroneKey
	case ErrBadSignature:
		return DropBadSignature
	case ErrSessionLimit:
		return DropSessionLimit
	case ErrUnknownSession:
		return DropUnknownSession
	case ErrDecrypt:
		return DropDecrypt
	case ErrReplay:
		return DropReplay
	case ErrSessionExpired:
		return DropExpired
	}
	return DropMalformed
}

// HandshakeResult labels handshake outcomes.
type HandshakeResult uint8

// Handshake results.
const (
	HandshakeOK      HandshakeResult = iota // session established
	HandshakeRefused                        // the peer refused (stale, unknown key, ...)
	HandshakeFailed                         // this side refused the peer's message
	NumHandshakeResults
)

// String is the result's metric label.
func (r HandshakeResult) String() string {
	switch r {
	case HandshakeOK:
		return "ok"
	case HandshakeRefused:
		return "refused"
	case HandshakeFailed:
		return "failed"
	}
	return "unknown"
}

// Hooks receives an endpoint's events, for metrics: the application layer's (app.Hooks)
// and the native channel's. Every method must be cheap, must not block and must not
// allocate: they run on the per-packet path. Embed NopHooks to implement only some of them.
type Hooks interface {
	app.Hooks
	// PacketSent counts a datagram written to the socket.
	PacketSent(kind PacketKind, size int)
	// Handshake counts a completed handshake attempt by result.
	Handshake(result HandshakeResult)
	// SessionsActive reports the number of live sessions after a change.
	SessionsActive(n int)
	// Rekeyed counts a session replaced by a newer one with the same peer.
	Rekeyed()
	// HandshakeWork counts an expensive handshake operation (RSA or X25519) about to run.
	HandshakeWork(w HandshakeWork)
}

// NopHooks ignores every event.
type NopHooks struct{ app.NopHooks }

func (NopHooks) PacketSent(PacketKind, int)  {}
func (NopHooks) Handshake(HandshakeResult)   {}
func (NopHooks) SessionsActive(int)          {}
func (NopHooks) Rekeyed()                    {}
func (NopHooks) HandshakeWork(HandshakeWork) {}

// Counters is a Hooks that counts every event with atomics: for tests, and for embedders
// that want numbers without Prometheus.
type Counters struct {
	Received   [NumPacketKinds]atomic.Uint64
	Sent       [NumPacketKinds]atomic.Uint64
	Drops      [NumDropReasons]atomic.Uint64
	Handshakes [NumHandshakeResults]atomic.Uint64
	Logins     [maxLoginStatus + 1]atomic.Uint64
	Commands   [maxAckStatus + 1]atomic.Uint64
	RoundTrips atomic.Uint64
	Sessions   atomic.Int64
	Rekeys     atomic.Uint64
	LinkDowns  atomic.Uint64
	LinkUps    atomic.Uint64
	Work       [NumHandshakeWork]atomic.Uint64
	Estimates  atomic.Uint64 // LinkEstimate calls
	SRTT       atomic.Int64  // the last estimate's smoothed round trip, nanoseconds
	Loss       atomic.Uint64 // the last estimate's loss, math.Float64bits
}

// PacketReceived implements Hooks.
func (c *Counters) PacketReceived(k PacketKind, _ int) {
	if k < NumPacketKinds {
		c.Received[k].Add(1)
	}
}

// PacketSent implements Hooks.
func (c *Counters) PacketSent(k PacketKind, _ int) {
	if k < NumPacketKinds {
		c.Sent[k].Add(1)
	}
}

// Dropped implements Hooks.
func (c *Counters) Dropped(r DropReason) {
	if r < NumDropReasons {
		c.Drops[r].Add(1)
	}
}

// Handshake implements Hooks.
func (c *Counters) Handshake(r HandshakeResult) {
	if r < NumHandshakeResults {
		c.Handshakes[r].Add(1)
	}
}

// Login implements Hooks.
func (c *Counters) Login(s LoginStatus) {
	if s <= maxLoginStatus {
		c.Logins[s].Add(1)
	}
}

// Command implements Hooks.
func (c *Counters) Command(s AckStatus) {
	if s <= maxAckStatus {
		c.Commands[s].Add(1)
	}
}

// CommandRoundTrip implements Hooks.
func (c *Counters) CommandRoundTrip(time.Duration) { c.RoundTrips.Add(1) }

// SessionsActive implements Hooks.
func (c *Counters) SessionsActive(n int) { c.Sessions.Store(int64(n)) }

// Rekeyed implements Hooks.
func (c *Counters) Rekeyed() { c.Rekeys.Add(1) }

// LinkState implements Hooks.
func (c *Counters) LinkState(up bool) {
	if up {
		c.LinkUps.Add(1)
	} else {
		c.LinkDowns.Add(1)
	}
}

// LinkEstimate implements Hooks.
func (c *Counters) LinkEstimate(e app.LinkEstimate) {
	c.Estimates.Add(1)
	c.SRTT.Store(int64(e.SRTT))
	c.Loss.Store(math.Float64bits(e.Loss))
}

// HandshakeWork implements Hooks.
func (c *Counters) HandshakeWork(w HandshakeWork) {
	if w < NumHandshakeWork {
		c.Work[w].Add(1)
	}
}

// Drop returns the count for one reason.
func (c *Counters) Drop(r DropReason) uint64 { return c.Drops[r].Load() }
