// Package dtlslink is dronelink's second secure channel: standard DTLS 1.2 with a
// pre-shared key (RFC 6347, RFC 4279), built on pion/dtls v3, so that dronelink talks to
// ground stations and flight controllers that already speak DTLS-PSK (OpenSSL, mbedTLS).
//
// It is a channel only. Each DTLS association is one session of the application layer
// (package app: logins, roles and the re-check of every command against the current user
// database, at-most-once execution, acknowledgements, telemetry, revocation, keepalives and
// link state), the same code that runs over the native channel of package link. What this
// package adds is what DTLS needs: demultiplexing one UDP socket into associations,
// admitting handshakes without letting peers that lack the PSK take session slots,
// following RFC 9146 connection IDs when an operator roams, and adapting the user database
// to what DTLS authenticates (a PSK identity and a verified source address, app.Identity).
//
// Mapping:
//
//   - PSK = the fleet PSK (32 bytes); PSK identity = the user name. The drone hands out the
//     PSK for any identity with user-name syntax without looking it up, so the handshake
//     does not reveal which users exist. The password login follows inside, and its user
//     must equal the PSK identity (otherwise LoginKeyNotAuthorised). Since any PSK holder
//     may claim any identity, login limits are per source address and per user and source
//     address.
//   - Associations still handshaking never count against MaxSessions: at most
//     MaxHandshakes, MaxHandshakesPerSource from one address, evicting from the busiest
//     source, so peers without the PSK cannot keep operators out.
//   - One application message per DTLS record (application_data), the same bytes as the
//     plaintext of a native data datagram.
//   - Suites: AEAD only (see Suites); ECDHE-PSK-CHACHA20-POLY1305 first for forward
//     secrecy, PSK-only suites for peers without it.
//   - Replay window: ReplayWindow records (2048 by default, as native); handshake flights
//     retransmitted every FlightInterval (400 ms, no backoff by default); RFC 9146
//     connection IDs requested by the drone, so an operator that changes address keeps its
//     association.
//   - DTLS is unreliable like UDP: the application layer retransmits logins and commands
//     until answered and executes each command at most once (per user,
//     link.DedupLifetime); its keepalives let both sides notice a dead peer, which
//     pion/dtls does not, and the client sets up a new association when the link is lost.
//
// What DTLS-PSK mode lacks compared with the native protocol: no operator RSA key (the
// fleet PSK alone authenticates the peer, the password is the only per-user credential), no
// pinned drone key (any PSK holder can pose as the drone), PSK identities travel in clear,
// and no forward secrecy when a PSK-only suite is negotiated. docs/THREAT-MODEL.md has the
// details.
//
// Metrics: the server and client report through link.Hooks like pkg/link. Datagrams
// carrying handshake records count as kind initiation (operator to drone) or response
// (drone to operator), clear alerts as error, all others as data; every application
// message is counted again under its message kind once decrypted (received, with size 0)
// or under its kind when written (sent).
package dtlslink
