package relay

// DropReason says why the relay dropped a datagram before or instead of the link layer.
type DropReason uint8

// Reasons a datagram is dropped by the relay.
const (
	// DropBadReply: an uplink message without a valid downlink subject of this drone as its
	// reply subject; there would be nowhere to answer.
	DropBadReply DropReason = iota
	// DropOversize: a message larger than the largest dronelink datagram.
	DropOversize
	// DropEmpty: a message without a payload.
	DropEmpty
	// DropUnknownPeer: a datagram for an address whose downlink subject is no longer
	// remembered (the peer table was full and it was the least recently heard).
	DropUnknownPeer
	// DropPublish: the NATS client refused the datagram (closed, or disconnected with its
	// reconnect buffer full).
	DropPublish
	// DropSlowConsumer: NATS dropped messages for this end because it read them too slowly.
	DropSlowConsumer
	// DropPermission: the NATS server refused a publish or subscription of this end.
	DropPermission
	// DropNoResponders: (operator) nobody subscribes to the drone's uplink subject.
	DropNoResponders
	// DropBacklog: (drone) WriteQueue datagrams already wait for the NATS server, which
	// takes them too slowly (a congested link, or a server that stopped reading).
	DropBacklog
	// DropPeerTable: (drone) a message naming a new downlink subject while the drone
	// remembers DefaultMaxPeers of them, all answered within PeerKeepTime.
	DropPeerTable
	// DropProtocol: the NATS server sent a stream the framing guard refuses (guard.go: a
	// line too long, a message size malformed or over MaxMessageSize); the connection was
	// closed, with whatever it carried, and the client reconnects. Counted once per
	// connection.
	DropProtocol
	numDropReasons
)

var dropReasonNames = [numDropReasons]string{
	"bad_reply", "oversize", "empty", "unknown_peer", "publish_failed", "slow_consumer", "permission", "no_responders", "backlog", "peers_full", "protocol",
}

// String is the reason's metric label.
func (r DropReason) String() string {
	if r < numDropReasons {
		return dropReasonNames[r]
	}
	return "unknown"
}

// DropReasons lists every reason, for metrics that resolve their labels up front.
func DropReasons() []DropReason {
	out := make([]DropReason, numDropReasons)
	for i := range out {
		out[i] = DropReason(i)
	}
	return out
}

// Hooks receives the relay's events, for metrics. Calls come from the NATS client's
// goroutines and from the conn's reader and writers: they must be quick and must not block.
type Hooks interface {
	// Connected: the end is connected to server (a redacted URL), first or again.
	Connected(server string)
	// Disconnected: the connection to the server was lost; the client is reconnecting.
	Disconnected()
	// Reconnected: the client reconnected after a loss (counted; Connected follows).
	Reconnected()
	// Dropped: one datagram was dropped, for reason.
	Dropped(reason DropReason)
}

// NopHooks ignores every event.
type NopHooks struct{}

// Connected implements Hooks.
func (NopHooks) Connected(string) {}

// Disconnected implements Hooks.
func (NopHooks) Disconnected() {}

// Reconnected implements Hooks.
func (NopHooks) Reconnected() {}

// Dropped implements Hooks.
func (NopHooks) Dropped(DropReason) {}
