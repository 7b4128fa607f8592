// Package link is dronelink's native secure channel: a connectionless, self-authenticating
// datagram protocol for lossy radio links, and the drone and operator endpoints built on it.
//
// Each datagram proves itself alone, in any order: handshake datagrams carry an
// HMAC-SHA256 under a key derived from the fleet PSK, data datagrams a ChaCha20-Poly1305
// tag under session keys that mix in the PSK, an RSA-wrapped secret and an X25519 secret
// (forward secrecy). A lost datagram never blocks a later one; a sliding replay window
// (package replay) moves only after a tag verified. The cheap checks come first, so forged
// traffic costs the drone no RSA, no X25519 and no allocation. docs/PROTOCOL.md specifies
// the wire byte for byte; constants.go holds every number it names.
//
// The package is the channel layer: handshakes (Initiator, Responder), sessions (Session:
// keys, counters, replay window, peer address), rekey with login carry-over, roaming, expiry
// and the session table. Everything above it, from the login to the acknowledgement of a
// command, is package app, written once for this channel and for DTLS (package dtlslink).
// Server is this channel under an app.Server and Client under an app.Client, so their
// methods (Broadcast, Revoke, Command, ...) are the application layer's; the message
// types and statuses keep their names here as aliases of package app's.
package link
