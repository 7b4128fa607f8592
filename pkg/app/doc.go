// Package app is dronelink's application protocol: what operators and the drone say to
// each other once a secure channel carries their messages. It is written once and runs
// over either secure channel: the native dronelink protocol (pkg/link) or DTLS 1.2 with a
// pre-shared key (pkg/dtlslink).
//
// The layers:
//
//   - The secure channel (below this package): per peer, an authenticated, encrypted,
//     replay-protected datagram session and its lifecycle (handshake, rekey, roaming,
//     expiry, close). It hands this package each opened message with the identity the
//     session authenticated (an operator key, or a PSK identity and a verified source
//     address) and seals and sends the messages this package gives it.
//   - The application protocol (this package): login (argon2 work bounded by a small worker
//     pool, limits keyed by the authenticated identity), authorisation and the re-check of
//     every command against the current user database right before it runs, at-most-once
//     execution (a de-duplication cache, one executor, acknowledgements), telemetry
//     fan-out, revocation, keepalives and link-lost detection, and the operator's side
//     (login retry, command retransmission, acknowledgement handling, events).
//
// Keeping the application protocol in one place is a security property, not tidiness: two
// copies drift, and every drift is a difference in who may do what. Nothing here imports a
// transport; the channels import this package.
//
// The message format (one application message per sealed datagram or DTLS record) is in
// messages.go and docs/PROTOCOL.md section 7.
package app
