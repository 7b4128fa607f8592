// Package relay carries dronelink datagrams over NATS, for drones that no operator can reach
// with a UDP datagram (LTE behind carrier-grade NAT) and for fleets served by more than one
// ground station.
//
// Both ends connect out to a NATS server or cluster; neither needs an open port. The relay
// moves the native protocol's datagrams unchanged, one NATS message each, on per-drone
// subjects:
//
//	dronelink.<drone-id>.up                      operators to the drone (uplink)
//	dronelink.<drone-id>.down.<name>.<nonce>     the drone to one operator (downlink)
//
// An operator publishes each datagram on the drone's uplink subject with its own downlink
// subject as the reply subject; the drone answers there. <name> is the operator's NATS user
// name, so the server's permissions can confine each operator to its own downlinks
// (docs/relay/nats-server.conf); <nonce> tells apart the processes of one user.
//
// Why this layer is thin: NATS is not trusted. Everything the relay carries is sealed or
// authenticated by the native protocol (PSK MAC, the operator's signature, AEAD, the replay
// window, the login), so a relay, or anyone with NATS credentials, can drop, delay,
// duplicate or reorder datagrams, which the protocol already survives on radio, and nothing
// more. NATS credentials only keep strangers off the broker and keep one drone from
// posing as another on the subjects.
//
// The two ends are link.PacketConns. DroneConn is a link.ExtraConn: a link.Server serves it
// beside (or instead of) its UDP socket, with one set of sessions. It gives every downlink
// subject a synthetic address, an IPv6 unique-local address (RFC 4193) drawn from a keyed
// hash of the subject under a random /48 of its own, so the link layer's sessions, roaming
// and limits work unchanged, and an address stays the same while its operator reconnects.
// OperatorConn is the operator's socket: one drone, one downlink subject. It is a
// link.UnreachableReporter: NATS answers a datagram nobody subscribes to with "no
// responders", and Dial fails at once with a clear error for a drone id nobody serves.
//
// A NATS server that fails is survived by the client library: both ends reconnect to
// another server of the cluster and keep their subjects, and the dronelink session goes on
// without a new handshake (datagrams lost meanwhile are retransmitted as on radio).
package relay
